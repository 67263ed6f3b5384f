package api_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
	"github.com/fvescrow/fvescrow/web"
	"github.com/go-chi/chi/v5"
)

// route is one method and chi pattern the live router serves.
type route struct{ method, pattern string }

func (r route) String() string { return r.method + " " + r.pattern }

// walkRoutes lists every route of the live router.
func walkRoutes(t testing.TB, h http.Handler) []route {
	t.Helper()
	routes, ok := h.(chi.Routes)
	if !ok {
		t.Fatalf("the handler is a %T, not a chi router", h)
	}
	var out []route
	err := chi.Walk(routes, func(method, pattern string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, route{method, pattern})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// accessOf finds a route's entry as auth.Policy.Lookup does: the exact
// method, else the any-method entry.
func accessOf(p auth.Policy, r route) (auth.Access, bool) {
	if a, ok := p[auth.Key(r.method, r.pattern)]; ok {
		return a, true
	}
	a, ok := p[auth.Key(auth.AnyMethod, r.pattern)]
	return a, ok
}

// coverage reports routes without a policy entry and entries without a
// route.
func coverage(routes []route, p auth.Policy) []string {
	var problems []string
	for _, r := range routes {
		if _, ok := accessOf(p, r); !ok {
			problems = append(problems, "route without a policy entry: "+r.String())
		}
	}
	for key := range p {
		method, pattern, _ := strings.Cut(key, " ")
		if !slices.ContainsFunc(routes, func(r route) bool {
			return r.pattern == pattern && (method == auth.AnyMethod || r.method == method)
		}) {
			problems = append(problems, "policy entry without a route: "+key)
		}
	}
	sort.Strings(problems)
	return problems
}

// TestRoutesAndPolicyMatch: every route the server serves (the API, the
// MDM door, OIDC sign-in and the web UI, as serve mounts them) has exactly
// one declared access, and every declared access has a route.
func TestRoutesAndPolicyMatch(t *testing.T) {
	s := apitest.Start(t, apitest.Options{MDM: true, OIDC: true, UI: true})
	if problems := coverage(walkRoutes(t, s.Handler), s.Policy); len(problems) > 0 {
		t.Fatalf("the router and the policy table disagree:\n%s", strings.Join(problems, "\n"))
	}
	// The table the server enforces is the declared one.
	for _, declared := range []auth.Policy{api.Policy(), web.Policy()} {
		for k, v := range declared {
			if s.Policy[k] != v {
				t.Errorf("%s: enforced %v, declared %v", k, s.Policy[k], v)
			}
		}
	}
}

// undeclared mounts a route that nobody put in the policy table.
type undeclared struct{}

func (undeclared) Mount(r chi.Router) {
	r.Get("/api/v1/undeclared", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("reached")) })
}

// TestUndeclaredRouteIsCaught: a route added without a policy entry fails
// the coverage check and is refused at run time; a policy entry for a route
// that does not exist fails the check too.
func TestUndeclaredRouteIsCaught(t *testing.T) {
	s := apitest.Start(t, apitest.Options{Mounts: []api.Mounter{undeclared{}},
		ExtraPolicy: auth.Policy{auth.Key(http.MethodGet, "/api/v1/ghost"): auth.Authenticated}})
	got := coverage(walkRoutes(t, s.Handler), s.Policy)
	for _, want := range []string{
		"route without a policy entry: GET /api/v1/undeclared",
		"policy entry without a route: GET /api/v1/ghost",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("coverage missed %q; got %q", want, got)
		}
	}
	admin := s.MustUser(t, "root", escrow.RoleAdmin)
	a := call(t, s, bearer("admin", admin.Token), http.MethodGet, "/api/v1/undeclared", nil)
	if a.status != http.StatusInternalServerError || strings.Contains(string(a.body), "reached") {
		t.Fatalf("an undeclared route answered %d %q", a.status, a.body)
	}
}

// principal is one column of the matrix: how it authenticates and the
// roles its permissions come from (nil for nobody).
type principal struct {
	cred
	roles []escrow.Role
	// otp: a session whose one-time password must be changed first.
	otp bool
	// renew, for a session, signs the same person in again. Every
	// state-changing request gets a session of its own, so a sign-out or
	// password change in one cell cannot sign the column out.
	renew func(testing.TB) cred
}

// canDo computes the expected answer from the declared tables alone.
func canDo(a auth.Access, p principal) (allowed bool, refusal int) {
	switch {
	case a.Public:
		return true, 0
	case p.roles == nil:
		return false, http.StatusUnauthorized
	case p.otp:
		return false, http.StatusForbidden
	case a.Authenticated:
		return true, 0
	}
	for _, r := range p.roles {
		if slices.Contains(auth.RolePermissions[r], a.Permission) {
			return true, 0
		}
	}
	return false, http.StatusForbidden
}

// concrete fills a pattern's parameters with values that exist nowhere,
// so an allowed request does nothing (404 or 400) rather than change state.
func concrete(pattern string) string {
	r := strings.NewReplacer("{device}", "C02NOSUCH001", "{id}", "nosuch", "{actor}", "local:nobody", "*", "nosuch")
	return r.Replace(pattern)
}

// refusedByAuthorization tells the middleware's refusal (the one error
// format with its codes; a HEAD answer has no body, only the JSON type)
// from anything a handler behind it answers.
func refusedByAuthorization(method string, a answer) bool {
	if a.status != http.StatusUnauthorized && a.status != http.StatusForbidden {
		return false
	}
	if method == http.MethodHead {
		return strings.HasPrefix(a.header.Get("Content-Type"), "application/json")
	}
	code := a.errorCode()
	return (a.status == http.StatusUnauthorized && code == "unauthenticated") || (a.status == http.StatusForbidden && code == "forbidden")
}

// Who may use a page route (pageAccess).
const (
	pagePublic   = "public"    // anyone, signed in or not
	pageSignedIn = "signed-in" // any principal whose password needs no change
)

// pageAccess pins who may use every route of the web UI (web.Policy) and
// of OIDC sign-in: public, signed-in, or the roles allowed. It is written
// out here, not read from web.Policy() or auth.RolePermissions, so that
// loosening a page's requirement in either table, or adding a page nobody
// pinned, fails the matrix; tightening one fails it too, until the pin is
// changed with it.
var pageAccess = map[string]string{
	"GET /":                               pagePublic,
	"GET /ui":                             pagePublic,
	"GET /ui/":                            pagePublic,
	"GET /ui/static/*":                    pagePublic,
	"GET /ui/login":                       pagePublic,
	"POST /ui/login":                      pagePublic,
	"POST /ui/logout":                     pageSignedIn,
	"GET /ui/home":                        pageSignedIn,
	"GET /ui/password":                    pageSignedIn,
	"POST /ui/password":                   pageSignedIn,
	"GET /ui/devices":                     "admin helpdesk approver auditor viewer",
	"GET /ui/devices/{device}":            "admin helpdesk approver auditor viewer",
	"GET /ui/devices/{device}/reveal":     "admin helpdesk",
	"POST /ui/devices/{device}/reveal":    "admin helpdesk",
	"POST /ui/devices/{device}/approvals": "admin helpdesk",
	"POST /ui/devices/{device}/rotate":    "admin helpdesk",
	"GET /ui/approvals":                   "admin helpdesk approver auditor",
	"GET /ui/approvals/{id}":              "admin helpdesk approver auditor",
	"POST /ui/approvals/{id}/approve":     "admin approver",
	"POST /ui/approvals/{id}/deny":        "admin approver",
	"GET /ui/audit":                       "admin auditor",
	"GET /ui/audit/export":                "admin auditor",
	"GET /ui/tokens":                      "admin helpdesk approver auditor viewer",
	"POST /ui/tokens":                     "admin helpdesk approver auditor viewer",
	"POST /ui/tokens/{id}/revoke":         "admin helpdesk approver auditor viewer",
	"GET /ui/users":                       "admin",
	"POST /ui/users":                      "admin",
	"GET /ui/rotations":                   "admin helpdesk approver auditor viewer",
	"POST /ui/rotations/campaigns":        "admin",
	"GET /ui/rotations/campaigns/{id}":    "admin helpdesk approver auditor viewer",
	"GET " + auth.OIDCLoginPath:           pagePublic,
	"GET " + auth.OIDCCallbackPath:        pagePublic,
}

// isPage tells the routes of the web UI and OIDC sign-in from the API's
// and the MDM door's.
func isPage(pattern string) bool {
	return pattern == "/" || pattern == "/ui" || strings.HasPrefix(pattern, "/ui/") || strings.HasPrefix(pattern, "/auth/")
}

// pinCoverage reports page routes without a pin and pins without a route.
func pinCoverage(routes []route) []string {
	var problems []string
	for _, r := range routes {
		if _, ok := pageAccess[r.String()]; isPage(r.pattern) && !ok {
			problems = append(problems, "page route without an entry in pageAccess: "+r.String())
		}
	}
	for key := range pageAccess {
		if !slices.ContainsFunc(routes, func(r route) bool { return r.String() == key }) {
			problems = append(problems, "pageAccess entry without a route: "+key)
		}
	}
	sort.Strings(problems)
	return problems
}

// pinned is canDo for a page route, from its pin.
func pinned(who string, p principal) (allowed bool, refusal int) {
	switch {
	case who == pagePublic:
		return true, 0
	case p.roles == nil:
		return false, http.StatusUnauthorized
	case p.otp:
		return false, http.StatusForbidden
	case who == pageSignedIn:
		return true, 0
	}
	for _, r := range p.roles {
		if slices.Contains(strings.Fields(who), string(r)) {
			return true, 0
		}
	}
	return false, http.StatusForbidden
}

// pageClient sends page requests as a browser does: forms, cookies, and
// redirects not followed (a refusal of anonymous is one).
type pageClient struct {
	s      *apitest.Server
	c      *http.Client
	login  *http.Cookie // the sign-in form's double-submit cookie
	loginV string       // and its form value
}

var loginCSRFRE = regexp.MustCompile(`name="login_csrf" value="([^"]+)"`)

func newPageClient(t testing.TB, s *apitest.Server) *pageClient {
	t.Helper()
	b := &pageClient{s: s, c: &http.Client{Transport: s.Client().Transport, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	// The sign-in form's token, so POST /ui/login gets past its own CSRF
	// check to the handler.
	a := b.do(t, cred{}, http.MethodGet, "/ui/login")
	m := loginCSRFRE.FindSubmatch(a.body)
	cookies := (&http.Response{Header: a.header}).Cookies()
	if a.status != http.StatusOK || m == nil || len(cookies) != 1 {
		t.Fatalf("GET /ui/login: %d, %d cookies, form token found: %v", a.status, len(cookies), m != nil)
	}
	b.login, b.loginV = cookies[0], string(m[1])
	return b
}

// do sends one page request. A POST carries the session's CSRF token in
// the form field, as the UI's forms do, and the sign-in form's token pair;
// its other fields are inert: mismatched new passwords (the sign-in and
// password forms stop there with 400) and nothing else, so every form
// fails validation or names nothing.
func (b *pageClient) do(t testing.TB, c cred, method, path string) answer {
	t.Helper()
	var body io.Reader
	if method != http.MethodGet && method != http.MethodHead {
		form := url.Values{"login_csrf": {b.loginV}, "change": {"1"}, "new_password": {"matrix-new-1"}, "new_password2": {"matrix-new-2"}}
		if c.csrf != "" {
			form.Set("csrf_token", c.csrf)
		}
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.s.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(b.login)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: rb}
}

var errorPageRE = regexp.MustCompile(`<p class="lead">([^<]*)\.</p>`)

// pageRefusal reads the web UI's rendering of a refusal by the
// authorization middleware (web.UI.WriteError): anonymous is sent to sign
// in ("sign-in": 303 to /ui/login, with ?next= for a GET), anyone else gets
// the 403 error page with the refusal's message. "" is anything else.
func pageRefusal(a answer) string {
	if loc := a.header.Get("Location"); a.status == http.StatusSeeOther && (loc == "/ui/login" || strings.HasPrefix(loc, "/ui/login?next=")) {
		return "sign-in"
	}
	if a.status == http.StatusForbidden {
		if m := errorPageRE.FindSubmatch(a.body); m != nil {
			return string(m[1])
		}
		return "403 without the error page"
	}
	return ""
}

// TestAuthorizationMatrix sends every route × every principal to the live
// router, built as serve builds it: the REST API, the MDM door, OIDC
// sign-in and the web UI. API routes are checked against what the policy
// table and the role→permission table say: refusal (401/403 from the
// authorization middleware) or passage (any other answer). Page routes are
// checked against pageAccess, pinned independently of those tables (and
// the tables against it): allowed means anything but 401, 403 or a
// redirect to sign in; refused means the UI's documented refusal, a
// redirect to /ui/login for anonymous and the 403 page naming what is
// missing for everyone else.
func TestAuthorizationMatrix(t *testing.T) {
	start := time.Now()
	s := apitest.Start(t, apitest.Options{MDM: true, OIDC: true, UI: true})
	routes := walkRoutes(t, s.Handler)
	if problems := append(coverage(routes, s.Policy), pinCoverage(routes)...); len(problems) > 0 {
		t.Fatalf("the router, the policy table and the pinned page access disagree:\n%s", strings.Join(problems, "\n"))
	}

	// One person per role, and one with every role, made side by side
	// (password hashing is most of the setup).
	people := append(slices.Clone(escrow.AllRoles), "")
	users := make([]apitest.User, len(people))
	errs := make([]error, len(people))
	var wg sync.WaitGroup
	for i, r := range people {
		wg.Go(func() {
			if r == "" {
				users[i], errs[i] = s.NewUser("omni", escrow.AllRoles...)
			} else {
				users[i], errs[i] = s.NewUser("u-"+string(r), r)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	omni := users[len(users)-1]

	ps := []principal{{cred: cred{name: "anonymous"}}}
	for i, r := range escrow.AllRoles {
		ps = append(ps, principal{cred: bearer(string(r), users[i].Token), roles: []escrow.Role{r}})
	}
	// Tokens scoped to one role carry that role only, whatever their owner has.
	for _, r := range []escrow.Role{escrow.RoleHelpdesk, escrow.RoleViewer} {
		created := decode[wire.TokenCreated](t, call(t, s, bearer("omni", omni.Token), http.MethodPost, "/api/v1/tokens",
			wire.TokenRequest{Name: "scoped " + string(r), Roles: []string{string(r)}, ExpiresInHours: 1}), http.StatusCreated)
		ps = append(ps, principal{cred: bearer("token("+string(r)+")", created.Token), roles: []escrow.Role{r}})
	}
	ps = append(ps, principal{cred: bearer("api-token-file", s.StaticToken), roles: []escrow.Role{escrow.RoleAdmin}})
	// Browser sessions, the web UI's own credential: one per role (of the
	// same people as the tokens), and one whose one-time password is still
	// to be changed.
	session := func(name string, u apitest.User) func(testing.TB) cred {
		return func(t testing.TB) cred {
			cookie, csrf, err := s.Session(u)
			if err != nil {
				t.Fatal(err)
			}
			return cred{name: name, cookie: cookie, csrf: csrf}
		}
	}
	for i, r := range escrow.AllRoles {
		renew := session("session("+string(r)+")", users[i])
		ps = append(ps, principal{cred: renew(t), roles: []escrow.Role{r}, renew: renew})
	}
	nu, err := s.Local.CreateUser(t.Context(), escrow.System, "w-otp", "OTP", "w-otp@example.com", []escrow.Role{escrow.RoleAdmin}, false)
	if err != nil {
		t.Fatal(err)
	}
	renewOTP := session("session(otp)", apitest.User{ID: nu.User.ID})
	ps = append(ps, principal{cred: renewOTP(t), roles: []escrow.Role{escrow.RoleAdmin}, otp: true, renew: renewOTP})

	// Every cell is independent (names that exist nowhere; a session of
	// its own for each state-changing request), so the columns run side
	// by side.
	b := newPageClient(t, s)
	cells := make([][]string, len(routes))
	for i := range cells {
		cells[i] = make([]string, len(ps))
	}
	setup, cellsStart := time.Since(start), time.Now()
	t.Run("cells", func(t *testing.T) {
		for j, p := range ps {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				for i, rt := range routes {
					access, _ := accessOf(s.Policy, rt)
					c := p.cred
					if p.renew != nil && rt.method != http.MethodGet && rt.method != http.MethodHead {
						c = p.renew(t)
					}
					if isPage(rt.pattern) {
						cells[i][j] = checkPage(t, b, rt, access, p, c)
					} else {
						cells[i][j] = checkAPI(t, s, rt, access, p, c)
					}
				}
			})
		}
	})
	cellsTook := time.Since(cellsStart)

	var table strings.Builder
	fmt.Fprintf(&table, "%-62s", "route \\ principal")
	for _, p := range ps {
		fmt.Fprintf(&table, " %-17s", p.name)
	}
	table.WriteString("\n")
	allowedSeen, refusedSeen, pageRoutes := 0, 0, 0
	for i, rt := range routes {
		access, _ := accessOf(s.Policy, rt)
		label := rt.String() + " [" + access.String() + "]"
		if isPage(rt.pattern) {
			pageRoutes++
			label = rt.String() + " [" + pageAccess[rt.String()] + "]"
		}
		fmt.Fprintf(&table, "%-62s", label)
		for _, cell := range cells[i] {
			switch {
			case strings.HasPrefix(cell, "DENY"):
				refusedSeen++
			case cell != "":
				allowedSeen++
			}
			fmt.Fprintf(&table, " %-17s", cell)
		}
		table.WriteString("\n")
	}
	t.Logf("authorization matrix (%d routes, %d of them pages, × %d principals = %d cells; setup %s, cells %s; DENY = refused by the authorization middleware, a number alone = got past it):\n%s",
		len(routes), pageRoutes, len(ps), len(routes)*len(ps), setup.Round(time.Millisecond), cellsTook.Round(time.Millisecond), table.String())
	if allowedSeen == 0 || refusedSeen == 0 {
		t.Fatalf("a matrix of %d allowed and %d refused cells proves nothing", allowedSeen, refusedSeen)
	}
}

// checkAPI sends one API or MDM cell and checks it against the policy
// table; it returns the cell's text.
func checkAPI(t *testing.T, s *apitest.Server, rt route, access auth.Access, p principal, c cred) string {
	t.Helper()
	var body any
	if rt.method == http.MethodPost || rt.method == http.MethodPatch || rt.method == http.MethodPut {
		body = "{}" // fails validation or names nothing: passage changes nothing
	}
	a := call(t, s, c, rt.method, concrete(rt.pattern), body)
	refused := refusedByAuthorization(rt.method, a)
	allowed, refusal := canDo(access, p)
	switch {
	case allowed && refused:
		t.Errorf("%s as %s: refused with %d, the policy allows it", rt, p.name, a.status)
	case !allowed && !refused:
		t.Errorf("%s as %s: got past authorization (%d), the policy refuses it", rt, p.name, a.status)
	case !allowed && a.status != refusal:
		t.Errorf("%s as %s: refused with %d, want %d", rt, p.name, a.status, refusal)
	case a.status >= 500 && strings.HasPrefix(rt.pattern, "/api/"):
		t.Errorf("%s as %s: %d %s", rt, p.name, a.status, a.body)
	}
	if refused {
		return fmt.Sprint("DENY ", a.status)
	}
	return fmt.Sprint(a.status)
}

// checkPage sends one page cell and checks it against the pin (and the
// policy table against the pin); it returns the cell's text.
func checkPage(t *testing.T, b *pageClient, rt route, access auth.Access, p principal, c cred) string {
	t.Helper()
	who := pageAccess[rt.String()]
	allowed, refusal := pinned(who, p)
	if byPolicy, _ := canDo(access, p); byPolicy != allowed {
		t.Errorf("%s as %s: the policy table (%s) says allowed=%v, pageAccess (%s) says allowed=%v", rt, p.name, access, byPolicy, who, allowed)
	}
	a := b.do(t, c, rt.method, concrete(rt.pattern))
	got := pageRefusal(a)
	var want string
	switch {
	case allowed:
	case refusal == http.StatusUnauthorized:
		want = "sign-in"
	case p.otp:
		want = "change your one-time password first"
	default:
		want = "needs " + string(access.Permission)
	}
	switch {
	case allowed && (got != "" || a.status == http.StatusUnauthorized || a.status == http.StatusForbidden):
		t.Errorf("%s as %s: refused (%d %q, Location %q), pageAccess allows it (%s)", rt, p.name, a.status, got, a.header.Get("Location"), who)
	case !allowed && got == "":
		t.Errorf("%s as %s: got past authorization (%d, Location %q), pageAccess refuses it (%s)", rt, p.name, a.status, a.header.Get("Location"), who)
	case !allowed && got != want:
		t.Errorf("%s as %s: refused with %d %q, want %q", rt, p.name, a.status, got, want)
	case a.status >= 500:
		t.Errorf("%s as %s: %d %.300s", rt, p.name, a.status, a.body)
	}
	switch {
	case got == "sign-in":
		return "DENY →login"
	case got != "":
		return fmt.Sprint("DENY ", a.status)
	}
	return fmt.Sprint(a.status)
}
