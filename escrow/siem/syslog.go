package siem

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Facility is a syslog facility (RFC 5424 section 6.2.1).
type Facility int

var facilityNames = []string{"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
	"authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}

// ParseFacility reads a facility name (auth, authpriv, local0...) or its
// number, 0 to 23.
func ParseFacility(s string) (Facility, error) {
	for i, n := range facilityNames {
		if strings.EqualFold(s, n) {
			return Facility(i), nil
		}
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < len(facilityNames) {
		return Facility(n), nil
	}
	return 0, fmt.Errorf("syslog facility %q: want a name (%s) or 0-23", s, strings.Join(facilityNames, ", "))
}

func (f Facility) String() string {
	if f >= 0 && int(f) < len(facilityNames) {
		return facilityNames[f]
	}
	return strconv.Itoa(int(f))
}

// Severity is a syslog severity (RFC 5424 section 6.2.1).
type Severity int

// Severities used for audit records.
const (
	SeverityWarning Severity = 4
	SeverityNotice  Severity = 5
	SeverityInfo    Severity = 6
)

// SeverityOf is the severity of an audit action: warning for refusals,
// blocks, failures and break-glass exports; notice for disclosures and
// changes of who may do what; info for the routine rest.
func SeverityOf(action string) Severity {
	switch action {
	case "key.reveal-refused", "operator.blocked", "key.undecryptable", "approval.denied", "login.failed", "export.created":
		return SeverityWarning
	case "key.revealed", "token.served", "approval.requested", "approval.approved", "operator.unblocked",
		"escrow-cert.added", "device.retired", "user.created", "user.updated", "token.created", "token.revoked",
		"password.changed", "mdm.push-cert.stored":
		return SeverityNotice
	}
	return SeverityInfo
}

// SDID is the SD-ID of the structured data element every message carries.
// fvescrow has no IANA private enterprise number of its own; 32473 is the
// number RFC 5612 reserves for documentation and examples.
const SDID = "fvescrow@32473"

// SyslogConfig configures a syslog receiver.
type SyslogConfig struct {
	Addr     string        // host:port
	TLS      *tls.Config   // nil: plain TCP; set ServerName, RootCAs and any client certificate
	Facility Facility      // default 0 (kern) is almost never wanted: set it
	Hostname string        // HOSTNAME field (this server's name)
	AppName  string        // default "fvescrow"
	Timeout  time.Duration // bounds one batch: connect, send, confirmation (default 30s)
}

// Syslog sends batches to an RFC 5424 receiver over TCP or TLS, one
// connection per batch. A batch counts as delivered when the receiver,
// after fvescrow closed its sending side, closes the connection too: a
// receiver closes only after reading everything before the close, while
// one that goes away with data unread resets the connection instead. Plain
// syslog has no acknowledgements; this is how a sender can know.
type Syslog struct {
	cfg SyslogConfig
}

var _ Sink = (*Syslog)(nil)

// NewSyslog validates cfg and returns the sink.
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	if host, port, err := net.SplitHostPort(cfg.Addr); err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("syslog: address %q: want host:port", cfg.Addr)
	}
	if cfg.Facility < 0 || int(cfg.Facility) >= len(facilityNames) {
		return nil, fmt.Errorf("syslog: facility %d: want 0-23", cfg.Facility)
	}
	if cfg.AppName == "" {
		cfg.AppName = "fvescrow"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.TLS != nil {
		cfg.TLS = cfg.TLS.Clone()
		if cfg.TLS.MinVersion == 0 {
			cfg.TLS.MinVersion = tls.VersionTLS12
		}
		if cfg.TLS.ServerName == "" {
			cfg.TLS.ServerName, _, _ = net.SplitHostPort(cfg.Addr)
		}
	}
	return &Syslog{cfg: cfg}, nil
}

// Send delivers the batch over a new connection and waits for the
// receiver's confirmation.
func (s *Syslog) Send(ctx context.Context, batch []Entry) error {
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("syslog: connect: %w", err)
	}
	defer raw.Close()
	d, _ := ctx.Deadline()
	_ = raw.SetDeadline(d)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var conn net.Conn = raw
	var tc *tls.Conn
	if s.cfg.TLS != nil {
		tc = tls.Client(raw, s.cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("syslog: TLS: %w", err)
		}
		conn = tc
	}
	w := bufio.NewWriterSize(conn, 32<<10)
	for _, e := range batch {
		msg := s.Message(e)
		// RFC 6587 3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG.
		if _, err := w.WriteString(strconv.Itoa(len(msg)) + " "); err != nil {
			return unsent(batch, err)
		}
		if _, err := w.Write(msg); err != nil {
			return unsent(batch, err)
		}
	}
	if err := w.Flush(); err != nil {
		return unsent(batch, err)
	}
	// Close the sending side (TLS close_notify, then TCP FIN) and wait for
	// the receiver to close: that is the confirmation.
	if tc != nil {
		if err := tc.CloseWrite(); err != nil {
			return unsent(batch, err)
		}
	}
	if err := raw.(*net.TCPConn).CloseWrite(); err != nil {
		return unsent(batch, err)
	}
	// A receiver that goes away with data unread may still send a TLS
	// close_notify before its kernel resets the connection: only a TCP
	// close after it (not a reset) confirms.
	if tc != nil {
		if err := readToEOF(tc); err != nil {
			return unconfirmed(batch, err)
		}
	}
	if err := readToEOF(raw); err != nil {
		return unconfirmed(batch, err)
	}
	return nil
}

// readToEOF reads until the peer closes; a receiver has nothing to say, so
// whatever it sends is ignored.
func readToEOF(c net.Conn) error {
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func unsent(batch []Entry, err error) error {
	return fmt.Errorf("syslog: send records %d-%d: %w", batch[0].Record.Seq, batch[len(batch)-1].Record.Seq, err)
}

func unconfirmed(batch []Entry, err error) error {
	return fmt.Errorf("syslog: the receiver did not confirm records %d-%d: %w", batch[0].Record.Seq, batch[len(batch)-1].Record.Seq, err)
}

// Message renders e as an RFC 5424 message (without framing):
//
//	<PRI>1 TIMESTAMP HOSTNAME fvescrow - ACTION [fvescrow@32473 seq="N" hash="H" prev="P"] JSON
//
// The JSON is made pure ASCII (other characters as \u escapes), so MSG needs
// no BOM and no receiver trips on its encoding.
func (s *Syslog) Message(e Entry) []byte {
	r := e.Record
	pri := int(s.cfg.Facility)*8 + int(SeverityOf(r.Action))
	var b strings.Builder
	b.WriteString("<" + strconv.Itoa(pri) + ">1 ")
	b.WriteString(r.Time.UTC().Format("2006-01-02T15:04:05.999999Z07:00") + " ")
	b.WriteString(headerField(s.cfg.Hostname, 255) + " ")
	b.WriteString(headerField(s.cfg.AppName, 48) + " - ")
	b.WriteString(headerField(r.Action, 32) + " ")
	b.WriteString("[" + SDID + ` seq="` + strconv.FormatInt(r.Seq, 10) + `" hash="` + sdValue(r.Hash) + `" prev="` + sdValue(r.PrevHash) + `"] `)
	asciiJSON(&b, e.JSON)
	return []byte(b.String())
}

// headerField makes s a valid header field: PRINTUSASCII only, at most n
// characters, "-" when empty (the NILVALUE).
func headerField(s string, n int) string {
	out := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s) && len(out) < n; i++ {
		if c := s[i]; c >= 33 && c <= 126 {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return string(out)
}

// sdValue escapes a PARAM-VALUE: '"', '\' and ']' take a backslash.
func sdValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}

// asciiJSON writes JSON with every non-ASCII character as a \u escape
// (valid JSON: such characters only occur inside strings).
func asciiJSON(b *strings.Builder, js []byte) {
	for i := 0; i < len(js); {
		c := js[i]
		if c < utf8.RuneSelf {
			b.WriteByte(c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(js[i:])
		i += size
		if r >= 0x10000 {
			r -= 0x10000
			fmt.Fprintf(b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
			continue
		}
		fmt.Fprintf(b, `\u%04x`, r)
	}
}
