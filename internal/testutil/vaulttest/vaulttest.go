// Package vaulttest runs a real HashiCorp Vault server for tests: an
// in-memory dev server ([StartDev]) or a sealed, file-backed server that can be
// stopped and started again with its data ([StartPersistent]).
//
// The server binary is the real Vault (built from Vault's own Go module by
// deploy/vault-dev, see docs/real-parts.md); [Binary] finds it. When it is
// missing, tests skip locally and fail under FVESCROW_INTEGRATION=1, through
// testutil.Need.
//
// Every server runs as a subprocess on 127.0.0.1 with a random root token; it
// is killed when the test ends, and its output is shown only if the test
// failed.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/internal/testutil"
)

// DefaultVersion is the Vault version tests expect in the binary cache.
const DefaultVersion = "1.21.0"

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 60 * time.Second

// Binary returns the path of the Vault server binary: $FVESCROW_VAULT_BIN,
// else ~/.cache/fvescrow/vault-<DefaultVersion>. When it is missing the test
// skips, or fails under FVESCROW_INTEGRATION=1.
func Binary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("FVESCROW_VAULT_BIN")
	if p == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			testutil.Need(t, "Vault server", err)
		}
		p = filepath.Join(home, ".cache", "fvescrow", "vault-"+DefaultVersion)
	}
	fi, err := os.Stat(p)
	if err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
		err = fmt.Errorf("%s is not an executable file", p)
	}
	if err != nil {
		err = fmt.Errorf("%w (build it with deploy/vault-dev, or set FVESCROW_VAULT_BIN)", err)
	}
	testutil.Need(t, "Vault server", err)
	return p
}

// Server is a running Vault server.
type Server struct {
	// Addr is the server's address, e.g. http://127.0.0.1:8200.
	Addr string
	// RootToken is a root token (random for each server).
	RootToken string
	// CACert is the PEM file of the CA that signed the server's certificate
	// (StartDevTLS); empty for a plain-HTTP server.
	CACert string

	t         testing.TB
	bin       string
	args      []string
	out       *logBuffer
	unsealKey string // persistent servers only
	dev       bool

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited

	authMu sync.Mutex // serialises enabling auth methods
}

// StartDev starts `vault server -dev`: in memory, unsealed, with KV v2
// mounted at secret/. It is killed when the test ends.
func StartDev(t testing.TB) *Server {
	t.Helper()
	return startDev(t, false)
}

// StartDevTLS is StartDev serving HTTPS with a certificate for 127.0.0.1
// and localhost, signed by a fresh CA whose PEM file is Server.CACert.
func StartDevTLS(t testing.TB) *Server {
	t.Helper()
	return startDev(t, true)
}

func startDev(t testing.TB, tls bool) *Server {
	t.Helper()
	bin := Binary(t)
	root := "root-" + randHex(12)
	var last error
	// The dev server also listens on port+1 (cluster), so two ports must be
	// free; another process can still grab them between the check and the
	// start, hence the few attempts.
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePortPair()
		if err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		s := &Server{
			Addr: "http://" + addr, RootToken: root, t: t, bin: bin, dev: true, out: &logBuffer{},
			args: []string{"server", "-dev", "-dev-root-token-id=" + root, "-dev-listen-address=" + addr,
				"-dev-no-store-token"}, // never write ~/.vault-token
		}
		if tls {
			dir := t.TempDir()
			s.Addr = "https://" + addr
			s.CACert = filepath.Join(dir, "vault-ca.pem")
			s.args = append(s.args, "-dev-tls", "-dev-tls-cert-dir="+dir)
		}
		t.Cleanup(s.cleanup)
		if last = s.start(); last == nil {
			if last = s.waitReady(); last == nil {
				return s
			}
		}
		s.kill()
	}
	t.Fatalf("vaulttest: dev server did not start: %v", last)
	return nil
}

// StartPersistent starts a production-mode server with file storage in a
// temporary directory, initialises it (one unseal key), unseals it and mounts
// KV v2 at secret/. Unlike a dev server it keeps its data across
// [Server.Stop] and [Server.Start], so a test can take Vault away mid-run and
// bring it back.
func StartPersistent(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	ports, err := freePorts(2)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	cluster := "127.0.0.1:" + strconv.Itoa(ports[1])
	cfg := fmt.Sprintf(`storage "file" {
  path = %q
}
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}
api_addr      = "http://%s"
cluster_addr  = "https://%s"
disable_mlock = true
ui            = false
`, filepath.Join(dir, "data"), addr, cluster, addr, cluster)
	cfgPath := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Addr: "http://" + addr, t: t, bin: bin, out: &logBuffer{},
		args: []string{"server", "-config=" + cfgPath},
	}
	t.Cleanup(s.cleanup)
	if err := s.start(); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c := s.newClient("")
	if err := s.poll(ctx, func() error { _, err := c.Sys().HealthWithContext(ctx); return err }); err != nil {
		t.Fatalf("vaulttest: persistent server did not answer: %v", err)
	}
	init, err := c.Sys().InitWithContext(ctx, &vault.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("vaulttest: init: %v", err)
	}
	s.RootToken, s.unsealKey = init.RootToken, init.Keys[0]
	if err := s.unseal(ctx); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	root := s.Client()
	err = root.Sys().MountWithContext(ctx, "secret", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
	if err != nil {
		t.Fatalf("vaulttest: mount KV v2 at secret/: %v", err)
	}
	if err := s.waitReady(); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return s
}

// Client returns a new client for the server holding the root token.
func (s *Server) Client() *vault.Client { return s.newClient(s.RootToken) }

// Stop kills the server and waits for it to exit. Requests then fail with
// "connection refused", as when Vault is down. Call it from the test that
// started the server.
func (s *Server) Stop() {
	s.t.Helper()
	s.kill()
}

// Start starts a stopped server again on the same address. A persistent
// server is unsealed with its unseal key and has all its data; a dev server
// starts empty (with the same root token). Call it from the test that started
// the server.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		s.t.Fatalf("vaulttest: Start: the server is running")
	}
	if s.dev && s.CACert != "" {
		_ = os.Remove(s.CACert) // a dev TLS server makes a new CA; wait for that one
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("vaulttest: restart: %v", err)
	}
	if !s.dev {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if err := s.unseal(ctx); err != nil {
			s.t.Fatalf("vaulttest: restart: %v", err)
		}
	}
	if err := s.waitReady(); err != nil {
		s.t.Fatalf("vaulttest: restart: %v", err)
	}
}

// TokenOption adjusts the tokens [Server.PolicyToken] creates and the tokens
// an [Server.AppRole] role issues.
type TokenOption func(*tokenParams)

type tokenParams struct {
	ttl, maxTTL time.Duration
	renewable   bool
}

// WithTTL sets the token TTL and its maximum TTL (0: Vault's system maximum).
func WithTTL(ttl, maxTTL time.Duration) TokenOption {
	return func(p *tokenParams) { p.ttl, p.maxTTL = ttl, maxTTL }
}

// NotRenewable makes PolicyToken create a token that cannot be renewed.
func NotRenewable() TokenOption { return func(p *tokenParams) { p.renewable = false } }

func tokenOptions(opts []TokenOption) tokenParams {
	p := tokenParams{ttl: time.Hour, renewable: true}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// PolicyToken writes policyHCL as a new policy and returns a renewable token
// (TTL 1h unless WithTTL) that holds exactly that policy: it is created with
// no_default_policy, so the policy alone must grant everything the token
// holder does, token lookup-self and renew-self included.
func (s *Server) PolicyToken(t testing.TB, policyHCL string, opts ...TokenOption) string {
	t.Helper()
	p := tokenOptions(opts)
	name := s.putPolicy(t, policyHCL)
	req := &vault.TokenCreateRequest{
		Policies:        []string{name},
		NoDefaultPolicy: true,
		NoParent:        true,
		TTL:             p.ttl.String(),
		Renewable:       &p.renewable,
		DisplayName:     "vaulttest",
	}
	if p.maxTTL > 0 {
		req.ExplicitMaxTTL = p.maxTTL.String()
	}
	sec, err := s.Client().Auth().Token().CreateOrphanWithContext(context.Background(), req)
	if err != nil {
		t.Fatalf("vaulttest: create token: %v", err)
	}
	return sec.Auth.ClientToken
}

// AppRole enables AppRole auth at auth/approle (once per server), creates a
// role whose tokens hold exactly policyHCL (no default policy; TTL 1h unless
// WithTTL) and returns its role ID and a new secret ID.
func (s *Server) AppRole(t testing.TB, policyHCL string, opts ...TokenOption) (roleID, secretID string) {
	t.Helper()
	p := tokenOptions(opts)
	ctx := context.Background()
	c := s.Client()
	s.enableAuth(t, "approle")
	policy := s.putPolicy(t, policyHCL)
	role := "role-" + randHex(6)
	params := map[string]any{
		"token_policies":          []string{policy},
		"token_no_default_policy": true,
		"token_ttl":               int(p.ttl.Seconds()),
		"token_max_ttl":           int(p.maxTTL.Seconds()),
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+role, params); err != nil {
		t.Fatalf("vaulttest: create AppRole role: %v", err)
	}
	sec, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	if err != nil || sec == nil {
		t.Fatalf("vaulttest: read role ID: %v", err)
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec, err = c.Logical().WriteWithContext(ctx, "auth/approle/role/"+role+"/secret-id", nil)
	if err != nil || sec == nil {
		t.Fatalf("vaulttest: create secret ID: %v", err)
	}
	secretID, _ = sec.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatalf("vaulttest: AppRole role %s: empty role ID or secret ID", role)
	}
	return roleID, secretID
}

// enableAuth enables an auth method at its default path unless it is.
func (s *Server) enableAuth(t testing.TB, typ string) {
	t.Helper()
	s.authMu.Lock()
	defer s.authMu.Unlock()
	ctx := context.Background()
	c := s.Client()
	mounts, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		t.Fatalf("vaulttest: list auth methods: %v", err)
	}
	if _, ok := mounts[typ+"/"]; ok {
		return
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, typ, &vault.EnableAuthOptions{Type: typ}); err != nil {
		t.Fatalf("vaulttest: enable %s auth: %v", typ, err)
	}
}

func (s *Server) putPolicy(t testing.TB, hcl string) string {
	t.Helper()
	name := "policy-" + randHex(6)
	if err := s.Client().Sys().PutPolicyWithContext(context.Background(), name, hcl); err != nil {
		t.Fatalf("vaulttest: write policy: %v", err)
	}
	return name
}

// Output returns what the server printed so far.
func (s *Server) Output() string { return s.out.String() }

func (s *Server) newClient(token string) *vault.Client {
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		s.t.Fatalf("vaulttest: %v", cfg.Error)
	}
	cfg.Address = s.Addr
	cfg.AgentAddress = "" // VAULT_AGENT_ADDR would take precedence over Address
	if s.CACert != "" {
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: s.CACert}); err != nil {
			s.t.Fatalf("vaulttest: %v", err)
		}
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		s.t.Fatalf("vaulttest: %v", err)
	}
	c.ClearNamespace()
	c.SetToken(token) // also replaces any VAULT_TOKEN from the environment
	return c
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = s.out, s.out
	setDeathSignal(cmd)
	fmt.Fprintf(s.out, "==> vaulttest: starting %s\n", strings.Join(redactArgs(s.args), " "))
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(s.out, "==> vaulttest: server exited: %v\n", err)
		close(done)
	}()
	s.proc, s.done = cmd, done
	return nil
}

// kill stops the server (if running) and waits for it to exit.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.proc, s.done
	s.proc, s.done = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

func (s *Server) cleanup() {
	s.kill()
	if s.t.Failed() {
		s.t.Logf("vaulttest: output of the Vault server at %s:\n%s", s.Addr, s.out.String())
	}
}

func (s *Server) unseal(ctx context.Context) error {
	c := s.newClient("")
	if err := s.poll(ctx, func() error { _, err := c.Sys().HealthWithContext(ctx); return err }); err != nil {
		return fmt.Errorf("server did not answer: %w", err)
	}
	st, err := c.Sys().UnsealWithContext(ctx, s.unsealKey)
	if err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	if st.Sealed {
		return errors.New("unseal: still sealed")
	}
	return nil
}

// waitReady waits until the server is active and KV v2 at secret/ serves
// requests (a new KV v2 mount answers "upgrading" for a moment).
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if s.CACert != "" { // written by the server as it starts
		err := s.poll(ctx, func() error {
			b, err := os.ReadFile(s.CACert)
			if err == nil && !bytes.Contains(b, []byte("-----END CERTIFICATE-----")) {
				err = errors.New("CA certificate not written yet")
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	c := s.Client()
	c.SetMaxRetries(0)
	return s.poll(ctx, func() error {
		h, err := c.Sys().HealthWithContext(ctx)
		if err != nil {
			return err
		}
		if !h.Initialized || h.Sealed || h.Standby {
			return fmt.Errorf("not active: %+v", h)
		}
		_, err = c.Logical().ReadWithContext(ctx, "secret/config")
		return err
	})
}

// poll calls f until it succeeds, the server exits or ctx ends.
func (s *Server) poll(ctx context.Context, f func() error) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	var err error
	for {
		if err = f(); err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("server exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// serverEnv is the test's environment without VAULT_* variables, so a
// developer's VAULT_ADDR or VAULT_TOKEN cannot leak into the test server.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.HasPrefix(a, "-dev-root-token-id=") {
			a = "-dev-root-token-id=REDACTED"
		}
		out[i] = a
	}
	return out
}

// freePortPair returns a port p on 127.0.0.1 such that p and p+1 are free.
func freePortPair() (int, error) {
	for i := 0; i < 50; i++ {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("no two consecutive free ports on 127.0.0.1")
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// logBuffer collects server output; the process writes from its own
// goroutines. It keeps the last 1 MiB.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const maxLog = 1 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > maxLog {
		b.buf.Next(b.buf.Len() - maxLog)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
