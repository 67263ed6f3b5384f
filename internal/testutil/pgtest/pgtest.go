// Package pgtest gives a test a brand-new PostgreSQL database of its own.
//
// The server is the one named by FVESCROW_TEST_POSTGRES (a URL or key=value
// connection string for a role that may create databases), by default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable. Without a
// reachable server the test is skipped, or fails under
// FVESCROW_INTEGRATION=1 (see testutil.Need).
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/internal/testutil"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// DefaultServer is used when FVESCROW_TEST_POSTGRES is unset.
const DefaultServer = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Server returns the connection string of the test server.
func Server() string {
	if s := os.Getenv("FVESCROW_TEST_POSTGRES"); s != "" {
		return s
	}
	return DefaultServer
}

// NewDatabase creates a database named fvescrow_test_<random> on the test
// server, drops it when the test ends, and returns a connection string for
// it.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server := Server()
	name := "fvescrow_test_" + strings.ToLower(rand.Text()[:12]) // [a-z2-7]: a plain identifier
	err := admin(server, "CREATE DATABASE "+name)
	testutil.Need(t, "PostgreSQL", err)
	t.Cleanup(func() {
		// FORCE: a connection the test leaked must not keep the database.
		if err := admin(server, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(server, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// admin runs one statement on the server's maintenance database.
func admin(server, stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", server)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

// withDatabase points a connection string at database name.
func withDatabase(server, name string) (string, error) {
	if strings.HasPrefix(server, "postgres://") || strings.HasPrefix(server, "postgresql://") {
		u, err := url.Parse(server)
		if err != nil {
			return "", fmt.Errorf("FVESCROW_TEST_POSTGRES is not a valid URL")
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// key=value form: a later dbname wins.
	return server + " dbname=" + name, nil
}
