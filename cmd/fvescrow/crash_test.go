package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// Real crashes. TestCrashBetweenOutboxAndIngest and
// TestRotationCrashBetweenAckAndStore stop an in-process server with a test
// hook; these run `fvescrow serve` as a subprocess (as
// TestTwoReplicasRotateEachMacOnce does) and kill it with SIGKILL while a
// recovery key the server acknowledged is only in the outbox. Nothing in the
// server knows it is tested: the key is held in the outbox by taking its
// secret store away (Vault stopped, or the age store's directory replaced by
// a file), then the process is killed, the store comes back, and a new
// process on the same database and secret store must escrow the key.

// crashDeadline bounds every wait for the server; no test asserts how fast
// anything happens.
const crashDeadline = 2 * time.Minute

// crashProc is one `fvescrow serve` process.
type crashProc struct {
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed when the process has exited
}

// crashRig runs serve processes one after the other on one address, one
// data directory and (in production mode) one PostgreSQL database and one
// Vault, and talks to them as the fake Mac, the API client and the CLI.
type crashRig struct {
	t         *testing.T
	mode      string
	bin       string
	dir       string
	dataDir   string
	addr, url string
	tokenFile string
	apiToken  string
	tlsCert   string
	tlsKey    string
	client    *http.Client
	storeArgs []string // serve's and the CLI's store flags (production mode)
	flags     []string // extra serve flags, for every process
	cur       *crashProc
}

// newCrashRig prepares the stores of mode; v is the Vault of production
// mode (nil for embedded).
func newCrashRig(t *testing.T, mode string, v *vaulttest.Server, flags ...string) *crashRig {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &crashRig{t: t, mode: mode, bin: bin, dir: dir, dataDir: filepath.Join(dir, "data"), flags: flags}
	r.apiToken = "crash-api-token-" + randHex(8)
	r.tokenFile = filepath.Join(dir, "api-token")
	writeFile(t, r.tokenFile, r.apiToken)
	certFile, keyFile, roots := selfSignedTLS(t, dir)
	r.tlsCert, r.tlsKey = certFile, keyFile
	r.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	r.addr = freeAddr(t)
	r.url = "https://" + r.addr
	if mode == modeProduction {
		policy, err := os.ReadFile("../../deploy/vault/fvescrow-policy.hcl")
		if err != nil {
			t.Fatal(err)
		}
		vaultToken := filepath.Join(dir, "vault-token")
		writeFile(t, vaultToken, v.PolicyToken(t, string(policy)))
		r.storeArgs = []string{"--database-url", pgtest.NewDatabase(t), "--vault-addr", v.Addr, "--vault-token-file", vaultToken}
	}
	return r
}

// start starts a serve process and waits until it answers /healthz.
// outboxInterval is its --outbox-interval.
func (r *crashRig) start(name, outboxInterval string) *crashProc {
	r.t.Helper()
	args := append([]string{"serve", "--listen", r.addr, "--tls-cert", r.tlsCert, "--tls-key", r.tlsKey,
		"--data", r.dataDir, "--api-token-file", r.tokenFile, "--filevault-location", "Example IT",
		"--check-interval", "1h", "--outbox-interval", outboxInterval, "--log-level", "debug"}, r.storeArgs...)
	args = append(args, r.flags...)
	p := &crashProc{name: name, cmd: exec.Command(r.bin, args...), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	r.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if r.t.Failed() {
			r.t.Logf("--- serve %s log (tail)\n%s", name, tail(p.logs.String(), 6000))
		}
	})
	r.cur = p
	deadline := time.Now().Add(crashDeadline)
	for {
		resp, err := r.client.Get(r.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			r.t.Fatalf("serve %s exited: %v\n%s", name, p.cmd.ProcessState, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("serve %s did not start: %v\n%s", name, err, p.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill kills p with SIGKILL (no shutdown, nothing flushed beyond what was
// committed) and checks that this is how it ended.
func (r *crashRig) kill(p *crashProc) {
	r.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		r.t.Fatalf("kill serve %s: %v", p.name, err)
	}
	<-p.done
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		r.t.Fatalf("serve %s ended with %v, not SIGKILL", p.name, p.cmd.ProcessState)
	}
	if strings.Contains(p.logs.String(), "shutting down") {
		r.t.Fatalf("serve %s shut down gracefully", p.name)
	}
	// The fake Mac and the API client must not reuse a connection to the
	// dead process.
	r.client.CloseIdleConnections()
}

func (r *crashRig) logs() string {
	if r.cur == nil {
		return ""
	}
	return tail(r.cur.logs.String(), 6000)
}

// api makes an authenticated API request and fails the test on an HTTP
// error.
func (r *crashRig) api(method, path string, body []byte) []byte {
	r.t.Helper()
	req, err := http.NewRequest(method, r.url+path, bytes.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.apiToken)
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		r.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out
}

// cliStoreArgs are the CLI's flags for the same stores.
func (r *crashRig) cliStoreArgs() []string {
	if r.mode == modeProduction {
		return append([]string{"--data", filepath.Join(r.dir, "cli")}, r.storeArgs...)
	}
	return []string{"--data", r.dataDir}
}

// uploadPushCert uploads a push certificate through nanomdm's API.
func (r *crashRig) uploadPushCert() {
	r.t.Helper()
	certPEM, keyPEM := fakePushCert(r.t, "com.apple.mgmt.External."+randHex(8))
	r.api(http.MethodPut, "/nanomdm/v1/pushcert", append(certPEM, keyPEM...))
}

// enqueueSecurityInfo queues SecurityInfo through nanomdm's API (no push:
// there is no APNs here; the Mac connects when the test says).
func (r *crashRig) enqueueSecurityInfo(m *fakemac.Mac) {
	r.t.Helper()
	si, err := fdeSecurityInfoPlist()
	if err != nil {
		r.t.Fatal(err)
	}
	r.api(http.MethodPut, "/nanomdm/v1/enqueue/"+m.UDID+"?nopush=1", si)
}

func (r *crashRig) connect(m *fakemac.Mac) []string {
	r.t.Helper()
	done, err := m.Connect(ctx)
	if err != nil {
		r.t.Fatalf("connect: %v\n--- serve %s log (tail)\n%s", err, r.cur.name, r.logs())
	}
	return done
}

func (r *crashRig) device(m *fakemac.Mac) wire.DeviceDetail {
	r.t.Helper()
	var d wire.DeviceDetail
	if err := json.Unmarshal(r.api(http.MethodGet, "/api/v1/devices/"+m.UDID, nil), &d); err != nil {
		r.t.Fatal(err)
	}
	return d
}

// reveal reveals m's current key over the API (which schedules its
// rotation).
func (r *crashRig) reveal(m *fakemac.Mac) string {
	r.t.Helper()
	body, _ := json.Marshal(wire.RevealRequest{Reason: "user locked out at the FileVault login window", Ticket: "IT-3001"})
	var out struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(r.api(http.MethodPost, "/api/v1/devices/"+m.UDID+"/reveal", body), &out); err != nil || out.Key == "" {
		r.t.Fatalf("reveal answer: %v", err)
	}
	return out.Key
}

func (r *crashRig) readyz() readiness {
	r.t.Helper()
	resp, err := r.client.Get(r.url + "/readyz")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd readiness
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil || rd.OutboxPending == nil {
		r.t.Fatalf("/readyz: %+v %v", rd, err)
	}
	rd.code = resp.StatusCode
	return rd
}

// waitDevice polls m's device detail until cond holds.
func (r *crashRig) waitDevice(m *fakemac.Mac, what string, cond func(wire.DeviceDetail) bool) wire.DeviceDetail {
	r.t.Helper()
	deadline := time.Now().Add(crashDeadline)
	for {
		d := r.device(m)
		if cond(d) {
			return d
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(struct {
				Versions []wire.KeyVersion
				Rotation *wire.Rotation
			}{d.KeyVersions, d.Rotation}, "", "  ")
			r.t.Fatalf("timed out waiting for %s; device now:\n%s\n--- serve %s log (tail)\n%s", what, b, r.cur.name, r.logs())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// escrowedMac enrolls a fake Mac, turns FileVault on and escrows its key
// through SecurityInfo (which also proves the Mac holds it).
func (r *crashRig) escrowedMac() *fakemac.Mac {
	r.t.Helper()
	profile := []byte(r.cli(append([]string{"profile", "enroll", "--url", r.url}, r.cliStoreArgs()...)...))
	m, err := fakemac.Enroll(ctx, profile, fakemac.Options{Client: r.client})
	if err != nil {
		r.t.Fatalf("enroll: %v\n%s", err, r.logs())
	}
	r.connect(m) // profile installed
	if err := m.EnableFileVault(); err != nil {
		r.t.Fatal(err)
	}
	r.enqueueSecurityInfo(m)
	r.connect(m)
	d := r.device(m)
	if d.Device.EscrowStatus != string(escrow.EscrowEscrowed) || len(d.KeyVersions) != 1 || !d.KeyVersions[0].Current {
		r.t.Fatalf("after SecurityInfo: escrow status %q, %d key versions", d.Device.EscrowStatus, len(d.KeyVersions))
	}
	return m
}

func (r *crashRig) cli(args ...string) string {
	r.t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, strings.NewReader(""), &out, &errb); code != 0 {
		r.t.Fatalf("fvescrow %v: exit %d\n%s", args, code, errb.String())
	}
	return out.String()
}

// secretOutage takes the secret store away and brings it back with its data.
type secretOutage struct {
	down, up func()
}

// vaultOutage stops and restarts a persistent Vault.
func vaultOutage(v *vaulttest.Server) secretOutage {
	return secretOutage{down: v.Stop, up: v.Start}
}

// ageDirOutage makes the embedded age store unusable without a hook: its
// directory is moved away and a regular file put at its path, so every read
// or write under it fails with ENOTDIR (the tests run as root: a chmod would
// not stop a write). The store opens its files by path on every call; it
// keeps no open handle that would get around this.
func ageDirOutage(t *testing.T, dataDir string) secretOutage {
	dir := filepath.Join(dataDir, "secrets")
	away := dir + ".away"
	return secretOutage{
		down: func() {
			t.Helper()
			if err := os.Rename(dir, away); err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir, "the age secrets directory is away\n")
		},
		up: func() {
			t.Helper()
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(away, dir); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func currentVersion(d wire.DeviceDetail) (wire.KeyVersion, bool) {
	for _, v := range d.KeyVersions {
		if v.Current {
			return v, true
		}
	}
	return wire.KeyVersion{}, false
}

// deferredInLog reports whether the server logged an ingest deferred because
// the secret store was unavailable: it got as far as the outbox and no
// further.
func deferredInLog(p *crashProc) bool {
	return strings.Contains(p.logs.String(), "secret store unavailable; blob kept in the outbox")
}

// TestCrashKilledBetweenOutboxAndIngest: a Mac with an escrowed key gets a
// new one and reports it in SecurityInfo while the secret store is away.
// The server acknowledges the answer with the blob in the outbox (/readyz
// shows it pending) and is killed with SIGKILL. The store comes back and a
// new serve process on the same stores escrows the key, once: the new
// version is current, revealed over the API it is the Mac's key, and the
// old version is superseded.
func TestCrashKilledBetweenOutboxAndIngest(t *testing.T) {
	for _, mode := range []string{modeProduction, modeEmbedded} {
		t.Run(mode, func(t *testing.T) {
			var r *crashRig
			var out secretOutage
			if mode == modeProduction {
				v := vaulttest.StartPersistent(t) // keeps its data across Stop and Start
				r, out = newCrashRig(t, mode, v), vaultOutage(v)
			} else {
				r = newCrashRig(t, mode, nil)
				out = ageDirOutage(t, r.dataDir)
			}
			// The first process drains its outbox only at start: the key's
			// one attempt is the MDM door's own, in the request. (A drain
			// killed while it holds the item would leave it leased for two
			// minutes; that is the lease working, not what is tested here.)
			a := r.start("a", "1h")
			r.uploadPushCert()
			m := r.escrowedMac()
			oldKey := m.PRK()
			if err := m.NewPRK(); err != nil {
				t.Fatal(err)
			}
			newKey := m.PRK()
			if newKey == oldKey {
				t.Fatal("the Mac kept its key")
			}
			r.enqueueSecurityInfo(m)

			out.down()
			if done := r.connect(m); !slices.Equal(done, []string{fde.RequestSecurityInfo}) {
				t.Fatalf("the Mac answered %v, want SecurityInfo", done)
			}
			// Acknowledged (the Mac got a 200 and went on), kept in the
			// outbox, not escrowed.
			rd := r.readyz()
			if *rd.OutboxPending < 1 {
				t.Fatalf("/readyz after the answer: %+v, want outbox_pending >= 1", rd)
			}
			if mode == modeProduction && (rd.code != http.StatusServiceUnavailable || rd.Secrets != "unavailable") {
				t.Fatalf("/readyz with Vault down: %+v, want 503, secrets unavailable", rd)
			}
			if d := r.device(m); len(d.KeyVersions) != 1 || d.Device.EscrowStatus != string(escrow.EscrowReceived) {
				t.Fatalf("with the secret store away: %d key versions, escrow status %q; want 1 and %q",
					len(d.KeyVersions), d.Device.EscrowStatus, escrow.EscrowReceived)
			}
			if !deferredInLog(a) {
				t.Fatalf("the server did not try and defer the ingest: the test did not hold the key in the outbox\n%s", r.logs())
			}

			r.kill(a)
			out.up()
			b := r.start("b", "500ms")
			d := r.waitDevice(m, "the new key escrowed after the restart", func(d wire.DeviceDetail) bool {
				cur, ok := currentVersion(d)
				return ok && cur.Version == 2
			})
			if len(d.KeyVersions) != 2 {
				t.Fatalf("%d key versions after the restart, want 2 (exactly one new)", len(d.KeyVersions))
			}
			old, cur := d.KeyVersions[0], d.KeyVersions[1]
			if old.Version != 1 || old.Current || old.SupersededAt == nil || old.Status != string(escrow.StatusEscrowed) {
				t.Errorf("old version after the restart: %+v, want superseded and kept", old)
			}
			if cur.Version != 2 || cur.Source != string(escrow.SourceSecurityInfo) || cur.Status != string(escrow.StatusEscrowed) {
				t.Errorf("new version: %+v", cur)
			}
			if got := r.reveal(m); got != newKey {
				t.Fatal("the key revealed after the restart is not the Mac's new key")
			}
			if rd := r.readyz(); rd.code != http.StatusOK || *rd.OutboxPending != 0 {
				t.Errorf("/readyz after the drain: %+v, want 200 and nothing pending", rd)
			}
			if !strings.Contains(b.logs.String(), `msg="outbox drained"`) {
				t.Error("the new process did not log its outbox drain")
			}
			for _, p := range []*crashProc{a, b} {
				if strings.Contains(p.logs.String(), newKey) || strings.Contains(p.logs.String(), oldKey) {
					t.Errorf("a recovery key reached serve %s's log", p.name)
				}
			}
		})
	}
}

// TestCrashKilledBetweenRotationAckAndStore: a revealed key is rotated
// (--rotation-delay 1s). The Mac receives RotateFileVaultKey with its key
// while Vault is up (the key is read from Vault as the command is handed
// out); Vault stops before the Mac answers. The answer, with the new key,
// is acknowledged into the outbox, and the server is killed with SIGKILL.
// After Vault and a new serve process start, the new key is escrowed from
// the outbox before the Mac connects again, once; the old version is
// superseded and kept; the Mac's SecurityInfo then verifies the rotation.
func TestCrashKilledBetweenRotationAckAndStore(t *testing.T) {
	v := vaulttest.StartPersistent(t)
	// A revealed key is rotated a second later; the runner looks every
	// 200ms. (--rotation-delay 0 passes serve's flag check but
	// escrow.NewRotations reads a delay <= 0 as the default hour.)
	r := newCrashRig(t, modeProduction, v, "--rotation-delay", "1s", "--rotation-interval", "200ms")
	out := vaultOutage(v)
	a := r.start("a", "1h") // see TestCrashKilledBetweenOutboxAndIngest
	r.uploadPushCert()
	m := r.escrowedMac()
	oldKey := m.PRK()
	if got := r.reveal(m); got != oldKey {
		t.Fatal("revealed the wrong key")
	}
	r.waitDevice(m, "RotateFileVaultKey queued", func(d wire.DeviceDetail) bool {
		return d.Rotation != nil && d.Rotation.State == escrow.RotationQueued
	})

	// The Mac takes the command (with its key, read from Vault); Vault stops
	// before it answers; then it rotates and returns the new key.
	m.Handle(fde.RequestRotateFileVaultKey, func(*fakemac.Mac, map[string]any) (string, map[string]any) {
		out.down()
		return "", nil // the normal answer
	})
	done := r.connect(m)
	m.Handle(fde.RequestRotateFileVaultKey, nil)
	if !slices.Equal(done, []string{fde.RequestRotateFileVaultKey}) {
		t.Fatalf("the Mac answered %v, want RotateFileVaultKey alone", done)
	}
	if u := m.RotationUnlocks(); len(u) != 1 || u[0] != oldKey {
		t.Fatalf("the Mac got %d RotateFileVaultKey, or not with its key", len(u))
	}
	newKey := m.PRK()
	if newKey == oldKey {
		t.Fatal("the Mac did not rotate")
	}
	rd := r.readyz()
	if rd.code != http.StatusServiceUnavailable || rd.Secrets != "unavailable" || *rd.OutboxPending < 1 {
		t.Fatalf("/readyz after the answer with Vault down: %+v, want 503, secrets unavailable, outbox_pending >= 1", rd)
	}
	if d := r.device(m); len(d.KeyVersions) != 1 || d.Rotation == nil || d.Rotation.State != escrow.RotationAcknowledged {
		t.Fatalf("after the answer with Vault down: %d key versions, rotation %+v; want 1 and acknowledged", len(d.KeyVersions), d.Rotation)
	}
	if !deferredInLog(a) {
		t.Fatalf("the server did not try and defer the ingest: the test did not hold the key in the outbox\n%s", r.logs())
	}

	r.kill(a)
	out.up()
	b := r.start("b", "500ms")
	// From the outbox alone: the Mac does not connect until the new key is
	// escrowed.
	d := r.waitDevice(m, "the rotated key escrowed from the outbox", func(d wire.DeviceDetail) bool {
		cur, ok := currentVersion(d)
		return ok && cur.Version == 2
	})
	if len(d.KeyVersions) != 2 {
		t.Fatalf("%d key versions after the restart, want 2", len(d.KeyVersions))
	}
	if cur := d.KeyVersions[1]; cur.Source != string(escrow.SourceRotation) || cur.Status != string(escrow.StatusEscrowed) {
		t.Fatalf("new version %+v, want escrowed from the rotation's answer", cur)
	}

	// The verifying SecurityInfo (queued before the kill) confirms it.
	deadline := time.Now().Add(crashDeadline)
	for d.Rotation == nil || d.Rotation.State != escrow.RotationVerified {
		if time.Now().After(deadline) {
			t.Fatalf("rotation not verified: %+v\n%s", d.Rotation, r.logs())
		}
		r.connect(m)
		d = r.device(m)
		if d.Rotation == nil || d.Rotation.State != escrow.RotationVerified {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if !slices.Contains(m.Handled(), fde.RequestSecurityInfo) {
		t.Fatal("verified without a SecurityInfo")
	}
	if d.Rotation.NewVersion != "2" {
		t.Errorf("rotation %+v, want new version 2", d.Rotation)
	}
	if len(d.KeyVersions) != 2 {
		t.Fatalf("%d key versions after verification, want 2 (no double version)", len(d.KeyVersions))
	}
	old, cur := d.KeyVersions[0], d.KeyVersions[1]
	if old.Version != 1 || old.Current || old.SupersededAt == nil || old.Status != string(escrow.StatusEscrowed) {
		t.Errorf("old version %+v, want superseded and kept", old)
	}
	if cur.Version != 2 || !cur.Current || cur.VerifiedAt == nil {
		t.Errorf("new version %+v, want current and verified", cur)
	}
	if u := m.RotationUnlocks(); len(u) != 1 {
		t.Errorf("the Mac got %d RotateFileVaultKey, want 1", len(u))
	}
	// Kept: the old key is still in Vault as version 1 of the device's secret.
	sec, err := v.Client().KVv2("secret").GetVersion(context.Background(), "fvescrow/prk/"+m.UDID, 1)
	if err != nil {
		t.Fatalf("old key in Vault: %v", err)
	}
	if s, _ := sec.Data["value"].(string); s == "" {
		t.Error("the old key's secret in Vault is empty")
	} else if b, err := base64.StdEncoding.DecodeString(s); err != nil || string(b) != oldKey {
		t.Error("the old key's secret in Vault is not the old key")
	}
	if got := r.reveal(m); got != newKey {
		t.Fatal("the key revealed after the restart is not the Mac's new key")
	}
	for _, p := range []*crashProc{a, b} {
		if strings.Contains(p.logs.String(), newKey) || strings.Contains(p.logs.String(), oldKey) {
			t.Errorf("a recovery key reached serve %s's log", p.name)
		}
	}
}
