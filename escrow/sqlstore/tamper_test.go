package sqlstore_test

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
)

// TestAuditTamper edits the audit tables behind the store's back, as someone
// with database access could, and checks escrow.VerifyAudit names the record.
func TestAuditTamper(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		// tamper changes the database holding records 1..5.
		tamper func(t *testing.T, s *sqlstore.Store, recs []escrow.AuditRecord)
		verify ed25519.PublicKey
		want   int64 // the record VerifyAudit must report
	}{
		{"edit a field", func(t *testing.T, s *sqlstore.Store, _ []escrow.AuditRecord) {
			exec(t, s, `UPDATE audit SET reason = 'x' WHERE seq = 3`)
		}, nil, 3},
		{"edit the time by a microsecond", func(t *testing.T, s *sqlstore.Store, _ []escrow.AuditRecord) {
			exec(t, s, `UPDATE audit SET time = time + 1 WHERE seq = 2`)
		}, nil, 2},
		{"edit the detail", func(t *testing.T, s *sqlstore.Store, _ []escrow.AuditRecord) {
			exec(t, s, `UPDATE audit SET detail = '{"n":"0"}' WHERE seq = 4`)
		}, nil, 4},
		{"corrupt the detail", func(t *testing.T, s *sqlstore.Store, _ []escrow.AuditRecord) {
			exec(t, s, `UPDATE audit SET detail = 'not json' WHERE seq = 2`)
		}, nil, 2},
		{"delete a middle record", func(t *testing.T, s *sqlstore.Store, _ []escrow.AuditRecord) {
			exec(t, s, `DELETE FROM audit WHERE seq = 3`)
		}, nil, 3},
		{"delete the last record under a checkpoint", func(t *testing.T, s *sqlstore.Store, recs []escrow.AuditRecord) {
			checkpoint(t, s, priv, recs[4])
			exec(t, s, `DELETE FROM audit WHERE seq = 5`)
		}, pub, 5},
		{"alter a checkpoint signature", func(t *testing.T, s *sqlstore.Store, recs []escrow.AuditRecord) {
			c := checkpoint(t, s, priv, recs[3])
			c.Signature[0] ^= 1
			exec(t, s, `UPDATE audit_checkpoints SET signature = ? WHERE seq = 4`, c.Signature)
		}, pub, 4},
		{"rewrite the chain after an edit", func(t *testing.T, s *sqlstore.Store, recs []escrow.AuditRecord) {
			// Anyone can recompute the hashes; only the checkpoint key
			// can sign the result.
			checkpoint(t, s, priv, recs[4])
			prev := recs[1].Hash
			for _, r := range recs[2:] {
				if r.Seq == 3 {
					r.Reason = "x"
				}
				h := escrow.ChainHash(prev, r.Seq, r.Event)
				exec(t, s, `UPDATE audit SET reason = ?, prev_hash = ?, hash = ? WHERE seq = ?`, r.Reason, prev, h, r.Seq)
				prev = h
			}
		}, pub, 5},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					s := b.newStore(t)
					var recs []escrow.AuditRecord
					for i := range 5 {
						r, err := s.AppendAudit(ctx, escrow.Event{
							Time: t0.Add(time.Duration(i) * time.Minute), Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "alice"},
							Action: escrow.ActionKeyRevealed, Device: "D1", Reason: "user locked out", Ticket: "IT-1",
							Detail: map[string]string{"n": fmt.Sprint(i)},
						})
						if err != nil {
							t.Fatal(err)
						}
						recs = append(recs, r)
					}
					if rep, err := escrow.VerifyAudit(ctx, s, tc.verify); err != nil || rep.Broken != nil || rep.Records != 5 {
						t.Fatalf("before tampering: %+v %v", rep, err)
					}
					tc.tamper(t, s, recs)
					rep, err := escrow.VerifyAudit(ctx, s, tc.verify)
					if err != nil {
						t.Fatal(err)
					}
					if rep.Broken == nil || rep.Broken.Seq != tc.want {
						t.Fatalf("VerifyAudit = %+v (broken %v), want record %d reported", rep, rep.Broken, tc.want)
					}
					t.Logf("reported: %v", rep.Broken)
				})
			}
		})
	}
}

func exec(t *testing.T, s *sqlstore.Store, query string, args ...any) {
	t.Helper()
	if _, err := s.DB().ExecContext(ctx, s.Dialect().Rebind(query), args...); err != nil {
		t.Fatal(err)
	}
}

func checkpoint(t *testing.T, s *sqlstore.Store, priv ed25519.PrivateKey, r escrow.AuditRecord) escrow.Checkpoint {
	t.Helper()
	c := escrow.SignCheckpoint(priv, r, r.Time.Add(time.Second))
	if err := s.AddCheckpoint(ctx, c); err != nil {
		t.Fatal(err)
	}
	return c
}
