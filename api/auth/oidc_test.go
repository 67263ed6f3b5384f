package auth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
)

const sessionCookie = auth.CookieName

const flowCookie = "__Host-fvescrow-oidc"

func ada() *idpUser {
	return &idpUser{Sub: "00u1ada", Email: "ada@example.com", EmailVerified: ptr(true), Name: "Ada Lovelace", Username: "ada",
		Groups: []string{"engineering", "fv-helpdesk", "fv-approvers"}, AMR: []string{"pwd", "mfa"}}
}

// TestOIDCSignIn: the whole flow against a real IdP, on both stores: PKCE
// S256 and a nonce go out, groups map to roles, the session works on the
// API, the user is recorded with a stable ID, and the sign-in is audited.
func TestOIDCSignIn(t *testing.T) {
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, rigOptions{store: store})
			r.idp.QueueUser(ada())
			b := r.browser()
			cb := b.login("/ui/devices?q=C02XYZ")

			// What went to the IdP: a code flow with PKCE S256 and a nonce,
			// and no verifier.
			az := r.idp.lastAuthorize()
			if az.Get("response_type") != "code" || az.Get("code_challenge_method") != "S256" || len(az.Get("code_challenge")) != 43 ||
				az.Get("nonce") == "" || az.Get("state") == "" || az.Has("code_verifier") {
				t.Fatalf("authorization request: %v", az)
			}
			if got := strings.Fields(az.Get("scope")); !slices.Equal(got, []string{"openid", "email", "profile"}) {
				t.Errorf("scopes %v", got)
			}
			if b.cookie(flowCookie) == "" {
				t.Fatal("no flow cookie during the sign-in")
			}

			resp, body := b.get(cb.String())
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/devices?q=C02XYZ" {
				t.Fatalf("callback: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
			}
			checkCookie(t, resp, sessionCookie)
			if b.cookie(flowCookie) != "" {
				t.Error("the flow cookie outlived the callback")
			}

			// The verifier the token request carried is the one the challenge
			// was made from (and the IdP checked it: see TestOIDCPKCE).
			var verifier string
			for _, f := range r.idp.tokenRequests() {
				if v := f.Get("code_verifier"); v != "" {
					verifier = v
				}
			}
			sum := sha256.Sum256([]byte(verifier))
			if verifier == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != az.Get("code_challenge") {
				t.Fatal("the token request's code_verifier does not match the challenge")
			}
			if tries, ok := r.idp.redemptions(); ok != 1 || tries > 2 {
				t.Errorf("code redemptions: %d tries, %d succeeded", tries, ok)
			}

			code, me := b.me()
			if code != http.StatusOK {
				t.Fatalf("/api/v1/me: %d %v", code, me)
			}
			id := r.userID("00u1ada")
			if me["id"] != id || me["email"] != "ada@example.com" || me["name"] != "Ada Lovelace" {
				t.Errorf("me: %v", me)
			}
			if got := fmt.Sprint(me["roles"]); got != "[helpdesk approver]" {
				t.Errorf("roles %s, want [helpdesk approver]", got)
			}
			if got := fmt.Sprint(me["groups"]); got != "[engineering fv-helpdesk fv-approvers]" {
				t.Errorf("groups %s", got)
			}
			if !slices.Contains(toStrings(me["permissions"]), string(auth.PermKeyReveal)) {
				t.Errorf("a helpdesk session cannot reveal: %v", me["permissions"])
			}

			u, err := r.user(id)
			if err != nil || u.Source != "oidc" || u.Username != "ada" || u.Email != "ada@example.com" ||
				!slices.Equal(u.Roles, []escrow.Role{escrow.RoleHelpdesk, escrow.RoleApprover}) || u.LastLoginAt.IsZero() {
				t.Fatalf("stored user: %+v, %v", u, err)
			}
			recs := r.audits(auth.ActionLoginSucceeded)
			if len(recs) != 1 || recs[0].Actor.ID != id || recs[0].Detail["method"] != "oidc" || recs[0].Detail["roles"] != "helpdesk,approver" ||
				recs[0].Detail["amr"] != "pwd,mfa" {
				t.Fatalf("audit: %+v", recs)
			}

			// Next time the IdP says Ada left the approvers: same user, new
			// roles, fixed in the new session.
			next := ada()
			next.Groups = []string{"fv-helpdesk"}
			r.idp.QueueUser(next)
			b2 := r.browser()
			b2.signIn()
			if _, me := b2.me(); me["id"] != id || fmt.Sprint(me["roles"]) != "[helpdesk]" {
				t.Errorf("second sign-in: %v", me)
			}
			if u, _ := r.user(id); !slices.Equal(u.Roles, []escrow.Role{escrow.RoleHelpdesk}) {
				t.Errorf("stored roles after the second sign-in: %v", u.Roles)
			}
			// The first session keeps the roles it was given.
			if _, me := b.me(); fmt.Sprint(me["roles"]) != "[helpdesk approver]" {
				t.Errorf("first session's roles changed: %v", me["roles"])
			}
			users, _ := r.store.Users(context.Background())
			if len(users) != 1 {
				t.Errorf("%d users stored, want 1", len(users))
			}
		})
	}
}

// checkCookie: the session and flow cookies are Secure, HttpOnly,
// SameSite=Lax, host-only on /.
func checkCookie(t *testing.T, resp *http.Response, name string) {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == name && c.Value != "" {
			if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
				t.Errorf("cookie %s: %+v", name, c)
			}
			return
		}
	}
	t.Errorf("no %s cookie set", name)
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestOIDCFlowCookie(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	b := r.browser()
	resp, _ := b.get(auth.OIDCLoginPath)
	checkCookie(t, resp, flowCookie)
	for _, c := range resp.Cookies() {
		if c.Name == flowCookie && (c.MaxAge <= 0 || c.MaxAge > 600) {
			t.Errorf("flow cookie lives %ds, want at most 10 minutes", c.MaxAge)
		}
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	// The cookie is sealed: no state, nonce or verifier in it.
	loc, _ := url.Parse(resp.Header.Get("Location"))
	sealed := b.cookie(flowCookie)
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if v := loc.Query().Get(k); v == "" || strings.Contains(sealed, v) {
			t.Errorf("%s readable in the flow cookie", k)
		}
	}
}

// TestOIDCPKCE: the IdP checks the verifier, and a sign-in whose verifier
// does not match the challenge gets no session.
func TestOIDCPKCE(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	r.idp.QueueUser(ada())
	r.idp.locked(func() { r.idp.tamperVerifier = true })
	b := r.browser()
	resp, body := b.get(b.login("").String())
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorMessage(body), "identity provider refused") {
		t.Fatalf("callback with a wrong verifier: %d %s", resp.StatusCode, body)
	}
	if tries, ok := r.idp.redemptions(); tries == 0 || ok != 0 {
		t.Fatalf("IdP redemptions: %d tries, %d accepted", tries, ok)
	}
	if code, _ := b.me(); code != http.StatusUnauthorized {
		t.Fatalf("no session expected, /me answered %d", code)
	}
	if !strings.Contains(r.logs.String(), "invalid_grant") {
		t.Error("the IdP's error code is not logged")
	}
}

// TestOIDCState: a callback whose state is missing, wrong, from another
// browser or too old is refused before any code is redeemed.
func TestOIDCState(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		tamper func(r *rig, b *browser, cb *url.URL) *browser
	}{
		{"missing state", func(_ *rig, b *browser, cb *url.URL) *browser {
			q := cb.Query()
			q.Del("state")
			cb.RawQuery = q.Encode()
			return b
		}},
		{"wrong state", func(_ *rig, b *browser, cb *url.URL) *browser {
			q := cb.Query()
			q.Set("state", auth.NewSecret(""))
			cb.RawQuery = q.Encode()
			return b
		}},
		{"no flow cookie", func(r *rig, _ *browser, _ *url.URL) *browser { return r.browser() }},
		{"another browser's flow", func(r *rig, _ *browser, _ *url.URL) *browser {
			other := r.browser()
			other.login("")
			return other
		}},
		{"forged flow cookie", func(_ *rig, b *browser, _ *url.URL) *browser {
			b.setCookie(flowCookie, base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 120)))
			return b
		}},
		{"expired", func(r *rig, b *browser, _ *url.URL) *browser {
			r.clock.Advance(11 * time.Minute)
			return b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, rigOptions{})
			r.idp.QueueUser(ada())
			r.idp.QueueUser(ada())
			b := r.browser()
			cb := b.login("")
			b = tc.tamper(r, b, cb)
			resp, body := b.get(cb.String())
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorMessage(body), "sign in again") {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if tries, _ := r.idp.redemptions(); tries != 0 {
				t.Fatalf("a code was redeemed %d times", tries)
			}
			if code, _ := b.me(); code != http.StatusUnauthorized {
				t.Fatalf("/me answered %d", code)
			}
		})
	}
}

// TestOIDCReplay: a callback works once, even with a copy of the flow
// cookie.
func TestOIDCReplay(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	r.idp.QueueUser(ada())
	b := r.browser()
	cb := b.login("")
	sealed := b.cookie(flowCookie)
	if resp, body := b.get(cb.String()); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first callback: %d %s", resp.StatusCode, body)
	}
	triesBefore, _ := r.idp.redemptions()
	// The same browser again: its flow cookie is gone.
	if resp, _ := b.get(cb.String()); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("replay in the same browser: %d", resp.StatusCode)
	}
	// An attacker holding the URL and a copy of the flow cookie.
	evil := r.browser()
	evil.setCookie(flowCookie, sealed)
	if resp, _ := evil.get(cb.String()); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("replay with a copied flow cookie: %d", resp.StatusCode)
	}
	if code, _ := evil.me(); code != http.StatusUnauthorized {
		t.Fatalf("the replaying browser got a session (%d)", code)
	}
	// Refused here, not by the IdP: the code was not presented again.
	if tries, ok := r.idp.redemptions(); ok != 1 || tries != triesBefore {
		t.Fatalf("code redemptions: %d tries (%d before the replays), %d succeeded", tries, triesBefore, ok)
	}
	if n := len(r.audits(auth.ActionLoginSucceeded)); n != 1 {
		t.Fatalf("%d sign-ins audited", n)
	}

	// Another replica (same client, so it can open the flow cookie) has
	// not seen the flow: the IdP's refusal to redeem a code twice stops
	// the replay, and its error text, which quotes the code, stays out of
	// the logs (the rig's cleanup checks).
	replica := newRig(t, rigOptions{idp: r.idp})
	evil2 := replica.browser()
	evil2.setCookie(flowCookie, sealed)
	resp, body := evil2.get(replica.ts.URL + cb.Path + "?" + cb.RawQuery)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorMessage(body), "identity provider refused") {
		t.Fatalf("replay on another replica: %d %s", resp.StatusCode, body)
	}
	if code, _ := evil2.me(); code != http.StatusUnauthorized {
		t.Fatal("the replay got a session on the other replica")
	}
	if tries, ok := r.idp.redemptions(); ok != 1 || tries == triesBefore {
		t.Fatalf("code redemptions: %d tries, %d succeeded", tries, ok)
	}
}

// TestOIDCTwoBrowsers: sign-ins in progress in two browsers do not mix.
func TestOIDCTwoBrowsers(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	grace := &idpUser{Sub: "00u2grace", Email: "grace@example.com", Groups: []string{"fv-admins"}}
	r.idp.QueueUser(ada())
	r.idp.QueueUser(grace)
	a, g := r.browser(), r.browser()
	cbA := a.login("")
	cbG := g.login("/ui/admin")
	if resp, body := g.get(cbG.String()); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/admin" {
		t.Fatalf("grace: %d %s", resp.StatusCode, body)
	}
	if resp, body := a.get(cbA.String()); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("ada: %d %s", resp.StatusCode, body)
	}
	_, meA := a.me()
	_, meG := g.me()
	if meA["id"] != r.userID("00u1ada") || meG["id"] != r.userID("00u2grace") || fmt.Sprint(meG["roles"]) != "[admin]" {
		t.Fatalf("ada %v, grace %v", meA, meG)
	}
}

// TestOIDCNonce: an ID token whose nonce is not the one this sign-in sent
// is refused and the attempt audited.
func TestOIDCNonce(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	u := ada()
	u.Nonce = "a-nonce-from-another-sign-in"
	r.idp.QueueUser(u)
	b := r.browser()
	resp, body := b.get(b.login("").String())
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(errorMessage(body), "could not be verified") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if code, _ := b.me(); code != http.StatusUnauthorized {
		t.Fatalf("/me answered %d", code)
	}
	recs := r.audits(auth.ActionLoginFailed)
	if len(recs) != 1 || recs[0].Detail["why"] != "nonce mismatch" || recs[0].Actor.ID != r.userID("00u1ada") {
		t.Fatalf("audit: %+v", recs)
	}
}

// TestOIDCExpiredIDToken: go-oidc's verifier refuses an expired ID token.
func TestOIDCExpiredIDToken(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	r.idp.QueueUser(ada())
	// The IdP's clock is an hour behind: its tokens expired 50 minutes ago.
	r.idp.locked(func() { r.idp.FastForward(-time.Hour) })
	b := r.browser()
	resp, body := b.get(b.login("").String())
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if !strings.Contains(r.logs.String(), "expired") {
		t.Error("the reason is not logged")
	}
}

// TestOIDCNoRole: someone in no mapped group is refused with a clear
// message, audited, and not recorded as a user.
func TestOIDCNoRole(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	r.idp.QueueUser(&idpUser{Sub: "00u3eve", Email: "eve@example.com", EmailVerified: ptr(true), Groups: []string{"engineering", "design"}})
	b := r.browser()
	resp, body := b.get(b.login("").String())
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(errorMessage(body), "no group that gives access") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if code, _ := b.me(); code != http.StatusUnauthorized {
		t.Fatalf("/me answered %d", code)
	}
	recs := r.audits(auth.ActionLoginFailed)
	if len(recs) != 1 || recs[0].Actor.ID != r.userID("00u3eve") || recs[0].Detail["why"] != "no group maps to a role" ||
		recs[0].Detail["groups"] != "engineering,design" || recs[0].Detail["email"] != "eve@example.com" {
		t.Fatalf("audit: %+v", recs)
	}
	if _, err := r.user(r.userID("00u3eve")); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("a refused person was recorded: %v", err)
	}
}

// TestOIDCTooManyGroups: a sign-in with more groups than fvescrow keeps is
// refused, not truncated (a dropped group could be one that makes reveals
// need approval).
func TestOIDCTooManyGroups(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	u := ada()
	for i := range 1000 {
		u.Groups = append(u.Groups, fmt.Sprintf("g%04d", i))
	}
	r.idp.QueueUser(u)
	b := r.browser()
	if resp, body := b.get(b.login("").String()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if code, _ := b.me(); code != http.StatusUnauthorized {
		t.Fatalf("/me answered %d", code)
	}
}

// TestOIDCEmailMapping: "email:ADDRESS" grants a role to a verified
// address only.
func TestOIDCEmailMapping(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	r.idp.QueueUser(&idpUser{Sub: "g1", Email: "approver@example.com", EmailVerified: ptr(false)})
	r.idp.QueueUser(&idpUser{Sub: "g1", Email: "approver@example.com", EmailVerified: ptr(true)})
	b := r.browser()
	if resp, _ := b.get(b.login("").String()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unverified e-mail: %d", resp.StatusCode)
	}
	b.signIn()
	if _, me := b.me(); fmt.Sprint(me["roles"]) != "[approver]" {
		t.Fatalf("me: %v", me)
	}
}

// TestOIDCGroupsFromUserInfo: when the ID token has no groups claim, the
// groups come from UserInfo.
func TestOIDCGroupsFromUserInfo(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	u := ada()
	u.GroupsInUserinfoOnly = true
	r.idp.QueueUser(u)
	b := r.browser()
	b.signIn()
	if _, me := b.me(); fmt.Sprint(me["roles"]) != "[helpdesk approver]" {
		t.Fatalf("me: %v", me)
	}
}

// TestOIDCGroupsClaim: the groups claim may have another name, be nested
// (Keycloak's realm_access.roles) or be a single string.
func TestOIDCGroupsClaim(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		claim string
		extra map[string]any
	}{
		{"realm_access.roles", map[string]any{"realm_access": map[string]any{"roles": []string{"offline_access", "fv-auditors"}}}},
		{"grp", map[string]any{"grp": "fv-auditors"}},
		{"roles", map[string]any{"roles": []any{"fv-auditors", 7, nil}}},
	} {
		t.Run(tc.claim, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, rigOptions{cfg: func(c *auth.OIDCConfig) {
				c.GroupsClaim = tc.claim
				c.RoleGroups = map[escrow.Role][]string{escrow.RoleAuditor: {"fv-auditors"}}
			}})
			r.idp.QueueUser(&idpUser{Sub: "k1", Groups: []string{"fv-helpdesk"}, Extra: tc.extra})
			b := r.browser()
			b.signIn()
			if _, me := b.me(); fmt.Sprint(me["roles"]) != "[auditor]" || !slices.Contains(toStrings(me["groups"]), "fv-auditors") {
				t.Fatalf("me: %v", me)
			}
		})
	}
}

// TestOIDCMFA: with MFA required, a token without a second factor in amr
// (or the configured acr) is refused.
func TestOIDCMFA(t *testing.T) {
	t.Parallel()
	t.Run("amr", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{cfg: func(c *auth.OIDCConfig) { c.RequireMFA = true }})
		weak := ada()
		weak.AMR = []string{"pwd"}
		r.idp.QueueUser(weak)
		none := ada()
		none.AMR = nil
		r.idp.QueueUser(none)
		r.idp.QueueUser(ada())
		b := r.browser()
		for _, what := range []string{"pwd only", "no amr"} {
			resp, body := b.get(b.login("").String())
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(errorMessage(body), "multi-factor") {
				t.Fatalf("%s: %d %s", what, resp.StatusCode, body)
			}
		}
		recs := r.audits(auth.ActionLoginFailed)
		if len(recs) != 2 || recs[0].Detail["why"] != "no second factor" || recs[0].Detail["amr"] != "pwd" {
			t.Fatalf("audit: %+v", recs)
		}
		if code, _ := b.me(); code != http.StatusUnauthorized {
			t.Fatal("a refused sign-in got a session")
		}
		b.signIn() // pwd + mfa
		if code, _ := b.me(); code != http.StatusOK {
			t.Fatalf("/me %d", code)
		}
	})
	t.Run("acr", func(t *testing.T) {
		t.Parallel()
		const acr = "http://schemas.openid.net/pape/policies/2007/06/multi-factor"
		r := newRig(t, rigOptions{cfg: func(c *auth.OIDCConfig) { c.RequireMFA, c.MFAACR = true, acr }})
		u := ada()
		u.AMR, u.ACR = []string{"pwd"}, acr
		r.idp.QueueUser(u)
		b := r.browser()
		b.signIn()
		if got := r.idp.lastAuthorize().Get("acr_values"); got != acr {
			t.Errorf("acr_values %q not requested", got)
		}
		if code, _ := b.me(); code != http.StatusOK {
			t.Fatalf("/me %d", code)
		}
	})
}

// TestOIDCDisabled: a disabled user stays out.
func TestOIDCDisabled(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	r.idp.QueueUser(ada())
	r.idp.QueueUser(ada())
	r.browser().signIn()
	id := r.userID("00u1ada")
	u, err := r.user(id)
	if err != nil {
		t.Fatal(err)
	}
	u.Disabled = true
	if err := r.store.UpdateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	b := r.browser()
	resp, body := b.get(b.login("").String())
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(errorMessage(body), "disabled") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if recs := r.audits(auth.ActionLoginFailed); len(recs) != 1 || recs[0].Detail["why"] != "disabled" {
		t.Fatalf("audit: %+v", recs)
	}
	if u, _ := r.user(id); !u.Disabled {
		t.Fatal("the sign-in re-enabled the user")
	}
}

// TestOIDCAllowedDomains: only verified addresses in the allowed domains.
func TestOIDCAllowedDomains(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{cfg: func(c *auth.OIDCConfig) { c.AllowedDomains = []string{"example.com"} }})
	other := ada()
	other.Email = "ada@example.org"
	unverified := ada()
	unverified.EmailVerified = ptr(false)
	r.idp.QueueUser(other)
	r.idp.QueueUser(unverified)
	r.idp.QueueUser(ada())
	b := r.browser()
	for _, what := range []string{"other domain", "unverified"} {
		if resp, body := b.get(b.login("").String()); resp.StatusCode != http.StatusForbidden || !strings.Contains(errorMessage(body), "domain") {
			t.Fatalf("%s: %d %s", what, resp.StatusCode, body)
		}
	}
	b.signIn()
}

// TestOIDCIdPError: the IdP's refusal (error=access_denied) gives a clear
// message; text it did not get from the standard list is not echoed.
func TestOIDCIdPError(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	for _, tc := range []struct{ sent, want string }{
		{"access_denied", "the identity provider did not sign you in (access_denied)"},
		{"<script>alert(1)</script>", "the identity provider did not sign you in (unknown error)"},
	} {
		r.idp.QueueUser(ada())
		b := r.browser()
		cb := b.login("")
		q := cb.Query()
		q.Del("code")
		q.Set("error", tc.sent)
		q.Set("error_description", "User is not assigned to the client application.")
		cb.RawQuery = q.Encode()
		resp, body := b.get(cb.String())
		if resp.StatusCode != http.StatusForbidden || errorMessage(body) != tc.want {
			t.Fatalf("%s: %d %s", tc.sent, resp.StatusCode, body)
		}
	}
	if tries, _ := r.idp.redemptions(); tries != 0 {
		t.Fatal("a code was redeemed")
	}
}

// TestOIDCReturnTo: return_to must be a path here; anything that could
// leave the site is refused before the IdP is involved.
func TestOIDCReturnTo(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	for _, bad := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "\\\\evil.example",
		"javascript:alert(1)", "evil.example", "ui/", "/ui/\r\nSet-Cookie: x=y", "/%0d%0a", "///evil.example"} {
		b := r.browser()
		resp, body := b.get(auth.OIDCLoginPath + "?return_to=" + url.QueryEscape(bad))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorMessage(body), "return_to") {
			t.Errorf("return_to %q: %d %q", bad, resp.StatusCode, resp.Header.Get("Location"))
		}
		if b.cookie(flowCookie) != "" {
			t.Errorf("return_to %q: a flow started", bad)
		}
	}
	var n int
	r.idp.locked(func() { n = len(r.idp.authorize) })
	if n != 0 {
		t.Fatal("the IdP was contacted")
	}
}

func TestLocalPath(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"/": true, "/ui/": true, "/ui/devices/C02?tab=keys#k": true, "/ui/a%20b": true,
		"": false, "//x": false, "/\\x": false, "https://x/": false, "x": false, "/\tx": false, "/\x00": false,
		"/%2F%2Fx": false, strings.Repeat("/a", 600): false,
	} {
		if got := auth.LocalPath(s); got != want {
			t.Errorf("LocalPath(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestOIDCSessionTimeouts: an OIDC session ends after the idle timeout
// without activity, and at the absolute timeout even with activity.
func TestOIDCSessionTimeouts(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{idle: 10 * time.Minute, max: time.Hour})
		r.idp.QueueUser(ada())
		b := r.browser()
		b.signIn()
		r.clock.Advance(9 * time.Minute)
		if code, _ := b.me(); code != http.StatusOK {
			t.Fatalf("after 9 idle minutes: %d", code)
		}
		r.clock.Advance(9 * time.Minute) // 9 minutes since the last request
		if code, _ := b.me(); code != http.StatusOK {
			t.Fatalf("after another 9 minutes: %d", code)
		}
		r.clock.Advance(11 * time.Minute)
		if code, _ := b.me(); code != http.StatusUnauthorized {
			t.Fatalf("after 11 idle minutes: %d", code)
		}
		if b.cookie(sessionCookie) != "" {
			t.Error("the expired session's cookie was not cleared")
		}
	})
	t.Run("absolute", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{idle: 10 * time.Minute, max: time.Hour})
		r.idp.QueueUser(ada())
		b := r.browser()
		b.signIn()
		for i := 1; i <= 6; i++ { // active every 9 minutes, up to 54
			r.clock.Advance(9 * time.Minute)
			if code, _ := b.me(); code != http.StatusOK {
				t.Fatalf("at %d minutes: %d", 9*i, code)
			}
		}
		r.clock.Advance(7 * time.Minute) // 61 minutes
		if code, _ := b.me(); code != http.StatusUnauthorized {
			t.Fatalf("after the absolute timeout: %d", code)
		}
	})
}

// TestOIDCLogoutURL: an OIDC session's logout goes to the IdP's
// end_session_endpoint with the ID token as a hint; without that endpoint,
// or for a local session, there is none.
func TestOIDCLogoutURL(t *testing.T) {
	t.Parallel()
	t.Run("end_session_endpoint", func(t *testing.T) {
		t.Parallel()
		i := startIdP(t)
		i.locked(func() { i.endSession = true })
		r := newRig(t, rigOptions{idp: i})
		r.idp.QueueUser(ada())
		b := r.browser()
		b.signIn()
		s := endSession(t, r, b)
		got, err := url.Parse(r.oidc.LogoutURL(s))
		if err != nil {
			t.Fatal(err)
		}
		i.mu.Lock()
		idToken := i.tokenReplies[len(i.tokenReplies)-1]["id_token"]
		i.mu.Unlock()
		q := got.Query()
		if got.Scheme+"://"+got.Host+got.Path != i.endSessionURL() || q.Get("id_token_hint") != idToken ||
			q.Get("post_logout_redirect_uri") != r.ts.URL+"/" || q.Get("client_id") != i.ClientID {
			t.Fatalf("logout URL %s", got.Redacted())
		}
		if code, _ := b.me(); code != http.StatusUnauthorized {
			t.Fatal("the session survived logout")
		}
		if r.oidc.LogoutURL(escrow.Session{Source: "local"}) != "" {
			t.Fatal("a local session got an IdP logout URL")
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{cfg: func(c *auth.OIDCConfig) { c.PostLogoutRedirectURL = "https://fvescrow.example.com/bye" }})
		r.idp.QueueUser(ada())
		b := r.browser()
		b.signIn()
		s := endSession(t, r, b)
		if s.IDToken != "" {
			t.Error("the ID token was kept though the IdP has no end-session endpoint")
		}
		if got := r.oidc.LogoutURL(s); got != "" {
			t.Fatalf("logout URL %q", got)
		}
	})
}

// endSession logs the browser out as the web UI does, returning the ended
// session.
func endSession(t *testing.T, r *rig, b *browser) escrow.Session {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/ui/logout", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: b.cookie(sessionCookie)})
	s, ok := r.authn.EndSession(context.Background(), httptest.NewRecorder(), req)
	if !ok || s.Source != "oidc" {
		t.Fatalf("no OIDC session to end: %+v", s)
	}
	return s
}

// TestOIDCDiscovery: an IdP that is down at start makes sign-in answer
// 503 until it is back; a wrong issuer is a configuration error.
func TestOIDCDiscovery(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.down.Store(true)
	r := newRig(t, rigOptions{idp: startIdPOn(t, fl), skipDiscovery: true})
	if err := r.oidc.Discover(context.Background()); !errors.Is(err, escrow.ErrUnavailable) {
		t.Fatalf("discovery of a down IdP: %v", err)
	}
	b := r.browser()
	if resp, body := b.get(auth.OIDCLoginPath); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("login with the IdP down: %d %s", resp.StatusCode, body)
	}
	fl.down.Store(false)
	r.idp.QueueUser(ada())
	b.signIn()

	wrong := r.cfg
	wrong.Issuer = r.idp.Issuer() + "/"
	o, err := auth.NewOIDC(wrong, r.authn, r.store, r.store, func(http.ResponseWriter, *http.Request, error) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Discover(context.Background()); !errors.Is(err, auth.ErrBadRequest) || !strings.Contains(err.Error(), r.idp.Issuer()) {
		t.Fatalf("wrong issuer: %v", err)
	}
}

func TestOIDCConfigValidate(t *testing.T) {
	t.Parallel()
	good := auth.OIDCConfig{Issuer: "https://example.okta.com", ClientID: "0oa1", ClientSecret: auth.NewClientSecret("s3cr3t-value"),
		RedirectURL: "https://fvescrow.example.com/auth/oidc/callback", RoleGroups: map[escrow.Role][]string{escrow.RoleAdmin: {"admins"}}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		f    func(*auth.OIDCConfig)
		want string
	}{
		"http issuer":       {func(c *auth.OIDCConfig) { c.Issuer = "http://example.okta.com" }, "must be https"},
		"relative issuer":   {func(c *auth.OIDCConfig) { c.Issuer = "example.okta.com" }, "absolute URL"},
		"no client":         {func(c *auth.OIDCConfig) { c.ClientID = "" }, "client ID"},
		"no secret":         {func(c *auth.OIDCConfig) { c.ClientSecret = auth.ClientSecret{} }, "client secret"},
		"http redirect":     {func(c *auth.OIDCConfig) { c.RedirectURL = "http://fvescrow.example.com/auth/oidc/callback" }, "must be https"},
		"wrong path":        {func(c *auth.OIDCConfig) { c.RedirectURL = "https://fvescrow.example.com/callback" }, "must end in /auth/oidc/callback"},
		"no roles":          {func(c *auth.OIDCConfig) { c.RoleGroups = nil }, "at least one"},
		"unknown role":      {func(c *auth.OIDCConfig) { c.RoleGroups = map[escrow.Role][]string{"superuser": {"x"}} }, `unknown role "superuser"`},
		"empty group":       {func(c *auth.OIDCConfig) { c.RoleGroups = map[escrow.Role][]string{escrow.RoleAdmin: {""}} }, "empty group"},
		"bad domain":        {func(c *auth.OIDCConfig) { c.AllowedDomains = []string{"@example.com"} }, "not an e-mail domain"},
		"bad post-logout":   {func(c *auth.OIDCConfig) { c.PostLogoutRedirectURL = "http://x.example/" }, "must be https"},
		"scope with spaces": {func(c *auth.OIDCConfig) { c.Scopes = []string{"openid email"} }, "not a scope"},
	}
	for name, tc := range cases {
		c := good
		tc.f(&c)
		err := c.Validate()
		if !errors.Is(err, auth.ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	for _, loopback := range []string{"http://127.0.0.1:5556/dex", "http://localhost:8080/realms/x", "http://[::1]:9/oidc"} {
		c := good
		c.Issuer = loopback
		if err := c.Validate(); err != nil {
			t.Errorf("loopback issuer %s refused: %v", loopback, err)
		}
	}
}

// TestClientSecretRedacts: the client secret does not print.
func TestClientSecretRedacts(t *testing.T) {
	t.Parallel()
	const secret = "very-secret-client-secret"
	c := auth.OIDCConfig{Issuer: "https://idp.example", ClientSecret: auth.NewClientSecret(secret)}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", c, "secret", c.ClientSecret)
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%q %x %s", c.ClientSecret, c.ClientSecret, c.ClientSecret),
		string(j), logs.String()} {
		if strings.Contains(s, secret) || !strings.Contains(s, "REDACTED") {
			t.Errorf("secret printed: %s", s)
		}
	}
	if c.ClientSecret.Reveal() != secret {
		t.Fatal("Reveal")
	}
}
