package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// tokenRecord is version sv of a device's bootstrap token, received at at.
func tokenRecord(dev escrow.DeviceID, sv int, at time.Time) escrow.KeyRecord {
	return escrow.KeyRecord{
		Device:  escrow.Device{ID: dev},
		Version: escrow.KeyVersion{Device: dev, Kind: escrow.KindBootstrapToken, Source: escrow.SourceCheckin, Status: escrow.StatusEscrowed, SecretVersion: sv, ReceivedAt: at},
		Event:   event(escrow.ActionTokenEscrowed, dev, at),
	}
}

// testWithdrawKey: a withdrawal supersedes the current version with no
// successor, with its audit record; the versions stay; other kinds are
// untouched; withdrawing again, or with nothing current, changes nothing and
// appends nothing; a later version is current as usual.
func testWithdrawKey(t *testing.T, s escrow.MetaStore) {
	const dev = escrow.DeviceID("WD")
	audit := func() int { t.Helper(); return len(must(s.AuditRecords(ctx, escrow.AuditQuery{}))(t)) }

	// Nothing to withdraw: an unknown device, then a known one without the kind.
	if v, ok, err := s.WithdrawKey(ctx, dev, escrow.KindBootstrapToken, event(escrow.ActionTokenWithdrawn, dev, t0)); err != nil || ok || v.ID != 0 {
		t.Fatalf("withdraw on an unknown device: %+v %v %v", v, ok, err)
	}
	prk, _ := must3(t, s, escrowed(dev, "cms-wd", 1, t0))
	if _, ok, err := s.WithdrawKey(ctx, dev, escrow.KindBootstrapToken, event(escrow.ActionTokenWithdrawn, dev, t0)); err != nil || ok {
		t.Fatalf("withdraw with no token: %v %v", ok, err)
	}
	if n := audit(); n != 1 {
		t.Fatalf("%d audit records after no-op withdrawals, want 1", n)
	}

	v1, _ := must3(t, s, tokenRecord(dev, 1, t0.Add(time.Minute)))
	v2, _ := must3(t, s, tokenRecord(dev, 2, t0.Add(2*time.Minute)))
	at := t0.Add(time.Hour)
	e := event(escrow.ActionTokenWithdrawn, dev, at)
	got, ok, err := s.WithdrawKey(ctx, dev, escrow.KindBootstrapToken, e)
	if err != nil || !ok {
		t.Fatalf("withdraw: %v %v", ok, err)
	}
	if got.ID != v2.ID || got.Seq != 2 || got.Current() || !got.SupersededAt.Equal(escrow.AuditTime(at)) {
		t.Fatalf("withdrawn version %+v, want v2 superseded at %v", got, at)
	}
	if len(e.Detail) != 2 {
		t.Errorf("the caller's event detail was changed: %v", e.Detail)
	}
	vs := must(s.KeyVersions(ctx, dev, escrow.KindBootstrapToken))(t)
	if len(vs) != 2 {
		t.Fatalf("%d token versions after the withdrawal, want both kept", len(vs))
	}
	for _, v := range vs {
		if v.Current() {
			t.Errorf("version %d still current after the withdrawal", v.Seq)
		}
	}
	if vs[0].ID != v1.ID || !vs[0].SupersededAt.Equal(escrow.AuditTime(t0.Add(2*time.Minute))) {
		t.Errorf("v1 %+v: its supersession by v2 changed", vs[0])
	}
	if vs[1].SecretVersion != 2 || !vs[1].SupersededAt.Equal(escrow.AuditTime(at)) || vs[1].Status != escrow.StatusEscrowed {
		t.Errorf("v2 after the withdrawal %+v", vs[1])
	}
	if vs := must(s.KeyVersions(ctx, dev, escrow.KindPRK))(t); len(vs) != 1 || vs[0].ID != prk.ID || !vs[0].Current() {
		t.Errorf("a token withdrawal touched the PRK: %+v", vs)
	}
	recs := must(s.AuditRecords(ctx, escrow.AuditQuery{Device: dev, Action: escrow.ActionTokenWithdrawn}))(t)
	if len(recs) != 1 {
		t.Fatalf("%d withdrawal records, want 1", len(recs))
	}
	r := recs[0]
	if !r.Time.Equal(escrow.AuditTime(at)) || r.Actor.ID != "alice" || r.Detail["version"] != "2" || r.Detail["secret_version"] != "2" || r.Detail["k"] != "v" {
		t.Errorf("withdrawal record %+v", r)
	}

	// Again: nothing current, nothing changes.
	before := audit()
	if _, ok, err := s.WithdrawKey(ctx, dev, escrow.KindBootstrapToken, event(escrow.ActionTokenWithdrawn, dev, at.Add(time.Hour))); err != nil || ok {
		t.Fatalf("second withdrawal: %v %v", ok, err)
	}
	if after := audit(); after != before {
		t.Errorf("a no-op withdrawal appended %d audit records", after-before)
	}
	if vs := must(s.KeyVersions(ctx, dev, escrow.KindBootstrapToken))(t); !vs[1].SupersededAt.Equal(escrow.AuditTime(at)) {
		t.Errorf("a no-op withdrawal moved SupersededAt: %v", vs[1].SupersededAt)
	}

	// A new token after the withdrawal is current as usual; the old versions keep their times.
	v3, created := must3(t, s, tokenRecord(dev, 3, at.Add(2*time.Hour)))
	if !created || v3.Seq != 3 || !v3.Current() {
		t.Fatalf("token after the withdrawal %+v", v3)
	}
	vs = must(s.KeyVersions(ctx, dev, escrow.KindBootstrapToken))(t)
	if len(vs) != 3 || !vs[2].Current() || !vs[1].SupersededAt.Equal(escrow.AuditTime(at)) {
		t.Errorf("versions after a new token %+v", vs)
	}
	if rep := must(escrow.VerifyAudit(ctx, s, nil))(t); rep.Broken != nil {
		t.Fatalf("audit chain: %+v", rep)
	}

	// Concurrent withdrawals: exactly one withdraws, one record.
	const n = 8
	var wg sync.WaitGroup
	results := make(chan bool, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok, err := s.WithdrawKey(ctx, dev, escrow.KindBootstrapToken, event(escrow.ActionTokenWithdrawn, dev, at.Add(3*time.Hour+time.Duration(i)*time.Second)))
			if err != nil {
				t.Error(err)
			}
			results <- ok
		}()
	}
	wg.Wait()
	close(results)
	count := 0
	for ok := range results {
		if ok {
			count++
		}
	}
	if recs := must(s.AuditRecords(ctx, escrow.AuditQuery{Device: dev, Action: escrow.ActionTokenWithdrawn}))(t); count != 1 || len(recs) != 2 {
		t.Fatalf("concurrent withdrawals: %d withdrew, %d records in all; want 1 and 2", count, len(recs))
	}
}
