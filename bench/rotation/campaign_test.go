// Package rotationbench measures a rotation campaign over a large fleet: the
// time to schedule it, the time to queue every RotateFileVaultKey (by
// reference) in nanomdm's queue and push every Mac through APNs (a fake
// APNs over HTTP/2 in-process), and the memory it takes. Run it with
//
//	FVESCROW_INTEGRATION=1 go test ./bench/rotation -run '^$' -bench . -benchtime 1x
//
// FVESCROW_BENCH_DEVICES sets the fleet size (default 10000).
package rotationbench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/jackc/pgx/v5/stdlib"
	nanomdmmdm "github.com/micromdm/nanomdm/mdm"
	"github.com/micromdm/nanomdm/storage"
	"github.com/micromdm/nanomdm/storage/diskv"
	"github.com/micromdm/nanomdm/storage/pgsql"
	"github.com/micromdm/plist"
)

var ctx = context.Background()

func fleetSize(b *testing.B) int {
	n := 10000
	if s := os.Getenv("FVESCROW_BENCH_DEVICES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("FVESCROW_BENCH_DEVICES=%q", s)
		}
		n = v
	}
	return n
}

// fakeAPNs answers every push with 200 and counts them.
type fakeAPNs struct {
	pushes atomic.Int64
	srv    *httptest.Server
}

func newFakeAPNs(b *testing.B) *fakeAPNs {
	f := &fakeAPNs{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f.pushes.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	b.Cleanup(f.srv.Close)
	return f
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (f *fakeAPNs) client(*tls.Certificate) (*http.Client, error) {
	base := f.srv.Client()
	target := f.srv.Listener.Addr().String()
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Host, r.Host = target, ""
		return base.Transport.RoundTrip(r)
	})}, nil
}

var oidUID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

func pushCert(b *testing.B, topic string) (certPEM, keyPEM []byte) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1),
		Subject:   pkix.Name{CommonName: "APSP:" + topic, ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidUID, Value: topic}}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

// fleet is the stores of one storage mode, holding n enrolled Macs with an
// escrowed key each.
type fleet struct {
	meta    *sqlstore.Store
	nano    storage.AllStorage
	purge   mdm.QueuePurger
	secrets escrow.SecretStore
}

func openEmbedded(b *testing.B) fleet {
	dir := b.TempDir()
	id, _, err := agestore.LoadOrCreateIdentity(filepath.Join(dir, "age.key"))
	if err != nil {
		b.Fatal(err)
	}
	secrets, err := agestore.New(filepath.Join(dir, "secrets"), id)
	if err != nil {
		b.Fatal(err)
	}
	meta, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "fvescrow.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { meta.Close() })
	nanoDir := filepath.Join(dir, "nanomdm")
	return fleet{meta: meta, nano: diskv.New(nanoDir), purge: mdm.NewDiskvQueuePurger(nanoDir), secrets: secrets}
}

func openPostgres(b *testing.B) fleet {
	f := openEmbedded(b) // secrets stay in age: the benchmark never reads them
	meta, err := sqlstore.OpenPostgres(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { meta.Close() })
	db, err := sql.Open("pgx", pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(ctx, pgsql.Schema); err != nil {
		b.Fatal(err)
	}
	nano, err := pgsql.New(pgsql.WithDB(db), pgsql.WithDeleteCommands())
	if err != nil {
		b.Fatal(err)
	}
	return fleet{meta: meta, nano: nano, secrets: f.secrets}
}

var _ = stdlib.GetDefaultDriver // registers "pgx"

// populate enrolls n Macs in nanomdm's storage (Authenticate and
// TokenUpdate, so they can be pushed) and records an escrowed key version
// for each in the metadata store.
func populate(b *testing.B, f fleet, n int, topic string, workers int) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	per := (n + workers - 1) / workers
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			for i := lo; i < hi && i < n; i++ {
				if err := enroll(f, i, topic); err != nil {
					errs <- err
					return
				}
			}
		}(w*per, (w+1)*per)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// udid spreads IDs like real UDIDs: nanomdm's file storage keeps keys in
// directories named by their first four characters, so IDs sharing a
// prefix would pile into one directory and slow every lookup there.
func udid(i int) string {
	return fmt.Sprintf("%08X-0000-4000-8000-%012d", uint32(i)*2654435761, i)
}

func enroll(f fleet, i int, topic string) error {
	id := udid(i)
	serial := fmt.Sprintf("C02B%08d", i)
	auth, _ := plist.Marshal(map[string]any{"MessageType": "Authenticate", "UDID": id, "Topic": topic, "SerialNumber": serial})
	tu, _ := plist.Marshal(map[string]any{"MessageType": "TokenUpdate", "UDID": id, "Topic": topic, "PushMagic": "magic-" + id, "Token": []byte("token-" + id)})
	r := nanomdmmdm.NewRequestWithContext(ctx, nil)
	r.EnrollID = &nanomdmmdm.EnrollID{Type: nanomdmmdm.Device, ID: id}
	for _, raw := range [][]byte{auth, tu} {
		m, err := nanomdmmdm.DecodeCheckin(raw)
		if err != nil {
			return err
		}
		switch msg := m.(type) {
		case *nanomdmmdm.Authenticate:
			err = f.nano.StoreAuthenticate(r, msg)
		case *nanomdmmdm.TokenUpdate:
			err = f.nano.StoreTokenUpdate(r, msg)
		}
		if err != nil {
			return fmt.Errorf("nanomdm enroll %s: %w", id, err)
		}
	}
	cms := sha256.Sum256([]byte(id))
	_, _, err := f.meta.RecordKey(ctx, escrow.KeyRecord{
		Device: escrow.Device{ID: escrow.DeviceID(id), UDID: id, Serial: serial, Attrs: map[string]string{
			// Enrolled, and its SecurityInfo reported this key (which a
			// rotation needs before it hands the key out).
			escrow.AttrEnrollmentState: "enrolled", escrow.AttrKeyProvenAt: time.Now().UTC().Format(time.RFC3339Nano)}},
		Version: escrow.KeyVersion{Device: escrow.DeviceID(id), Kind: escrow.KindPRK, Source: escrow.SourceSecurityInfo, Status: escrow.StatusEscrowed,
			SecretVersion: 1, CMSSHA256: hex.EncodeToString(cms[:]), ReceivedAt: time.Now()},
		CMS:   []byte("cms"),
		Event: escrow.Event{Time: time.Now(), Actor: escrow.Actor{Kind: escrow.ActorDevice, ID: id}, Action: escrow.ActionKeyEscrowed, Device: escrow.DeviceID(id)},
	})
	return err
}

// peakHeap samples the heap until stop is called and returns the peak.
func peakHeap() (stop func() uint64) {
	var (
		peak uint64
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak }
}

// BenchmarkCampaign: schedule a campaign over the whole fleet, then run
// the rotation jobs until every Mac has RotateFileVaultKey queued and has
// been pushed. Reported: seconds to schedule, seconds to queue and push,
// peak heap, and pushes the fake APNs received.
func BenchmarkCampaign(b *testing.B) {
	// SQLite has one writer: setup writes from one goroutine there.
	modes := []struct {
		name    string
		open    func(*testing.B) fleet
		workers int
	}{{"sqlite+diskv", openEmbedded, 1}, {"postgres", openPostgres, 8}}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			n := fleetSize(b)
			for range b.N {
				b.StopTimer()
				f := mode.open(b)
				apns := newFakeAPNs(b)
				topic := "com.apple.mgmt.External.bench"
				t := time.Now()
				populate(b, f, n, topic, mode.workers)
				b.Logf("%s: %d Macs enrolled and escrowed in %s (setup, not timed)", mode.name, n, time.Since(t).Round(time.Millisecond))
				push := mdm.NewPushCerts(f.secrets, f.meta, f.meta)
				certPEM, keyPEM := pushCert(b, topic)
				if err := push.StorePushCert(ctx, certPEM, keyPEM); err != nil {
					b.Fatal(err)
				}
				id, err := fde.NewIdentity(fde.IdentityOptions{CommonName: "bench escrow"})
				if err != nil {
					b.Fatal(err)
				}
				if err := escrow.StoreEscrowIdentity(ctx, f.meta, f.secrets, *id, time.Now()); err != nil {
					b.Fatal(err)
				}
				kr, err := escrow.LoadKeyring(ctx, f.meta, f.secrets)
				if err != nil {
					b.Fatal(err)
				}
				svc := escrow.New(f.secrets, f.meta, kr)
				log := slog.New(slog.DiscardHandler)
				enq := mdm.NewNanoEnqueuer(mdm.Guard(f.nano, push), push, apns.client, log)
				capture := mdm.NewCapture(svc, svc, svc, f.meta, enq, func(context.Context) ([]byte, error) { return nil, nil },
					mdm.WithRotation(mdm.RotationConfig{Store: f.meta, Keys: svc}))
				rot := escrow.NewRotations(f.meta, escrow.RotationPolicy{}, log)
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				stopHeap := peakHeap()
				b.StartTimer()

				t0 := time.Now()
				p, err := rot.StartCampaign(ctx, escrow.CampaignRequest{Name: "bench", Reason: "benchmark", By: escrow.System})
				if err != nil {
					b.Fatal(err)
				}
				scheduled := time.Since(t0)
				t1 := time.Now()
				ran, err := capture.RunRotations(ctx)
				if err != nil {
					b.Fatal(err)
				}
				queued := time.Since(t1)

				b.StopTimer()
				peak := stopHeap()
				if p.Devices != n || ran != n {
					b.Fatalf("campaign scheduled %d and queued %d of %d devices", p.Devices, ran, n)
				}
				if got := apns.pushes.Load(); got != int64(n) {
					b.Fatalf("fake APNs got %d pushes, want %d", got, n)
				}
				prog, err := f.meta.Campaign(ctx, p.ID)
				if err != nil || prog.States[escrow.RotationQueued] != n {
					b.Fatalf("progress %v %v", prog.States, err)
				}
				b.ReportMetric(scheduled.Seconds(), "schedule-s")
				b.ReportMetric(queued.Seconds(), "queue+push-s")
				b.ReportMetric(float64(n)/(scheduled+queued).Seconds(), "devices/s")
				b.ReportMetric(float64(peak-min(peak, before.HeapAlloc))/(1<<20), "peak-heap-MB")
				b.ReportMetric(float64(n), "devices")
				b.StartTimer()
			}
		})
	}
}
