package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/appleschema"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
)

var ctx = context.Background()

func device(t *testing.T, s *testServer, m *fakemac.Mac) escrow.Device {
	t.Helper()
	d, err := s.srv.svc.Device(ctx, escrow.DeviceID(m.UDID))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func connect(t *testing.T, s *testServer, m *fakemac.Mac) []string {
	t.Helper()
	done, err := m.Connect(ctx)
	if err != nil {
		t.Fatalf("connect: %v\n--- server log\n%s", err, s.logs.String())
	}
	return done
}

func revealKey(t *testing.T, s *testServer, m *fakemac.Mac) string {
	t.Helper()
	r, err := s.srv.svc.Reveal(ctx, escrow.RevealRequest{Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "helpdesk@example.com"},
		Device: escrow.DeviceID(m.UDID), Reason: "user locked out at FileVault login", Ticket: "IT-1001"})
	if err != nil {
		t.Fatalf("reveal: %v", err)
	}
	return r.Key.Expose()
}

// TestEnrollmentToEscrow is the full flow on both storage modes: a Mac
// enrolls through fvescrow's SCEP, gets the escrow profile, SecurityInfo and
// UserList; FileVault is enabled at logout; the next SecurityInfo carries
// the CMS, which ends up escrowed and decryptable.
func TestEnrollmentToEscrow(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			profile := s.enrollmentProfile()
			schema, err := appleschema.Load()
			if err != nil {
				t.Fatal(err)
			}
			if err := schema.ValidateProfile(profile, appleschema.Options{Platform: "macOS"}); err != nil {
				t.Fatalf("enrollment profile does not validate: %v", err)
			}
			users := []fakemac.User{
				{UserName: "ada", FullName: "Ada Lovelace", UID: 501, GUID: "A-GUID", HasSecureToken: true, IsLoggedIn: true},
				{UserName: "itadmin", UID: 502, GUID: "B-GUID"},
			}
			m := s.enroll(fakemac.Options{Users: users})
			if d := device(t, s, m); d.Serial != m.Serial || d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowProfilePending) {
				t.Fatalf("after enrollment: %+v", d)
			}
			eventually(t, "a push after enrollment", func() bool { return s.apns.count() > 0 })

			got := connect(t, s, m)
			want := []string{fde.RequestInstallProfile, fde.RequestSecurityInfo, fde.RequestUserList}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("commands %v, want %v", got, want)
			}
			if m.EscrowCert() == nil || !m.EscrowCert().Equal(s.srv.svc.Keyring().Current(time.Now())) {
				t.Fatal("the Mac did not get the escrow certificate in the profile")
			}
			d := device(t, s, m)
			if d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowFileVaultOff) || d.Attrs[escrow.AttrProfileInstalled] == "" || d.Attrs[escrow.AttrFDEEnabled] != "false" {
				t.Fatalf("after first answers: %v", d.Attrs)
			}
			if d.Attrs[escrow.AttrTokenHolders] != "ada" {
				t.Errorf("token holders %q", d.Attrs[escrow.AttrTokenHolders])
			}
			accounts, _, err := s.srv.stores.meta.Accounts(ctx, d.ID)
			if err != nil || len(accounts) != 2 || !accounts[0].HasSecureToken.True() {
				t.Fatalf("accounts %+v %v", accounts, err)
			}

			// The user logs out; FileVault turns on and macOS encrypts the new
			// key to the escrow certificate. An operator asks for SecurityInfo.
			if err := m.EnableFileVault(); err != nil {
				t.Fatal(err)
			}
			out := s.enqueue("securityinfo", m.UDID)
			if !strings.Contains(out, "queued SecurityInfo") {
				t.Fatalf("enqueue: %s", out)
			}
			connect(t, s, m)
			d = device(t, s, m)
			if d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) || d.DeviceKey != m.Serial {
				t.Fatalf("after SecurityInfo with a key: %+v", d)
			}
			if got := revealKey(t, s, m); got != m.PRK() {
				t.Fatal("escrowed key differs from the Mac's")
			}
			// The same SecurityInfo again makes no second version.
			s.enqueue("securityinfo", m.UDID)
			connect(t, s, m)
			vs, _ := s.srv.svc.KeyVersions(ctx, d.ID, escrow.KindPRK)
			if len(vs) != 1 {
				t.Fatalf("%d key versions after a repeated SecurityInfo", len(vs))
			}
			// Every command fvescrow sent was recorded and answered.
			cmds, err := s.srv.stores.meta.Commands(ctx, d.ID, 20)
			if err != nil || len(cmds) != 5 {
				t.Fatalf("commands %+v %v", cmds, err)
			}
			for _, c := range cmds {
				if c.Status != fde.StatusAcknowledged {
					t.Errorf("command %s %s: %q", c.UUID, c.RequestType, c.Status)
				}
			}
			// device show works over the same stores and shows no key.
			show := s.cli(append([]string{"device", "show", m.Serial}, s.storeArgs()...)...)
			if !strings.Contains(show, "escrow status:") || !strings.Contains(show, "escrowed") || strings.Contains(show, m.PRK()) {
				t.Errorf("device show:\n%s", show)
			}
			if strings.Contains(s.logs.String(), m.PRK()) {
				t.Error("the recovery key reached the server log")
			}
		})
	}
}

// TestFileVaultPredatesProfile: a Mac whose key was made before the escrow
// profile arrived has FileVault on, a key, and no blob.
func TestFileVaultPredatesProfile(t *testing.T) {
	s := startServer(t, modeEmbedded)
	m := s.enroll(fakemac.Options{})
	if err := m.EnableFileVault(); err != nil { // before the profile is installed
		t.Fatal(err)
	}
	connect(t, s, m)
	if st := device(t, s, m).Attrs[escrow.AttrEscrowStatus]; st != string(escrow.EscrowPredatesProfile) {
		t.Fatalf("status %q", st)
	}
	j, err := s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, escrow.DeviceID(m.UDID))
	if err != nil || j.State != escrow.JobPending || time.Until(j.RunAt) > time.Hour || j.Attempts != 1 {
		t.Fatalf("not rechecked with backoff: %+v %v", j, err)
	}
}

// TestBootstrapAndUnlockTokens: tokens go to the secret store, survive a
// re-enrollment, are served back, and never rest in nanomdm's storage.
func TestBootstrapAndUnlockTokens(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			unlock := []byte("UNLOCK-TOKEN-" + randHex(16))
			boot := []byte("BOOTSTRAP-TOKEN-" + randHex(16))
			m := s.enroll(fakemac.Options{UnlockToken: unlock})
			if err := m.SetBootstrapToken(ctx, boot); err != nil {
				t.Fatal(err)
			}
			got, err := m.GetBootstrapToken(ctx)
			if err != nil || !bytes.Equal(got, boot) {
				t.Fatalf("GetBootstrapToken: %q %v", got, err)
			}
			// Re-enrollment wipes nanomdm's copy; fvescrow's survives.
			if err := m.Authenticate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.TokenUpdate(ctx); err != nil {
				t.Fatal(err)
			}
			if got, err = m.GetBootstrapToken(ctx); err != nil || !bytes.Equal(got, boot) {
				t.Fatalf("after re-enrollment: %q %v", got, err)
			}
			id := escrow.DeviceID(m.UDID)
			u, err := s.srv.svc.Token(ctx, escrow.System, id, escrow.KindUnlockToken)
			if err != nil || !bytes.Equal(u, unlock) {
				t.Fatalf("unlock token: %v", err)
			}
			for _, secret := range [][]byte{unlock, boot, []byte(base64.StdEncoding.EncodeToString(unlock)), []byte(base64.StdEncoding.EncodeToString(boot))} {
				assertNotInNanomdm(t, s, secret)
			}
			if strings.Contains(s.logs.String(), string(boot)) || strings.Contains(s.logs.String(), string(unlock)) {
				t.Error("a token reached the log")
			}
		})
	}
}

// assertNotInNanomdm reads nanomdm's storage directly: every file of the
// embedded store, every text and binary column of its PostgreSQL tables.
func assertNotInNanomdm(t *testing.T, s *testServer, secret []byte) {
	t.Helper()
	if s.mode == modeEmbedded {
		root := filepath.Join(s.cfg.stores.dataDir, "nanomdm")
		files := 0
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			files++
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(b, secret) {
				t.Errorf("nanomdm file %s holds a secret", p)
			}
			return nil
		})
		if err != nil || files == 0 {
			t.Fatalf("walking nanomdm storage: %d files, %v", files, err)
		}
		return
	}
	db := s.srv.stores.meta.DB()
	rows, err := db.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = 'nanomdm' AND data_type IN ('text', 'bytea', 'character varying')`)
	if err != nil {
		t.Fatal(err)
	}
	var cols [][2]string
	for rows.Next() {
		var c [2]string
		if err := rows.Scan(&c[0], &c[1]); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	rows.Close()
	if len(cols) < 10 {
		t.Fatalf("found only %d nanomdm columns", len(cols))
	}
	for _, c := range cols {
		var n int
		q := `SELECT count(*) FROM nanomdm.` + c[0] + ` WHERE position($1::bytea in convert_to(` + c[1] + `::text, 'UTF8')) > 0`
		if err := db.QueryRowContext(ctx, q, secret).Scan(&n); err != nil {
			t.Fatalf("%s.%s: %v", c[0], c[1], err)
		}
		if n > 0 {
			t.Errorf("nanomdm.%s.%s holds a secret in %d rows", c[0], c[1], n)
		}
	}
	var boot, unlock *string
	if err := db.QueryRowContext(ctx, `SELECT bootstrap_token_b64, encode(unlock_token, 'base64') FROM nanomdm.devices LIMIT 1`).Scan(&boot, &unlock); err != nil {
		t.Fatal(err)
	}
	if boot != nil || unlock != nil {
		t.Errorf("nanomdm.devices keeps tokens: bootstrap=%v unlock=%v", boot != nil, unlock != nil)
	}
}

// TestCrashBetweenOutboxAndIngest: the server acknowledged a SecurityInfo
// with a key, wrote the blob to the outbox, and died before escrowing it.
// After a restart the key is escrowed, once.
func TestCrashBetweenOutboxAndIngest(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			crashed := true
			s := startServer(t, mode, func(c *serveConfig) {
				c.testWrapKeys = func(k mdm.Keys) mdm.Keys { return dyingKeys{Keys: k, dead: &crashed} }
			})
			m := s.enroll(fakemac.Options{})
			connect(t, s, m) // profile installed
			if err := m.EnableFileVault(); err != nil {
				t.Fatal(err)
			}
			s.enqueue("securityinfo", m.UDID)
			connect(t, s, m) // acknowledged; the "process" dies before the ingest
			if st, _ := s.srv.svc.OutboxStats(ctx); st.Pending != 1 {
				t.Fatalf("outbox pending %d, want 1", st.Pending)
			}
			crashed = false
			s.restart()
			if n, err := s.srv.svc.DrainOutbox(ctx); err != nil || n != 1 {
				t.Fatalf("drain after restart: %d %v", n, err)
			}
			if got := revealKey(t, s, m); got != m.PRK() {
				t.Fatal("wrong key after restart")
			}
			vs, _ := s.srv.svc.KeyVersions(ctx, escrow.DeviceID(m.UDID), escrow.KindPRK)
			if len(vs) != 1 {
				t.Fatalf("%d versions", len(vs))
			}
		})
	}
}

// dyingKeys stops between the outbox write and the ingest, as a killed
// process would.
type dyingKeys struct {
	mdm.Keys
	dead *bool
}

func (d dyingKeys) EscrowReceived(ctx context.Context, dev escrow.Device, it escrow.OutboxItem) (escrow.IngestResult, error) {
	if *d.dead {
		return escrow.IngestResult{}, errors.New("killed")
	}
	return d.Keys.EscrowReceived(ctx, dev, it)
}

// TestDeviceBadInput: requests that are not from an enrolled device, or not
// well-formed, change nothing.
func TestDeviceBadInput(t *testing.T) {
	s := startServer(t, modeEmbedded)
	m := s.enroll(fakemac.Options{})
	connect(t, s, m)
	idle, _ := plist.Marshal(map[string]any{"UDID": m.UDID, "Status": "Idle"})
	put := func(path string, body []byte, sig string, ct string) int {
		req, _ := http.NewRequest(http.MethodPut, s.URL()+path, bytes.NewReader(body))
		if sig != "" {
			req.Header.Set("Mdm-Signature", sig)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	stranger := strangerIdentity(t)
	auth, _ := plist.Marshal(map[string]any{"MessageType": "Authenticate", "UDID": "EVIL-" + randHex(4), "Topic": "x", "SerialNumber": "EVIL"})
	cases := []struct {
		name   string
		path   string
		body   []byte
		sig    string
		status int
	}{
		{"unsigned check-in", "/checkin", auth, "", http.StatusBadRequest},
		{"unsigned report", "/mdm", idle, "", http.StatusBadRequest},
		{"signature over other bytes", "/checkin", auth, sign(t, stranger, []byte("other")), http.StatusBadRequest},
		{"garbage signature", "/mdm", idle, "bm90IGEgc2lnbmF0dXJl", http.StatusBadRequest},
		{"certificate from another CA", "/checkin", auth, sign(t, stranger, auth), http.StatusBadRequest},
		{"oversized", "/mdm", bytes.Repeat([]byte("A"), mdm.MaxDeviceBody+1), "", http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		if got := put(tc.path, tc.body, tc.sig, ""); got != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.status)
		}
	}
	// SCEP without an operation is the client's mistake.
	if resp, err := s.Client().Get(s.URL() + "/scep"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET /scep without an operation: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if devs, _ := s.srv.svc.FindDevices(ctx, escrow.DeviceQuery{Text: "EVIL"}); len(devs) != 0 {
		t.Error("a rejected request created a device")
	}
	// Malformed plist, correctly signed by the enrolled Mac → 400.
	bad := []byte("<plist><dict><key>Status</key>")
	if got := put("/mdm", bad, macSign(t, m, bad), ""); got != http.StatusBadRequest {
		t.Errorf("malformed plist: %d", got)
	}
	// A result for a command fvescrow never sent: answered 200, ignored.
	unknown, _ := plist.Marshal(map[string]any{"UDID": m.UDID, "Status": "Acknowledged", "CommandUUID": "NEVER-SENT-" + randHex(4)})
	if got := put("/mdm", unknown, macSign(t, m, unknown), ""); got != http.StatusOK {
		t.Errorf("unknown command result: %d", got)
	}
	if cmds, _ := s.srv.stores.meta.Commands(ctx, escrow.DeviceID(m.UDID), 50); len(cmds) != 3 {
		t.Errorf("an unknown result changed the command log: %d", len(cmds))
	}
	if !strings.Contains(s.logs.String(), "ignored a result for a command fvescrow did not send") {
		t.Error("unknown result not logged")
	}
}

type identity struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

// strangerIdentity is a ClientAuth certificate fvescrow's CA never issued.
func strangerIdentity(t *testing.T) identity {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "stranger"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return identity{cert: c, key: key}
}

func sign(t *testing.T, id identity, body []byte) string {
	t.Helper()
	sd, err := pkcs7.NewSignedData(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.AddSigner(id.cert, id.key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func macSign(t *testing.T, m *fakemac.Mac, body []byte) string {
	t.Helper()
	sig, err := m.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}
