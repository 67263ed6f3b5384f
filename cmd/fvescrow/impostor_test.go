package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
)

// TestRotationKeyOnlyToTheMacThatHoldsIt: RotateFileVaultKey carries the
// escrowed key, so it goes only to a device that reported a blob of that key
// since it (last) enrolled. The real Mac, enrolling again with its identity,
// proves the key in its enrollment SecurityInfo and is rotated. A device
// enrolled under the Mac's UDID with a new identity (what a leaked
// enrollment profile allows) is asked for SecurityInfo, cannot report the
// key, and never receives it: the rotation fails, saying why.
func TestRotationKeyOnlyToTheMacThatHoldsIt(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now })
	mac := escrowedMac(t, s)
	if d := device(t, s, mac); d.Attrs[escrow.AttrKeyProvenAt] == "" {
		t.Fatal("the escrowing SecurityInfo did not prove the key")
	}

	// The real Mac enrolls again: no proof until its SecurityInfo.
	if err := mac.Authenticate(ctx); err != nil {
		t.Fatal(err)
	}
	if d := device(t, s, mac); d.Attrs[escrow.AttrKeyProvenAt] != "" {
		t.Fatal("Authenticate kept the proof")
	}
	if err := mac.TokenUpdate(ctx); err != nil {
		t.Fatal(err)
	}
	connect(t, s, mac)
	if d := device(t, s, mac); d.Attrs[escrow.AttrKeyProvenAt] == "" {
		t.Fatalf("the Mac's enrollment SecurityInfo did not prove the key: %+v", d.Attrs)
	}
	key := mac.PRK()
	startRotation(t, s, mac)
	if got := connect(t, s, mac); !slices.Contains(got, fde.RequestRotateFileVaultKey) {
		t.Fatalf("the Mac was sent %v", got)
	}
	if u := mac.RotationUnlocks(); len(u) != 1 || u[0] != key {
		t.Fatal("the Mac did not receive its key to rotate")
	}
	connect(t, s, mac) // the verifying SecurityInfo
	key = mac.PRK()
	if j := rotationJob(t, s, mac); j.State != escrow.JobDone {
		t.Fatalf("the Mac's rotation: %+v", j)
	}

	// A fake device under the Mac's UDID.
	fake := s.enroll(fakemac.Options{UDID: mac.UDID, Serial: mac.Serial})
	if d := device(t, s, fake); d.Attrs[escrow.AttrKeyProvenAt] != "" {
		t.Fatal("a new identity inherited the proof")
	}
	if _, created, err := s.srv.rotations.Schedule(ctx, escrow.RotationRequest{Device: escrow.DeviceID(mac.UDID), Trigger: escrow.TriggerManual,
		By: escrow.Actor{Kind: escrow.ActorUser, ID: "admin"}, Reason: "test"}); err != nil || !created {
		t.Fatalf("schedule: %v created=%v", err, created)
	}
	for ask := 1; ask <= 3; ask++ {
		if n := runRotations(t, s); n != 1 {
			t.Fatalf("ask %d: %d rotations ran", ask, n)
		}
		j := rotationJob(t, s, fake)
		if j.State != escrow.JobPending || j.Step != escrow.RotationScheduled || !strings.Contains(j.Error, "waiting for the device to report its escrowed key") {
			t.Fatalf("ask %d: %+v", ask, j)
		}
		got := connect(t, s, fake)
		if slices.Contains(got, fde.RequestRotateFileVaultKey) || !slices.Contains(got, fde.RequestSecurityInfo) {
			t.Fatalf("ask %d: the device was sent %v", ask, got)
		}
		clock.Advance(16 * time.Minute)
	}
	if n := runRotations(t, s); n != 1 {
		t.Fatalf("%d rotations ran at the end", n)
	}
	j := rotationJob(t, s, fake)
	if j.State != escrow.JobFailed || !strings.Contains(j.Error, "may not be the Mac the key belongs to") {
		t.Fatalf("after the asks: %+v", j)
	}
	if len(fake.RotationUnlocks()) != 0 || strings.Contains(s.logs.String(), key) {
		t.Fatal("the key left the server")
	}
}
