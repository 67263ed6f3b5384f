package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
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

// TestRoutesAndPolicyMatch: every route the server serves has exactly one
// declared access, and every declared access has a route.
func TestRoutesAndPolicyMatch(t *testing.T) {
	s := apitest.Start(t, apitest.Options{MDM: true})
	if problems := coverage(walkRoutes(t, s.Handler), s.Policy); len(problems) > 0 {
		t.Fatalf("the router and the policy table disagree:\n%s", strings.Join(problems, "\n"))
	}
	// The table the server enforces is the declared one.
	for k, v := range api.Policy() {
		if s.Policy[k] != v {
			t.Errorf("%s: enforced %v, declared %v", k, s.Policy[k], v)
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
}

// canDo computes the expected answer from the declared tables alone.
func canDo(a auth.Access, p principal) (allowed bool, refusal int) {
	switch {
	case a.Public:
		return true, 0
	case p.roles == nil:
		return false, http.StatusUnauthorized
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

// TestAuthorizationMatrix sends every route × every principal to the live
// router and checks refusal (401/403 from the authorization middleware) or
// passage (any other answer) against what the policy table and the
// role→permission table say.
func TestAuthorizationMatrix(t *testing.T) {
	s := apitest.Start(t, apitest.Options{MDM: true})
	routes := walkRoutes(t, s.Handler)
	if problems := coverage(routes, s.Policy); len(problems) > 0 {
		t.Fatalf("the router and the policy table disagree:\n%s", strings.Join(problems, "\n"))
	}

	ps := []principal{{cred: cred{name: "anonymous"}}}
	for _, r := range escrow.AllRoles {
		u := s.MustUser(t, "u-"+string(r), r)
		ps = append(ps, principal{bearer(string(r), u.Token), []escrow.Role{r}})
	}
	// Tokens scoped to one role carry that role only, whatever their owner has.
	omni := s.MustUser(t, "omni", escrow.AllRoles...)
	for _, r := range []escrow.Role{escrow.RoleHelpdesk, escrow.RoleViewer} {
		created := decode[wire.TokenCreated](t, call(t, s, bearer("omni", omni.Token), http.MethodPost, "/api/v1/tokens",
			wire.TokenRequest{Name: "scoped " + string(r), Roles: []string{string(r)}, ExpiresInHours: 1}), http.StatusCreated)
		ps = append(ps, principal{bearer("token("+string(r)+")", created.Token), []escrow.Role{r}})
	}
	ps = append(ps, principal{bearer("api-token-file", s.StaticToken), []escrow.Role{escrow.RoleAdmin}})
	auditor := s.MustUser(t, "u-auditor-web", escrow.RoleAuditor)
	cookie, csrf, err := s.Session(auditor)
	if err != nil {
		t.Fatal(err)
	}
	ps = append(ps, principal{cred{name: "session(auditor)", cookie: cookie, csrf: csrf}, []escrow.Role{escrow.RoleAuditor}})

	var table strings.Builder
	fmt.Fprintf(&table, "%-62s", "route \\ principal")
	for _, p := range ps {
		fmt.Fprintf(&table, " %-17s", p.name)
	}
	table.WriteString("\n")
	allowedSeen, refusedSeen := 0, 0
	for _, rt := range routes {
		access, _ := accessOf(s.Policy, rt)
		fmt.Fprintf(&table, "%-62s", rt.String()+" ["+access.String()+"]")
		for _, p := range ps {
			var body any
			if rt.method == http.MethodPost || rt.method == http.MethodPatch || rt.method == http.MethodPut {
				body = "{}" // fails validation or names nothing: passage changes nothing
			}
			a := call(t, s, p.cred, rt.method, concrete(rt.pattern), body)
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
			cell := fmt.Sprint(a.status)
			if refused {
				cell = "DENY " + cell
				refusedSeen++
			} else {
				allowedSeen++
			}
			fmt.Fprintf(&table, " %-17s", cell)
		}
		table.WriteString("\n")
	}
	t.Logf("authorization matrix (%d routes × %d principals; DENY = refused by the authorization middleware, a number alone = got past it):\n%s",
		len(routes), len(ps), table.String())
	if allowedSeen == 0 || refusedSeen == 0 {
		t.Fatalf("a matrix of %d allowed and %d refused cells proves nothing", allowedSeen, refusedSeen)
	}
}
