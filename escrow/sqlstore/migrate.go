package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/fvescrow/fvescrow/escrow"
)

// Migration is one step of a schema. Steps are applied in Version order,
// each in its own transaction, and recorded in schema_migrations so each runs
// once per database.
type Migration struct {
	Version int64 // 1, 2, ... never renumbered once released
	Name    string
	// SQL holds one or more statements. It is a text/template: {{.AutoID}},
	// {{.Bytes}} and {{.Key}} become the dialect's types (see schemaTypes).
	SQL string
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// coreSet names fvescrow's own schema in schema_migrations. Other schemas
// kept in the same database (nanomdm's) are migrated as sets of their own.
const coreSet = "fvescrow"

// Advisory lock keys on PostgreSQL: "fvescrow" read as a big-endian int64,
// plus one per purpose. Advisory locks are per database.
const (
	migrateLockKey int64 = 0x6676657363726f77
	auditLockKey         = migrateLockKey + 1
)

// LoadMigrations reads the migrations in directory dir of fsys, one file
// per version, named NNNN_name.sql (0001_init.sql).
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: load migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".sql")
		if e.IsDir() || !ok {
			continue
		}
		num, name, _ := strings.Cut(base, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("sqlstore: load migrations: %s: name must start with a version number", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("sqlstore: load migrations: %w", err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// The version table is the runner's own, created before any set.
const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	set_name   TEXT NOT NULL,
	version    BIGINT NOT NULL,
	name       TEXT NOT NULL,
	applied_at BIGINT NOT NULL,
	PRIMARY KEY (set_name, version)
)`

// Migrate applies the migrations of set that this database has not applied
// yet, in order, each in its own transaction. It is safe to run from several
// processes at once: on PostgreSQL each transaction holds an advisory lock
// and checks the version table again under it; on SQLite write transactions
// are exclusive.
func (s *Store) Migrate(ctx context.Context, set string, migrations []Migration) error {
	if set == "" {
		return fmt.Errorf("sqlstore: migrate: %w: empty set name", escrow.ErrInvalid)
	}
	for i, m := range migrations {
		if m.Version <= 0 || (i > 0 && m.Version <= migrations[i-1].Version) {
			return fmt.Errorf("sqlstore: migrate %s: %w: versions must be positive and increasing (%d)", set, escrow.ErrInvalid, m.Version)
		}
	}
	var applied map[int64]bool
	err := s.writeOnce(ctx, func(tx *sql.Tx) error {
		var err error
		applied, err = s.appliedVersions(ctx, tx, set)
		return err
	})
	if err != nil {
		return wrap("migrate "+set, err)
	}
	var newest int64
	for v := range applied {
		newest = max(newest, v)
	}
	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		if err := s.migrateOne(ctx, set, m); err != nil {
			return wrap(fmt.Sprintf("migrate %s to version %d (%s)", set, m.Version, m.Name), err)
		}
	}
	if n := len(migrations); n > 0 && newest > migrations[n-1].Version {
		s.log.WarnContext(ctx, "database schema is newer than this program", "set", set,
			"database_version", newest, "program_version", migrations[n-1].Version)
	}
	return nil
}

// appliedVersions locks the migration lock, makes sure the version table
// exists, and reads which versions of set it records.
func (s *Store) appliedVersions(ctx context.Context, tx *sql.Tx, set string) (map[int64]bool, error) {
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return nil, err
		}
	}
	if _, err := tx.ExecContext(ctx, createMigrationsTable); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, s.q(`SELECT version FROM schema_migrations WHERE set_name = ?`), set)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[int64]bool{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

func (s *Store) migrateOne(ctx context.Context, set string, m Migration) error {
	text, err := s.render(m.SQL)
	if err != nil {
		return err
	}
	ran := false
	err = s.writeOnce(ctx, func(tx *sql.Tx) error {
		applied, err := s.appliedVersions(ctx, tx, set)
		if err != nil || applied[m.Version] {
			return err // another process got here first
		}
		if _, err := tx.ExecContext(ctx, text); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (set_name, version, name, applied_at) VALUES (?, ?, ?, ?)`),
			set, m.Version, m.Name, micros(s.now()))
		ran = err == nil
		return err
	})
	if err == nil && ran {
		s.log.InfoContext(ctx, "schema migrated", "set", set, "version", m.Version, "name", m.Name)
	}
	return err
}

// render fills in the dialect's types.
func (s *Store) render(text string) (string, error) {
	t, err := template.New("migration").Option("missingkey=error").Parse(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, s.dialect.types()); err != nil {
		return "", err
	}
	return b.String(), nil
}
