package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

var (
	_ escrow.ApprovalStore     = (*Store)(nil)
	_ escrow.BlockStore        = (*Store)(nil)
	_ escrow.NotificationStore = (*Store)(nil)
)

const approvalCols = `id, device, requester_kind, requester_id, requester_name, reason, ticket, state, created_at, expires_at,
	approver_kind, approver_id, approver_name, decided_at, decision_note, use_by, used_at`

func scanApproval(sc scanner) (escrow.Approval, error) {
	var (
		a                    escrow.Approval
		created, expires     int64
		decided, useBy, used sql.NullInt64
	)
	err := sc.Scan(&a.ID, &a.Device, &a.Requester.Kind, &a.Requester.ID, &a.Requester.Name, &a.Reason, &a.Ticket, &a.State,
		&created, &expires, &a.Approver.Kind, &a.Approver.ID, &a.Approver.Name, &decided, &a.DecisionNote, &useBy, &used)
	if err != nil {
		return escrow.Approval{}, err
	}
	a.CreatedAt, a.ExpiresAt = fromMicros(created), fromMicros(expires)
	a.DecidedAt, a.UseBy, a.UsedAt = fromNullMicros(decided), fromNullMicros(useBy), fromNullMicros(used)
	return a, nil
}

// CreateApproval stores a pending approval and appends e.
func (s *Store) CreateApproval(ctx context.Context, a escrow.Approval, e escrow.Event) error {
	if a.ID == "" || a.Device == "" || a.Requester.ID == "" || a.ExpiresAt.IsZero() {
		return fmt.Errorf("sqlstore: create approval: %w: ID, device, requester and expiry are required", escrow.ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO approvals (id, device, requester_kind, requester_id, requester_name, reason, ticket, state, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), a.ID, a.Device, a.Requester.Kind, a.Requester.ID, a.Requester.Name, a.Reason, a.Ticket,
			escrow.ApprovalPending, micros(s.orNow(a.CreatedAt)), micros(a.ExpiresAt))
		if err != nil {
			return err
		}
		_, err = s.appendAudit(ctx, tx, e)
		return err
	})
	return wrap("create approval "+a.ID, err)
}

// Approval returns an approval by ID.
func (s *Store) Approval(ctx context.Context, id string) (escrow.Approval, error) {
	a, err := scanApproval(s.db.QueryRowContext(ctx, s.q(`SELECT `+approvalCols+` FROM approvals WHERE id = ?`), id))
	return a, wrap("approval "+id, err)
}

// Approvals lists approvals, newest first.
func (s *Store) Approvals(ctx context.Context, q escrow.ApprovalQuery) ([]escrow.Approval, error) {
	var where []string
	var args []any
	if q.RequesterID != "" {
		where, args = append(where, "requester_id = ?"), append(args, q.RequesterID)
	}
	if q.Device != "" {
		where, args = append(where, "device = ?"), append(args, q.Device)
	}
	if len(q.States) > 0 {
		ph := make([]string, len(q.States))
		for i, st := range q.States {
			ph[i], args = "?", append(args, string(st))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	query := `SELECT ` + approvalCols + ` FROM approvals`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, s.q(query+" ORDER BY created_at DESC, id LIMIT ?"), append(args, limit)...)
	if err != nil {
		return nil, wrap("approvals", err)
	}
	defer rows.Close()
	var out []escrow.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			return nil, wrap("approvals", err)
		}
		out = append(out, a)
	}
	return out, wrap("approvals", rows.Err())
}

// DecideApproval approves or denies a pending approval, checking its rules
// inside the transaction.
func (s *Store) DecideApproval(ctx context.Context, id string, approver escrow.Actor, approve bool, note string, at, useBy time.Time, e escrow.Event) (escrow.Approval, error) {
	var out escrow.Approval
	err := s.write(ctx, func(tx *sql.Tx) error {
		a, err := scanApproval(tx.QueryRowContext(ctx, s.q(`SELECT `+approvalCols+` FROM approvals WHERE id = ?`+s.dialect.forUpdate()), id))
		if err != nil {
			return err
		}
		switch {
		case a.Requester.ID == approver.ID:
			return fmt.Errorf("%w: a requester cannot approve their own request", escrow.ErrForbidden)
		case a.Effective(at) != escrow.ApprovalPending:
			return fmt.Errorf("%w: approval is %s", escrow.ErrConflict, a.Effective(at))
		}
		state := escrow.ApprovalDenied
		var ub sql.NullInt64
		if approve {
			state, ub = escrow.ApprovalApproved, nullMicros(useBy)
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE approvals SET state = ?, approver_kind = ?, approver_id = ?, approver_name = ?,
			decided_at = ?, decision_note = ?, use_by = ? WHERE id = ?`), state, approver.Kind, approver.ID, approver.Name, micros(at), note, ub, id); err != nil {
			return err
		}
		if _, err := s.appendAudit(ctx, tx, e); err != nil {
			return err
		}
		out, err = scanApproval(tx.QueryRowContext(ctx, s.q(`SELECT `+approvalCols+` FROM approvals WHERE id = ?`), id))
		return err
	})
	return out, wrap("decide approval "+id, err)
}

// UseApproval consumes an approval for its requester and device.
func (s *Store) UseApproval(ctx context.Context, id string, requester escrow.Actor, device escrow.DeviceID, at time.Time) (escrow.Approval, error) {
	var out escrow.Approval
	err := s.write(ctx, func(tx *sql.Tx) error {
		a, err := scanApproval(tx.QueryRowContext(ctx, s.q(`SELECT `+approvalCols+` FROM approvals WHERE id = ?`+s.dialect.forUpdate()), id))
		if err != nil {
			return err
		}
		switch {
		case a.Requester.ID != requester.ID:
			return fmt.Errorf("%w: the approval belongs to another requester", escrow.ErrForbidden)
		case a.Device != device:
			return fmt.Errorf("%w: the approval is for another device", escrow.ErrForbidden)
		case a.Effective(at) != escrow.ApprovalApproved:
			return fmt.Errorf("%w: approval is %s", escrow.ErrConflict, a.Effective(at))
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE approvals SET state = ?, used_at = ? WHERE id = ?`), escrow.ApprovalUsed, micros(at), id); err != nil {
			return err
		}
		a.State, a.UsedAt = escrow.ApprovalUsed, escrow.AuditTime(at)
		out = a
		return nil
	})
	return out, wrap("use approval "+id, err)
}

// BlockActor records a block and appends e.
func (s *Store) BlockActor(ctx context.Context, b escrow.Block, e escrow.Event) error {
	if b.ActorID == "" || b.Reason == "" {
		return fmt.Errorf("sqlstore: block: %w: actor and reason are required", escrow.ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO blocks (actor_id, reason, created_at, until_at) VALUES (?, ?, ?, ?)`),
			b.ActorID, b.Reason, micros(s.orNow(b.CreatedAt)), nullMicros(b.Until)); err != nil {
			return err
		}
		_, err := s.appendAudit(ctx, tx, e)
		return err
	})
	return wrap("block "+b.ActorID, err)
}

// ActiveBlock returns the block in force for an actor at t.
func (s *Store) ActiveBlock(ctx context.Context, actorID string, at time.Time) (escrow.Block, error) {
	var (
		b             escrow.Block
		created       int64
		until, lifted sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT actor_id, reason, created_at, until_at, lifted_at, lifted_by FROM blocks
		WHERE actor_id = ? AND lifted_at IS NULL AND (until_at IS NULL OR until_at > ?) ORDER BY created_at DESC LIMIT 1`), actorID, micros(at)).
		Scan(&b.ActorID, &b.Reason, &created, &until, &lifted, &b.LiftedBy)
	if err != nil {
		return escrow.Block{}, wrap("block of "+actorID, err)
	}
	b.CreatedAt, b.Until, b.LiftedAt = fromMicros(created), fromNullMicros(until), fromNullMicros(lifted)
	return b, nil
}

// LiftBlocks lifts every active block of an actor and appends e.
func (s *Store) LiftBlocks(ctx context.Context, actorID string, by escrow.Actor, at time.Time, e escrow.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE blocks SET lifted_at = ?, lifted_by = ? WHERE actor_id = ? AND lifted_at IS NULL`), micros(at), by.ID, actorID)
		if err := affected(res, err); err != nil {
			return err
		}
		_, err = s.appendAudit(ctx, tx, e)
		return err
	})
	return wrap("lift blocks of "+actorID, err)
}

const notificationCols = `id, channel, target, subject, body, audit_seq, state, attempts, last_error, next_attempt, created_at, delivered_at`

func scanNotification(sc scanner) (escrow.Notification, error) {
	var (
		n             escrow.Notification
		next, created int64
		delivered     sql.NullInt64
	)
	if err := sc.Scan(&n.ID, &n.Channel, &n.Target, &n.Subject, &n.Body, &n.AuditSeq, &n.State, &n.Attempts, &n.LastError, &next, &created, &delivered); err != nil {
		return escrow.Notification{}, err
	}
	n.NextAttempt, n.CreatedAt, n.DeliveredAt = fromMicros(next), fromMicros(created), fromNullMicros(delivered)
	return n, nil
}

// EnqueueNotification queues a notification, due at once.
func (s *Store) EnqueueNotification(ctx context.Context, n escrow.Notification) (escrow.Notification, error) {
	if n.Channel == "" || n.Target == "" || n.Body == "" {
		return escrow.Notification{}, fmt.Errorf("sqlstore: enqueue notification: %w: channel, target and body are required", escrow.ErrInvalid)
	}
	var out escrow.Notification
	err := s.write(ctx, func(tx *sql.Tx) error {
		now := micros(s.now())
		var id int64
		if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO notifications (channel, target, subject, body, audit_seq, state, next_attempt, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`), n.Channel, n.Target, n.Subject, n.Body, n.AuditSeq, escrow.NotificationPending, now, now).Scan(&id); err != nil {
			return err
		}
		var err error
		out, err = scanNotification(tx.QueryRowContext(ctx, s.q(`SELECT `+notificationCols+` FROM notifications WHERE id = ?`), id))
		return err
	})
	return out, wrap("enqueue notification", err)
}

// ClaimNotifications leases due pending notifications.
func (s *Store) ClaimNotifications(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]escrow.Notification, error) {
	var out []escrow.Notification
	err := s.write(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, s.q(`UPDATE notifications SET claimed_by = ?, claimed_until = ?
			WHERE id IN (SELECT id FROM notifications WHERE state = 'pending' AND next_attempt <= ?
				AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY id LIMIT ?`+s.dialect.skipLocked()+`)
			RETURNING `+notificationCols), owner, micros(leaseUntil), micros(now), micros(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			n, err := scanNotification(rows)
			if err != nil {
				return err
			}
			out = append(out, n)
		}
		return rows.Err()
	})
	slices.SortFunc(out, func(a, b escrow.Notification) int { return cmp.Compare(a.ID, b.ID) })
	return out, wrap("claim notifications", err)
}

// FinishNotification records a delivery attempt.
func (s *Store) FinishNotification(ctx context.Context, id int64, delivered bool, errText string, next, at time.Time) error {
	state, deliveredAt := escrow.NotificationPending, sql.NullInt64{}
	switch {
	case delivered:
		state, deliveredAt = escrow.NotificationDelivered, nullMicros(at)
	case next.IsZero():
		state = escrow.NotificationFailed
	}
	nextAt := micros(at)
	if !next.IsZero() {
		nextAt = micros(next)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE notifications SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt = ?,
			delivered_at = ?, claimed_by = '', claimed_until = NULL WHERE id = ?`), state, errText, nextAt, deliveredAt, id)
		return affected(res, err)
	})
	return wrap(fmt.Sprintf("finish notification %d", id), err)
}

// Notifications lists notifications, newest first.
func (s *Store) Notifications(ctx context.Context, q escrow.NotificationQuery) ([]escrow.Notification, error) {
	query, args := `SELECT `+notificationCols+` FROM notifications`, []any{}
	if len(q.States) > 0 {
		ph := make([]string, len(q.States))
		for i, st := range q.States {
			ph[i], args = "?", append(args, string(st))
		}
		query += " WHERE state IN (" + strings.Join(ph, ", ") + ")"
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, s.q(query+" ORDER BY id DESC LIMIT ?"), append(args, limit)...)
	if err != nil {
		return nil, wrap("notifications", err)
	}
	defer rows.Close()
	var out []escrow.Notification
	for rows.Next() {
		n, err := scanNotification(rows)
		if err != nil {
			return nil, wrap("notifications", err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, wrap("notifications", err)
	}
	return out, nil
}
