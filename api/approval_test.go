package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
)

// TestApprovalOverHTTP is the two-person rule through the API, with help
// desk reveals needing approval: no self-approval, single use, expiry of a
// pending and of an approved request, and an approval belongs to its
// requester alone (another operator can neither use nor see it).
func TestApprovalOverHTTP(t *testing.T) {
	backends(t, apitest.Options{ApprovalGroups: []string{"role:helpdesk"}}, func(t *testing.T, s *apitest.Server) {
		ctx := context.Background()
		key := s.MustEscrow(t, mac)
		hana := s.MustUser(t, "hana", escrow.RoleHelpdesk)
		mallory := s.MustUser(t, "mallory", escrow.RoleHelpdesk)
		al := s.MustUser(t, "al", escrow.RoleApprover)
		// Someone who may both ask and decide still cannot decide their own.
		both := s.MustUser(t, "bo", escrow.RoleHelpdesk, escrow.RoleApprover)
		req := wire.ApprovalRequest{Reason: "user forgot the FileVault password", Ticket: "IT-2001"}
		reveal := func(u apitest.User, approval string) answer {
			return call(t, s, bearer(u.Username, u.Token), http.MethodPost, "/api/v1/devices/"+mac.Serial+"/reveal",
				wire.RevealRequest{Reason: req.Reason, Ticket: req.Ticket, ApprovalID: approval})
		}
		request := func(u apitest.User) wire.Approval {
			t.Helper()
			ap := decode[wire.Approval](t, call(t, s, bearer(u.Username, u.Token), http.MethodPost, "/api/v1/devices/"+mac.Serial+"/approvals", req), http.StatusCreated)
			if ap.State != "pending" || ap.Requester != u.ID || ap.Device != string(mac.ID) {
				t.Fatalf("new approval %+v", ap)
			}
			return ap
		}
		decide := func(u apitest.User, id, verb string) answer {
			return call(t, s, bearer(u.Username, u.Token), http.MethodPost, "/api/v1/approvals/"+id+"/"+verb, wire.Decision{Note: "checked the ticket"})
		}
		noKey := func(what string, a answer) {
			t.Helper()
			if containsKey(a.body, key) {
				t.Errorf("%s: the answer carries the key", what)
			}
		}

		// Without an approval: refused, with its own code.
		a := reveal(hana, "")
		if a.status != http.StatusForbidden || a.errorCode() != "approval_required" {
			t.Fatalf("reveal without approval: %d %s", a.status, a.errorCode())
		}
		noKey("without approval", a)

		ap := request(hana)
		// Pending is not approved.
		if a := reveal(hana, ap.ID); a.status != http.StatusConflict {
			t.Errorf("pending approval used: %d %s", a.status, a.errorCode())
		} else {
			noKey("pending", a)
		}
		// Self-approval, by someone who holds approval:decide.
		apBo := request(both)
		if a := decide(both, apBo.ID, "approve"); a.status != http.StatusForbidden || !strings.Contains(string(a.body), "own request") {
			t.Errorf("self-approval: %d %s", a.status, a.body)
		}
		// Another operator sees nothing of it and cannot use it.
		if a := call(t, s, bearer("mallory", mallory.Token), http.MethodGet, "/api/v1/approvals/"+ap.ID, nil); a.status != http.StatusNotFound {
			t.Errorf("another operator reads the approval: %d", a.status)
		}
		if list := decode[struct{ Approvals []wire.Approval }](t, call(t, s, bearer("mallory", mallory.Token), http.MethodGet, "/api/v1/approvals", nil), http.StatusOK); len(list.Approvals) != 0 {
			t.Errorf("another operator lists %d approvals", len(list.Approvals))
		}

		got := decode[wire.Approval](t, decide(al, ap.ID, "approve"), http.StatusOK)
		if got.State != "approved" || got.Approver != al.ID || got.UseBy == nil {
			t.Fatalf("approved: %+v", got)
		}
		// Once approved, the approver no longer lists someone else's approval
		// as actionable, but the one they decided stays visible to them.
		if a := call(t, s, bearer("al", al.Token), http.MethodGet, "/api/v1/approvals/"+ap.ID, nil); a.status != http.StatusOK {
			t.Errorf("the approver reads the approval they decided: %d", a.status)
		}
		// Still invisible and unusable to another operator.
		if a := call(t, s, bearer("mallory", mallory.Token), http.MethodGet, "/api/v1/approvals/"+ap.ID, nil); a.status != http.StatusNotFound {
			t.Errorf("another operator reads the approved approval: %d", a.status)
		}
		a = reveal(mallory, ap.ID)
		if a.status != http.StatusNotFound {
			t.Errorf("another operator used the approval: %d %s", a.status, a.errorCode())
		}
		noKey("another operator", a)
		// Bound to its reason and ticket.
		a = call(t, s, bearer("hana", hana.Token), http.MethodPost, "/api/v1/devices/"+mac.Serial+"/reveal",
			wire.RevealRequest{Reason: req.Reason, Ticket: "IT-9999", ApprovalID: ap.ID})
		if a.status != http.StatusForbidden {
			t.Errorf("another ticket: %d", a.status)
		}
		noKey("another ticket", a)

		// The requester, once.
		if got := decode[wire.RevealResponse](t, reveal(hana, ap.ID), http.StatusOK); got.Key != key {
			t.Fatal("not the escrowed key")
		}
		a = reveal(hana, ap.ID)
		if a.status != http.StatusConflict {
			t.Errorf("approval reused: %d %s", a.status, a.errorCode())
		}
		noKey("reuse", a)
		if used := decode[wire.Approval](t, call(t, s, bearer("hana", hana.Token), http.MethodGet, "/api/v1/approvals/"+ap.ID, nil), http.StatusOK); used.State != "used" || used.UsedAt == nil {
			t.Errorf("after use: %+v", used)
		}
		// A decided request cannot be decided again.
		if a := decide(al, ap.ID, "deny"); a.status != http.StatusConflict {
			t.Errorf("decided twice: %d", a.status)
		}

		// Expiry of a pending request: nobody decided within its time.
		late := request(hana)
		s.Clock.Set(31 * time.Minute)
		if a := decide(al, late.ID, "approve"); a.status != http.StatusConflict || !strings.Contains(string(a.body), "conflict") {
			t.Errorf("approving an expired request: %d %s", a.status, a.body)
		}
		if st := decode[wire.Approval](t, call(t, s, bearer("hana", hana.Token), http.MethodGet, "/api/v1/approvals/"+late.ID, nil), http.StatusOK); st.State != "expired" {
			t.Errorf("expired pending request shows %q", st.State)
		}
		// Expiry of an approved request: approved an hour ago, usable for 15
		// minutes, now spent.
		s.Clock.Set(-time.Hour)
		stale := request(hana)
		decode[wire.Approval](t, decide(al, stale.ID, "approve"), http.StatusOK)
		s.Clock.Set(0)
		a = reveal(hana, stale.ID)
		if a.status != http.StatusConflict {
			t.Errorf("expired approval used: %d %s", a.status, a.errorCode())
		}
		noKey("expired approval", a)

		// Denied is denied.
		denied := request(hana)
		decode[wire.Approval](t, decide(al, denied.ID, "deny"), http.StatusOK)
		if a := reveal(hana, denied.ID); a.status != http.StatusConflict {
			t.Errorf("denied approval used: %d", a.status)
		}

		// One reveal in all, and every refusal audited.
		if n, _ := s.Meta.CountAudit(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed}); n != 1 {
			t.Errorf("%d reveals audited, want 1", n)
		}
		if n, _ := s.Meta.CountAudit(ctx, escrow.AuditQuery{Action: escrow.ActionRevealRefused}); n != 7 {
			t.Errorf("%d refused reveals audited, want 7", n)
		}
	})
}

// TestRateLimitOverHTTP: an operator who reaches the limit is refused with
// 429 and blocked, the security channel gets an alert (visible in
// /api/v1/notifications), and an admin lifts the block.
func TestRateLimitOverHTTP(t *testing.T) {
	backends(t, apitest.Options{Limits: escrow.RateLimits{PerOperator: 2, Window: time.Hour}, SecurityEmails: []string{"security@example.com"}},
		func(t *testing.T, s *apitest.Server) {
			ctx := context.Background()
			key := s.MustEscrow(t, mac)
			hana := s.MustUser(t, "hana", escrow.RoleHelpdesk)
			admin := s.MustUser(t, "root", escrow.RoleAdmin)
			auditor := s.MustUser(t, "aude", escrow.RoleAuditor)
			good := wire.RevealRequest{Reason: "user forgot the FileVault password", Ticket: "IT-3001"}
			reveal := func() answer {
				return call(t, s, bearer("hana", hana.Token), http.MethodPost, "/api/v1/devices/"+mac.Serial+"/reveal", good)
			}
			for i := 0; i < 2; i++ {
				decode[wire.RevealResponse](t, reveal(), http.StatusOK)
			}
			a := reveal()
			if a.status != http.StatusTooManyRequests || a.errorCode() != "rate_limited" || containsKey(a.body, key) {
				t.Fatalf("third reveal: %d %s (key present: %v)", a.status, a.errorCode(), containsKey(a.body, key))
			}
			// Blocked now: refused before the limit is even counted.
			if a := reveal(); a.status != http.StatusForbidden || !strings.Contains(string(a.body), "blocked") || containsKey(a.body, key) {
				t.Fatalf("blocked operator: %d %s", a.status, a.body)
			}
			if _, err := s.Meta.ActiveBlock(ctx, hana.ID, time.Now()); err != nil {
				t.Fatalf("no block recorded: %v", err)
			}
			// The alert is queued for the security channel; an auditor sees it.
			ns := decode[struct{ Notifications []wire.Notification }](t, call(t, s, bearer("auditor", auditor.Token), http.MethodGet, "/api/v1/notifications", nil), http.StatusOK)
			alerted := false
			for _, n := range ns.Notifications {
				if n.Target == "security@example.com" && strings.Contains(n.Subject, "operator blocked") {
					alerted = true
				}
				if strings.Contains(n.Subject, key) {
					t.Error("a notification subject carries the key")
				}
			}
			if !alerted {
				t.Fatalf("no alert queued: %+v", ns.Notifications)
			}
			// Only an admin lifts it.
			if a := call(t, s, bearer("hana", hana.Token), http.MethodDelete, "/api/v1/blocks/"+hana.ID, nil); a.status != http.StatusForbidden {
				t.Fatalf("the operator lifted their own block: %d", a.status)
			}
			if a := call(t, s, bearer("root", admin.Token), http.MethodDelete, "/api/v1/blocks/"+hana.ID, nil); a.status != http.StatusNoContent {
				t.Fatalf("lift: %d %s", a.status, a.body)
			}
			if _, err := s.Meta.ActiveBlock(ctx, hana.ID, time.Now()); err == nil {
				t.Fatal("still blocked after the admin lifted the block")
			}
			if n, _ := s.Meta.CountAudit(ctx, escrow.AuditQuery{Action: escrow.ActionOperatorUnblocked, ActorID: admin.ID}); n != 1 {
				t.Fatalf("%d unblock records by the admin", n)
			}
		})
}

// TestCSRF: a session's state-changing request needs its CSRF token; without
// it (or with another session's) nothing happens.
func TestCSRF(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	key := s.MustEscrow(t, mac)
	hana := s.MustUser(t, "hana", escrow.RoleHelpdesk)
	cookie, csrf, err := s.Session(hana)
	if err != nil {
		t.Fatal(err)
	}
	_, otherCSRF, err := s.Session(hana)
	if err != nil {
		t.Fatal(err)
	}
	good := wire.RevealRequest{Reason: "user forgot the FileVault password", Ticket: "IT-4001"}
	path := "/api/v1/devices/" + mac.Serial + "/reveal"
	for _, c := range []cred{
		{name: "no CSRF token", cookie: cookie},
		{name: "another session's CSRF token", cookie: cookie, csrf: otherCSRF},
		{name: "a made-up CSRF token", cookie: cookie, csrf: "x" + csrf[1:]},
	} {
		a := call(t, s, c, http.MethodPost, path, good)
		if a.status != http.StatusForbidden || !strings.Contains(string(a.body), "CSRF") || containsKey(a.body, key) {
			t.Errorf("%s: %d %s", c.name, a.status, a.errorCode())
		}
		if a := call(t, s, c, http.MethodPost, "/api/v1/tokens", wire.TokenRequest{Name: "csrf probe"}); a.status != http.StatusForbidden {
			t.Errorf("%s: token created: %d", c.name, a.status)
		}
	}
	if n, _ := s.Meta.CountAudit(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed}); n != 0 {
		t.Fatalf("%d reveals happened without a CSRF token", n)
	}
	if ts, _ := s.Meta.APITokens(ctx, hana.ID); len(ts) != 1 { // the login token only
		t.Fatalf("%d tokens after refused creations", len(ts))
	}
	// Reads need no CSRF token; the right token makes the reveal work.
	if a := call(t, s, cred{cookie: cookie}, http.MethodGet, "/api/v1/me", nil); a.status != http.StatusOK {
		t.Fatalf("GET with the session: %d", a.status)
	}
	if got := decode[wire.RevealResponse](t, call(t, s, cred{cookie: cookie, csrf: csrf}, http.MethodPost, path, good), http.StatusOK); got.Key != key {
		t.Fatal("not the escrowed key")
	}
	recs, _ := s.Meta.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed})
	if len(recs) != 1 || recs[0].Detail["via"] != "session" {
		t.Fatalf("audit %+v", recs)
	}
}
