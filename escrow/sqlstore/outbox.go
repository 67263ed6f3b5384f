package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

const outboxCols = `id, device, serial, kind, source, cms, cms_sha256, received_at, attempts, last_error, next_attempt`

func scanOutbox(sc scanner) (escrow.OutboxItem, error) {
	var (
		it             escrow.OutboxItem
		received, next int64
	)
	err := sc.Scan(&it.ID, &it.Device, &it.Serial, &it.Kind, &it.Source, &it.CMS, &it.CMSSHA256, &received, &it.Attempts,
		&it.LastError, &next)
	if err != nil {
		return escrow.OutboxItem{}, err
	}
	it.ReceivedAt, it.NextAttempt = fromMicros(received), fromMicros(next)
	return it, nil
}

// PutOutbox stores an item, due at once unless it says otherwise. The same
// device and CMS SHA-256 again returns the stored item unchanged.
func (s *Store) PutOutbox(ctx context.Context, it escrow.OutboxItem) (escrow.OutboxItem, error) {
	op := fmt.Sprintf("put outbox item for %s", it.Device)
	if it.Device == "" || it.Kind == "" || it.CMSSHA256 == "" || len(it.CMS) == 0 {
		return escrow.OutboxItem{}, fmt.Errorf("sqlstore: %s: %w: device, kind, CMS and its SHA-256 are required", op, escrow.ErrInvalid)
	}
	received := s.orNow(it.ReceivedAt)
	next := it.NextAttempt
	if next.IsZero() {
		next = received
	}
	var out escrow.OutboxItem
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO outbox (device, serial, kind, source, cms, cms_sha256, received_at, next_attempt)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, cms_sha256) DO NOTHING`),
			it.Device, it.Serial, it.Kind, it.Source, it.CMS, it.CMSSHA256, micros(received), micros(next))
		if err != nil {
			return err
		}
		out, err = scanOutbox(tx.QueryRowContext(ctx, s.q(`SELECT `+outboxCols+` FROM outbox WHERE device = ? AND cms_sha256 = ?`),
			it.Device, it.CMSSHA256))
		return err
	})
	return out, wrap(op, err)
}

// ClaimOutbox leases up to limit items due at now (next attempt reached, no
// live lease) to owner until leaseUntil, oldest first. On PostgreSQL, rows
// another replica is claiming at this moment are skipped, not waited for.
func (s *Store) ClaimOutbox(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]escrow.OutboxItem, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []escrow.OutboxItem
	err := s.write(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, s.q(`UPDATE outbox SET claimed_by = ?, claimed_until = ?
			WHERE id IN (SELECT id FROM outbox WHERE next_attempt <= ? AND (claimed_until IS NULL OR claimed_until < ?)
				ORDER BY id LIMIT ?`+s.dialect.skipLocked()+`)
			RETURNING `+outboxCols),
			owner, micros(leaseUntil), micros(now), micros(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			it, err := scanOutbox(rows)
			if err != nil {
				return err
			}
			out = append(out, it)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap("claim outbox items", err)
	}
	// RETURNING has no defined order.
	slices.SortFunc(out, func(a, b escrow.OutboxItem) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// FailOutbox records a failed attempt, releases the lease and sets when to
// try again.
func (s *Store) FailOutbox(ctx context.Context, id int64, msg string, next time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE outbox SET attempts = attempts + 1, last_error = ?, failed_at = ?,
			next_attempt = ?, claimed_by = '', claimed_until = NULL WHERE id = ?`),
			msg, micros(s.now()), micros(next), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return sql.ErrNoRows
		}
		return nil
	})
	return wrap(fmt.Sprintf("fail outbox item %d", id), err)
}

// OutboxStats counts pending items and reports the oldest one and the most
// recent failure.
func (s *Store) OutboxStats(ctx context.Context) (escrow.OutboxStats, error) {
	var (
		st     escrow.OutboxStats
		oldest sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(received_at) FROM outbox`).Scan(&st.Pending, &oldest)
	if err != nil {
		return escrow.OutboxStats{}, wrap("outbox stats", err)
	}
	st.OldestPending = fromNullMicros(oldest)
	err = s.db.QueryRowContext(ctx, `SELECT last_error FROM outbox WHERE last_error <> '' ORDER BY failed_at DESC, id DESC LIMIT 1`).
		Scan(&st.LastError)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return escrow.OutboxStats{}, wrap("outbox stats", err)
	}
	return st, nil
}

// deleteOutbox clears an escrowed item (id 0: none). An item already gone
// is fine: another replica finished it.
func (s *Store) deleteOutbox(ctx context.Context, tx *sql.Tx, id int64) error {
	if id == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, s.q(`DELETE FROM outbox WHERE id = ?`), id)
	return err
}
