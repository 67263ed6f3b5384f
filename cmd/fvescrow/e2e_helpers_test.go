package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// Storage modes the end-to-end tests run in.
const (
	modeEmbedded   = "embedded"
	modeProduction = "postgres+vault"
)

var modes = []string{modeEmbedded, modeProduction}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is `fvescrow serve` in process: the real buildServer behind TLS.
type testServer struct {
	t        *testing.T
	mode     string
	cfg      serveConfig
	srv      *server
	ts       *httptest.Server
	addr     string
	logs     *syncBuffer
	apiToken string
	apns     *fakeAPNs
}

// startServer starts a server in mode, with the push certificate uploaded
// through the API.
func startServer(t *testing.T, mode string, tweak ...func(*serveConfig)) *testServer {
	t.Helper()
	dir := t.TempDir()
	s := &testServer{t: t, mode: mode, logs: &syncBuffer{}, apns: newFakeAPNs(t)}
	s.apiToken = "test-api-token-" + randHex(8)
	tokenFile := filepath.Join(dir, "api-token")
	writeFile(t, tokenFile, s.apiToken)
	s.cfg = defaultServeConfig()
	s.cfg.stores.dataDir = filepath.Join(dir, "data")
	s.cfg.apiTokenFile = tokenFile
	s.cfg.fvLocation = "Example Corp IT"
	s.cfg.checkInterval, s.cfg.outboxInterval, s.cfg.checkpointEvery = time.Hour, time.Hour, time.Hour
	s.cfg.testPushClient = s.apns.client
	if mode == modeProduction {
		s.cfg.stores.databaseURL = pgtest.NewDatabase(t)
		v := vaulttest.StartDev(t)
		policy, err := os.ReadFile("../../deploy/vault/fvescrow-policy.hcl")
		if err != nil {
			t.Fatal(err)
		}
		vt := filepath.Join(dir, "vault-token")
		writeFile(t, vt, v.PolicyToken(t, string(policy)))
		s.cfg.stores.vaultAddr, s.cfg.stores.vaultTokenFile = v.Addr, vt
	}
	for _, f := range tweak {
		f(&s.cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.start(ln)
	t.Cleanup(s.stop)
	s.uploadPushCert()
	return s
}

func (s *testServer) start(ln net.Listener) {
	s.t.Helper()
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, _, err := buildServer(context.Background(), &s.cfg, log)
	if err != nil {
		s.t.Fatal(err)
	}
	s.srv = srv
	s.ts = httptest.NewUnstartedServer(srv.handler)
	s.ts.Listener.Close()
	s.ts.Listener = ln
	s.ts.StartTLS()
}

func (s *testServer) stop() {
	if s.ts != nil {
		s.ts.Close()
		s.ts = nil
	}
	if s.srv != nil {
		s.srv.close()
		s.srv = nil
	}
}

// restart stops the server as a crash would (nothing flushed beyond what was
// committed) and starts a new process on the same data and address.
func (s *testServer) restart() {
	s.t.Helper()
	s.stop()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.start(ln)
}

// URL is the server's https base URL.
func (s *testServer) URL() string { return s.ts.URL }

// Client trusts the server's TLS certificate.
func (s *testServer) Client() *http.Client { return s.ts.Client() }

// storeArgs are the CLI flags that open this server's stores.
func (s *testServer) storeArgs() []string {
	args := []string{"--data", s.cfg.stores.dataDir}
	if s.mode == modeProduction {
		args = append(args, "--database-url", s.cfg.stores.databaseURL, "--vault-addr", s.cfg.stores.vaultAddr, "--vault-token-file", s.cfg.stores.vaultTokenFile)
	}
	return args
}

// cli runs an fvescrow command in process and returns stdout, failing the
// test on a non-zero exit.
func (s *testServer) cli(args ...string) string {
	s.t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, strings.NewReader(""), &out, &errb); code != 0 {
		s.t.Fatalf("fvescrow %v: exit %d\n%s", args, code, errb.String())
	}
	return out.String()
}

// enrollmentProfile writes the enrollment profile with the CLI.
func (s *testServer) enrollmentProfile() []byte {
	s.t.Helper()
	return []byte(s.cli(append([]string{"profile", "enroll", "--url", s.URL()}, s.storeArgs()...)...))
}

// enqueue queues a command with the CLI, trusting the server's test CA.
func (s *testServer) enqueue(command, udid string) string {
	s.t.Helper()
	ca := filepath.Join(s.t.TempDir(), "ca.pem")
	writeFile(s.t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})))
	return s.cli("mdm", "enqueue", "--server", s.URL(), "--api-token-file", s.cfg.apiTokenFile, "--ca-cert", ca, "--command", command, udid)
}

// enroll enrolls a new fake Mac.
func (s *testServer) enroll(o fakemac.Options) *fakemac.Mac {
	s.t.Helper()
	o.Client = s.Client()
	m, err := fakemac.Enroll(context.Background(), s.enrollmentProfile(), o)
	if err != nil {
		s.t.Fatalf("enroll: %v\n--- server log\n%s", err, s.logs.String())
	}
	return m
}

// api makes an authenticated API request.
func (s *testServer) api(method, path string, body []byte) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.apiToken)
	resp, err := s.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

var oidUID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

// uploadPushCert uploads a push certificate shaped like Apple's (the topic
// in the UID attribute) through nanomdm's pushcert API.
func (s *testServer) uploadPushCert() {
	s.t.Helper()
	certPEM, keyPEM := fakePushCert(s.t, "com.apple.mgmt.External."+randHex(8))
	status, body := s.api(http.MethodPut, "/nanomdm/v1/pushcert", append(certPEM, keyPEM...))
	if status != http.StatusOK || !strings.Contains(string(body), "com.apple.mgmt.External.") {
		s.t.Fatalf("push cert upload: %d %s", status, body)
	}
}

// fataler is the part of testing.T the certificate helpers use.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

func fakePushCert(t fataler, topic string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "APSP:" + topic, ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidUID, Value: topic}}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

// fakeAPNs is an HTTP/2 server standing in for api.push.apple.com.
type fakeAPNs struct {
	mu     sync.Mutex
	pushes []string // device tokens (hex) pushed to
	srv    *httptest.Server
}

func newFakeAPNs(t *testing.T) *fakeAPNs {
	f := &fakeAPNs{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.pushes = append(f.pushes, strings.TrimPrefix(r.URL.Path, "/3/device/"))
		f.mu.Unlock()
		w.Header().Set("apns-id", randHex(16))
		w.WriteHeader(http.StatusOK)
	}))
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// client is the PushClient hook: every APNs request goes to the fake.
func (f *fakeAPNs) client(*tls.Certificate) (*http.Client, error) {
	base := f.srv.Client()
	target := f.srv.Listener.Addr().String()
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Host, r.Host = target, ""
		return base.Transport.RoundTrip(r)
	})}, nil
}

func (f *fakeAPNs) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pushes)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	const hexd = "0123456789abcdef"
	out := make([]byte, 2*n)
	for i, c := range b {
		out[2*i], out[2*i+1] = hexd[c>>4], hexd[c&15]
	}
	return string(out)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
