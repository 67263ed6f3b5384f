package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"
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
	return escrowedMacWith(t, s, fakemac.Options{})
}

// escrowedMacWith is escrowedMac with options (a chosen serial number).
func escrowedMacWith(t *testing.T, s *testServer, o fakemac.Options) *fakemac.Mac {
	t.Helper()
	m := s.enroll(o)
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
		uuid := rotationJob(t, s, m).Data[escrow.RotationDataCommand]
		if uuid == "" || !strings.Contains(queueAtRest(t, s), uuid) {
			t.Fatalf("attempt %d: the queued RotateFileVaultKey %q is not in the queue storage", attempt, uuid)
		}
		connect(t, s, m)
		// An Error answer is purged as an Acknowledged one is: nothing of
		// the command or its result stays at rest.
		if rest := queueAtRest(t, s); strings.Contains(rest, uuid) {
			i := strings.Index(rest, uuid)
			t.Fatalf("attempt %d: the command answered Error is still in the queue storage:\n%s", attempt, rest[max(0, i-300):min(len(rest), i+300)])
		}
		assertNoKeyAtRest(t, s, oldKey, strings.ReplaceAll(oldKey, "-", ""))
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

// TestRotationErrorAnswerIsPurged: on both storage modes, a
// RotateFileVaultKey the Mac answers with Error leaves nothing at rest,
// neither its body (the reference) nor its result, just as an Acknowledged
// answer leaves nothing (TestRotationAfterReveal).
func TestRotationErrorAnswerIsPurged(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			m := escrowedMac(t, s)
			key := m.PRK()
			m.Handle(fde.RequestRotateFileVaultKey, fakemac.Answer(fakemac.ErrorAnswer(12082, "MDMErrorDomain", "The FileVault unlock credential is incorrect.")))
			startRotation(t, s, m)
			uuid := rotationJob(t, s, m).Data[escrow.RotationDataCommand]
			if rest := queueAtRest(t, s); uuid == "" || !strings.Contains(rest, uuid) {
				t.Fatalf("the queued RotateFileVaultKey %q is not in the queue storage:\n%.2000s", uuid, rest)
			}
			if got := connect(t, s, m); len(got) != 1 || got[0] != fde.RequestRotateFileVaultKey {
				t.Fatalf("Mac answered %v", got)
			}
			if j := rotationJob(t, s, m); j.Step != escrow.RotationRetrying || !strings.Contains(j.Error, "MDMErrorDomain 12082") {
				t.Fatalf("after the Error answer: %+v", j)
			}
			rest := queueAtRest(t, s)
			if i := strings.Index(rest, uuid); i >= 0 {
				t.Fatalf("the command answered Error is still in the queue storage (%s):\n%s", mode, rest[max(0, i-300):min(len(rest), i+300)])
			}
			if strings.Contains(rest, "MDMErrorDomain") {
				t.Fatalf("the Error result is still in the queue storage (%s)", mode)
			}
			assertNoKeyAtRest(t, s, key, strings.ReplaceAll(key, "-", ""))
		})
	}
}

// rotationFlags parses rotation flags as `fvescrow serve` does, into the
// test server's configuration.
func rotationFlags(t *testing.T, args ...string) func(*serveConfig) {
	return func(c *serveConfig) {
		cmd := &cobra.Command{}
		c.rotation.register(cmd)
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		if err := c.rotation.validate(); err != nil {
			t.Fatal(err)
		}
	}
}

// securityInfoReporting answers SecurityInfo with FileVault on, saying
// whether the Mac has a personal recovery key and reporting the blob blob
// returns (nil: none).
func securityInfoReporting(hasPRK bool, blob func(*fakemac.Mac) []byte) fakemac.Behavior {
	return func(m *fakemac.Mac, _ map[string]any) (string, map[string]any) {
		si := map[string]any{"FDE_Enabled": true, "FDE_HasPersonalRecoveryKey": hasPRK, "FDE_HasInstitutionalRecoveryKey": false}
		if b := blob(m); len(b) > 0 {
			si["FDE_PersonalRecoveryKeyCMS"], si["FDE_PersonalRecoveryKeyDeviceKey"] = b, m.Serial
		}
		return fde.StatusAcknowledged, map[string]any{"SecurityInfo": si}
	}
}

// assertFailedVisible checks that m's rotation failed with reason, as the
// API shows it (GET /api/v1/rotations and the device detail), as the audit
// log records it, and that the Mac is listed for key regeneration.
func assertFailedVisible(t *testing.T, s *testServer, m *fakemac.Mac, reason string) {
	t.Helper()
	status, body := s.api(http.MethodGet, "/api/v1/rotations?state=failed&device="+m.Serial, nil)
	var list wire.RotationList
	if status != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("GET /api/v1/rotations: %d %s", status, body)
	}
	if len(list.Rotations) != 1 || list.Rotations[0].Device != m.UDID || list.Rotations[0].State != escrow.RotationFailed ||
		list.Rotations[0].Error != reason || list.Rotations[0].FinishedAt == nil {
		t.Fatalf("failed rotations of %s over the API: %+v, want one failed with %q", m.Serial, list.Rotations, reason)
	}
	status, body = s.api(http.MethodGet, "/api/v1/devices/"+m.UDID, nil)
	var d wire.DeviceDetail
	if status != http.StatusOK || json.Unmarshal(body, &d) != nil {
		t.Fatalf("GET device: %d %s", status, body)
	}
	if d.Rotation == nil || d.Rotation.State != escrow.RotationFailed || d.Rotation.Error != reason {
		t.Fatalf("device detail rotation %+v, want failed with %q", d.Rotation, reason)
	}
	if d.Regeneration == nil || d.Regeneration.Reason != "rotation failed: "+reason {
		t.Fatalf("device detail regeneration %+v", d.Regeneration)
	}
	recs, err := s.srv.svc.AuditRecords(ctx, escrow.AuditQuery{Device: escrow.DeviceID(m.UDID), Action: escrow.ActionRotationFailed})
	if err != nil || len(recs) != 1 || recs[0].Reason != reason {
		t.Fatalf("audit %s: %+v %v", escrow.ActionRotationFailed, recs, err)
	}
}

// TestRotationVerificationFails: after the Mac acknowledged a rotation,
// SecurityInfo must report the new key. A Mac that keeps reporting its old
// blob, or says it has no personal key, is asked again after each verify
// backoff (5m, 15m, 1h, 4h, 12h), and the rotation fails once they are
// spent; a Mac whose FileVault was turned off fails at its next answer. Each
// reason is in the job, the API, the audit log, the regeneration list and
// `fvescrow rotation list`.
func TestRotationVerificationFails(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now })
	current := func(m *fakemac.Mac) []byte { return m.CMS() }
	cases := []struct {
		name     string
		rotate   fakemac.Behavior                           // nil: rotate and return the new key
		report   func(old []byte) fakemac.Behavior          // SecurityInfo after the rotation
		step     string                                     // the step the job waits at
		reason   string                                     // the failure
		versions func(t *testing.T, vs []escrow.KeyVersion) // what is escrowed in the end
	}{
		{
			name: "the old blob after a returned key",
			report: func(old []byte) fakemac.Behavior {
				return securityInfoReporting(true, func(*fakemac.Mac) []byte { return old })
			},
			step: escrow.RotationEscrowed, reason: "SecurityInfo never confirmed the new key",
			versions: func(t *testing.T, vs []escrow.KeyVersion) {
				// The returned key stays current, never verified; the stale blob made no version.
				if len(vs) != 2 || !vs[1].Current() || !vs[1].VerifiedAt.IsZero() || vs[1].Source != escrow.SourceRotation {
					t.Fatalf("versions %+v", vs)
				}
			},
		},
		{
			name:   "no personal recovery key",
			report: func([]byte) fakemac.Behavior { return securityInfoReporting(false, current) },
			step:   escrow.RotationEscrowed, reason: "SecurityInfo never confirmed the new key",
			versions: func(t *testing.T, vs []escrow.KeyVersion) {
				if len(vs) != 2 || !vs[1].Current() {
					t.Fatalf("versions %+v", vs)
				}
			},
		},
		{
			name:   "the old blob and no key returned",
			rotate: fakemac.RotateWithoutResult,
			report: func(old []byte) fakemac.Behavior {
				return securityInfoReporting(true, func(*fakemac.Mac) []byte { return old })
			},
			step: escrow.RotationAcknowledged, reason: "SecurityInfo never reported the new key",
			versions: func(t *testing.T, vs []escrow.KeyVersion) {
				if len(vs) != 1 || !vs[0].Current() {
					t.Fatalf("versions %+v", vs)
				}
			},
		},
	}
	var failed []*fakemac.Mac
	var reasons []string
	for _, tc := range cases {
		t.Logf("case: %s", tc.name)
		m := escrowedMac(t, s)
		oldKey, oldBlob := m.PRK(), m.CMS()
		if tc.rotate != nil {
			m.Handle(fde.RequestRotateFileVaultKey, tc.rotate)
		}
		m.Handle(fde.RequestSecurityInfo, tc.report(oldBlob))
		startRotation(t, s, m)
		if got := connect(t, s, m); len(got) != 1 || got[0] != fde.RequestRotateFileVaultKey {
			t.Fatalf("%s: Mac answered %v", tc.name, got)
		}
		if m.PRK() == oldKey {
			t.Fatalf("%s: the Mac did not rotate", tc.name)
		}
		answers := 0
		for {
			if got := connect(t, s, m); len(got) != 1 || got[0] != fde.RequestSecurityInfo {
				t.Fatalf("%s: after %d SecurityInfo answers the Mac answered %v", tc.name, answers, got)
			}
			answers++
			j := rotationJob(t, s, m)
			if j.State == escrow.JobFailed {
				if j.Step != escrow.RotationFailed || j.Error != tc.reason {
					t.Fatalf("%s: failed job %+v, want reason %q", tc.name, j, tc.reason)
				}
				break
			}
			if j.State != escrow.JobPending || j.Step != tc.step || j.Data[escrow.RotationDataVerifyTries] != strconv.Itoa(answers) {
				t.Fatalf("%s: after SecurityInfo answer %d: %+v", tc.name, answers, j)
			}
			if answers > 10 {
				t.Fatalf("%s: still asking after %d answers", tc.name, answers)
			}
			if n := runRotations(t, s); n != 0 {
				t.Fatalf("%s: asked again before the verify backoff", tc.name)
			}
			clock.Advance(13 * time.Hour) // past the longest verify backoff
			if n := runRotations(t, s); n != 1 {
				t.Fatalf("%s: %d rotations ran after the verify backoff", tc.name, n)
			}
		}
		// The first answer, then one after each of the five verify backoffs.
		if answers != 6 {
			t.Fatalf("%s: failed after %d SecurityInfo answers, want 6", tc.name, answers)
		}
		tc.versions(t, prkVersions(t, s, m))
		assertFailedVisible(t, s, m, tc.reason)
		failed, reasons = append(failed, m), append(reasons, tc.reason)
	}

	// FileVault turned off between the rotation and its verification.
	m := escrowedMac(t, s)
	startRotation(t, s, m)
	connect(t, s, m) // rotates; the new key is escrowed and SecurityInfo queued
	if j := rotationJob(t, s, m); j.Step != escrow.RotationEscrowed || j.State != escrow.JobWaiting {
		t.Fatalf("FileVault off: after the rotation: %+v", j)
	}
	m.DisableFileVault()
	if got := connect(t, s, m); len(got) != 1 || got[0] != fde.RequestSecurityInfo {
		t.Fatalf("FileVault off: Mac answered %v", got)
	}
	j := rotationJob(t, s, m)
	if j.State != escrow.JobFailed || j.Step != escrow.RotationFailed || j.Error != "FileVault was turned off" {
		t.Fatalf("FileVault off: %+v", j)
	}
	assertFailedVisible(t, s, m, "FileVault was turned off")
	failed, reasons = append(failed, m), append(reasons, "FileVault was turned off")
	if n := runRotations(t, s); n != 0 {
		t.Fatalf("%d rotations ran after they all failed", n)
	}

	// `fvescrow rotation list --state failed` shows each failure with its reason.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})))
	out := s.cli("rotation", "list", "--state", "failed", "--server", s.URL(), "--token-file", s.cfg.apiTokenFile, "--ca-cert", ca)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1+len(failed) {
		t.Fatalf("rotation list: want a header and %d rotations:\n%s", len(failed), out)
	}
	for i, m := range failed {
		found := false
		for _, l := range lines[1:] {
			if strings.Contains(l, m.UDID) {
				found = true
				if !strings.Contains(l, " "+escrow.RotationFailed+" ") || !strings.HasSuffix(l, reasons[i]) {
					t.Errorf("rotation list line for %s: %q, want failed with %q", m.Serial, l, reasons[i])
				}
			}
		}
		if !found {
			t.Errorf("rotation list does not show %s:\n%s", m.UDID, out)
		}
	}
}

// TestRotationDeviceNeverAnswers: a Mac that never fetches its
// RotateFileVaultKey is pushed again with backoff, and once
// --rotation-give-up (48h here, parsed as the flag) has passed since the
// command was queued, the rotation fails with the reason shown everywhere.
func TestRotationDeviceNeverAnswers(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now }, rotationFlags(t, "--rotation-give-up", "48h"))
	m := escrowedMac(t, s)
	startRotation(t, s, m)
	queuedAt, pushes := clock.Now(), s.apns.count()
	const reason = "the device did not answer for 48h0m0s"
	for {
		// Steps of 5h never land on the 48h mark (the queueing time is
		// kept to the second).
		clock.Advance(5 * time.Hour)
		runRotations(t, s)
		j := rotationJob(t, s, m)
		waited := clock.Now().Sub(queuedAt)
		// Failed once due past 48h: the job is looked at again at most a
		// push backoff (12h at most) after the mark, seen here at the next
		// 5h step.
		if j.State == escrow.JobFailed {
			if waited <= 48*time.Hour || waited > (48+12+5)*time.Hour {
				t.Fatalf("failed after %s, want after the 48h give-up, at its first run past it: %+v", waited, j)
			}
			if j.Step != escrow.RotationFailed || j.Error != reason {
				t.Fatalf("failed job %+v, want reason %q", j, reason)
			}
			break
		}
		if j.State != escrow.JobWaiting || j.Step != escrow.RotationQueued {
			t.Fatalf("after %s without an answer: %+v", waited, j)
		}
		if waited > (48+12+5)*time.Hour {
			t.Fatalf("still waiting after %s, past the 48h give-up: %+v", waited, j)
		}
	}
	if n := s.apns.count() - pushes; n < 3 {
		t.Fatalf("%d pushes while waiting for the Mac, want it woken again with backoff", n)
	}
	if u := m.RotationUnlocks(); len(u) != 0 {
		t.Fatal("the Mac that never answered got the key")
	}
	assertFailedVisible(t, s, m, reason)
}

// TestRotationDelayAndMaxAgeFlags: with --rotation-delay 10m a revealed key
// is rotated 10 minutes after the reveal, not the default hour; with
// --rotation-max-age 720h the sweep schedules a key once it is older than
// 720h, and not before.
func TestRotationDelayAndMaxAgeFlags(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now },
		rotationFlags(t, "--rotation-delay", "10m", "--rotation-max-age", "720h"))
	start := clock.Now()
	revealed := escrowedMac(t, s)
	aging := escrowedMac(t, s)
	if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep of fresh keys: %d %v", n, err)
	}

	revealOverAPI(t, s, revealed)
	j := rotationJob(t, s, revealed)
	if j.Step != escrow.RotationScheduled || !j.RunAt.Equal(escrow.AuditTime(clock.Now().Add(10*time.Minute))) {
		t.Fatalf("after the reveal: %+v, want due in 10m", j)
	}
	clock.Advance(9 * time.Minute)
	if n := runRotations(t, s); n != 0 {
		t.Fatalf("%d rotations ran within the 10m delay", n)
	}
	clock.Advance(2 * time.Minute)
	if n := runRotations(t, s); n != 1 {
		t.Fatalf("%d rotations ran after the 10m delay", n)
	}
	if j := rotationJob(t, s, revealed); j.Step != escrow.RotationQueued {
		t.Fatalf("after the delay: %+v", j)
	}
	connect(t, s, revealed) // rotates
	connect(t, s, revealed) // SecurityInfo
	if j := rotationJob(t, s, revealed); j.Step != escrow.RotationVerified {
		t.Fatalf("revealed Mac: %+v", j)
	}

	// The other key was received at start; the revealed Mac's new key 11
	// minutes later.
	clock.Advance(start.Add(719 * time.Hour).Sub(clock.Now()))
	if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep of keys younger than 720h: %d %v", n, err)
	}
	if _, err := s.srv.stores.meta.OpenJob(ctx, escrow.JobRotation, escrow.DeviceID(aging.UDID)); err == nil {
		t.Fatal("a key younger than --rotation-max-age was scheduled")
	}
	clock.Advance(65 * time.Minute) // the first key is 720h05m old, the revealed Mac's new one 719h54m
	if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep past the max age: %d %v, want the one old key", n, err)
	}
	j = rotationJob(t, s, aging)
	if j.Data[escrow.RotationDataTrigger] != escrow.TriggerMaxAge || j.Step != escrow.RotationScheduled || j.Ref != prkVersions(t, s, aging)[0].ID {
		t.Fatalf("max-age job %+v", j)
	}
	if j := rotationJob(t, s, revealed); j.Step != escrow.RotationVerified {
		t.Fatalf("the revealed Mac's new key was scheduled too: %+v", j)
	}
	// It runs through like any rotation.
	if n := runRotations(t, s); n != 1 {
		t.Fatalf("%d rotations ran", n)
	}
	connect(t, s, aging)
	connect(t, s, aging)
	if j := rotationJob(t, s, aging); j.Step != escrow.RotationVerified || len(prkVersions(t, s, aging)) != 2 {
		t.Fatalf("max-age rotation %+v", j)
	}
}

// TestRotationCampaignFilters: each selection of POST /api/v1/campaigns
// (devices, search, key_older_than_days, disclosed_only, and combinations)
// starts rotations on exactly the devices it selects, and counts the others
// it considered as skipped.
func TestRotationCampaignFilters(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now })
	name := map[string]string{}
	mac := func(n, serial string) *fakemac.Mac {
		m := escrowedMacWith(t, s, fakemac.Options{Serial: serial})
		name[m.UDID] = n
		return m
	}
	old1, old2 := mac("old1", "C02OLD000001"), mac("old2", "C02OLD000002")
	clock.Advance(40 * 24 * time.Hour)
	lab, plain, disc := mac("lab", "C02LAB000001"), mac("plain", "C02NEW000001"), mac("disc", "C02DSC000001")
	// The new keys are two days old: days read as hours would select them.
	clock.Advance(2 * 24 * time.Hour)
	// Disclosed through the service alone, so no rotation is under way.
	revealKey(t, s, old2)
	revealKey(t, s, disc)

	cases := []struct {
		req     wire.CampaignRequest
		want    string // selected devices, sorted
		skipped int
	}{
		{wire.CampaignRequest{}, "disc lab old1 old2 plain", 0},
		{wire.CampaignRequest{Devices: []string{plain.Serial, old1.UDID}}, "old1 plain", 0},
		{wire.CampaignRequest{Search: "LAB"}, "lab", 0},
		{wire.CampaignRequest{Search: "C02OLD"}, "old1 old2", 0},
		{wire.CampaignRequest{KeyOlderThanDays: 30}, "old1 old2", 3},
		{wire.CampaignRequest{KeyOlderThanDays: 43}, "", 5},
		{wire.CampaignRequest{DisclosedOnly: true}, "disc old2", 3},
		{wire.CampaignRequest{KeyOlderThanDays: 30, DisclosedOnly: true}, "old2", 4},
		{wire.CampaignRequest{Search: "C02OLD", DisclosedOnly: true}, "old2", 1},
		{wire.CampaignRequest{Devices: []string{lab.Serial, disc.Serial}, DisclosedOnly: true}, "disc", 1},
		{wire.CampaignRequest{Devices: []string{lab.Serial, old1.Serial}, KeyOlderThanDays: 30}, "old1", 1},
	}
	for i, tc := range cases {
		tc.req.Name, tc.req.Reason = fmt.Sprintf("filter %d", i), "test the campaign filters"
		body, _ := json.Marshal(tc.req)
		status, out := s.api(http.MethodPost, "/api/v1/campaigns", body)
		var c wire.Campaign
		if status != http.StatusCreated || json.Unmarshal(out, &c) != nil {
			t.Fatalf("campaign %+v: %d %s", tc.req, status, out)
		}
		status, out = s.api(http.MethodGet, fmt.Sprintf("/api/v1/rotations?campaign=%d&limit=100", c.ID), nil)
		var list wire.RotationList
		if status != http.StatusOK || json.Unmarshal(out, &list) != nil {
			t.Fatalf("rotations of campaign %d: %d %s", c.ID, status, out)
		}
		var got []string
		for _, r := range list.Rotations {
			if r.Campaign != c.ID || r.Trigger != escrow.TriggerCampaign || r.State != escrow.RotationScheduled {
				t.Fatalf("campaign %d rotation %+v", c.ID, r)
			}
			got = append(got, name[r.Device])
		}
		slices.Sort(got)
		if strings.Join(got, " ") != tc.want || c.Devices != len(got) || c.Skipped != tc.skipped {
			t.Errorf("campaign %+v (filter %q) selected [%s], %d rotating, %d skipped; want [%s], %d skipped",
				tc.req, c.Filter, strings.Join(got, " "), c.Devices, c.Skipped, tc.want, tc.skipped)
		}
		// End this campaign's rotations, so the next one sees the whole fleet.
		js, err := s.srv.stores.meta.Jobs(ctx, escrow.JobQuery{Kind: escrow.JobRotation, Campaign: c.ID})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range js {
			j.State, j.Step, j.Error = escrow.JobCanceled, escrow.RotationCanceled, "test: next campaign"
			if err := s.srv.stores.meta.UpdateJob(ctx, j); err != nil {
				t.Fatal(err)
			}
		}
	}
}
