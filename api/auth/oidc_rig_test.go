package auth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
)

// rig is fvescrow's real router (api.New) with OIDC sign-in mounted, on a
// real SQLite or PostgreSQL store, behind TLS, next to a real IdP.
type rig struct {
	t     *testing.T
	idp   *idp
	store *sqlstore.Store
	authn *auth.Authenticator
	oidc  *auth.OIDC
	ts    *httptest.Server
	clock *clock
	logs  *syncBuffer
	cfg   auth.OIDCConfig

	mu      sync.Mutex
	seen    []string // session and flow cookie values browsers were given
	answers []string // bodies of refusals, checked for secrets
}

// clock is real time plus an offset the test moves forward. (The store
// stamps a new session's last activity with real time.)
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

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

type rigOptions struct {
	store         string // "sqlite" (default) or "postgres"
	idle, max     time.Duration
	cfg           func(*auth.OIDCConfig)
	idp           *idp
	skipDiscovery bool
}

// Role mapping of every rig unless a test changes it.
var testRoles = map[escrow.Role][]string{
	escrow.RoleAdmin:    {"fv-admins"},
	escrow.RoleHelpdesk: {"fv-helpdesk"},
	escrow.RoleApprover: {"fv-approvers", "email:approver@example.com"},
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	ctx := context.Background()
	r := &rig{t: t, clock: &clock{}, logs: &syncBuffer{}, idp: o.idp}
	if r.idp == nil {
		r.idp = startIdP(t)
	}
	dir := t.TempDir()
	var err error
	switch o.store {
	case "", "sqlite":
		r.store, err = sqlstore.OpenSQLite(ctx, filepath.Join(dir, "meta.db"))
	case "postgres":
		r.store, err = sqlstore.OpenPostgres(ctx, pgtest.NewDatabase(t))
	default:
		t.Fatalf("unknown store %q", o.store)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.store.Close() })
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := agestore.New(filepath.Join(dir, "secrets"), id)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := fde.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	svc := escrow.New(secrets, r.store, kr)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + ln.Addr().String()
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.idle == 0 {
		o.idle, o.max = 30*time.Minute, 8*time.Hour
	}
	r.authn = auth.NewAuthenticator(r.store, auth.WithClock(r.clock.Now), auth.WithSessionTimeouts(o.idle, o.max), auth.WithLogger(log))
	r.cfg = auth.OIDCConfig{Issuer: r.idp.Issuer(), ClientID: r.idp.ClientID, ClientSecret: auth.NewClientSecret(r.idp.ClientSecret),
		RedirectURL: base + auth.OIDCCallbackPath, RoleGroups: testRoles}
	if o.cfg != nil {
		o.cfg(&r.cfg)
	}
	onErr := func(w http.ResponseWriter, req *http.Request, err error) { api.WriteError(w, req, log, err) }
	r.oidc, err = auth.NewOIDC(r.cfg, r.authn, r.store, r.store, onErr, auth.OIDCLogger(log), auth.OIDCClock(r.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	if !o.skipDiscovery {
		if err := r.oidc.Discover(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := api.New(api.Deps{Log: log, Auth: r.authn, Local: auth.NewLocalAccounts(r.store, r.store, secrets, r.store),
		Devices: svc, Details: r.store, Audit: r.store, People: r.store, Revealer: svc,
		Approvals: escrow.NewApprovals(r.store, escrow.RevealPolicy{}, escrow.ApprovalTiming{}),
		Mounts:    []api.Mounter{r.oidc}, ExtraPolicy: r.oidc.Policy()})
	r.ts = httptest.NewUnstartedServer(h)
	r.ts.Listener.Close()
	r.ts.Listener = ln
	r.ts.StartTLS()
	t.Cleanup(r.ts.Close)
	// Runs before the store closes: nothing secret reached the logs, the
	// audit log or an error answer.
	t.Cleanup(r.checkNoSecretsLeaked)
	return r
}

func (r *rig) checkNoSecretsLeaked() {
	recs, err := r.store.AuditRecords(context.Background(), escrow.AuditQuery{Limit: 1000})
	if err != nil {
		r.t.Error(err)
		return
	}
	audit, _ := json.Marshal(recs)
	r.mu.Lock()
	secrets := r.idp.secrets()
	secrets["cookie"] = r.seen
	answers := strings.Join(r.answers, "\n")
	r.mu.Unlock()
	logs := r.logs.String()
	for kind, values := range secrets {
		for _, s := range values {
			if len(s) < 8 {
				continue
			}
			for where, text := range map[string]string{"logs": logs, "audit log": string(audit), "error answers": answers} {
				if strings.Contains(text, s) {
					r.t.Errorf("a %s reached the %s", kind, where)
				}
			}
		}
	}
}

// user returns a stored user.
func (r *rig) user(id string) (escrow.User, error) {
	return r.store.User(context.Background(), id)
}

// userID is the ID fvescrow gives a subject of this rig's IdP.
func (r *rig) userID(sub string) string {
	u, _ := url.Parse(r.idp.Issuer())
	return "oidc:" + u.Host + ":" + sub
}

// audits returns the audit records of one action.
func (r *rig) audits(action string) []escrow.AuditRecord {
	r.t.Helper()
	recs, err := r.store.AuditRecords(context.Background(), escrow.AuditQuery{Action: action, Limit: 1000})
	if err != nil {
		r.t.Fatal(err)
	}
	return recs
}

// browser is an http.Client with a cookie jar that follows no redirect by
// itself, so each step of the flow can be looked at.
type browser struct {
	r   *rig
	c   *http.Client
	jar *cookiejar.Jar
}

func (r *rig) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return &browser{r: r, jar: jar, c: &http.Client{Jar: jar, Transport: r.ts.Client().Transport, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// get fetches u (absolute, or a path on fvescrow).
func (b *browser) get(u string) (*http.Response, []byte) {
	b.r.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = b.r.ts.URL + u
	}
	resp, err := b.c.Get(u)
	if err != nil {
		b.r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	b.r.mu.Lock()
	for _, c := range resp.Cookies() {
		if c.Value != "" {
			b.r.seen = append(b.r.seen, c.Value)
		}
	}
	if resp.StatusCode >= 400 {
		b.r.answers = append(b.r.answers, string(body))
	}
	b.r.mu.Unlock()
	return resp, body
}

// login starts signing in and lets the IdP authenticate the next queued
// user; it returns the callback URL the IdP sent the browser to, not yet
// visited.
func (b *browser) login(returnTo string) *url.URL {
	b.r.t.Helper()
	path := auth.OIDCLoginPath
	if returnTo != "" {
		path += "?return_to=" + url.QueryEscape(returnTo)
	}
	resp, body := b.get(path)
	if resp.StatusCode != http.StatusFound {
		b.r.t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, b.r.idp.AuthorizationEndpoint()+"?") {
		b.r.t.Fatalf("login redirected to %q, not the IdP", loc)
	}
	resp, body = b.get(loc)
	if resp.StatusCode != http.StatusFound {
		b.r.t.Fatalf("IdP authorize: %d %s", resp.StatusCode, body)
	}
	cb, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || cb.Path != auth.OIDCCallbackPath {
		b.r.t.Fatalf("IdP redirected to %q, not the callback", resp.Header.Get("Location"))
	}
	return cb
}

// signIn signs the next queued user in and checks it worked.
func (b *browser) signIn() {
	b.r.t.Helper()
	resp, body := b.get(b.login("").String())
	if resp.StatusCode != http.StatusSeeOther {
		b.r.t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
}

// me is GET /api/v1/me.
func (b *browser) me() (int, map[string]any) {
	b.r.t.Helper()
	resp, body := b.get("/api/v1/me")
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return resp.StatusCode, m
}

// cookie returns the jar's value of a cookie on fvescrow.
func (b *browser) cookie(name string) string {
	u, _ := url.Parse(b.r.ts.URL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func (b *browser) setCookie(name, value string) {
	u, _ := url.Parse(b.r.ts.URL)
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/", Secure: true}})
}

// errorMessage is the message of a JSON error answer.
func errorMessage(body []byte) string {
	var e struct {
		Error struct{ Message string } `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Message
}
