package fde

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxRecoveryKeySize bounds the plaintext accepted as a recovery key. A real
// PRK is 29 bytes; anything near this limit is not a key.
const MaxRecoveryKeySize = 1024

// Reasons a recovery key is rejected; every other oddity is a warning carried with the
// key, because dropping a key the device really uses would lock a user out.
var (
	ErrEmptyRecoveryKey   = errors.New("recovery key is empty")
	ErrRecoveryKeyTooLong = fmt.Errorf("recovery key is longer than %d bytes", MaxRecoveryKeySize)
	// ErrRecoveryKeyBinary: the bytes hold control characters, so they are
	// not a key a person could type (typically a wrong key or bad padding).
	ErrRecoveryKeyBinary = errors.New("recovery key is binary data, not text")
)

// RecoveryKey is a FileVault personal recovery key. Its canonical form is six
// groups of four characters A–Z and 0–9 joined by hyphens. The value prints as
// [Redacted] through fmt, slog and encoding/json; use Expose to read it.
type RecoveryKey struct {
	v       string
	warning string
}

// ParseRecoveryKey validates and normalises a recovery key: surrounding white
// space is trimmed, letters are upper-cased, and 24 key characters separated by
// any mix of hyphens and spaces are regrouped as XXXX-XXXX-XXXX-XXXX-XXXX-XXXX.
// A value that still is not canonical is kept as trimmed, with a Warning.
func ParseRecoveryKey(raw []byte) (RecoveryKey, error) {
	if len(raw) > MaxRecoveryKeySize {
		return RecoveryKey{}, ErrRecoveryKeyTooLong
	}
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return RecoveryKey{}, ErrEmptyRecoveryKey
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return RecoveryKey{}, ErrRecoveryKeyBinary
	}
	if !utf8.ValidString(s) {
		return RecoveryKey{v: s, warning: "recovery key is not valid UTF-8"}, nil
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		switch {
		case r == '-' || r == ' ':
		case (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		default:
			return RecoveryKey{v: s, warning: "recovery key contains characters outside A-Z and 0-9"}, nil
		}
	}
	chars := b.String()
	if len(chars) != 24 {
		return RecoveryKey{v: s, warning: fmt.Sprintf("recovery key has %d key characters, want 24", len(chars))}, nil
	}
	groups := make([]string, 6)
	for i := range groups {
		groups[i] = chars[i*4 : i*4+4]
	}
	return RecoveryKey{v: strings.Join(groups, "-")}, nil
}

// Expose returns the key text. Every call site is a place a secret leaves the
// type system; keep them few.
func (k RecoveryKey) Expose() string { return k.v }

// IsZero reports whether k holds no key.
func (k RecoveryKey) IsZero() bool { return k.v == "" }

// Canonical reports whether the key has the XXXX-XXXX-XXXX-XXXX-XXXX-XXXX form.
func (k RecoveryKey) Canonical() bool { return k.v != "" && k.warning == "" }

// Warning describes why the key is not canonical; it never contains key text.
func (k RecoveryKey) Warning() string { return k.warning }

// Equal compares two keys in constant time with respect to their content.
func (k RecoveryKey) Equal(o RecoveryKey) bool { return constantTimeEqual(k.v, o.v) }

func (RecoveryKey) String() string               { return Redacted }
func (RecoveryKey) GoString() string             { return Redacted }
func (RecoveryKey) LogValue() slog.Value         { return slog.StringValue(Redacted) }
func (RecoveryKey) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }
func (RecoveryKey) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Discard returns the zero key; callers use it to drop a key they must not
// return. (Go strings cannot be wiped; dropping the reference is what
// remains.)
func (RecoveryKey) Discard() RecoveryKey { return RecoveryKey{} }
