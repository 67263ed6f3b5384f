package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// RotationStore is what rotation persists.
type RotationStore interface {
	escrow.MetaStore
	escrow.RotationStore
}

// RunRotationStore runs the suite for rotation's persistence.
func RunRotationStore(t *testing.T, newStore func(t *testing.T) RotationStore) {
	t.Run("schedule once", func(t *testing.T) { testScheduleJob(t, newStore(t)) })
	t.Run("schedule concurrently", func(t *testing.T) { testScheduleConcurrent(t, newStore(t)) })
	t.Run("candidates", func(t *testing.T) { testRotationCandidates(t, newStore(t)) })
	t.Run("campaigns", func(t *testing.T) { testCampaigns(t, newStore(t)) })
	t.Run("regenerations", func(t *testing.T) { testRegenerations(t, newStore(t)) })
}

func rotationJob(dev escrow.DeviceID, ref, campaign int64) escrow.Job {
	return escrow.Job{Kind: escrow.JobRotation, Device: dev, State: escrow.JobPending, Step: escrow.RotationScheduled, RunAt: t0,
		Ref: ref, Campaign: campaign, Data: map[string]string{escrow.RotationDataTrigger: escrow.TriggerManual}}
}

func testScheduleJob(t *testing.T, s RotationStore) {
	j, created := must2(s.ScheduleJob(ctx, rotationJob("R1", 5, 0)))(t)
	if !created || j.ID == 0 || j.Ref != 5 || j.Step != escrow.RotationScheduled || j.Data[escrow.RotationDataTrigger] != escrow.TriggerManual {
		t.Fatalf("scheduled %+v created=%v", j, created)
	}
	// An open job wins: scheduling again returns it untouched.
	again, created := must2(s.ScheduleJob(ctx, rotationJob("R1", 9, 3)))(t)
	if created || again.ID != j.ID || again.Ref != 5 || again.Campaign != 0 {
		t.Fatalf("second schedule %+v created=%v", again, created)
	}
	// Once the job ends, a new one can start.
	j.State, j.Step = escrow.JobDone, escrow.RotationVerified
	if err := s.UpdateJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	next, created := must2(s.ScheduleJob(ctx, rotationJob("R1", 9, 3)))(t)
	if !created || next.ID == j.ID || next.Ref != 9 || next.Campaign != 3 {
		t.Fatalf("after done %+v created=%v", next, created)
	}
	byCampaign := must(s.Jobs(ctx, escrow.JobQuery{Campaign: 3}))(t)
	if len(byCampaign) != 1 || byCampaign[0].ID != next.ID {
		t.Fatalf("jobs of campaign 3: %+v", byCampaign)
	}
}

func testScheduleConcurrent(t *testing.T, s RotationStore) {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		ids     = map[int64]bool{}
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, c, err := s.ScheduleJob(ctx, rotationJob("R2", int64(i+1), 0))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[j.ID] = true
			if c {
				created++
			}
		}()
	}
	wg.Wait()
	if created != 1 || len(ids) != 1 {
		t.Fatalf("%d created, %d distinct jobs; want exactly one", created, len(ids))
	}
}

func must2[A, B any](a A, b B, err error) func(*testing.T) (A, B) {
	return func(t *testing.T) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}

func testRotationCandidates(t *testing.T, s RotationStore) {
	// Four devices with a current key: D-old (received long ago), D-disc
	// (disclosed), D-new (fresh), D-ret (disclosed but retired).
	ver := map[escrow.DeviceID]escrow.KeyVersion{}
	for i, dev := range []escrow.DeviceID{"D-old", "D-disc", "D-new", "D-ret", "D-failed"} {
		at := t0.Add(time.Duration(i) * time.Hour)
		if dev == "D-old" {
			at = t0.Add(-400 * 24 * time.Hour)
		}
		v, _ := must3(t, s, escrowed(dev, "cms-"+string(dev), 1, at))
		ver[dev] = v
	}
	for _, dev := range []escrow.DeviceID{"D-disc", "D-ret", "D-failed"} {
		if _, err := s.RecordReveal(ctx, ver[dev].ID, event(escrow.ActionKeyRevealed, dev, t0.Add(10*time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RetireDevice(ctx, "D-ret", event(escrow.ActionDeviceRetired, "D-ret", t0.Add(11*time.Hour))); err != nil {
		t.Fatal(err)
	}
	// D-failed's rotation of this very version failed: it waits for an agent.
	fj, _ := must2(s.ScheduleJob(ctx, rotationJob("D-failed", ver["D-failed"].ID, 0)))(t)
	fj.State, fj.Step = escrow.JobFailed, escrow.RotationFailed
	if err := s.UpdateJob(ctx, fj); err != nil {
		t.Fatal(err)
	}
	names := func(vs []escrow.KeyVersion) map[escrow.DeviceID]bool {
		m := map[escrow.DeviceID]bool{}
		for _, v := range vs {
			m[v.Device] = true
		}
		return m
	}
	q := escrow.RotationCandidateQuery{DisclosedBefore: t0.Add(12 * time.Hour)}
	got := names(must(s.RotationCandidates(ctx, q))(t))
	if !got["D-disc"] || len(got) != 1 {
		t.Fatalf("disclosed candidates %v, want D-disc only", got)
	}
	// Not yet past the delay: none.
	if got := must(s.RotationCandidates(ctx, escrow.RotationCandidateQuery{DisclosedBefore: t0.Add(9 * time.Hour)}))(t); len(got) != 0 {
		t.Fatalf("candidates before the delay: %v", names(got))
	}
	q.ReceivedBefore = t0.Add(-365 * 24 * time.Hour)
	got = names(must(s.RotationCandidates(ctx, q))(t))
	if !got["D-disc"] || !got["D-old"] || len(got) != 2 {
		t.Fatalf("with max age: %v", got)
	}
	// An open job takes a device out.
	must2(s.ScheduleJob(ctx, rotationJob("D-disc", ver["D-disc"].ID, 0)))(t)
	got = names(must(s.RotationCandidates(ctx, q))(t))
	if got["D-disc"] || !got["D-old"] {
		t.Fatalf("with D-disc rotating: %v", got)
	}
	// The fleet view lists disclosed current keys of active devices, rotating or not.
	disclosed := names(must(s.DisclosedKeys(ctx, t0.Add(12*time.Hour), 0))(t))
	if !disclosed["D-disc"] || !disclosed["D-failed"] || disclosed["D-ret"] || len(disclosed) != 2 {
		t.Fatalf("disclosed keys %v", disclosed)
	}
	// A new version supersedes the disclosed one: no longer listed.
	must3(t, s, escrowed("D-failed", "cms-D-failed-2", 2, t0.Add(13*time.Hour)))
	if disclosed := names(must(s.DisclosedKeys(ctx, t0.Add(14*time.Hour), 0))(t)); disclosed["D-failed"] {
		t.Fatalf("superseded key still listed: %v", disclosed)
	}
}

func testCampaigns(t *testing.T, s RotationStore) {
	by := escrow.Actor{Kind: escrow.ActorUser, ID: "alice", Name: "Alice"}
	c := must(s.CreateCampaign(ctx, escrow.Campaign{Name: "Q4", Reason: "yearly rotation", Filter: `search=""`, CreatedBy: by, CreatedAt: t0},
		escrow.Event{Time: t0, Actor: by, Action: escrow.ActionCampaignCreated, Reason: "yearly rotation"}))(t)
	if c.ID == 0 {
		t.Fatal("no campaign ID")
	}
	steps := []struct {
		state escrow.JobState
		step  string
		err   string
	}{
		{escrow.JobPending, escrow.RotationScheduled, ""},
		{escrow.JobWaiting, escrow.RotationSent, ""},
		{escrow.JobDone, escrow.RotationVerified, ""},
		{escrow.JobDone, escrow.RotationVerified, ""},
		{escrow.JobFailed, escrow.RotationFailed, "no answer"},
		{escrow.JobFailed, escrow.RotationFailed, "no answer"},
		{escrow.JobCanceled, escrow.RotationCanceled, "retired"},
	}
	for i, st := range steps {
		j, _ := must2(s.ScheduleJob(ctx, rotationJob(escrow.DeviceID(fmt.Sprint("C-", i)), int64(i+1), c.ID)))(t)
		j.State, j.Step, j.Error = st.state, st.step, st.err
		if err := s.UpdateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.FinishCampaign(ctx, c.ID, len(steps), 2); err != nil {
		t.Fatal(err)
	}
	p := must(s.Campaign(ctx, c.ID))(t)
	want := map[string]int{escrow.RotationScheduled: 1, escrow.RotationSent: 1, escrow.RotationVerified: 2, escrow.RotationFailed: 2, escrow.RotationCanceled: 1}
	if fmt.Sprint(p.States) != fmt.Sprint(want) || p.Errors["no answer"] != 2 || len(p.Errors) != 1 {
		t.Fatalf("progress %v errors %v, want %v", p.States, p.Errors, want)
	}
	if p.Devices != len(steps) || p.Skipped != 2 || p.Name != "Q4" || p.CreatedBy != by || !p.CreatedAt.Equal(escrow.AuditTime(t0)) {
		t.Fatalf("campaign %+v", p.Campaign)
	}
	if _, err := s.Campaign(ctx, 999); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("unknown campaign: %v", err)
	}
	list := must(s.Campaigns(ctx, 10))(t)
	if len(list) != 1 || list[0].ID != c.ID {
		t.Fatalf("campaigns %+v", list)
	}
	recs := must(s.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionCampaignCreated}))(t)
	if len(recs) != 1 || recs[0].Detail["campaign"] != fmt.Sprint(c.ID) {
		t.Fatalf("campaign audit %+v", recs)
	}
}

func testRegenerations(t *testing.T, s RotationStore) {
	must(s.UpsertDevice(ctx, escrow.Device{ID: "G1", Serial: "C02G1"}))(t)
	mark := func(reason string) bool {
		return must(s.MarkRegeneration(ctx, escrow.Regeneration{Device: "G1", Reason: reason, VersionID: 4, Since: t0},
			event(escrow.ActionRegenerationNeeded, "G1", t0)))(t)
	}
	if !mark("rotation failed") {
		t.Fatal("first mark not new")
	}
	if mark("rotation failed again") {
		t.Fatal("second mark reported new")
	}
	open := must(s.Regenerations(ctx, escrow.RegenerationQuery{}))(t)
	if len(open) != 1 || open[0].Serial != "C02G1" || open[0].Reason != "rotation failed again" || open[0].VersionID != 4 || !open[0].Since.Equal(escrow.AuditTime(t0)) {
		t.Fatalf("open marks %+v", open)
	}
	if !must(s.ClearRegeneration(ctx, "G1", t0.Add(time.Hour), event(escrow.ActionRegenerationResolved, "G1", t0.Add(time.Hour))))(t) {
		t.Fatal("clear reported nothing cleared")
	}
	if must(s.ClearRegeneration(ctx, "G1", t0.Add(time.Hour), event(escrow.ActionRegenerationResolved, "G1", t0.Add(time.Hour))))(t) {
		t.Fatal("second clear reported a mark")
	}
	if open := must(s.Regenerations(ctx, escrow.RegenerationQuery{}))(t); len(open) != 0 {
		t.Fatalf("cleared mark still open: %+v", open)
	}
	all := must(s.Regenerations(ctx, escrow.RegenerationQuery{IncludeDone: true, Device: "G1"}))(t)
	if len(all) != 1 || all[0].ClearedAt.IsZero() {
		t.Fatalf("history %+v", all)
	}
	if !mark("FileVault predates the profile") {
		t.Fatal("re-marking a cleared device is not new")
	}
	n := must(s.CountAudit(ctx, escrow.AuditQuery{Device: "G1"}))(t)
	if n != 3 { // needed, resolved, needed
		t.Fatalf("%d audit records for G1, want 3", n)
	}
}
