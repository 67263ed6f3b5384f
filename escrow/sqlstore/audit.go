package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/fvescrow/fvescrow/escrow"
)

const auditCols = `seq, time, actor_kind, actor_id, actor_name, action, device, reason, ticket, detail, prev_hash, hash`

func scanAudit(sc scanner) (escrow.AuditRecord, error) {
	var (
		r      escrow.AuditRecord
		at     int64
		detail string
	)
	err := sc.Scan(&r.Seq, &at, &r.Actor.Kind, &r.Actor.ID, &r.Actor.Name, &r.Action, &r.Device, &r.Reason, &r.Ticket,
		&detail, &r.PrevHash, &r.Hash)
	if err != nil {
		return escrow.AuditRecord{}, err
	}
	r.Time = fromMicros(at)
	if r.Detail, err = decodeStrings(detail); err != nil {
		// A tampered row: report it as a record whose hash cannot match
		// rather than failing the whole read, so verification names it.
		r.Detail = map[string]string{"undecodable detail": detail}
	}
	return r, nil
}

// AppendAudit appends e as the next record of the chain.
func (s *Store) AppendAudit(ctx context.Context, e escrow.Event) (escrow.AuditRecord, error) {
	var rec escrow.AuditRecord
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		rec, err = s.appendAudit(ctx, tx, e)
		return err
	})
	return rec, wrap("append audit", err)
}

// appendAudit is the one way a record enters the log, inside the caller's
// transaction: it reads the head and inserts escrow.NextRecord after it.
// Appends are serialised by SQLite's exclusive write transactions, and on
// PostgreSQL by an advisory lock held until tx ends. Callers take it last
// (after any row locks they need), so no lock is ever waited for while
// holding it.
func (s *Store) appendAudit(ctx context.Context, tx *sql.Tx, e escrow.Event) (escrow.AuditRecord, error) {
	if e.Action == "" {
		return escrow.AuditRecord{}, fmt.Errorf("%w: audit event without an action", escrow.ErrInvalid)
	}
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, auditLockKey); err != nil {
			return escrow.AuditRecord{}, err
		}
	}
	var (
		head *escrow.AuditRecord
		h    escrow.AuditRecord
	)
	switch err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&h.Seq, &h.Hash); {
	case err == nil:
		head = &h
	case !errors.Is(err, sql.ErrNoRows):
		return escrow.AuditRecord{}, err
	}
	r := escrow.NextRecord(head, e)
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO audit (`+auditCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		r.Seq, micros(r.Time), r.Actor.Kind, r.Actor.ID, r.Actor.Name, r.Action, r.Device, r.Reason, r.Ticket,
		encodeStrings(r.Detail), r.PrevHash, r.Hash)
	if err != nil {
		return escrow.AuditRecord{}, err
	}
	return r, nil
}

// auditWhere is the WHERE clause and arguments of an audit query.
func auditWhere(q escrow.AuditQuery) (string, []any) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, arg any) {
		where = append(where, cond)
		args = append(args, arg)
	}
	if q.AfterSeq > 0 {
		add("seq > ?", q.AfterSeq)
	}
	if q.Device != "" {
		add("device = ?", q.Device)
	}
	if q.ActorID != "" {
		add("actor_id = ?", q.ActorID)
	}
	if q.Action != "" {
		add("action = ?", q.Action)
	}
	if !q.Since.IsZero() {
		add("time >= ?", micros(q.Since))
	}
	if !q.Until.IsZero() {
		add("time < ?", micros(q.Until))
	}
	if len(where) == 0 {
		return "", nil
	}
	return ` WHERE ` + strings.Join(where, " AND "), args
}

// CountAudit counts the records q selects.
func (s *Store) CountAudit(ctx context.Context, q escrow.AuditQuery) (int, error) {
	where, args := auditWhere(q)
	var n int
	err := s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM audit`+where), args...).Scan(&n)
	return n, wrap("count audit records", err)
}

// AuditRecords lists records in Seq order. Since is inclusive, Until
// exclusive.
func (s *Store) AuditRecords(ctx context.Context, q escrow.AuditQuery) ([]escrow.AuditRecord, error) {
	where, args := auditWhere(q)
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	query := `SELECT ` + auditCols + ` FROM audit` + where + ` ORDER BY seq LIMIT ?`
	args = append(args, limit)

	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, wrap("audit records", err)
	}
	defer rows.Close()
	var out []escrow.AuditRecord
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, wrap("audit records", err)
		}
		out = append(out, r)
	}
	return out, wrap("audit records", rows.Err())
}

// AuditHead returns the last record, or ErrNotFound for an empty log.
func (s *Store) AuditHead(ctx context.Context) (escrow.AuditRecord, error) {
	r, err := scanAudit(s.db.QueryRowContext(ctx, `SELECT `+auditCols+` FROM audit ORDER BY seq DESC LIMIT 1`))
	return r, wrap("audit head", err)
}

// AddCheckpoint stores a signed checkpoint. Storing the same checkpoint
// again is a no-op; a different one for the same record is ErrConflict.
func (s *Store) AddCheckpoint(ctx context.Context, c escrow.Checkpoint) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO audit_checkpoints (seq, hash, time, key_id, signature)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (seq) DO NOTHING`),
			c.Seq, c.Hash, micros(c.Time), c.KeyID, nonNil(c.Signature))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		old, err := scanCheckpoint(tx.QueryRowContext(ctx, s.q(`SELECT seq, hash, time, key_id, signature
			FROM audit_checkpoints WHERE seq = ?`), c.Seq))
		if err != nil {
			return err
		}
		if old.Hash != c.Hash || old.KeyID != c.KeyID || !old.Time.Equal(escrow.AuditTime(c.Time)) || !bytes.Equal(old.Signature, c.Signature) {
			return fmt.Errorf("%w: a different checkpoint of record %d exists", escrow.ErrConflict, c.Seq)
		}
		return nil
	})
	return wrap(fmt.Sprintf("add checkpoint %d", c.Seq), err)
}

func scanCheckpoint(sc scanner) (escrow.Checkpoint, error) {
	var (
		c  escrow.Checkpoint
		at int64
	)
	if err := sc.Scan(&c.Seq, &c.Hash, &at, &c.KeyID, &c.Signature); err != nil {
		return escrow.Checkpoint{}, err
	}
	c.Time = fromMicros(at)
	return c, nil
}

// Checkpoints lists checkpoints in Seq order.
func (s *Store) Checkpoints(ctx context.Context) ([]escrow.Checkpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, hash, time, key_id, signature FROM audit_checkpoints ORDER BY seq`)
	if err != nil {
		return nil, wrap("checkpoints", err)
	}
	defer rows.Close()
	var out []escrow.Checkpoint
	for rows.Next() {
		c, err := scanCheckpoint(rows)
		if err != nil {
			return nil, wrap("checkpoints", err)
		}
		out = append(out, c)
	}
	return out, wrap("checkpoints", rows.Err())
}

// nonNil stores a nil byte slice as empty rather than NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
