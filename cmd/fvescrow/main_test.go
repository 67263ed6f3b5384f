package main

import (
	"database/sql"
	"errors"
	"net"
	"net/http"
	"time"

	"filippo.io/age"
	"fmt"
	_ "modernc.org/sqlite"
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
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			e.Setenv("PORT", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
			return ln.Close()
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
			// waitfor URL: poll until the URL answers 200 (10s).
			"waitfor": func(ts *testscript.TestScript, neg bool, args []string) {
				for i := 0; i < 200; i++ {
					resp, err := http.Get(args[0])
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							return
						}
					}
					time.Sleep(50 * time.Millisecond)
				}
				ts.Fatalf("%s did not answer 200", args[0])
			},
			// gen-push-cert CERT KEY TOPIC: a push certificate shaped like Apple's.
			"gen-push-cert": func(ts *testscript.TestScript, neg bool, args []string) {
				cert, key := fakePushCert(tsT{ts}, args[2])
				ts.Check(os.WriteFile(ts.MkAbs(args[0]), cert, 0o644))
				ts.Check(os.WriteFile(ts.MkAbs(args[1]), key, 0o600))
			},
			// gen-age IDENTITY RECIPIENT: an age key pair for exports.
			"gen-age": func(ts *testscript.TestScript, neg bool, args []string) {
				id, err := age.GenerateX25519Identity()
				ts.Check(err)
				ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(id.String()+"\n"), 0o600))
				ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(id.Recipient().String()+"\n"), 0o644))
			},
			// sqlite DB STATEMENT: edit a SQLite database directly (tampering).
			"sqlite": func(ts *testscript.TestScript, neg bool, args []string) {
				db, err := sql.Open("sqlite", ts.MkAbs(args[0]))
				ts.Check(err)
				defer db.Close()
				_, err = db.Exec(args[1])
				ts.Check(err)
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

// tsT lets test helpers written for *testing.T fail a testscript.
type tsT struct{ ts *testscript.TestScript }

func (t tsT) Helper()                           {}
func (t tsT) Fatal(args ...any)                 { t.ts.Fatalf("%v", fmt.Sprint(args...)) }
func (t tsT) Fatalf(format string, args ...any) { t.ts.Fatalf(format, args...) }
