package notify_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/notify"
)

const (
	smtpUser     = "fvescrow-relay"
	smtpPassword = "pw-Zq83kd02LxQa" // must never show up in errors or logs
)

// mailServer is a real SMTP server (emersion/go-smtp) in the test process,
// requiring AUTH PLAIN and recording what it accepts.
type mailServer struct {
	addr       string
	srv        *smtp.Server
	rejectRcpt string // answered 550

	mu    sync.Mutex
	msgs  []mailMsg
	auths []string // "ok" or "bad" per AUTH attempt
}

type mailMsg struct {
	from string
	to   []string
	data []byte
	tls  bool
}

type mailMode int

const (
	modeStartTLS mailMode = iota // STARTTLS offered, AUTH only after it
	modeImplicit                 // TLS from the first byte
	modePlain                    // no TLS at all
)

func startMailServer(t *testing.T, pki testPKI, mode mailMode) *mailServer {
	t.Helper()
	m := &mailServer{}
	m.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &mailSession{m: m, c: c}, nil
	}))
	m.srv.Domain = "mx.test"
	m.srv.ReadTimeout, m.srv.WriteTimeout = 10*time.Second, 10*time.Second
	m.srv.ErrorLog = silentLog{}
	var ln net.Listener
	var err error
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{pki.server}}
	switch mode {
	case modeStartTLS:
		m.srv.TLSConfig = tlsConfig
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	case modeImplicit:
		ln, err = tls.Listen("tcp", "127.0.0.1:0", tlsConfig)
	case modePlain:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().String()
	go func() { _ = m.srv.Serve(ln) }()
	t.Cleanup(func() { m.srv.Close() })
	return m
}

type silentLog struct{}

func (silentLog) Printf(string, ...any) {}
func (silentLog) Println(...any)        {}

func (m *mailServer) messages() []mailMsg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mailMsg(nil), m.msgs...)
}

func (m *mailServer) authAttempts() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.auths...)
}

type mailSession struct {
	m      *mailServer
	c      *smtp.Conn
	authed bool
	from   string
	to     []string
}

func (s *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *mailSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		s.m.mu.Lock()
		defer s.m.mu.Unlock()
		if user == smtpUser && pass == smtpPassword {
			s.authed = true
			s.m.auths = append(s.m.auths, "ok")
			return nil
		}
		s.m.auths = append(s.m.auths, "bad")
		return smtp.ErrAuthFailed
	}), nil
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if to == s.m.rejectRcpt {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.c.TLSConnectionState()
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.msgs = append(s.m.msgs, mailMsg{from: s.from, to: s.to, data: b, tls: isTLS})
	return nil
}

func (s *mailSession) Reset()        { s.from, s.to = "", nil }
func (s *mailSession) Logout() error { return nil }

func smtpSender(t *testing.T, pki testPKI, addr string, mode notify.TLSMode, password string) *notify.SMTP {
	t.Helper()
	s, err := notify.NewSMTP(notify.SMTPConfig{Addr: addr, From: "fvescrow <fvescrow@example.com>", TLS: mode, RootCAs: pki.pool,
		Username: smtpUser, Password: notify.NewSecret([]byte(password)), LocalName: "escrow.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// revealAlert queues what the reveal path queues for the security channel.
func revealAlert(t *testing.T, st escrow.NotificationStore, to string) {
	t.Helper()
	n := escrow.NewNotifications(st, nil, escrow.NotifyConfig{SecurityEmails: []string{to}})
	if err := n.Alert(ctx, "fvescrow: operator blocked after too many recovery key reveals",
		map[string]string{"operator": "helpdesk@example.com", "device": "D-1", "reason": "11 reveals within 24h0m0s"}, 42); err != nil {
		t.Fatal(err)
	}
}

// TestSMTPDelivery sends over STARTTLS with AUTH PLAIN to a real SMTP server
// and checks the message an admin's mail client would see.
func TestSMTPDelivery(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	mx := startMailServer(t, pki, modeStartTLS)
	st := sqlite(t)
	revealAlert(t, st, "Security Team <security@example.com>")
	var logs bytes.Buffer
	d := notify.NewDispatcher(st, map[string]notify.Sender{notify.ChannelEmail: smtpSender(t, pki, mx.addr, notify.StartTLS, smtpPassword)},
		notify.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if n, err := d.RunOnce(ctx); n != 1 || err != nil {
		t.Fatalf("RunOnce: %d, %v", n, err)
	}
	got := only(t, st)
	if got.State != escrow.NotificationDelivered || got.Attempts != 1 || got.DeliveredAt.IsZero() || got.LastError != "" {
		t.Fatalf("notification after delivery: %+v", got)
	}
	msgs := mx.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if !m.tls {
		t.Error("the message was sent without TLS")
	}
	if m.from != "fvescrow@example.com" || len(m.to) != 1 || m.to[0] != "security@example.com" {
		t.Errorf("envelope from %q to %v", m.from, m.to)
	}
	if a := mx.authAttempts(); len(a) != 1 || a[0] != "ok" {
		t.Errorf("AUTH attempts %v", a)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m.data))
	if err != nil {
		t.Fatalf("not an RFC 5322 message: %v\n%s", err, m.data)
	}
	h := msg.Header
	if from, err := h.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "fvescrow@example.com" || from[0].Name != "fvescrow" {
		t.Errorf("From %q (%v)", h.Get("From"), err)
	}
	if to, err := h.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "security@example.com" || to[0].Name != "Security Team" {
		t.Errorf("To %q (%v)", h.Get("To"), err)
	}
	if subj := h.Get("Subject"); subj != "fvescrow: operator blocked after too many recovery key reveals" {
		t.Errorf("Subject %q", subj)
	}
	if date, err := h.Date(); err != nil || time.Since(date) > time.Hour || time.Until(date) > time.Hour {
		t.Errorf("Date %q (%v)", h.Get("Date"), err)
	}
	if id := h.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
		t.Errorf("Message-ID %q", id)
	}
	if ct := h.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"operator: helpdesk@example.com", "device: D-1", "reason: 11 reveals within 24h0m0s"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(logs.String(), smtpPassword) {
		t.Error("the SMTP password is in the log")
	}
}

// TestSMTPHeaderInjection: data with line breaks cannot add headers.
func TestSMTPHeaderInjection(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	mx := startMailServer(t, pki, modeImplicit)
	st := sqlite(t)
	enqueue(t, st, escrow.Notification{Channel: "email", Target: "security@example.com",
		Subject: "Key revealed\r\nBcc: attacker@evil.example\r\n\r\nforged body é", Body: "text\r\n.\r\nBcc: nope\n"})
	bad := enqueue(t, st, escrow.Notification{Channel: "email", Target: "security@example.com\r\nBcc: attacker@evil.example", Subject: "s", Body: "b"})
	d := notify.NewDispatcher(st, map[string]notify.Sender{"email": smtpSender(t, pki, mx.addr, notify.ImplicitTLS, smtpPassword)})
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := mx.messages()
	if len(msgs) != 1 || len(msgs[0].to) != 1 || msgs[0].to[0] != "security@example.com" {
		t.Fatalf("messages: %+v", msgs)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(msgs[0].data))
	if err != nil {
		t.Fatal(err)
	}
	if b := msg.Header.Get("Bcc"); b != "" {
		t.Errorf("injected Bcc header %q", b)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subj != "Key revealed Bcc: attacker@evil.example forged body é" {
		t.Errorf("Subject %q (%v)", subj, err)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if string(body) != "text\r\n.\r\nBcc: nope\r\n" {
		t.Errorf("body %q", body)
	}
	ns, _ := st.Notifications(ctx, escrow.NotificationQuery{States: []escrow.NotificationState{escrow.NotificationFailed}})
	if len(ns) != 1 || ns[0].ID != bad.ID || ns[0].Attempts != 1 {
		t.Fatalf("the recipient with a line break did not fail at once: %+v", ns)
	}
}

// TestSMTPDownRetriesThenFails: with the mail server down, each try is
// scheduled by the backoff, and after the last one the notification stays
// listed as failed with a reason that holds no secret.
func TestSMTPDownRetriesThenFails(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	st := sqlite(t)
	revealAlert(t, st, "security@example.com")
	clk := newClock()
	var logs bytes.Buffer
	d := notify.NewDispatcher(st, map[string]notify.Sender{"email": smtpSender(t, pki, freeAddr(t), notify.StartTLS, smtpPassword)},
		notify.WithClock(clk.Now), notify.WithRetry(notify.Retry{Attempts: 3, First: time.Minute, Max: time.Hour}),
		notify.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	step := func(wantClaimed int) escrow.Notification {
		t.Helper()
		if n, err := d.RunOnce(ctx); n != wantClaimed || err != nil {
			t.Fatalf("RunOnce: claimed %d (want %d), %v", n, wantClaimed, err)
		}
		return only(t, st)
	}
	n := step(1)
	if n.State != escrow.NotificationPending || n.Attempts != 1 || !n.NextAttempt.Equal(escrow.AuditTime(clk.Now().Add(time.Minute))) {
		t.Fatalf("after the first try: %+v", n)
	}
	step(0) // not due yet
	clk.Add(time.Minute)
	if n = step(1); n.State != escrow.NotificationPending || n.Attempts != 2 || !n.NextAttempt.Equal(escrow.AuditTime(clk.Now().Add(2*time.Minute))) {
		t.Fatalf("after the second try: %+v", n)
	}
	clk.Add(2 * time.Minute)
	n = step(1)
	if n.State != escrow.NotificationFailed || n.Attempts != 3 {
		t.Fatalf("after the last try: %+v", n)
	}
	if !strings.Contains(n.LastError, "connect") || strings.Contains(n.LastError, smtpPassword) {
		t.Errorf("LastError %q", n.LastError)
	}
	failed, err := st.Notifications(ctx, escrow.NotificationQuery{States: []escrow.NotificationState{escrow.NotificationFailed}})
	if err != nil || len(failed) != 1 {
		t.Fatalf("failed notifications: %v %v", failed, err)
	}
	clk.Add(24 * time.Hour)
	step(0) // failed is final
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "level=ERROR msg=\"notification failed for good") {
		t.Errorf("retries and the final failure are not logged at WARN and ERROR:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), smtpPassword) {
		t.Error("the SMTP password is in the log")
	}
}

func TestSMTPFailures(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	tests := []struct {
		name      string
		mode      mailMode
		tls       notify.TLSMode
		password  string
		target    string
		body      string
		wantState escrow.NotificationState
		wantErr   string
		wantMsgs  int
		wantAuths int
	}{
		{name: "rejected recipient fails at once", mode: modeStartTLS, tls: notify.StartTLS, password: smtpPassword, target: "gone@example.com",
			wantState: escrow.NotificationFailed, wantErr: "RCPT TO: the server answered 550", wantAuths: 1},
		{name: "wrong password is retried, never quoted", mode: modeStartTLS, tls: notify.StartTLS, password: "wrong-" + smtpPassword, target: "a@example.com",
			wantState: escrow.NotificationPending, wantErr: "AUTH PLAIN as \"fvescrow-relay\": the server answered 535", wantAuths: 1},
		{name: "no STARTTLS means no AUTH in clear", mode: modePlain, tls: notify.StartTLS, password: smtpPassword, target: "a@example.com",
			wantState: escrow.NotificationPending, wantErr: "does not offer STARTTLS"},
		{name: "untrusted certificate", mode: modeImplicit, tls: notify.ImplicitTLS, password: smtpPassword, target: "a@example.com",
			wantState: escrow.NotificationPending, wantErr: "certificate"},
		{name: "a recovery key is never mailed", mode: modeStartTLS, tls: notify.StartTLS, password: smtpPassword, target: "a@example.com",
			body: "reason: user read out ABCD-EFGH-1JKL-MN2P-QRS3-TUV4", wantState: escrow.NotificationFailed, wantErr: "shaped like a recovery key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mx := startMailServer(t, pki, tc.mode)
			mx.rejectRcpt = "gone@example.com"
			sender := smtpSender(t, pki, mx.addr, tc.tls, tc.password)
			if tc.name == "untrusted certificate" {
				sender = smtpSender(t, newPKI(t), mx.addr, tc.tls, tc.password)
			}
			st := sqlite(t)
			body := tc.body
			if body == "" {
				body = "something happened"
			}
			enqueue(t, st, escrow.Notification{Channel: "email", Target: tc.target, Subject: "s", Body: body})
			d := notify.NewDispatcher(st, map[string]notify.Sender{"email": sender})
			if _, err := d.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			got := only(t, st)
			if got.State != tc.wantState || got.Attempts != 1 || !strings.Contains(got.LastError, tc.wantErr) {
				t.Errorf("got %s after %d attempts, %q; want %s, %q", got.State, got.Attempts, got.LastError, tc.wantState, tc.wantErr)
			}
			if strings.Contains(got.LastError, smtpPassword) {
				t.Errorf("LastError holds the password: %q", got.LastError)
			}
			if n := len(mx.messages()); n != tc.wantMsgs {
				t.Errorf("%d messages accepted, want %d", n, tc.wantMsgs)
			}
			if n := len(mx.authAttempts()); n != tc.wantAuths {
				t.Errorf("%d AUTH attempts, want %d", n, tc.wantAuths)
			}
		})
	}
}

func TestSMTPConfigValidate(t *testing.T) {
	t.Parallel()
	pw := notify.NewSecret([]byte("x"))
	tests := []struct {
		name string
		cfg  notify.SMTPConfig
		want string
	}{
		{"ok", notify.SMTPConfig{Addr: "mail.example.com:587", From: "fvescrow@example.com"}, ""},
		{"no port", notify.SMTPConfig{Addr: "mail.example.com", From: "fvescrow@example.com"}, "want host:port"},
		{"bad from", notify.SMTPConfig{Addr: "m:25", From: "not an address"}, "sender"},
		{"from with line break", notify.SMTPConfig{Addr: "m:25", From: "a@example.com\r\nBcc: b@example.com"}, "sender"},
		{"bad mode", notify.SMTPConfig{Addr: "m:25", From: "a@example.com", TLS: "ssl"}, "want starttls, tls or none"},
		{"user without password", notify.SMTPConfig{Addr: "m:25", From: "a@example.com", Username: "u"}, "needs a password"},
		{"password in clear", notify.SMTPConfig{Addr: "m:25", From: "a@example.com", TLS: notify.NoTLS, Username: "u", Password: pw}, "in clear"},
		{"bad EHLO name", notify.SMTPConfig{Addr: "m:25", From: "a@example.com", LocalName: "a b\r\nRSET"}, "EHLO"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
