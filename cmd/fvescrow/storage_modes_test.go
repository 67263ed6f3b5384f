package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// Tests of the two storage modes as an operator sees them: the Vault mount
// the secrets go to, /readyz while Vault is away, what is left on disk, and
// the break-glass export.

// useVault points a production-mode server at v, with a token holding
// exactly the shipped policy (startServer's own dev server is then unused).
func useVault(t *testing.T, v *vaulttest.Server) func(*serveConfig) {
	t.Helper()
	policy, err := os.ReadFile("../../deploy/vault/fvescrow-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(t.TempDir(), "vault-token")
	writeFile(t, token, v.PolicyToken(t, string(policy)))
	return func(c *serveConfig) { c.stores.vaultAddr, c.stores.vaultTokenFile = v.Addr, token }
}

// readiness is /readyz's answer.
type readiness struct {
	code          int
	Status        string `json:"status"`
	Secrets       string `json:"secrets"`
	Metadata      string `json:"metadata"`
	OutboxPending *int   `json:"outbox_pending"`
}

func readyz(t *testing.T, s *testServer) readiness {
	t.Helper()
	resp, err := s.Client().Get(s.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	if r.OutboxPending == nil {
		t.Fatalf("/readyz has no outbox_pending: %+v", r)
	}
	r.code = resp.StatusCode
	return r
}

// escrowOne enrolls a fake Mac, turns FileVault on and has its key escrowed
// through SecurityInfo, as in TestEnrollmentToEscrow.
func escrowOne(t *testing.T, s *testServer) *fakemac.Mac {
	t.Helper()
	m := s.enroll(fakemac.Options{})
	connect(t, s, m) // profile installed
	if err := m.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)
	connect(t, s, m)
	if st := device(t, s, m).Attrs[escrow.AttrEscrowStatus]; st != string(escrow.EscrowEscrowed) {
		t.Fatalf("escrow status %q after SecurityInfo\n--- server log\n%s", st, s.logs.String())
	}
	return m
}

// TestReadyzOutboxWhileVaultDown: production mode, Vault stops while a Mac
// reports its new key. The key waits in the outbox (in PostgreSQL) and
// /readyz shows it, with the secret store unavailable (503); when Vault
// comes back with its data the server's outbox loop escrows it, /readyz
// shows nothing pending, and the key is revealed.
func TestReadyzOutboxWhileVaultDown(t *testing.T) {
	v := vaulttest.StartPersistent(t) // keeps its data across Stop and Start
	var skew atomic.Int64             // moves the server's clock past the outbox backoff
	s := startServer(t, modeProduction, useVault(t, v), func(c *serveConfig) {
		c.testNow = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	// The outbox loop serve runs, here every 100ms; stopped before the server.
	loop, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.srv.svc.RunOutbox(loop, 100*time.Millisecond) })
	t.Cleanup(func() { stop(); wg.Wait() })

	m := s.enroll(fakemac.Options{})
	connect(t, s, m) // profile installed
	if r := readyz(t, s); r.code != http.StatusOK || r.Status != "ready" || *r.OutboxPending != 0 {
		t.Fatalf("/readyz with everything up: %+v", r)
	}
	if err := m.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)

	v.Stop()
	connect(t, s, m) // SecurityInfo with the key: kept, acknowledged
	if st := device(t, s, m).Attrs[escrow.AttrEscrowStatus]; st != string(escrow.EscrowReceived) {
		t.Errorf("escrow status %q with Vault down, want %q", st, escrow.EscrowReceived)
	}
	r := readyz(t, s)
	if r.code != http.StatusServiceUnavailable || r.Status != "not ready" || r.Secrets != "unavailable" || *r.OutboxPending < 1 {
		t.Fatalf("/readyz with Vault down: %+v, want 503, secrets unavailable, outbox_pending >= 1", r)
	}
	if vs, _ := s.srv.svc.KeyVersions(ctx, escrow.DeviceID(m.UDID), escrow.KindPRK); len(vs) != 0 {
		t.Fatalf("%d key versions recorded while Vault was down", len(vs))
	}
	if !strings.Contains(s.logs.String(), "secret store unavailable; blob kept in the outbox") {
		t.Error("the deferred ingest was not logged")
	}

	v.Start()
	skew.Store(int64(2 * time.Hour)) // past any backoff the failed attempts set
	eventually(t, "the outbox loop to drain", func() bool {
		r := readyz(t, s)
		return r.code == http.StatusOK && *r.OutboxPending == 0
	})
	if got := revealKey(t, s, m); got != m.PRK() {
		t.Fatal("the key escrowed after Vault came back is not the Mac's")
	}
	vs, err := s.srv.svc.KeyVersions(ctx, escrow.DeviceID(m.UDID), escrow.KindPRK)
	if err != nil || len(vs) != 1 {
		t.Fatalf("%d key versions after the drain: %v", len(vs), err)
	}
	if strings.Contains(s.logs.String(), m.PRK()) {
		t.Error("the recovery key reached the server log")
	}
}

// privateKeyFiles walks root and returns the files holding a PEM private key
// or an age identity, and how many files it read.
func privateKeyFiles(t *testing.T, root string) (found []string, files int) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("PRIVATE KEY")) || bytes.Contains(bytes.ToUpper(b), []byte("AGE-SECRET-KEY")) {
			rel, _ := filepath.Rel(root, p)
			found = append(found, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found, files
}

// TestNoKeyOnDiskInProduction: with PostgreSQL and Vault, after the first
// start (escrow identity, SCEP CA, audit key), a push certificate upload and
// an escrowed key, no file the server could have written holds a private
// key: not its data folder, not the folder its credential files are in, not
// a config or cache folder in HOME. The keys are in Vault. The embedded mode,
// walked the same way, shows the walk finds an identity where there is one.
func TestNoKeyOnDiskInProduction(t *testing.T) {
	t.Run(modeProduction, func(t *testing.T) {
		home := t.TempDir()
		t.Setenv("FVESCROW_VAULT_BIN", vaulttest.Binary(t)) // found through HOME otherwise
		t.Setenv("HOME", home)
		t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
		t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
		t.Setenv("XDG_DATA_HOME", filepath.Join(home, ".local", "share"))
		v := vaulttest.StartDev(t)
		s := startServer(t, modeProduction, useVault(t, v))
		m := escrowOne(t, s)
		s.restart() // a second start reads everything back from Vault
		if got := revealKey(t, s, m); got != m.PRK() {
			t.Fatal("wrong key after a restart")
		}

		dirs := []string{filepath.Dir(s.cfg.stores.dataDir), filepath.Dir(s.cfg.stores.vaultTokenFile), home}
		total := 0
		for _, dir := range dirs {
			found, n := privateKeyFiles(t, dir)
			total += n
			if len(found) > 0 {
				t.Errorf("private keys on disk in %s: %v", dir, found)
			}
		}
		if total < 2 { // at least the API and Vault token files were read
			t.Fatalf("walked only %d files", total)
		}

		// The keys the server needs are in Vault: each kind under the prefix,
		// the escrow identity's private key among them.
		root := v.Client()
		list, err := root.Logical().ListWithContext(ctx, "secret/metadata/fvescrow/")
		if err != nil || list == nil {
			t.Fatalf("list secret/metadata/fvescrow/: %v %v", list, err)
		}
		kinds := map[string]bool{}
		for _, k := range list.Data["keys"].([]any) {
			kinds[strings.TrimSuffix(k.(string), "/")] = true
		}
		for _, k := range []escrow.SecretKind{escrow.KindEscrowKey, escrow.KindAuditKey, escrow.KindSCEPCAKey, escrow.KindPushKey, escrow.KindPRK} {
			if !kinds[string(k)] {
				t.Errorf("no %s in Vault (kinds there: %v)", k, kinds)
			}
		}
		fp := s.srv.svc.Keyring().Current(time.Now())
		if fp == nil {
			t.Fatal("no current escrow certificate")
		}
		sec, err := root.KVv2("secret").Get(ctx, "fvescrow/escrow-key/"+fde.Fingerprint(fp))
		if err != nil {
			t.Fatalf("escrow key in Vault: %v", err)
		}
		pemKey, _ := base64.StdEncoding.DecodeString(sec.Data["value"].(string))
		if !bytes.Contains(pemKey, []byte("PRIVATE KEY")) {
			t.Error("the escrow key in Vault is not a PEM private key")
		}
	})
	t.Run(modeEmbedded, func(t *testing.T) {
		s := startServer(t, modeEmbedded)
		escrowOne(t, s)
		found, _ := privateKeyFiles(t, filepath.Dir(s.cfg.stores.dataDir))
		if strings.Join(found, ",") != filepath.Join("data", "age-identity.txt") {
			t.Errorf("embedded mode: private keys on disk in %v, want the age identity only", found)
		}
	})
}

// exportFile is a break-glass export decrypted with the age library.
type exportFile struct {
	header  exportHeader
	records []escrow.ExportRecord
	trailer exportTrailer
}

func decryptExport(t *testing.T, path, identityFile string) exportFile {
	t.Helper()
	ib, err := os.ReadFile(identityFile)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(ib))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, ids...)
	if err != nil {
		t.Fatalf("age decrypt with %s: %v", identityFile, err)
	}
	var ex exportFile
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for line := 0; sc.Scan(); line++ {
		switch {
		case line == 0:
			err = json.Unmarshal(sc.Bytes(), &ex.header)
		case bytes.Contains(sc.Bytes(), []byte(`"end":true`)):
			err = json.Unmarshal(sc.Bytes(), &ex.trailer)
		default:
			var rec escrow.ExportRecord
			err = json.Unmarshal(sc.Bytes(), &rec)
			ex.records = append(ex.records, rec)
		}
		if err != nil {
			t.Fatalf("export line %d: %v", line+1, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ex
}

// TestExportToSeveralRecipients: `fvescrow export` with two --recipient
// flags on a store holding a key escrowed from a (fake) Mac, in both storage
// modes. Each recipient's identity verifies the export with `export verify`
// and decrypts it with the age library to the Mac's key and the escrow
// identity; the export is audited with both recipients; a truncated copy
// fails verification, saying why.
func TestExportToSeveralRecipients(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			m := escrowOne(t, s)
			dir := t.TempDir()
			var ids, recipients []string
			for _, name := range []string{"alice", "bob"} {
				id, err := age.GenerateX25519Identity()
				if err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(dir, name+".key")
				writeFile(t, p, id.String()+"\n")
				ids, recipients = append(ids, p), append(recipients, id.Recipient().String())
			}
			out := filepath.Join(dir, "backup.age")
			got := s.cli(append([]string{"export", "--recipient", recipients[0], "--recipient", recipients[1], "-o", out}, s.storeArgs()...)...)
			if got != "exported 2 secrets to "+out+" for 2 recipient(s)\n" {
				t.Fatalf("export said %q", got)
			}
			if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("export file: %v %v", st, err)
			}
			cert := s.srv.svc.Keyring().Current(time.Now())
			for _, id := range ids {
				got := s.cli("export", "verify", "--identity", id, out)
				if !strings.HasPrefix(got, "export OK: 1 recovery keys, 1 escrow identities, created ") {
					t.Errorf("export verify with %s: %q", filepath.Base(id), got)
				}
				ex := decryptExport(t, out, id)
				if ex.header.Format != exportFormat || !ex.trailer.End || ex.trailer.Records != 2 || len(ex.records) != 2 {
					t.Fatalf("export read with %s: %+v", filepath.Base(id), ex)
				}
				var prks []string
				for _, r := range ex.records {
					switch r.Kind {
					case escrow.KindPRK:
						if r.Device != escrow.DeviceID(m.UDID) || r.Serial != m.Serial {
							t.Errorf("PRK record for %s %s, want %s %s", r.Device, r.Serial, m.UDID, m.Serial)
						}
						prks = append(prks, r.Data)
					case escrow.KindEscrowKey:
						if r.Fingerprint != fde.Fingerprint(cert) || !strings.Contains(r.Data, "PRIVATE KEY") {
							t.Errorf("escrow key record %s, want the current identity %s with its key", r.Fingerprint, fde.Fingerprint(cert))
						}
					default:
						t.Errorf("unexpected record kind %q", r.Kind)
					}
				}
				if len(prks) != 1 || prks[0] != m.PRK() {
					t.Errorf("%d recovery keys decrypted with %s, want the Mac's", len(prks), filepath.Base(id))
				}
			}

			// The export is audited, naming both recipients.
			audit := s.cli(append([]string{"audit", "export", "--format", "jsonl"}, s.storeArgs()...)...)
			var audited bool
			for _, l := range strings.Split(audit, "\n") {
				if strings.Contains(l, `"`+escrow.ActionExportCreated+`"`) && strings.Contains(l, recipients[0]) && strings.Contains(l, recipients[1]) {
					audited = true
				}
			}
			if !audited {
				t.Errorf("no %s audit record naming both recipients:\n%s", escrow.ActionExportCreated, audit)
			}

			// A copy cut short is refused, naming the file and saying it is
			// damaged: in its payload age's own words, in its header ours.
			full, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				n     int
				clear bool
			}{{len(full) * 2 / 3, true}, {len(full) - 1, true}, {60, false}} {
				short := filepath.Join(dir, fmt.Sprintf("short-%d.age", c.n))
				writeFile(t, short, string(full[:c.n]))
				var stdout, stderr bytes.Buffer
				code := run([]string{"export", "verify", "--identity", ids[0], short}, strings.NewReader(""), &stdout, &stderr)
				msg := stderr.String()
				if code != 1 || stdout.Len() != 0 || !strings.Contains(msg, short) {
					t.Errorf("export verify of %d of %d bytes: exit %d, stdout %q, stderr %q; want exit 1 naming the file", c.n, len(full), code, stdout.String(), msg)
				}
				if c.clear && !strings.Contains(msg, "corrupted") {
					t.Errorf("export verify of %d of %d bytes says %q; want it to say the file is corrupted", c.n, len(full), msg)
				}
				if !c.clear && !strings.Contains(msg, "is truncated or damaged") {
					t.Errorf("export verify of %d of %d bytes says %q; want it to say the file is truncated", c.n, len(full), msg)
				}
				t.Logf("%d of %d bytes: %s", c.n, len(full), strings.TrimSpace(msg))
			}
		})
	}
}
