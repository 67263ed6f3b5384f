package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// Headers of a webhook delivery. docs/notifications.md tells receivers how
// to check them.
const (
	HeaderTimestamp = "Fvescrow-Timestamp" // Unix seconds when the request was signed
	HeaderSignature = "Fvescrow-Signature" // "v1=" + hex HMAC-SHA256 over timestamp "." body
	HeaderDelivery  = "Fvescrow-Delivery"  // stable ID of what is delivered: the same on a retry
	HeaderEvent     = "Fvescrow-Event"     // "notification" or "audit"
)

// Sign returns the HeaderSignature value for body sent at timestamp:
// "v1=" followed by the hex HMAC-SHA256, keyed with secret, of the
// timestamp, a dot, and the body bytes.
func Sign(secret Secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret.b)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// MinSecretLen is the shortest webhook secret accepted.
const MinSecretLen = 16

var endpointName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Endpoint is a webhook receiver. Its URL is treated as a secret (many
// services put a token in the path or query), so errors and logs name the
// endpoint, never the URL.
type Endpoint struct {
	Name   string
	URL    *url.URL
	Secret Secret // signs every request; zero sends unsigned (SIEM webhooks only)
}

// ParseEndpoint checks a webhook URL: https, or http to a loopback address
// (a local relay); no user name or password in it.
func ParseEndpoint(name, rawURL string) (Endpoint, error) {
	if !endpointName.MatchString(name) {
		return Endpoint{}, fmt.Errorf("webhook name %q: use lower-case letters, digits, '.', '_' and '-'", name)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return Endpoint{}, fmt.Errorf("webhook %s: not an absolute URL", name)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return Endpoint{}, fmt.Errorf("webhook %s: the URL must be https (http only to a loopback address)", name)
	}
	if u.User != nil {
		return Endpoint{}, fmt.Errorf("webhook %s: no credentials in the URL; requests are signed with the webhook's secret", name)
	}
	u.Fragment, u.RawFragment = "", ""
	return Endpoint{Name: name, URL: u}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewHTTPClient returns the client webhooks are posted with: the
// environment's proxy settings, rootCAs (nil: the system's), an optional
// client certificate, and no redirects (a signed payload goes where it was
// configured to go, or nowhere).
func NewHTTPClient(rootCAs *x509.CertPool, cert *tls.Certificate) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// StatusError is a receiver's non-2xx answer.
type StatusError struct {
	Endpoint string
	Code     int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("webhook %s: HTTP %d %s", e.Endpoint, e.Code, http.StatusText(e.Code))
}

// Post sends a JSON body to e, signed when e has a secret, and waits for the
// answer: 2xx is delivered; 408, 429, 5xx and network errors are
// retryable; any other answer is Permanent. The caller's ctx bounds it.
func Post(ctx context.Context, client *http.Client, e Endpoint, event, delivery string, body []byte, now time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL.String(), bytes.NewReader(body))
	if err != nil {
		return Permanent(fmt.Errorf("webhook %s: cannot build the request", e.Name))
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "fvescrow")
	req.Header.Set(HeaderEvent, event)
	req.Header.Set(HeaderDelivery, delivery)
	req.Header.Set(HeaderTimestamp, ts)
	if !e.Secret.IsZero() {
		req.Header.Set(HeaderSignature, Sign(e.Secret, ts, body))
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %s", e.Name, scrubURL(e.URL, transportText(err)))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return &StatusError{Endpoint: e.Name, Code: c}
	default:
		return Permanent(&StatusError{Endpoint: e.Name, Code: c})
	}
}

// transportText describes a client error without the URL *url.Error puts
// in front of it.
func transportText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// scrubURL removes the URL and its parts from s, in case an error text
// quotes them.
func scrubURL(u *url.URL, s string) string {
	for _, part := range []string{u.String(), u.RawQuery, u.EscapedPath()} {
		if len(part) > 1 {
			s = strings.ReplaceAll(s, part, "…")
		}
	}
	return s
}

// Webhooks sends notifications to named webhook endpoints; the
// notification's Target is the endpoint's name.
type Webhooks struct {
	hooks  map[string]Endpoint
	names  []string
	client *http.Client
	now    func() time.Time
}

var _ Sender = (*Webhooks)(nil)

// NewWebhooks returns the sender. Every endpoint needs a secret of at least
// MinSecretLen bytes: receivers must be able to tell fvescrow's alerts from
// forged ones. A nil client means NewHTTPClient(nil, nil).
func NewWebhooks(endpoints []Endpoint, client *http.Client) (*Webhooks, error) {
	if client == nil {
		client = NewHTTPClient(nil, nil)
	}
	w := &Webhooks{hooks: map[string]Endpoint{}, client: client, now: time.Now}
	for _, e := range endpoints {
		if _, dup := w.hooks[e.Name]; dup {
			return nil, fmt.Errorf("webhook %s is defined twice", e.Name)
		}
		if e.URL == nil {
			return nil, fmt.Errorf("webhook %s has no URL", e.Name)
		}
		if e.Secret.Len() < MinSecretLen {
			return nil, fmt.Errorf("webhook %s needs a secret of at least %d bytes", e.Name, MinSecretLen)
		}
		w.hooks[e.Name] = e
		w.names = append(w.names, e.Name)
	}
	return w, nil
}

// Names lists the endpoints in the order given.
func (w *Webhooks) Names() []string { return append([]string(nil), w.names...) }

// Send posts the notification's JSON body to the endpoint it names.
func (w *Webhooks) Send(ctx context.Context, n escrow.Notification) error {
	e, ok := w.hooks[n.Target]
	if !ok {
		return Permanent(fmt.Errorf("webhook %q is not configured", n.Target))
	}
	if !json.Valid([]byte(n.Body)) {
		return Permanent(fmt.Errorf("webhook %s: the notification body is not JSON", e.Name))
	}
	return Post(ctx, w.client, e, "notification", "notification-"+strconv.FormatInt(n.ID, 10), []byte(n.Body), w.now())
}
