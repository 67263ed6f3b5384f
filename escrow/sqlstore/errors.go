package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// wrap names the operation and translates database errors into the escrow
// sentinels callers branch on. Messages never carry stored values: ops name
// a device or an ID at most, and driver errors name constraints, not data.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("sqlstore: %s: %w", op, err) // the caller gave up: not the database's fault
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("sqlstore: %s: %w", op, escrow.ErrNotFound)
	case isUniqueViolation(err):
		return fmt.Errorf("sqlstore: %s: %w: %w", op, escrow.ErrConflict, err)
	case isUnavailable(err):
		return fmt.Errorf("sqlstore: %s: %w: %w", op, escrow.ErrUnavailable, err)
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

func isUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		return lite.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || lite.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// retryable reports a transaction that failed only because of a concurrent
// one, so running it again can succeed.
func retryable(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return isUniqueViolation(err)
}

// isUnavailable reports an error of the connection or the server rather
// than of the request: the caller may try again later.
func isUnavailable(err error) bool {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var connect *pgconn.ConnectError
	if errors.As(err, &connect) {
		return true
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		// connection_exception, admin_shutdown, crash_shutdown,
		// cannot_connect_now, too_many_connections
		return strings.HasPrefix(pg.Code, "08") || pg.Code == "57P01" || pg.Code == "57P02" || pg.Code == "57P03" || pg.Code == "53300"
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		// Still locked by another process after the busy timeout.
		return lite.Code()&0xff == sqlite3.SQLITE_BUSY
	}
	var ne net.Error
	return errors.As(err, &ne)
}
