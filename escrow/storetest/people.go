package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// PeopleStore is what sign-in, approvals and notifications persist.
type PeopleStore interface {
	escrow.UserStore
	escrow.SignInCounter
	escrow.TokenStore
	escrow.SessionStore
	escrow.ApprovalStore
	escrow.BlockStore
	escrow.NotificationStore
	escrow.AuditStore
}

// RunPeopleStore runs the suite for users, credentials, approvals, blocks
// and notifications.
func RunPeopleStore(t *testing.T, newStore func(t *testing.T) PeopleStore) {
	t.Run("users", func(t *testing.T) { testUsers(t, newStore(t)) })
	t.Run("sign-in count", func(t *testing.T) { testSignInCount(t, newStore(t)) })
	t.Run("api tokens", func(t *testing.T) { testTokens(t, newStore(t)) })
	t.Run("sessions", func(t *testing.T) { testSessions(t, newStore(t)) })
	t.Run("approvals", func(t *testing.T) { testApprovals(t, newStore(t)) })
	t.Run("approval used once", func(t *testing.T) { testApprovalOnce(t, newStore(t)) })
	t.Run("blocks", func(t *testing.T) { testBlocks(t, newStore(t)) })
	t.Run("notifications", func(t *testing.T) { testNotifications(t, newStore(t)) })
	t.Run("count audit", func(t *testing.T) { testCountAudit(t, newStore(t)) })
}

func testUsers(t *testing.T, s PeopleStore) {
	if _, err := s.User(ctx, "local:ada"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("missing user: %v", err)
	}
	u := escrow.User{ID: "local:ada", Username: "ada", DisplayName: "Ada", Email: "ada@example.com", Source: "local",
		Roles: []escrow.Role{escrow.RoleHelpdesk, escrow.RoleApprover}, Groups: []string{"it"}, PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$x$y",
		TOTPEnabled: true, MustChangePassword: true}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, u); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("duplicate user: %v", err)
	}
	got := must(s.User(ctx, "local:ada"))(t)
	if got.Username != "ada" || !got.HasRole(escrow.RoleApprover) || got.Groups[0] != "it" || !got.TOTPEnabled || !got.MustChangePassword || got.PasswordHash != u.PasswordHash || got.CreatedAt.IsZero() {
		t.Fatalf("read back %+v", got)
	}
	got.MustChangePassword, got.FailedLogins, got.LockedUntil, got.LastLoginAt = false, 3, t0.Add(time.Hour), t0
	got.Roles = []escrow.Role{escrow.RoleViewer}
	if err := s.UpdateUser(ctx, got); err != nil {
		t.Fatal(err)
	}
	again := must(s.User(ctx, "local:ada"))(t)
	if again.MustChangePassword || again.FailedLogins != 3 || !again.LockedUntil.Equal(escrow.AuditTime(t0.Add(time.Hour))) || len(again.Roles) != 1 || !again.LastLoginAt.Equal(escrow.AuditTime(t0)) {
		t.Fatalf("after update %+v", again)
	}
	if err := s.UpdateUser(ctx, escrow.User{ID: "local:nobody", Username: "x", Source: "local"}); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	if err := s.CreateUser(ctx, escrow.User{ID: "oidc:sub-1", Username: "grace@example.com", Source: "oidc"}); err != nil {
		t.Fatal(err)
	}
	if us := must(s.Users(ctx))(t); len(us) != 2 || us[0].ID != "local:ada" {
		t.Fatalf("users %+v", us)
	}
}

// testSignInCount: concurrent sign-in attempts are each counted, and of
// concurrent attempts against the lockout limit exactly that many get
// through, the last of them setting the lock (parallel guesses used to
// read the same old count and write it back).
func testSignInCount(t *testing.T, s PeopleStore) {
	for _, name := range []string{"ada", "bob", "cy"} {
		if err := s.CreateUser(ctx, escrow.User{ID: "local:" + name, Username: name, Source: "local", Roles: []escrow.Role{escrow.RoleViewer}}); err != nil {
			t.Fatal(err)
		}
	}
	lockUntil := t0.Add(15 * time.Minute)
	concurrently := func(id string, max int) (admitted, locked int) {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for range 20 {
			wg.Go(func() {
				a, l, err := s.CountSignIn(ctx, id, max, t0, lockUntil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("count sign-in of %s: %v", id, err)
				}
				if a {
					admitted++
				}
				if l {
					locked++
				}
			})
		}
		wg.Wait()
		return admitted, locked
	}

	// Under the limit: 20 concurrent attempts, a count of 20.
	if a, l := concurrently("local:ada", 100); a != 20 || l != 0 {
		t.Fatalf("20 attempts under a limit of 100: %d counted, %d locked", a, l)
	}
	if u := must(s.User(ctx, "local:ada"))(t); u.FailedLogins != 20 || !u.LockedUntil.IsZero() {
		t.Fatalf("after 20 attempts: count %d, locked until %v", u.FailedLogins, u.LockedUntil)
	}
	// Against a limit of 5: five get through, the fifth locks the account
	// and starts the count again, fifteen are refused.
	if a, l := concurrently("local:bob", 5); a != 5 || l != 1 {
		t.Fatalf("20 attempts against a limit of 5: %d counted, %d locked; want 5 and 1", a, l)
	}
	bob := must(s.User(ctx, "local:bob"))(t)
	if bob.FailedLogins != 0 || !bob.LockedUntil.Equal(escrow.AuditTime(lockUntil)) {
		t.Fatalf("after the lock: count %d, locked until %v, want 0 and %v", bob.FailedLogins, bob.LockedUntil, lockUntil)
	}
	// While locked: refused and not counted.
	if a, l, err := s.CountSignIn(ctx, "local:bob", 5, lockUntil.Add(-time.Microsecond), lockUntil.Add(time.Hour)); err != nil || a || l {
		t.Fatalf("attempt while locked: counted %v, locked %v, %v", a, l, err)
	}
	// Another attempt's success does not lift this lock.
	if err := s.ResetSignIns(ctx, "local:bob", t0.Add(time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	if u := must(s.User(ctx, "local:bob"))(t); u.FailedLogins != 0 || !u.LockedUntil.Equal(escrow.AuditTime(lockUntil)) || !u.LastLoginAt.Equal(escrow.AuditTime(t0)) {
		t.Fatalf("after another attempt's success: %+v", u)
	}
	// Once the lock has run out: counted again.
	if a, l, err := s.CountSignIn(ctx, "local:bob", 5, lockUntil, lockUntil.Add(time.Hour)); err != nil || !a || l {
		t.Fatalf("attempt after the lock: counted %v, locked %v, %v", a, l, err)
	}
	if u := must(s.User(ctx, "local:bob"))(t); u.FailedLogins != 1 {
		t.Fatalf("count after the lock: %d, want 1", u.FailedLogins)
	}

	// Success starts the count again and records the sign-in; without a
	// time (a one-time password still to change) the last one is kept.
	if err := s.ResetSignIns(ctx, "local:ada", time.Time{}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetSignIns(ctx, "local:ada", time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if u := must(s.User(ctx, "local:ada"))(t); u.FailedLogins != 0 || !u.LockedUntil.IsZero() || !u.LastLoginAt.Equal(escrow.AuditTime(t0.Add(time.Minute))) {
		t.Fatalf("after success: %+v", u)
	}
	// The attempt that set the lock, with the right password, lifts it.
	if a, l, err := s.CountSignIn(ctx, "local:cy", 1, t0, lockUntil); err != nil || !a || !l {
		t.Fatalf("the one attempt of a limit of 1: counted %v, locked %v, %v", a, l, err)
	}
	if err := s.ResetSignIns(ctx, "local:cy", lockUntil, t0); err != nil {
		t.Fatal(err)
	}
	if u := must(s.User(ctx, "local:cy"))(t); !u.LockedUntil.IsZero() || u.FailedLogins != 0 {
		t.Fatalf("own lock not lifted: %+v", u)
	}

	if _, _, err := s.CountSignIn(ctx, "local:nobody", 5, t0, lockUntil); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("count sign-in of a missing user: %v", err)
	}
	if err := s.ResetSignIns(ctx, "local:nobody", time.Time{}, t0); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("reset sign-ins of a missing user: %v", err)
	}
}

func testTokens(t *testing.T, s PeopleStore) {
	h := sha256.Sum256([]byte("fve_secret"))
	tok := escrow.APIToken{ID: "tok_1", Name: "ci", Owner: "local:ada", Roles: []escrow.Role{escrow.RoleViewer}, Hash: h[:], CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour)}
	if err := s.CreateAPIToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	got := must(s.APITokenByHash(ctx, h[:]))(t)
	if got.ID != "tok_1" || got.Roles[0] != escrow.RoleViewer || !got.Active(t0.Add(time.Hour)) || got.Active(t0.Add(25*time.Hour)) {
		t.Fatalf("token %+v", got)
	}
	other := sha256.Sum256([]byte("other"))
	if _, err := s.APITokenByHash(ctx, other[:]); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}
	h2 := sha256.Sum256([]byte("fve_two"))
	if err := s.CreateAPIToken(ctx, escrow.APIToken{ID: "tok_2", Name: "b", Owner: "local:bob", Roles: []escrow.Role{escrow.RoleAdmin}, Hash: h2[:]}); err != nil {
		t.Fatal(err)
	}
	if ts := must(s.APITokens(ctx, "local:ada"))(t); len(ts) != 1 {
		t.Fatalf("tokens of ada %d", len(ts))
	}
	if ts := must(s.APITokens(ctx, ""))(t); len(ts) != 2 {
		t.Fatalf("all tokens %d", len(ts))
	}
	if err := s.TouchAPIToken(ctx, "tok_1", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAPIToken(ctx, "tok_1", t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAPIToken(ctx, "tok_1", t0.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got = must(s.APIToken(ctx, "tok_1"))(t)
	if got.Active(t0.Add(5*time.Minute)) || !got.RevokedAt.Equal(escrow.AuditTime(t0.Add(2*time.Minute))) || got.LastUsedAt.IsZero() {
		t.Fatalf("revoked %+v", got)
	}
	if err := s.RevokeAPIToken(ctx, "tok_none", t0); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("revoke missing: %v", err)
	}
	if err := s.CreateAPIToken(ctx, escrow.APIToken{ID: "tok_3", Owner: "x", Hash: h[:]}); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("duplicate hash: %v", err)
	}
}

func testSessions(t *testing.T, s PeopleStore) {
	id := sha256.Sum256([]byte("session-1"))
	se := escrow.Session{IDHash: id[:], UserID: "local:ada", Roles: []escrow.Role{escrow.RoleHelpdesk}, Source: "local", CSRF: "csrf-1", CreatedAt: t0, ExpiresAt: t0.Add(8 * time.Hour)}
	if err := s.CreateSession(ctx, se); err != nil {
		t.Fatal(err)
	}
	got := must(s.Session(ctx, id[:]))(t)
	if got.UserID != "local:ada" || got.CSRF != "csrf-1" || got.Roles[0] != escrow.RoleHelpdesk || !got.ExpiresAt.Equal(escrow.AuditTime(t0.Add(8*time.Hour))) || !bytes.Equal(got.IDHash, id[:]) {
		t.Fatalf("session %+v", got)
	}
	if err := s.TouchSession(ctx, id[:], t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := must(s.Session(ctx, id[:]))(t); !got.LastSeenAt.Equal(escrow.AuditTime(t0.Add(time.Hour))) {
		t.Fatalf("touch: %v", got.LastSeenAt)
	}
	id2 := sha256.Sum256([]byte("session-2"))
	se.IDHash = id2[:]
	if err := s.CreateSession(ctx, se); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSession(ctx, id[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, id[:]); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}
	if err := s.DeleteUserSessions(ctx, "local:ada"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, id2[:]); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("user sessions not ended: %v", err)
	}
}

var (
	alice = escrow.Actor{Kind: escrow.ActorUser, ID: "local:alice", Name: "Alice"}
	bob   = escrow.Actor{Kind: escrow.ActorUser, ID: "local:bob", Name: "Bob"}
	carol = escrow.Actor{Kind: escrow.ActorUser, ID: "local:carol", Name: "Carol"}
)

func approvalEvent(action string) escrow.Event {
	return escrow.Event{Time: t0, Actor: alice, Action: action, Device: "D1"}
}

func newApproval(t *testing.T, s PeopleStore, id string) escrow.Approval {
	a := escrow.Approval{ID: id, Device: "D1", Requester: alice, Reason: "user locked out", Ticket: "IT-1", CreatedAt: t0, ExpiresAt: t0.Add(30 * time.Minute)}
	if err := s.CreateApproval(ctx, a, approvalEvent("approval.requested")); err != nil {
		t.Fatal(err)
	}
	return a
}

func testApprovals(t *testing.T, s PeopleStore) {
	newApproval(t, s, "ap-1")
	got := must(s.Approval(ctx, "ap-1"))(t)
	if got.State != escrow.ApprovalPending || got.Requester != alice || got.Reason != "user locked out" {
		t.Fatalf("created %+v", got)
	}
	at := t0.Add(5 * time.Minute)
	if _, err := s.DecideApproval(ctx, "ap-1", alice, true, "", at, at.Add(15*time.Minute), approvalEvent("approval.approved")); !errors.Is(err, escrow.ErrForbidden) {
		t.Fatalf("self-approval: %v", err)
	}
	a := must(s.DecideApproval(ctx, "ap-1", bob, true, "ok", at, at.Add(15*time.Minute), approvalEvent("approval.approved")))(t)
	if a.State != escrow.ApprovalApproved || a.Approver != bob || !a.UseBy.Equal(escrow.AuditTime(at.Add(15*time.Minute))) {
		t.Fatalf("approved %+v", a)
	}
	if _, err := s.DecideApproval(ctx, "ap-1", carol, false, "", at, at, approvalEvent("approval.denied")); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("decide twice: %v", err)
	}
	use := at.Add(time.Minute)
	if _, err := s.UseApproval(ctx, "ap-1", bob, "D1", use); !errors.Is(err, escrow.ErrForbidden) {
		t.Fatalf("another operator used it: %v", err)
	}
	if _, err := s.UseApproval(ctx, "ap-1", alice, "D2", use); !errors.Is(err, escrow.ErrForbidden) {
		t.Fatalf("used for another device: %v", err)
	}
	used := must(s.UseApproval(ctx, "ap-1", alice, "D1", use))(t)
	if used.State != escrow.ApprovalUsed {
		t.Fatalf("used %+v", used)
	}
	if _, err := s.UseApproval(ctx, "ap-1", alice, "D1", use); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("reuse: %v", err)
	}
	// Expiry: a pending request past its ExpiresAt cannot be approved; an
	// approval past UseBy cannot be used.
	newApproval(t, s, "ap-2")
	if _, err := s.DecideApproval(ctx, "ap-2", bob, true, "", t0.Add(31*time.Minute), t0.Add(time.Hour), approvalEvent("approval.approved")); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("approve expired: %v", err)
	}
	newApproval(t, s, "ap-3")
	must(s.DecideApproval(ctx, "ap-3", bob, true, "", at, at.Add(15*time.Minute), approvalEvent("approval.approved")))(t)
	if _, err := s.UseApproval(ctx, "ap-3", alice, "D1", at.Add(16*time.Minute)); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("use after window: %v", err)
	}
	newApproval(t, s, "ap-4")
	must(s.DecideApproval(ctx, "ap-4", bob, false, "no", at, time.Time{}, approvalEvent("approval.denied")))(t)
	if _, err := s.UseApproval(ctx, "ap-4", alice, "D1", at); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("use denied: %v", err)
	}
	if _, err := s.Approval(ctx, "nope"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if l := must(s.Approvals(ctx, escrow.ApprovalQuery{States: []escrow.ApprovalState{escrow.ApprovalPending}}))(t); len(l) != 1 || l[0].ID != "ap-2" {
		t.Fatalf("pending %+v", l)
	}
	if l := must(s.Approvals(ctx, escrow.ApprovalQuery{RequesterID: alice.ID}))(t); len(l) != 4 {
		t.Fatalf("by requester %d", len(l))
	}
	// Every creation and decision was audited in its own transaction (4 + 3);
	// a use is audited by the reveal that follows it.
	if n := must(s.CountAudit(ctx, escrow.AuditQuery{}))(t); n != 7 {
		t.Fatalf("%d audit records, want 7", n)
	}
}

func testApprovalOnce(t *testing.T, s PeopleStore) {
	newApproval(t, s, "ap-c")
	at := t0.Add(time.Minute)
	must(s.DecideApproval(ctx, "ap-c", bob, true, "", at, at.Add(15*time.Minute), approvalEvent("approval.approved")))(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.UseApproval(ctx, "ap-c", alice, "D1", at); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, escrow.ErrConflict) {
				t.Errorf("use: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("approval used %d times", wins)
	}
}

func testBlocks(t *testing.T, s PeopleStore) {
	if _, err := s.ActiveBlock(ctx, alice.ID, t0); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("no block: %v", err)
	}
	ev := escrow.Event{Time: t0, Actor: escrow.System, Action: "operator.blocked"}
	if err := s.BlockActor(ctx, escrow.Block{ActorID: alice.ID, Reason: "10 reveals in 24h", CreatedAt: t0, Until: t0.Add(time.Hour)}, ev); err != nil {
		t.Fatal(err)
	}
	if b := must(s.ActiveBlock(ctx, alice.ID, t0.Add(time.Minute)))(t); b.Reason != "10 reveals in 24h" {
		t.Fatalf("block %+v", b)
	}
	if _, err := s.ActiveBlock(ctx, alice.ID, t0.Add(2*time.Hour)); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("expired block still active: %v", err)
	}
	if err := s.BlockActor(ctx, escrow.Block{ActorID: bob.ID, Reason: "admin", CreatedAt: t0}, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ActiveBlock(ctx, bob.ID, t0.Add(1000*time.Hour)); err != nil {
		t.Fatalf("block without end: %v", err)
	}
	if err := s.LiftBlocks(ctx, bob.ID, carol, t0.Add(time.Hour), escrow.Event{Time: t0, Actor: carol, Action: "operator.unblocked"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ActiveBlock(ctx, bob.ID, t0.Add(2*time.Hour)); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("lifted block active: %v", err)
	}
	if err := s.LiftBlocks(ctx, "nobody", carol, t0, ev); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("lift without block: %v", err)
	}
	if n := must(s.CountAudit(ctx, escrow.AuditQuery{}))(t); n != 3 {
		t.Fatalf("%d audit records, want 3", n)
	}
}

func testNotifications(t *testing.T, s PeopleStore) {
	var ids []int64
	for i := 0; i < 3; i++ {
		n := must(s.EnqueueNotification(ctx, escrow.Notification{Channel: "email", Target: fmt.Sprint("owner", i, "@example.com"), Subject: "key revealed", Body: "body", AuditSeq: int64(i + 1)}))(t)
		if n.ID == 0 || n.State != escrow.NotificationPending {
			t.Fatalf("enqueued %+v", n)
		}
		ids = append(ids, n.ID)
	}
	now := time.Now()
	got := must(s.ClaimNotifications(ctx, "r1", now, now.Add(time.Minute), 10))(t)
	if len(got) != 3 {
		t.Fatalf("claimed %d", len(got))
	}
	if again := must(s.ClaimNotifications(ctx, "r2", now, now.Add(time.Minute), 10))(t); len(again) != 0 {
		t.Fatalf("leased notifications claimed again: %d", len(again))
	}
	if err := s.FinishNotification(ctx, ids[0], true, "", time.Time{}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishNotification(ctx, ids[1], false, "smtp: connection refused", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishNotification(ctx, ids[2], false, "webhook: 500", time.Time{}, now); err != nil {
		t.Fatal(err)
	}
	failed := must(s.Notifications(ctx, escrow.NotificationQuery{States: []escrow.NotificationState{escrow.NotificationFailed}}))(t)
	if len(failed) != 1 || failed[0].LastError != "webhook: 500" || failed[0].Attempts != 1 {
		t.Fatalf("failed %+v", failed)
	}
	pending := must(s.Notifications(ctx, escrow.NotificationQuery{States: []escrow.NotificationState{escrow.NotificationPending}}))(t)
	if len(pending) != 1 || pending[0].ID != ids[1] || pending[0].LastError == "" {
		t.Fatalf("pending %+v", pending)
	}
	if later := must(s.ClaimNotifications(ctx, "r3", now.Add(30*time.Minute), now.Add(31*time.Minute), 10))(t); len(later) != 0 {
		t.Fatal("claimed before its next attempt")
	}
	if due := must(s.ClaimNotifications(ctx, "r3", now.Add(2*time.Hour), now.Add(3*time.Hour), 10))(t); len(due) != 1 {
		t.Fatal("retry not claimable when due")
	}
	if all := must(s.Notifications(ctx, escrow.NotificationQuery{}))(t); len(all) != 3 || all[0].ID != ids[2] {
		t.Fatalf("all %+v", all)
	}
}

func testCountAudit(t *testing.T, s PeopleStore) {
	for i := 0; i < 5; i++ {
		actor := alice
		if i >= 3 {
			actor = bob
		}
		if _, err := s.AppendAudit(ctx, escrow.Event{Time: t0.Add(time.Duration(i) * time.Hour), Actor: actor, Action: escrow.ActionKeyRevealed, Device: "D1"}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		q    escrow.AuditQuery
		want int
	}{
		{escrow.AuditQuery{}, 5},
		{escrow.AuditQuery{ActorID: alice.ID}, 3},
		{escrow.AuditQuery{ActorID: alice.ID, Since: t0.Add(90 * time.Minute)}, 1},
		{escrow.AuditQuery{Device: "D1", Action: escrow.ActionKeyRevealed, Limit: 1}, 5},
		{escrow.AuditQuery{Device: "D2"}, 0},
	}
	for _, tc := range cases {
		if got := must(s.CountAudit(ctx, tc.q))(t); got != tc.want {
			t.Errorf("CountAudit(%+v) = %d, want %d", tc.q, got, tc.want)
		}
	}
}
