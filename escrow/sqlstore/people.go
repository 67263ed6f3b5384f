package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

var (
	_ escrow.UserStore     = (*Store)(nil)
	_ escrow.SignInCounter = (*Store)(nil)
	_ escrow.TokenStore    = (*Store)(nil)
	_ escrow.SessionStore  = (*Store)(nil)
)

func encodeList[T ~string](xs []T) string {
	if xs == nil {
		xs = []T{}
	}
	b, _ := json.Marshal(xs)
	return string(b)
}

func decodeList[T ~string](s string) ([]T, error) {
	var xs []T
	if err := json.Unmarshal([]byte(s), &xs); err != nil {
		return nil, err
	}
	return xs, nil
}

func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(t), Valid: true}
}

const userCols = `id, username, display_name, email, source, roles, groups_json, password_hash, totp_enabled,
	must_change_password, disabled, failed_logins, locked_until, created_at, updated_at, last_login_at`

func scanUser(sc scanner) (escrow.User, error) {
	var (
		u                escrow.User
		roles, groups    string
		locked, login    sql.NullInt64
		created, updated int64
	)
	err := sc.Scan(&u.ID, &u.Username, &u.DisplayName, &u.Email, &u.Source, &roles, &groups, &u.PasswordHash, &u.TOTPEnabled,
		&u.MustChangePassword, &u.Disabled, &u.FailedLogins, &locked, &created, &updated, &login)
	if err != nil {
		return escrow.User{}, err
	}
	if u.Roles, err = decodeList[escrow.Role](roles); err != nil {
		return escrow.User{}, err
	}
	if u.Groups, err = decodeList[string](groups); err != nil {
		return escrow.User{}, err
	}
	u.LockedUntil, u.LastLoginAt = fromNullMicros(locked), fromNullMicros(login)
	u.CreatedAt, u.UpdatedAt = fromMicros(created), fromMicros(updated)
	return u, nil
}

// CreateUser stores a new user.
func (s *Store) CreateUser(ctx context.Context, u escrow.User) error {
	op := "create user " + u.ID
	if u.ID == "" || u.Username == "" || u.Source == "" {
		return fmt.Errorf("sqlstore: %s: %w: ID, username and source are required", op, escrow.ErrInvalid)
	}
	now := micros(s.now())
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO users (id, username, display_name, email, source, roles, groups_json, password_hash,
			totp_enabled, must_change_password, disabled, failed_logins, locked_until, created_at, updated_at, last_login_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			u.ID, u.Username, u.DisplayName, u.Email, u.Source, encodeList(u.Roles), encodeList(u.Groups), u.PasswordHash,
			u.TOTPEnabled, u.MustChangePassword, u.Disabled, u.FailedLogins, nullMicros(u.LockedUntil), now, now, nullMicros(u.LastLoginAt))
		return err
	})
	return wrap(op, err)
}

// User returns a user by ID.
func (s *Store) User(ctx context.Context, id string) (escrow.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q(`SELECT `+userCols+` FROM users WHERE id = ?`), id))
	return u, wrap("user "+id, err)
}

// UpdateUser replaces a user's record.
func (s *Store) UpdateUser(ctx context.Context, u escrow.User) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE users SET username = ?, display_name = ?, email = ?, source = ?, roles = ?, groups_json = ?,
			password_hash = ?, totp_enabled = ?, must_change_password = ?, disabled = ?, failed_logins = ?, locked_until = ?,
			updated_at = ?, last_login_at = ? WHERE id = ?`),
			u.Username, u.DisplayName, u.Email, u.Source, encodeList(u.Roles), encodeList(u.Groups), u.PasswordHash, u.TOTPEnabled,
			u.MustChangePassword, u.Disabled, u.FailedLogins, nullMicros(u.LockedUntil), micros(s.now()), nullMicros(u.LastLoginAt), u.ID)
		return affected(res, err)
	})
	return wrap("update user "+u.ID, err)
}

// CountSignIn counts a sign-in attempt in one UPDATE of the current row:
// PostgreSQL re-checks the WHERE clause on the newest version of a row a
// concurrent transaction changed, and SQLite runs one write at a time.
func (s *Store) CountSignIn(ctx context.Context, id string, max int, now, lockUntil time.Time) (admitted, lockedNow bool, err error) {
	op := "count sign-in of " + id
	if max < 1 || !lockUntil.After(now) {
		return false, false, fmt.Errorf("sqlstore: %s: %w: max %d, lock until %v", op, escrow.ErrInvalid, max, lockUntil)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		admitted, lockedNow = false, false
		var locked sql.NullInt64
		err := tx.QueryRowContext(ctx, s.q(`UPDATE users SET
				failed_logins = CASE WHEN failed_logins + 1 >= ? THEN 0 ELSE failed_logins + 1 END,
				locked_until = CASE WHEN failed_logins + 1 >= ? THEN CAST(? AS BIGINT) ELSE locked_until END,
				updated_at = ?
			WHERE id = ? AND (locked_until IS NULL OR locked_until <= ?)
			RETURNING locked_until`),
			max, max, micros(lockUntil), micros(s.now()), id, micros(now)).Scan(&locked)
		if errors.Is(err, sql.ErrNoRows) {
			// Locked, or no such user (ErrNotFound).
			return tx.QueryRowContext(ctx, s.q(`SELECT locked_until FROM users WHERE id = ?`), id).Scan(&locked)
		}
		if err != nil {
			return err
		}
		// A lock still running after the update is this attempt's.
		admitted, lockedNow = true, locked.Valid && locked.Int64 > micros(now)
		return nil
	})
	return admitted, lockedNow, wrap(op, err)
}

// ResetSignIns starts a user's sign-in count again.
func (s *Store) ResetSignIns(ctx context.Context, id string, lift, at time.Time) error {
	var liftAt sql.NullInt64
	if !lift.IsZero() {
		liftAt = nullMicros(lift)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE users SET failed_logins = 0,
				locked_until = CASE WHEN locked_until = CAST(? AS BIGINT) THEN NULL ELSE locked_until END,
				last_login_at = COALESCE(CAST(? AS BIGINT), last_login_at), updated_at = ?
			WHERE id = ?`), liftAt, nullMicros(at), micros(s.now()), id)
		return affected(res, err)
	})
	return wrap("reset sign-ins of "+id, err)
}

// Users lists every user, by ID.
func (s *Store) Users(ctx context.Context) ([]escrow.User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY id`)
	if err != nil {
		return nil, wrap("users", err)
	}
	defer rows.Close()
	var out []escrow.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, wrap("users", err)
		}
		out = append(out, u)
	}
	return out, wrap("users", rows.Err())
}

// affected turns "no row changed" into sql.ErrNoRows.
func affected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return sql.ErrNoRows
	}
	return nil
}

const tokenCols = `id, name, owner, roles, hash, created_at, expires_at, revoked_at, last_used_at`

func scanToken(sc scanner) (escrow.APIToken, error) {
	var (
		t                      escrow.APIToken
		roles                  string
		created                int64
		expires, revoked, used sql.NullInt64
	)
	if err := sc.Scan(&t.ID, &t.Name, &t.Owner, &roles, &t.Hash, &created, &expires, &revoked, &used); err != nil {
		return escrow.APIToken{}, err
	}
	var err error
	if t.Roles, err = decodeList[escrow.Role](roles); err != nil {
		return escrow.APIToken{}, err
	}
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt, t.RevokedAt, t.LastUsedAt = fromNullMicros(expires), fromNullMicros(revoked), fromNullMicros(used)
	return t, nil
}

// CreateAPIToken stores a token (its hash).
func (s *Store) CreateAPIToken(ctx context.Context, t escrow.APIToken) error {
	if t.ID == "" || len(t.Hash) != 32 || t.Owner == "" {
		return fmt.Errorf("sqlstore: create API token: %w: ID, owner and a SHA-256 hash are required", escrow.ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO api_tokens (id, name, owner, roles, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			t.ID, t.Name, t.Owner, encodeList(t.Roles), t.Hash, micros(s.orNow(t.CreatedAt)), nullMicros(t.ExpiresAt))
		return err
	})
	return wrap("create API token "+t.ID, err)
}

// APITokenByHash finds a token by the SHA-256 of its secret.
func (s *Store) APITokenByHash(ctx context.Context, hash []byte) (escrow.APIToken, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM api_tokens WHERE hash = ?`), hash))
	return t, wrap("API token by hash", err)
}

// APIToken returns a token by ID.
func (s *Store) APIToken(ctx context.Context, id string) (escrow.APIToken, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM api_tokens WHERE id = ?`), id))
	return t, wrap("API token "+id, err)
}

// APITokens lists tokens of one owner, or all.
func (s *Store) APITokens(ctx context.Context, owner string) ([]escrow.APIToken, error) {
	q, args := `SELECT `+tokenCols+` FROM api_tokens`, []any{}
	if owner != "" {
		q, args = q+` WHERE owner = ?`, append(args, owner)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+` ORDER BY created_at, id`), args...)
	if err != nil {
		return nil, wrap("API tokens", err)
	}
	defer rows.Close()
	var out []escrow.APIToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, wrap("API tokens", err)
		}
		out = append(out, t)
	}
	return out, wrap("API tokens", rows.Err())
}

// RevokeAPIToken revokes a token (idempotent; the first time is kept).
func (s *Store) RevokeAPIToken(ctx context.Context, id string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`), micros(at), id)
		return affected(res, err)
	})
	return wrap("revoke API token "+id, err)
}

// TouchAPIToken records a use.
func (s *Store) TouchAPIToken(ctx context.Context, id string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE api_tokens SET last_used_at = ? WHERE id = ?`), micros(at), id)
	return wrap("touch API token "+id, err)
}

const sessionCols = `id_hash, user_id, roles, groups_json, source, csrf, id_token, created_at, last_seen_at, expires_at`

// CreateSession stores a session.
func (s *Store) CreateSession(ctx context.Context, se escrow.Session) error {
	if len(se.IDHash) != 32 || se.UserID == "" || se.CSRF == "" || se.ExpiresAt.IsZero() {
		return fmt.Errorf("sqlstore: create session: %w: ID hash, user, CSRF token and expiry are required", escrow.ErrInvalid)
	}
	now := s.now()
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO sessions (`+sessionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			se.IDHash, se.UserID, encodeList(se.Roles), encodeList(se.Groups), se.Source, se.CSRF, se.IDToken,
			micros(s.orNow(se.CreatedAt)), micros(now), micros(se.ExpiresAt))
		return err
	})
	return wrap("create session", err)
}

// Session returns a session by the hash of its ID.
func (s *Store) Session(ctx context.Context, idHash []byte) (escrow.Session, error) {
	var (
		se                     escrow.Session
		roles, groups          string
		created, seen, expires int64
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT `+sessionCols+` FROM sessions WHERE id_hash = ?`), idHash).
		Scan(&se.IDHash, &se.UserID, &roles, &groups, &se.Source, &se.CSRF, &se.IDToken, &created, &seen, &expires)
	if err != nil {
		return escrow.Session{}, wrap("session", err)
	}
	if se.Roles, err = decodeList[escrow.Role](roles); err != nil {
		return escrow.Session{}, wrap("session", err)
	}
	if se.Groups, err = decodeList[string](groups); err != nil {
		return escrow.Session{}, wrap("session", err)
	}
	se.CreatedAt, se.LastSeenAt, se.ExpiresAt = fromMicros(created), fromMicros(seen), fromMicros(expires)
	return se, nil
}

// TouchSession records activity (idle timeout).
func (s *Store) TouchSession(ctx context.Context, idHash []byte, at time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?`), micros(at), idHash)
	return wrap("touch session", err)
}

// DeleteSession ends a session.
func (s *Store) DeleteSession(ctx context.Context, idHash []byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE id_hash = ?`), idHash)
		return err
	})
	return wrap("delete session", err)
}

// DeleteUserSessions ends every session of a user.
func (s *Store) DeleteUserSessions(ctx context.Context, userID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE user_id = ?`), userID)
		return err
	})
	return wrap("delete sessions of "+userID, err)
}
