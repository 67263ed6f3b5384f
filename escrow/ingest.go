package escrow

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fvescrow/fvescrow/fde"
)

// Ingest escrows a FileVault recovery key blob (FDE_PersonalRecoveryKeyCMS or
// RotateResult.EncryptedNewRecoveryKey) for device d.
//
// The blob is stored in the outbox before anything else, so it survives a
// crash or an unavailable secret store; the drainer finishes the work then.
// The same blob, or a new blob of a key fvescrow already holds, makes no new
// version. A blob no escrow identity opens is kept as an undecryptable
// version naming its recipient; Ingest reports that with ErrUndecryptable.
func (s *Service) Ingest(ctx context.Context, d Device, cms []byte, src Source) (IngestResult, error) {
	it, err := s.Receive(ctx, d, cms, src)
	if err != nil {
		return IngestResult{}, err
	}
	return s.process(ctx, d, it)
}

// Receive is Ingest's first, at-least-once step alone: it stores the blob in
// the outbox (unless that very blob is already recorded) and returns the
// item for EscrowReceived. The MDM door calls it
// before it acknowledges a result to nanomdm.
func (s *Service) Receive(ctx context.Context, d Device, cms []byte, src Source) (OutboxItem, error) {
	if err := d.ID.Validate(); err != nil {
		return OutboxItem{}, err
	}
	if len(cms) == 0 || len(cms) > fde.MaxCMSSize {
		return OutboxItem{}, fmt.Errorf("%w: CMS of %d bytes", ErrInvalid, len(cms))
	}
	sum := sha256.Sum256(cms)
	it := OutboxItem{
		Device: d.ID, Serial: d.Serial, Kind: KindPRK, Source: src,
		CMS: cms, CMSSHA256: hex.EncodeToString(sum[:]), ReceivedAt: s.now(),
	}
	// A Mac repeats its blob in every SecurityInfo until the key changes.
	// One already recorded is safe at rest: it needs no outbox item (ID 0),
	// which spares two writes on the most common answer.
	if _, err := s.meta.KeyVersionByCMS(ctx, d.ID, it.CMSSHA256); err == nil {
		return it, nil
	}
	it, err := s.meta.PutOutbox(ctx, it)
	if err != nil {
		return OutboxItem{}, fmt.Errorf("ingest: outbox: %w", err)
	}
	return it, nil
}

// EscrowReceived finishes an item Receive stored: Ingest's second step.
func (s *Service) EscrowReceived(ctx context.Context, d Device, it OutboxItem) (IngestResult, error) {
	return s.process(ctx, d, it)
}

// process escrows one outbox item. On a secret-store failure the item stays
// in the outbox with its next attempt time.
func (s *Service) process(ctx context.Context, d Device, it OutboxItem) (IngestResult, error) {
	if d.ID == "" {
		d = Device{ID: it.Device, Serial: it.Serial}
	}
	if v, err := s.meta.KeyVersionByCMS(ctx, it.Device, it.CMSSHA256); err == nil {
		if it.ID == 0 {
			return IngestResult{Version: v}, nil // Receive found it: nothing to clear
		}
		// Seen before: just clear the outbox item.
		v, _, err := s.meta.RecordKey(ctx, KeyRecord{
			Device: d, Version: KeyVersion{Device: it.Device, Kind: it.Kind, CMSSHA256: it.CMSSHA256}, OutboxID: it.ID,
		})
		return IngestResult{Version: v}, err
	} else if !errors.Is(err, ErrNotFound) {
		return IngestResult{}, fmt.Errorf("ingest: %w", err)
	}
	key, dec, err := s.keyring.DecryptRecoveryKey(it.CMS)
	if err != nil {
		return s.recordUndecryptable(ctx, d, it, err)
	}
	ref := SecretRef{Kind: KindPRK, Owner: string(it.Device)}
	versions, err := s.meta.KeyVersions(ctx, it.Device, KindPRK)
	if err != nil {
		return IngestResult{}, fmt.Errorf("ingest: %w", err)
	}
	// A new blob of the key we already hold (SecurityInfo after a rotation
	// that already returned the key) is the same version, now verified.
	if cur, ok := current(versions); ok {
		held, _, err := s.secrets.Get(ctx, ref, cur.SecretVersion)
		if err != nil {
			return s.deferItem(ctx, it, err)
		}
		same := subtle.ConstantTimeCompare(held, keyText(key)) == 1
		clear(held)
		if same {
			v, _, err := s.meta.RecordKey(ctx, KeyRecord{
				Device: d, Version: KeyVersion{Device: it.Device, Kind: KindPRK, CMSSHA256: it.CMSSHA256, ReceivedAt: it.ReceivedAt},
				CMS: it.CMS, SameAs: cur.ID, Verify: it.Source == SourceSecurityInfo, OutboxID: it.ID,
				Event: s.event(ActorDevice, string(it.Device), ActionKeySeen, it.Device, map[string]string{
					"version": fmt.Sprint(cur.Seq), "source": string(it.Source), "cms_sha256": it.CMSSHA256,
				}),
			})
			return IngestResult{Version: v}, err
		}
	}
	// A key fvescrow held before (a Mac reporting its old key after a
	// rotation that did not take) is current again, as a new version; if it
	// was disclosed, it still is, so it is rotated again and never counted
	// as a rotated key.
	earlier, err := s.earlierVersionOf(ctx, ref, versions, keyText(key))
	if err != nil {
		return s.deferItem(ctx, it, err)
	}
	sv, err := s.putSecret(ctx, ref, keyText(key), lastSecretVersion(versions), SecretMeta{
		"device": string(it.Device), "serial": it.Serial, "kind": string(KindPRK), "source": string(it.Source),
	})
	if err != nil {
		return s.deferItem(ctx, it, err)
	}
	fp := fde.Fingerprint(dec.Certificate)
	v, created, err := s.meta.RecordKey(ctx, KeyRecord{
		Device: d,
		Version: KeyVersion{
			Device: it.Device, Kind: KindPRK, Source: it.Source, Status: StatusEscrowed, SecretVersion: sv,
			CertFingerprint: fp, CMSSHA256: it.CMSSHA256, Warning: key.Warning(), ReceivedAt: it.ReceivedAt,
			DisclosedAt: earlier.DisclosedAt,
		},
		CMS: it.CMS, OutboxID: it.ID, Verify: it.Source == SourceSecurityInfo,
		Event: s.event(ActorDevice, string(it.Device), ActionKeyEscrowed, it.Device, map[string]string{
			"source": string(it.Source), "secret_version": fmt.Sprint(sv), "escrow_cert": fp, "cms_sha256": it.CMSSHA256,
		}),
	})
	if err != nil {
		return IngestResult{}, fmt.Errorf("ingest: record: %w", err)
	}
	if key.Warning() != "" {
		s.log.Warn("recovery key has an unexpected format; kept", "device", it.Device, "version", v.Seq, "warning", key.Warning())
	}
	if earlier.ID != 0 {
		s.log.Warn("the device reports a key fvescrow held before: current again", "device", it.Device, "version", v.Seq,
			"same_key_as_version", earlier.Seq, "disclosed", !earlier.DisclosedAt.IsZero())
	}
	s.log.Info("recovery key escrowed", "device", it.Device, "version", v.Seq, "new", created, "source", it.Source)
	return IngestResult{Version: v, New: created}, nil
}

func (s *Service) recordUndecryptable(ctx context.Context, d Device, it OutboxItem, derr error) (IngestResult, error) {
	msg := derr.Error() // names the recipient; never holds plaintext
	v, created, err := s.meta.RecordKey(ctx, KeyRecord{
		Device: d,
		Version: KeyVersion{
			Device: it.Device, Kind: KindPRK, Source: it.Source, Status: StatusUndecryptable,
			CMSSHA256: it.CMSSHA256, Error: msg, ReceivedAt: it.ReceivedAt,
		},
		CMS: it.CMS, OutboxID: it.ID,
		Event: s.event(ActorDevice, string(it.Device), ActionKeyUndecryptable, it.Device, map[string]string{
			"source": string(it.Source), "error": msg, "cms_sha256": it.CMSSHA256,
		}),
	})
	if err != nil {
		return IngestResult{}, fmt.Errorf("ingest: record undecryptable: %w", err)
	}
	s.log.Warn("recovery key blob is undecryptable; kept", "device", it.Device, "error", msg)
	return IngestResult{Version: v, New: created}, fmt.Errorf("%w: %s", ErrUndecryptable, msg)
}

// deferItem leaves an item in the outbox after a secret-store failure.
func (s *Service) deferItem(ctx context.Context, it OutboxItem, cause error) (IngestResult, error) {
	backoff := s.outboxBackoff << min(it.Attempts, 10)
	if backoff > time.Hour || backoff <= 0 {
		backoff = time.Hour
	}
	msg := cause.Error()
	if err := s.meta.FailOutbox(ctx, it.ID, msg, s.now().Add(backoff)); err != nil {
		s.log.Error("outbox: record failed attempt", "id", it.ID, "err", err)
	}
	s.log.Warn("secret store unavailable; blob kept in the outbox", "device", it.Device, "outbox_id", it.ID, "err", cause)
	return IngestResult{Pending: true}, fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// putSecret writes a new version with check-and-set against the version the
// metadata knows. If the store is ahead (a crash after a write, or a
// concurrent ingest of the same key), the existing newer version is adopted
// when it holds the same secret, so a retry never makes a second version.
func (s *Service) putSecret(ctx context.Context, ref SecretRef, secret []byte, cas int, meta SecretMeta) (int, error) {
	for attempt := 0; attempt < 5; attempt++ {
		v, err := s.secrets.Put(ctx, ref, secret, cas, meta)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, ErrConflict) {
			return 0, err
		}
		latest, lv, gerr := s.secrets.Get(ctx, ref, 0)
		if gerr != nil {
			return 0, gerr
		}
		same := subtle.ConstantTimeCompare(latest, secret) == 1
		clear(latest)
		if same {
			return lv, nil
		}
		cas = lv
	}
	return 0, fmt.Errorf("%w: %s kept changing under concurrent writes", ErrConflict, ref)
}

// DrainOutbox escrows every outbox item that is due. It returns how many it
// finished; items whose store is still down stay for a later run.
func (s *Service) DrainOutbox(ctx context.Context) (int, error) {
	done := 0
	for {
		now := s.now()
		items, err := s.meta.ClaimOutbox(ctx, s.owner, now, now.Add(s.outboxLease), 50)
		if err != nil {
			return done, fmt.Errorf("drain outbox: %w", err)
		}
		if len(items) == 0 {
			return done, nil
		}
		for _, it := range items {
			var err error
			if it.Kind == KindPRK {
				_, err = s.process(ctx, Device{}, it)
			} else {
				err = fmt.Errorf("outbox item %d has kind %s", it.ID, it.Kind)
			}
			switch {
			case err == nil, errors.Is(err, ErrUndecryptable):
				done++
			case errors.Is(err, ErrUnavailable):
				return done, err // the store is down: stop until the next run
			default:
				return done, err
			}
		}
	}
}

// RunOutbox drains the outbox every interval until ctx ends.
func (s *Service) RunOutbox(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.DrainOutbox(ctx); err != nil {
			s.log.Warn("outbox drain incomplete", "escrowed", n, "err", err)
		} else if n > 0 {
			s.log.Info("outbox drained", "escrowed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// OutboxStats reports pending work (for status pages and metrics).
func (s *Service) OutboxStats(ctx context.Context) (OutboxStats, error) {
	return s.meta.OutboxStats(ctx)
}

func current(vs []KeyVersion) (KeyVersion, bool) {
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Current() {
			return vs[i], true
		}
	}
	return KeyVersion{}, false
}

func lastSecretVersion(vs []KeyVersion) int {
	m := 0
	for _, v := range vs {
		m = max(m, v.SecretVersion)
	}
	return m
}

func (s *Service) event(kind ActorKind, id, action string, dev DeviceID, detail map[string]string) Event {
	return Event{Time: s.now(), Actor: Actor{Kind: kind, ID: id}, Action: action, Device: dev, Detail: detail}
}

// earlierVersionOf finds the newest superseded escrowed version whose key is
// key (zero KeyVersion if none). Only a new blob that is not of the current
// key gets here, which is rare: reading the few old secrets is affordable.
func (s *Service) earlierVersionOf(ctx context.Context, ref SecretRef, versions []KeyVersion, key []byte) (KeyVersion, error) {
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		if v.Status != StatusEscrowed || v.SupersededAt.IsZero() {
			continue
		}
		held, _, err := s.secrets.Get(ctx, ref, v.SecretVersion)
		if err != nil {
			return KeyVersion{}, err
		}
		same := subtle.ConstantTimeCompare(held, key) == 1
		clear(held)
		if same {
			return v, nil
		}
	}
	return KeyVersion{}, nil
}
