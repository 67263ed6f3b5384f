package escrow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/fvescrow/fvescrow/fde"
)

// RevealRequest is who wants which device's key, and why.
type RevealRequest struct {
	Actor  Actor
	Groups []string // the actor's groups (for the approval policy)
	Device DeviceID
	Reason string
	Ticket string
	// ApprovalID names a second person's approval, when policy needs one.
	ApprovalID string
	// Detail is recorded in the audit event (approval ID, client address...).
	Detail map[string]string
}

// Revealed is a disclosed key and the version it came from.
type Revealed struct {
	Key     fde.RecoveryKey
	Version KeyVersion
	Audit   AuditRecord
}

// Validate applies the policy to a request.
func (p RevealPolicy) Validate(r RevealRequest) error {
	reason := strings.TrimSpace(r.Reason)
	var errs []string
	if n := utf8.RuneCountInString(reason); n < p.MinReasonLength {
		errs = append(errs, fmt.Sprintf("reason must be at least %d characters", p.MinReasonLength))
	} else if p.MaxReasonLength > 0 && n > p.MaxReasonLength {
		errs = append(errs, fmt.Sprintf("reason must be at most %d characters", p.MaxReasonLength))
	}
	ticket := strings.TrimSpace(r.Ticket)
	switch {
	case ticket == "":
		errs = append(errs, "a ticket ID is required")
	case p.TicketPattern != nil && !p.TicketPattern.MatchString(ticket):
		errs = append(errs, fmt.Sprintf("ticket ID must match %s", p.TicketPattern))
	}
	if r.Actor.ID == "" {
		errs = append(errs, "an actor is required")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// Reveal returns a device's current recovery key. The reason and ticket are
// validated first; the key is read, then the audit record is written and the
// version marked disclosed in one transaction, and only then is the key
// returned. If the audit write fails the key is discarded.
func (s *Service) Reveal(ctx context.Context, r RevealRequest) (Revealed, error) {
	if err := s.reveal.Validate(r); err != nil {
		return Revealed{}, err
	}
	if err := r.Device.Validate(); err != nil {
		return Revealed{}, err
	}
	versions, err := s.meta.KeyVersions(ctx, r.Device, KindPRK)
	if err != nil {
		return Revealed{}, fmt.Errorf("reveal: %w", err)
	}
	cur, ok := current(versions)
	if !ok {
		return Revealed{}, fmt.Errorf("reveal: %w: no escrowed recovery key for %s", ErrNotFound, r.Device)
	}
	secret, _, err := s.secrets.Get(ctx, SecretRef{Kind: KindPRK, Owner: string(r.Device)}, cur.SecretVersion)
	if err != nil {
		return Revealed{}, fmt.Errorf("reveal: %w", err)
	}
	key, err := fde.ParseRecoveryKey(secret)
	clear(secret)
	if err != nil {
		return Revealed{}, fmt.Errorf("reveal: stored key: %w", ErrInvalidKey)
	}
	detail := map[string]string{"version": fmt.Sprint(cur.Seq), "secret_version": fmt.Sprint(cur.SecretVersion)}
	for k, v := range r.Detail {
		detail[k] = v
	}
	rec, err := s.meta.RecordReveal(ctx, cur.ID, Event{
		Time: s.now(), Actor: r.Actor, Action: ActionKeyRevealed, Device: r.Device,
		Reason: strings.TrimSpace(r.Reason), Ticket: strings.TrimSpace(r.Ticket), Detail: detail,
	})
	if err != nil {
		return Revealed{}, fmt.Errorf("reveal: audit: %w", err)
	}
	if cur.DisclosedAt.IsZero() {
		cur.DisclosedAt = rec.Time
	}
	s.log.Info("recovery key revealed", "device", r.Device, "actor", r.Actor.String(), "version", cur.Seq, "audit_seq", rec.Seq)
	return Revealed{Key: key, Version: cur, Audit: rec}, nil
}

// Device returns a device record.
func (s *Service) Device(ctx context.Context, id DeviceID) (Device, error) {
	return s.meta.Device(ctx, id)
}

// FindDevices searches devices.
func (s *Service) FindDevices(ctx context.Context, q DeviceQuery) ([]Device, error) {
	return s.meta.FindDevices(ctx, q)
}

// UpsertDevice records what a door learned about a device.
func (s *Service) UpsertDevice(ctx context.Context, d Device) (Device, error) {
	if err := d.ID.Validate(); err != nil {
		return Device{}, err
	}
	return s.meta.UpsertDevice(ctx, d)
}

// KeyVersions lists a device's versions of a kind (metadata only).
func (s *Service) KeyVersions(ctx context.Context, id DeviceID, kind SecretKind) ([]KeyVersion, error) {
	return s.meta.KeyVersions(ctx, id, kind)
}

// RetireDevice marks a device retired. Its keys are kept.
func (s *Service) RetireDevice(ctx context.Context, actor Actor, id DeviceID, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("%w: a reason is required", ErrInvalid)
	}
	if _, err := s.meta.RetireDevice(ctx, id, Event{Time: s.now(), Actor: actor, Action: ActionDeviceRetired, Device: id, Reason: reason}); err != nil {
		return err
	}
	// A rotation in progress ends here, with a clear state.
	if jobs, ok := s.meta.(JobStore); ok {
		j, err := jobs.OpenJob(ctx, JobRotation, id)
		if errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		j.State, j.Step, j.Error, j.RunAt = JobCanceled, RotationCanceled, "the device was retired", s.now()
		if err := jobs.UpdateJob(ctx, j); err != nil {
			return err
		}
		_, err = s.meta.AppendAudit(ctx, Event{Time: s.now(), Actor: System, Action: ActionRotationCanceled, Device: id,
			Reason: "the device was retired", Detail: map[string]string{"job": fmt.Sprint(j.ID)}})
		return err
	}
	return nil
}

// PutToken escrows a bootstrap token or unlock token. The same token again
// makes no new version.
func (s *Service) PutToken(ctx context.Context, d Device, kind SecretKind, token []byte, src Source) (IngestResult, error) {
	if kind != KindBootstrapToken && kind != KindUnlockToken {
		return IngestResult{}, fmt.Errorf("%w: %s is not a token kind", ErrInvalid, kind)
	}
	if err := d.ID.Validate(); err != nil {
		return IngestResult{}, err
	}
	if len(token) == 0 || len(token) > 64<<10 {
		return IngestResult{}, fmt.Errorf("%w: token of %d bytes", ErrInvalid, len(token))
	}
	ref := SecretRef{Kind: kind, Owner: string(d.ID)}
	versions, err := s.meta.KeyVersions(ctx, d.ID, kind)
	if err != nil {
		return IngestResult{}, err
	}
	if cur, ok := current(versions); ok {
		held, _, err := s.secrets.Get(ctx, ref, cur.SecretVersion)
		if err != nil {
			return IngestResult{}, err
		}
		same := string(held) == string(token)
		clear(held)
		if same {
			return IngestResult{Version: cur}, nil
		}
	}
	sv, err := s.putSecret(ctx, ref, token, lastSecretVersion(versions), SecretMeta{"device": string(d.ID), "serial": d.Serial, "kind": string(kind)})
	if err != nil {
		return IngestResult{Pending: errors.Is(err, ErrUnavailable)}, err
	}
	v, created, err := s.meta.RecordKey(ctx, KeyRecord{
		Device:  d,
		Version: KeyVersion{Device: d.ID, Kind: kind, Source: src, Status: StatusEscrowed, SecretVersion: sv, ReceivedAt: s.now()},
		Event:   s.event(ActorDevice, string(d.ID), ActionTokenEscrowed, d.ID, map[string]string{"kind": string(kind), "secret_version": fmt.Sprint(sv)}),
	})
	if err != nil {
		return IngestResult{}, err
	}
	return IngestResult{Version: v, New: created}, nil
}

// Token returns a device's current token of a kind, auditing the read.
func (s *Service) Token(ctx context.Context, actor Actor, id DeviceID, kind SecretKind) ([]byte, error) {
	versions, err := s.meta.KeyVersions(ctx, id, kind)
	if err != nil {
		return nil, err
	}
	cur, ok := current(versions)
	if !ok {
		return nil, fmt.Errorf("%w: no %s for %s", ErrNotFound, kind, id)
	}
	tok, _, err := s.secrets.Get(ctx, SecretRef{Kind: kind, Owner: string(id)}, cur.SecretVersion)
	if err != nil {
		return nil, err
	}
	if _, err := s.meta.AppendAudit(ctx, Event{Time: s.now(), Actor: actor, Action: ActionTokenServed, Device: id,
		Detail: map[string]string{"kind": string(kind), "version": fmt.Sprint(cur.Seq)}}); err != nil {
		clear(tok)
		return nil, err
	}
	return tok, nil
}

// WithdrawToken withdraws a device's current token of a kind, as the device
// asked (a SetBootstrapToken without a token: Apple's check-in schema says the
// bootstrap token is then to be removed). The version is superseded with no
// successor and audited as token.withdrawn, in one transaction, so Token finds
// nothing until the device sends a token again; nothing is deleted, the
// version and its secret are kept. With no current token it does nothing (no
// audit record) and reports false.
func (s *Service) WithdrawToken(ctx context.Context, actor Actor, id DeviceID, kind SecretKind) (bool, error) {
	if kind != KindBootstrapToken && kind != KindUnlockToken {
		return false, fmt.Errorf("%w: %s is not a token kind", ErrInvalid, kind)
	}
	if err := id.Validate(); err != nil {
		return false, err
	}
	v, withdrawn, err := s.meta.WithdrawKey(ctx, id, kind, Event{Time: s.now(), Actor: actor, Action: ActionTokenWithdrawn, Device: id,
		Detail: map[string]string{"kind": string(kind)}})
	if err != nil {
		return false, fmt.Errorf("withdraw %s of %s: %w", kind, id, err)
	}
	if withdrawn {
		s.log.Info("token withdrawn", "device", id, "kind", kind, "actor", actor.String(), "version", v.Seq)
	}
	return withdrawn, nil
}
