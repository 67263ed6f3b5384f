package vaultstore

// Unit tests with a fake of the kvStore interface and local HTTP stubs, for
// what a real server cannot show on demand (call order, a failure between
// two requests, many requests hitting an expired token at once, the exact
// login requests). The behaviour against Vault itself is tested against a
// real server in vaultstore_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow"
)

var ref = escrow.SecretRef{Kind: escrow.KindPRK, Owner: "dev-1"}

// fakeKV records calls and answers from a script.
type fakeKV struct {
	mu    sync.Mutex
	calls []string
	// errs maps a call name ("meta:max_versions", "meta:custom_metadata",
	// "put", "get") to the errors to return, one per call, in order.
	errs    map[string][]error
	version int
	data    map[string]any
	deleted bool
	// refuse, if set, is asked before each Get (to refuse a stale token).
	refuse func() error
}

func (f *fakeKV) next(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	if len(f.errs[name]) == 0 {
		return nil
	}
	err := f.errs[name][0]
	f.errs[name] = f.errs[name][1:]
	return err
}

func (f *fakeKV) Put(_ context.Context, _ string, data map[string]any, opts ...vault.KVOption) (*vault.KVSecret, error) {
	cas := -1
	for _, o := range opts {
		if k, v := o(); k == "cas" {
			cas = v.(int)
		}
	}
	if err := f.next(fmt.Sprintf("put cas=%d", cas)); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version++
	f.data = data
	return &vault.KVSecret{VersionMetadata: &vault.KVVersionMetadata{Version: f.version}}, nil
}

func (f *fakeKV) Get(ctx context.Context, path string) (*vault.KVSecret, error) {
	return f.GetVersion(ctx, path, 0)
}

func (f *fakeKV) GetVersion(_ context.Context, _ string, v int) (*vault.KVSecret, error) {
	if err := f.next("get"); err != nil {
		return nil, err
	}
	if f.refuse != nil {
		if err := f.refuse(); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	md := &vault.KVVersionMetadata{Version: f.version}
	if f.deleted {
		md.DeletionTime = time.Now()
		return &vault.KVSecret{VersionMetadata: md}, nil
	}
	return &vault.KVSecret{Data: f.data, VersionMetadata: md}, nil
}

func (f *fakeKV) WriteMetadata(_ context.Context, _ string, fields map[string]any) error {
	for k := range fields {
		if err := f.next("meta:" + k); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeKV) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func respErr(code int, msgs ...string) error {
	return fmt.Errorf("error writing secret to secret/data/x: %w", &vault.ResponseError{
		HTTPMethod: "PUT", URL: "http://vault/v1/secret/data/x", StatusCode: code, Errors: msgs,
	})
}

var (
	errCAS          = respErr(400, "check-and-set parameter did not match the current version")
	errDenied       = respErr(403, "1 error occurred:\n\t* permission denied\n\n")
	errInvalidToken = respErr(403, "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n")
)

func newFakeStore(t *testing.T, kv *fakeKV, auth vault.AuthMethod, log *slog.Logger) *Store {
	t.Helper()
	c, err := vault.NewClient(&vault.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("tok-0")
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{
		client: c, kv: kv, prefix: "fvescrow", maxVersions: 77, log: log, auth: auth,
		fresh: make(chan *vault.Secret, 1), cancel: func() {}, done: make(chan struct{}),
	}
}

func TestPutCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		cas     int
		errs    map[string][]error
		want    []string
		wantErr error
	}{
		{"first version", 0, nil,
			[]string{"meta:max_versions", "put cas=0", "meta:custom_metadata"}, nil},
		{"later version", 3, nil,
			[]string{"put cas=3"}, nil},
		{"stale first version writes no custom metadata", 0, map[string][]error{"put cas=0": {errCAS}},
			[]string{"meta:max_versions", "put cas=0"}, escrow.ErrConflict},
		{"max_versions refused: no version written", 0, map[string][]error{"meta:max_versions": {errDenied}},
			[]string{"meta:max_versions"}, escrow.ErrForbidden},
		{"custom metadata failure does not fail the Put", 0, map[string][]error{"meta:custom_metadata": {respErr(503, "sealed")}},
			[]string{"meta:max_versions", "put cas=0", "meta:custom_metadata"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kv := &fakeKV{errs: tc.errs, version: tc.cas}
			var logs bytes.Buffer
			s := newFakeStore(t, kv, nil, slog.New(slog.NewTextHandler(&logs, nil)))
			v, err := s.Put(ctx, ref, []byte("SECRET"), tc.cas, escrow.SecretMeta{"serial": "C02X"})
			if got := kv.got(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("calls %v, want %v", got, tc.want)
			}
			if tc.wantErr == nil && (err != nil || v != tc.cas+1) {
				t.Errorf("Put: v%d %v", v, err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Put: %v, want %v", err, tc.wantErr)
			}
			if strings.Contains(logs.String()+fmt.Sprint(err), "SECRET") {
				t.Errorf("the secret leaked: %v %s", err, logs.String())
			}
		})
	}
}

func TestPutStoresBase64(t *testing.T) {
	t.Parallel()
	kv := &fakeKV{}
	s := newFakeStore(t, kv, nil, nil)
	secret := []byte{0, 0xff, '\n', 'a'}
	if _, err := s.Put(context.Background(), ref, secret, 0, nil); err != nil {
		t.Fatal(err)
	}
	if kv.data["value"] != "AP8KYQ==" || len(kv.data) != 1 {
		t.Fatalf("data %v", kv.data)
	}
	got, v, err := s.Get(context.Background(), ref, 0)
	if err != nil || v != 1 || !bytes.Equal(got, secret) {
		t.Fatalf("Get: %v v%d %v", got, v, err)
	}
}

func TestGetOddVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		kv      *fakeKV
		wantErr error
		text    string
	}{
		{"deleted", &fakeKV{version: 1, deleted: true}, escrow.ErrNotFound, ""},
		{"not base64", &fakeKV{version: 1, data: map[string]any{"value": "SECRET!!"}}, nil, "not base64"},
		{"not ours", &fakeKV{version: 1, data: map[string]any{"password": "SECRET"}}, nil, `no "value"`},
		{"missing", &fakeKV{errs: map[string][]error{"get": {fmt.Errorf("x: %w", vault.ErrSecretNotFound)}}}, escrow.ErrNotFound, ""},
	} {
		_, _, err := newFakeStore(t, tc.kv, nil, nil).Get(ctx, ref, 1)
		if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: the stored value leaked: %v", tc.name, err)
		}
	}
}

func TestTranslate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want error
		text string
	}{
		{errCAS, escrow.ErrConflict, "conflict: vault 400: check-and-set parameter did not match the current version"},
		{respErr(400, "invalid request"), escrow.ErrInvalid, "vault 400: invalid request"},
		{errDenied, escrow.ErrForbidden, "forbidden: vault 403: permission denied"},
		{errInvalidToken, escrow.ErrForbidden, "invalid token"},
		{respErr(404), escrow.ErrNotFound, "vault 404"},
		{fmt.Errorf("reading: %w", vault.ErrSecretNotFound), escrow.ErrNotFound, ""},
		{respErr(503, "Vault is sealed"), escrow.ErrUnavailable, "vault 503: Vault is sealed"},
		{respErr(500, "internal error"), escrow.ErrUnavailable, ""},
		{respErr(429), escrow.ErrUnavailable, ""},
		{respErr(412), escrow.ErrUnavailable, ""},
		{&vault.ResponseError{StatusCode: 502, RawError: true, Errors: []string{"<html>proxy page</html>"}}, escrow.ErrUnavailable, "vault 502"},
		{&url.Error{Op: "Put", URL: "http://v/x", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, escrow.ErrUnavailable, "connection refused"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), escrow.ErrUnavailable, ""},
		{fmt.Errorf("x: %w", context.Canceled), context.Canceled, ""},
	} {
		got := translate(tc.err)
		if !errors.Is(got, tc.want) || !strings.Contains(got.Error(), tc.text) {
			t.Errorf("translate(%q) = %q, want %v containing %q", tc.err, got, tc.want, tc.text)
		}
		if strings.Contains(got.Error(), "\n") || strings.Contains(got.Error(), "<html>") {
			t.Errorf("translate(%q) = %q: multi-line or raw body", tc.err, got)
		}
		var re *vault.ResponseError
		if errors.As(got, &re) {
			t.Errorf("translate(%q) exposes *vault.ResponseError", tc.err)
		}
	}
	if translate(errCAS).Error() != "conflict: vault 400: check-and-set parameter did not match the current version" {
		t.Errorf("CAS message %q", translate(errCAS))
	}
}

// countingAuth logs in by handing out numbered tokens.
type countingAuth struct{ n atomic.Int32 }

func (a *countingAuth) Login(context.Context, *vault.Client) (*vault.Secret, error) {
	n := a.n.Add(1)
	time.Sleep(10 * time.Millisecond) // let concurrent refusals pile up
	return &vault.Secret{Auth: &vault.SecretAuth{ClientToken: fmt.Sprint("tok-", n), LeaseDuration: 3600, Renewable: true}}, nil
}

// TestInvalidTokenRetry: many requests refused for an invalid token cause
// one login, and each is retried once.
func TestInvalidTokenRetry(t *testing.T) {
	t.Parallel()
	const n = 8
	kv := &fakeKV{version: 1, data: map[string]any{"value": "eA=="}}
	auth := &countingAuth{}
	s := newFakeStore(t, kv, auth, nil)
	kv.refuse = func() error {
		if s.client.Token() == "tok-0" { // the token Vault no longer knows
			return errInvalidToken
		}
		return nil
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := s.Get(context.Background(), ref, 0); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if logins := auth.n.Load(); logins != 1 {
		t.Errorf("%d logins, want 1", logins)
	}
	if failed.Load() != 0 {
		t.Errorf("%d Gets failed", failed.Load())
	}
	if s.client.Token() != "tok-1" {
		t.Errorf("token %q", s.client.Token())
	}
	select {
	case sec := <-s.fresh:
		if sec.Auth.ClientToken != "tok-1" {
			t.Errorf("keeper got %q", sec.Auth.ClientToken)
		}
	default:
		t.Error("the token keeper was not told about the new login")
	}

	// A policy refusal is not retried and causes no login.
	kv.errs = map[string][]error{"get": {errDenied}}
	if _, _, err := s.Get(context.Background(), ref, 0); !errors.Is(err, escrow.ErrForbidden) {
		t.Errorf("Get: %v, want ErrForbidden", err)
	}
	if auth.n.Load() != 1 {
		t.Error("a policy refusal caused a login")
	}
}

func TestCustomMetadata(t *testing.T) {
	t.Parallel()
	got, err := customMetadata(ref, escrow.SecretMeta{"serial": "C02X", "empty": "", kindKey: "spoofed"})
	if err != nil || fmt.Sprint(got) != "map[fvescrow-kind:prk serial:C02X]" {
		t.Errorf("customMetadata: %v %v", got, err)
	}
	many := escrow.SecretMeta{}
	for i := range 64 {
		many[fmt.Sprint("k", i)] = "v"
	}
	for name, meta := range map[string]escrow.SecretMeta{
		"long key":        {strings.Repeat("k", 129): "v"},
		"long value":      {"k": strings.Repeat("v", 513)},
		"unprintable":     {"k": "a\x00b"},
		"too many":        many,
		"unprintable key": {"a\tb": "v"},
	} {
		if _, err := customMetadata(ref, meta); !errors.Is(err, escrow.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{Address: "https://vault:8200", Auth: Auth{TokenFile: "/run/token"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	approle := &AppRole{RoleID: "r", SecretIDFile: "/run/sid"}
	for name, c := range map[string]Config{
		"no address":         {Auth: Auth{TokenFile: "/t"}},
		"no auth":            {Address: "http://v"},
		"two auths":          {Address: "http://v", Auth: Auth{TokenFile: "/t", AppRole: approle}},
		"AppRole no secret":  {Address: "http://v", Auth: Auth{AppRole: &AppRole{RoleID: "r"}}},
		"Kubernetes no role": {Address: "http://v", Auth: Auth{Kubernetes: &Kubernetes{}}},
		"prefix with ..":     {Address: "http://v", Prefix: "fvescrow/../x", Auth: Auth{TokenFile: "/t"}},
		"prefix with /":      {Address: "http://v", Prefix: "/fvescrow", Auth: Auth{TokenFile: "/t"}},
		"prefix with glob":   {Address: "http://v", Prefix: "fvescrow*", Auth: Auth{TokenFile: "/t"}},
		"mount with space":   {Address: "http://v", Mount: "my secret", Auth: Auth{TokenFile: "/t"}},
		"negative versions":  {Address: "http://v", MaxVersions: -1, Auth: Auth{TokenFile: "/t"}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	d := Config{Auth: Auth{AppRole: approle, Kubernetes: &Kubernetes{Role: "r"}}}.withDefaults()
	if d.Mount != "secret" || d.Prefix != "fvescrow" || d.MaxVersions != 10000 ||
		d.Auth.AppRole.MountPath != "approle" || d.Auth.Kubernetes.MountPath != "kubernetes" ||
		d.Auth.Kubernetes.ServiceAccountTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("defaults: %+v %+v %+v", d, *d.Auth.AppRole, *d.Auth.Kubernetes)
	}
	if approle.MountPath != "" {
		t.Error("withDefaults changed the caller's AppRole")
	}
}

// loginStub is a local HTTP stand-in for Vault's login endpoints. It records
// each request and answers with a token.
type loginStub struct {
	mu   sync.Mutex
	reqs []string
}

func (l *loginStub) start(t *testing.T) *vault.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		l.mu.Lock()
		l.reqs = append(l.reqs, r.Method+" "+r.URL.Path+" "+string(body))
		l.mu.Unlock()
		fmt.Fprint(w, `{"auth":{"client_token":"tok-from-stub","lease_duration":60,"renewable":true,"policies":["fvescrow"]}}`)
	}))
	t.Cleanup(srv.Close)
	c, err := vault.NewClient(&vault.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (l *loginStub) requests() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reqs...)
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKubernetesAuth checks, with no Vault and no Kubernetes, what the
// config builds: the login request goes to auth/<mount>/login with the role
// and the service-account JWT read (and trimmed) from the file at that
// login, so a rotated projected token is picked up. TestKubernetesLogin runs
// the same login against a real Vault; neither runs Kubernetes itself.
func TestKubernetesAuth(t *testing.T) {
	t.Parallel()
	var stub loginStub
	c := stub.start(t)
	jwt := writeTemp(t, "token", "jwt-one")
	cfg := Config{Address: "http://unused", Auth: Auth{Kubernetes: &Kubernetes{Role: "fvescrow", ServiceAccountTokenFile: jwt}}}.withDefaults()
	m := cfg.authMethod()
	if _, ok := m.(kubernetesAuth); !ok {
		t.Fatalf("auth method %T", m)
	}
	ctx := context.Background()
	if _, err := c.Auth().Login(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jwt, []byte("jwt-two\n"), 0o600); err != nil { // trailing newline: trimmed
		t.Fatal(err)
	}
	if _, err := c.Auth().Login(ctx, m); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`PUT /v1/auth/kubernetes/login {"jwt":"jwt-one","role":"fvescrow"}`,
		`PUT /v1/auth/kubernetes/login {"jwt":"jwt-two","role":"fvescrow"}`,
	}
	if got := stub.requests(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests:\n%v\nwant\n%v", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c.Token() != "tok-from-stub" {
		t.Errorf("token %q", c.Token())
	}

	// Another mount path; a missing token file fails the login, not New's config.
	m = Config{Auth: Auth{Kubernetes: &Kubernetes{Role: "r", MountPath: "k8s-prod", ServiceAccountTokenFile: "/nonexistent"}}}.withDefaults().authMethod()
	if _, err := c.Auth().Login(ctx, m); err == nil || !strings.Contains(err.Error(), "/nonexistent") {
		t.Errorf("login with a missing token file: %v", err)
	}
	jwt2 := writeTemp(t, "token", "jwt")
	m = Config{Auth: Auth{Kubernetes: &Kubernetes{Role: "r", MountPath: "k8s-prod", ServiceAccountTokenFile: jwt2}}}.withDefaults().authMethod()
	if _, err := c.Auth().Login(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := stub.requests(); !strings.HasPrefix(got[len(got)-1], "PUT /v1/auth/k8s-prod/login ") {
		t.Errorf("request %q", got[len(got)-1])
	}
}

// TestAppRoleSecretIDReread: the secret ID file is read at each login.
func TestAppRoleSecretIDReread(t *testing.T) {
	t.Parallel()
	var stub loginStub
	c := stub.start(t)
	sid := writeTemp(t, "sid", "sid-one\n")
	m := Config{Auth: Auth{AppRole: &AppRole{RoleID: "role", SecretIDFile: sid, MountPath: "approle-x"}}}.withDefaults().authMethod()
	ctx := context.Background()
	if _, err := c.Auth().Login(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sid, []byte(" sid-two\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Auth().Login(ctx, m); err != nil {
		t.Fatal(err)
	}
	var bodies []map[string]string
	for _, r := range stub.requests() {
		if !strings.HasPrefix(r, "PUT /v1/auth/approle-x/login ") {
			t.Errorf("request %q", r)
		}
		var b map[string]string
		_ = json.Unmarshal([]byte(r[strings.Index(r, "{"):]), &b)
		bodies = append(bodies, b)
	}
	if len(bodies) != 2 || bodies[0]["secret_id"] != "sid-one" || bodies[1]["secret_id"] != "sid-two" || bodies[1]["role_id"] != "role" {
		t.Errorf("bodies %v", bodies)
	}
}

func TestTokenFileErrors(t *testing.T) {
	t.Parallel()
	c, err := vault.NewClient(&vault.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"empty":      " \n",
		"two tokens": "hvs.one hvs.two",
		"too big":    strings.Repeat("x", maxTokenFile+1),
	} {
		p := writeTemp(t, "token", content)
		_, err := tokenFileAuth{path: p}.Login(context.Background(), c)
		if err == nil || !strings.Contains(err.Error(), "does not hold one token") {
			t.Errorf("%s: %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "hvs.") {
			t.Errorf("%s: the error holds the file's content: %v", name, err)
		}
	}
}
