package pgtest_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	_ "github.com/jackc/pgx/v5/stdlib"
)

func TestNewDatabase(t *testing.T) {
	var (
		name  string
		inner *sql.DB
	)
	t.Run("create", func(t *testing.T) {
		dsn := pgtest.NewDatabase(t)
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		inner = db // left open past the drop, on purpose
		if err := db.QueryRowContext(context.Background(), `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		if len(name) != len("fvescrow_test_")+12 || name[:14] != "fvescrow_test_" {
			t.Fatalf("database %q", name)
		}
		// A connection still open at cleanup must not stop the drop.
		if _, err := db.ExecContext(context.Background(), `CREATE TABLE t (x int)`); err != nil {
			t.Fatal(err)
		}
	})
	if inner != nil {
		defer inner.Close()
	}
	if name == "" {
		return // skipped: no server
	}
	db, err := sql.Open("pgx", pgtest.Server())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s was not dropped", name)
	}
}
