package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
)

// laterServer serves the same stores as s through an Authenticator whose
// clock reads real time plus ahead: how s answers once that much time has
// passed, without waiting for it.
func laterServer(t *testing.T, s *apitest.Server, ahead time.Duration) *apitest.Server {
	t.Helper()
	later := auth.NewAuthenticator(s.Meta, auth.WithClock(func() time.Time { return time.Now().Add(ahead) }))
	h, _ := api.New(api.Deps{Log: slog.New(slog.DiscardHandler), Auth: later, Local: s.Local, Devices: s.Service, Details: s.Meta,
		Audit: s.Meta, People: s.Meta, Revealer: s.Service, Approvals: s.Approvals})
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &apitest.Server{URL: hs.URL, HTTP: hs}
}

// auditFor returns the records of action read over HTTP by an auditor,
// keyed by their "token" detail.
func auditFor(t *testing.T, s *apitest.Server, auditor apitest.User, action string) map[string]wire.AuditRecord {
	t.Helper()
	list := decode[wire.AuditList](t, call(t, s, bearer(auditor.Username, auditor.Token), http.MethodGet, "/api/v1/audit?action="+action, nil), http.StatusOK)
	out := map[string]wire.AuditRecord{}
	for _, r := range list.Records {
		if r.Action != action {
			t.Errorf("audit?action=%s returned a %s record", action, r.Action)
		}
		out[r.Detail["token"]] = r
	}
	return out
}

// TestAPITokenAuditAndExpiry: API tokens are audited when created and
// when revoked (who, which token, never the secret); a revoked token and
// an expired token are refused with 401 over HTTP while a live one of the
// same owner works.
func TestAPITokenAuditAndExpiry(t *testing.T) {
	backends(t, apitest.Options{}, func(t *testing.T, s *apitest.Server) {
		ctx := context.Background()
		hana := s.MustUser(t, "hana", escrow.RoleHelpdesk)
		aude := s.MustUser(t, "aude", escrow.RoleAuditor)
		me := func(srv *apitest.Server, token string) answer {
			return call(t, srv, bearer("token", token), http.MethodGet, "/api/v1/me", nil)
		}
		refused := func(what string, a answer) {
			t.Helper()
			if a.status != http.StatusUnauthorized || a.errorCode() != "unauthenticated" {
				t.Errorf("%s: HTTP %d %s, want 401 unauthenticated", what, a.status, a.errorCode())
			}
		}

		// Created over HTTP with a one-hour expiry.
		before := time.Now()
		tc := decode[wire.TokenCreated](t, call(t, s, bearer("hana", hana.Token), http.MethodPost, "/api/v1/tokens",
			wire.TokenRequest{Name: "nightly report", ExpiresInHours: 1}), http.StatusCreated)
		if tc.Info.ExpiresAt == nil || tc.Info.ExpiresAt.Before(before.Add(time.Hour-time.Minute)) || tc.Info.ExpiresAt.After(time.Now().Add(time.Hour)) {
			t.Fatalf("token expiry %v, want an hour from now", tc.Info.ExpiresAt)
		}
		if !strings.HasPrefix(tc.Token, "fve_") || tc.Info.Owner != hana.ID {
			t.Fatalf("token %s of %s", tc.Info.ID, tc.Info.Owner)
		}
		if a := me(s, tc.Token); a.status != http.StatusOK {
			t.Fatalf("a new token: HTTP %d", a.status)
		}
		// Stored as its SHA-256 only.
		st, err := s.Meta.APIToken(ctx, tc.Info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if string(st.Hash) != string(auth.HashSecret(tc.Token)) || strings.Contains(string(st.Hash), tc.Token) {
			t.Error("the token is not stored as its SHA-256")
		}

		created := auditFor(t, s, aude, auth.ActionTokenCreated)
		rec, ok := created[tc.Info.ID]
		if !ok {
			t.Fatalf("no %s record for %s", auth.ActionTokenCreated, tc.Info.ID)
		}
		if rec.ActorID != hana.ID || rec.Detail["name"] != "nightly report" || rec.Detail["roles"] != "[helpdesk]" {
			t.Errorf("%s record: actor %s detail %v", auth.ActionTokenCreated, rec.ActorID, rec.Detail)
		}
		// The personal token of the sign-in is audited the same way.
		if r, ok := created[hana.TokenID]; !ok || r.Detail["name"] != "cli login" {
			t.Errorf("no %s record for the sign-in's token %s", auth.ActionTokenCreated, hana.TokenID)
		}

		// An hour and a minute later the token has expired: 401, while the
		// owner's sign-in token (12 hours) still works there. 59 minutes
		// later it still works.
		refused("expired token", me(laterServer(t, s, 61*time.Minute), tc.Token))
		if a := me(laterServer(t, s, 61*time.Minute), hana.Token); a.status != http.StatusOK {
			t.Errorf("a live token of the same owner an hour later: HTTP %d", a.status)
		}
		if a := me(laterServer(t, s, 59*time.Minute), tc.Token); a.status != http.StatusOK {
			t.Errorf("the token before its expiry: HTTP %d", a.status)
		}

		// On the live server too: a token whose expiry has just passed.
		secret := auth.NewSecret("fve_")
		if err := s.Meta.CreateAPIToken(ctx, escrow.APIToken{ID: "tok_justexpired", Name: "short", Owner: hana.ID, Roles: []escrow.Role{escrow.RoleHelpdesk},
			Hash: auth.HashSecret(secret), CreatedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
			t.Fatal(err)
		}
		refused("a token expired a second ago", me(s, secret))
		refused("the expired token, on a device search", call(t, s, bearer("short", secret), http.MethodGet, "/api/v1/devices", nil))

		// Revoked by its owner: 204, then refused, and audited.
		if a := call(t, s, bearer("hana", hana.Token), http.MethodDelete, "/api/v1/tokens/"+tc.Info.ID, nil); a.status != http.StatusNoContent {
			t.Fatalf("revoke: HTTP %d %s", a.status, a.errorCode())
		}
		refused("revoked token", me(s, tc.Token))
		revoked := auditFor(t, s, aude, auth.ActionTokenRevoked)
		rec, ok = revoked[tc.Info.ID]
		if !ok {
			t.Fatalf("no %s record for %s", auth.ActionTokenRevoked, tc.Info.ID)
		}
		if rec.ActorID != hana.ID || rec.Detail["owner"] != hana.ID {
			t.Errorf("%s record: actor %s detail %v", auth.ActionTokenRevoked, rec.ActorID, rec.Detail)
		}
		if len(revoked) != 1 {
			t.Errorf("%d %s records, want 1", len(revoked), auth.ActionTokenRevoked)
		}
		// Someone else's token is not theirs to revoke (nor to learn of).
		if a := call(t, s, bearer("aude", aude.Token), http.MethodDelete, "/api/v1/tokens/"+hana.TokenID, nil); a.status != http.StatusNotFound {
			t.Errorf("revoke someone else's token: HTTP %d", a.status)
		}
		if a := me(s, hana.Token); a.status != http.StatusOK {
			t.Errorf("the token another user tried to revoke: HTTP %d", a.status)
		}
		// An admin may: audited with the admin as actor and hana as owner.
		if a := call(t, s, bearer("admin", s.StaticToken), http.MethodDelete, "/api/v1/tokens/"+hana.TokenID, nil); a.status != http.StatusNoContent {
			t.Fatalf("admin revoke: HTTP %d", a.status)
		}
		refused("token revoked by an admin", me(s, hana.Token))
		if r, ok := auditFor(t, s, aude, auth.ActionTokenRevoked)[hana.TokenID]; !ok || r.ActorID != "token:api-token-file" || r.Detail["owner"] != hana.ID {
			t.Errorf("admin revocation audit: %v %+v", ok, r)
		}

		// No audit record carries a token's secret.
		all := call(t, s, bearer("aude", aude.Token), http.MethodGet, "/api/v1/audit/export?format=jsonl", nil)
		for _, sec := range []string{tc.Token, hana.Token, aude.Token, secret} {
			if strings.Contains(string(all.body), sec) {
				t.Error("the audit log carries a token")
			}
		}
	})
}
