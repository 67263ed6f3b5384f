package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	users       escrow.UserStore
	sessions    escrow.SessionStore
	secrets     Secrets
	audit       Auditor
	now         func() time.Time
	maxFailures int
	lockFor     time.Duration
	dummyHash   string
}

// NewLocalAccounts returns the local account service.
func NewLocalAccounts(users escrow.UserStore, sessions escrow.SessionStore, secrets Secrets, audit Auditor) *LocalAccounts {
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
	if now.Before(u.LockedUntil) {
		return escrow.User{}, l.fail(ctx, username, "locked")
	}
	ok, err := VerifyPassword(u.PasswordHash, password)
	if err != nil {
		return escrow.User{}, err
	}
	if ok && u.TOTPEnabled {
		ok, err = l.checkTOTP(ctx, u, code, now)
		if err != nil {
			return escrow.User{}, err
		}
	}
	if !ok {
		u.FailedLogins++
		why := "bad password or code"
		if u.FailedLogins >= l.maxFailures {
			u.LockedUntil, u.FailedLogins, why = now.Add(l.lockFor), 0, "bad password or code; account locked"
		}
		if err := l.users.UpdateUser(ctx, u); err != nil {
			return escrow.User{}, err
		}
		return escrow.User{}, l.fail(ctx, username, why)
	}
	if u.MustChangePassword {
		if newPassword == "" {
			return escrow.User{}, ErrPasswordChange
		}
		if err := l.setPassword(ctx, &u, newPassword); err != nil {
			return escrow.User{}, err
		}
	}
	u.FailedLogins, u.LastLoginAt = 0, now
	if err := l.users.UpdateUser(ctx, u); err != nil {
		return escrow.User{}, err
	}
	_, err = l.audit.AppendAudit(ctx, escrow.Event{Time: now, Actor: escrow.Actor{Kind: escrow.ActorUser, ID: u.ID, Name: u.DisplayName},
		Action: ActionLoginSucceeded, Detail: map[string]string{"method": "local", "totp": fmt.Sprint(u.TOTPEnabled)}})
	return u, err
}

func totpRef(userID string) escrow.SecretRef {
	return escrow.SecretRef{Kind: escrow.KindTOTP, Owner: userID}
}

func (l *LocalAccounts) checkTOTP(ctx context.Context, u escrow.User, code string, now time.Time) (bool, error) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return false, nil
	}
	secret, _, err := l.secrets.Get(ctx, totpRef(u.ID), 0)
	if err != nil {
		return false, err
	}
	defer clear(secret)
	return totp.ValidateCustom(code, string(secret), now, totp.ValidateOpts{Period: 30, Skew: 1, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
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
	return l.users.UpdateUser(ctx, u)
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
