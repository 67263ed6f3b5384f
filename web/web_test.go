package web_test

import (
	"encoding/csv"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/web"
	"github.com/go-chi/chi/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// Every route the router serves has a policy entry, and every entry of the
// UI's table is a route.
func TestPolicyCoversEveryRoute(t *testing.T) {
	r := newRig(t, rigOptions{})
	routes, ok := r.router.(chi.Routes)
	if !ok {
		t.Fatalf("router is %T, not chi.Routes", r.router)
	}
	served := map[string]bool{}
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		key := auth.Key(method, route)
		served[key] = true
		if _, ok := r.policy[key]; !ok {
			if _, ok := r.policy[auth.Key(auth.AnyMethod, route)]; !ok {
				t.Errorf("route %s has no policy", key)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for key := range web.Policy() {
		if !served[key] {
			t.Errorf("policy entry %s has no route", key)
		}
	}
}

// The pages each role may use render; the others are refused with 403.
func TestPagesByRole(t *testing.T) {
	r := newRig(t, rigOptions{})
	dev := string(r.device.ID)
	pages := []struct {
		path string
		perm auth.Permission // "" = any signed-in person
		want string
	}{
		{"/ui/home", "", "Hello,"},
		{"/ui/password", "", "Change password"},
		{"/ui/devices", auth.PermDeviceRead, "Find a device"},
		{"/ui/devices?q=C02XK0", auth.PermDeviceRead, "ada-mbp"},
		{"/ui/devices/" + dev, auth.PermDeviceRead, "Recovery key versions"},
		{"/ui/devices/C02XK0AAJGH5", auth.PermDeviceRead, "Recovery key versions"},
		{"/ui/devices/" + dev + "/reveal", auth.PermKeyReveal, "Ticket ID"},
		{"/ui/approvals", auth.PermApprovalRead, "Approvals"},
		{"/ui/audit", auth.PermAuditRead, "Apply filters"},
		{"/ui/audit/export?format=csv", auth.PermAuditRead, "seq,time"},
		{"/ui/tokens", auth.PermTokenSelf, "Create a token"},
		{"/ui/users", auth.PermUserAdmin, "Create a local user"},
		{"/ui/rotations", auth.PermRotationRead, "Disclosed, not yet rotated"},
	}
	for _, role := range escrow.AllRoles {
		t.Run(string(role), func(t *testing.T) {
			b := r.user("u-"+string(role), role)
			p := &auth.Principal{Roles: []escrow.Role{role}}
			for _, pg := range pages {
				got := b.get(pg.path)
				if pg.perm == "" || p.Can(pg.perm) {
					mustStatus(t, pg.path, got, http.StatusOK)
					mustContain(t, pg.path, got, pg.want)
				} else {
					mustStatus(t, pg.path, got, http.StatusForbidden)
					mustContain(t, pg.path, got, "needs "+string(pg.perm))
				}
			}
			// Navigation offers only what the role may use.
			home := b.get("/ui/home").body
			for href, perm := range map[string]auth.Permission{`href="/ui/audit"`: auth.PermAuditRead, `href="/ui/users"`: auth.PermUserAdmin} {
				if strings.Contains(home, href) != p.Can(perm) {
					t.Errorf("home page link %s shown=%v for %s", href, !p.Can(perm), role)
				}
			}
		})
	}
	t.Run("anonymous", func(t *testing.T) {
		b := r.browser()
		for _, pg := range pages {
			got := b.get(pg.path)
			mustStatus(t, pg.path, got, http.StatusSeeOther)
			if !strings.HasPrefix(got.location(), "/ui/login") {
				t.Errorf("%s: redirected to %q", pg.path, got.location())
			}
		}
		if got := b.get("/").location(); got != "/ui/home" {
			t.Errorf("/ redirects to %q", got)
		}
	})
}

// Every page carries the strict CSP and no-store; static files the CSP.
func TestSecurityHeaders(t *testing.T) {
	r := newRig(t, rigOptions{})
	b := r.user("hd", escrow.RoleHelpdesk)
	anon := r.browser()
	check := func(what string, p page, noStore bool) {
		t.Helper()
		if got := p.header.Get("Content-Security-Policy"); got != web.CSP {
			t.Errorf("%s: CSP %q", what, got)
		}
		if noStore && p.header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", what, p.header.Get("Cache-Control"))
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := p.header.Get(h); got != want {
				t.Errorf("%s: %s %q", what, h, got)
			}
		}
	}
	check("login", anon.get("/ui/login"), true)
	check("home", b.get("/ui/home"), true)
	check("device", b.get("/ui/devices/"+string(r.device.ID)), true)
	check("forbidden", b.get("/ui/audit"), true)
	check("not found", b.get("/ui/devices/nope"), true)
	check("unknown page", b.get("/ui/nowhere"), true)
	check("reveal result", b.submit("/ui/devices/"+string(r.device.ID)+"/reveal", revealForm(goodReason, goodTicket)), true)
	css := b.get("/ui/static/app.css")
	mustStatus(t, "css", css, http.StatusOK)
	check("css", css, false)
	if !strings.HasPrefix(css.header.Get("Content-Type"), "text/css") {
		t.Errorf("css content type %q", css.header.Get("Content-Type"))
	}
	js := b.get("/ui/static/app.js")
	mustStatus(t, "js", js, http.StatusOK)
	if ct := js.header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("js content type %q", ct)
	}
}

var (
	inlineScript = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>`)
	inlineStyle  = regexp.MustCompile(`(?i)(<style[\s>]|\sstyle\s*=|\son[a-z]+\s*=|javascript:)`)
)

// noInline fails on inline script, style or event handlers in html.
func noInline(t *testing.T, what, html string) {
	t.Helper()
	for _, tag := range inlineScript.FindAllString(html, -1) {
		if !strings.Contains(tag, ` src="`) {
			t.Errorf("%s: inline script %s", what, tag)
		}
	}
	if m := inlineStyle.FindString(html); m != "" {
		t.Errorf("%s: inline style or handler %q", what, m)
	}
}

// No template has inline script or style (the CSP would block them).
func TestNoInlineScriptOrStyle(t *testing.T) {
	files, err := fs.Glob(os.DirFS("templates"), "*.html")
	if err != nil || len(files) < 10 {
		t.Fatalf("templates: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile("templates/" + f)
		if err != nil {
			t.Fatal(err)
		}
		noInline(t, f, string(b))
	}
	// And the rendered pages (what a browser gets).
	r := newRig(t, rigOptions{})
	admin := r.user("root", escrow.RoleAdmin)
	for _, path := range []string{"/ui/home", "/ui/devices?q=", "/ui/devices/" + string(r.device.ID), "/ui/devices/" + string(r.device.ID) + "/reveal",
		"/ui/approvals", "/ui/audit", "/ui/tokens", "/ui/users", "/ui/password", "/ui/nowhere"} {
		noInline(t, path, admin.get(path).body)
	}
	noInline(t, "login", r.browser().get("/ui/login").body)
	noInline(t, "revealed", admin.submit("/ui/devices/"+string(r.device.ID)+"/reveal", revealForm(goodReason, goodTicket)).body)
}

// A state-changing POST without the session's CSRF token is refused and
// reveals nothing.
func TestCSRF(t *testing.T) {
	r := newRig(t, rigOptions{})
	b := r.user("hd", escrow.RoleHelpdesk)
	path := "/ui/devices/" + string(r.device.ID) + "/reveal"
	for name, token := range map[string]string{"missing": "", "wrong": "not-the-token"} {
		form := revealForm(goodReason, goodTicket)
		if token != "" {
			form.Set("csrf_token", token)
		}
		p := b.post(path, form)
		mustStatus(t, name, p, http.StatusForbidden)
		mustContain(t, name, p, "CSRF")
		if strings.Contains(p.body, r.key) || strings.Contains(p.body, "WXY2") {
			t.Fatalf("%s: the key is in the refusal", name)
		}
	}
	if recs := r.audit(escrow.ActionKeyRevealed); len(recs) != 0 {
		t.Fatalf("%d reveals recorded without a CSRF token", len(recs))
	}
	// The token in a header works as well as the form field.
	req, _ := http.NewRequest(http.MethodPost, r.ts.URL+path, strings.NewReader(revealForm(goodReason, goodTicket).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(auth.CSRFHeader, b.csrf())
	mustStatus(t, "header token", b.do(req), http.StatusOK)

	// Logout needs the token too: a cross-site form cannot sign someone out.
	mustStatus(t, "logout without token", b.post("/ui/logout", url.Values{}), http.StatusForbidden)
	mustStatus(t, "still signed in", b.get("/ui/home"), http.StatusOK)

	// The anonymous sign-in form has its own double-submit token.
	anon := r.browser()
	anon.get("/ui/login")
	p := anon.post("/ui/login", url.Values{"username": {"hd"}, "password": {newPassword}, "login_csrf": {"forged"}})
	mustStatus(t, "login with a forged token", p, http.StatusForbidden)
	if anon.get("/ui/home").status != http.StatusSeeOther {
		t.Fatal("a sign-in with a forged token made a session")
	}
	fresh := r.browser() // no cookie at all: a cross-site post
	mustStatus(t, "login without cookie", fresh.post("/ui/login", url.Values{"username": {"hd"}, "password": {newPassword}, "login_csrf": {"x"}}), http.StatusForbidden)
}

// A reveal shows the key in its blocks, only in the POST response, after
// the audit record is written.
func TestReveal(t *testing.T) {
	r := newRig(t, rigOptions{keyDisplay: 42 * time.Second})
	b := r.user("hd", escrow.RoleHelpdesk)
	dev := "/ui/devices/" + string(r.device.ID)
	form := b.get(dev + "/reveal")
	mustContain(t, "form", form, "at least 10 characters", "matching <code>", `minlength="10"`)

	// The rules are checked, and a refusal keeps what was typed.
	p := b.submit(dev+"/reveal", revealForm("short", goodTicket))
	mustStatus(t, "short reason", p, http.StatusBadRequest)
	mustContain(t, "short reason", p, "reason must be at least 10 characters", `value="IT-4711"`)
	p = b.submit(dev+"/reveal", revealForm(goodReason, "not a ticket"))
	mustStatus(t, "bad ticket", p, http.StatusBadRequest)
	mustContain(t, "bad ticket", p, "ticket ID must match")
	if strings.Contains(p.body, r.key) {
		t.Fatal("a refusal carried the key")
	}

	p = b.submit(dev+"/reveal", revealForm(goodReason, goodTicket))
	mustStatus(t, "reveal", p, http.StatusOK)
	mustContain(t, "reveal", p, groupsHTML(r.key), `data-hide-after="42"`, `content="42; url=/ui/devices/`+string(r.device.ID)+`"`)
	if p.header.Get("Cache-Control") != "no-store" {
		t.Errorf("reveal result Cache-Control %q", p.header.Get("Cache-Control"))
	}
	if strings.Count(p.body, "WXY2") != 1 {
		t.Errorf("the key's last block appears %d times; want once", strings.Count(p.body, "WXY2"))
	}
	recs := r.audit(escrow.ActionKeyRevealed)
	if len(recs) != 1 || recs[0].Actor.ID != "local:hd" || recs[0].Reason != goodReason || recs[0].Ticket != goodTicket ||
		recs[0].Device != r.device.ID || recs[0].Detail["via"] != "session" {
		t.Fatalf("audit %+v", recs)
	}
	mustContain(t, "reveal", p, "#"+strconv.FormatInt(recs[0].Seq, 10))
	// The device page shows the reveal in its trail, and the key nowhere.
	d := b.get(dev)
	mustContain(t, "device page", d, escrow.ActionKeyRevealed, goodTicket)
	if strings.Contains(d.body, "WXY2") {
		t.Fatal("the device page shows the key")
	}
	// A GET of the reveal URL never reveals.
	if g := b.get(dev + "/reveal"); strings.Contains(g.body, "WXY2") {
		t.Fatal("GET revealed the key")
	}
}

// Two-person approval through the pages: request, no self-approval,
// approval by someone else, a single use, nobody else's.
func TestApprovalFlow(t *testing.T) {
	r := newRig(t, rigOptions{approvalGroups: []string{"role:helpdesk"}})
	hd := r.user("hd", escrow.RoleHelpdesk)
	other := r.user("hd2", escrow.RoleHelpdesk)
	appr := r.user("appr", escrow.RoleApprover)
	dev := "/ui/devices/" + string(r.device.ID)

	p := hd.submit(dev+"/reveal", revealForm(goodReason, goodTicket))
	mustStatus(t, "reveal without approval", p, http.StatusForbidden)
	mustContain(t, "reveal without approval", p, "second person", `formaction="/ui/devices/`+string(r.device.ID)+`/approvals"`)

	p = hd.submit(dev+"/approvals", revealForm(goodReason, goodTicket))
	mustStatus(t, "request", p, http.StatusSeeOther)
	loc := p.location()
	if !strings.HasPrefix(loc, "/ui/approvals/apr_") {
		t.Fatalf("request redirected to %q", loc)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(loc, "/ui/approvals/"), "?requested=1")
	mustContain(t, "requester's view", hd.get(loc), "pending", "Waiting for someone else")
	// The requester cannot decide (no permission), and an admin cannot
	// approve their own request.
	mustStatus(t, "self-approval by helpdesk", hd.submit("/ui/approvals/"+id+"/approve", nil), http.StatusForbidden)
	admin := r.user("boss", escrow.RoleAdmin)
	ap := admin.submit(dev+"/approvals", revealForm(goodReason, "IT-9"))
	adminID := strings.TrimSuffix(strings.TrimPrefix(ap.location(), "/ui/approvals/"), "?requested=1")
	mustStatus(t, "admin self-approval", admin.submit("/ui/approvals/"+adminID+"/approve", nil), http.StatusForbidden)

	// The approver sees it to decide, and approves.
	list := appr.get("/ui/approvals")
	mustContain(t, "approver's list", list, "Waiting for your decision", id)
	page := appr.get("/ui/approvals/" + id)
	mustContain(t, "approver's view", page, "Approve", "Deny", goodTicket)
	p = appr.submit("/ui/approvals/"+id+"/approve", url.Values{"note": {"checked the ticket"}})
	mustStatus(t, "approve", p, http.StatusSeeOther)
	mustContain(t, "approved", appr.get("/ui/approvals/"+id), "approved", "checked the ticket")
	// Decided is final.
	mustStatus(t, "approve again", appr.submit("/ui/approvals/"+id+"/deny", nil), http.StatusConflict)

	// Someone else neither sees nor uses it.
	mustStatus(t, "other's view", other.get("/ui/approvals/"+id), http.StatusNotFound)
	use := revealForm(goodReason, goodTicket)
	use.Set("approval_id", id)
	mustStatus(t, "other's use", other.submit(dev+"/reveal", use), http.StatusNotFound)

	// The requester's page offers the reveal; it works once.
	mine := hd.get("/ui/approvals/" + id)
	mustContain(t, "requester's approved view", mine, "Reveal key now", `name="approval_id" value="`+id+`"`)
	p = hd.submit(dev+"/reveal", use)
	mustStatus(t, "reveal with approval", p, http.StatusOK)
	mustContain(t, "reveal with approval", p, groupsHTML(r.key))
	p = hd.submit(dev+"/reveal", use)
	mustStatus(t, "reuse", p, http.StatusConflict)
	if strings.Contains(p.body, "WXY2") {
		t.Fatal("a reused approval revealed the key")
	}
	recs := r.audit(escrow.ActionKeyRevealed)
	if len(recs) != 1 || recs[0].Detail["approval"] != id || recs[0].Detail["approver"] != "local:appr" {
		t.Fatalf("reveals %+v", recs)
	}
	mustContain(t, "used", hd.get("/ui/approvals/"+id), "used")
}

func TestLogin(t *testing.T) {
	r := newRig(t, rigOptions{})
	nu, err := r.local.CreateUser(ctx, escrow.System, "ada", "Ada", "ada@example.com", []escrow.Role{escrow.RoleHelpdesk}, false)
	if err != nil {
		t.Fatal(err)
	}
	b := r.browser()
	// Anonymous: the sign-in page, and a target kept for after sign-in.
	p := b.get("/ui/devices/" + string(r.device.ID))
	if want := "/ui/login?next=%2Fui%2Fdevices%2F" + string(r.device.ID); p.location() != want {
		t.Fatalf("redirect %q, want %q", p.location(), want)
	}
	lp := b.get(p.location())
	mustContain(t, "login", lp, `name="next" value="/ui/devices/`+string(r.device.ID)+`"`, `autocomplete="one-time-code"`)
	if strings.Contains(lp.body, "Sign in with SSO") {
		t.Error("SSO button without SSO")
	}
	token := field(t, loginCSRFRE, lp.body)
	// Wrong password: a generic message.
	p = b.post("/ui/login", url.Values{"login_csrf": {token}, "username": {"ada"}, "password": {"nope"}})
	mustStatus(t, "wrong password", p, http.StatusUnauthorized)
	mustContain(t, "wrong password", p, "Wrong user name, password or code.")
	// The one-time password must be replaced.
	p = b.post("/ui/login", url.Values{"login_csrf": {token}, "username": {"ada"}, "password": {nu.OneTimePassword}})
	mustStatus(t, "one-time password", p, http.StatusOK)
	mustContain(t, "one-time password", p, "Choose a new password", `name="new_password2"`, `value="ada"`)
	if strings.Contains(p.body, nu.OneTimePassword) {
		t.Fatal("the page repeats the one-time password")
	}
	change := url.Values{"login_csrf": {token}, "username": {"ada"}, "password": {nu.OneTimePassword}, "change": {"1"},
		"new_password": {"short"}, "new_password2": {"short"}, "next": {"/ui/devices/" + string(r.device.ID)}}
	p = b.post("/ui/login", change)
	mustStatus(t, "short new password", p, http.StatusBadRequest)
	mustContain(t, "short new password", p, "at least 12 characters")
	change.Set("new_password", newPassword)
	mustContain(t, "mismatch", b.post("/ui/login", change), "do not match")
	change.Set("new_password2", newPassword)
	p = b.post("/ui/login", change)
	if p.status != http.StatusSeeOther || p.location() != "/ui/devices/"+string(r.device.ID) {
		t.Fatalf("sign-in: %d %q\n%s", p.status, p.location(), p.body)
	}
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, auth.CookieName+"=") && (!strings.Contains(c, "Secure") || !strings.Contains(c, "HttpOnly")) {
			t.Errorf("session cookie %q", c)
		}
	}
	mustStatus(t, "signed in", b.get("/ui/home"), http.StatusOK)
	mustStatus(t, "sign-in page when signed in", b.get("/ui/login"), http.StatusSeeOther)

	// Sign out ends the session on the server, not just the cookie.
	p = b.submit("/ui/logout", nil)
	if p.status != http.StatusSeeOther || p.location() != "/ui/login?out=1" {
		t.Fatalf("logout: %d %q", p.status, p.location())
	}
	mustStatus(t, "after logout", b.get("/ui/home"), http.StatusSeeOther)
	if len(r.audit(auth.ActionLogout)) != 1 {
		t.Error("logout not audited")
	}

	// An open redirect is not possible through next.
	b2 := r.browser()
	lp = b2.get("/ui/login?next=" + url.QueryEscape("//evil.example/x"))
	mustContain(t, "next", lp, `name="next" value="/ui/home"`)
	b2.login("ada", newPassword, "")
}

// With OIDC configured, the sign-in page offers SSO; signing in through a
// real provider lands on the page asked for, and signing out of that
// session goes to the provider's end-session endpoint.
func TestSSO(t *testing.T) {
	idp, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	// mockoidc advertises no end-session endpoint; add one to discovery.
	endSession := ""
	if err := idp.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path != mockoidc.DiscoveryEndpoint {
				next.ServeHTTP(w, req)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, req)
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Error(err)
			}
			doc["end_session_endpoint"] = endSession
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(doc)
		})
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := idp.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Shutdown() })
	endSession = idp.Addr() + "/oidc/logout"

	r := newRig(t, rigOptions{idp: idp})
	b := r.browser()
	next := "/ui/devices/" + string(r.device.ID)
	lp := b.get(b.get(next).location())
	m := regexp.MustCompile(`<a class="button" href="([^"]+)">Sign in with SSO</a>`).FindStringSubmatch(lp.body)
	if m == nil {
		t.Fatalf("no SSO button:\n%s", lp.body)
	}
	start := strings.ReplaceAll(m[1], "&amp;", "&")
	if want := "/auth/oidc/login?return_to=" + url.QueryEscape(next); start != want {
		t.Fatalf("SSO button %q, want %q", start, want)
	}
	// Follow the redirects through the provider and back.
	p := b.get(start)
	for i := 0; p.status == http.StatusFound || p.status == http.StatusSeeOther; i++ {
		if i > 5 {
			t.Fatal("too many redirects")
		}
		loc := p.location()
		if strings.HasPrefix(loc, "/") {
			loc = r.ts.URL + loc
		}
		if loc == r.ts.URL+next {
			break
		}
		req, _ := http.NewRequest(http.MethodGet, loc, nil)
		p = b.do(req)
	}
	if p.location() != next {
		t.Fatalf("SSO sign-in ended at %d %q:\n%s", p.status, p.location(), p.body)
	}
	mustContain(t, "signed in through SSO", b.get(next), "Recovery key versions", "jane.doe")
	// An SSO session has no local password to change.
	mustContain(t, "password page", b.get("/ui/password"), "managed by your identity provider")

	p = b.submit("/ui/logout", nil)
	if !strings.HasPrefix(p.location(), endSession+"?") || !strings.Contains(p.location(), "id_token_hint=") {
		t.Fatalf("SSO logout went to %q", p.location())
	}
	mustStatus(t, "after logout", b.get("/ui/home"), http.StatusSeeOther)
}

func TestAuditPageAndExport(t *testing.T) {
	r := newRig(t, rigOptions{})
	hd := r.user("hd", escrow.RoleHelpdesk)
	mustStatus(t, "reveal", hd.submit("/ui/devices/"+string(r.device.ID)+"/reveal", revealForm(goodReason, goodTicket)), http.StatusOK)
	aud := r.user("aud", escrow.RoleAuditor)
	p := aud.get("/ui/audit")
	mustContain(t, "audit", p, escrow.ActionKeyRevealed, goodTicket, "Showing the last seven days", "format=csv", "format=jsonl")
	// Filter by action and device (a serial works), and by time.
	p = aud.get("/ui/audit?action=" + escrow.ActionKeyRevealed + "&device=C02XK0AAJGH5&from=&to=")
	mustContain(t, "filtered", p, escrow.ActionKeyRevealed, "local:hd")
	if strings.Contains(p.body, "<code>"+auth.ActionLoginSucceeded+"</code>") {
		t.Error("the action filter let other actions through")
	}
	p = aud.get("/ui/audit?actor=local:nobody&from=")
	mustContain(t, "no records", p, "No audit records.")
	future := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04")
	p = aud.get("/ui/audit?from=" + future)
	mustContain(t, "future", p, "No audit records.")
	mustStatus(t, "bad time", aud.get("/ui/audit?from=yesterday"), http.StatusBadRequest)

	csvp := aud.get("/ui/audit/export?format=csv&action=" + escrow.ActionKeyRevealed)
	mustStatus(t, "csv", csvp, http.StatusOK)
	if !strings.HasPrefix(csvp.header.Get("Content-Type"), "text/csv") || !strings.Contains(csvp.header.Get("Content-Disposition"), "attachment") ||
		csvp.header.Get("Cache-Control") != "no-store" {
		t.Errorf("csv headers %v", csvp.header)
	}
	rows, err := csv.NewReader(strings.NewReader(csvp.body)).ReadAll()
	if err != nil || len(rows) != 2 || rows[1][5] != escrow.ActionKeyRevealed || rows[1][8] != goodTicket {
		t.Fatalf("csv %q %v", rows, err)
	}
	jl := aud.get("/ui/audit/export?format=jsonl&actor=local:hd")
	mustStatus(t, "jsonl", jl, http.StatusOK)
	lines := strings.Split(strings.TrimSpace(jl.body), "\n")
	var sawReveal bool
	for _, l := range lines {
		var rec struct{ Action, ActorID string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("jsonl line %q: %v", l, err)
		}
		if rec.Action == escrow.ActionKeyRevealed {
			sawReveal = true
		}
	}
	if !sawReveal {
		t.Errorf("jsonl export lacks the reveal:\n%s", jl.body)
	}
	if strings.Contains(csvp.body+jl.body, r.key) {
		t.Fatal("an export carries the key")
	}
	mustStatus(t, "bad format", aud.get("/ui/audit/export?format=xml"), http.StatusBadRequest)
}

func TestTokens(t *testing.T) {
	r := newRig(t, rigOptions{})
	b := r.user("hd", escrow.RoleHelpdesk)
	p := b.submit("/ui/tokens", url.Values{"name": {"inventory sync"}, "expires_in_hours": {"24"}})
	mustStatus(t, "create", p, http.StatusCreated)
	m := regexp.MustCompile(`<code>(fve_[A-Za-z0-9_-]+)</code>`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no token shown:\n%s", p.body)
	}
	secret := m[1]
	// It works as a bearer token, and is never shown again.
	req, _ := http.NewRequest(http.MethodGet, r.ts.URL+"/ui/tokens", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := r.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bearer token: %d", resp.StatusCode)
	}
	list := b.get("/ui/tokens")
	mustContain(t, "list", list, "inventory sync", "helpdesk")
	if strings.Contains(list.body, secret) {
		t.Fatal("the token is shown again")
	}
	// A role the person lacks is refused.
	p = b.submit("/ui/tokens", url.Values{"name": {"x"}, "roles": {"admin"}})
	mustStatus(t, "more roles", p, http.StatusForbidden)
	// Revoke.
	id := regexp.MustCompile(`/ui/tokens/(tok_[A-Za-z0-9_-]+)/revoke`).FindStringSubmatch(list.body)
	if id == nil {
		t.Fatal("no revoke form")
	}
	mustStatus(t, "revoke", b.submit("/ui/tokens/"+id[1]+"/revoke", nil), http.StatusSeeOther)
	mustContain(t, "revoked", b.get("/ui/tokens"), "revoked")
	resp, err = r.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token still works: %d", resp.StatusCode)
	}
	// Someone else's token cannot be revoked (or even found).
	other := r.user("hd2", escrow.RoleHelpdesk)
	mustStatus(t, "other's token", other.submit("/ui/tokens/"+id[1]+"/revoke", nil), http.StatusNotFound)
}

func TestUsers(t *testing.T) {
	r := newRig(t, rigOptions{})
	admin := r.user("root", escrow.RoleAdmin)
	p := admin.submit("/ui/users", url.Values{"username": {"grace"}, "display_name": {"Grace"}, "roles": {"helpdesk", "approver"}})
	mustStatus(t, "create", p, http.StatusCreated)
	otp := regexp.MustCompile(`<code id="otp">([^<]+)</code>`).FindStringSubmatch(p.body)
	if otp == nil {
		t.Fatalf("no one-time password:\n%s", p.body)
	}
	g := r.browser()
	g.login("grace", otp[1], newPassword)
	mustStatus(t, "grace reveals", g.get("/ui/devices/"+string(r.device.ID)+"/reveal"), http.StatusOK)
	if strings.Contains(admin.get("/ui/users").body, otp[1]) {
		t.Fatal("the one-time password is shown again")
	}
	p = admin.submit("/ui/users", url.Values{"username": {"grace"}, "roles": {"helpdesk"}})
	mustStatus(t, "duplicate", p, http.StatusConflict)
	p = admin.submit("/ui/users", url.Values{"username": {"Bad Name"}, "roles": {"helpdesk"}})
	mustStatus(t, "bad name", p, http.StatusBadRequest)
	mustContain(t, "bad name", p, "a user name uses")
	p = admin.submit("/ui/users", url.Values{"username": {"x1"}, "roles": {"superuser"}})
	mustStatus(t, "bad role", p, http.StatusBadRequest)
}

func TestChangePassword(t *testing.T) {
	r := newRig(t, rigOptions{})
	b := r.user("hd", escrow.RoleHelpdesk)
	p := b.submit("/ui/password", url.Values{"password": {"wrong password!"}, "new_password": {"another long password"}, "new_password2": {"another long password"}})
	mustStatus(t, "wrong current", p, http.StatusForbidden)
	p = b.submit("/ui/password", url.Values{"password": {newPassword}, "new_password": {"another long password"}, "new_password2": {"another long password"}})
	if p.status != http.StatusSeeOther || p.location() != "/ui/login?out=1" {
		t.Fatalf("change: %d %q", p.status, p.location())
	}
	mustStatus(t, "signed out", b.get("/ui/home"), http.StatusSeeOther)
	b.login("hd", "another long password", "")
}

// Page bodies are bounded before the CSRF check reads them.
func TestBodyLimit(t *testing.T) {
	r := newRig(t, rigOptions{})
	b := r.user("hd", escrow.RoleHelpdesk)
	big := revealForm(strings.Repeat("x", 100<<10), goodTicket)
	big.Set("csrf_token", b.csrf())
	p := b.post("/ui/devices/"+string(r.device.ID)+"/reveal", big)
	if p.status != http.StatusForbidden && p.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized form: %d", p.status)
	}
	if len(r.audit(escrow.ActionKeyRevealed)) != 0 {
		t.Fatal("an oversized form revealed")
	}
}

// TestEndedSessionIsAnonymous: a browser whose session ended (logged out
// elsewhere, expired) is treated as signed out: the sign-in page loads at
// once, and pages send it there, instead of a 401 on every request.
func TestEndedSessionIsAnonymous(t *testing.T) {
	r := newRig(t, rigOptions{})
	b := r.user("hd", escrow.RoleHelpdesk)
	u, _ := url.Parse(r.ts.URL)
	var sid string
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == auth.CookieName {
			sid = c.Value
		}
	}
	if sid == "" {
		t.Fatal("no session cookie after signing in")
	}
	if err := r.meta.DeleteSession(ctx, auth.HashSecret(sid)); err != nil {
		t.Fatal(err)
	}
	p := b.get("/ui/login")
	mustStatus(t, "sign-in page with an ended session", p, http.StatusOK)
	if !strings.Contains(strings.Join(p.header.Values("Set-Cookie"), "\n"), auth.CookieName+"=;") {
		t.Errorf("the stale cookie was not cleared: %q", p.header.Values("Set-Cookie"))
	}
	if got := b.get("/ui/devices"); got.status != http.StatusSeeOther || !strings.HasPrefix(got.location(), "/ui/login") {
		t.Errorf("page with an ended session: %d %q", got.status, got.location())
	}
	// A bearer token that is not valid is still refused outright.
	req, _ := http.NewRequest(http.MethodGet, r.ts.URL+"/healthz", nil)
	req.Header.Set("Authorization", "Bearer fve_not-a-token")
	resp, err := r.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("invalid bearer token on a public route: %d", resp.StatusCode)
	}
}
