package sqlstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/escrow/storetest"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
)

var (
	ctx = context.Background()
	t0  = time.Date(2026, 11, 1, 9, 30, 0, 123456000, time.UTC)
)

// backend is one database the store runs on: where a fresh, empty database
// is, and how to open it.
type backend struct {
	name  string
	fresh func(t testing.TB) string
	open  func(ctx context.Context, location string, opts ...sqlstore.Option) (*sqlstore.Store, error)
}

var backends = []backend{
	{"sqlite", func(t testing.TB) string { return filepath.Join(t.TempDir(), "meta.db") }, sqlstore.OpenSQLite},
	{"postgres", pgtest.NewDatabase, sqlstore.OpenPostgres},
}

// newStore opens a store on a fresh database, closed when the test ends.
func (b backend) newStore(t testing.TB) *sqlstore.Store {
	t.Helper()
	return b.openAt(t, b.fresh(t))
}

func (b backend) openAt(t testing.TB, location string) *sqlstore.Store {
	t.Helper()
	s, err := b.open(ctx, location)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestMetaStore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			storetest.RunMetaStore(t, func(t *testing.T) escrow.MetaStore { return b.newStore(t) })
		})
	}
}

func TestMDMStore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			storetest.RunMDMStore(t, func(t *testing.T) storetest.MDMStore { return b.newStore(t) })
		})
	}
}

func TestPeopleStore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			storetest.RunPeopleStore(t, func(t *testing.T) storetest.PeopleStore { return b.newStore(t) })
		})
	}
}

func TestRotationStore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			storetest.RunRotationStore(t, func(t *testing.T) storetest.RotationStore { return b.newStore(t) })
		})
	}
}
