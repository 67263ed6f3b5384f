// Package testutil holds helpers shared by fvescrow's tests. Nothing here is
// domain logic.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Integration reports whether integration prerequisites are mandatory
// (FVESCROW_INTEGRATION=1, set by `make test` and .ci/run). Then a missing real
// part fails the test instead of skipping it, so a green CI run means every
// real part ran.
func Integration() bool { return os.Getenv("FVESCROW_INTEGRATION") == "1" }

// Need skips the test when a real part is missing, or fails it under
// FVESCROW_INTEGRATION=1.
func Need(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if Integration() {
		t.Fatalf("%s is required with FVESCROW_INTEGRATION=1: %v", what, err)
	}
	t.Skipf("%s not available (set FVESCROW_INTEGRATION=1 to make this a failure): %v", what, err)
}

// LookPath finds a program for a test, with Need semantics.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, name, err)
	return p
}
