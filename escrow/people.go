package escrow

import (
	"context"
	"slices"
	"time"
)

// Role is what a person may do. Authorization maps roles to permissions in
// one declared table (api/auth); the core only names them.
type Role string

const (
	RoleAdmin    Role = "admin"    // everything, including users, tokens and settings
	RoleHelpdesk Role = "helpdesk" // search devices, request reveals and approvals
	RoleApprover Role = "approver" // approve or deny other people's reveal requests
	RoleAuditor  Role = "auditor"  // read and export the audit log, never keys
	RoleViewer   Role = "viewer"   // device state only, never keys
	RoleAgent    Role = "agent"    // automation on the Macs: the key-regeneration list only
)

// AllRoles lists every role, for validation and the authorization matrix.
var AllRoles = []Role{RoleAdmin, RoleHelpdesk, RoleApprover, RoleAuditor, RoleViewer, RoleAgent}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(AllRoles, r) }

// User is a person who signs in: a local account (password, optional TOTP)
// or someone from the identity provider (recorded at first sign-in).
type User struct {
	ID           string // "local:<name>" or "oidc:<subject>"
	Username     string
	DisplayName  string
	Email        string
	Source       string // "local" or "oidc"
	Roles        []Role
	Groups       []string
	PasswordHash string // argon2id PHC string; never a password
	TOTPEnabled  bool   // the TOTP secret lives in the SecretStore (KindTOTP)
	// MustChangePassword is set on one-time passwords (first admin, new users).
	MustChangePassword bool
	Disabled           bool
	FailedLogins       int
	LockedUntil        time.Time
	CreatedAt          time.Time
	UpdatedAt          time.Time
	LastLoginAt        time.Time
}

// HasRole reports whether u has r.
func (u User) HasRole(r Role) bool { return slices.Contains(u.Roles, r) }

// UserStore keeps people.
type UserStore interface {
	// CreateUser stores a new user; ErrConflict if the ID exists.
	CreateUser(ctx context.Context, u User) error
	// User returns a user by ID, or ErrNotFound.
	User(ctx context.Context, id string) (User, error)
	// UpdateUser replaces a user's record.
	UpdateUser(ctx context.Context, u User) error
	// Users lists every user, by ID.
	Users(ctx context.Context) ([]User, error)
}

// SignInCounter keeps the lockout count of local sign-ins: each call is one
// statement on the user's current row, so concurrent sign-ins neither lose
// a count nor go on past a lock another one has just set.
type SignInCounter interface {
	// CountSignIn counts an attempt to sign in as user id before its
	// password is checked, unless the account is locked at now: then
	// admitted is false and nothing changes. The max-th attempt since the
	// last success or lock locks the account until lockUntil and starts
	// the count again (lockedNow). ErrNotFound: no such user.
	CountSignIn(ctx context.Context, id string, max int, now, lockUntil time.Time) (admitted, lockedNow bool, err error)
	// ResetSignIns starts the count again after the right credentials, and
	// lifts the lock until lift (zero: none) that their own attempt set.
	// A non-zero at is recorded as the last sign-in.
	ResetSignIns(ctx context.Context, id string, lift, at time.Time) error
}

// APIToken is a credential for automation and the CLI. Only its SHA-256 is
// stored; the token itself is shown once.
type APIToken struct {
	ID         string // public identifier, e.g. "tok_1a2b3c4d"
	Name       string
	Owner      string // user ID
	Roles      []Role // never more than the owner's roles at creation
	Hash       []byte // SHA-256 of the token
	CreatedAt  time.Time
	ExpiresAt  time.Time
	RevokedAt  time.Time
	LastUsedAt time.Time
}

// Active reports whether the token may be used at t.
func (t APIToken) Active(at time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || at.Before(t.ExpiresAt))
}

// TokenStore keeps API tokens.
type TokenStore interface {
	CreateAPIToken(ctx context.Context, t APIToken) error
	// APITokenByHash finds a token by the SHA-256 of its secret.
	APITokenByHash(ctx context.Context, hash []byte) (APIToken, error)
	APIToken(ctx context.Context, id string) (APIToken, error)
	// APITokens lists tokens (of one owner, or all when owner is empty).
	APITokens(ctx context.Context, owner string) ([]APIToken, error)
	RevokeAPIToken(ctx context.Context, id string, at time.Time) error
	TouchAPIToken(ctx context.Context, id string, at time.Time) error
}

// Session is a signed-in browser. Its cookie holds a random ID; only the ID's
// SHA-256 is stored.
type Session struct {
	IDHash     []byte
	UserID     string
	Roles      []Role
	Groups     []string
	Source     string // "local" or "oidc"
	CSRF       string // per-session CSRF token for forms
	IDToken    string // OIDC ID token hint for logout (not a credential for fvescrow)
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time // absolute lifetime
}

// SessionStore keeps sessions.
type SessionStore interface {
	CreateSession(ctx context.Context, s Session) error
	Session(ctx context.Context, idHash []byte) (Session, error)
	TouchSession(ctx context.Context, idHash []byte, at time.Time) error
	// DeleteSession ends a session (logout, timeout). Sessions are
	// credentials, not records: the audit log keeps the history.
	DeleteSession(ctx context.Context, idHash []byte) error
	// DeleteUserSessions ends every session of a user (disabled, password
	// changed, blocked).
	DeleteUserSessions(ctx context.Context, userID string) error
}
