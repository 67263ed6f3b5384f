package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// buildBinary builds the fvescrow binary once per test run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "fvescrow-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "fvescrow")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// replica is one `fvescrow serve` process.
type replica struct {
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
}

// selfSignedTLS writes a certificate and key for 127.0.0.1 and returns
// their paths and a pool trusting the certificate.
func selfSignedTLS(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})))
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestTwoReplicasRotateEachMacOnce runs two `fvescrow serve` processes on
// one PostgreSQL and one Vault, with Macs split between them, and a
// rotation campaign over all the Macs: each Mac gets exactly one
// RotateFileVaultKey and ends with exactly one new, verified key.
func TestTwoReplicasRotateEachMacOnce(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := pgtest.NewDatabase(t)
	v := vaulttest.StartDev(t)
	policy, err := os.ReadFile("../../deploy/vault/fvescrow-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	vaultToken := filepath.Join(dir, "vault-token")
	writeFile(t, vaultToken, v.PolicyToken(t, string(policy)))
	apiToken := "replica-api-token-" + randHex(8)
	tokenFile := filepath.Join(dir, "api-token")
	writeFile(t, tokenFile, apiToken)
	certFile, keyFile, pool := selfSignedTLS(t, dir)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	storeArgs := []string{"--database-url", db, "--vault-addr", v.Addr, "--vault-token-file", vaultToken}

	start := func(name string) *replica {
		addr := freeAddr(t)
		args := append([]string{"serve", "--listen", addr, "--tls-cert", certFile, "--tls-key", keyFile,
			"--data", filepath.Join(dir, name), "--api-token-file", tokenFile, "--filevault-location", "Example IT",
			"--rotation-interval", "200ms", "--check-interval", "1h", "--outbox-interval", "1s", "--log-level", "debug"}, storeArgs...)
		r := &replica{url: "https://" + addr, cmd: exec.Command(bin, args...), logs: &syncBuffer{}}
		r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
			if t.Failed() {
				t.Logf("--- %s log (tail)\n%s", name, tail(r.logs.String(), 4000))
			}
		})
		for i := 0; ; i++ {
			resp, err := client.Get(r.url + "/healthz")
			if err == nil {
				resp.Body.Close()
				break
			}
			if i > 300 {
				t.Fatalf("%s did not start: %v\n%s", name, err, r.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		return r
	}
	call := func(r *replica, method, path string, body any) []byte {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, r.url+path, rd)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
		}
		return out
	}
	// The first start creates the escrow identity, SCEP CA and admin; the
	// second finds them.
	a := start("a")
	b := start("b")
	certPEM, keyPEM := fakePushCert(t, "com.apple.mgmt.External."+randHex(8))
	req, _ := http.NewRequest(http.MethodPut, a.url+"/nanomdm/v1/pushcert", bytes.NewReader(append(certPEM, keyPEM...)))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("push cert: %v %v", resp, err)
	}

	cli := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(args, strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("fvescrow %v: exit %d\n%s", args, code, errb.String())
		}
		return out.String()
	}
	profiles := map[*replica][]byte{}
	for _, r := range []*replica{a, b} {
		profiles[r] = []byte(cli(append([]string{"profile", "enroll", "--url", r.url, "--data", filepath.Join(dir, "cli")}, storeArgs...)...))
	}
	const n = 12
	macs := make([]*fakemac.Mac, n)
	home := make([]*replica, n)
	for i := range macs {
		r := []*replica{a, b}[i%2]
		m, err := fakemac.Enroll(ctx, profiles[r], fakemac.Options{Client: client})
		if err != nil {
			t.Fatalf("enroll %d: %v", i, err)
		}
		if _, err := m.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.EnableFileVault(); err != nil {
			t.Fatal(err)
		}
		si, err := fdeSecurityInfoPlist()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPut, r.url+"/nanomdm/v1/enqueue/"+m.UDID+"?nopush=1", bytes.NewReader(si))
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("enqueue SecurityInfo: %v %v", resp, err)
		}
		resp.Body.Close()
		if _, err := m.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		macs[i], home[i] = m, r
	}
	var camp wire.Campaign
	if err := json.Unmarshal(call(a, http.MethodPost, "/api/v1/campaigns", wire.CampaignRequest{Name: "replica test", Reason: "rotate every key once"}), &camp); err != nil {
		t.Fatal(err)
	}
	if camp.Devices != n || camp.Skipped != 0 {
		t.Fatalf("campaign %+v, want %d devices", camp, n)
	}
	// The Macs check in with their own replica until the campaign is done;
	// the jobs are claimed by whichever replica gets there first.
	deadline := time.Now().Add(90 * time.Second)
	for {
		var wg sync.WaitGroup
		for _, m := range macs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := m.Connect(ctx); err != nil {
					t.Errorf("connect %s: %v", m.Serial, err)
				}
			}()
		}
		wg.Wait()
		id := camp.ID
		camp = wire.Campaign{} // Unmarshal merges into a map it finds
		if err := json.Unmarshal(call(b, http.MethodGet, fmt.Sprint("/api/v1/campaigns/", id), nil), &camp); err != nil {
			t.Fatal(err)
		}
		if camp.Done {
			break
		}
		if time.Now().After(deadline) || t.Failed() {
			t.Fatalf("campaign not done: %+v", camp)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if camp.States[escrow.RotationVerified] != n || len(camp.States) != 1 {
		t.Fatalf("campaign states %v, want %d verified", camp.States, n)
	}
	for i, m := range macs {
		if u := m.RotationUnlocks(); len(u) != 1 {
			t.Errorf("Mac %d (home %s) got %d RotateFileVaultKey commands, want exactly 1", i, home[i].url, len(u))
		}
		var d wire.DeviceDetail
		if err := json.Unmarshal(call([]*replica{a, b}[(i+1)%2], http.MethodGet, "/api/v1/devices/"+m.UDID, nil), &d); err != nil {
			t.Fatal(err)
		}
		if len(d.KeyVersions) != 2 || d.KeyVersions[1].VerifiedAt == nil || d.Rotation == nil || d.Rotation.State != escrow.RotationVerified {
			t.Errorf("Mac %d: %d versions, rotation %+v", i, len(d.KeyVersions), d.Rotation)
		}
	}
	var sent struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(call(a, http.MethodGet, "/api/v1/audit?action="+escrow.ActionRotationSent+"&limit=1000", nil), &sent); err != nil {
		t.Fatal(err)
	}
	if len(sent.Records) != n {
		t.Errorf("%d keys sent to devices, want %d", len(sent.Records), n)
	}
	claimed := map[string]int{}
	for name, r := range map[string]*replica{"a": a, "b": b} {
		claimed[name] = strings.Count(r.logs.String(), "RotateFileVaultKey queued")
	}
	t.Logf("rotations queued by replica: %v", claimed)
	if claimed["a"]+claimed["b"] != n {
		t.Errorf("replicas queued %v rotations, want %d in all", claimed, n)
	}
	// Which replica claims the campaign's jobs is a race, not a property:
	// every job is due at once, and whichever runner ticks first claims
	// them all (up to 100 per claim), so one replica usually queues all 12.
	// The data does not record the claimant either (UpdateJob releases
	// claimed_by, and both replicas claim as the same owner). So "each
	// replica claimed at least one" is not asserted. What is not a race is
	// that each replica carries out the rotations of the Macs that check in
	// with it: it hands out the key, takes the answer and verifies the new
	// key. Each replica's log shows exactly its own Macs verified.
	verifiedBy := func(r *replica, udid string) bool {
		for _, l := range strings.Split(r.logs.String(), "\n") {
			if strings.Contains(l, `msg="rotation verified"`) && strings.Contains(l, "device="+udid) {
				return true
			}
		}
		return false
	}
	verified := map[*replica]int{}
	for i, m := range macs {
		other := map[*replica]*replica{a: b, b: a}[home[i]]
		if !verifiedBy(home[i], m.UDID) || verifiedBy(other, m.UDID) {
			t.Errorf("Mac %d: verified by its replica %v, by the other %v; want by its own only", i, verifiedBy(home[i], m.UDID), verifiedBy(other, m.UDID))
		}
		if verifiedBy(home[i], m.UDID) {
			verified[home[i]]++
		}
	}
	if verified[a] != n/2 || verified[b] != n/2 {
		t.Errorf("rotations verified: %d by a, %d by b; want %d each", verified[a], verified[b], n/2)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// fdeSecurityInfoPlist is a raw SecurityInfo command for nanomdm's enqueue API.
func fdeSecurityInfoPlist() ([]byte, error) {
	c, err := fde.NewSecurityInfo()
	return c.Plist, err
}
