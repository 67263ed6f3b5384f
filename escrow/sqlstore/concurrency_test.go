package sqlstore_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// TestConcurrentClaims has replicas claim the outbox at the same time: every
// item goes to exactly one of them.
func TestConcurrentClaims(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.newStore(t)
			const items, replicas = 40, 4
			for i := range items {
				cms := []byte(fmt.Sprint("blob-", i))
				if _, err := s.PutOutbox(ctx, escrow.OutboxItem{Device: "D1", Kind: escrow.KindPRK, CMS: cms, CMSSHA256: fmt.Sprint("sha-", i), ReceivedAt: t0}); err != nil {
					t.Fatal(err)
				}
			}
			now := t0.Add(time.Hour)
			var (
				mu    sync.Mutex
				owner = map[int64]int{}
				wg    sync.WaitGroup
			)
			for r := range replicas {
				wg.Go(func() {
					for {
						got, err := s.ClaimOutbox(ctx, fmt.Sprint("replica-", r), now, now.Add(time.Minute), 3)
						if err != nil {
							t.Error(err)
							return
						}
						if len(got) == 0 {
							return
						}
						mu.Lock()
						for _, it := range got {
							if prev, ok := owner[it.ID]; ok {
								t.Errorf("item %d claimed by replicas %d and %d", it.ID, prev, r)
							}
							owner[it.ID] = r
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(owner) != items {
				t.Fatalf("%d of %d items claimed", len(owner), items)
			}
		})
	}
}

// TestConcurrentMixedWrites runs every kind of audited write at once on a
// few devices. Nothing may deadlock or fail, and the chain must verify.
func TestConcurrentMixedWrites(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.newStore(t)
			devs := []escrow.DeviceID{"M1", "M2", "M3"}
			first := map[escrow.DeviceID]int64{}
			for _, d := range devs {
				v, _, err := s.RecordKey(ctx, keyRecord(d, "first", t0))
				if err != nil {
					t.Fatal(err)
				}
				first[d] = v.ID
			}
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				appended = len(devs)
			)
			ok := func(err error) {
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				appended++
				mu.Unlock()
			}
			for i := range 12 {
				d := devs[i%len(devs)]
				wg.Go(func() {
					_, _, err := s.RecordKey(ctx, keyRecord(d, fmt.Sprint("cms-", i), t0.Add(time.Duration(i)*time.Second)))
					ok(err)
				})
				wg.Go(func() {
					_, err := s.RecordReveal(ctx, first[d], escrow.Event{Time: t0, Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "bob"}, Action: escrow.ActionKeyRevealed, Device: d})
					ok(err)
				})
				wg.Go(func() {
					_, err := s.AppendAudit(ctx, escrow.Event{Time: t0, Actor: escrow.System, Action: escrow.ActionExportCreated})
					ok(err)
				})
				wg.Go(func() {
					_, err := s.UpsertDevice(ctx, escrow.Device{ID: d, Hostname: fmt.Sprint("host-", i), Attrs: map[string]string{fmt.Sprint("k", i): "v"}})
					if err != nil {
						t.Error(err)
					}
				})
				if i == 11 {
					wg.Go(func() {
						_, err := s.RetireDevice(ctx, d, escrow.Event{Time: t0, Actor: escrow.System, Action: escrow.ActionDeviceRetired, Device: d})
						ok(err)
					})
				}
			}
			wg.Wait()
			rep, err := escrow.VerifyAudit(ctx, s, nil)
			if err != nil || rep.Broken != nil || rep.Records != int64(appended) {
				t.Fatalf("chain: %+v %v; want %d intact records", rep, err, appended)
			}
			for _, d := range devs {
				vs, err := s.KeyVersions(ctx, d, escrow.KindPRK)
				if err != nil {
					t.Fatal(err)
				}
				cur := 0
				for i, v := range vs {
					if v.Seq != i+1 {
						t.Errorf("%s: seq %d at %d", d, v.Seq, i)
					}
					if v.Current() {
						cur++
					}
				}
				if len(vs) != 5 || cur != 1 || !vs[len(vs)-1].Current() {
					t.Errorf("%s: %d versions, %d current", d, len(vs), cur)
				}
				dev, err := s.Device(ctx, d)
				if err != nil || len(dev.Attrs) != 4 {
					t.Errorf("%s: attrs lost in concurrent merges: %v %v", d, dev.Attrs, err)
				}
			}
			if _, err := s.RecordReveal(ctx, -1, escrow.Event{Actor: escrow.System, Action: escrow.ActionKeyRevealed}); !errors.Is(err, escrow.ErrNotFound) {
				t.Errorf("reveal of a missing version: %v", err)
			}
		})
	}
}

func keyRecord(dev escrow.DeviceID, cms string, at time.Time) escrow.KeyRecord {
	return escrow.KeyRecord{
		Device: escrow.Device{ID: dev, Serial: "SER-" + string(dev)},
		Version: escrow.KeyVersion{Device: dev, Kind: escrow.KindPRK, Source: escrow.SourceSecurityInfo, Status: escrow.StatusEscrowed,
			SecretVersion: 1, CMSSHA256: "sha-" + cms, ReceivedAt: at},
		CMS:   []byte(cms),
		Event: escrow.Event{Time: at, Actor: escrow.Actor{Kind: escrow.ActorDevice, ID: string(dev)}, Action: escrow.ActionKeyEscrowed, Device: dev},
	}
}
