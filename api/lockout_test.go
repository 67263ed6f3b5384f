package api_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
)

// TestLockout: 20 wrong passwords sent at once to a local account over the
// real API, on real stores, lock it as 5 sent one after another do: no
// more than 5 of the guesses are checked, the account is locked for 15
// minutes, and then its right password is refused with the same answer as
// a wrong one. (Each sign-in used to read the failure count, add one and
// write it back: parallel guesses all read the same old count, and the
// account never locked.)
func TestLockout(t *testing.T) {
	backends(t, apitest.Options{}, func(t *testing.T, s *apitest.Server) {
		ctx := context.Background()
		u := s.MustUser(t, "lou", escrow.RoleViewer)
		start := time.Now()

		answers := make([]answer, 20)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() {
				answers[i] = login(t, s, wire.LoginRequest{Username: "lou", Password: fmt.Sprintf("guess-%02d-%s", i, auth.NewSecret("")[:8])})
			})
		}
		wg.Wait()
		for i, a := range answers {
			refusedSignIn(t, fmt.Sprintf("wrong password %d", i), a)
		}

		// Locked: the right password is refused alike, and signs in no one.
		refusedSignIn(t, "right password while locked", login(t, s, wire.LoginRequest{Username: "lou", Password: u.Password}))

		stored, err := s.Meta.User(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if lu := stored.LockedUntil; lu.Before(start.Add(15*time.Minute).Add(-time.Second)) || lu.After(time.Now().Add(15*time.Minute)) {
			t.Errorf("locked until %v, want 15 minutes after the guesses (%v)", lu, start.Add(15*time.Minute))
		}

		// The audit log: 21 refusals, of which exactly 5 checked a
		// password (the fifth locked the account); the rest were refused
		// as locked before their password was looked at.
		recs, err := s.Meta.AuditRecords(ctx, escrow.AuditQuery{ActorID: u.ID, Since: start, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		why := map[string]int{}
		for _, r := range recs {
			switch r.Action {
			case auth.ActionLoginFailed:
				why[r.Detail["why"]]++
			case auth.ActionLoginSucceeded:
				t.Errorf("a sign-in succeeded: %+v", r)
			}
		}
		want := map[string]int{"bad password or code": 4, "bad password or code; account locked": 1, "locked": 16}
		if fmt.Sprint(why) != fmt.Sprint(want) {
			t.Errorf("refusals in the audit log by reason: %v, want %v", why, want)
		}
	})
}
