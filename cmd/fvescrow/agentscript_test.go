package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
)

// TestEscrowBuddyScript runs the generated script under sh, as root on a
// fake Mac file system (FVESCROW_ROOT) with stand-ins for the macOS tools
// (defaults, security, ioreg) and the real curl, against a real server:
// it sets GenerateNewKey only for a Mac fvescrow lists, and stops once the
// new key has arrived.
func TestEscrowBuddyScript(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "awk"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Need(t, tool, err)
		}
	}
	s := startServer(t, modeEmbedded)
	listed := s.enroll(fakemac.Options{})
	// FileVault on before the escrow profile: the key was never escrowed.
	if err := listed.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	connect(t, s, listed)
	s.enqueue("securityinfo", listed.UDID)
	connect(t, s, listed)
	if d := device(t, s, listed); d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowPredatesProfile) {
		t.Fatalf("escrow status %q", d.Attrs[escrow.AttrEscrowStatus])
	}
	fine := escrowedMac(t, s)

	// An agent token: a user with the agent role signs in.
	body, _ := json.Marshal(wire.UserRequest{Username: "mac-agents", Roles: []string{"agent"}})
	status, out := s.api(http.MethodPost, "/api/v1/users", body)
	if status != http.StatusCreated {
		t.Fatalf("create agent user: %d %s", status, out)
	}
	var created wire.UserCreated
	if err := json.Unmarshal(out, &created); err != nil {
		t.Fatal(err)
	}
	lb, _ := json.Marshal(wire.LoginRequest{Username: "mac-agents", Password: created.OneTimePassword, NewPassword: "agents-" + randHex(12)})
	resp, err := s.Client().Post(s.URL()+"/api/v1/login", "application/json", bytes.NewReader(lb))
	if err != nil {
		t.Fatal(err)
	}
	var login wire.LoginResponse
	if err := json.NewDecoder(resp.Body).Decode(&login); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("agent login: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	// The fake Mac: the plugin installed, the token and CA where the script reads them.
	root := t.TempDir()
	for _, d := range []string{"Library/Security/SecurityAgentPlugins/Escrow Buddy.bundle", "Library/Preferences", "etc/fvescrow", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "etc/fvescrow/agent-token"), login.Token+"\n")
	writeFile(t, filepath.Join(root, "etc/fvescrow/ca.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})))
	calls := filepath.Join(root, "defaults.calls")
	fake := map[string]string{
		"defaults": "#!/bin/sh\necho \"$@\" >> '" + calls + "'\n",
		"security": "#!/bin/sh\necho '<string>builtin:policy-banner</string><string>Escrow Buddy:Invoke,privileged</string>'\n",
		"id":       "#!/bin/sh\necho 0\n", // the script runs as root on the Mac
	}
	for name, script := range fake {
		if err := os.WriteFile(filepath.Join(root, "bin", name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := s.cli("agent-script", "escrow-buddy", "--check-server", s.URL(), "--agent-token-path", "/etc/fvescrow/agent-token", "--agent-ca-path", "/etc/fvescrow/ca.pem")
	if strings.Contains(script, login.Token) {
		t.Fatal("the script holds the agent token")
	}
	scriptFile := filepath.Join(root, "escrow-buddy.sh")
	writeFile(t, scriptFile, script)
	runOn := func(m *fakemac.Mac) (string, error) {
		ioreg := "#!/bin/sh\necho '    \"IOPlatformSerialNumber\" = \"" + m.Serial + "\"'\n"
		if err := os.WriteFile(filepath.Join(root, "bin", "ioreg"), []byte(ioreg), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", scriptFile)
		cmd.Env = append(os.Environ(), "FVESCROW_ROOT="+root, "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"))
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	defaultsCalls := func() string { b, _ := os.ReadFile(calls); return string(b) }
	if out, err := runOn(fine); err != nil || !strings.Contains(out, "nothing to do") || defaultsCalls() != "" {
		t.Fatalf("escrowed Mac: %v\n%s\ndefaults: %q", err, out, defaultsCalls())
	}
	out2, err := runOn(listed)
	if err != nil || !strings.Contains(out2, "will generate and escrow a new recovery key") {
		t.Fatalf("listed Mac: %v\n%s", err, out2)
	}
	if want := "write " + root + "/Library/Preferences/com.netflix.Escrow-Buddy GenerateNewKey -bool true\n"; defaultsCalls() != want {
		t.Fatalf("defaults called with %q, want %q", defaultsCalls(), want)
	}
	// At the next login Escrow Buddy makes a new key; the profile escrows it.
	if err := listed.NewPRK(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", listed.UDID)
	connect(t, s, listed)
	if out, err := runOn(listed); err != nil || !strings.Contains(out, "nothing to do") {
		t.Fatalf("after regeneration: %v\n%s", err, out)
	}
	// Without the plugin the script refuses and changes nothing.
	if err := os.RemoveAll(filepath.Join(root, "Library/Security/SecurityAgentPlugins/Escrow Buddy.bundle")); err != nil {
		t.Fatal(err)
	}
	if out, err := runOn(listed); err == nil || !strings.Contains(out, "Escrow Buddy is not installed") {
		t.Fatalf("without the plugin: %v\n%s", err, out)
	}
	if strings.Count(defaultsCalls(), "\n") != 1 {
		t.Fatalf("defaults called again: %q", defaultsCalls())
	}
}
