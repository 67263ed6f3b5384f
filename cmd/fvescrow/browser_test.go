package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
)

// browserPrereqs finds Chromium, node and playwright-core (installed by
// scripts/prereqs.sh into the cache, keyed by web/e2e's lock file).
func browserPrereqs(t *testing.T) (chromium, node, modules string) {
	t.Helper()
	chromium = os.Getenv("FVESCROW_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	_, err := os.Stat(chromium)
	testutil.Need(t, "chromium (scripts/prereqs.sh installs it)", err)
	node = testutil.LookPath(t, "node")
	modules = os.Getenv("FVESCROW_NODE_MODULES")
	if modules == "" {
		lock, err := os.ReadFile("../../web/e2e/package-lock.json")
		if err != nil {
			t.Fatal(err)
		}
		cache := os.Getenv("FVESCROW_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "fvescrow")
		}
		sum := sha256.Sum256(lock)
		modules = filepath.Join(cache, "web-e2e-"+hex.EncodeToString(sum[:])[:16], "node_modules")
	}
	_, err = os.Stat(filepath.Join(modules, "playwright-core", "package.json"))
	testutil.Need(t, "playwright-core (scripts/prereqs.sh runs npm ci)", err)
	return chromium, node, modules
}

// artifactsDir is where screenshots go: $FVESCROW_ARTIFACTS, or
// artifacts/ui in the repository (ignored by git).
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("FVESCROW_ARTIFACTS")
	if dir == "" {
		dir = "../../artifacts/ui"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		t.Fatal(err)
	}
	// Screenshots of an earlier failure would mislead.
	old, _ := filepath.Glob(filepath.Join(abs, "*.png"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	return abs
}

// TestBrowserHelpdeskFlow drives the web UI in headless Chromium against a
// real server with a fake Mac whose key was escrowed through MDM: an admin
// creates a helpdesk user and an approver; the helpdesk user searches by
// serial, asks for approval, the approver approves in a second browser
// context, the helpdesk user reveals, copies, sees the key hide itself, and
// the audit log shows the reveal. Screenshots at phone and desktop widths
// are saved as artifacts.
func TestBrowserHelpdeskFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test in -short mode")
	}
	chromium, node, modules := browserPrereqs(t)
	const hideAfter = 15
	s := startServer(t, modeEmbedded, func(c *serveConfig) {
		c.helpdesk.approvalGroups = []string{"role:helpdesk"}
		c.web.keyDisplaySecs = hideAfter
	})

	// A Mac enrolls, turns FileVault on and escrows its key through MDM.
	m := s.enroll(fakemac.Options{Users: []fakemac.User{{UserName: "ada", FullName: "Ada Lovelace", UID: 501, GUID: "A-GUID", HasSecureToken: true, IsLoggedIn: true}}})
	connect(t, s, m)
	if err := m.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)
	connect(t, s, m)
	if st := device(t, s, m).Attrs[escrow.AttrEscrowStatus]; st != string(escrow.EscrowEscrowed) {
		t.Fatalf("escrow status %q", st)
	}

	// An admin with a one-time password, as serve's first start makes one.
	local := auth.NewLocalAccounts(s.srv.stores.meta, s.srv.stores.meta, s.srv.stores.secrets, s.srv.stores.meta)
	nu, err := local.CreateUser(ctx, escrow.System, "itadmin", "IT Admin", "", []escrow.Role{escrow.RoleAdmin}, false)
	if err != nil {
		t.Fatal(err)
	}

	artifacts := artifactsDir(t)
	t.Logf("screenshots: %s", artifacts)
	newPassword := "e2e-" + randHex(12)
	input, err := json.Marshal(map[string]any{
		"url": s.URL(), "admin": map[string]string{"user": "itadmin", "password": nu.OneTimePassword}, "serial": m.Serial,
		"deviceID": m.UDID, "key": m.PRK(), "newPassword": newPassword, "artifacts": artifacts, "hideAfter": hideAfter,
		"chromium": chromium, "nodeModules": modules,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(runCtx, node, "helpdesk.mjs")
	cmd.Dir = "../../web/e2e"
	cmd.Stdin = bytes.NewReader(input)
	out, runErr := cmd.CombinedOutput()
	// The script prints no secret; make sure.
	for _, secret := range []string{m.PRK(), nu.OneTimePassword, newPassword} {
		if strings.Contains(string(out), secret) {
			t.Fatal("the browser script printed a secret")
		}
	}
	t.Logf("browser:\n%s", out)
	if runErr != nil {
		t.Fatalf("browser flow: %v (screenshots in %s)", runErr, artifacts)
	}

	// What the browser did is what the server recorded.
	recs, err := s.srv.stores.meta.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed})
	if err != nil || len(recs) != 1 {
		t.Fatalf("reveals %+v %v", recs, err)
	}
	if r := recs[0]; r.Actor.ID != "local:hd" || r.Ticket != "IT-4711" || r.Detail["approver"] != "local:appr" || r.Detail["approval"] == "" ||
		r.Device != escrow.DeviceID(m.UDID) {
		t.Errorf("reveal record %+v", r)
	}
	if strings.Contains(s.logs.String(), m.PRK()) {
		t.Error("the recovery key reached the server log")
	}
	for _, name := range []string{"01-login", "04-home", "05-search", "06-device", "11-revealed", "12-key-hidden", "13-audit"} {
		for _, w := range []string{"375", "1280"} {
			if fi, err := os.Stat(filepath.Join(artifacts, name+"-"+w+".png")); err != nil || fi.Size() == 0 {
				t.Errorf("screenshot %s-%s.png: %v", name, w, err)
			}
		}
	}
}

// --ui=false serves no pages; --ui-key-display-seconds is bounded.
func TestUIFlags(t *testing.T) {
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.web.enabled = false })
	for _, path := range []string{"/", "/ui/login", "/ui/home"} {
		resp, err := s.Client().Get(s.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("--ui=false: GET %s: %d", path, resp.StatusCode)
		}
	}
	for _, secs := range []int{0, 4, 601} {
		c := defaultServeConfig()
		c.web.keyDisplaySecs = secs
		if _, _, err := c.web.build(api.Deps{}, nil, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--ui-key-display-seconds") {
			t.Errorf("--ui-key-display-seconds=%d: %v", secs, err)
		}
	}
	c := defaultServeConfig()
	if !c.web.enabled || c.web.keyDisplaySecs != 60 || c.web.rules().MinReason != 10 || c.web.rules().TicketPattern != escrow.DefaultTicketPattern {
		t.Errorf("defaults: %+v %+v", c.web, c.web.rules())
	}
}
