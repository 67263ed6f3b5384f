// Package notify delivers the notifications the reveal path queues (see
// escrow.Notification): e-mail over SMTP and signed JSON webhooks, with
// retries and exponential backoff. A notification that cannot be delivered
// ends in state "failed" with a reason that holds no secret; nothing is
// dropped silently.
//
// The Dispatcher claims due notifications with a lease, so several fvescrow
// processes on one database never both send the same one.
package notify

import (
	"context"
	"errors"
	"log/slog"
	"regexp"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
)

// Channels of escrow.Notification.Channel.
const (
	ChannelEmail   = "email"
	ChannelWebhook = "webhook"
)

// Sender delivers one notification on one channel.
type Sender interface {
	Send(ctx context.Context, n escrow.Notification) error
}

// permanentError is a failure a retry cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure a retry cannot fix (a rejected address, a
// 4xx answer): the notification fails at once instead of being retried.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Secret is a password or signing key (an SMTP password, a webhook secret).
// It prints as REDACTED through fmt, slog and encoding/json.
type Secret struct{ b []byte }

// NewSecret wraps b (not copied).
func NewSecret(b []byte) Secret { return Secret{b: b} }

// IsZero reports whether s holds nothing.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Len is the secret's length in bytes.
func (s Secret) Len() int { return len(s.b) }

func (Secret) String() string               { return fde.Redacted }
func (Secret) GoString() string             { return fde.Redacted }
func (Secret) LogValue() slog.Value         { return slog.StringValue(fde.Redacted) }
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + fde.Redacted + `"`), nil }
func (Secret) MarshalText() ([]byte, error) { return []byte(fde.Redacted), nil }

// prkShape matches text laid out like a FileVault personal recovery key.
var prkShape = regexp.MustCompile(`(?i)\b[A-Z0-9]{4}(?:-[A-Z0-9]{4}){5}\b`)

// ErrLooksLikeKey refuses a notification whose text is shaped like a
// recovery key. Notifications are built without key material; this is the
// last guard should an operator paste a key into a reveal reason.
var ErrLooksLikeKey = errors.New("notification text is shaped like a recovery key; not sent")

func checkNoKey(n escrow.Notification) error {
	if prkShape.MatchString(n.Subject) || prkShape.MatchString(n.Body) || prkShape.MatchString(n.Target) {
		return Permanent(ErrLooksLikeKey)
	}
	return nil
}
