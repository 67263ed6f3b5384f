package sqlstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
)

func TestOpenErrors(t *testing.T) {
	for _, path := range []string{"", ":memory:", "a?b.db"} {
		if _, err := sqlstore.OpenSQLite(ctx, path); !errors.Is(err, escrow.ErrInvalid) {
			t.Errorf("OpenSQLite(%q) = %v, want ErrInvalid", path, err)
		}
	}
	// Nothing listens on port 1.
	_, err := sqlstore.OpenPostgres(ctx, "postgres://fv:s3cret-pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=5")
	if !errors.Is(err, escrow.ErrUnavailable) || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("unreachable server: %v, want ErrUnavailable without the password", err)
	}
	_, err = sqlstore.OpenPostgres(ctx, "postgres://fv:s3cret-pw@host:notaport/x")
	if !errors.Is(err, escrow.ErrInvalid) || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("bad DSN: %v, want ErrInvalid without the password", err)
	}
}

func TestErrorsCarryNoPayload(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.newStore(t)
			if err := s.CreateSetting(ctx, "k", []byte("value-1")); err != nil {
				t.Fatal(err)
			}
			err := s.CreateSetting(ctx, "k", []byte("value-2"))
			if !errors.Is(err, escrow.ErrConflict) || strings.Contains(err.Error(), "value-") {
				t.Errorf("CreateSetting twice: %v", err)
			}
			if _, err := s.Device(ctx, "nope"); !errors.Is(err, escrow.ErrNotFound) || !strings.HasPrefix(err.Error(), "sqlstore: ") {
				t.Errorf("Device: %v", err)
			}
			if err := s.FailOutbox(ctx, 42, "x", t0); !errors.Is(err, escrow.ErrNotFound) {
				t.Errorf("FailOutbox of a missing item: %v", err)
			}
			if _, err := s.AppendAudit(ctx, escrow.Event{Actor: escrow.System}); !errors.Is(err, escrow.ErrInvalid) {
				t.Errorf("audit event without action: %v", err)
			}
			// A checkpoint stored twice is fine; a different one for the same record is not.
			c := escrow.Checkpoint{Seq: 1, Hash: "h", Time: t0, KeyID: "k", Signature: []byte{1}}
			if err := s.AddCheckpoint(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := s.AddCheckpoint(ctx, c); err != nil {
				t.Errorf("same checkpoint again: %v", err)
			}
			c.Signature = []byte{2}
			if err := s.AddCheckpoint(ctx, c); !errors.Is(err, escrow.ErrConflict) {
				t.Errorf("different checkpoint for the same record: %v", err)
			}
		})
	}
}
