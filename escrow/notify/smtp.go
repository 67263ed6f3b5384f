package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fvescrow/fvescrow/escrow"
)

// TLSMode is how the connection to the mail server is protected.
type TLSMode string

const (
	// StartTLS connects in clear and upgrades with STARTTLS, which the
	// server must offer (port 587). The default.
	StartTLS TLSMode = "starttls"
	// ImplicitTLS speaks TLS from the first byte (port 465).
	ImplicitTLS TLSMode = "tls"
	// NoTLS sends in clear: only for a relay on the same host, and never
	// with a password.
	NoTLS TLSMode = "none"
)

// SMTPConfig configures e-mail delivery.
type SMTPConfig struct {
	Addr      string         // host:port of the mail server
	From      string         // sender address, optionally with a display name
	TLS       TLSMode        // default StartTLS
	RootCAs   *x509.CertPool // CAs trusted for the server's certificate (nil: the system's)
	Username  string         // AUTH PLAIN user; empty: no AUTH
	Password  Secret         // AUTH PLAIN password
	LocalName string         // name given in EHLO (default "localhost")
}

// Validate checks the configuration.
func (c SMTPConfig) Validate() error {
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("smtp: address %q: want host:port", c.Addr)
	}
	if _, err := parseFrom(c.From); err != nil {
		return err
	}
	switch c.TLS {
	case "", StartTLS, ImplicitTLS, NoTLS:
	default:
		return fmt.Errorf("smtp: TLS mode %q: want starttls, tls or none", c.TLS)
	}
	if (c.Username == "") != c.Password.IsZero() {
		return errors.New("smtp: a user needs a password, and a password a user")
	}
	if c.Username != "" && c.TLS == NoTLS {
		return errors.New("smtp: AUTH without TLS would send the password in clear")
	}
	if c.LocalName != "" && !validLocalName(c.LocalName) {
		return fmt.Errorf("smtp: EHLO name %q is not a host name", c.LocalName)
	}
	return nil
}

func validLocalName(s string) bool {
	if len(s) > 255 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '-' || r == '[' || r == ']' || r == ':' || (r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)))) {
			return false
		}
	}
	return true
}

func parseFrom(s string) (*mail.Address, error) {
	a, err := mail.ParseAddress(s)
	if err != nil || !strings.Contains(a.Address, "@") {
		return nil, fmt.Errorf("smtp: sender %q is not an e-mail address", s)
	}
	return a, nil
}

// SMTP sends notifications as plain-text e-mail, one connection per message.
type SMTP struct {
	cfg  SMTPConfig
	host string
	from *mail.Address
	now  func() time.Time
}

var _ Sender = (*SMTP)(nil)

// NewSMTP validates cfg and returns the sender.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	if cfg.TLS == "" {
		cfg.TLS = StartTLS
	}
	if cfg.LocalName == "" {
		cfg.LocalName = "localhost"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(cfg.Addr)
	from, _ := parseFrom(cfg.From)
	return &SMTP{cfg: cfg, host: host, from: from, now: time.Now}, nil
}

// Send delivers n to the address in n.Target. The mail server's answer to
// RCPT or DATA with a 5xx code is permanent; everything else is retried.
func (s *SMTP) Send(ctx context.Context, n escrow.Notification) error {
	to, err := mail.ParseAddress(n.Target)
	if err != nil || !strings.Contains(to.Address, "@") {
		return Permanent(errors.New("smtp: the recipient is not an e-mail address"))
	}
	msg, err := s.message(n, to)
	if err != nil {
		return Permanent(err)
	}
	return s.scrub(s.deliver(ctx, to.Address, msg))
}

func (s *SMTP) deliver(ctx context.Context, rcpt string, msg []byte) error {
	tlsConfig := &tls.Config{ServerName: s.host, RootCAs: s.cfg.RootCAs, MinVersion: tls.VersionTLS12}
	var (
		conn net.Conn
		err  error
	)
	if s.cfg.TLS == ImplicitTLS {
		conn, err = (&tls.Dialer{Config: tlsConfig}).DialContext(ctx, "tcp", s.cfg.Addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", s.cfg.Addr)
	}
	if err != nil {
		return fmt.Errorf("smtp: connect: %w", netErr(err))
	}
	defer conn.Close()
	// net/smtp knows no context: a deadline bounds every exchange, and
	// cancelling ctx moves the deadline to now.
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		return smtpErr("greeting", err)
	}
	defer c.Close()
	if err := c.Hello(s.cfg.LocalName); err != nil {
		return smtpErr("EHLO", err)
	}
	if s.cfg.TLS == StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("smtp: the server does not offer STARTTLS (use --smtp-tls tls for port 465)")
		}
		if err := c.StartTLS(tlsConfig); err != nil {
			return smtpErr("STARTTLS", err)
		}
	}
	if s.cfg.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("smtp: the server does not offer AUTH")
		}
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, string(s.cfg.Password.b), s.host)); err != nil {
			// The server's text is left out: some echo what they were sent.
			var te *textproto.Error
			if errors.As(err, &te) {
				return fmt.Errorf("smtp: AUTH PLAIN as %q: the server answered %d", s.cfg.Username, te.Code)
			}
			return smtpErr("AUTH", err)
		}
	}
	if err := c.Mail(s.from.Address); err != nil {
		return smtpErr("MAIL FROM", err)
	}
	if err := c.Rcpt(rcpt); err != nil {
		return permanent5xx(smtpErr("RCPT TO", err))
	}
	w, err := c.Data()
	if err != nil {
		return permanent5xx(smtpErr("DATA", err))
	}
	if _, err := w.Write(msg); err != nil {
		return smtpErr("DATA", err)
	}
	if err := w.Close(); err != nil {
		return permanent5xx(smtpErr("end of DATA", err))
	}
	_ = c.Quit() // the message is accepted; a failed QUIT changes nothing
	return nil
}

// scrub is the last guard that the password never reaches an error text.
func (s *SMTP) scrub(err error) error {
	if err == nil || s.cfg.Password.Len() < 4 {
		return err
	}
	if msg := err.Error(); strings.Contains(msg, string(s.cfg.Password.b)) {
		cleaned := errors.New(strings.ReplaceAll(msg, string(s.cfg.Password.b), "REDACTED"))
		if IsPermanent(err) {
			return Permanent(cleaned)
		}
		return cleaned
	}
	return err
}

// smtpError is an error answer of the mail server.
type smtpError struct {
	step string
	code int
	msg  string
}

func (e *smtpError) Error() string {
	return fmt.Sprintf("smtp: %s: the server answered %d %s", e.step, e.code, e.msg)
}

func smtpErr(step string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		msg := strings.Join(strings.Fields(te.Msg), " ")
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return &smtpError{step: step, code: te.Code, msg: msg}
	}
	return fmt.Errorf("smtp: %s: %w", step, netErr(err))
}

func permanent5xx(err error) error {
	var se *smtpError
	if errors.As(err, &se) && se.code >= 500 && se.code < 600 {
		return Permanent(err)
	}
	return err
}

// netErr trims an I/O error to what helps an operator.
func netErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("timed out")
	}
	return err
}

// message builds the RFC 5322 message. Header values from data are
// sanitised and encoded, so nothing in a notification can add a header.
func (s *SMTP) message(n escrow.Notification, to *mail.Address) ([]byte, error) {
	var b bytes.Buffer
	now := s.now()
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	domain := s.from.Address[strings.LastIndexByte(s.from.Address, '@')+1:]
	subject := headerText(n.Subject)
	if subject == "" {
		subject = "fvescrow notification"
	}
	headers := [][2]string{
		{"Date", now.Format(time.RFC1123Z)},
		{"From", s.from.String()},
		{"To", to.String()},
		{"Subject", mime.QEncoding.Encode("utf-8", subject)},
		{"Message-ID", "<" + hex.EncodeToString(id) + "." + strconv.FormatInt(now.Unix(), 10) + "@" + domain + ">"},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Transfer-Encoding", "quoted-printable"},
		{"Auto-Submitted", "auto-generated"}, // RFC 3834: no auto-replies
		{"X-Fvescrow-Notification", strconv.FormatInt(n.ID, 10)},
	}
	for _, h := range headers {
		if strings.ContainsAny(h[1], "\r\n") {
			return nil, fmt.Errorf("smtp: header %s would hold a line break", h[0])
		}
		v := h[1]
		if h[0] == "Subject" {
			// Fold between encoded-words so a long non-ASCII subject keeps
			// lines within the RFC 5322 limit.
			v = strings.ReplaceAll(v, "?= =?", "?=\r\n =?")
		}
		b.WriteString(h[0] + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	body := strings.ReplaceAll(strings.ReplaceAll(n.Body, "\r\n", "\n"), "\r", "\n")
	if _, err := qp.Write([]byte(body)); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// headerText makes s safe as a header value: control characters become
// spaces, runs of space collapse, and it is cut to 200 characters.
func headerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > 200 {
		s = string([]rune(s)[:200])
	}
	return s
}
