package escrow_test

import (
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

func chain(n int) []escrow.AuditRecord {
	var out []escrow.AuditRecord
	var head *escrow.AuditRecord
	for i := 0; i < n; i++ {
		r := escrow.NextRecord(head, escrow.Event{
			Time: time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC).Add(time.Duration(i) * time.Minute), Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "u"},
			Action: escrow.ActionKeyRevealed, Device: "D", Reason: "r", Ticket: "T-1", Detail: map[string]string{"i": string(rune('a' + i))},
		})
		out = append(out, r)
		head = &out[len(out)-1]
	}
	return out
}

// TestChainHashIsStable pins the canonical form: changing it would make
// every existing audit log fail verification.
func TestChainHashIsStable(t *testing.T) {
	recs := chain(2)
	const want = "081e58d4ce7c3636a54c57a423bc03efab4ac1a2ec4c1c6619248d07a88b211c"
	if got := recs[1].Hash; got != want {
		t.Errorf("canonical audit hash changed (got %s); existing logs would no longer verify", got)
	}
	if recs[0].Time.Nanosecond()%1000 != 0 {
		t.Error("times not truncated to microseconds")
	}
}

func TestChainVerifier(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	recs := chain(5)
	cps := []escrow.Checkpoint{escrow.SignCheckpoint(priv, recs[1], time.Now()), escrow.SignCheckpoint(priv, recs[4], time.Now())}
	verify := func(rs []escrow.AuditRecord, cps []escrow.Checkpoint, key ed25519.PublicKey) error {
		v := escrow.NewChainVerifier(key, cps)
		for _, r := range rs {
			if err := v.Add(r); err != nil {
				return err
			}
		}
		return v.Finish()
	}
	if err := verify(recs, cps, pub); err != nil {
		t.Fatalf("intact chain: %v", err)
	}
	edited := append([]escrow.AuditRecord(nil), recs...)
	edited[2].Reason = "something else"
	removed := append(append([]escrow.AuditRecord(nil), recs[:2]...), recs[3:]...)
	relinked := append([]escrow.AuditRecord(nil), recs...)
	relinked[3].PrevHash = recs[1].Hash
	badSig := append([]escrow.Checkpoint(nil), cps...)
	badSig[0].Signature = append([]byte(nil), badSig[0].Signature...)
	badSig[0].Signature[0] ^= 1
	otherPub, _, _ := ed25519.GenerateKey(nil)
	// A rewritten tail with recomputed hashes: links fine, checkpoint disagrees.
	var rewritten []escrow.AuditRecord
	var head *escrow.AuditRecord
	for i, r := range recs {
		e := r.Event
		if i == 3 {
			e.Reason = "forged"
		}
		rewritten = append(rewritten, escrow.NextRecord(head, e))
		head = &rewritten[len(rewritten)-1]
	}
	cases := []struct {
		name    string
		recs    []escrow.AuditRecord
		cps     []escrow.Checkpoint
		key     ed25519.PublicKey
		seq     int64
		because string
	}{
		{"edited", edited, cps, pub, 3, "edited"},
		{"removed", removed, cps, pub, 3, "missing"},
		{"relinked", relinked, cps, pub, 4, "previous-hash"},
		{"tail truncated", recs[:3], cps, pub, 4, "records missing"},
		{"rewritten with new hashes", rewritten, cps, pub, 5, "checkpoint"},
		{"forged checkpoint signature", recs, badSig, pub, 2, "signature"},
		{"wrong public key", recs, cps, otherPub, 2, "signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(tc.recs, tc.cps, tc.key)
			be, ok := err.(*escrow.BrokenError)
			if !ok || be.Seq != tc.seq || !strings.Contains(be.Reason, tc.because) {
				t.Fatalf("got %v, want record %d (%s)", err, tc.seq, tc.because)
			}
		})
	}
}
