package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Audit actions of sign-in and credentials.
const (
	ActionLoginSucceeded  = "login.succeeded"
	ActionLoginFailed     = "login.failed"
	ActionPasswordChanged = "password.changed"
	ActionUserCreated     = "user.created"
	ActionUserUpdated     = "user.updated"
	ActionTokenCreated    = "token.created"
	ActionTokenRevoked    = "token.revoked"
	ActionLogout          = "logout"
)

// Auditor appends audit events.
type Auditor interface {
	AppendAudit(ctx context.Context, e escrow.Event) (escrow.AuditRecord, error)
}

// Secrets holds TOTP secrets.
type Secrets interface {
	escrow.SecretStore
}

// LocalAccounts signs in local users (argon2id passwords, optional TOTP) and
// manages them. Repeated failures lock an account for a while.
type LocalAccounts struct {
	users       Users
	sessions    escrow.SessionStore
	secrets     Secrets
	audit       Auditor
	now         func() time.Time
	maxFailures int
	lockFor     time.Duration
	dummyHash   string

	// stepMu makes checking and recording a TOTP code's time step one
	// step for the concurrent sign-ins of this process.
	stepMu sync.Mutex
}

// Users is what local accounts need of the metadata store: the users; a
// sign-in count kept on the current row (one statement, so concurrent
// guesses through any replica cannot lose a count); and settings, where the
// last TOTP time step that signed each user in is kept (RFC 6238 §5.2: a
// code is accepted once, also after a restart or on another replica).
type Users interface {
	escrow.UserStore
	escrow.SignInCounter
	Setting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
}

// NewLocalAccounts returns the local account service.
func NewLocalAccounts(users Users, sessions escrow.SessionStore, secrets Secrets, audit Auditor) *LocalAccounts {
	dummy, _ := HashPassword("not a password of anyone")
	return &LocalAccounts{users: users, sessions: sessions, secrets: secrets, audit: audit, now: time.Now, maxFailures: 5, lockFor: 15 * time.Minute, dummyHash: dummy}
}

// WithClock sets the clock (tests).
func (l *LocalAccounts) WithClock(now func() time.Time) *LocalAccounts { l.now = now; return l }

// LocalID is a local user's ID.
func LocalID(username string) string { return "local:" + username }

// ErrPasswordChange: the account signs in with a one-time password that must
// be changed first.
var ErrPasswordChange = fmt.Errorf("%w: change your one-time password first", ErrForbidden)

func (l *LocalAccounts) fail(ctx context.Context, username, why string) error {
	_, _ = l.audit.AppendAudit(ctx, escrow.Event{Time: l.now(), Actor: escrow.Actor{Kind: escrow.ActorUser, ID: LocalID(username)},
		Action: ActionLoginFailed, Detail: map[string]string{"why": why}})
	return fmt.Errorf("%w: wrong user name, password or code", ErrUnauthenticated)
}

// Verify checks a local sign-in. A one-time password is accepted only with a
// new password to replace it (ErrPasswordChange otherwise).
func (l *LocalAccounts) Verify(ctx context.Context, username, password, code, newPassword string) (escrow.User, error) {
	now := l.now()
	u, err := l.users.User(ctx, LocalID(username))
	if errors.Is(err, escrow.ErrNotFound) || (err == nil && u.Source != "local") {
		_, _ = VerifyPassword(l.dummyHash, password) // the same work as for a real account
		return escrow.User{}, l.fail(ctx, username, "unknown user")
	}
	if err != nil {
		return escrow.User{}, err
	}
	if u.Disabled {
		return escrow.User{}, l.fail(ctx, username, "disabled")
	}
	// The attempt is counted before its password is checked, against the
	// lock of the current row, not of u: of any number of concurrent
	// guesses, no more than maxFailures are checked before the lock, and
	// the one that reaches it sets the lock.
	admitted, lockedNow, err := l.users.CountSignIn(ctx, u.ID, l.maxFailures, now, now.Add(l.lockFor))
	if err != nil {
		return escrow.User{}, err
	}
	if !admitted {
		return escrow.User{}, l.fail(ctx, username, "locked")
	}
	ok, err := VerifyPassword(u.PasswordHash, password)
	if err != nil {
		return escrow.User{}, err
	}
	replayed := false
	if ok && u.TOTPEnabled {
		// The code is used up only by a sign-in that succeeds: not by the
		// answer asking for a new password first (the CLI and the web form
		// send the same code again with the new password).
		use := !u.MustChangePassword || (newPassword != "" && CheckNewPassword(newPassword) == nil)
		ok, replayed, err = l.checkTOTP(ctx, u, code, now, use)
		if err != nil {
			return escrow.User{}, err
		}
	}
	if !ok {
		// Already counted.
		why := "bad password or code"
		if replayed {
			why = "TOTP code already used"
		}
		if lockedNow {
			why = "bad password or code; account locked"
		}
		return escrow.User{}, l.fail(ctx, username, why)
	}
	// The right credentials start the count again, and lift the lock if
	// it was this attempt that set it (the maxFailures-th, not a failure).
	var lift time.Time
	if lockedNow {
		lift = now.Add(l.lockFor)
	}
	if u.MustChangePassword {
		err := ErrPasswordChange
		if newPassword != "" {
			if err = l.setPassword(ctx, &u, newPassword); err == nil {
				err = l.savePassword(ctx, u)
			}
		}
		if err != nil {
			if rerr := l.users.ResetSignIns(ctx, u.ID, lift, time.Time{}); rerr != nil {
				return escrow.User{}, rerr
			}
			return escrow.User{}, err
		}
	}
	if err := l.users.ResetSignIns(ctx, u.ID, lift, now); err != nil {
		return escrow.User{}, err
	}
	u.FailedLogins, u.LastLoginAt = 0, now
	_, err = l.audit.AppendAudit(ctx, escrow.Event{Time: now, Actor: escrow.Actor{Kind: escrow.ActorUser, ID: u.ID, Name: u.DisplayName},
		Action: ActionLoginSucceeded, Detail: map[string]string{"method": "local", "totp": fmt.Sprint(u.TOTPEnabled)}})
	return u, err
}

func totpRef(userID string) escrow.SecretRef {
	return escrow.SecretRef{Kind: escrow.KindTOTP, Owner: userID}
}

// TOTP parameters: RFC 6238 defaults, one step of clock skew either way.
const (
	totpPeriod = 30
	totpSkew   = 1
)

func totpStepName(userID string) string { return "totp-last-step/" + userID }

// lastTOTPStep is the time step of the last code that signed userID in (0:
// none yet).
func (l *LocalAccounts) lastTOTPStep(ctx context.Context, userID string) (int64, error) {
	v, err := l.users.Setting(ctx, totpStepName(userID))
	if errors.Is(err, escrow.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("last TOTP step of %s: %w", userID, err)
	}
	return n, nil
}

// checkTOTP reports whether code is u's code for a time step within the
// skew of now that is later than the last one that signed u in: a code is
// good once (RFC 6238 §5.2), and so is no older code once a newer one was
// used. replayed is a code that was good but is used up. With use, the
// step of an accepted code is recorded as the last one.
//
// Concurrent sign-ins through this process are serialised; sign-ins racing
// through two replicas within the same instant are not (the settings have
// no compare-and-swap), but a replay after either has answered is refused.
func (l *LocalAccounts) checkTOTP(ctx context.Context, u escrow.User, code string, now time.Time, use bool) (ok, replayed bool, err error) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return false, false, nil
	}
	secret, _, err := l.secrets.Get(ctx, totpRef(u.ID), 0)
	if err != nil {
		return false, false, err
	}
	defer clear(secret)
	l.stepMu.Lock()
	defer l.stepMu.Unlock()
	last, err := l.lastTOTPStep(ctx, u.ID)
	if err != nil {
		return false, false, err
	}
	opts := totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
	cur := now.Unix() / totpPeriod
	for step := cur - totpSkew; step <= cur+totpSkew; step++ {
		want, err := totp.GenerateCodeCustom(string(secret), time.Unix(step*totpPeriod, 0).UTC(), opts)
		if err != nil {
			return false, false, err
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) != 1 {
			continue
		}
		if step <= last {
			replayed = true
			continue // the same code may stand for a later step too
		}
		if use {
			if err := l.users.PutSetting(ctx, totpStepName(u.ID), []byte(strconv.FormatInt(step, 10))); err != nil {
				return false, false, err
			}
		}
		return true, false, nil
	}
	return false, replayed, nil
}

func (l *LocalAccounts) setPassword(ctx context.Context, u *escrow.User, password string) error {
	if err := CheckNewPassword(password); err != nil {
		return err
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	u.PasswordHash, u.MustChangePassword = h, false
	if err := l.sessions.DeleteUserSessions(ctx, u.ID); err != nil {
		return err
	}
	_, err = l.audit.AppendAudit(ctx, escrow.Event{Time: l.now(), Actor: escrow.Actor{Kind: escrow.ActorUser, ID: u.ID}, Action: ActionPasswordChanged})
	return err
}

// ChangePassword changes a local user's password after checking the old
// one, and ends their other sessions.
func (l *LocalAccounts) ChangePassword(ctx context.Context, userID, old, new string) error {
	u, err := l.users.User(ctx, userID)
	if err != nil {
		return err
	}
	if ok, err := VerifyPassword(u.PasswordHash, old); err != nil || !ok {
		return fmt.Errorf("%w: the current password is wrong", ErrForbidden)
	}
	if err := l.setPassword(ctx, &u, new); err != nil {
		return err
	}
	return l.savePassword(ctx, u)
}

// savePassword writes u's new password onto the user's record as it is now,
// not as it was read before the password hashing: the sign-in count and
// lock (and an admin's changes) made meanwhile are kept.
func (l *LocalAccounts) savePassword(ctx context.Context, u escrow.User) error {
	cur, err := l.users.User(ctx, u.ID)
	if err != nil {
		return err
	}
	cur.PasswordHash, cur.MustChangePassword = u.PasswordHash, u.MustChangePassword
	return l.users.UpdateUser(ctx, cur)
}

// NewUser is what CreateUser returns once: the one-time password and, with
// TOTP, the provisioning URI for an authenticator app.
type NewUser struct {
	User            escrow.User
	OneTimePassword string
	TOTPURI         string
}

// CreateUser makes a local account with a one-time password.
func (l *LocalAccounts) CreateUser(ctx context.Context, by escrow.Actor, username, displayName, email string, roles []escrow.Role, withTOTP bool) (NewUser, error) {
	if err := validUsername(username); err != nil {
		return NewUser{}, err
	}
	if len(roles) == 0 {
		return NewUser{}, fmt.Errorf("%w: at least one role is required", ErrBadRequest)
	}
	for _, r := range roles {
		if !r.Valid() {
			return NewUser{}, fmt.Errorf("%w: unknown role %q", ErrBadRequest, r)
		}
	}
	pw := OneTimePassword()
	h, err := HashPassword(pw)
	if err != nil {
		return NewUser{}, err
	}
	u := escrow.User{ID: LocalID(username), Username: username, DisplayName: displayName, Email: email, Source: "local",
		Roles: roles, PasswordHash: h, MustChangePassword: true}
	out := NewUser{OneTimePassword: pw}
	if withTOTP {
		key, err := totp.Generate(totp.GenerateOpts{Issuer: "fvescrow", AccountName: username})
		if err != nil {
			return NewUser{}, err
		}
		if _, err := l.secrets.Put(ctx, totpRef(u.ID), []byte(key.Secret()), 0, escrow.SecretMeta{"kind": string(escrow.KindTOTP)}); err != nil {
			return NewUser{}, err
		}
		u.TOTPEnabled, out.TOTPURI = true, key.URL()
	}
	if err := l.users.CreateUser(ctx, u); err != nil {
		return NewUser{}, err
	}
	out.User = u
	roleNames := make([]string, len(roles))
	for i, r := range roles {
		roleNames[i] = string(r)
	}
	_, err = l.audit.AppendAudit(ctx, escrow.Event{Time: l.now(), Actor: by, Action: ActionUserCreated,
		Detail: map[string]string{"user": u.ID, "roles": strings.Join(roleNames, ","), "totp": fmt.Sprint(withTOTP)}})
	return out, err
}

func validUsername(s string) error {
	if len(s) < 2 || len(s) > 64 {
		return fmt.Errorf("%w: a user name is 2 to 64 characters", ErrBadRequest)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%w: a user name uses a-z, 0-9, '.', '-' and '_'", ErrBadRequest)
		}
	}
	return nil
}
