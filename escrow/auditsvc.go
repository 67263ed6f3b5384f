package escrow

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// settingAuditPublicKey holds the hex audit public key, for verification.
const settingAuditPublicKey = "audit.public-key"

// auditKeyRef is where the checkpoint signing key lives in the SecretStore.
var auditKeyRef = SecretRef{Kind: KindAuditKey, Owner: "checkpoint-signing"}

// EnsureAuditKey loads the checkpoint signing key, creating it on first
// start. The private key lives in the SecretStore; the public key is also
// published as a setting and by `fvescrow audit public-key` so verifiers can
// hold their own copy.
func (s *Service) EnsureAuditKey(ctx context.Context) (ed25519.PublicKey, error) {
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	if s.auditKey != nil {
		return s.auditKey.Public().(ed25519.PublicKey), nil
	}
	seed, _, err := s.secrets.Get(ctx, auditKeyRef, 0)
	if errors.Is(err, ErrNotFound) {
		seed = make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		if _, err := s.putSecret(ctx, auditKeyRef, seed, 0, SecretMeta{"kind": string(KindAuditKey)}); err != nil {
			return nil, fmt.Errorf("store audit key: %w", err)
		}
		// A concurrent first start may have won: read back what is stored.
		if seed, _, err = s.secrets.Get(ctx, auditKeyRef, 0); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("load audit key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("audit key: %w: wrong size", ErrInvalidKey)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	pub := priv.Public().(ed25519.PublicKey)
	if err := s.meta.CreateSetting(ctx, settingAuditPublicKey, []byte(hex.EncodeToString(pub))); err != nil && !errors.Is(err, ErrConflict) {
		return nil, err
	}
	s.auditKey = priv
	return pub, nil
}

// AuditPublicKey returns the published checkpoint public key.
func (s *Service) AuditPublicKey(ctx context.Context) (ed25519.PublicKey, error) {
	return AuditPublicKey(ctx, s.meta)
}

// AuditPublicKey reads the published checkpoint public key from a store.
func AuditPublicKey(ctx context.Context, st SettingStore) (ed25519.PublicKey, error) {
	b, err := st.Setting(ctx, settingAuditPublicKey)
	if err != nil {
		return nil, err
	}
	pub, err := hex.DecodeString(string(b))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: stored audit public key", ErrInvalidKey)
	}
	return pub, nil
}

// Audit appends an event the doors record (logins, approvals...).
func (s *Service) Audit(ctx context.Context, e Event) (AuditRecord, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	return s.meta.AppendAudit(ctx, e)
}

// AuditRecords lists audit records.
func (s *Service) AuditRecords(ctx context.Context, q AuditQuery) ([]AuditRecord, error) {
	return s.meta.AuditRecords(ctx, q)
}

// Checkpoint signs the current head of the chain, if it moved since the last
// checkpoint. It returns the checkpoint and whether one was written.
func (s *Service) Checkpoint(ctx context.Context) (Checkpoint, bool, error) {
	if _, err := s.EnsureAuditKey(ctx); err != nil {
		return Checkpoint{}, false, err
	}
	head, err := s.meta.AuditHead(ctx)
	if errors.Is(err, ErrNotFound) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, err
	}
	cps, err := s.meta.Checkpoints(ctx)
	if err != nil {
		return Checkpoint{}, false, err
	}
	if n := len(cps); n > 0 && cps[n-1].Seq >= head.Seq {
		return cps[n-1], false, nil
	}
	s.auditMu.Lock()
	c := SignCheckpoint(s.auditKey, head, s.now())
	s.auditMu.Unlock()
	if err := s.meta.AddCheckpoint(ctx, c); err != nil {
		return Checkpoint{}, false, err
	}
	return c, true, nil
}

// VerifyReport is the outcome of walking the chain.
type VerifyReport struct {
	Records     int64
	Checkpoints int // checkpoints verified
	Head        string
	// Broken is the first record that does not fit; nil when intact.
	Broken *BrokenError
}

// VerifyAudit walks the whole chain from the store, checking every link and
// every checkpoint signature against pub.
func VerifyAudit(ctx context.Context, st AuditStore, pub ed25519.PublicKey) (VerifyReport, error) {
	cps, err := st.Checkpoints(ctx)
	if err != nil {
		return VerifyReport{}, err
	}
	v := NewChainVerifier(pub, cps)
	var after int64
	report := func(err error) (VerifyReport, error) {
		r := VerifyReport{Records: v.Records, Checkpoints: v.Verified}
		if h := v.Head(); h != nil {
			r.Head = h.Hash
		}
		var be *BrokenError
		if errors.As(err, &be) {
			r.Broken = be
			return r, nil
		}
		return r, err
	}
	for {
		recs, err := st.AuditRecords(ctx, AuditQuery{AfterSeq: after, Limit: 1000})
		if err != nil {
			return report(err)
		}
		if len(recs) == 0 {
			return report(v.Finish())
		}
		for _, r := range recs {
			if err := v.Add(r); err != nil {
				return report(err)
			}
			after = r.Seq
		}
	}
}
