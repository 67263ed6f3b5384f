package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/appleschema"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"fvescrow": main,
	})
}

// TestScripts runs the CLI end to end from testdata/*.txtar: usage, exit
// codes and error text included.
func TestScripts(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		testutil.Need(t, "openssl", err)
	}
	fixtures, err := filepath.Abs("../../fde/testdata/cms")
	if err != nil {
		t.Fatal(err)
	}
	schema, err := appleschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("FIXTURES", fixtures)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// status N prog args...: run prog and require exit status N.
			"status": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) < 2 {
					ts.Fatalf("usage: status N prog [args...]")
				}
				want, err := strconv.Atoi(args[0])
				if err != nil {
					ts.Fatalf("status: %v", err)
				}
				got := 0
				if err := ts.Exec(args[1], args[2:]...); err != nil {
					var ee *exec.ExitError
					if !errors.As(err, &ee) {
						ts.Fatalf("status: %v", err)
					}
					got = ee.ExitCode()
				}
				if got != want {
					ts.Fatalf("exit status %d, want %d", got, want)
				}
			},
			// apple-schema FILE: the profile validates against Apple's schema.
			"apple-schema": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: apple-schema FILE")
				}
				b, err := os.ReadFile(ts.MkAbs(args[0]))
				ts.Check(err)
				err = schema.ValidateProfile(b, appleschema.Options{Platform: "macOS"})
				if neg != (err != nil) {
					ts.Fatalf("apple-schema %s: %v", args[0], err)
				}
			},
			// filemode MODE FILE
			"filemode": func(ts *testscript.TestScript, neg bool, args []string) {
				st, err := os.Stat(ts.MkAbs(args[1]))
				ts.Check(err)
				if got := strconv.FormatUint(uint64(st.Mode().Perm()), 8); got != args[0] {
					ts.Fatalf("%s has mode %s, want %s", args[1], got, args[0])
				}
			},
		},
	})
}
