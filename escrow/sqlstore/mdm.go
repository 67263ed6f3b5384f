package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/token"
)

var (
	_ escrow.CommandStore    = (*Store)(nil)
	_ escrow.JobStore        = (*Store)(nil)
	_ escrow.AccountStore    = (*Store)(nil)
	_ escrow.EventStore      = (*Store)(nil)
	_ escrow.MutableSettings = (*Store)(nil)
)

// RecordCommand stores a command before it is enqueued.
func (s *Store) RecordCommand(ctx context.Context, c escrow.Command) error {
	op := fmt.Sprintf("record command %s", c.UUID)
	if c.UUID == "" || c.Device == "" || c.RequestType == "" {
		return fmt.Errorf("sqlstore: %s: %w: UUID, device and request type are required", op, escrow.ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO mdm_commands (uuid, device, request_type, purpose, job_id, enqueued_at)
			VALUES (?, ?, ?, ?, ?, ?)`), c.UUID, c.Device, c.RequestType, c.Purpose, c.JobID, micros(s.orNow(c.EnqueuedAt)))
		return err
	})
	return wrap(op, err)
}

const commandCols = `uuid, device, request_type, purpose, job_id, enqueued_at, status, answered_at, error`

func scanCommand(sc scanner) (escrow.Command, error) {
	var (
		c        escrow.Command
		enqueued int64
		answered sql.NullInt64
	)
	if err := sc.Scan(&c.UUID, &c.Device, &c.RequestType, &c.Purpose, &c.JobID, &enqueued, &c.Status, &answered, &c.Error); err != nil {
		return escrow.Command{}, err
	}
	c.EnqueuedAt, c.AnsweredAt = fromMicros(enqueued), fromNullMicros(answered)
	return c, nil
}

// Command returns a command sent to a device.
func (s *Store) Command(ctx context.Context, id escrow.DeviceID, uuid string) (escrow.Command, error) {
	c, err := scanCommand(s.db.QueryRowContext(ctx, s.q(`SELECT `+commandCols+` FROM mdm_commands WHERE device = ? AND uuid = ?`), id, uuid))
	return c, wrap("command "+uuid, err)
}

// AnswerCommand records the device's latest answer to a command.
func (s *Store) AnswerCommand(ctx context.Context, id escrow.DeviceID, uuid, status, errText string, at time.Time) (escrow.Command, error) {
	var c escrow.Command
	err := s.write(ctx, func(tx *sql.Tx) error {
		// No such command: sql.ErrNoRows, which wrap makes ErrNotFound.
		var err error
		c, err = scanCommand(tx.QueryRowContext(ctx, s.q(`UPDATE mdm_commands SET status = ?, error = ?, answered_at = ?
			WHERE device = ? AND uuid = ? RETURNING `+commandCols), status, errText, micros(s.orNow(at)), id, uuid))
		return err
	})
	return c, wrap("answer command "+uuid, err)
}

// Commands lists a device's commands, newest first.
func (s *Store) Commands(ctx context.Context, id escrow.DeviceID, limit int) ([]escrow.Command, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+commandCols+` FROM mdm_commands WHERE device = ? ORDER BY enqueued_at DESC, uuid LIMIT ?`), id, limit)
	if err != nil {
		return nil, wrap("commands of "+string(id), err)
	}
	defer rows.Close()
	var out []escrow.Command
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, wrap("commands of "+string(id), err)
		}
		out = append(out, c)
	}
	return out, wrap("commands of "+string(id), rows.Err())
}

const jobCols = `id, kind, device, state, step, run_at, attempts, error, data, campaign, ref, created_at, updated_at`

func scanJob(sc scanner) (escrow.Job, error) {
	var (
		j                       escrow.Job
		runAt, created, updated int64
		data                    string
	)
	if err := sc.Scan(&j.ID, &j.Kind, &j.Device, &j.State, &j.Step, &runAt, &j.Attempts, &j.Error, &data, &j.Campaign, &j.Ref, &created, &updated); err != nil {
		return escrow.Job{}, err
	}
	j.RunAt, j.CreatedAt, j.UpdatedAt = fromMicros(runAt), fromMicros(created), fromMicros(updated)
	if err := json.Unmarshal([]byte(data), &j.Data); err != nil {
		return escrow.Job{}, fmt.Errorf("job %d data: %w", j.ID, err)
	}
	return j, nil
}

func jobData(j escrow.Job) (string, error) {
	if j.Data == nil {
		return "{}", nil
	}
	b, err := json.Marshal(j.Data)
	return string(b), err
}

func validJob(j escrow.Job) error {
	if j.Kind == "" || j.Device == "" {
		return fmt.Errorf("%w: job kind and device are required", escrow.ErrInvalid)
	}
	switch j.State {
	case escrow.JobPending, escrow.JobWaiting, escrow.JobDone, escrow.JobFailed, escrow.JobCanceled:
		return nil
	}
	return fmt.Errorf("%w: job state %q", escrow.ErrInvalid, j.State)
}

// PutJob creates a job, or updates the open job of the same kind and device.
func (s *Store) PutJob(ctx context.Context, j escrow.Job) (escrow.Job, error) {
	op := fmt.Sprintf("put %s job for %s", j.Kind, j.Device)
	if j.State == "" {
		j.State = escrow.JobPending
	}
	if err := validJob(j); err != nil {
		return escrow.Job{}, fmt.Errorf("sqlstore: %s: %w", op, err)
	}
	data, err := jobData(j)
	if err != nil {
		return escrow.Job{}, wrap(op, err)
	}
	var out escrow.Job
	err = s.write(ctx, func(tx *sql.Tx) error {
		now := micros(s.now())
		var id int64
		err := tx.QueryRowContext(ctx, s.q(`SELECT id FROM jobs WHERE kind = ? AND device = ? AND state IN ('pending', 'waiting')`+s.dialect.forUpdate()),
			j.Kind, j.Device).Scan(&id)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			id, err = s.insertJob(ctx, tx, j, data, now)
		case err == nil:
			_, err = tx.ExecContext(ctx, s.q(`UPDATE jobs SET state = ?, step = ?, run_at = ?, attempts = ?, error = ?, data = ?,
				campaign = ?, ref = ?, updated_at = ?, claimed_by = '', claimed_until = NULL WHERE id = ?`),
				j.State, j.Step, micros(s.orNow(j.RunAt)), j.Attempts, j.Error, data, j.Campaign, j.Ref, now, id)
		}
		if err != nil {
			return err
		}
		out, err = scanJob(tx.QueryRowContext(ctx, s.q(`SELECT `+jobCols+` FROM jobs WHERE id = ?`), id))
		return err
	})
	return out, wrap(op, err)
}

func (s *Store) insertJob(ctx context.Context, tx *sql.Tx, j escrow.Job, data string, now int64) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, s.q(`INSERT INTO jobs (kind, device, state, step, run_at, attempts, error, data, campaign, ref, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		j.Kind, j.Device, j.State, j.Step, micros(s.orNow(j.RunAt)), j.Attempts, j.Error, data, j.Campaign, j.Ref, now, now).Scan(&id)
	return id, err
}

// ClaimJobs leases up to limit open, due jobs of a kind to owner.
func (s *Store) ClaimJobs(ctx context.Context, kind, owner string, now, leaseUntil time.Time, limit int) ([]escrow.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []escrow.Job
	err := s.write(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, s.q(`UPDATE jobs SET claimed_by = ?, claimed_until = ?
			WHERE id IN (SELECT id FROM jobs WHERE kind = ? AND state IN ('pending', 'waiting') AND run_at <= ?
				AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY run_at, id LIMIT ?`+s.dialect.skipLocked()+`)
			RETURNING `+jobCols),
			owner, micros(leaseUntil), kind, micros(now), micros(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return rows.Err()
	})
	return out, wrap("claim "+kind+" jobs", err)
}

// UpdateJob saves a job by ID and releases its lease.
func (s *Store) UpdateJob(ctx context.Context, j escrow.Job) error {
	op := fmt.Sprintf("update job %d", j.ID)
	if err := validJob(j); err != nil {
		return fmt.Errorf("sqlstore: %s: %w", op, err)
	}
	data, err := jobData(j)
	if err != nil {
		return wrap(op, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE jobs SET state = ?, step = ?, run_at = ?, attempts = ?, error = ?, data = ?,
			campaign = ?, ref = ?, updated_at = ?, claimed_by = '', claimed_until = NULL WHERE id = ?`),
			j.State, j.Step, micros(s.orNow(j.RunAt)), j.Attempts, j.Error, data, j.Campaign, j.Ref, micros(s.now()), j.ID)
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
	return wrap(op, err)
}

// OpenJob returns the open job of a kind for a device.
func (s *Store) OpenJob(ctx context.Context, kind string, id escrow.DeviceID) (escrow.Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, s.q(`SELECT `+jobCols+` FROM jobs WHERE kind = ? AND device = ? AND state IN ('pending', 'waiting')`), kind, id))
	return j, wrap(fmt.Sprintf("open %s job of %s", kind, id), err)
}

// Jobs lists jobs, newest first.
func (s *Store) Jobs(ctx context.Context, q escrow.JobQuery) ([]escrow.Job, error) {
	var where []string
	var args []any
	if q.Kind != "" {
		where, args = append(where, "kind = ?"), append(args, q.Kind)
	}
	if q.Device != "" {
		where, args = append(where, "device = ?"), append(args, q.Device)
	}
	if q.Campaign != 0 {
		where, args = append(where, "campaign = ?"), append(args, q.Campaign)
	}
	if len(q.States) > 0 {
		ph := make([]string, len(q.States))
		for i, st := range q.States {
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	query := `SELECT ` + jobCols + ` FROM jobs`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT ?"
	rows, err := s.db.QueryContext(ctx, s.q(query), append(args, limit)...)
	if err != nil {
		return nil, wrap("jobs", err)
	}
	defer rows.Close()
	var out []escrow.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, wrap("jobs", err)
		}
		out = append(out, j)
	}
	return out, wrap("jobs", rows.Err())
}

// ReplaceAccounts stores a device's accounts and records what changed.
func (s *Store) ReplaceAccounts(ctx context.Context, id escrow.DeviceID, current []token.Account, at time.Time) ([]token.Change, error) {
	op := "replace accounts of " + string(id)
	var changes []token.Change
	err := s.write(ctx, func(tx *sql.Tx) error {
		if s.dialect == Postgres {
			// Serialise reports of one device: the diff reads, then writes.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "accounts:"+string(id)); err != nil {
				return err
			}
		}
		old, err := loadAccounts(ctx, tx, s.dialect, id)
		if err != nil {
			return err
		}
		changes = token.Diff(old, current)
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM device_accounts WHERE device = ?`), id); err != nil {
			return err
		}
		for _, a := range current {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO device_accounts (device, user_name, full_name, uid, guid, secure_token, mobile, logged_in, reported_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`), id, a.UserName, a.FullName, a.UID, a.GUID,
				int(a.HasSecureToken), int(a.MobileAccount), int(a.IsLoggedIn), micros(at)); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO device_account_reports (device, reported_at) VALUES (?, ?)
			ON CONFLICT (device) DO UPDATE SET reported_at = excluded.reported_at`), id, micros(at)); err != nil {
			return err
		}
		for _, c := range changes {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO device_account_changes (device, user_name, kind, detail, at) VALUES (?, ?, ?, ?, ?)`),
				id, c.UserName, string(c.Kind), c.Detail, micros(at)); err != nil {
				return err
			}
		}
		return nil
	})
	return changes, wrap(op, err)
}

func loadAccounts(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, d Dialect, id escrow.DeviceID) ([]token.Account, error) {
	rows, err := q.QueryContext(ctx, d.Rebind(`SELECT user_name, full_name, uid, guid, secure_token, mobile, logged_in
		FROM device_accounts WHERE device = ? ORDER BY user_name`), id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []token.Account
	for rows.Next() {
		var (
			a                   token.Account
			tok, mobile, logged int
		)
		if err := rows.Scan(&a.UserName, &a.FullName, &a.UID, &a.GUID, &tok, &mobile, &logged); err != nil {
			return nil, err
		}
		a.HasSecureToken, a.MobileAccount, a.IsLoggedIn = fde.Flag(tok), fde.Flag(mobile), fde.Flag(logged)
		out = append(out, a)
	}
	return out, rows.Err()
}

// Accounts returns a device's current inventory and when it was reported
// (zero time and no accounts before the first report).
func (s *Store) Accounts(ctx context.Context, id escrow.DeviceID) ([]token.Account, time.Time, error) {
	as, err := loadAccounts(ctx, s.db, s.dialect, id)
	if err != nil {
		return nil, time.Time{}, wrap("accounts of "+string(id), err)
	}
	var at int64
	err = s.db.QueryRowContext(ctx, s.q(`SELECT reported_at FROM device_account_reports WHERE device = ?`), id).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return as, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, wrap("accounts of "+string(id), err)
	}
	return as, fromMicros(at), nil
}

// AccountHistory lists a device's account changes, newest first.
func (s *Store) AccountHistory(ctx context.Context, id escrow.DeviceID, limit int) ([]escrow.AccountChange, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT user_name, kind, detail, at FROM device_account_changes WHERE device = ? ORDER BY id DESC LIMIT ?`), id, limit)
	if err != nil {
		return nil, wrap("account history of "+string(id), err)
	}
	defer rows.Close()
	var out []escrow.AccountChange
	for rows.Next() {
		var (
			c  escrow.AccountChange
			k  string
			at int64
		)
		if err := rows.Scan(&c.UserName, &k, &c.Detail, &at); err != nil {
			return nil, wrap("account history of "+string(id), err)
		}
		c.Device, c.Kind, c.At = id, token.ChangeKind(k), fromMicros(at)
		out = append(out, c)
	}
	return out, wrap("account history of "+string(id), rows.Err())
}

// MarkEvent records a webhook event ID and reports whether it was new.
func (s *Store) MarkEvent(ctx context.Context, id string, at time.Time) (bool, error) {
	var fresh bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO webhook_events (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`), id, micros(s.orNow(at)))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		fresh = n == 1
		return err
	})
	return fresh, wrap("mark event", err)
}

// ForgetEvent removes a webhook event ID (its processing failed).
func (s *Store) ForgetEvent(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`DELETE FROM webhook_events WHERE id = ?`), id)
		return err
	})
	return wrap("forget event", err)
}

// PutSetting creates or replaces a mutable setting.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO settings (name, value) VALUES (?, ?)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value`), name, nonNil(value))
		return err
	})
	return wrap("put setting "+name, err)
}
