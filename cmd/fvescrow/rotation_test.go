package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// testClock is a clock tests move forward.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now().UTC()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// escrowedMac enrolls a Mac, turns FileVault on and escrows its key.
func escrowedMac(t *testing.T, s *testServer) *fakemac.Mac {
	t.Helper()
	m := s.enroll(fakemac.Options{})
	connect(t, s, m) // profile installed
	if err := m.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)
	connect(t, s, m)
	if d := device(t, s, m); d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) {
		t.Fatalf("escrow status %q", d.Attrs[escrow.AttrEscrowStatus])
	}
	return m
}

// revealOverAPI reveals through the REST API: the whole reveal chain,
// which schedules the rotation.
func revealOverAPI(t *testing.T, s *testServer, m *fakemac.Mac) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"reason": "user locked out at the FileVault login window", "ticket": "IT-2001"})
	status, out := s.api(http.MethodPost, "/api/v1/devices/"+m.UDID+"/reveal", body)
	if status != http.StatusOK {
		t.Fatalf("reveal: %d %s", status, out)
	}
	var r struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Key == "" {
		t.Fatalf("reveal answer: %v", err)
	}
	return r.Key
}

func rotationJob(t *testing.T, s *testServer, m *fakemac.Mac) escrow.Job {
	t.Helper()
	js, err := s.srv.stores.meta.Jobs(ctx, escrow.JobQuery{Kind: escrow.JobRotation, Device: escrow.DeviceID(m.UDID), Limit: 1})
	if err != nil || len(js) == 0 {
		t.Fatalf("no rotation job: %v", err)
	}
	return js[0]
}

func runRotations(t *testing.T, s *testServer) int {
	t.Helper()
	n, err := s.srv.capture.RunRotations(ctx)
	if err != nil {
		t.Fatalf("run rotations: %v\n--- server log\n%s", err, s.logs.String())
	}
	return n
}

func prkVersions(t *testing.T, s *testServer, m *fakemac.Mac) []escrow.KeyVersion {
	t.Helper()
	vs, err := s.srv.svc.KeyVersions(ctx, escrow.DeviceID(m.UDID), escrow.KindPRK)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// queueAtRest returns everything nanomdm's storage holds, as text: every
// file of the diskv store, or every command body and result row of the
// PostgreSQL schema.
func queueAtRest(t *testing.T, s *testServer) string {
	t.Helper()
	var b strings.Builder
	if s.mode == modeEmbedded {
		root := filepath.Join(s.cfg.stores.dataDir, "nanomdm")
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			fmt.Fprintf(&b, "== %s\n%s\n", strings.TrimPrefix(p, root), data)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	db, err := sql.Open("pgx", s.cfg.stores.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`SELECT 'command ' || command_uuid || ' ' || request_type || E'\n' || command FROM nanomdm.commands`,
		`SELECT 'result ' || command_uuid || ' ' || status || E'\n' || result FROM nanomdm.command_results`,
	} {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			b.WriteString(line + "\n")
		}
		rows.Close()
	}
	return b.String()
}

// assertNoKeyAtRest fails if any key appears in nanomdm's storage.
func assertNoKeyAtRest(t *testing.T, s *testServer, keys ...string) {
	t.Helper()
	rest := queueAtRest(t, s)
	for _, k := range keys {
		if k != "" && strings.Contains(rest, k) {
			t.Fatalf("a recovery key rests in the MDM queue storage (%s mode)", s.mode)
		}
	}
}

// TestRotationAfterReveal is the whole lifecycle on both storage modes:
// reveal → the delay → RotateFileVaultKey queued holding a reference →
// handed to the Mac with the real key → new key returned, escrowed, old one
// superseded (kept) → SecurityInfo confirms → verified; and the queue at
// rest never holds a key, and holds nothing of the command once answered.
func TestRotationAfterReveal(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			clock := newTestClock()
			s := startServer(t, mode, func(c *serveConfig) { c.testNow = clock.Now })
			m := escrowedMac(t, s)
			oldKey := m.PRK()
			if got := revealOverAPI(t, s, m); got != oldKey {
				t.Fatal("revealed the wrong key")
			}
			j := rotationJob(t, s, m)
			if j.Step != escrow.RotationScheduled || j.Data[escrow.RotationDataTrigger] != escrow.TriggerDisclosure ||
				!j.RunAt.Equal(escrow.AuditTime(clock.Now().Add(time.Hour))) {
				t.Fatalf("after the reveal: %+v", j)
			}
			// Before the delay nothing is sent: the user is still unlocking.
			if n := runRotations(t, s); n != 0 {
				t.Fatalf("%d rotations ran before the delay", n)
			}
			clock.Advance(61 * time.Minute)
			if n := runRotations(t, s); n != 1 {
				t.Fatalf("%d rotations ran after the delay", n)
			}
			j = rotationJob(t, s, m)
			uuid := j.Data[escrow.RotationDataCommand]
			if j.Step != escrow.RotationQueued || uuid == "" {
				t.Fatalf("after running: %+v", j)
			}
			// At rest, the queued command names the key version; it does not hold it.
			rest := queueAtRest(t, s)
			if !strings.Contains(rest, fde.RotationReferencePrefix+"prk/"+m.UDID+"/1") || !strings.Contains(rest, uuid) {
				t.Fatalf("queued command with its reference not found at rest:\n%.2000s", rest)
			}
			assertNoKeyAtRest(t, s, oldKey, strings.ReplaceAll(oldKey, "-", ""))

			got := connect(t, s, m)
			if len(got) != 1 || got[0] != fde.RequestRotateFileVaultKey {
				t.Fatalf("Mac answered %v", got)
			}
			if u := m.RotationUnlocks(); len(u) != 1 || u[0] != oldKey {
				t.Fatal("the Mac did not receive the escrowed key as FileVaultUnlock.Password")
			}
			newKey := m.PRK()
			if newKey == oldKey {
				t.Fatal("the Mac did not rotate")
			}
			// Answered: body and result purged; the new key (encrypted or not) nowhere.
			rest = queueAtRest(t, s)
			if i := strings.Index(rest, uuid); i >= 0 {
				t.Fatalf("the answered rotation is still in the queue storage:\n%s", rest[max(0, i-300):min(len(rest), i+300)])
			}
			assertNoKeyAtRest(t, s, oldKey, newKey)
			vs := prkVersions(t, s, m)
			if len(vs) != 2 || vs[0].SupersededAt.IsZero() || !vs[1].Current() || vs[1].Source != escrow.SourceRotation || !vs[1].VerifiedAt.IsZero() {
				t.Fatalf("versions after the answer: %+v", vs)
			}
			if j = rotationJob(t, s, m); j.Step != escrow.RotationEscrowed {
				t.Fatalf("after the answer: step %q", j.Step)
			}
			// SecurityInfo confirms the new key.
			if got := connect(t, s, m); len(got) != 1 || got[0] != fde.RequestSecurityInfo {
				t.Fatalf("Mac answered %v", got)
			}
			j = rotationJob(t, s, m)
			if j.State != escrow.JobDone || j.Step != escrow.RotationVerified || j.Data[escrow.RotationDataNewVersion] != "2" {
				t.Fatalf("after SecurityInfo: %+v", j)
			}
			vs = prkVersions(t, s, m)
			if len(vs) != 2 || vs[1].VerifiedAt.IsZero() {
				t.Fatalf("versions after verification: %+v", vs)
			}
			for _, action := range []string{escrow.ActionRotationScheduled, escrow.ActionRotationSent, escrow.ActionRotationVerified} {
				recs, err := s.srv.svc.AuditRecords(ctx, escrow.AuditQuery{Device: escrow.DeviceID(m.UDID), Action: action})
				if err != nil || len(recs) != 1 {
					t.Errorf("audit %s: %d records, %v", action, len(recs), err)
				}
			}
			if strings.Contains(s.logs.String(), oldKey) || strings.Contains(s.logs.String(), newKey) {
				t.Error("a key reached the server log")
			}
			// Nothing left to do: a later sweep changes nothing.
			clock.Advance(2 * time.Hour)
			if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 0 {
				t.Fatalf("sweep after verification: %d %v", n, err)
			}
			// A reveal that bypassed the scheduling (the service alone) is
			// caught by the sweep once the delay has passed.
			if got := revealKey(t, s, m); got != newKey {
				t.Fatal("the escrowed key is not the Mac's new key")
			}
			if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 0 {
				t.Fatalf("sweep within the delay: %d %v", n, err)
			}
			clock.Advance(61 * time.Minute)
			if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 1 {
				t.Fatalf("sweep after the delay: %d %v", n, err)
			}
			if j := rotationJob(t, s, m); j.Data[escrow.RotationDataTrigger] != escrow.TriggerDisclosure || j.Ref != vs[1].ID {
				t.Fatalf("swept job %+v", j)
			}
		})
	}
}

// TestRotationNotNowThenSuccess: a Mac that says NotNow keeps the job at
// "sent"; at its next check-in it gets the command again and rotates.
func TestRotationNotNowThenSuccess(t *testing.T) {
	s := startServer(t, modeEmbedded)
	m := escrowedMac(t, s)
	oldKey := m.PRK()
	m.Handle(fde.RequestRotateFileVaultKey, fakemac.Answer(map[string]any{"Status": "NotNow"}))
	startRotation(t, s, m)
	connect(t, s, m)
	j := rotationJob(t, s, m)
	if j.Step != escrow.RotationSent || j.State != escrow.JobWaiting {
		t.Fatalf("after NotNow: %+v", j)
	}
	if m.PRK() != oldKey || len(prkVersions(t, s, m)) != 1 {
		t.Fatal("NotNow changed the key")
	}
	// A NotNow result is not purged: the command must reach the Mac again.
	if !strings.Contains(queueAtRest(t, s), j.Data[escrow.RotationDataCommand]) {
		t.Fatal("a NotNow command was purged")
	}
	assertNoKeyAtRest(t, s, oldKey)
	m.Handle(fde.RequestRotateFileVaultKey, nil)
	connect(t, s, m) // rotates
	connect(t, s, m) // SecurityInfo
	if j := rotationJob(t, s, m); j.Step != escrow.RotationVerified {
		t.Fatalf("after the retry: %+v", j)
	}
	if u := m.RotationUnlocks(); len(u) != 1 || u[0] != oldKey {
		t.Fatalf("unlocks %d", len(u))
	}
}

// startRotation asks for a rotation by hand and queues it.
func startRotation(t *testing.T, s *testServer, m *fakemac.Mac) {
	t.Helper()
	if _, created, err := s.srv.rotations.Schedule(ctx, escrow.RotationRequest{Device: escrow.DeviceID(m.UDID), Trigger: escrow.TriggerManual,
		By: escrow.Actor{Kind: escrow.ActorUser, ID: "admin"}, Reason: "test"}); err != nil || !created {
		t.Fatalf("schedule: %v created=%v", err, created)
	}
	if n := runRotations(t, s); n != 1 {
		t.Fatalf("%d rotations ran", n)
	}
}

// TestRotationErrorThenFallback: a Mac that refuses keeps its old key
// current; the ErrorChain is kept; after the retries the device is listed
// for key regeneration.
func TestRotationErrorThenFallback(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now })
	m := escrowedMac(t, s)
	oldKey := m.PRK()
	m.Handle(fde.RequestRotateFileVaultKey, fakemac.Answer(fakemac.ErrorAnswer(12082, "MDMErrorDomain", "The FileVault unlock credential is incorrect.")))
	startRotation(t, s, m)
	for attempt := 1; ; attempt++ {
		connect(t, s, m)
		j := rotationJob(t, s, m)
		if j.State == escrow.JobFailed {
			if attempt != 4 || j.Step != escrow.RotationFailed || !strings.Contains(j.Error, "12082") || !strings.Contains(j.Error, "4 times") {
				t.Fatalf("failed after %d attempts: %+v", attempt, j)
			}
			break
		}
		if j.Step != escrow.RotationRetrying || !strings.Contains(j.Error, "MDMErrorDomain 12082") || j.Attempts != attempt {
			t.Fatalf("attempt %d: %+v", attempt, j)
		}
		if n := runRotations(t, s); n != 0 {
			t.Fatal("retried before the backoff")
		}
		clock.Advance(5 * time.Hour) // past the longest default backoff
		if n := runRotations(t, s); n != 1 {
			t.Fatalf("attempt %d: %d rotations ran after the backoff", attempt, n)
		}
	}
	vs := prkVersions(t, s, m)
	if len(vs) != 1 || !vs[0].Current() || m.PRK() != oldKey {
		t.Fatalf("versions after the failures: %+v", vs)
	}
	if got := revealKey(t, s, m); got != oldKey {
		t.Fatal("old key not current")
	}
	regs, err := s.srv.stores.meta.Regenerations(ctx, escrow.RegenerationQuery{})
	if err != nil || len(regs) != 1 || regs[0].Device != escrow.DeviceID(m.UDID) || !strings.Contains(regs[0].Reason, "rotation failed") {
		t.Fatalf("regeneration list %+v %v", regs, err)
	}
	// The sweep does not start another rotation of the same key.
	clock.Advance(24 * time.Hour)
	if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep after failure: %d %v", n, err)
	}
	// An agent regenerates the key on the Mac; SecurityInfo brings it.
	if err := m.NewPRK(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)
	connect(t, s, m)
	if regs, _ := s.srv.stores.meta.Regenerations(ctx, escrow.RegenerationQuery{}); len(regs) != 0 {
		t.Fatalf("still listed after the new key arrived: %+v", regs)
	}
	if got := revealKey(t, s, m); got != m.PRK() {
		t.Fatal("regenerated key not escrowed")
	}
}

// TestRotationWithoutRotateResult: an answer without the key takes it from
// SecurityInfo.
func TestRotationWithoutRotateResult(t *testing.T) {
	s := startServer(t, modeEmbedded)
	m := escrowedMac(t, s)
	m.Handle(fde.RequestRotateFileVaultKey, fakemac.RotateWithoutResult)
	startRotation(t, s, m)
	connect(t, s, m)
	if j := rotationJob(t, s, m); j.Step != escrow.RotationAcknowledged {
		t.Fatalf("after the answer: %+v", j)
	}
	if vs := prkVersions(t, s, m); len(vs) != 1 {
		t.Fatalf("a version appeared without a key: %+v", vs)
	}
	connect(t, s, m) // SecurityInfo with the new key
	j := rotationJob(t, s, m)
	vs := prkVersions(t, s, m)
	if j.Step != escrow.RotationVerified || len(vs) != 2 || vs[1].Source != escrow.SourceSecurityInfo || vs[1].VerifiedAt.IsZero() {
		t.Fatalf("job %+v versions %+v", j, vs)
	}
	if got := revealKey(t, s, m); got != m.PRK() {
		t.Fatal("wrong key")
	}
}

// TestRotationReplyDoesNotDecrypt: a reply encrypted to a certificate
// fvescrow does not hold is kept as an undecryptable version; the key comes
// from SecurityInfo, which uses the escrow profile's certificate.
func TestRotationReplyDoesNotDecrypt(t *testing.T) {
	s := startServer(t, modeEmbedded)
	m := escrowedMac(t, s)
	stranger, err := fde.NewIdentity(fde.IdentityOptions{CommonName: "not fvescrow"})
	if err != nil {
		t.Fatal(err)
	}
	m.Handle(fde.RequestRotateFileVaultKey, fakemac.RotateReplyingTo(stranger.Certificate))
	startRotation(t, s, m)
	connect(t, s, m)
	vs := prkVersions(t, s, m)
	if len(vs) != 2 || vs[1].Status != escrow.StatusUndecryptable || !vs[0].Current() {
		t.Fatalf("versions after an undecryptable reply: %+v", vs)
	}
	connect(t, s, m)
	j := rotationJob(t, s, m)
	vs = prkVersions(t, s, m)
	if j.Step != escrow.RotationVerified || len(vs) != 3 || !vs[2].Current() || vs[2].VerifiedAt.IsZero() {
		t.Fatalf("job %+v versions %+v", j, vs)
	}
	if got := revealKey(t, s, m); got != m.PRK() {
		t.Fatal("wrong key")
	}
}

// TestRotationCrashBetweenAckAndStore: the server dies after the Mac's
// answer is acknowledged (the new key only in the outbox); after a restart
// the key is escrowed once and the rotation goes on to verified.
func TestRotationCrashBetweenAckAndStore(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			crashed := false
			clock := newTestClock()
			s := startServer(t, mode, func(c *serveConfig) {
				c.testNow = clock.Now
				c.testWrapKeys = func(k mdm.Keys) mdm.Keys { return dyingKeys{Keys: k, dead: &crashed} }
			})
			m := escrowedMac(t, s)
			startRotation(t, s, m)
			crashed = true
			connect(t, s, m) // acknowledged with the new key; the process "dies" before escrowing it
			newKey := m.PRK()
			if st, _ := s.srv.svc.OutboxStats(ctx); st.Pending != 1 {
				t.Fatalf("outbox pending %d, want 1", st.Pending)
			}
			if vs := prkVersions(t, s, m); len(vs) != 1 {
				t.Fatalf("%d versions before the restart", len(vs))
			}
			crashed = false
			s.restart()
			if n, err := s.srv.svc.DrainOutbox(ctx); err != nil || n != 1 {
				t.Fatalf("drain: %d %v", n, err)
			}
			clock.Advance(3 * time.Minute) // the job's own safety delay
			if n := runRotations(t, s); n != 1 {
				t.Fatalf("%d rotations ran after the restart", n)
			}
			connect(t, s, m) // SecurityInfo
			j := rotationJob(t, s, m)
			vs := prkVersions(t, s, m)
			if j.Step != escrow.RotationVerified || len(vs) != 2 {
				t.Fatalf("job %+v, %d versions", j, len(vs))
			}
			if got := revealKey(t, s, m); got != newKey {
				t.Fatal("wrong key")
			}
			// The Mac sends the same answer again (its ack was lost): still one version.
			if _, err := s.srv.svc.Ingest(ctx, escrow.Device{ID: escrow.DeviceID(m.UDID)}, m.CMS(), escrow.SourceSecurityInfo); err != nil {
				t.Fatal(err)
			}
			if vs := prkVersions(t, s, m); len(vs) != 2 {
				t.Fatalf("%d versions after a retried answer", len(vs))
			}
		})
	}
}

// TestRotationDeviceGoesAway: re-enrolling mid-rotation ends the job and
// starts a new one; retiring ends it for good.
func TestRotationDeviceGoesAway(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now })
	m := escrowedMac(t, s)
	startRotation(t, s, m)
	first := rotationJob(t, s, m)
	if err := m.Authenticate(ctx); err != nil { // re-enrollment clears the queue
		t.Fatal(err)
	}
	js, err := s.srv.stores.meta.Jobs(ctx, escrow.JobQuery{Kind: escrow.JobRotation, Device: escrow.DeviceID(m.UDID)})
	if err != nil || len(js) != 2 {
		t.Fatalf("jobs after re-enrollment: %+v %v", js, err)
	}
	if js[1].ID != first.ID || js[1].State != escrow.JobCanceled || !strings.Contains(js[1].Error, "enrolled again") {
		t.Fatalf("interrupted job %+v", js[1])
	}
	if js[0].State != escrow.JobPending || js[0].Data[escrow.RotationDataTrigger] != escrow.TriggerReenrolled {
		t.Fatalf("restarted job %+v", js[0])
	}
	if err := s.srv.svc.RetireDevice(ctx, escrow.Actor{Kind: escrow.ActorUser, ID: "admin"}, escrow.DeviceID(m.UDID), "laptop returned"); err != nil {
		t.Fatal(err)
	}
	j := rotationJob(t, s, m)
	if j.State != escrow.JobCanceled || j.Step != escrow.RotationCanceled || !strings.Contains(j.Error, "retired") {
		t.Fatalf("after retirement: %+v", j)
	}
	clock.Advance(24 * time.Hour)
	if n := runRotations(t, s); n != 0 {
		t.Fatalf("%d rotations ran for a retired device", n)
	}
}

// TestRotationQueuedBodyIsAReferenceOnly reads the queued command as the
// Mac would get it without fvescrow in between: it names the key version
// and holds no key.
func TestRotationQueuedBodyIsAReferenceOnly(t *testing.T) {
	s := startServer(t, modeEmbedded)
	m := escrowedMac(t, s)
	startRotation(t, s, m)
	rest := queueAtRest(t, s)
	i := strings.Index(rest, "<key>FileVaultUnlock</key>")
	if i < 0 {
		t.Fatalf("no queued RotateFileVaultKey at rest:\n%.2000s", rest)
	}
	if !bytes.Contains([]byte(rest[i:]), []byte("<string>"+fde.RotationReferencePrefix+"prk/"+m.UDID+"/1</string>")) {
		t.Fatalf("queued FileVaultUnlock is not the reference:\n%.800s", rest[i:])
	}
	assertNoKeyAtRest(t, s, m.PRK())
}
