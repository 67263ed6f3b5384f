package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
	_ "modernc.org/sqlite"           // the database/sql driver "sqlite"
)

// Store is the escrow.MetaStore on SQLite or PostgreSQL.
type Store struct {
	db      *sql.DB
	dialect Dialect
	log     *slog.Logger
	now     func() time.Time
	// writer admits one SQLite write transaction of this process at a time
	// (nil on PostgreSQL). SQLite allows one writer anyway; waiting here is
	// cheaper than SQLite's busy loop, which sleeps in steps of milliseconds.
	writer chan struct{}
}

var _ escrow.MetaStore = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// sqliteParams configure every SQLite connection: write transactions begin
// IMMEDIATE (they take the write lock up front, so two of them never both
// read and then fail to upgrade), other connections wait up to 10s for the
// lock, and foreign keys are enforced. WAL mode (readers run during a write)
// is set once by useWAL: it is a property of the file.
const sqliteParams = "_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"

// OpenSQLite opens the SQLite database file at path, creating it if needed,
// and applies the schema migrations.
func OpenSQLite(ctx context.Context, path string, opts ...Option) (*Store, error) {
	// Each pooled connection to ":memory:" would be its own database, and the
	// driver reads everything after '?' as parameters.
	if path == "" || path == ":memory:" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlstore: open sqlite: %w: need a file path without '?' or '#'", escrow.ErrInvalid)
	}
	db, err := sql.Open("sqlite", path+"?"+sqliteParams)
	if err != nil {
		return nil, wrap("open sqlite", err)
	}
	return open(ctx, db, SQLite, opts)
}

// OpenPostgres connects to PostgreSQL (dsn is a URL or key=value string, as
// pgx accepts) and applies the schema migrations. Several processes may open
// the same database at once: migrations run under an advisory lock.
func OpenPostgres(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors quote the DSN with the password redacted on a
		// best-effort basis only: keep the DSN out entirely.
		return nil, fmt.Errorf("sqlstore: open postgres: %w: cannot parse the connection string", escrow.ErrInvalid)
	}
	return open(ctx, stdlib.OpenDB(*cfg), Postgres, opts)
}

func open(ctx context.Context, db *sql.DB, d Dialect, opts []Option) (*Store, error) {
	s := &Store{db: db, dialect: d, log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("component", "sqlstore", "dialect", string(d))
	if d == SQLite {
		s.writer = make(chan struct{}, 1)
	}
	// Keep a few connections warm: the default of two makes a busy server
	// reconnect (and, on SQLite, rerun the pragmas) all the time.
	db.SetMaxIdleConns(8)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, wrap("open "+string(d), err)
	}
	if d == SQLite {
		if err := useWAL(ctx, db); err != nil {
			db.Close()
			return nil, wrap("open sqlite: set WAL mode", err)
		}
	}
	ms, err := LoadMigrations(migrationFS, "migrations")
	if err == nil {
		err = s.Migrate(ctx, coreSet, ms)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// useWAL switches a SQLite file to write-ahead logging. Switching needs an
// exclusive lock, and SQLite reports a conflicting lock at once instead of
// waiting the busy timeout, so two processes creating the same file retry
// here. Once the file is in WAL mode this is a quick no-op.
func useWAL(ctx context.Context, db *sql.DB) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		var mode string
		err := db.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode)
		switch {
		case err == nil && strings.EqualFold(mode, "wal"):
			return nil
		case err == nil:
			return fmt.Errorf("journal mode is %s", mode)
		case !isUnavailable(err): // not SQLITE_BUSY
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// DB is the underlying database, for code that keeps its own tables in the
// same database (nanomdm's storage).
func (s *Store) DB() *sql.DB { return s.db }

// Dialect says which database this is.
func (s *Store) Dialect() Dialect { return s.dialect }

// q rebinds a query written with ? placeholders for this database.
func (s *Store) q(query string) string { return s.dialect.Rebind(query) }

// write runs fn in a write transaction. A transaction PostgreSQL aborted
// because of a concurrent one (serialization failure, deadlock, or a unique
// violation a concurrent insert caused) is run again; the retry sees the
// other transaction's rows.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = s.writeOnce(ctx, fn); err == nil || !retryable(err) {
			return err
		}
		s.log.DebugContext(ctx, "transaction conflicted with a concurrent one; retrying", "attempt", attempt, "err", err)
	}
	return err
}

func (s *Store) writeOnce(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.writer != nil {
		select {
		case s.writer <- struct{}{}:
			defer func() { <-s.writer }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// Times are stored as microseconds since the Unix epoch, UTC: exactly what
// escrow.AuditTime keeps, in both databases.

func micros(t time.Time) int64 { return escrow.AuditTime(t).UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromMicros(n.Int64)
}

// orNow is t, or the current time when t is zero.
func (s *Store) orNow(t time.Time) time.Time {
	if t.IsZero() {
		return s.now()
	}
	return t
}
