package sqlstore_test

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
)

func TestReopen(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			loc := b.fresh(t)
			var logs bytes.Buffer
			s, err := b.open(ctx, loc, sqlstore.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "schema migrated") {
				t.Errorf("first open logged no migration:\n%s", logs.String())
			}
			if _, err := s.UpsertDevice(ctx, escrow.Device{ID: "R1", Serial: "C02R"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			logs.Reset()
			s2, err := b.open(ctx, loc, sqlstore.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			if err != nil {
				t.Fatalf("second open: %v", err)
			}
			defer s2.Close()
			if logs.Len() != 0 {
				t.Errorf("second open migrated again:\n%s", logs.String())
			}
			if d, err := s2.Device(ctx, "R1"); err != nil || d.Serial != "C02R" {
				t.Fatalf("after reopen: %+v %v", d, err)
			}
			wantVersions(t, s2, "fvescrow", coreMigrations(t))
		})
	}
}

func TestConcurrentOpen(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			loc := b.fresh(t)
			const n = 4
			var wg sync.WaitGroup
			stores := make([]*sqlstore.Store, n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() { stores[i], errs[i] = b.open(ctx, loc) })
			}
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("open %d of %d: %v", i+1, n, errs[i])
				}
				defer stores[i].Close()
			}
			wantVersions(t, stores[0], "fvescrow", coreMigrations(t))
			if _, err := stores[n-1].AppendAudit(ctx, escrow.Event{Actor: escrow.System, Action: escrow.ActionExportCreated}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMigrateOtherSet(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.newStore(t)
			v1 := []sqlstore.Migration{{Version: 1, Name: "things", SQL: `
				CREATE TABLE things (id {{.AutoID}}, name {{.Key}} NOT NULL, blob {{.Bytes}});
				CREATE INDEX things_name ON things (name);`}}
			for range 2 {
				if err := s.Migrate(ctx, "other", v1); err != nil {
					t.Fatal(err)
				}
			}
			v2 := append(v1, sqlstore.Migration{Version: 2, Name: "more", SQL: `ALTER TABLE things ADD COLUMN note TEXT NOT NULL DEFAULT ''`})
			if err := s.Migrate(ctx, "other", v2); err != nil {
				t.Fatal(err)
			}
			exec(t, s, `INSERT INTO things (name, blob, note) VALUES (?, ?, ?)`, "a", []byte{0, 1}, "n")
			wantVersions(t, s, "other", 2)
			wantVersions(t, s, "fvescrow", coreMigrations(t))

			// A failed migration leaves nothing behind and is not recorded.
			bad := append(v2, sqlstore.Migration{Version: 3, Name: "bad", SQL: `CREATE TABLE half (x INTEGER); SELECT * FROM no_such_table`})
			if err := s.Migrate(ctx, "other", bad); err == nil {
				t.Fatal("a failing migration succeeded")
			}
			wantVersions(t, s, "other", 2)
			if err := s.Migrate(ctx, "other", v2[1:]); err != nil { // v1 already applied: only v2 given, a no-op
				t.Fatal(err)
			}
			exec(t, s, `CREATE TABLE half (x INTEGER)`) // proves the failed one rolled back

			for _, invalid := range [][]sqlstore.Migration{
				{{Version: 2}, {Version: 1}},
				{{Version: 0}},
				{{Version: 1}, {Version: 1}},
			} {
				if err := s.Migrate(ctx, "other", invalid); !errors.Is(err, escrow.ErrInvalid) {
					t.Errorf("Migrate(%+v) = %v, want ErrInvalid", invalid, err)
				}
			}
			if err := s.Migrate(ctx, "", v1); !errors.Is(err, escrow.ErrInvalid) {
				t.Errorf("empty set: %v", err)
			}
			if err := s.Migrate(ctx, "templ", []sqlstore.Migration{{Version: 1, SQL: `CREATE TABLE x (y {{.NoSuchType}})`}}); err == nil {
				t.Errorf("an unknown template field was accepted")
			}
		})
	}
}

// wantVersions checks schema_migrations records versions 1..n of set, once each.
func wantVersions(t *testing.T, s *sqlstore.Store, set string, n int) {
	t.Helper()
	var count, maxV int
	err := s.DB().QueryRowContext(ctx, s.Dialect().Rebind(`SELECT COUNT(*), COALESCE(MAX(version), 0) FROM schema_migrations WHERE set_name = ?`), set).
		Scan(&count, &maxV)
	if err != nil {
		t.Fatal(err)
	}
	if count != n || maxV != n {
		t.Fatalf("schema_migrations for %s: %d rows, max version %d; want %d", set, count, maxV, n)
	}
}

// coreMigrations counts fvescrow's own migration files.
func coreMigrations(t *testing.T) int {
	t.Helper()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations: %v", err)
	}
	return len(files)
}
