package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/token"
)

// MDMStore is what the MDM door persists.
type MDMStore interface {
	escrow.CommandStore
	escrow.JobStore
	escrow.AccountStore
	escrow.EventStore
	escrow.MutableSettings
	escrow.SettingStore
}

// RunMDMStore runs the suite for the MDM door's stores.
func RunMDMStore(t *testing.T, newStore func(t *testing.T) MDMStore) {
	t.Run("commands", func(t *testing.T) { testCommands(t, newStore(t)) })
	t.Run("jobs", func(t *testing.T) { testJobs(t, newStore(t)) })
	t.Run("job claims", func(t *testing.T) { testJobClaims(t, newStore(t)) })
	t.Run("accounts", func(t *testing.T) { testAccounts(t, newStore(t)) })
	t.Run("events and settings", func(t *testing.T) { testEvents(t, newStore(t)) })
}

func testCommands(t *testing.T, s MDMStore) {
	if _, err := s.Command(ctx, "D1", "nope"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("missing command: %v", err)
	}
	c := escrow.Command{UUID: "C-1", Device: "D1", RequestType: fde.RequestSecurityInfo, Purpose: "escrow-check", JobID: 7, EnqueuedAt: t0}
	if err := s.RecordCommand(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordCommand(ctx, c); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("duplicate UUID: %v", err)
	}
	if err := s.RecordCommand(ctx, escrow.Command{UUID: "C-2", Device: "D1", RequestType: fde.RequestUserList, EnqueuedAt: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	got := must(s.Command(ctx, "D1", "C-1"))(t)
	if got.RequestType != fde.RequestSecurityInfo || got.Purpose != "escrow-check" || got.JobID != 7 || got.Status != "" || !got.AnsweredAt.IsZero() {
		t.Fatalf("command %+v", got)
	}
	ans := must(s.AnswerCommand(ctx, "D1", "C-1", fde.StatusError, "MCMDMErrorDomain 12021", t0.Add(time.Hour)))(t)
	if ans.Status != fde.StatusError || ans.Error == "" || !ans.AnsweredAt.Equal(escrow.AuditTime(t0.Add(time.Hour))) {
		t.Fatalf("answered %+v", ans)
	}
	if _, err := s.AnswerCommand(ctx, "D1", "nope", "Acknowledged", "", t0); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("answer unknown: %v", err)
	}
	// The same UUID may go to several devices (one enqueue for many).
	if err := s.RecordCommand(ctx, escrow.Command{UUID: "C-1", Device: "D2", RequestType: fde.RequestSecurityInfo, EnqueuedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if d2 := must(s.Command(ctx, "D2", "C-1"))(t); d2.Status != "" {
		t.Fatalf("answering D1 answered D2: %+v", d2)
	}
	if _, err := s.Command(ctx, "D3", "C-1"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("command of another device: %v", err)
	}
	list := must(s.Commands(ctx, "D1", 10))(t)
	if len(list) != 2 || list[0].UUID != "C-2" {
		t.Fatalf("commands %+v", list)
	}
}

func testJobs(t *testing.T, s MDMStore) {
	if _, err := s.OpenJob(ctx, "escrow-check", "D1"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("no job yet: %v", err)
	}
	j := must(s.PutJob(ctx, escrow.Job{Kind: "escrow-check", Device: "D1", RunAt: t0, Data: map[string]string{"why": "enrolled"}}))(t)
	if j.ID == 0 || j.State != escrow.JobPending || j.Data["why"] != "enrolled" || !j.Open() {
		t.Fatalf("created %+v", j)
	}
	// Putting again updates the open job instead of adding one.
	j2 := must(s.PutJob(ctx, escrow.Job{Kind: "escrow-check", Device: "D1", State: escrow.JobWaiting, Step: "sent", RunAt: t0.Add(time.Hour), Attempts: 1}))(t)
	if j2.ID != j.ID || j2.State != escrow.JobWaiting || j2.Step != "sent" || !j2.CreatedAt.Equal(j.CreatedAt) {
		t.Fatalf("updated %+v", j2)
	}
	other := must(s.PutJob(ctx, escrow.Job{Kind: "rotation", Device: "D1", RunAt: t0}))(t)
	if other.ID == j.ID {
		t.Fatal("kinds share a job")
	}
	// Finishing it closes it; the next put makes a new one.
	j2.State = escrow.JobDone
	if err := s.UpdateJob(ctx, j2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenJob(ctx, "escrow-check", "D1"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("closed job still open: %v", err)
	}
	j3 := must(s.PutJob(ctx, escrow.Job{Kind: "escrow-check", Device: "D1", RunAt: t0}))(t)
	if j3.ID == j.ID {
		t.Fatal("a closed job was reopened")
	}
	hist := must(s.Jobs(ctx, escrow.JobQuery{Kind: "escrow-check", Device: "D1"}))(t)
	if len(hist) != 2 || hist[0].ID != j3.ID || hist[1].State != escrow.JobDone {
		t.Fatalf("history %+v", hist)
	}
	if open := must(s.Jobs(ctx, escrow.JobQuery{States: []escrow.JobState{escrow.JobPending, escrow.JobWaiting}}))(t); len(open) != 2 {
		t.Fatalf("open jobs %d", len(open))
	}
	if err := s.UpdateJob(ctx, escrow.Job{ID: 999999, Kind: "x", Device: "y", State: escrow.JobDone}); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("update unknown job: %v", err)
	}
	if _, err := s.PutJob(ctx, escrow.Job{Kind: "x", Device: "y", State: "sideways"}); !errors.Is(err, escrow.ErrInvalid) {
		t.Fatalf("bad state: %v", err)
	}
}

func testJobClaims(t *testing.T, s MDMStore) {
	for i := 0; i < 30; i++ {
		must(s.PutJob(ctx, escrow.Job{Kind: "rotation", Device: escrow.DeviceID(fmt.Sprint("dev-", i)), RunAt: t0.Add(time.Duration(i) * time.Second)}))(t)
	}
	must(s.PutJob(ctx, escrow.Job{Kind: "rotation", Device: "later", RunAt: t0.Add(time.Hour)}))(t)
	must(s.PutJob(ctx, escrow.Job{Kind: "escrow-check", Device: "dev-0", RunAt: t0}))(t)
	now := t0.Add(time.Minute)
	var mu sync.Mutex
	seen := map[int64]string{}
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprint("replica-", r)
			for {
				js, err := s.ClaimJobs(ctx, "rotation", owner, now, now.Add(time.Minute), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(js) == 0 {
					return
				}
				mu.Lock()
				for _, j := range js {
					if prev, dup := seen[j.ID]; dup {
						t.Errorf("job %d claimed by %s and %s", j.ID, prev, owner)
					}
					seen[j.ID] = owner
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 30 {
		t.Fatalf("%d of 30 due jobs claimed", len(seen))
	}
	// A lease expires; an update releases it.
	js := must(s.ClaimJobs(ctx, "rotation", "late", now.Add(2*time.Minute), now.Add(3*time.Minute), 100))(t)
	if len(js) != 30 {
		t.Fatalf("expired leases: %d reclaimed", len(js))
	}
	js[0].State, js[0].RunAt = escrow.JobPending, now
	if err := s.UpdateJob(ctx, js[0]); err != nil {
		t.Fatal(err)
	}
	again := must(s.ClaimJobs(ctx, "rotation", "x", now.Add(2*time.Minute), now.Add(3*time.Minute), 100))(t)
	if len(again) != 1 || again[0].ID != js[0].ID {
		t.Fatalf("after update: %+v", again)
	}
}

func testAccounts(t *testing.T, s MDMStore) {
	as, at, err := s.Accounts(ctx, "D1")
	if err != nil || len(as) != 0 || !at.IsZero() {
		t.Fatalf("no report yet: %v %v %v", as, at, err)
	}
	first := []token.Account{
		{UserName: "ada", FullName: "Ada", UID: 501, GUID: "G1", HasSecureToken: fde.FlagTrue, MobileAccount: fde.FlagFalse, IsLoggedIn: fde.FlagTrue},
		{UserName: "itadmin", UID: 502, GUID: "G2", HasSecureToken: fde.FlagFalse},
	}
	ch := must(s.ReplaceAccounts(ctx, "D1", first, t0))(t)
	if len(ch) != 2 || ch[0].Kind != token.Added {
		t.Fatalf("first report changes %v", ch)
	}
	got, at, err := s.Accounts(ctx, "D1")
	if err != nil || len(got) != 2 || got[0] != first[0] || !at.Equal(escrow.AuditTime(t0)) {
		t.Fatalf("read back %+v %v %v", got, at, err)
	}
	second := []token.Account{first[0], {UserName: "itadmin", UID: 502, GUID: "G2", HasSecureToken: fde.FlagTrue}}
	ch = must(s.ReplaceAccounts(ctx, "D1", second, t0.Add(time.Hour)))(t)
	if len(ch) != 1 || ch[0].Kind != token.TokenGained || ch[0].UserName != "itadmin" {
		t.Fatalf("second report changes %v", ch)
	}
	if ch := must(s.ReplaceAccounts(ctx, "D1", second, t0.Add(2*time.Hour)))(t); len(ch) != 0 {
		t.Fatalf("unchanged report: %v", ch)
	}
	hist := must(s.AccountHistory(ctx, "D1", 10))(t)
	if len(hist) != 3 || hist[0].Kind != token.TokenGained || !hist[0].At.Equal(escrow.AuditTime(t0.Add(time.Hour))) || hist[2].Kind != token.Added {
		t.Fatalf("history %+v", hist)
	}
	if other, _, _ := s.Accounts(ctx, "D2"); len(other) != 0 {
		t.Fatal("accounts leak between devices")
	}
}

func testEvents(t *testing.T, s MDMStore) {
	for i, want := range []bool{true, false, false} {
		got, err := s.MarkEvent(ctx, "evt-1", t0.Add(time.Duration(i)*time.Second))
		if err != nil || got != want {
			t.Fatalf("MarkEvent #%d = %v %v, want %v", i, got, err, want)
		}
	}
	if fresh, _ := s.MarkEvent(ctx, "evt-2", t0); !fresh {
		t.Fatal("a second event is not new")
	}
	// A forgotten event (its processing failed) is new again; forgetting
	// twice, or an unknown event, is not an error.
	for i := 0; i < 2; i++ {
		if err := s.ForgetEvent(ctx, "evt-2"); err != nil {
			t.Fatalf("ForgetEvent #%d: %v", i, err)
		}
	}
	if fresh, _ := s.MarkEvent(ctx, "evt-2", t0); !fresh {
		t.Fatal("a forgotten event is not new")
	}
	if fresh, _ := s.MarkEvent(ctx, "evt-1", t0); fresh {
		t.Fatal("forgetting one event forgot another")
	}
	if err := s.PutSetting(ctx, "mdm.push-topic", []byte("com.apple.mgmt.External.1")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSetting(ctx, "mdm.push-topic", []byte("com.apple.mgmt.External.2")); err != nil {
		t.Fatal(err)
	}
	if v := must(s.Setting(ctx, "mdm.push-topic"))(t); string(v) != "com.apple.mgmt.External.2" {
		t.Fatalf("setting %q", v)
	}
}
