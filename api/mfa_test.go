package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// totpOpts are the parameters an authenticator app reads from the
// provisioning URI fvescrow hands out (RFC 6238 defaults).
var totpOpts = totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// totpAt is the code an authenticator app shows at t.
func totpAt(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCodeCustom(secret, at, totpOpts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enrolTOTP creates a local account with TOTP through POST /api/v1/users,
// as an admin does, and returns the answer with the TOTP secret read from
// the provisioning URI.
func enrolTOTP(t testing.TB, s *apitest.Server, username string, roles ...string) (wire.UserCreated, string) {
	t.Helper()
	nu := decode[wire.UserCreated](t, call(t, s, bearer("admin", s.StaticToken), http.MethodPost, "/api/v1/users",
		wire.UserRequest{Username: username, Roles: roles, TOTP: true}), http.StatusCreated)
	if !nu.User.TOTP || nu.TOTPURI == "" || nu.OneTimePassword == "" {
		t.Fatalf("user created without TOTP: %+v", nu.User)
	}
	key, err := otp.NewKeyFromURL(nu.TOTPURI)
	if err != nil {
		t.Fatal(err)
	}
	if key.Type() != "totp" || key.Issuer() != "fvescrow" || key.AccountName() != username || key.Secret() == "" {
		t.Fatalf("provisioning URI: type %q issuer %q account %q", key.Type(), key.Issuer(), key.AccountName())
	}
	return nu, key.Secret()
}

func login(t testing.TB, s *apitest.Server, req wire.LoginRequest) answer {
	t.Helper()
	return call(t, s, cred{}, http.MethodPost, "/api/v1/login", req)
}

// refusedSignIn checks a sign-in was refused as every refused sign-in is:
// 401, the one stable message that does not say which part was wrong, and
// no token.
func refusedSignIn(t testing.TB, what string, a answer) {
	t.Helper()
	var e wire.Error
	_ = json.Unmarshal(a.body, &e)
	if a.status != http.StatusUnauthorized || e.Error.Code != "unauthenticated" || e.Error.Message != "authentication required" {
		t.Errorf("%s: HTTP %d %+v, want 401 unauthenticated \"authentication required\"", what, a.status, e.Error)
	}
	if strings.Contains(string(a.body), `"token"`) || strings.Contains(string(a.body), "fve_") {
		t.Errorf("%s: a refused sign-in carries a token", what)
	}
}

// TestTOTPSignIn is multi-factor sign-in of a local account over the real
// API on real stores: enrolment hands out a provisioning URI an
// authenticator app reads; the right code signs in; a wrong, missing or
// malformed code is refused with the same answer as a wrong password; a
// code that already signed in is refused the second time (RFC 6238 §5.2),
// and so is an older code still inside the clock-skew window; of
// concurrent sign-ins with one code, exactly one succeeds.
func TestTOTPSignIn(t *testing.T) {
	backends(t, apitest.Options{}, func(t *testing.T, s *apitest.Server) {
		ctx := context.Background()
		nu, secret := enrolTOTP(t, s, "tess", "helpdesk")
		stored, err := s.Meta.User(ctx, nu.User.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !stored.TOTPEnabled || !stored.MustChangePassword {
			t.Fatalf("stored user: TOTP %v, must change password %v", stored.TOTPEnabled, stored.MustChangePassword)
		}
		// The secret is kept in the secret store, never in the user record.
		if sec, _, err := s.Secrets.Get(ctx, escrow.SecretRef{Kind: escrow.KindTOTP, Owner: nu.User.ID}, 0); err != nil || string(sec) != secret {
			t.Fatalf("TOTP secret in the secret store: %v (matches the URI: %v)", err, string(sec) == secret)
		}

		// The server's clock stands still at t0, so that which codes are
		// inside the skew window does not depend on when a 30-second step
		// happens to end during the test.
		t0 := time.Now()
		clock := func() time.Time { return t0 }
		s.Local.WithClock(clock)
		code := totpAt(t, secret, t0)
		newPW := "tess-new-password-" + auth.NewSecret("")[:8]

		// The one-time password alone is not enough: no code, then a wrong
		// code, are refused before anything about the password is said.
		refusedSignIn(t, "one-time password without a code", login(t, s, wire.LoginRequest{Username: "tess", Password: nu.OneTimePassword, NewPassword: newPW}))
		refusedSignIn(t, "one-time password with a wrong code", login(t, s, wire.LoginRequest{Username: "tess", Password: nu.OneTimePassword,
			TOTP: wrongCode(t, secret, t0), NewPassword: newPW}))
		// The right code without a new password: change it first (the
		// code is not used up by that answer, as the CLI sends it again).
		if a := login(t, s, wire.LoginRequest{Username: "tess", Password: nu.OneTimePassword, TOTP: code}); a.status != http.StatusForbidden ||
			!strings.Contains(string(a.body), "change your one-time password first") {
			t.Fatalf("one-time password and code, no new password: HTTP %d %s", a.status, a.body)
		}
		first := decode[wire.LoginResponse](t, login(t, s, wire.LoginRequest{Username: "tess", Password: nu.OneTimePassword, TOTP: code, NewPassword: newPW}), http.StatusOK)
		if first.Token == "" || first.Me.ID != nu.User.ID {
			t.Fatalf("first sign-in: %+v", first.Me)
		}
		if a := call(t, s, bearer("tess", first.Token), http.MethodGet, "/api/v1/me", nil); a.status != http.StatusOK {
			t.Fatalf("the token of the TOTP sign-in: HTTP %d", a.status)
		}

		// The same code again, with the right password, within its window:
		// replayed, refused.
		refusedSignIn(t, "replayed code", login(t, s, wire.LoginRequest{Username: "tess", Password: newPW, TOTP: code}))
		// A wrong code, a missing code, a malformed code: refused alike.
		refusedSignIn(t, "wrong code", login(t, s, wire.LoginRequest{Username: "tess", Password: newPW, TOTP: wrongCode(t, secret, t0)}))
		refusedSignIn(t, "missing code", login(t, s, wire.LoginRequest{Username: "tess", Password: newPW}))
		refusedSignIn(t, "malformed code", login(t, s, wire.LoginRequest{Username: "tess", Password: newPW, TOTP: "12345"}))

		// The next code (the authenticator's next step, inside the skew
		// window) signs in once.
		next := totpAt(t, secret, t0.Add(30*time.Second))
		second := decode[wire.LoginResponse](t, login(t, s, wire.LoginRequest{Username: "tess", Password: newPW, TOTP: " " + next + " "}), http.StatusOK)
		if second.Token == "" || second.Token == first.Token {
			t.Fatal("the second sign-in got no new token")
		}
		refusedSignIn(t, "replayed next code", login(t, s, wire.LoginRequest{Username: "tess", Password: newPW, TOTP: next}))
		// The used step is kept in the store, not in this process: a
		// restarted server (a new LocalAccounts on the same stores) refuses
		// the code too.
		restarted := auth.NewLocalAccounts(s.Meta, s.Meta, s.Secrets, s.Meta).WithClock(clock)
		if _, err := restarted.Verify(ctx, "tess", newPW, next, ""); !errors.Is(err, escrow.ErrUnauthenticated) {
			t.Errorf("replayed code after a restart: %v, want unauthenticated", err)
		}
		// An older code, still inside the skew window, after a newer one
		// signed in: refused too.
		refusedSignIn(t, "older code after a newer one", login(t, s, wire.LoginRequest{Username: "tess", Password: newPW, TOTP: totpAt(t, secret, t0.Add(-30*time.Second))}))

		// A wrong password with the right code is the same refusal.
		refusedSignIn(t, "wrong password, right code", login(t, s, wire.LoginRequest{Username: "tess", Password: "not-the-password", TOTP: totpAt(t, secret, t0.Add(30*time.Second))}))

		// The audit log has each refusal and both sign-ins, and never a code.
		recs, err := s.Meta.AuditRecords(ctx, escrow.AuditQuery{ActorID: nu.User.ID, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, r := range recs {
			count[r.Action]++
			if r.Action == auth.ActionLoginFailed {
				count["why: "+r.Detail["why"]]++
			}
			if r.Action == auth.ActionLoginSucceeded && r.Detail["totp"] != "true" {
				t.Errorf("login.succeeded without totp=true: %v", r.Detail)
			}
			for _, v := range r.Detail {
				if strings.Contains(v, code) || strings.Contains(v, next) {
					t.Errorf("audit record %d carries a TOTP code", r.Seq)
				}
			}
		}
		if count[auth.ActionLoginSucceeded] != 2 || count[auth.ActionLoginFailed] != 10 {
			t.Errorf("audit: %d sign-ins, %d refusals; want 2 and 10", count[auth.ActionLoginSucceeded], count[auth.ActionLoginFailed])
		}
		// Replays are told apart for whoever reads the audit log (never in
		// the answer): the replayed, the replayed next, the restarted and
		// the older code.
		if n := count["why: TOTP code already used"]; n != 4 {
			t.Errorf("audit: %d refusals as a used code, want 4 (%v)", n, count)
		}

		// Concurrent sign-ins with one fresh code: exactly one succeeds.
		nu2, secret2 := enrolTOTP(t, s, "tom", "viewer")
		pw2 := "tom-new-password-" + auth.NewSecret("")[:8]
		t1 := time.Now()
		decode[wire.LoginResponse](t, login(t, s, wire.LoginRequest{Username: "tom", Password: nu2.OneTimePassword, TOTP: totpAt(t, secret2, t1), NewPassword: pw2}), http.StatusOK)
		race := totpAt(t, secret2, t1.Add(30*time.Second))
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			statuses = map[int]int{}
		)
		for range 4 {
			wg.Go(func() {
				a := login(t, s, wire.LoginRequest{Username: "tom", Password: pw2, TOTP: race})
				mu.Lock()
				statuses[a.status]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if statuses[http.StatusOK] != 1 || statuses[http.StatusUnauthorized] != 3 {
			t.Errorf("4 concurrent sign-ins with one code: %v, want one 200 and three 401", statuses)
		}
	})
}

// wrongCode is a six-digit code that is none of the codes valid around at.
func wrongCode(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	valid := map[string]bool{}
	for i := -2; i <= 2; i++ {
		valid[totpAt(t, secret, at.Add(time.Duration(i)*30*time.Second))] = true
	}
	for i := 10; ; i++ {
		if c := totpAt(t, secret, at.Add(time.Duration(i)*time.Hour)); !valid[c] {
			return c
		}
	}
}

// TestPasswordsStoredAsArgon2id: a new account's one-time password and the
// password that replaces it are stored as argon2id PHC strings with a
// random salt, never in the clear, and only the newest one signs in.
func TestPasswordsStoredAsArgon2id(t *testing.T) {
	backends(t, apitest.Options{}, func(t *testing.T, s *apitest.Server) {
		ctx := context.Background()
		mk := func(name string) wire.UserCreated {
			return decode[wire.UserCreated](t, call(t, s, bearer("admin", s.StaticToken), http.MethodPost, "/api/v1/users",
				wire.UserRequest{Username: name, Roles: []string{"viewer"}}), http.StatusCreated)
		}
		check := func(what, hash, plaintext string) {
			t.Helper()
			if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") || len(strings.Split(hash, "$")) != 6 {
				t.Errorf("%s: stored hash %q is not an argon2id PHC string with the documented parameters", what, hash)
			}
			if plaintext == "" || strings.Contains(hash, plaintext) {
				t.Errorf("%s: the password appears in its stored hash", what)
			}
			if ok, err := auth.VerifyPassword(hash, plaintext); err != nil || !ok {
				t.Errorf("%s: the stored hash does not verify the password: %v %v", what, ok, err)
			}
		}
		ann := mk("pat")
		u, err := s.Meta.User(ctx, ann.User.ID)
		if err != nil {
			t.Fatal(err)
		}
		check("one-time password", u.PasswordHash, ann.OneTimePassword)

		// The same password hashes differently for another account (salt).
		other := mk("pam")
		u2, err := s.Meta.User(ctx, other.User.ID)
		if err != nil {
			t.Fatal(err)
		}
		if u2.PasswordHash == u.PasswordHash || strings.Split(u2.PasswordHash, "$")[4] == strings.Split(u.PasswordHash, "$")[4] {
			t.Error("two accounts share a salt")
		}

		newPW := "pat-chose-this-" + auth.NewSecret("")[:10]
		decode[wire.LoginResponse](t, login(t, s, wire.LoginRequest{Username: "pat", Password: ann.OneTimePassword, NewPassword: newPW}), http.StatusOK)
		after, err := s.Meta.User(ctx, ann.User.ID)
		if err != nil {
			t.Fatal(err)
		}
		if after.PasswordHash == u.PasswordHash || after.MustChangePassword {
			t.Fatal("the one-time password was not replaced")
		}
		check("chosen password", after.PasswordHash, newPW)
		if ok, _ := auth.VerifyPassword(after.PasswordHash, ann.OneTimePassword); ok {
			t.Error("the one-time password still verifies")
		}
		refusedSignIn(t, "the replaced one-time password", login(t, s, wire.LoginRequest{Username: "pat", Password: ann.OneTimePassword}))
		decode[wire.LoginResponse](t, login(t, s, wire.LoginRequest{Username: "pat", Password: newPW}), http.StatusOK)

		// Nowhere in the account's row as stored, read by SQL either.
		var sqlHash string
		if err := s.Meta.DB().QueryRowContext(ctx, `SELECT password_hash FROM users WHERE username = 'pat'`).Scan(&sqlHash); err != nil {
			t.Fatal(err)
		}
		if sqlHash != after.PasswordHash {
			t.Error("the users row holds another hash than the store returns")
		}
		check("the users row, by SQL", sqlHash, newPW)
	})
}
