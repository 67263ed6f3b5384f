package sqlstore

import (
	"context"
	"crypto/x509"
	"database/sql"
	"fmt"

	"github.com/fvescrow/fvescrow/escrow"
)

// AddEscrowCert stores a public escrow certificate; adding it again is a
// no-op.
func (s *Store) AddEscrowCert(ctx context.Context, c escrow.EscrowCert) error {
	op := fmt.Sprintf("add escrow certificate %s", c.Fingerprint)
	if c.Fingerprint == "" || c.Certificate == nil {
		return fmt.Errorf("sqlstore: %s: %w: fingerprint and certificate are required", op, escrow.ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO escrow_certs (fingerprint, der, added_at) VALUES (?, ?, ?)
			ON CONFLICT (fingerprint) DO NOTHING`), c.Fingerprint, c.Certificate.Raw, micros(s.orNow(c.AddedAt)))
		return err
	})
	return wrap(op, err)
}

// EscrowCerts lists every escrow certificate, oldest first.
func (s *Store) EscrowCerts(ctx context.Context) ([]escrow.EscrowCert, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT fingerprint, der, added_at FROM escrow_certs ORDER BY added_at, fingerprint`)
	if err != nil {
		return nil, wrap("escrow certificates", err)
	}
	defer rows.Close()
	var out []escrow.EscrowCert
	for rows.Next() {
		var (
			c   escrow.EscrowCert
			der []byte
			at  int64
		)
		if err := rows.Scan(&c.Fingerprint, &der, &at); err != nil {
			return nil, wrap("escrow certificates", err)
		}
		if c.Certificate, err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("sqlstore: escrow certificate %s: %w", c.Fingerprint, err)
		}
		c.AddedAt = fromMicros(at)
		out = append(out, c)
	}
	return out, wrap("escrow certificates", rows.Err())
}

// Setting returns a value or ErrNotFound.
func (s *Store) Setting(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := s.db.QueryRowContext(ctx, s.q(`SELECT value FROM settings WHERE name = ?`), name).Scan(&v)
	if err != nil {
		return nil, wrap(fmt.Sprintf("setting %s", name), err)
	}
	return v, nil
}

// CreateSetting stores a value; ErrConflict if the name exists (the stored
// value is never overwritten).
func (s *Store) CreateSetting(ctx context.Context, name string, value []byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`),
			name, nonNil(value))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: setting exists", escrow.ErrConflict)
		}
		return nil
	})
	return wrap(fmt.Sprintf("create setting %s", name), err)
}
