package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestClientScripts runs the API commands end to end from
// testdata/client/*.txtar against a real server (buildServer on the
// embedded stores) exported as $FVESCROW_URL. Setup creates local accounts
// through the API (their one-time passwords go into $WORK/NAME.login, with
// a new password, for fvescrow login --password-stdin), a viewer's
// automation token in $WORK/viewer.token ($VIEWER_TOKEN), a Mac with an escrowed key
// ($SERIAL, $UDID), and the server's admin token in $WORK/admin.token. Scripts never print a key or a token: those checks are
// Go tests, whose assertions do not echo secrets.
func TestClientScripts(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		testutil.Need(t, "openssl", err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/client",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup:               setupClientScript,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status": func(ts *testscript.TestScript, neg bool, args []string) {
				want := 0
				if _, err := fmt.Sscan(args[0], &want); err != nil || neg {
					ts.Fatalf("usage: status N prog [args...]")
				}
				got := 0
				if err := ts.Exec(args[1], args[2:]...); err != nil {
					ee, ok := err.(*exec.ExitError)
					if !ok {
						ts.Fatalf("status: %v", err)
					}
					got = ee.ExitCode()
				}
				if got != want {
					ts.Fatalf("exit status %d, want %d", got, want)
				}
			},
			"filemode": func(ts *testscript.TestScript, neg bool, args []string) {
				st, err := os.Stat(ts.MkAbs(args[1]))
				ts.Check(err)
				if got := fmt.Sprintf("%o", st.Mode().Perm()); got != args[0] {
					ts.Fatalf("%s has mode %s, want %s", args[1], got, args[0])
				}
			},
		},
	})
}

// scriptServer starts buildServer on a fresh data folder, served over
// plain HTTP on loopback (the client allows http there only).
func scriptServer(dir string, tweak func(*serveConfig)) (*server, *httptest.Server, string, error) {
	token := "fve_" + randHex(24)
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return nil, nil, "", err
	}
	cfg := defaultServeConfig()
	cfg.stores.dataDir = filepath.Join(dir, "data")
	cfg.apiTokenFile = tokenFile
	cfg.checkInterval, cfg.outboxInterval, cfg.checkpointEvery = time.Hour, time.Hour, time.Hour
	if tweak != nil {
		tweak(&cfg)
	}
	srv, _, err := buildServer(context.Background(), &cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, "", err
	}
	return srv, httptest.NewServer(srv.handler), token, nil
}

func setupClientScript(e *testscript.Env) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "fvescrow-client")
	if err != nil {
		return err
	}
	e.Defer(func() { os.RemoveAll(dir) })
	srv, ts, adminToken, err := scriptServer(dir, nil)
	if err != nil {
		return err
	}
	e.Defer(srv.close)
	e.Defer(ts.Close)
	e.Setenv("FVESCROW_URL", ts.URL)
	if err := os.WriteFile(filepath.Join(e.WorkDir, "admin.token"), []byte(adminToken+"\n"), 0o600); err != nil {
		return err
	}
	e.Setenv("XDG_CONFIG_HOME", filepath.Join(e.WorkDir, "config"))

	admin, err := client.New(ts.URL, client.WithToken(adminToken))
	if err != nil {
		return err
	}
	for name, role := range map[string]string{"ann": "helpdesk", "vic": "viewer", "aude": "auditor", "al": "approver"} {
		u, err := admin.CreateUser(ctx, wire.UserRequest{Username: name, Roles: []string{role}})
		if err != nil {
			return err
		}
		// Password, an empty TOTP line, the new password.
		login := u.OneTimePassword + "\n\nnew-password-" + name + "-" + randHex(4) + "\n"
		if err := os.WriteFile(filepath.Join(e.WorkDir, name+".login"), []byte(login), 0o600); err != nil {
			return err
		}
		// The new password alone, for signing in again.
		if err := os.WriteFile(filepath.Join(e.WorkDir, name+".relogin"), []byte(strings.Split(login, "\n")[2]+"\n"), 0o600); err != nil {
			return err
		}
		// Without the new password, for the refusal.
		if err := os.WriteFile(filepath.Join(e.WorkDir, name+"-otp-only.login"), []byte(u.OneTimePassword+"\n\n"), 0o600); err != nil {
			return err
		}
		if name == "vic" {
			first := u.OneTimePassword
			lr, err := admin.UseToken("").Login(ctx, wire.LoginRequest{Username: name, Password: first, NewPassword: "vic-automation-" + randHex(8)})
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(e.WorkDir, "viewer.token"), []byte(lr.Token+"\n"), 0o600); err != nil {
				return err
			}
			e.Setenv("VIEWER_TOKEN", lr.Token)
		}
	}
	d := escrow.Device{ID: "4A3B2C1D-0E9F-4A8B-9C7D-6E5F4A3B2C1D", UDID: "4A3B2C1D-0E9F-4A8B-9C7D-6E5F4A3B2C1D", Serial: "C02SCRIPT001",
		Hostname: "ann-mbp", Platform: "macOS"}
	if _, err := srv.svc.UpsertDevice(ctx, d); err != nil {
		return err
	}
	blob, err := fakemac.EncryptCMS(srv.svc.Keyring().Current(time.Now()), fakemac.RandomPRK())
	if err != nil {
		return err
	}
	if _, err := srv.svc.Ingest(ctx, d, blob, escrow.SourceSecurityInfo); err != nil {
		return err
	}
	e.Setenv("SERIAL", d.Serial)
	e.Setenv("UDID", d.UDID)
	return nil
}
