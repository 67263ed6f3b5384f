// Package web is the helpdesk's browser UI: server-rendered pages
// (html/template, embed.FS) over the same dependencies as the REST API. It
// holds no business logic and no authorization: every route is declared in
// Policy and enforced by api's middleware; pages only hide what a role
// cannot use.
//
// Pages carry a strict Content-Security-Policy (no inline script or style),
// Cache-Control: no-store, and CSRF tokens on every form: the session's
// token once signed in, a double-submit cookie on the sign-in form. A
// revealed key appears only in the body of the POST that revealed it.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CSP is the Content-Security-Policy of every page: scripts, styles and
// images from this origin only, nothing inline, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// SSO is OIDC sign-in as the pages see it.
type SSO interface {
	// LoginPath is where a browser starts signing in.
	LoginPath() string
	// LogoutURL is the IdP's end-session URL for a session it made, or "".
	LogoutURL(s escrow.Session) string
}

// Rules are the reveal rules the forms explain (the server enforces them).
type Rules struct {
	MinReason     int    // minimum reason length in characters
	TicketPattern string // the regular expression a ticket ID must match
}

// Config configures the UI.
type Config struct {
	// KeyDisplay is how long a revealed key stays on screen before the
	// page hides it (default one minute).
	KeyDisplay time.Duration
	Rules      Rules
	SSO        SSO // nil without OIDC sign-in
}

// UI serves the pages.
type UI struct {
	d      api.Deps
	cfg    Config
	log    *slog.Logger
	pages  map[string]*template.Template
	asset  string // content hash of the static files, for cache busting
	static http.Handler
}

var _ api.Mounter = (*UI)(nil)
var _ api.Pages = (*UI)(nil)

// New returns the UI. It panics on missing dependencies, as api.New does.
func New(d api.Deps, cfg Config) *UI {
	if d.Log == nil || d.Auth == nil || d.Local == nil || d.Devices == nil || d.Details == nil || d.Audit == nil ||
		d.People == nil || d.Revealer == nil || d.Approvals == nil {
		panic("web.New: missing dependency")
	}
	if cfg.KeyDisplay <= 0 {
		cfg.KeyDisplay = time.Minute
	}
	u := &UI{d: d, cfg: cfg, log: d.Log.With("component", "web"), pages: parsePages()}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	u.asset = assetVersion(sub)
	u.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))
	return u
}

func parsePages() map[string]*template.Template {
	base := template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, n))
	}
	return out
}

func assetVersion(fsys fs.FS) string {
	h := sha256.New()
	_ = fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := fs.ReadFile(fsys, p)
			h.Write([]byte(p))
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// Policy declares every route of the UI. Pages only hide what a role
// cannot use; this table is what grants it.
func Policy() auth.Policy {
	const get, post = http.MethodGet, http.MethodPost
	p := auth.Policy{}
	add := func(method, pattern string, a auth.Access) { p[auth.Key(method, pattern)] = a }
	add(get, "/", auth.Public)
	// "/ui" and "/ui/" redirect to the home page. The policy middleware
	// looks routes up with trailing slashes trimmed, so no page may end in
	// one: "/ui/" would share the public "/ui" entry.
	add(get, "/ui", auth.Public)
	add(get, "/ui/", auth.Public)
	add(get, "/ui/static/*", auth.Public)
	add(get, "/ui/login", auth.Public)
	add(post, "/ui/login", auth.Public) // checks credentials and its own CSRF cookie
	add(post, "/ui/logout", auth.Authenticated)
	add(get, "/ui/home", auth.Authenticated)
	add(get, "/ui/password", auth.Authenticated)
	add(post, "/ui/password", auth.Authenticated)
	add(get, "/ui/devices", auth.Need(auth.PermDeviceRead))
	add(get, "/ui/devices/{device}", auth.Need(auth.PermDeviceRead))
	add(get, "/ui/devices/{device}/reveal", auth.Need(auth.PermKeyReveal))
	add(post, "/ui/devices/{device}/reveal", auth.Need(auth.PermKeyReveal))
	add(post, "/ui/devices/{device}/approvals", auth.Need(auth.PermApprovalRequest))
	add(get, "/ui/approvals", auth.Need(auth.PermApprovalRead))
	add(get, "/ui/approvals/{id}", auth.Need(auth.PermApprovalRead))
	add(post, "/ui/approvals/{id}/approve", auth.Need(auth.PermApprovalDecide))
	add(post, "/ui/approvals/{id}/deny", auth.Need(auth.PermApprovalDecide))
	add(get, "/ui/audit", auth.Need(auth.PermAuditRead))
	add(get, "/ui/audit/export", auth.Need(auth.PermAuditRead))
	add(get, "/ui/tokens", auth.Need(auth.PermTokenSelf))
	add(post, "/ui/tokens", auth.Need(auth.PermTokenSelf))
	add(post, "/ui/tokens/{id}/revoke", auth.Need(auth.PermTokenSelf))
	add(get, "/ui/users", auth.Need(auth.PermUserAdmin))
	add(post, "/ui/users", auth.Need(auth.PermUserAdmin))
	return api.Merge(p, rotationPolicy())
}

// Mount adds the routes. Each is registered with its full path so the
// policy middleware sees the pattern it is declared under.
func (u *UI) Mount(r chi.Router) {
	r.Get("/", redirect("/ui/home"))
	r.Get("/ui", redirect("/ui/home"))
	r.Get("/ui/", redirect("/ui/home"))
	r.Get("/ui/static/*", u.serveStatic)
	r.Get("/ui/login", u.loginForm)
	r.Post("/ui/login", u.login)
	r.Post("/ui/logout", u.logout)
	r.Get("/ui/home", u.home)
	r.Get("/ui/password", u.passwordForm)
	r.Post("/ui/password", u.changePassword)
	r.Get("/ui/devices", u.searchDevices)
	r.Get("/ui/devices/{device}", u.devicePage)
	r.Get("/ui/devices/{device}/reveal", u.revealForm)
	r.Post("/ui/devices/{device}/reveal", u.reveal)
	r.Post("/ui/devices/{device}/approvals", u.requestApproval)
	r.Get("/ui/approvals", u.listApprovals)
	r.Get("/ui/approvals/{id}", u.approvalPage)
	r.Post("/ui/approvals/{id}/approve", u.decide(true))
	r.Post("/ui/approvals/{id}/deny", u.decide(false))
	r.Get("/ui/audit", u.auditPage)
	r.Get("/ui/audit/export", u.exportAudit)
	r.Get("/ui/tokens", u.tokensPage)
	r.Post("/ui/tokens", u.createToken)
	r.Post("/ui/tokens/{id}/revoke", u.revokeToken)
	r.Get("/ui/users", u.usersPage)
	r.Post("/ui/users", u.createUser)
	u.mountRotations(r)
}

// Owns reports whether r is a page request (api renders its errors through
// WriteError and bounds its body).
func (u *UI) Owns(r *http.Request) bool {
	return r.URL.Path == "/" || r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/")
}

func redirect(to string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusSeeOther) }
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	// Asset URLs carry a content hash, so they may be cached.
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Header().Set("Content-Security-Policy", CSP)
	u.static.ServeHTTP(w, r)
}

// pageHeaders are set on every page and error page.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

func principal(r *http.Request) *auth.Principal { return auth.FromContext(r.Context()) }

// view is what every template gets.
type view struct {
	Title     string
	Me        *auth.Principal
	CSRF      string
	Asset     string
	Nav       []navItem
	Flash     string
	Error     string
	RequestID string
	Data      any
}

type navItem struct {
	Href, Label string
	Current     bool
}

// Can reports whether the signed-in principal has a permission (for
// showing only what a role can use; the policy table decides).
func (v view) Can(perm string) bool { return v.Me.Can(auth.Permission(perm)) }

func (u *UI) nav(p *auth.Principal, path string) []navItem {
	if p == nil || p.Password {
		return nil
	}
	var out []navItem
	add := func(href, label string, perm auth.Permission) {
		if perm == "" || p.Can(perm) {
			out = append(out, navItem{Href: href, Label: label, Current: strings.HasPrefix(path, href)})
		}
	}
	add("/ui/devices", "Devices", auth.PermDeviceRead)
	add("/ui/approvals", "Approvals", auth.PermApprovalRead)
	if u.rotations() {
		add("/ui/rotations", "Rotations", auth.PermRotationRead)
	}
	add("/ui/audit", "Audit log", auth.PermAuditRead)
	add("/ui/tokens", "API tokens", auth.PermTokenSelf)
	add("/ui/users", "Users", auth.PermUserAdmin)
	return out
}

// render writes a page. The whole page is rendered before anything is
// sent, so a template error never leaves half a page (or half a key).
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, page, title string, data any, opts ...func(*view)) {
	t, ok := u.pages[page]
	if !ok {
		panic("web: no page " + page)
	}
	p := principal(r)
	v := view{Title: title, Me: p, Asset: u.asset, Nav: u.nav(p, r.URL.Path), RequestID: api.RequestID(r.Context()), Data: data}
	if p != nil {
		v.CSRF = p.CSRF
	}
	for _, o := range opts {
		o(&v)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		// Template errors name the template and field, never data values.
		u.log.ErrorContext(r.Context(), "render", "page", page, "err", err, "request_id", v.RequestID)
		pageHeaders(w)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func withError(msg string) func(*view) { return func(v *view) { v.Error = msg } }
func withFlash(msg string) func(*view) { return func(v *view) { v.Flash = msg } }

// classify is api's one error mapping, with 5xx causes logged and hidden.
func (u *UI) classify(r *http.Request, err error) (int, string) {
	status, _, msg := api.Classify(err)
	if status >= 500 {
		u.log.ErrorContext(r.Context(), "request failed", "status", status, "err", err, "request_id", api.RequestID(r.Context()), "path", r.URL.Path)
	}
	return status, msg
}

// WriteError renders an error as a page: a sign-in redirect when nobody is
// signed in, otherwise the status and api's safe message.
func (u *UI) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, escrow.ErrUnauthenticated) && r.Header.Get("Authorization") == "" {
		pageHeaders(w)
		to := "/ui/login"
		if next := safeNext(r.URL.RequestURI()); r.Method == http.MethodGet && next != home {
			to += "?next=" + url.QueryEscape(next)
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
		return
	}
	status, msg := u.classify(r, err)
	u.render(w, r, status, "error", http.StatusText(status), errorPage{Status: status, Message: msg})
}

type errorPage struct {
	Status  int
	Message string
}

func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error) { u.WriteError(w, r, err) }

const home = "/ui/home"

// safeNext keeps a post-sign-in target only if it is a page of this UI
// (never another origin, never the sign-in page itself).
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/ui/") || strings.HasPrefix(s, "/ui/login") || strings.HasPrefix(s, "/ui/static/") ||
		strings.ContainsAny(s, "\\\r\n") || strings.Contains(s, "//") || len(s) > 512 {
		return home
	}
	if _, err := url.ParseRequestURI(s); err != nil {
		return home
	}
	return s
}
