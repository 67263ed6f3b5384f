package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// Stores is what authentication reads and writes.
type Stores interface {
	escrow.TokenStore
	escrow.SessionStore
	escrow.UserStore
}

// CookieName is the session cookie. The __Host- prefix makes browsers
// refuse it unless Secure, host-only and for path /.
const CookieName = "__Host-fvescrow"

// CSRFHeader carries the CSRF token on scripted requests; forms send the
// csrf_token field.
const CSRFHeader = "X-CSRF-Token"

// Authenticator resolves the principal of a request from an API token or a
// session cookie, and creates and ends sessions.
type Authenticator struct {
	stores   Stores
	static   map[[32]byte]*Principal
	idle     time.Duration
	absolute time.Duration
	now      func() time.Time
	log      *slog.Logger
}

// Option configures the Authenticator.
type Option func(*Authenticator)

// WithSessionTimeouts sets the idle and absolute session lifetimes.
func WithSessionTimeouts(idle, absolute time.Duration) Option {
	return func(a *Authenticator) { a.idle, a.absolute = idle, absolute }
}

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(a *Authenticator) { a.now = now } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option {
	return func(a *Authenticator) { a.log = l.With("component", "auth") }
}

// NewAuthenticator returns an Authenticator (sessions: 30 minutes idle, 8
// hours at most).
func NewAuthenticator(stores Stores, opts ...Option) *Authenticator {
	a := &Authenticator{stores: stores, static: map[[32]byte]*Principal{}, idle: 30 * time.Minute, absolute: 8 * time.Hour,
		now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(a)
	}
	return a
}

// AddStaticToken accepts a token from a file (--api-token-file) as p.
func (a *Authenticator) AddStaticToken(token string, p Principal) {
	p.Method = "token"
	a.static[sha256.Sum256([]byte(token))] = &p
}

// HashSecret is how tokens and session IDs are kept at rest.
func HashSecret(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

// NewSecret makes a random credential with a recognisable prefix.
func NewSecret(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// bearer reads a bearer token, or the password of HTTP Basic auth (what
// nanomdm's tools send).
func bearer(r *http.Request) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw
	}
	return ""
}

// Resolve returns the principal a request carries: nil when it carries no
// credentials, ErrUnauthenticated when they are not valid.
func (a *Authenticator) Resolve(r *http.Request) (*Principal, error) {
	ctx := r.Context()
	if tok := bearer(r); tok != "" {
		return a.fromToken(ctx, tok)
	}
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	return a.fromSession(ctx, c.Value)
}

func (a *Authenticator) fromToken(ctx context.Context, tok string) (*Principal, error) {
	h := HashSecret(tok)
	var key [32]byte
	copy(key[:], h)
	if p, ok := a.static[key]; ok {
		cp := *p
		return &cp, nil
	}
	t, err := a.stores.APITokenByHash(ctx, h)
	if errors.Is(err, escrow.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown API token", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	now := a.now()
	if !t.Active(now) {
		return nil, fmt.Errorf("%w: API token revoked or expired", ErrUnauthenticated)
	}
	u, err := a.stores.User(ctx, t.Owner)
	if err != nil {
		return nil, fmt.Errorf("%w: the token's owner is gone", ErrUnauthenticated)
	}
	if u.Disabled {
		return nil, fmt.Errorf("%w: the token's owner is disabled", ErrUnauthenticated)
	}
	// A token never carries more than its owner has now.
	var roles []escrow.Role
	for _, r := range t.Roles {
		if Covers(u.Roles, r) { // an OIDC user's roles are refreshed at each sign-in
			roles = append(roles, r)
		}
	}
	if now.Sub(t.LastUsedAt) > time.Minute {
		if err := a.stores.TouchAPIToken(ctx, t.ID, now); err != nil {
			a.log.Warn("recording token use", "token", t.ID, "err", err)
		}
	}
	return &Principal{UserID: u.ID, Name: displayName(u), Email: u.Email, Roles: roles, Groups: u.Groups, Method: "token", TokenID: t.ID}, nil
}

func displayName(u escrow.User) string {
	if u.DisplayName != "" {
		return u.DisplayName
	}
	return u.Username
}

func (a *Authenticator) fromSession(ctx context.Context, id string) (*Principal, error) {
	h := HashSecret(id)
	s, err := a.stores.Session(ctx, h)
	if errors.Is(err, escrow.ErrNotFound) {
		return nil, fmt.Errorf("%w: session ended", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	now := a.now()
	if !now.Before(s.ExpiresAt) || now.Sub(s.LastSeenAt) > a.idle {
		if err := a.stores.DeleteSession(ctx, h); err != nil {
			a.log.Warn("ending an expired session", "err", err)
		}
		return nil, fmt.Errorf("%w: session expired", ErrUnauthenticated)
	}
	u, err := a.stores.User(ctx, s.UserID)
	if err != nil || u.Disabled {
		return nil, fmt.Errorf("%w: account unavailable", ErrUnauthenticated)
	}
	if now.Sub(s.LastSeenAt) > time.Minute {
		if err := a.stores.TouchSession(ctx, h, now); err != nil {
			a.log.Warn("recording session activity", "err", err)
		}
	}
	return &Principal{UserID: u.ID, Name: displayName(u), Email: u.Email, Roles: s.Roles, Groups: s.Groups, Method: "session",
		CSRF: s.CSRF, Password: u.MustChangePassword && u.Source == "local"}, nil
}

// NewSession signs u in: it stores a session (roles fixed at sign-in) and
// sets the cookie. It returns the session's CSRF token.
func (a *Authenticator) NewSession(ctx context.Context, w http.ResponseWriter, u escrow.User, roles []escrow.Role, groups []string, idToken string) (string, error) {
	id := NewSecret("")
	csrf := NewSecret("")
	now := a.now()
	if err := a.stores.CreateSession(ctx, escrow.Session{IDHash: HashSecret(id), UserID: u.ID, Roles: roles, Groups: groups, Source: u.Source,
		CSRF: csrf, IDToken: idToken, CreatedAt: now, ExpiresAt: now.Add(a.absolute)}); err != nil {
		return "", err
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Expires: now.Add(a.absolute)})
	return csrf, nil
}

// EndSession signs the request's session out and clears the cookie. It
// returns the ended session (for an IdP logout hint), if there was one.
func (a *Authenticator) EndSession(ctx context.Context, w http.ResponseWriter, r *http.Request) (escrow.Session, bool) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	c, err := r.Cookie(CookieName)
	if err != nil {
		return escrow.Session{}, false
	}
	h := HashSecret(c.Value)
	s, err := a.stores.Session(ctx, h)
	if err != nil {
		return escrow.Session{}, false
	}
	if err := a.stores.DeleteSession(ctx, h); err != nil {
		a.log.Warn("ending a session", "err", err)
	}
	return s, true
}

// Authenticate is middleware putting the principal, if any, in the context.
// Credentials that are presented but not valid are refused at once.
func (a *Authenticator) Authenticate(onError func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := a.Resolve(r)
			if err != nil && errors.Is(err, ErrUnauthenticated) && bearer(r) == "" {
				// An ended or expired session is no session: the browser
				// continues anonymously (public pages, the sign-in page),
				// and the policy answers 401 where one is needed.
				a.clearStaleCookie(w, r)
				p, err = nil, nil
			}
			if err != nil {
				onError(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
		})
	}
}

func (a *Authenticator) clearStaleCookie(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(CookieName); err == nil && bearer(r) == "" {
		http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	}
}

var safeMethods = []string{http.MethodGet, http.MethodHead, http.MethodOptions}

// Authorize is middleware enforcing the policy table on routed requests (use
// it inside chi groups, where the route pattern is known). A session's
// state-changing request must also carry its CSRF token.
func Authorize(policy Policy, onError func(http.ResponseWriter, *http.Request, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			access, key, ok := policy.Lookup(r)
			if !ok {
				onError(w, r, fmt.Errorf("route %q has no policy", key))
				return
			}
			p := FromContext(r.Context())
			if err := access.Check(p); err != nil {
				onError(w, r, err)
				return
			}
			if p != nil && p.Method == "session" && !slices.Contains(safeMethods, r.Method) {
				got := r.Header.Get(CSRFHeader)
				if got == "" {
					got = r.PostFormValue("csrf_token") // bodies are size-limited upstream
				}
				if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(p.CSRF)) != 1 {
					onError(w, r, fmt.Errorf("%w: missing or wrong CSRF token", ErrForbidden))
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}
