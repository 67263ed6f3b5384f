package web_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
	"github.com/fvescrow/fvescrow/web"
	"github.com/oauth2-proxy/mockoidc"
)

var ctx = context.Background()

// syncBuffer collects the server's logs from its goroutines.
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

// rig is the real server behind TLS: api.New with the UI mounted, SQLite
// and age stores, the escrow service and the full reveal chain.
type rig struct {
	t      *testing.T
	ts     *httptest.Server
	meta   *sqlstore.Store
	svc    *escrow.Service
	local  *auth.LocalAccounts
	policy auth.Policy
	router http.Handler
	logs   *syncBuffer
	device escrow.Device
	key    string // the escrowed key of device
	// locations records every Location header any response carried.
	mu        sync.Mutex
	locations []string
}

type rigOptions struct {
	approvalGroups []string
	keyDisplay     time.Duration
	// idp, when set, adds OIDC sign-in against this real provider; its
	// users in group "engineering" are helpdesk.
	idp *mockoidc.MockOIDC
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	dir := t.TempDir()
	id, _, err := agestore.LoadOrCreateIdentity(filepath.Join(dir, "age.key"))
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := agestore.New(filepath.Join(dir, "secrets"), id)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "fvescrow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = meta.Close() })
	if _, _, err := escrow.EnsureEscrowIdentity(ctx, meta, secrets, fde.IdentityOptions{}); err != nil {
		t.Fatal(err)
	}
	kr, err := escrow.LoadKeyring(ctx, meta, secrets)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	policy := escrow.DefaultRevealPolicy()
	svc := escrow.New(secrets, meta, kr, escrow.WithLogger(log), escrow.WithRevealPolicy(policy))

	// The reveal chain as serve builds it: refusals audited, notifications
	// before the key, limits, approvals.
	n := escrow.NewNotifications(meta, meta, escrow.NotifyConfig{SecurityEmails: []string{"security@example.com"}, NotifyOwner: true})
	rot := escrow.NewRotations(meta, escrow.RotationPolicy{Delay: time.Hour}, log)
	var chain escrow.Revealer = escrow.NewApprovalGate(escrow.NewRotateAfterReveal(svc, rot), meta, escrow.RequireForGroups(o.approvalGroups))
	chain = escrow.NewRateLimiter(chain, meta, n, escrow.RateLimits{PerOperator: 50, PerDevice: 50}, log)
	chain = escrow.NewNotifying(chain, n)
	chain = escrow.NewRefusalAudit(chain, meta)

	r := &rig{t: t, meta: meta, svc: svc, logs: logs}
	r.local = auth.NewLocalAccounts(meta, meta, secrets, meta)
	authn := auth.NewAuthenticator(meta, auth.WithLogger(log))
	deps := api.Deps{Log: log, Auth: authn, Local: r.local, Devices: svc, Details: meta,
		Audit: meta, People: meta, Revealer: chain, Approvals: escrow.NewApprovals(meta, policy, escrow.ApprovalTiming{}),
		Rotations: rot, RotationStore: meta}
	r.ts = httptest.NewUnstartedServer(nil)
	cfg := web.Config{KeyDisplay: o.keyDisplay, Rules: web.Rules{MinReason: policy.MinReasonLength, TicketPattern: policy.TicketPattern.String()}}
	deps.ExtraPolicy = auth.Policy{}
	if o.idp != nil {
		// OIDC sign-in as serve wires it, against a real provider.
		oc := auth.OIDCConfig{Issuer: o.idp.Issuer(), ClientID: o.idp.ClientID, ClientSecret: auth.NewClientSecret(o.idp.ClientSecret),
			RedirectURL: "https://" + r.ts.Listener.Addr().String() + "/auth/oidc/callback", Scopes: []string{"openid", "email", "profile", "groups"},
			RoleGroups: map[escrow.Role][]string{escrow.RoleHelpdesk: {"engineering"}}}
		onErr := func(w http.ResponseWriter, req *http.Request, err error) { api.WriteError(w, req, log, err) }
		sso, err := auth.NewOIDC(oc, authn, meta, meta, onErr, auth.OIDCLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		if err := sso.Discover(ctx); err != nil {
			t.Fatal(err)
		}
		cfg.SSO = sso
		deps.Mounts = append(deps.Mounts, sso)
		deps.ExtraPolicy = api.Merge(deps.ExtraPolicy, sso.Policy())
	}
	ui := web.New(deps, cfg)
	deps.Mounts, deps.ExtraPolicy = append(deps.Mounts, ui), api.Merge(deps.ExtraPolicy, web.Policy())
	r.router, r.policy = api.New(deps)
	r.ts.Config.Handler = r.router
	r.ts.StartTLS()
	t.Cleanup(r.ts.Close)

	// A Mac with its key escrowed through the real CMS path.
	r.device = escrow.Device{ID: "564D9E39-1A2B-4C3D-8E9F-0A1B2C3D4E5F", UDID: "564D9E39-1A2B-4C3D-8E9F-0A1B2C3D4E5F", Serial: "C02XK0AAJGH5",
		Hostname: "ada-mbp", Owner: "ada", OwnerEmail: "ada@example.com", Platform: "macOS", Model: "MacBookPro18,3"}
	r.key = "ABCD-EFGH-JKLM-NPQR-STUV-WXY2"
	cert := svc.Keyring().Current(time.Now())
	if _, err := svc.Ingest(ctx, r.device, cmstest.Encrypt(t, cert, []byte(r.key)), escrow.SourceSecurityInfo); err != nil {
		t.Fatal(err)
	}
	// A second device without a key, for search.
	if _, err := svc.UpsertDevice(ctx, escrow.Device{ID: "11111111-2222-3333-4444-555555555555", Serial: "C02ZZ9ZZZZZZ", Hostname: "grace-air",
		Owner: "grace", OwnerEmail: "grace@example.com"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(r.logs.String(), r.key) {
			t.Error("the recovery key reached the server log")
		}
		for _, l := range r.locations {
			if strings.Contains(l, r.key) || strings.Contains(strings.ReplaceAll(l, "-", ""), strings.ReplaceAll(r.key, "-", "")) {
				t.Errorf("a Location header carried the key: %s", l)
			}
		}
	})
	return r
}

// browser is a cookie-keeping client that does not follow redirects, so
// every Location header is seen (and recorded by the rig).
type browser struct {
	r    *rig
	c    *http.Client
	user string
}

func (r *rig) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	c := &http.Client{Transport: r.ts.Client().Transport, Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{r: r, c: c}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (p page) location() string { return p.header.Get("Location") }

func (b *browser) do(req *http.Request) page {
	b.r.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.r.t.Fatal(err)
	}
	if l := resp.Header.Get("Location"); l != "" {
		b.r.mu.Lock()
		b.r.locations = append(b.r.locations, l)
		b.r.mu.Unlock()
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (b *browser) get(path string) page {
	b.r.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.r.ts.URL+path, nil)
	if err != nil {
		b.r.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) page {
	b.r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.r.ts.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var (
	csrfRE      = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
	loginCSRFRE = regexp.MustCompile(`name="login_csrf" value="([^"]+)"`)
)

func field(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in page:\n%s", re, body)
	}
	return m[1]
}

// csrf reads the session's CSRF token from a page the user can see.
func (b *browser) csrf() string {
	b.r.t.Helper()
	return field(b.r.t, csrfRE, b.get("/ui/home").body)
}

// submit posts a form with the session's CSRF token.
func (b *browser) submit(path string, form url.Values) page {
	b.r.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf_token", b.csrf())
	return b.post(path, form)
}

const newPassword = "correct horse battery staple"

// user creates a local user with roles and signs a new browser in as them,
// through the one-time-password change.
func (r *rig) user(name string, roles ...escrow.Role) *browser {
	r.t.Helper()
	nu, err := r.local.CreateUser(ctx, escrow.System, name, strings.ToUpper(name[:1])+name[1:], name+"@example.com", roles, false)
	if err != nil {
		r.t.Fatal(err)
	}
	b := r.browser()
	b.user = name
	b.login(name, nu.OneTimePassword, newPassword)
	return b
}

// login signs in, changing a one-time password when asked.
func (b *browser) login(name, password, newPass string) {
	t := b.r.t
	t.Helper()
	p := b.get("/ui/login")
	form := url.Values{"login_csrf": {field(t, loginCSRFRE, p.body)}, "username": {name}, "password": {password}}
	p = b.post("/ui/login", form)
	if p.status == http.StatusOK && strings.Contains(p.body, `name="new_password"`) {
		form.Set("login_csrf", field(t, loginCSRFRE, p.body))
		form.Set("change", "1")
		form.Set("new_password", newPass)
		form.Set("new_password2", newPass)
		p = b.post("/ui/login", form)
	}
	if p.status != http.StatusSeeOther || p.location() != "/ui/home" {
		t.Fatalf("sign-in of %s: %d %q\n%s", name, p.status, p.location(), p.body)
	}
}

// audit lists the audit records of an action.
func (r *rig) audit(action string) []escrow.AuditRecord {
	r.t.Helper()
	recs, err := r.meta.AuditRecords(ctx, escrow.AuditQuery{Action: action})
	if err != nil {
		r.t.Fatal(err)
	}
	return recs
}

func revealForm(reason, ticket string) url.Values {
	return url.Values{"reason": {reason}, "ticket": {ticket}}
}

const (
	goodReason = "user locked out at the FileVault login window"
	goodTicket = "IT-4711"
)

func mustContain(t *testing.T, what string, p page, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(p.body, s) {
			t.Fatalf("%s: page (status %d) lacks %q:\n%s", what, p.status, s, p.body)
		}
	}
}

func mustStatus(t *testing.T, what string, p page, want int) {
	t.Helper()
	if p.status != want {
		t.Fatalf("%s: status %d, want %d\n%s", what, p.status, want, p.body)
	}
}

func groupsHTML(key string) string {
	var b strings.Builder
	for i, g := range strings.Split(key, "-") {
		if i > 0 {
			b.WriteString(`<span class="dash">-</span></span>`)
		}
		fmt.Fprintf(&b, `<span class="blk"><span class="grp" data-group>%s</span>`, g)
	}
	return b.String()
}
