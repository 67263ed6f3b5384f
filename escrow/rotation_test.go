package escrow_test

import (
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// TestRotationSweep: the sweep schedules disclosed keys once the delay has
// passed, keys over the maximum age, and nothing twice; a campaign skips
// devices already rotating and counts them.
func TestRotationSweep(t *testing.T) {
	secrets, meta := openEmbedded(t)
	now := time.Now()
	clock := func() time.Time { return now }
	e := newEnv(t, secrets, meta, escrow.WithClock(clock))
	store := meta.(interface {
		escrow.MetaStore
		escrow.RotationStore
	})
	rot := escrow.NewRotations(store, escrow.RotationPolicy{Delay: time.Hour, MaxAge: 365 * 24 * time.Hour}, nil).WithClock(clock)
	id, _ := identities(t)
	fresh := escrow.Device{ID: "FRESH-0001", Serial: "C02FRESH"}
	old := escrow.Device{ID: "OLD-0001", Serial: "C02OLD"}
	if _, err := e.svc.Ingest(ctx, fresh, macCMS(t, id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
		t.Fatal(err)
	}
	now = now.Add(-400 * 24 * time.Hour) // the old Mac's key arrived long ago
	if _, err := e.svc.Ingest(ctx, old, macCMS(t, id.Certificate, prk2), escrow.SourceSecurityInfo); err != nil {
		t.Fatal(err)
	}
	now = now.Add(400 * 24 * time.Hour)
	if _, err := e.svc.Reveal(ctx, escrow.RevealRequest{Actor: alice(), Device: fresh.ID, Reason: "user forgot password at login", Ticket: "IT-1"}); err != nil {
		t.Fatal(err)
	}
	// Within the delay only the old key is due.
	if n, err := rot.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep within the delay: %d %v", n, err)
	}
	j, err := store.OpenJob(ctx, escrow.JobRotation, old.ID)
	if err != nil || j.Data[escrow.RotationDataTrigger] != escrow.TriggerMaxAge {
		t.Fatalf("old key job %+v %v", j, err)
	}
	if _, err := store.OpenJob(ctx, escrow.JobRotation, fresh.ID); err == nil {
		t.Fatal("the revealed key was scheduled before the delay")
	}
	now = now.Add(61 * time.Minute)
	if n, err := rot.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the delay: %d %v", n, err)
	}
	j, err = store.OpenJob(ctx, escrow.JobRotation, fresh.ID)
	if err != nil || j.Data[escrow.RotationDataTrigger] != escrow.TriggerDisclosure {
		t.Fatalf("revealed key job %+v %v", j, err)
	}
	if n, err := rot.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep: %d %v", n, err)
	}
	recs, err := store.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionRotationScheduled})
	if err != nil || len(recs) != 2 {
		t.Fatalf("%d rotation.scheduled records: %v", len(recs), err)
	}
	// A campaign over everything: both already rotating, so both skipped.
	p, err := rot.StartCampaign(ctx, escrow.CampaignRequest{Name: "all", Reason: "yearly", By: alice()})
	if err != nil || p.Devices != 0 || p.Skipped != 2 {
		t.Fatalf("campaign %+v %v", p, err)
	}
	if _, err := rot.StartCampaign(ctx, escrow.CampaignRequest{Name: "", Reason: "x", By: alice()}); err == nil {
		t.Fatal("a campaign without a name was accepted")
	}
	// A device without an escrowed key cannot be rotated: it needs regeneration.
	if _, err := e.svc.UpsertDevice(ctx, escrow.Device{ID: "NOKEY-0001"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rot.Schedule(ctx, escrow.RotationRequest{Device: "NOKEY-0001", Trigger: escrow.TriggerManual, By: alice()}); err == nil {
		t.Fatal("a rotation without a key was scheduled")
	}
}
