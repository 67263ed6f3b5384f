package api_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
)

var mac = escrow.Device{ID: "5E6F7A8B-9C0D-4E1F-8A2B-3C4D5E6F7A8B", UDID: "5E6F7A8B-9C0D-4E1F-8A2B-3C4D5E6F7A8B",
	Serial: "C02CONTRACT1", Hostname: "lab-mac", Platform: "macOS"}

// containsKey reports whether b holds the key in either of its forms.
func containsKey(b []byte, key string) bool {
	return strings.Contains(string(b), key) || strings.Contains(string(b), strings.ReplaceAll(key, "-", ""))
}

// backends runs f on the embedded SQLite store and on PostgreSQL.
func backends(t *testing.T, o apitest.Options, f func(t *testing.T, s *apitest.Server)) {
	t.Run("sqlite", func(t *testing.T) { f(t, apitest.Start(t, o)) })
	t.Run("postgres", func(t *testing.T) {
		o := o
		o.PostgresDSN = pgtest.NewDatabase(t)
		f(t, apitest.Start(t, o))
	})
}

// TestRevealContract is the contract later checks rely on:
// POST /api/v1/devices/{udid or serial}/reveal with {"reason", "ticket"}.
// No credentials → 401, a role without key:reveal → 403, a missing or
// malformed reason or ticket → 400, and none of those answers carries the
// key or discloses it; a valid request → 200, no-store, the key.
func TestRevealContract(t *testing.T) {
	backends(t, apitest.Options{}, func(t *testing.T, s *apitest.Server) {
		key := s.MustEscrow(t, mac)
		helpdesk := s.MustUser(t, "hana", escrow.RoleHelpdesk)
		viewer := s.MustUser(t, "vera", escrow.RoleViewer)
		auditor := s.MustUser(t, "aude", escrow.RoleAuditor)
		approver := s.MustUser(t, "apu", escrow.RoleApprover)
		good := wire.RevealRequest{Reason: "user forgot the FileVault password", Ticket: "IT-1234"}

		refusals := []struct {
			name   string
			cred   cred
			ref    string
			body   any
			status int
			code   string
		}{
			{"no credentials", cred{}, mac.Serial, good, http.StatusUnauthorized, "unauthenticated"},
			{"an unknown token", bearer("forged", "fve_"+strings.Repeat("A", 43)), mac.Serial, good, http.StatusUnauthorized, "unauthenticated"},
			{"viewer", bearer("viewer", viewer.Token), mac.Serial, good, http.StatusForbidden, "forbidden"},
			{"auditor", bearer("auditor", auditor.Token), mac.UDID, good, http.StatusForbidden, "forbidden"},
			{"approver", bearer("approver", approver.Token), mac.Serial, good, http.StatusForbidden, "forbidden"},
			{"missing reason", bearer("helpdesk", helpdesk.Token), mac.Serial, map[string]string{"ticket": "IT-1234"}, http.StatusBadRequest, "invalid"},
			{"missing ticket", bearer("helpdesk", helpdesk.Token), mac.Serial, map[string]string{"reason": good.Reason}, http.StatusBadRequest, "invalid"},
			{"blank reason and ticket", bearer("helpdesk", helpdesk.Token), mac.UDID, wire.RevealRequest{Reason: "  ", Ticket: " "}, http.StatusBadRequest, "invalid"},
			{"short reason", bearer("helpdesk", helpdesk.Token), mac.Serial, wire.RevealRequest{Reason: "locked", Ticket: "IT-1234"}, http.StatusBadRequest, "invalid"},
			{"bad ticket", bearer("helpdesk", helpdesk.Token), mac.Serial, wire.RevealRequest{Reason: good.Reason, Ticket: "see slack"}, http.StatusBadRequest, "invalid"},
			{"unknown field", bearer("helpdesk", helpdesk.Token), mac.Serial, `{"reason": "user forgot the FileVault password", "ticket": "IT-1234", "force": true}`, http.StatusBadRequest, "invalid"},
			{"not JSON", bearer("helpdesk", helpdesk.Token), mac.Serial, `reason=x&ticket=y`, http.StatusBadRequest, "invalid"},
			{"too large", bearer("helpdesk", helpdesk.Token), mac.Serial, `{"reason": "` + strings.Repeat("x", 70<<10) + `", "ticket": "IT-1"}`, http.StatusRequestEntityTooLarge, "too_large"},
			{"no such device", bearer("helpdesk", helpdesk.Token), "C02NOSUCH001", good, http.StatusNotFound, "not_found"},
		}
		for _, tc := range refusals {
			a := call(t, s, tc.cred, http.MethodPost, "/api/v1/devices/"+tc.ref+"/reveal", tc.body)
			if a.status != tc.status || a.errorCode() != tc.code {
				t.Errorf("%s: HTTP %d %q, want %d %q", tc.name, a.status, a.errorCode(), tc.status, tc.code)
			}
			if containsKey(a.body, key) {
				t.Errorf("%s: the refusal carries the key", tc.name)
			}
			if a.header.Get("Cache-Control") != "no-store" {
				t.Errorf("%s: Cache-Control %q", tc.name, a.header.Get("Cache-Control"))
			}
		}
		// A missing reason is named as such.
		if a := call(t, s, bearer("helpdesk", helpdesk.Token), http.MethodPost, "/api/v1/devices/"+mac.Serial+"/reveal", map[string]string{"ticket": "IT-1234"}); !strings.Contains(string(a.body), "reason required") {
			t.Errorf("missing reason: %s", a.body)
		}
		// Nothing was disclosed by the refusals.
		vs, err := s.Service.KeyVersions(context.Background(), mac.ID, escrow.KindPRK)
		if err != nil || len(vs) != 1 || !vs[0].DisclosedAt.IsZero() {
			t.Fatalf("after refusals: %+v %v", vs, err)
		}
		if n, _ := s.Meta.CountAudit(context.Background(), escrow.AuditQuery{Action: escrow.ActionKeyRevealed}); n != 0 {
			t.Fatalf("%d reveals audited after refusals", n)
		}

		// By serial, then by UDID: 200, never cached, the key.
		for i, ref := range []string{mac.Serial, mac.UDID} {
			a := call(t, s, bearer("helpdesk", helpdesk.Token), http.MethodPost, "/api/v1/devices/"+ref+"/reveal", good)
			got := decode[wire.RevealResponse](t, a, http.StatusOK)
			if got.Key != key {
				t.Fatalf("reveal by %s: not the escrowed key", ref)
			}
			if a.header.Get("Cache-Control") != "no-store" || got.Device != string(mac.ID) || got.Serial != mac.Serial || got.Version != 1 || got.AuditSeq == 0 {
				t.Fatalf("reveal by %s: Cache-Control %q, %+v", ref, a.header.Get("Cache-Control"), got.Device)
			}
			recs, _ := s.Meta.AuditRecords(context.Background(), escrow.AuditQuery{Action: escrow.ActionKeyRevealed})
			if len(recs) != i+1 || recs[i].Actor.ID != helpdesk.ID || recs[i].Ticket != "IT-1234" || recs[i].Seq != got.AuditSeq {
				t.Fatalf("audit after reveal %d: %+v", i+1, recs)
			}
		}
		vs, _ = s.Service.KeyVersions(context.Background(), mac.ID, escrow.KindPRK)
		if vs[0].DisclosedAt.IsZero() {
			t.Fatal("the revealed version is not marked disclosed")
		}
		// The device page shows metadata, never the key.
		if a := call(t, s, bearer("viewer", viewer.Token), http.MethodGet, "/api/v1/devices/"+mac.Serial, nil); a.status != http.StatusOK || containsKey(a.body, key) {
			t.Fatalf("device page: %d, key present: %v", a.status, containsKey(a.body, key))
		}
	})
}

// TestRoleInvariants pins the security promises of the role table that
// the matrix test takes as given.
func TestRoleInvariants(t *testing.T) {
	holders := func(p auth.Permission) []escrow.Role {
		var out []escrow.Role
		for _, r := range escrow.AllRoles {
			if slices.Contains(auth.RolePermissions[r], p) {
				out = append(out, r)
			}
		}
		return out
	}
	for p, want := range map[auth.Permission][]escrow.Role{
		auth.PermKeyReveal:      {escrow.RoleAdmin, escrow.RoleHelpdesk},
		auth.PermApprovalDecide: {escrow.RoleAdmin, escrow.RoleApprover},
		auth.PermUserAdmin:      {escrow.RoleAdmin},
		auth.PermTokenAdmin:     {escrow.RoleAdmin},
		auth.PermBlockAdmin:     {escrow.RoleAdmin},
		auth.PermMDMAdmin:       {escrow.RoleAdmin},
		auth.PermAuditRead:      {escrow.RoleAdmin, escrow.RoleAuditor},
	} {
		if got := holders(p); !slices.Equal(got, want) {
			t.Errorf("%s is held by %v, want %v", p, got, want)
		}
	}
}
