package mdmbench

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// fleetSize is how many devices each server has enrolled; the parallel
// mode runs that many round trips at once.
const fleetSize = 20

// BenchmarkRoundTrip measures check-in and command round trips on bare
// nanomdm and on fvescrow (see the package documentation). Every
// measurement starts both servers afresh, on fresh storage of the same kind
// with a freshly enrolled fleet, then runs b.N round trips on each,
// alternating between them in short blocks, so that both see the same
// conditions on a shared machine. ns/op is the time of one round trip on
// each server.
func BenchmarkRoundTrip(b *testing.B) {
	keys := deviceKeys(fleetSize + 1)
	for _, kind := range storageKinds {
		for _, w := range workloads {
			for _, mode := range []struct {
				name    string
				workers int
			}{{"serial", 1}, {"parallel", fleetSize}} {
				b.Run(kind.name+"/"+w.name+"/"+mode.name, func(b *testing.B) {
					bare := newBare(b, kind, keys[fleetSize])
					bare.enroll(b, keys[:fleetSize])
					fv := newFvescrow(b, kind)
					fv.enroll(b, keys[:fleetSize])
					measure(b, bare, fv, w, mode.workers)
				})
			}
		}
	}
}

// measure runs b.N prepared round trips on each server and reports each
// one's round trips per second, and fvescrow's as a percentage of bare's.
func measure(b *testing.B, bare, fv *server, w workload, workers int) {
	opsBare, opsFv := prepare(b, bare, w, b.N), prepare(b, fv, w, b.N)
	var tBare, tFv time.Duration
	// A block keeps every worker busy but for its last round trips, and
	// lasts a fraction of a second.
	block := max(fleetSize, 5*workers)
	b.ResetTimer()
	for lo := 0; lo < b.N; lo += block {
		hi := min(lo+block, b.N)
		// Alternate which server goes first, so neither always follows
		// the other's work (its garbage, its disk writes).
		for i := range 2 {
			// Both servers write to the same file system: flush what one
			// left dirty, so the other does not pay for it at its next
			// fsync (SQLite and PostgreSQL commits).
			b.StopTimer()
			syscall.Sync()
			b.StartTimer()
			var err error
			if (lo/block+i)%2 == 0 {
				err = run(bare, opsBare[lo:hi], workers, &tBare)
			} else {
				err = run(fv, opsFv[lo:hi], workers, &tFv)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	rateBare, rateFv := float64(b.N)/tBare.Seconds(), float64(b.N)/tFv.Seconds()
	b.ReportMetric(rateBare, "bare-roundtrips/s")
	b.ReportMetric(rateFv, "fvescrow-roundtrips/s")
	b.ReportMetric(100*rateFv/rateBare, "%bare")
}

// run runs ops on s from workers goroutines, each device in one round trip
// at a time (a Mac does not report Idle while it answers a command), a
// device's ops in order, and adds the wall time to *elapsed.
func run(s *server, ops []op, workers int, elapsed *time.Duration) error {
	queues := make(map[*device][]*op)
	for i := range ops {
		queues[ops[i].dev] = append(queues[ops[i].dev], &ops[i])
	}
	// Devices with work left. A worker takes one, runs its next op and
	// puts it back; remaining counts the ops not yet taken.
	pool := make(chan *device, len(queues))
	for d := range queues {
		pool <- d
	}
	var (
		mu        sync.Mutex
		remaining = len(ops)
		firstErr  error
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range min(workers, len(queues)) {
		wg.Go(func() {
			for {
				mu.Lock()
				if remaining == 0 || firstErr != nil {
					mu.Unlock()
					return
				}
				remaining--
				mu.Unlock()
				d := <-pool
				mu.Lock()
				o := queues[d][0]
				queues[d] = queues[d][1:]
				left := len(queues[d])
				mu.Unlock()
				err := s.roundTrip(context.Background(), o)
				if left > 0 {
					pool <- d
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	*elapsed += time.Since(start)
	return firstErr
}

// TestRoundTrips runs every workload on both servers of each storage kind,
// so plain `go test` checks what the benchmarks measure: both servers hand
// out the command and take the answer, and fvescrow tracked every answer,
// escrowed the enrollment key once, took the repeated blob as a duplicate
// and escrowed each new key.
func TestRoundTrips(t *testing.T) {
	for _, kind := range storageKinds {
		t.Run(kind.name, func(t *testing.T) {
			ctx := context.Background()
			keys := deviceKeys(2)
			bare := newBare(t, kind, keys[1])
			bare.enroll(t, keys[:1])
			fv := newFvescrow(t, kind)
			fv.enroll(t, keys[:1])
			const perWorkload = 2
			for _, w := range workloads {
				for _, s := range []*server{bare, fv} {
					ops := prepare(t, s, w, perWorkload)
					for i := range ops {
						if err := s.roundTrip(ctx, &ops[i]); err != nil {
							t.Fatalf("%s: %v", w.name, err)
						}
					}
				}
			}

			id := escrow.DeviceID(fv.devices[0].udid)
			cmds, err := fv.meta.Commands(ctx, id, 100)
			if err != nil {
				t.Fatal(err)
			}
			if want := 3 + perWorkload*len(workloads); len(cmds) != want { // 3 at enrollment
				t.Errorf("fvescrow tracked %d commands, want %d", len(cmds), want)
			}
			for _, c := range cmds {
				if c.Status != "Acknowledged" {
					t.Errorf("command %s %s: status %q", c.RequestType, c.UUID, c.Status)
				}
			}
			versions, err := fv.meta.KeyVersions(ctx, id, escrow.KindPRK)
			if err != nil {
				t.Fatal(err)
			}
			// The enrollment key (its blob repeated by SecurityInfo), then
			// one version per new key.
			if want := 1 + perWorkload; len(versions) != want {
				t.Errorf("%d key versions, want %d", len(versions), want)
			}
			if ob, err := fv.meta.OutboxStats(ctx); err != nil || ob.Pending != 0 {
				t.Errorf("outbox: %+v, %v", ob, err)
			}
			d, err := fv.meta.Device(ctx, id)
			if err != nil || d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) {
				t.Errorf("device: %+v, %v", d.Attrs, err)
			}
		})
	}
}
