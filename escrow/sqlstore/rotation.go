package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

var _ escrow.RotationStore = (*Store)(nil)

// prefixed qualifies a column list with a table alias.
func prefixed(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = alias + "." + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

// ScheduleJob creates j unless the device has an open job of its kind. The
// unique index on open jobs makes a concurrent second insert fail; that
// replica then returns the winner's job.
func (s *Store) ScheduleJob(ctx context.Context, j escrow.Job) (escrow.Job, bool, error) {
	op := fmt.Sprintf("schedule %s job for %s", j.Kind, j.Device)
	if j.State == "" {
		j.State = escrow.JobPending
	}
	if err := validJob(j); err != nil {
		return escrow.Job{}, false, fmt.Errorf("sqlstore: %s: %w", op, err)
	}
	data, err := jobData(j)
	if err != nil {
		return escrow.Job{}, false, wrap(op, err)
	}
	for attempt := 0; ; attempt++ {
		var (
			out     escrow.Job
			created bool
		)
		err = s.write(ctx, func(tx *sql.Tx) error {
			created = false // the transaction may run again
			var id int64
			err := tx.QueryRowContext(ctx, s.q(`SELECT id FROM jobs WHERE kind = ? AND device = ? AND state IN ('pending', 'waiting')`),
				j.Kind, j.Device).Scan(&id)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				id, err = s.insertJob(ctx, tx, j, data, micros(s.now()))
				created = true
			case err != nil:
				return err
			}
			if err != nil {
				return err
			}
			out, err = scanJob(tx.QueryRowContext(ctx, s.q(`SELECT `+jobCols+` FROM jobs WHERE id = ?`), id))
			return err
		})
		if err == nil {
			return out, created, nil
		}
		if attempt == 0 && errors.Is(wrap(op, err), escrow.ErrConflict) {
			continue // another replica created it: read theirs
		}
		return escrow.Job{}, false, wrap(op, err)
	}
}

// RotationCandidates lists current PRK versions due for rotation with no
// job deciding their fate (see escrow.RotationCandidateQuery).
func (s *Store) RotationCandidates(ctx context.Context, q escrow.RotationCandidateQuery) ([]escrow.KeyVersion, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 500
	}
	due := "(kv.disclosed_at IS NOT NULL AND kv.disclosed_at <= ?)"
	args := []any{escrow.KindPRK, escrow.StatusEscrowed, micros(q.DisclosedBefore)}
	if !q.ReceivedBefore.IsZero() {
		due = "(" + due + " OR kv.received_at <= ?)"
		args = append(args, micros(q.ReceivedBefore))
	}
	return s.versions(ctx, "rotation candidates", `SELECT `+prefixed("kv", versionCols)+`
		FROM key_versions kv JOIN devices d ON d.id = kv.device
		WHERE kv.kind = ? AND kv.status = ? AND kv.superseded_at IS NULL AND d.retired_at IS NULL AND `+due+`
			AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.kind = ? AND j.device = kv.device
				AND (j.state IN ('pending', 'waiting') OR (j.ref = kv.id AND j.state = 'failed')))
		ORDER BY kv.id LIMIT ?`, append(args, escrow.JobRotation, limit)...)
}

// DisclosedKeys lists current PRK versions disclosed before t.
func (s *Store) DisclosedKeys(ctx context.Context, before time.Time, limit int) ([]escrow.KeyVersion, error) {
	if limit <= 0 {
		limit = 1000
	}
	return s.versions(ctx, "disclosed keys", `SELECT `+prefixed("kv", versionCols)+`
		FROM key_versions kv JOIN devices d ON d.id = kv.device
		WHERE kv.kind = ? AND kv.status = ? AND kv.superseded_at IS NULL AND d.retired_at IS NULL
			AND kv.disclosed_at IS NOT NULL AND kv.disclosed_at <= ?
		ORDER BY kv.disclosed_at, kv.id LIMIT ?`,
		escrow.KindPRK, escrow.StatusEscrowed, micros(before), limit)
}

func (s *Store) versions(ctx context.Context, op, query string, args ...any) ([]escrow.KeyVersion, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []escrow.KeyVersion
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, v)
	}
	return out, wrap(op, rows.Err())
}

const campaignCols = `id, name, reason, filter, created_by, created_by_kind, created_by_name, created_at, devices, skipped`

func scanCampaign(sc scanner) (escrow.Campaign, error) {
	var (
		c    escrow.Campaign
		kind string
		at   int64
	)
	if err := sc.Scan(&c.ID, &c.Name, &c.Reason, &c.Filter, &c.CreatedBy.ID, &kind, &c.CreatedBy.Name, &at, &c.Devices, &c.Skipped); err != nil {
		return escrow.Campaign{}, err
	}
	c.CreatedBy.Kind, c.CreatedAt = escrow.ActorKind(kind), fromMicros(at)
	return c, nil
}

// CreateCampaign stores a campaign and appends its audit event, atomically.
func (s *Store) CreateCampaign(ctx context.Context, c escrow.Campaign, e escrow.Event) (escrow.Campaign, error) {
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.q(`INSERT INTO campaigns (name, reason, filter, created_by, created_by_kind, created_by_name, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`), c.Name, c.Reason, c.Filter, c.CreatedBy.ID, string(c.CreatedBy.Kind), c.CreatedBy.Name,
			micros(s.orNow(c.CreatedAt))).Scan(&c.ID)
		if err != nil {
			return err
		}
		if e.Detail == nil {
			e.Detail = map[string]string{}
		}
		e.Detail["campaign"] = fmt.Sprint(c.ID)
		_, err = s.appendAudit(ctx, tx, e)
		return err
	})
	c.CreatedAt = escrow.AuditTime(s.orNow(c.CreatedAt))
	return c, wrap("create campaign", err)
}

// FinishCampaign records how many devices a campaign scheduled and skipped.
func (s *Store) FinishCampaign(ctx context.Context, id int64, devices, skipped int) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`UPDATE campaigns SET devices = ?, skipped = ? WHERE id = ?`), devices, skipped, id)
		return err
	})
	return wrap(fmt.Sprintf("finish campaign %d", id), err)
}

// Campaign returns a campaign with its jobs counted by lifecycle state.
func (s *Store) Campaign(ctx context.Context, id int64) (escrow.CampaignProgress, error) {
	op := fmt.Sprintf("campaign %d", id)
	c, err := scanCampaign(s.db.QueryRowContext(ctx, s.q(`SELECT `+campaignCols+` FROM campaigns WHERE id = ?`), id))
	if err != nil {
		return escrow.CampaignProgress{}, wrap(op, err)
	}
	p := escrow.CampaignProgress{Campaign: c, States: map[string]int{}, Errors: map[string]int{}}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT state, step, error, COUNT(*) FROM jobs WHERE campaign = ? GROUP BY state, step, error`), id)
	if err != nil {
		return escrow.CampaignProgress{}, wrap(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			j   escrow.Job
			msg string
			n   int
		)
		if err := rows.Scan(&j.State, &j.Step, &msg, &n); err != nil {
			return escrow.CampaignProgress{}, wrap(op, err)
		}
		st := escrow.RotationState(j)
		p.States[st] += n
		if st == escrow.RotationFailed && msg != "" {
			p.Errors[msg] += n
		}
	}
	return p, wrap(op, rows.Err())
}

// Campaigns lists campaigns, newest first.
func (s *Store) Campaigns(ctx context.Context, limit int) ([]escrow.Campaign, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+campaignCols+` FROM campaigns ORDER BY id DESC LIMIT ?`), limit)
	if err != nil {
		return nil, wrap("campaigns", err)
	}
	defer rows.Close()
	var out []escrow.Campaign
	for rows.Next() {
		c, err := scanCampaign(rows)
		if err != nil {
			return nil, wrap("campaigns", err)
		}
		out = append(out, c)
	}
	return out, wrap("campaigns", rows.Err())
}

// MarkRegeneration marks a device as needing key regeneration (or updates
// the reason of its open mark) and appends e when the mark is new. It
// reports whether the mark is new.
func (s *Store) MarkRegeneration(ctx context.Context, r escrow.Regeneration, e escrow.Event) (bool, error) {
	var fresh bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var cleared sql.NullInt64
		err := tx.QueryRowContext(ctx, s.q(`SELECT cleared_at FROM key_regenerations WHERE device = ?`+s.dialect.forUpdate()), r.Device).Scan(&cleared)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			fresh = true
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO key_regenerations (device, reason, version_id, since) VALUES (?, ?, ?, ?)`),
				r.Device, r.Reason, r.VersionID, micros(s.orNow(r.Since)))
		case err != nil:
			return err
		case cleared.Valid:
			fresh = true
			_, err = tx.ExecContext(ctx, s.q(`UPDATE key_regenerations SET reason = ?, version_id = ?, since = ?, cleared_at = NULL WHERE device = ?`),
				r.Reason, r.VersionID, micros(s.orNow(r.Since)), r.Device)
		default:
			_, err = tx.ExecContext(ctx, s.q(`UPDATE key_regenerations SET reason = ?, version_id = ? WHERE device = ?`), r.Reason, r.VersionID, r.Device)
		}
		if err != nil || !fresh {
			return err
		}
		_, err = s.appendAudit(ctx, tx, e)
		return err
	})
	return fresh, wrap("mark key regeneration of "+string(r.Device), err)
}

// ClearRegeneration clears a device's open mark and appends e. It reports
// whether there was one.
func (s *Store) ClearRegeneration(ctx context.Context, id escrow.DeviceID, at time.Time, e escrow.Event) (bool, error) {
	var cleared bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE key_regenerations SET cleared_at = ? WHERE device = ? AND cleared_at IS NULL`), micros(s.orNow(at)), id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil || n == 0 {
			return err
		}
		cleared = true
		_, err = s.appendAudit(ctx, tx, e)
		return err
	})
	return cleared, wrap("clear key regeneration of "+string(id), err)
}

// Regenerations lists regeneration marks, oldest first.
func (s *Store) Regenerations(ctx context.Context, q escrow.RegenerationQuery) ([]escrow.Regeneration, error) {
	var (
		where []string
		args  []any
	)
	if !q.IncludeDone {
		where = append(where, "r.cleared_at IS NULL")
	}
	if q.Device != "" {
		where, args = append(where, "r.device = ?"), append(args, q.Device)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	query := `SELECT r.device, COALESCE(d.serial, ''), r.reason, r.version_id, r.since, r.cleared_at
		FROM key_regenerations r LEFT JOIN devices d ON d.id = r.device`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY r.since, r.device LIMIT ?"
	rows, err := s.db.QueryContext(ctx, s.q(query), append(args, limit)...)
	if err != nil {
		return nil, wrap("key regenerations", err)
	}
	defer rows.Close()
	var out []escrow.Regeneration
	for rows.Next() {
		var (
			r       escrow.Regeneration
			since   int64
			cleared sql.NullInt64
		)
		if err := rows.Scan(&r.Device, &r.Serial, &r.Reason, &r.VersionID, &since, &cleared); err != nil {
			return nil, wrap("key regenerations", err)
		}
		r.Since, r.ClearedAt = fromMicros(since), fromNullMicros(cleared)
		out = append(out, r)
	}
	return out, wrap("key regenerations", rows.Err())
}
