package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// OIDC sign-in through a real `serve` (both storage modes) against a real
// OIDC provider (mockoidc) in process.

// publicHost is the server's public name in these tests: the httptest
// certificate is valid for it, and the test browser dials it to the
// server's address. (The redirect URL must be configured before the
// server's port is known.)
const publicHost = "example.com"

// testIdP is mockoidc with the requests it saw recorded; requests are
// serialized because mockoidc's session map has no lock.
type testIdP struct {
	*mockoidc.MockOIDC
	mu      sync.Mutex
	secrets []string // state, nonce, code, verifier, tokens: what must not leak
}

func startTestIdP(t *testing.T) *testIdP {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	i := &testIdP{MockOIDC: m}
	err = m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			i.mu.Lock()
			defer i.mu.Unlock()
			_ = r.ParseForm()
			for _, k := range []string{"state", "nonce", "code", "code_verifier", "code_challenge"} {
				if v := r.Form.Get(k); v != "" {
					i.secrets = append(i.secrets, v)
				}
			}
			if r.URL.Path != mockoidc.TokenEndpoint {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			var reply map[string]any
			if json.Unmarshal(rec.Body.Bytes(), &reply) == nil {
				for _, k := range []string{"access_token", "id_token", "refresh_token"} {
					if s, ok := reply[k].(string); ok {
						i.secrets = append(i.secrets, s)
					}
				}
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return i
}

func (i *testIdP) leaked(text string) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, s := range append(i.secrets, i.ClientSecret) {
		if len(s) >= 8 && strings.Contains(text, s) {
			return true
		}
	}
	return false
}

// staff is a person at the IdP.
type staff struct {
	sub    string
	email  string
	groups []string
	amr    []string
}

func (s *staff) ID() string { return s.sub }

func (s *staff) Userinfo([]string) ([]byte, error) {
	return json.Marshal(map[string]any{"sub": s.sub, "email": s.email, "groups": s.groups})
}

type staffClaims struct {
	*mockoidc.IDTokenClaims
	Email  string   `json:"email"`
	Groups []string `json:"groups"`
	AMR    []string `json:"amr,omitempty"`
}

func (s *staff) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	return &staffClaims{IDTokenClaims: base, Email: s.email, Groups: s.groups, AMR: s.amr}, nil
}

// oidcServer starts serve with OIDC sign-in against idp.
func oidcServer(t *testing.T, mode string, idp *testIdP, issuer string) *testServer {
	t.Helper()
	secretFile := filepath.Join(t.TempDir(), "oidc-client-secret")
	writeFile(t, secretFile, idp.ClientSecret+"\n")
	return startServer(t, mode, func(c *serveConfig) {
		c.oidc.issuer, c.oidc.clientID, c.oidc.secretFile = issuer, idp.ClientID, secretFile
		c.oidc.redirectURL = "https://" + publicHost + auth.OIDCCallbackPath
		// Two mappings in one value, as one environment variable carries them.
		c.oidc.roles = []string{"helpdesk=fv-helpdesk\nauditor = CN=fv-audit,OU=Groups,DC=example,DC=com"}
		c.oidc.requireMFA = true
	})
}

// oidcBrowser is a browser that reaches the server as https://example.com.
type oidcBrowser struct {
	t *testing.T
	c *http.Client
}

func newOIDCBrowser(t *testing.T, s *testServer) *oidcBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := s.Client().Transport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == publicHost+":443" {
			addr = s.addr
		}
		return d.DialContext(ctx, network, addr)
	}
	return &oidcBrowser{t: t, c: &http.Client{Jar: jar, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *oidcBrowser) get(u string) (*http.Response, []byte) {
	b.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = "https://" + publicHost + u
	}
	resp, err := b.c.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// startSignIn goes to the login page and through the IdP, and returns the
// callback URL the IdP sent the browser to.
func (b *oidcBrowser) startSignIn(returnTo string) string {
	b.t.Helper()
	resp, body := b.get("/auth/oidc/login?return_to=" + url.QueryEscape(returnTo))
	if resp.StatusCode != http.StatusFound {
		b.t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	resp, body = b.get(resp.Header.Get("Location"))
	cb := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(cb, "https://"+publicHost+auth.OIDCCallbackPath+"?") {
		b.t.Fatalf("IdP: %d %q %s", resp.StatusCode, cb, body)
	}
	return cb
}

func (b *oidcBrowser) me() (int, map[string]any) {
	b.t.Helper()
	resp, body := b.get("/api/v1/me")
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return resp.StatusCode, m
}

// TestServeOIDC: serve with --oidc-* signs people in through the IdP, maps
// their groups to roles, enforces MFA, audits, and keeps sessions and
// sign-ins in progress across a restart.
func TestServeOIDC(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			idp := startTestIdP(t)
			s := oidcServer(t, mode, idp, idp.Issuer())
			if got := s.srv.policy[auth.Key(http.MethodGet, auth.OIDCCallbackPath)]; !got.Public {
				t.Fatalf("callback policy %v", got)
			}
			issuer, _ := url.Parse(idp.Issuer())
			wantID := "oidc:" + issuer.Host + ":00u-ada"

			idp.QueueUser(&staff{sub: "00u-ada", email: "ada@example.com", amr: []string{"pwd", "otp"},
				groups: []string{"everyone", "fv-helpdesk", "CN=fv-audit,OU=Groups,DC=example,DC=com"}})
			b := newOIDCBrowser(t, s)
			resp, body := b.get(b.startSignIn("/ui/devices"))
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/devices" {
				t.Fatalf("callback: %d %s", resp.StatusCode, body)
			}
			code, me := b.me()
			if code != http.StatusOK || me["id"] != wantID || fmt.Sprint(me["roles"]) != "[helpdesk auditor]" {
				t.Fatalf("me: %d %v", code, me)
			}

			// Without a second factor: refused, and audited.
			idp.QueueUser(&staff{sub: "00u-bob", email: "bob@example.com", amr: []string{"pwd"}, groups: []string{"fv-helpdesk"}})
			nb := newOIDCBrowser(t, s)
			resp, body = nb.get(nb.startSignIn("/ui/"))
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "multi-factor") {
				t.Fatalf("sign-in without MFA: %d %s", resp.StatusCode, body)
			}
			if code, _ := nb.me(); code != http.StatusUnauthorized {
				t.Fatalf("refused sign-in has a session: %d", code)
			}
			var audit wire.AuditList
			status, raw := s.api(http.MethodGet, "/api/v1/audit?action=login.succeeded", nil)
			if err := json.Unmarshal(raw, &audit); status != http.StatusOK || err != nil || len(audit.Records) != 1 ||
				audit.Records[0].ActorID != wantID || audit.Records[0].Detail["method"] != "oidc" {
				t.Fatalf("audit of the sign-in: %d %s", status, raw)
			}
			status, raw = s.api(http.MethodGet, "/api/v1/audit?action=login.failed", nil)
			if err := json.Unmarshal(raw, &audit); status != http.StatusOK || err != nil || len(audit.Records) != 1 ||
				audit.Records[0].Detail["why"] != "no second factor" {
				t.Fatalf("audit of the refusal: %d %s", status, raw)
			}

			// A sign-in started before a restart finishes after it (the flow
			// lives sealed in the browser), and sessions persist.
			idp.QueueUser(&staff{sub: "00u-cy", email: "cy@example.com", amr: []string{"mfa"}, groups: []string{"fv-helpdesk"}})
			cb := newOIDCBrowser(t, s)
			pending := cb.startSignIn("/ui/")
			s.restart()
			if resp, body := cb.get(pending); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("callback after restart: %d %s", resp.StatusCode, body)
			}
			if code, me := b.me(); code != http.StatusOK || me["id"] != wantID {
				t.Fatalf("session after restart: %d %v", code, me)
			}
			if code, me := cb.me(); code != http.StatusOK || fmt.Sprint(me["roles"]) != "[helpdesk]" {
				t.Fatalf("cy: %d %v", code, me)
			}

			if idp.leaked(s.logs.String()) {
				t.Fatal("a secret of the sign-in reached the server log")
			}
		})
	}
}

// TestServeOIDCIdPDown: serve starts while the IdP is unreachable (devices
// keep escrowing); sign-in answers 503 meanwhile.
func TestServeOIDCIdPDown(t *testing.T) {
	idp := startTestIdP(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/oidc"
	ln.Close()
	s := oidcServer(t, modeEmbedded, idp, down)
	if !strings.Contains(s.logs.String(), "OIDC discovery failed") {
		t.Error("no warning about the unreachable IdP")
	}
	b := newOIDCBrowser(t, s)
	if resp, body := b.get("/auth/oidc/login"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	if status, _ := s.api(http.MethodGet, "/healthz", nil); status != http.StatusOK {
		t.Fatalf("healthz %d", status)
	}
}

// TestServeOIDCFlags: wrong OIDC configuration stops serve with exit 2
// before anything is created, from flags or FVESCROW_* variables.
func TestServeOIDCFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "client-secret-value")
	ok := []string{"--oidc-issuer", "https://example.okta.com", "--oidc-client-id", "0oa1", "--oidc-client-secret-file", secret,
		"--oidc-redirect-url", "https://fvescrow.example.com/auth/oidc/callback"}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"http issuer", []string{"--oidc-issuer", "http://example.okta.com", "--oidc-client-id", "0oa1", "--oidc-client-secret-file", secret,
			"--oidc-redirect-url", "https://fvescrow.example.com/auth/oidc/callback", "--oidc-role", "admin=a"}, nil, "issuer must be https"},
		{"unknown role", append(ok, "--oidc-role", "root=admins"), nil, `unknown role "root"`},
		{"unknown role from the environment", ok, map[string]string{"FVESCROW_OIDC_ROLE": "admin=a\nsuperuser=b"}, `unknown role "superuser"`},
		{"no role", ok, nil, "at least one --oidc-role"},
		{"no group", append(ok, "--oidc-role", "admin="), nil, "want ROLE=GROUP"},
		{"no issuer", []string{"--oidc-client-id", "0oa1"}, nil, "need --oidc-issuer"},
		{"no secret file", []string{"--oidc-issuer", "https://example.okta.com", "--oidc-client-id", "0oa1", "--oidc-role", "admin=a",
			"--oidc-redirect-url", "https://fvescrow.example.com/auth/oidc/callback"}, nil, "needs --oidc-client-secret-file"},
		{"missing secret file", append(append([]string(nil), ok[:4]...), "--oidc-client-secret-file", filepath.Join(dir, "nope"),
			"--oidc-redirect-url", "https://fvescrow.example.com/auth/oidc/callback", "--oidc-role", "admin=a"), nil, "nope"},
		{"wrong callback path", []string{"--oidc-issuer", "https://example.okta.com", "--oidc-client-id", "0oa1", "--oidc-client-secret-file", secret,
			"--oidc-redirect-url", "https://fvescrow.example.com/", "--oidc-role", "admin=a"}, nil, "must end in /auth/oidc/callback"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			data := filepath.Join(t.TempDir(), "data")
			var out, errb bytes.Buffer
			code := run(append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, tc.args...), strings.NewReader(""), &out, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q, want exit 2 and %q", code, errb.String(), tc.want)
			}
			if strings.Contains(errb.String(), "client-secret-value") {
				t.Fatal("the client secret was printed")
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Fatalf("serve created %s before refusing its configuration", data)
			}
		})
	}
}

// TestServeOIDCHelp: every OIDC flag is documented with its variable.
func TestServeOIDCHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--help"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"oidc-issuer", "oidc-client-id", "oidc-client-secret-file", "oidc-redirect-url", "oidc-post-logout-url",
		"oidc-role", "oidc-groups-claim", "oidc-scopes", "oidc-require-mfa", "oidc-mfa-amr", "oidc-mfa-acr", "oidc-allowed-domain"} {
		if !strings.Contains(out.String(), "--"+f) || !strings.Contains(out.String(), envName(f)) {
			t.Errorf("--%s or %s missing from serve --help", f, envName(f))
		}
	}
}
