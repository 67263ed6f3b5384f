package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

const versionCols = `id, device, kind, seq, source, status, secret_version, cert_fingerprint, cms_sha256, error, warning,
	received_at, superseded_at, disclosed_at, verified_at`

func scanVersion(sc scanner) (escrow.KeyVersion, error) {
	var (
		v                               escrow.KeyVersion
		received                        int64
		superseded, disclosed, verified sql.NullInt64
	)
	err := sc.Scan(&v.ID, &v.Device, &v.Kind, &v.Seq, &v.Source, &v.Status, &v.SecretVersion, &v.CertFingerprint,
		&v.CMSSHA256, &v.Error, &v.Warning, &received, &superseded, &disclosed, &verified)
	if err != nil {
		return escrow.KeyVersion{}, err
	}
	v.ReceivedAt = fromMicros(received)
	v.SupersededAt, v.DisclosedAt, v.VerifiedAt = fromNullMicros(superseded), fromNullMicros(disclosed), fromNullMicros(verified)
	return v, nil
}

// KeyVersions lists a device's versions of a kind, oldest first.
func (s *Store) KeyVersions(ctx context.Context, id escrow.DeviceID, kind escrow.SecretKind) ([]escrow.KeyVersion, error) {
	op := fmt.Sprintf("key versions of %s/%s", id, kind)
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+versionCols+` FROM key_versions WHERE device = ? AND kind = ? ORDER BY seq`), id, kind)
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

// KeyVersionByCMS finds the version a CMS blob (by SHA-256) belongs to, or
// ErrNotFound.
func (s *Store) KeyVersionByCMS(ctx context.Context, id escrow.DeviceID, cmsSHA256 string) (escrow.KeyVersion, error) {
	v, err := versionByCMS(ctx, s.db, s.dialect, id, cmsSHA256)
	return v, wrap(fmt.Sprintf("key version of %s by CMS", id), err)
}

// querier is a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func versionByCMS(ctx context.Context, q querier, d Dialect, id escrow.DeviceID, cmsSHA256 string) (escrow.KeyVersion, error) {
	return scanVersion(q.QueryRowContext(ctx, d.Rebind(`SELECT `+versionCols+` FROM key_versions
		WHERE id = (SELECT version_id FROM key_cms WHERE device = ? AND cms_sha256 = ?)`), id, cmsSHA256))
}

// RecordKey applies r in one transaction; see escrow.KeyStore. A CMS the
// device already sent changes nothing but clears the outbox item, and appends
// no audit record.
func (s *Store) RecordKey(ctx context.Context, r escrow.KeyRecord) (escrow.KeyVersion, bool, error) {
	id := r.Device.ID
	if id == "" {
		id = r.Version.Device
	}
	op := fmt.Sprintf("record key for %s", id)
	if id == "" || (r.Version.Device != "" && r.Version.Device != id) {
		return escrow.KeyVersion{}, false, fmt.Errorf("sqlstore: %s: %w: device %q and version device %q", op, escrow.ErrInvalid, r.Device.ID, r.Version.Device)
	}
	r.Device.ID, r.Version.Device = id, id
	var (
		v       escrow.KeyVersion
		created bool
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		v, created, err = s.recordKey(ctx, tx, r)
		return err
	})
	if err != nil {
		return escrow.KeyVersion{}, false, wrap(op, err)
	}
	return v, created, nil
}

func (s *Store) recordKey(ctx context.Context, tx *sql.Tx, r escrow.KeyRecord) (escrow.KeyVersion, bool, error) {
	// Upserting the device locks its row on PostgreSQL (SQLite's write
	// transactions are exclusive already): from here on, records for this
	// device run one at a time, so the checks below cannot race.
	if _, err := s.upsertDevice(ctx, tx, r.Device); err != nil {
		return escrow.KeyVersion{}, false, err
	}
	if sha := r.Version.CMSSHA256; sha != "" {
		v, err := versionByCMS(ctx, tx, s.dialect, r.Device.ID, sha)
		if err == nil {
			return v, false, s.deleteOutbox(ctx, tx, r.OutboxID)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return escrow.KeyVersion{}, false, err
		}
	}
	if r.SameAs != 0 {
		v, err := s.attachCMS(ctx, tx, r)
		return v, false, err
	}
	v, err := s.addVersion(ctx, tx, r)
	return v, err == nil, err
}

// attachCMS records a new blob of a key the device already has: it maps the
// blob to version r.SameAs and marks that version verified if asked.
func (s *Store) attachCMS(ctx context.Context, tx *sql.Tx, r escrow.KeyRecord) (escrow.KeyVersion, error) {
	v, err := scanVersion(tx.QueryRowContext(ctx, s.q(`SELECT `+versionCols+` FROM key_versions WHERE id = ? AND device = ?`),
		r.SameAs, r.Device.ID))
	if err != nil {
		return escrow.KeyVersion{}, err // ErrNoRows: no such version of this device
	}
	at := s.orNow(r.Version.ReceivedAt)
	if err := s.insertCMS(ctx, tx, r, v.ID, at); err != nil {
		return escrow.KeyVersion{}, err
	}
	if r.Verify && v.VerifiedAt.IsZero() {
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE key_versions SET verified_at = ? WHERE id = ? AND verified_at IS NULL`),
			micros(at), v.ID); err != nil {
			return escrow.KeyVersion{}, err
		}
		v.VerifiedAt = escrow.AuditTime(at)
	}
	if err := s.deleteOutbox(ctx, tx, r.OutboxID); err != nil {
		return escrow.KeyVersion{}, err
	}
	_, err = s.appendAudit(ctx, tx, r.Event)
	return v, err
}

// addVersion adds the next version of the device's kind. An escrowed version
// supersedes every other current one, at its own ReceivedAt.
func (s *Store) addVersion(ctx context.Context, tx *sql.Tx, r escrow.KeyRecord) (escrow.KeyVersion, error) {
	v := r.Version
	if v.Kind == "" || v.Status == "" {
		return escrow.KeyVersion{}, fmt.Errorf("%w: a new key version needs a kind and a status", escrow.ErrInvalid)
	}
	v.ReceivedAt = escrow.AuditTime(s.orNow(v.ReceivedAt))
	// A new version starts undisclosed, unless the caller says its key was
	// disclosed already (an earlier version's key, current again).
	v.SupersededAt, v.VerifiedAt = time.Time{}, time.Time{}
	var verified, disclosed sql.NullInt64
	if !v.DisclosedAt.IsZero() {
		v.DisclosedAt = escrow.AuditTime(v.DisclosedAt)
		disclosed = sql.NullInt64{Int64: micros(v.DisclosedAt), Valid: true}
	}
	if r.Verify && v.Status == escrow.StatusEscrowed {
		// The device itself reported this key (SecurityInfo): verified now.
		v.VerifiedAt, verified = v.ReceivedAt, sql.NullInt64{Int64: micros(v.ReceivedAt), Valid: true}
	}
	err := tx.QueryRowContext(ctx, s.q(`SELECT COALESCE(MAX(seq), 0) + 1 FROM key_versions WHERE device = ? AND kind = ?`),
		v.Device, v.Kind).Scan(&v.Seq)
	if err != nil {
		return escrow.KeyVersion{}, err
	}
	err = tx.QueryRowContext(ctx, s.q(`INSERT INTO key_versions (device, kind, seq, source, status, secret_version,
		cert_fingerprint, cms_sha256, error, warning, received_at, verified_at, disclosed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		v.Device, v.Kind, v.Seq, v.Source, v.Status, v.SecretVersion, v.CertFingerprint, v.CMSSHA256, v.Error, v.Warning,
		micros(v.ReceivedAt), verified, disclosed).Scan(&v.ID)
	if err != nil {
		return escrow.KeyVersion{}, err
	}
	if err := s.insertCMS(ctx, tx, r, v.ID, v.ReceivedAt); err != nil {
		return escrow.KeyVersion{}, err
	}
	if v.Status == escrow.StatusEscrowed {
		_, err := tx.ExecContext(ctx, s.q(`UPDATE key_versions SET superseded_at = ?
			WHERE device = ? AND kind = ? AND status = ? AND superseded_at IS NULL AND id <> ?`),
			micros(v.ReceivedAt), v.Device, v.Kind, escrow.StatusEscrowed, v.ID)
		if err != nil {
			return escrow.KeyVersion{}, err
		}
	}
	if err := s.deleteOutbox(ctx, tx, r.OutboxID); err != nil {
		return escrow.KeyVersion{}, err
	}
	_, err = s.appendAudit(ctx, tx, r.Event)
	return v, err
}

// insertCMS maps r's CMS blob, if it has one, to version id.
func (s *Store) insertCMS(ctx context.Context, tx *sql.Tx, r escrow.KeyRecord, id int64, at time.Time) error {
	if r.Version.CMSSHA256 == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO key_cms (device, cms_sha256, version_id, cms, received_at) VALUES (?, ?, ?, ?, ?)`),
		r.Device.ID, r.Version.CMSSHA256, id, r.CMS, micros(at))
	return err
}

// RecordReveal marks a version disclosed (the first time only) and appends
// e, in one transaction. ErrNotFound for an unknown version.
func (s *Store) RecordReveal(ctx context.Context, versionID int64, e escrow.Event) (escrow.AuditRecord, error) {
	var rec escrow.AuditRecord
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE key_versions SET disclosed_at = COALESCE(disclosed_at, ?) WHERE id = ?`),
			micros(s.orNow(e.Time)), versionID)
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
	return rec, wrap(fmt.Sprintf("record reveal of key version %d", versionID), err)
}

// WithdrawKey supersedes the device's current version of kind, with no
// successor, and appends e (naming the version), in one transaction; see
// escrow.KeyStore. Nothing current: no change, no audit record.
func (s *Store) WithdrawKey(ctx context.Context, id escrow.DeviceID, kind escrow.SecretKind, e escrow.Event) (escrow.KeyVersion, bool, error) {
	op := fmt.Sprintf("withdraw %s of %s", kind, id)
	if id == "" || kind == "" {
		return escrow.KeyVersion{}, false, fmt.Errorf("sqlstore: %s: %w: a device and a kind are needed", op, escrow.ErrInvalid)
	}
	var (
		v         escrow.KeyVersion
		withdrawn bool
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		v, withdrawn = escrow.KeyVersion{}, false // a retried transaction starts over
		// Lock the device's row on PostgreSQL, as RecordKey does by
		// upserting it: a withdrawal and a new version of the same device
		// run one at a time. An unknown device has nothing to withdraw.
		var locked string
		err := tx.QueryRowContext(ctx, s.q(`SELECT id FROM devices WHERE id = ?`+s.dialect.forUpdate()), id).Scan(&locked)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
		cur, err := scanVersion(tx.QueryRowContext(ctx, s.q(`SELECT `+versionCols+` FROM key_versions
			WHERE device = ? AND kind = ? AND status = ? AND superseded_at IS NULL ORDER BY seq DESC LIMIT 1`),
			id, kind, escrow.StatusEscrowed))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
		at := escrow.AuditTime(s.orNow(e.Time))
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE key_versions SET superseded_at = ?
			WHERE device = ? AND kind = ? AND status = ? AND superseded_at IS NULL`),
			micros(at), id, kind, escrow.StatusEscrowed); err != nil {
			return err
		}
		ev := e
		ev.Time = at // the record and the version say the same time
		ev.Detail = maps.Clone(e.Detail)
		if ev.Detail == nil {
			ev.Detail = map[string]string{}
		}
		ev.Detail["version"], ev.Detail["secret_version"] = fmt.Sprint(cur.Seq), fmt.Sprint(cur.SecretVersion)
		if _, err := s.appendAudit(ctx, tx, ev); err != nil {
			return err
		}
		cur.SupersededAt = at
		v, withdrawn = cur, true
		return nil
	})
	if err != nil {
		return escrow.KeyVersion{}, false, wrap(op, err)
	}
	return v, withdrawn, nil
}
