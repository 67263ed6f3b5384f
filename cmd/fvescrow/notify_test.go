package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/spf13/cobra"
)

func TestNotifyFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // "" when valid
	}{
		{"nothing configured", nil, nil, ""},
		{"full", []string{"--smtp-addr", "mail.example.com:587", "--smtp-from", "fvescrow <fvescrow@example.com>", "--smtp-user", "u", "--smtp-password-file", "pw",
			"--notify-webhook", "soc=https://soc.example.com/hook", "--notify-webhook-secret", "soc=f", "--siem-syslog", "tls://siem.example.com:6514",
			"--siem-ca-file", "ca.pem", "--siem-client-cert", "c.pem", "--siem-client-key", "k.pem", "--siem-facility", "local3"}, nil, ""},
		{"from env", nil, map[string]string{"FVESCROW_SMTP_ADDR": "mail.example.com:465", "FVESCROW_SMTP_FROM": "a@example.com", "FVESCROW_SMTP_TLS": "tls",
			"FVESCROW_NOTIFY_WEBHOOK": "a=https://a.example.com,b=http://127.0.0.1:9/x", "FVESCROW_NOTIFY_WEBHOOK_SECRET": "a=fa,b=fb"}, ""},
		{"env checked too", nil, map[string]string{"FVESCROW_SMTP_ADDR": "mail.example.com:587"}, "--smtp-addr needs --smtp-from"},
		{"smtp flags without addr", []string{"--smtp-from", "a@example.com"}, nil, "need --smtp-addr"},
		{"addr without port", []string{"--smtp-addr", "mail.example.com", "--smtp-from", "a@example.com"}, nil, "want host:port"},
		{"bad from", []string{"--smtp-addr", "m:25", "--smtp-from", "fvescrow"}, nil, "is not an e-mail address"},
		{"user without password", []string{"--smtp-addr", "m:25", "--smtp-from", "a@example.com", "--smtp-user", "u"}, nil, "go together"},
		{"password in clear", []string{"--smtp-addr", "m:25", "--smtp-from", "a@example.com", "--smtp-user", "u", "--smtp-password-file", "p", "--smtp-tls", "none"}, nil, "in clear"},
		{"bad tls mode", []string{"--smtp-addr", "m:25", "--smtp-from", "a@example.com", "--smtp-tls", "opportunistic"}, nil, "want starttls, tls or none"},
		{"webhook without secret", []string{"--notify-webhook", "soc=https://soc.example.com"}, nil, "needs --notify-webhook-secret soc=FILE"},
		{"secret without webhook", []string{"--notify-webhook-secret", "soc=f"}, nil, "no --notify-webhook of that name"},
		{"webhook not https", []string{"--notify-webhook", "soc=http://soc.example.com", "--notify-webhook-secret", "soc=f"}, nil, "must be https"},
		{"webhook twice", []string{"--notify-webhook", "a=https://x.example.com", "--notify-webhook", "a=https://y.example.com"}, nil, "given twice"},
		{"webhook without name", []string{"--notify-webhook", "https://x.example.com/?token=t0ps3cret"}, nil, "want NAME=URL"},
		{"no attempts", []string{"--notify-attempts", "0"}, nil, "at least 1"},
		{"syslog udp", []string{"--siem-syslog", "udp://siem.example.com:514"}, nil, "want tls://HOST:PORT"},
		{"syslog without port", []string{"--siem-syslog", "tls://siem.example.com"}, nil, "want tls://HOST:PORT"},
		{"client cert over tcp", []string{"--siem-syslog", "tcp://s.example.com:514", "--siem-client-cert", "c", "--siem-client-key", "k"}, nil, "needs --siem-syslog tls://"},
		{"cert without key", []string{"--siem-syslog", "tls://s.example.com:6514", "--siem-client-cert", "c"}, nil, "go together"},
		{"ca without siem", []string{"--siem-ca-file", "ca.pem"}, nil, "need --siem-syslog or --siem-webhook"},
		{"bad facility", []string{"--siem-syslog", "tls://s.example.com:6514", "--siem-facility", "security"}, nil, "--siem-facility"},
		{"siem webhook http", []string{"--siem-webhook", "http://siem.example.com/in"}, nil, "must be https"},
		{"siem secret without webhook", []string{"--siem-webhook-secret-file", "f"}, nil, "needs --siem-webhook"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c notifyConfig
			cmd := &cobra.Command{}
			c.register(cmd)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := applyEnv(cmd, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }); err != nil {
				t.Fatal(err)
			}
			err := c.validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("validate() = %v, want %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "t0ps3cret") {
				t.Errorf("the error quotes a URL token: %v", err)
			}
		})
	}
}

// TestNotifyBuildFiles: secrets and CA files are read at start, and a bad
// one stops the server with a usage error naming the flag or file.
func TestNotifyBuildFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := (&storeConfig{dataDir: filepath.Join(dir, "data")}).open(ctx, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	writeFile(t, filepath.Join(dir, "empty"), "\n")
	writeFile(t, filepath.Join(dir, "secret"), "0123456789abcdef-secret")
	writeFile(t, filepath.Join(dir, "short"), "short")
	writeFile(t, filepath.Join(dir, "notpem"), "hello")
	tests := []struct {
		name string
		cfg  notifyConfig
		want string
	}{
		{"missing password file", notifyConfig{smtpAddr: "m:587", smtpFrom: "a@example.com", smtpUser: "u", smtpPasswordFile: filepath.Join(dir, "nope")}, "nope"},
		{"empty password file", notifyConfig{smtpAddr: "m:587", smtpFrom: "a@example.com", smtpUser: "u", smtpPasswordFile: filepath.Join(dir, "empty")}, "is empty"},
		{"CA file without PEM", notifyConfig{smtpAddr: "m:587", smtpFrom: "a@example.com", smtpCAFile: filepath.Join(dir, "notpem")}, "--smtp-ca-file"},
		{"short webhook secret", notifyConfig{webhooks: []string{"soc=https://soc.example.com"}, webhookSecrets: []string{"soc=" + filepath.Join(dir, "short")}}, "at least 16 bytes"},
		{"ok", notifyConfig{webhooks: []string{"soc=https://soc.example.com"}, webhookSecrets: []string{"soc=" + filepath.Join(dir, "secret")}}, ""},
	}
	for _, tc := range tests {
		c := tc.cfg
		c.smtpTLS, c.attempts, c.retryDelay, c.siemFacility = "starttls", 8, time.Minute, "authpriv"
		hooks, workers, err := c.build(ctx, st, slog.New(slog.DiscardHandler))
		if tc.want == "" {
			if err != nil || len(hooks) != 1 || hooks[0] != "soc" || len(workers) != 1 {
				t.Errorf("%s: %v %v %d", tc.name, err, hooks, len(workers))
			}
			continue
		}
		var ee *exitError
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ee) || ee.code != exitUsage {
			t.Errorf("%s: %v, want a usage error with %q", tc.name, err, tc.want)
		}
	}
}

// TestServeNotifiesAndForwards is a reveal through a real server's REST API:
// the security channel gets an e-mail from a real SMTP server over STARTTLS
// with AUTH, the JSON webhook a signed POST, and the SIEM the audit record by
// syslog over mutual TLS and by webhook, in the API's audit format. The
// recovery key appears in none of them.
func TestServeNotifiesAndForwards(t *testing.T) {
	dir := t.TempDir()
	pki := ntNewPKI(t, dir)
	mx := ntStartMail(t, pki)
	hook := &ntHookSink{secret: "soc-secret-0123456789"}
	hookSrv := httptest.NewServer(hook)
	t.Cleanup(hookSrv.Close)
	siemHook := &ntHookSink{secret: "siem-secret-0123456789"}
	siemSrv := httptest.NewServer(siemHook)
	t.Cleanup(siemSrv.Close)
	syslogRcv := ntStartSyslog(t, pki)
	writeFile(t, filepath.Join(dir, "smtp-pw"), ntSMTPPassword+"\n")
	writeFile(t, filepath.Join(dir, "soc-secret"), hook.secret)
	writeFile(t, filepath.Join(dir, "siem-secret"), siemHook.secret)

	s := startServer(t, modeEmbedded, func(c *serveConfig) {
		c.helpdesk.securityEmails = []string{"security@example.com"}
		n := &c.notify
		n.smtpAddr, n.smtpFrom, n.smtpUser, n.smtpPasswordFile = mx.addr, "fvescrow <fvescrow@example.com>", ntSMTPUser, filepath.Join(dir, "smtp-pw")
		n.smtpCAFile = pki.caFile
		n.webhooks, n.webhookSecrets = []string{"soc=" + hookSrv.URL + "/hook"}, []string{"soc=" + filepath.Join(dir, "soc-secret")}
		n.siemSyslog, n.siemCAFile, n.siemClientCert, n.siemClientKey = "tls://"+syslogRcv.addr, pki.caFile, pki.clientCert, pki.clientKey
		n.siemWebhook, n.siemWebhookSecretFile = siemSrv.URL+"/collect", filepath.Join(dir, "siem-secret")
		n.siemFacility, n.siemHostname = "local4", "escrow-test"
		n.dispatchEvery, n.siemEvery = 20*time.Millisecond, 20*time.Millisecond
	})
	// The harness builds the server; serve would start these.
	bg, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range s.srv.workers {
		wg.Go(func() { w(bg) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	if len(s.srv.workers) != 3 {
		t.Fatalf("%d workers, want the dispatcher and two forwarders", len(s.srv.workers))
	}

	m := s.enroll(fakemac.Options{Users: []fakemac.User{{UserName: "ada", UID: 501, GUID: "A-GUID", HasSecureToken: true, IsLoggedIn: true}}})
	connect(t, s, m)
	if err := m.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)
	connect(t, s, m)
	if d := device(t, s, m); d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) {
		t.Fatalf("not escrowed: %v", d.Attrs)
	}
	status, body := s.api(http.MethodPost, "/api/v1/devices/"+m.UDID+"/reveal", []byte(`{"reason":"user locked out at FileVault login","ticket":"IT-4242"}`))
	var rv wire.RevealResponse
	if err := json.Unmarshal(body, &rv); status != http.StatusOK || err != nil || rv.Key != m.PRK() {
		t.Fatalf("reveal: %d %s", status, body)
	}
	prk := m.PRK()

	eventually(t, "the e-mail, the webhook and both SIEM sinks", func() bool {
		return len(mx.messages()) > 0 && len(hook.requests()) > 0 && syslogRcv.has(rv.AuditSeq) && siemHook.hasRecord(rv.AuditSeq)
	})
	eventually(t, "both notifications marked delivered", func() bool {
		_, b := s.api(http.MethodGet, "/api/v1/notifications?state=delivered", nil)
		var out struct{ Notifications []wire.Notification }
		return json.Unmarshal(b, &out) == nil && len(out.Notifications) == 2
	})

	// The e-mail.
	msg := mx.messages()[0]
	if !msg.tls || len(msg.to) != 1 || msg.to[0] != "security@example.com" || msg.from != "fvescrow@example.com" {
		t.Errorf("envelope %+v", msg)
	}
	parsed, err := mail.ReadMessage(bytes.NewReader(msg.data))
	if err != nil {
		t.Fatal(err)
	}
	if subj := parsed.Header.Get("Subject"); subj != "fvescrow: a FileVault recovery key was revealed" {
		t.Errorf("Subject %q", subj)
	}
	for _, want := range []string{"serial: " + m.Serial, "ticket: IT-4242", "audit_record: " + strconv.FormatInt(rv.AuditSeq, 10), "No key is included"} {
		if !strings.Contains(ntQPDecoded(t, msg.data), want) {
			t.Errorf("e-mail lacks %q:\n%s", want, msg.data)
		}
	}
	// The webhook.
	hr := hook.requests()[0]
	var payload struct {
		Event    string            `json:"event"`
		Fields   map[string]string `json:"fields"`
		AuditSeq int64             `json:"audit_seq"`
	}
	if err := json.Unmarshal(hr.body, &payload); err != nil || !hr.signed || payload.AuditSeq != rv.AuditSeq || payload.Fields["serial"] != m.Serial {
		t.Errorf("webhook: signed=%v %s (%v)", hr.signed, hr.body, err)
	}
	// The SIEM sees the record exactly as the API shows it.
	_, b := s.api(http.MethodGet, fmt.Sprintf("/api/v1/audit?after=%d", rv.AuditSeq-1), nil)
	var list wire.AuditList
	if err := json.Unmarshal(b, &list); err != nil || len(list.Records) == 0 || list.Records[0].Seq != rv.AuditSeq {
		t.Fatalf("audit API: %s", b)
	}
	want := list.Records[0]
	if want.Action != escrow.ActionKeyRevealed {
		t.Fatalf("record %d is %s", want.Seq, want.Action)
	}
	gotSyslog := syslogRcv.record(t, rv.AuditSeq)
	if !reflect.DeepEqual(gotSyslog.rec, want) || !strings.HasPrefix(gotSyslog.header, "<165>1 ") || !strings.Contains(gotSyslog.header, " escrow-test fvescrow - key.revealed [fvescrow@32473 seq=\""+strconv.FormatInt(want.Seq, 10)+"\" hash=\""+want.Hash+"\"") {
		t.Errorf("syslog: %s\n%+v\nwant %+v", gotSyslog.header, gotSyslog.rec, want)
	}
	if got := siemHook.record(rv.AuditSeq); !reflect.DeepEqual(got, want) {
		t.Errorf("SIEM webhook record %+v, want %+v", got, want)
	}
	for name, b := range map[string][]byte{"e-mail": msg.data, "webhook": hr.body, "syslog": syslogRcv.raw(), "SIEM webhook": siemHook.raw(), "server log": []byte(s.logs.String())} {
		if bytes.Contains(b, []byte(prk)) {
			t.Errorf("the recovery key is in the %s", name)
		}
		if bytes.Contains(b, []byte(ntSMTPPassword)) {
			t.Errorf("the SMTP password is in the %s", name)
		}
	}
}

const (
	ntSMTPUser     = "relay"
	ntSMTPPassword = "smtp-pw-9f8e7d6c5b"
)

// ntPKI is a test CA, a server certificate for 127.0.0.1 and a client
// certificate, with the PEM files the flags take.
type ntPKI struct {
	server                        tls.Certificate
	pool                          *x509.CertPool
	caFile, clientCert, clientKey string
}

func ntNewPKI(t *testing.T, dir string) ntPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "notify e2e CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "fvescrow test"}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		pk, _ := x509.MarshalPKCS8PrivateKey(key)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	}
	p := ntPKI{pool: x509.NewCertPool(), caFile: filepath.Join(dir, "ca.pem"), clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client.key")}
	p.pool.AddCert(ca)
	p.server, _, _ = issue(2, x509.ExtKeyUsageServerAuth)
	_, certPEM, keyPEM := issue(3, x509.ExtKeyUsageClientAuth)
	writeFile(t, p.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	writeFile(t, p.clientCert, string(certPEM))
	writeFile(t, p.clientKey, string(keyPEM))
	return p
}

// ntMail is a real SMTP server (emersion/go-smtp): STARTTLS, then AUTH
// PLAIN, recording what it accepts.
type ntMail struct {
	addr string
	mu   sync.Mutex
	msgs []ntMailMsg
}

type ntMailMsg struct {
	from string
	to   []string
	data []byte
	tls  bool
}

func ntStartMail(t *testing.T, pki ntPKI) *ntMail {
	t.Helper()
	m := &ntMail{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &ntMailSession{m: m, c: c}, nil }))
	srv.Domain, srv.TLSConfig = "mx.test", &tls.Config{Certificates: []tls.Certificate{pki.server}}
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return m
}

func (m *ntMail) messages() []ntMailMsg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]ntMailMsg(nil), m.msgs...)
}

type ntMailSession struct {
	m      *ntMail
	c      *smtp.Conn
	authed bool
	from   string
	to     []string
}

func (s *ntMailSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *ntMailSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ntSMTPUser || pass != ntSMTPPassword {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}
func (s *ntMailSession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}
func (s *ntMailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *ntMailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.c.TLSConnectionState()
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.msgs = append(s.m.msgs, ntMailMsg{from: s.from, to: s.to, data: b, tls: isTLS})
	return nil
}
func (s *ntMailSession) Reset()        { s.from, s.to = "", nil }
func (s *ntMailSession) Logout() error { return nil }

func ntQPDecoded(t *testing.T, data []byte) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(quotedprintable.NewReader(msg.Body))
	return string(b)
}

// ntHookSink receives webhooks and checks their signatures.
type ntHookSink struct {
	secret string
	mu     sync.Mutex
	reqs   []ntHookReq
}

type ntHookReq struct {
	body   []byte
	signed bool
}

func (h *ntHookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	mac := hmac.New(sha256.New, []byte(h.secret))
	mac.Write([]byte(r.Header.Get("Fvescrow-Timestamp") + "."))
	mac.Write(body)
	signed := hmac.Equal([]byte(r.Header.Get("Fvescrow-Signature")), []byte("v1="+hex.EncodeToString(mac.Sum(nil))))
	h.mu.Lock()
	h.reqs = append(h.reqs, ntHookReq{body: body, signed: signed})
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *ntHookSink) requests() []ntHookReq {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]ntHookReq(nil), h.reqs...)
}

func (h *ntHookSink) raw() []byte {
	var b bytes.Buffer
	for _, r := range h.requests() {
		b.Write(r.body)
	}
	return b.Bytes()
}

// record finds audit record seq in the signed batches received.
func (h *ntHookSink) record(seq int64) wire.AuditRecord {
	for _, r := range h.requests() {
		var list wire.AuditList
		if !r.signed || json.Unmarshal(r.body, &list) != nil {
			continue
		}
		for _, rec := range list.Records {
			if rec.Seq == seq {
				return rec
			}
		}
	}
	return wire.AuditRecord{}
}

func (h *ntHookSink) hasRecord(seq int64) bool { return h.record(seq).Seq == seq }

// ntSyslog is a syslog receiver on a mutual-TLS listener, reading
// octet-counted frames.
type ntSyslog struct {
	addr string
	mu   sync.Mutex
	msgs [][]byte
}

type ntSyslogRecord struct {
	header string
	rec    wire.AuditRecord
}

func ntStartSyslog(t *testing.T, pki ntPKI) *ntSyslog {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	r := &ntSyslog{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					lenText, err := br.ReadString(' ')
					if err != nil {
						return // EOF: the sender finished; closing confirms
					}
					n, err := strconv.Atoi(strings.TrimSuffix(lenText, " "))
					if err != nil || n <= 0 || n > 1<<20 {
						return
					}
					b := make([]byte, n)
					if _, err := io.ReadFull(br, b); err != nil {
						return
					}
					r.mu.Lock()
					r.msgs = append(r.msgs, b)
					r.mu.Unlock()
				}
			})
		}
	})
	return r
}

func (r *ntSyslog) raw() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.msgs, []byte("\n"))
}

// find returns the message of record seq: its header and structured data,
// and its MSG decoded.
func (r *ntSyslog) find(seq int64) (ntSyslogRecord, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		i := bytes.Index(m, []byte(`"] {`))
		if i < 0 {
			continue
		}
		var rec wire.AuditRecord
		if json.Unmarshal(m[i+3:], &rec) == nil && rec.Seq == seq {
			return ntSyslogRecord{header: string(m[:i+2]), rec: rec}, true
		}
	}
	return ntSyslogRecord{}, false
}

func (r *ntSyslog) has(seq int64) bool { _, ok := r.find(seq); return ok }

func (r *ntSyslog) record(t *testing.T, seq int64) ntSyslogRecord {
	t.Helper()
	got, ok := r.find(seq)
	if !ok {
		t.Fatalf("no syslog message for record %d", seq)
	}
	return got
}
