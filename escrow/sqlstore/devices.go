package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

const deviceCols = `id, udid, serial, device_key, hostname, model, os_version, owner, owner_email, platform,
	attrs, created_at, updated_at, retired_at`

func scanDevice(sc scanner) (escrow.Device, error) {
	var (
		d                escrow.Device
		attrs            string
		created, updated int64
		retired          sql.NullInt64
	)
	err := sc.Scan(&d.ID, &d.UDID, &d.Serial, &d.DeviceKey, &d.Hostname, &d.Model, &d.OSVersion, &d.Owner, &d.OwnerEmail,
		&d.Platform, &attrs, &created, &updated, &retired)
	if err != nil {
		return escrow.Device{}, err
	}
	if d.Attrs, err = decodeStrings(attrs); err != nil {
		return escrow.Device{}, fmt.Errorf("device %s: attrs: %w", d.ID, err)
	}
	d.CreatedAt, d.UpdatedAt, d.RetiredAt = fromMicros(created), fromMicros(updated), fromNullMicros(retired)
	return d, nil
}

// encodeStrings stores a map of strings (device attrs, audit detail) as a
// JSON object; encoding/json sorts the keys.
func encodeStrings(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // a map of strings always marshals
	}
	return string(b)
}

// decodeStrings reads what encodeStrings stored; an empty object is nil.
func decodeStrings(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// Device returns one device, or ErrNotFound.
func (s *Store) Device(ctx context.Context, id escrow.DeviceID) (escrow.Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, s.q(`SELECT `+deviceCols+` FROM devices WHERE id = ?`), id))
	return d, wrap(fmt.Sprintf("device %s", id), err)
}

// UpsertDevice creates the device or merges the non-empty fields of d into
// it (Attrs key by key). CreatedAt is kept; UpdatedAt moves when something
// changed. Retirement is only changed by RetireDevice.
func (s *Store) UpsertDevice(ctx context.Context, d escrow.Device) (escrow.Device, error) {
	var out escrow.Device
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.upsertDevice(ctx, tx, d)
		return err
	})
	return out, wrap(fmt.Sprintf("upsert device %s", d.ID), err)
}

// upsertDevice creates or merges d in tx. On PostgreSQL it leaves the device
// row locked until tx ends, which is what serialises key records per device.
func (s *Store) upsertDevice(ctx context.Context, tx *sql.Tx, d escrow.Device) (escrow.Device, error) {
	if d.ID == "" {
		return escrow.Device{}, fmt.Errorf("%w: device without an ID", escrow.ErrInvalid)
	}
	now := micros(s.now())
	// Insert, or do nothing when the device exists. A concurrent insert of
	// the same ID makes this wait for that transaction, then do nothing.
	res, err := tx.ExecContext(ctx, s.q(`INSERT INTO devices (`+deviceCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (id) DO NOTHING`),
		d.ID, d.UDID, d.Serial, d.DeviceKey, d.Hostname, d.Model, d.OSVersion, d.Owner, d.OwnerEmail, d.Platform,
		encodeStrings(d.Attrs), now, now)
	if err != nil {
		return escrow.Device{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return escrow.Device{}, err
	} else if n == 1 {
		d.CreatedAt, d.UpdatedAt, d.RetiredAt = fromMicros(now), fromMicros(now), time.Time{}
		d.Attrs = maps.Clone(d.Attrs)
		if len(d.Attrs) == 0 {
			d.Attrs = nil
		}
		return d, nil
	}
	cur, err := scanDevice(tx.QueryRowContext(ctx, s.q(`SELECT `+deviceCols+` FROM devices WHERE id = ?`+s.dialect.forUpdate()), d.ID))
	if err != nil {
		return escrow.Device{}, err
	}
	merged, changed := mergeDevice(cur, d)
	if !changed {
		return cur, nil
	}
	merged.UpdatedAt = fromMicros(now)
	_, err = tx.ExecContext(ctx, s.q(`UPDATE devices SET udid = ?, serial = ?, device_key = ?, hostname = ?, model = ?,
		os_version = ?, owner = ?, owner_email = ?, platform = ?, attrs = ?, updated_at = ? WHERE id = ?`),
		merged.UDID, merged.Serial, merged.DeviceKey, merged.Hostname, merged.Model, merged.OSVersion, merged.Owner,
		merged.OwnerEmail, merged.Platform, encodeStrings(merged.Attrs), now, merged.ID)
	return merged, err
}

// mergeDevice applies the non-empty fields of d and its attrs to cur.
func mergeDevice(cur, d escrow.Device) (escrow.Device, bool) {
	changed := false
	for _, f := range []struct{ dst, src *string }{
		{&cur.UDID, &d.UDID}, {&cur.Serial, &d.Serial}, {&cur.DeviceKey, &d.DeviceKey}, {&cur.Hostname, &d.Hostname},
		{&cur.Model, &d.Model}, {&cur.OSVersion, &d.OSVersion}, {&cur.Owner, &d.Owner}, {&cur.OwnerEmail, &d.OwnerEmail},
		{&cur.Platform, &d.Platform},
	} {
		if *f.src != "" && *f.src != *f.dst {
			*f.dst, changed = *f.src, true
		}
	}
	// cur.Attrs was just decoded from the row: ours to change.
	for k, v := range d.Attrs {
		if old, ok := cur.Attrs[k]; !ok || old != v {
			if cur.Attrs == nil {
				cur.Attrs = map[string]string{}
			}
			cur.Attrs[k], changed = v, true
		}
	}
	return cur, changed
}

// FindDevices searches devices by a case-insensitive substring of ID, UDID,
// serial, hostname, owner or owner e-mail, in ID order.
func (s *Store) FindDevices(ctx context.Context, q escrow.DeviceQuery) ([]escrow.Device, error) {
	var (
		where []string
		args  []any
	)
	if !q.IncludeRetired {
		where = append(where, "retired_at IS NULL")
	}
	if q.AfterID != "" {
		where = append(where, "id > ?")
		args = append(args, q.AfterID)
	}
	if q.Text != "" {
		p := containsPattern(q.Text)
		var or []string
		for _, col := range []string{"id", "udid", "serial", "hostname", "owner", "owner_email"} {
			or = append(or, col+" "+s.dialect.like()+" ? ESCAPE '"+likeEscape+"'")
			args = append(args, p)
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	query := `SELECT ` + deviceCols + ` FROM devices`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY id LIMIT ?`
	args = append(args, limit)

	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, wrap("find devices", err)
	}
	defer rows.Close()
	var out []escrow.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, wrap("find devices", err)
		}
		out = append(out, d)
	}
	return out, wrap("find devices", rows.Err())
}

// RetireDevice marks a device retired (keeping the first retirement time)
// and appends e, in one transaction. ErrNotFound for an unknown device, and
// then nothing is appended.
func (s *Store) RetireDevice(ctx context.Context, id escrow.DeviceID, e escrow.Event) (escrow.AuditRecord, error) {
	var rec escrow.AuditRecord
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET retired_at = COALESCE(retired_at, ?), updated_at = ? WHERE id = ?`),
			micros(s.orNow(e.Time)), micros(s.now()), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return sql.ErrNoRows
		}
		rec, err = s.appendAudit(ctx, tx, e)
		return err
	})
	return rec, wrap(fmt.Sprintf("retire device %s", id), err)
}
