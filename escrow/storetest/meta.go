package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
)

// RunMetaStore runs the MetaStore suite. newStore returns an empty store for
// each subtest.
func RunMetaStore(t *testing.T, newStore func(t *testing.T) escrow.MetaStore) {
	t.Run("devices", func(t *testing.T) { testDevices(t, newStore(t)) })
	t.Run("device search", func(t *testing.T) { testDeviceSearch(t, newStore(t)) })
	t.Run("outbox", func(t *testing.T) { testOutbox(t, newStore(t)) })
	t.Run("key versions", func(t *testing.T) { testKeyVersions(t, newStore(t)) })
	t.Run("key aliases", func(t *testing.T) { testKeyAliases(t, newStore(t)) })
	t.Run("concurrent same CMS", func(t *testing.T) { testConcurrentSameCMS(t, newStore(t)) })
	t.Run("concurrent distinct CMS", func(t *testing.T) { testConcurrentDistinct(t, newStore(t)) })
	t.Run("reveal", func(t *testing.T) { testReveal(t, newStore(t)) })
	t.Run("withdraw key", func(t *testing.T) { testWithdrawKey(t, newStore(t)) })
	t.Run("audit chain", func(t *testing.T) { testAudit(t, newStore(t)) })
	t.Run("audit concurrency", func(t *testing.T) { testAuditConcurrent(t, newStore(t)) })
	t.Run("escrow certs and settings", func(t *testing.T) { testCertsSettings(t, newStore(t)) })
}

var (
	ctx = context.Background()
	t0  = time.Date(2026, 11, 1, 9, 30, 0, 123456000, time.UTC)
)

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// must(f())(t) fails the test on f's error and returns its value.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func event(action string, dev escrow.DeviceID, at time.Time) escrow.Event {
	return escrow.Event{Time: at, Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "alice", Name: "Alice"},
		Action: action, Device: dev, Reason: "user locked out", Ticket: "IT-42", Detail: map[string]string{"k": "v", "a": "b"}}
}

func testDevices(t *testing.T, s escrow.MetaStore) {
	if _, err := s.Device(ctx, "nope"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("missing device: %v", err)
	}
	d := must(s.UpsertDevice(ctx, escrow.Device{ID: "UDID-1", UDID: "UDID-1", Serial: "C02AAA", Model: "Mac14,2",
		Attrs: map[string]string{"fde_enabled": "true", "escrow_status": "awaiting key"}}))(t)
	if d.Serial != "C02AAA" || d.CreatedAt.IsZero() || d.UpdatedAt.IsZero() || d.Retired() {
		t.Fatalf("created %+v", d)
	}
	// Merge: empty fields keep stored values; attrs merge key by key.
	d2 := must(s.UpsertDevice(ctx, escrow.Device{ID: "UDID-1", Hostname: "ada-mbp", Attrs: map[string]string{"escrow_status": "escrowed"}}))(t)
	if d2.Serial != "C02AAA" || d2.Model != "Mac14,2" || d2.Hostname != "ada-mbp" {
		t.Fatalf("merged %+v", d2)
	}
	if d2.Attrs["fde_enabled"] != "true" || d2.Attrs["escrow_status"] != "escrowed" {
		t.Fatalf("attrs %v", d2.Attrs)
	}
	if !d2.CreatedAt.Equal(d.CreatedAt) {
		t.Errorf("CreatedAt changed on update")
	}
	got := must(s.Device(ctx, "UDID-1"))(t)
	if got.Hostname != "ada-mbp" || got.Attrs["escrow_status"] != "escrowed" {
		t.Fatalf("read back %+v", got)
	}
	rec := must(s.RetireDevice(ctx, "UDID-1", event(escrow.ActionDeviceRetired, "UDID-1", t0)))(t)
	if rec.Action != escrow.ActionDeviceRetired || rec.Seq != 1 {
		t.Fatalf("retire audit %+v", rec)
	}
	if got := must(s.Device(ctx, "UDID-1"))(t); !got.Retired() {
		t.Fatalf("not retired")
	}
	if _, err := s.RetireDevice(ctx, "nope", event(escrow.ActionDeviceRetired, "nope", t0)); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("retire missing: %v", err)
	}
	if recs := must(s.AuditRecords(ctx, escrow.AuditQuery{}))(t); len(recs) != 1 {
		t.Fatalf("a failed retire appended audit: %d records", len(recs))
	}
}

func testDeviceSearch(t *testing.T, s escrow.MetaStore) {
	devs := []escrow.Device{
		{ID: "A-1", Serial: "C02XK0AAJGH5", Hostname: "ada-mbp", Owner: "ada", OwnerEmail: "ada@example.com"},
		{ID: "B-2", Serial: "FVFZ1234ABCD", Hostname: "grace-mba", Owner: "grace", OwnerEmail: "grace@example.com"},
		{ID: "C-3", UDID: "00008112-000A1B2C3D4E5F6A", Serial: "H2WX9999ZZZZ", Hostname: "lab-mini"},
	}
	for _, d := range devs {
		must(s.UpsertDevice(ctx, d))(t)
	}
	must(s.RetireDevice(ctx, "C-3", event(escrow.ActionDeviceRetired, "C-3", t0)))(t)
	cases := []struct {
		q    escrow.DeviceQuery
		want []escrow.DeviceID
	}{
		{escrow.DeviceQuery{}, []escrow.DeviceID{"A-1", "B-2"}},
		{escrow.DeviceQuery{IncludeRetired: true}, []escrow.DeviceID{"A-1", "B-2", "C-3"}},
		{escrow.DeviceQuery{Text: "c02xk0"}, []escrow.DeviceID{"A-1"}},
		{escrow.DeviceQuery{Text: "GRACE@EXAMPLE"}, []escrow.DeviceID{"B-2"}},
		{escrow.DeviceQuery{Text: "mba"}, []escrow.DeviceID{"B-2"}},
		{escrow.DeviceQuery{Text: "b-2"}, []escrow.DeviceID{"B-2"}},
		{escrow.DeviceQuery{Text: "000A1B2C", IncludeRetired: true}, []escrow.DeviceID{"C-3"}},
		{escrow.DeviceQuery{Text: "000A1B2C"}, nil},
		{escrow.DeviceQuery{Text: "%"}, nil},
		{escrow.DeviceQuery{Text: "_"}, nil},
		{escrow.DeviceQuery{Limit: 1}, []escrow.DeviceID{"A-1"}},
		{escrow.DeviceQuery{AfterID: "A-1", IncludeRetired: true}, []escrow.DeviceID{"B-2", "C-3"}},
	}
	for _, tc := range cases {
		got := must(s.FindDevices(ctx, tc.q))(t)
		var ids []escrow.DeviceID
		for _, d := range got {
			ids = append(ids, d.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("FindDevices(%+v) = %v, want %v", tc.q, ids, tc.want)
		}
	}
}

func testOutbox(t *testing.T, s escrow.MetaStore) {
	cms := []byte("encrypted blob 1")
	it := must(s.PutOutbox(ctx, escrow.OutboxItem{Device: "D1", Serial: "S1", Kind: escrow.KindPRK, Source: escrow.SourceSecurityInfo,
		CMS: cms, CMSSHA256: sha(cms), ReceivedAt: t0}))(t)
	if it.ID == 0 {
		t.Fatal("no ID")
	}
	again := must(s.PutOutbox(ctx, escrow.OutboxItem{Device: "D1", Kind: escrow.KindPRK, Source: escrow.SourceSecurityInfo,
		CMS: cms, CMSSHA256: sha(cms), ReceivedAt: t0.Add(time.Minute)}))(t)
	if again.ID != it.ID {
		t.Fatalf("same blob twice made two outbox items (%d, %d)", it.ID, again.ID)
	}
	cms2 := []byte("encrypted blob 2")
	it2 := must(s.PutOutbox(ctx, escrow.OutboxItem{Device: "D1", Kind: escrow.KindPRK, Source: escrow.SourceRotation,
		CMS: cms2, CMSSHA256: sha(cms2), ReceivedAt: t0.Add(time.Second)}))(t)
	st := must(s.OutboxStats(ctx))(t)
	if st.Pending != 2 || !st.OldestPending.Equal(t0) {
		t.Fatalf("stats %+v", st)
	}

	now := t0.Add(time.Hour)
	a := must(s.ClaimOutbox(ctx, "replica-a", now, now.Add(time.Minute), 10))(t)
	if len(a) != 2 || string(a[0].CMS) != string(cms) || a[0].Serial != "S1" || a[0].Source != escrow.SourceSecurityInfo {
		t.Fatalf("claim a: %+v", a)
	}
	if b := must(s.ClaimOutbox(ctx, "replica-b", now, now.Add(time.Minute), 10))(t); len(b) != 0 {
		t.Fatalf("replica b claimed leased items: %d", len(b))
	}
	if b := must(s.ClaimOutbox(ctx, "replica-b", now.Add(2*time.Minute), now.Add(3*time.Minute), 1))(t); len(b) != 1 {
		t.Fatalf("expired lease not reclaimable: %d", len(b))
	}
	if err := s.FailOutbox(ctx, it2.ID, "vault: connection refused", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	st = must(s.OutboxStats(ctx))(t)
	if st.Pending != 2 || st.LastError != "vault: connection refused" {
		t.Fatalf("stats after failure %+v", st)
	}
	later := now.Add(10 * time.Minute)
	got := must(s.ClaimOutbox(ctx, "replica-c", later, later.Add(time.Minute), 10))(t)
	if len(got) != 1 || got[0].ID != it.ID {
		t.Fatalf("an item was claimed before its next attempt: %+v", got)
	}
	got = must(s.ClaimOutbox(ctx, "replica-c", now.Add(2*time.Hour), now.Add(3*time.Hour), 10))(t)
	if len(got) != 2 {
		t.Fatalf("due items: %d", len(got))
	}
	for _, g := range got {
		if g.ID == it2.ID && (g.Attempts != 1 || g.LastError == "") {
			t.Errorf("attempts not recorded: %+v", g)
		}
	}
	// RecordKey clears the outbox item in the same transaction.
	must3(t, s, escrow.KeyRecord{Device: escrow.Device{ID: "D1"}, Version: escrow.KeyVersion{Device: "D1", Kind: escrow.KindPRK, Source: escrow.SourceSecurityInfo,
		Status: escrow.StatusEscrowed, SecretVersion: 1, CMSSHA256: sha(cms), ReceivedAt: t0}, CMS: cms, OutboxID: it.ID,
		Event: event(escrow.ActionKeyEscrowed, "D1", t0)})
	if st := must(s.OutboxStats(ctx))(t); st.Pending != 1 {
		t.Fatalf("pending %d after RecordKey, want 1", st.Pending)
	}
}

func must3(t *testing.T, s escrow.KeyStore, r escrow.KeyRecord) (escrow.KeyVersion, bool) {
	t.Helper()
	v, created, err := s.RecordKey(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	return v, created
}

func escrowed(dev escrow.DeviceID, cms string, sv int, at time.Time) escrow.KeyRecord {
	return escrow.KeyRecord{
		Device:  escrow.Device{ID: dev, Serial: "SER-" + string(dev)},
		Version: escrow.KeyVersion{Device: dev, Kind: escrow.KindPRK, Source: escrow.SourceSecurityInfo, Status: escrow.StatusEscrowed, SecretVersion: sv, CertFingerprint: "fp1", CMSSHA256: sha([]byte(cms)), ReceivedAt: at},
		CMS:     []byte(cms),
		Event:   event(escrow.ActionKeyEscrowed, dev, at),
	}
}

func testKeyVersions(t *testing.T, s escrow.MetaStore) {
	if vs := must(s.KeyVersions(ctx, "K1", escrow.KindPRK))(t); len(vs) != 0 {
		t.Fatalf("versions of an unknown device: %d", len(vs))
	}
	v1, created := must3(t, s, escrowed("K1", "cms-1", 1, t0))
	if !created || v1.Seq != 1 || v1.ID == 0 || !v1.Current() || v1.Warning != "" {
		t.Fatalf("v1 %+v created=%v", v1, created)
	}
	if d := must(s.Device(ctx, "K1"))(t); d.Serial != "SER-K1" {
		t.Fatalf("RecordKey did not upsert the device: %+v", d)
	}
	// The same CMS again: nothing new, no audit record.
	before := len(must(s.AuditRecords(ctx, escrow.AuditQuery{}))(t))
	again, created := must3(t, s, escrowed("K1", "cms-1", 1, t0.Add(time.Minute)))
	if created || again.ID != v1.ID {
		t.Fatalf("same CMS made a new version: %+v", again)
	}
	if after := len(must(s.AuditRecords(ctx, escrow.AuditQuery{}))(t)); after != before {
		t.Fatalf("a duplicate appended audit records (%d → %d)", before, after)
	}
	// An undecryptable blob is kept but does not replace the current key.
	und := escrowed("K1", "cms-bad", 0, t0.Add(2*time.Minute))
	und.Version.Status, und.Version.Error, und.Version.CertFingerprint = escrow.StatusUndecryptable, `no escrow identity matches: issuer "CN=x" serial 0A`, ""
	und.Event.Action = escrow.ActionKeyUndecryptable
	vu, _ := must3(t, s, und)
	if vu.Seq != 2 || vu.Current() || vu.Error == "" {
		t.Fatalf("undecryptable %+v", vu)
	}
	// A new key supersedes the old one, which stays.
	r3 := escrowed("K1", "cms-3", 2, t0.Add(3*time.Minute))
	r3.Version.Source, r3.Version.Warning = escrow.SourceRotation, "recovery key has 20 key characters, want 24"
	v3, _ := must3(t, s, r3)
	vs := must(s.KeyVersions(ctx, "K1", escrow.KindPRK))(t)
	if len(vs) != 3 || vs[0].Seq != 1 || vs[1].Seq != 2 || vs[2].Seq != 3 {
		t.Fatalf("versions %+v", vs)
	}
	if vs[0].Current() || !vs[0].SupersededAt.Equal(escrow.AuditTime(t0.Add(3*time.Minute))) {
		t.Errorf("v1 not superseded at v3's time: %+v", vs[0])
	}
	if !vs[2].Current() || vs[2].Source != escrow.SourceRotation || vs[2].SecretVersion != 2 || vs[2].CertFingerprint != "fp1" || vs[2].Warning == "" {
		t.Errorf("v3 %+v", vs[2])
	}
	if !vs[2].ReceivedAt.Equal(escrow.AuditTime(t0.Add(3 * time.Minute))) {
		t.Errorf("ReceivedAt %v", vs[2].ReceivedAt)
	}
	if got := must(s.KeyVersionByCMS(ctx, "K1", sha([]byte("cms-3"))))(t); got.ID != v3.ID {
		t.Errorf("by CMS: %+v", got)
	}
	if _, err := s.KeyVersionByCMS(ctx, "K1", sha([]byte("cms-unknown"))); !errors.Is(err, escrow.ErrNotFound) {
		t.Errorf("unknown CMS: %v", err)
	}
	if _, err := s.KeyVersionByCMS(ctx, "K2", sha([]byte("cms-3"))); !errors.Is(err, escrow.ErrNotFound) {
		t.Errorf("CMS lookups must be per device: %v", err)
	}
	// Kinds are separate sequences.
	tok := escrow.KeyRecord{Device: escrow.Device{ID: "K1"}, Version: escrow.KeyVersion{Device: "K1", Kind: escrow.KindBootstrapToken, Source: escrow.SourceCheckin, Status: escrow.StatusEscrowed, SecretVersion: 1, ReceivedAt: t0},
		Event: event(escrow.ActionTokenEscrowed, "K1", t0)}
	vt, _ := must3(t, s, tok)
	if vt.Seq != 1 || !vt.Current() {
		t.Errorf("token version %+v", vt)
	}
	if vs := must(s.KeyVersions(ctx, "K1", escrow.KindPRK))(t); !vs[2].Current() {
		t.Errorf("a token superseded the PRK")
	}
}

func testKeyAliases(t *testing.T, s escrow.MetaStore) {
	v1, _ := must3(t, s, escrowed("AL", "cms-a", 1, t0))
	alias := escrow.KeyRecord{Device: escrow.Device{ID: "AL"}, Version: escrow.KeyVersion{Device: "AL", Kind: escrow.KindPRK, CMSSHA256: sha([]byte("cms-b")), ReceivedAt: t0.Add(time.Minute)},
		CMS: []byte("cms-b"), SameAs: v1.ID, Verify: true, Event: event(escrow.ActionKeySeen, "AL", t0.Add(time.Minute))}
	got, created := must3(t, s, alias)
	if created || got.ID != v1.ID || !got.VerifiedAt.Equal(escrow.AuditTime(t0.Add(time.Minute))) {
		t.Fatalf("alias: %+v created=%v", got, created)
	}
	if vs := must(s.KeyVersions(ctx, "AL", escrow.KindPRK))(t); len(vs) != 1 || vs[0].VerifiedAt.IsZero() {
		t.Fatalf("versions after alias %+v", vs)
	}
	if byB := must(s.KeyVersionByCMS(ctx, "AL", sha([]byte("cms-b"))))(t); byB.ID != v1.ID {
		t.Errorf("alias CMS maps to %d", byB.ID)
	}
	recs := must(s.AuditRecords(ctx, escrow.AuditQuery{Device: "AL"}))(t)
	if len(recs) != 2 || recs[1].Action != escrow.ActionKeySeen {
		t.Errorf("alias audit %+v", recs)
	}
	bad := alias
	bad.CMS, bad.Version.CMSSHA256, bad.SameAs = []byte("cms-c"), sha([]byte("cms-c")), 999999
	if _, _, err := s.RecordKey(ctx, bad); !errors.Is(err, escrow.ErrNotFound) {
		t.Errorf("alias of an unknown version: %v", err)
	}
}

func testConcurrentSameCMS(t *testing.T, s escrow.MetaStore) {
	const n = 10
	var wg sync.WaitGroup
	created := make(chan bool, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, c, err := s.RecordKey(ctx, escrowed("CC", "same-cms", 1, t0))
			if err != nil {
				t.Error(err)
			}
			created <- c
		}()
	}
	wg.Wait()
	close(created)
	count := 0
	for c := range created {
		if c {
			count++
		}
	}
	if vs := must(s.KeyVersions(ctx, "CC", escrow.KindPRK))(t); count != 1 || len(vs) != 1 {
		t.Fatalf("%d creations, %d versions; want exactly one", count, len(vs))
	}
}

func testConcurrentDistinct(t *testing.T, s escrow.MetaStore) {
	const n = 10
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := s.RecordKey(ctx, escrowed("CD", fmt.Sprint("cms-", i), i+1, t0.Add(time.Duration(i)*time.Second))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	vs := must(s.KeyVersions(ctx, "CD", escrow.KindPRK))(t)
	if len(vs) != n {
		t.Fatalf("%d versions, want %d", len(vs), n)
	}
	cur := 0
	for i, v := range vs {
		if v.Seq != i+1 {
			t.Errorf("seq %d at %d", v.Seq, i)
		}
		if v.Current() {
			cur++
		}
	}
	if cur != 1 || !vs[n-1].Current() {
		t.Fatalf("%d current versions, want exactly the newest", cur)
	}
	if rep := must(escrow.VerifyAudit(ctx, s, nil))(t); rep.Broken != nil || rep.Records != n {
		t.Fatalf("audit after concurrent writes: %+v", rep)
	}
}

func testReveal(t *testing.T, s escrow.MetaStore) {
	v, _ := must3(t, s, escrowed("RV", "cms-r", 1, t0))
	e := event(escrow.ActionKeyRevealed, "RV", t0.Add(time.Hour))
	rec := must(s.RecordReveal(ctx, v.ID, e))(t)
	if rec.Action != escrow.ActionKeyRevealed || rec.Reason != "user locked out" || rec.Ticket != "IT-42" || rec.Seq != 2 {
		t.Fatalf("reveal audit %+v", rec)
	}
	vs := must(s.KeyVersions(ctx, "RV", escrow.KindPRK))(t)
	if !vs[0].DisclosedAt.Equal(escrow.AuditTime(t0.Add(time.Hour))) {
		t.Fatalf("DisclosedAt %v", vs[0].DisclosedAt)
	}
	must(s.RecordReveal(ctx, v.ID, event(escrow.ActionKeyRevealed, "RV", t0.Add(2*time.Hour))))(t)
	if vs := must(s.KeyVersions(ctx, "RV", escrow.KindPRK))(t); !vs[0].DisclosedAt.Equal(escrow.AuditTime(t0.Add(time.Hour))) {
		t.Errorf("second reveal moved DisclosedAt")
	}
	if _, err := s.RecordReveal(ctx, 987654, e); !errors.Is(err, escrow.ErrNotFound) {
		t.Errorf("reveal of unknown version: %v", err)
	}
	if n := len(must(s.AuditRecords(ctx, escrow.AuditQuery{}))(t)); n != 3 {
		t.Errorf("%d audit records, want 3", n)
	}
}

func testAudit(t *testing.T, s escrow.MetaStore) {
	if _, err := s.AuditHead(ctx); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("head of empty log: %v", err)
	}
	var recs []escrow.AuditRecord
	for i, e := range []escrow.Event{
		event(escrow.ActionKeyEscrowed, "A1", t0),
		event(escrow.ActionKeyRevealed, "A1", t0.Add(time.Hour)),
		{Time: t0.Add(2 * time.Hour), Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "bob"}, Action: escrow.ActionKeyRevealed, Device: "A2", Reason: "r", Ticket: "T-1"},
		{Time: t0.Add(3 * time.Hour), Actor: escrow.System, Action: escrow.ActionExportCreated, Detail: map[string]string{"recipients": "age1..."}},
	} {
		r := must(s.AppendAudit(ctx, e))(t)
		if r.Seq != int64(i+1) {
			t.Fatalf("seq %d, want %d", r.Seq, i+1)
		}
		recs = append(recs, r)
	}
	if recs[0].PrevHash != escrow.GenesisHash || recs[1].PrevHash != recs[0].Hash {
		t.Fatal("records are not linked")
	}
	if recs[3].Hash != escrow.ChainHash(recs[3].PrevHash, 4, recs[3].Event) {
		t.Fatal("hash is not ChainHash")
	}
	all := must(s.AuditRecords(ctx, escrow.AuditQuery{}))(t)
	if len(all) != 4 {
		t.Fatalf("%d records", len(all))
	}
	r := all[0]
	if !r.Time.Equal(escrow.AuditTime(t0)) || r.Actor.Name != "Alice" || r.Actor.Kind != escrow.ActorUser || r.Detail["a"] != "b" || r.Reason != "user locked out" || r.Hash != recs[0].Hash {
		t.Fatalf("round trip %+v", r)
	}
	if h := must(s.AuditHead(ctx))(t); h.Seq != 4 || h.Hash != recs[3].Hash {
		t.Fatalf("head %+v", h)
	}
	filters := []struct {
		q    escrow.AuditQuery
		want []int64
	}{
		{escrow.AuditQuery{AfterSeq: 2}, []int64{3, 4}},
		{escrow.AuditQuery{Device: "A1"}, []int64{1, 2}},
		{escrow.AuditQuery{ActorID: "bob"}, []int64{3}},
		{escrow.AuditQuery{Action: escrow.ActionKeyRevealed}, []int64{2, 3}},
		{escrow.AuditQuery{Since: t0.Add(90 * time.Minute)}, []int64{3, 4}},
		{escrow.AuditQuery{Until: t0.Add(90 * time.Minute)}, []int64{1, 2}},
		{escrow.AuditQuery{Limit: 2}, []int64{1, 2}},
	}
	for _, f := range filters {
		var got []int64
		for _, r := range must(s.AuditRecords(ctx, f.q))(t) {
			got = append(got, r.Seq)
		}
		if fmt.Sprint(got) != fmt.Sprint(f.want) {
			t.Errorf("AuditRecords(%+v) = %v, want %v", f.q, got, f.want)
		}
	}
	c := escrow.Checkpoint{Seq: 2, Hash: recs[1].Hash, Time: t0.Add(time.Hour), KeyID: "k", Signature: []byte{1, 2, 3}}
	if err := s.AddCheckpoint(ctx, c); err != nil {
		t.Fatal(err)
	}
	c4 := escrow.Checkpoint{Seq: 4, Hash: recs[3].Hash, Time: t0.Add(4 * time.Hour), KeyID: "k", Signature: []byte{4}}
	if err := s.AddCheckpoint(ctx, c4); err != nil {
		t.Fatal(err)
	}
	cps := must(s.Checkpoints(ctx))(t)
	if len(cps) != 2 || cps[0].Seq != 2 || cps[0].Hash != c.Hash || string(cps[0].Signature) != string(c.Signature) || !cps[1].Time.Equal(escrow.AuditTime(c4.Time)) {
		t.Fatalf("checkpoints %+v", cps)
	}
}

func testAuditConcurrent(t *testing.T, s escrow.MetaStore) {
	const n = 20
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.AppendAudit(ctx, event(escrow.ActionKeyRevealed, escrow.DeviceID(fmt.Sprint("D", i)), t0)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rep := must(escrow.VerifyAudit(ctx, s, nil))(t)
	if rep.Broken != nil || rep.Records != n {
		t.Fatalf("chain after %d concurrent appends: %+v", n, rep)
	}
}

func testCertsSettings(t *testing.T, s escrow.MetaStore) {
	a, err := fde.NewIdentity(fde.IdentityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := fde.RenewCertificate(a.Certificate, a.Key, fde.IdentityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca := escrow.EscrowCert{Fingerprint: fde.Fingerprint(a.Certificate), Certificate: a.Certificate, AddedAt: t0}
	cb := escrow.EscrowCert{Fingerprint: fde.Fingerprint(b), Certificate: b, AddedAt: t0.Add(time.Hour)}
	for _, c := range []escrow.EscrowCert{ca, cb, ca} {
		if err := s.AddEscrowCert(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	got := must(s.EscrowCerts(ctx))(t)
	if len(got) != 2 || got[0].Fingerprint != ca.Fingerprint || !got[1].Certificate.Equal(b) || !got[0].AddedAt.Equal(escrow.AuditTime(t0)) {
		t.Fatalf("certs %+v", got)
	}
	if _, err := s.Setting(ctx, "audit.public-key"); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("missing setting: %v", err)
	}
	if err := s.CreateSetting(ctx, "audit.public-key", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSetting(ctx, "audit.public-key", []byte("evil")); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("overwrite: %v", err)
	}
	if v := must(s.Setting(ctx, "audit.public-key"))(t); string(v) != "abc" {
		t.Fatalf("setting %q", v)
	}
}
