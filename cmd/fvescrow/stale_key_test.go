package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
)

// TestRotationThatDidNotTake: after answering RotateFileVaultKey with a new
// key, the Mac reports its old, revealed key in a fresh blob. That key is
// what unlocks the Mac, so it is current again (and revealed as such), still
// disclosed; the rotation fails saying so, and the sweep rotates it anew.
func TestRotationThatDidNotTake(t *testing.T) {
	clock := newTestClock()
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.testNow = clock.Now })
	m := escrowedMac(t, s)
	old := revealOverAPI(t, s, m)
	clock.Advance(61 * time.Minute)
	if n := runRotations(t, s); n != 1 {
		t.Fatalf("%d rotations ran", n)
	}
	if got := connect(t, s, m); !slices.Contains(got, fde.RequestRotateFileVaultKey) {
		t.Fatalf("the Mac was sent %v", got)
	}
	if j := rotationJob(t, s, m); j.Step != escrow.RotationEscrowed {
		t.Fatalf("after the answer: %+v", j)
	}
	if err := m.RevertPRK(old); err != nil {
		t.Fatal(err)
	}
	if got := connect(t, s, m); !slices.Contains(got, fde.RequestSecurityInfo) {
		t.Fatalf("the Mac was sent %v", got)
	}
	j := rotationJob(t, s, m)
	if j.State != escrow.JobFailed || !strings.Contains(j.Error, "already disclosed") {
		t.Fatalf("the rotation: %+v", j)
	}
	vs := prkVersions(t, s, m)
	if len(vs) != 3 || !vs[2].Current() || vs[2].DisclosedAt.IsZero() {
		t.Fatalf("versions %+v", vs)
	}
	clock.Advance(2 * time.Hour)
	if n, err := s.srv.rotations.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if j := rotationJob(t, s, m); j.State != escrow.JobPending || j.Ref != vs[2].ID {
		t.Fatalf("no new rotation for the key current again: %+v", j)
	}
	if got := revealOverAPI(t, s, m); got != old {
		t.Fatal("the revealed key is not the one the Mac has")
	}
}
