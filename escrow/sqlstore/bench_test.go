package sqlstore_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
)

// BenchmarkRecordKey records a new escrowed version (device upsert, version,
// CMS, superseding the previous one, audit append) per operation, spread over
// 100 devices.
func BenchmarkRecordKey(b *testing.B) {
	benchBoth(b, func(b *testing.B, s *sqlstore.Store, i int64) {
		dev := escrow.DeviceID(fmt.Sprintf("BENCH-%03d", i%100))
		cms := []byte(fmt.Sprintf("cms-%d", i))
		sum := sha256.Sum256(cms)
		_, created, err := s.RecordKey(ctx, escrow.KeyRecord{
			Device: escrow.Device{ID: dev, Serial: "C02BENCH"},
			Version: escrow.KeyVersion{Device: dev, Kind: escrow.KindPRK, Source: escrow.SourceSecurityInfo, Status: escrow.StatusEscrowed,
				SecretVersion: int(i + 1), CertFingerprint: "fp", CMSSHA256: hex.EncodeToString(sum[:]), ReceivedAt: t0},
			CMS:   cms,
			Event: escrow.Event{Time: t0, Actor: escrow.Actor{Kind: escrow.ActorDevice, ID: string(dev)}, Action: escrow.ActionKeyEscrowed, Device: dev},
		})
		if err != nil || !created {
			b.Fatalf("RecordKey: created=%v %v", created, err)
		}
	})
}

// BenchmarkAppendAudit appends one audit record per operation.
func BenchmarkAppendAudit(b *testing.B) {
	benchBoth(b, func(b *testing.B, s *sqlstore.Store, i int64) {
		_, err := s.AppendAudit(ctx, escrow.Event{Time: t0.Add(time.Duration(i) * time.Microsecond),
			Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "alice"}, Action: escrow.ActionKeyRevealed, Device: "D1",
			Reason: "user locked out", Ticket: "IT-42", Detail: map[string]string{"version": "1"}})
		if err != nil {
			b.Fatal(err)
		}
	})
}

// benchBoth runs op on each backend, serially and from GOMAXPROCS
// goroutines, and reports operations per second.
func benchBoth(b *testing.B, op func(b *testing.B, s *sqlstore.Store, i int64)) {
	for _, be := range backends {
		b.Run(be.name+"/serial", func(b *testing.B) {
			s := be.newStore(b)
			var i int64
			for b.Loop() {
				op(b, s, i)
				i++
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(be.name+"/parallel", func(b *testing.B) {
			s := be.newStore(b)
			var n atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					op(b, s, n.Add(1))
				}
			})
			b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
