package auth

import (
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// Access is what a route needs.
type Access struct {
	Public        bool       // no principal (device endpoints authenticate themselves)
	Authenticated bool       // any signed-in principal
	Permission    Permission // a principal whose roles grant this
}

// Public, Authenticated and Need build Access values for the policy table.
var (
	Public        = Access{Public: true}
	Authenticated = Access{Authenticated: true}
)

// Need requires a permission.
func Need(p Permission) Access { return Access{Permission: p} }

func (a Access) String() string {
	switch {
	case a.Public:
		return "public"
	case a.Authenticated:
		return "authenticated"
	}
	return string(a.Permission)
}

// Policy maps "METHOD /route/{pattern}" (chi patterns) to the access it
// needs. Every route the server serves must have an entry: the middleware
// refuses a route without one, and a test walks the router to prove none
// is missing.
type Policy map[string]Access

// AnyMethod is the method of routes registered for every method.
const AnyMethod = "*"

// Key is the policy key of a method and chi pattern.
func Key(method, pattern string) string { return method + " " + pattern }

// Lookup returns the access a routed request needs.
func (p Policy) Lookup(r *http.Request) (Access, string, bool) {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return Access{}, "", false
	}
	key := Key(r.Method, rctx.RoutePattern())
	a, ok := p[key]
	if !ok && r.Method == http.MethodHead {
		a, ok = p[Key(http.MethodGet, rctx.RoutePattern())]
	}
	if !ok {
		a, ok = p[Key(AnyMethod, rctx.RoutePattern())]
	}
	return a, key, ok
}

// Check returns nil if principal may use the route, ErrUnauthenticated if
// nobody is signed in, or ErrForbidden.
func (a Access) Check(p *Principal) error {
	switch {
	case a.Public:
		return nil
	case p == nil:
		return ErrUnauthenticated
	case p.Password:
		return fmt.Errorf("%w: change your one-time password first", ErrForbidden)
	case a.Authenticated, p.Can(a.Permission):
		return nil
	}
	return fmt.Errorf("%w: needs %s", ErrForbidden, a.Permission)
}
