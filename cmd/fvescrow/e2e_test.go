package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/appleschema"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
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
			// The device record keeps what SecurityInfo said (TestSecurityInfoFlags
			// flips each of these).
			for k, want := range map[string]string{escrow.AttrFDEHasPRK: "false", escrow.AttrFDEHasIRK: "false",
				escrow.AttrBootstrapAllowed: "allowed", escrow.AttrBootstrapSU: "false", escrow.AttrBootstrapKext: "false",
				escrow.AttrUserApprovedMDM: "true", escrow.AttrEnrolledViaDEP: "false"} {
				if d.Attrs[k] != want {
					t.Errorf("after the first SecurityInfo: %s = %q, want %q", k, d.Attrs[k], want)
				}
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
			if d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) || d.DeviceKey != m.Serial ||
				d.Attrs[escrow.AttrFDEEnabled] != "true" || d.Attrs[escrow.AttrFDEHasPRK] != "true" {
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

// apiDevice reads a device page through the API, as the help desk does.
func apiDevice(t *testing.T, s *testServer, ref string) wire.DeviceDetail {
	t.Helper()
	status, body := s.api(http.MethodGet, "/api/v1/devices/"+ref, nil)
	if status != http.StatusOK {
		t.Fatalf("GET device %s: %d %s", ref, status, body)
	}
	var d wire.DeviceDetail
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("device %s: %v\n%s", ref, err, body)
	}
	return d
}

// TestSecurityInfoFlags: the FDE_* and bootstrap token flags of each
// SecurityInfo answer land on the device record, and a later answer
// replaces them. The second answer flips every flag the fake Mac reports by
// default (TestEnrollmentToEscrow checks those).
func TestSecurityInfoFlags(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			m := s.enroll(fakemac.Options{})
			connect(t, s, m) // InstallProfile, SecurityInfo, UserList
			d := device(t, s, m)
			want := map[string]string{
				escrow.AttrFDEEnabled: "false", escrow.AttrFDEHasPRK: "false", escrow.AttrFDEHasIRK: "false",
				escrow.AttrBootstrapAllowed: "allowed", escrow.AttrBootstrapSU: "false", escrow.AttrBootstrapKext: "false",
				escrow.AttrUserApprovedMDM: "true", escrow.AttrEnrolledViaDEP: "false",
			}
			for k, v := range want {
				if d.Attrs[k] != v {
					t.Errorf("first SecurityInfo: %s = %q, want %q", k, d.Attrs[k], v)
				}
			}
			first := d.Attrs[escrow.AttrSecurityInfoAt]
			if first == "" {
				t.Fatalf("no %s after SecurityInfo: %v", escrow.AttrSecurityInfoAt, d.Attrs)
			}

			// FileVault on, with an institutional key too; DEP-enrolled
			// without user approval; the bootstrap token is refused for
			// authentication and required for updates and kext approval.
			if err := m.EnableFileVault(); err != nil {
				t.Fatal(err)
			}
			m.Handle(fde.RequestSecurityInfo, func(m *fakemac.Mac, _ map[string]any) (string, map[string]any) {
				si := m.SecurityInfoAnswer()["SecurityInfo"].(map[string]any)
				si["FDE_HasInstitutionalRecoveryKey"] = true
				si["BootstrapTokenAllowedForAuthentication"] = "disallowed"
				si["BootstrapTokenRequiredForSoftwareUpdate"] = true
				si["BootstrapTokenRequiredForKernelExtensionApproval"] = true
				si["ManagementStatus"] = map[string]any{"EnrolledViaDEP": true, "UserApprovedEnrollment": false, "IsUserEnrollment": false}
				return fde.StatusAcknowledged, map[string]any{"SecurityInfo": si}
			})
			s.enqueue("securityinfo", m.UDID)
			if got := connect(t, s, m); strings.Join(got, ",") != fde.RequestSecurityInfo {
				t.Fatalf("answered %v", got)
			}
			d = device(t, s, m)
			want = map[string]string{
				escrow.AttrFDEEnabled: "true", escrow.AttrFDEHasPRK: "true", escrow.AttrFDEHasIRK: "true",
				escrow.AttrBootstrapAllowed: "disallowed", escrow.AttrBootstrapSU: "true", escrow.AttrBootstrapKext: "true",
				escrow.AttrUserApprovedMDM: "false", escrow.AttrEnrolledViaDEP: "true",
				escrow.AttrEscrowStatus: string(escrow.EscrowEscrowed), escrow.AttrSecurityInfoError: "",
			}
			for k, v := range want {
				if d.Attrs[k] != v {
					t.Errorf("second SecurityInfo: %s = %q, want %q", k, d.Attrs[k], v)
				}
			}
			if d.Attrs[escrow.AttrSecurityInfoAt] == "" {
				t.Errorf("%s cleared", escrow.AttrSecurityInfoAt)
			}
			// The API shows the same record.
			api := apiDevice(t, s, m.Serial)
			for k, v := range want {
				if api.Device.Attrs[k] != v {
					t.Errorf("API: %s = %q, want %q", k, api.Device.Attrs[k], v)
				}
			}
			if api.Device.FileVault != "true" || api.Device.EscrowStatus != string(escrow.EscrowEscrowed) {
				t.Errorf("API device: filevault %q, escrow status %q", api.Device.FileVault, api.Device.EscrowStatus)
			}
			if got := revealKey(t, s, m); got != m.PRK() {
				t.Error("escrowed key differs from the Mac's")
			}
		})
	}
}

// TestUndecryptableKeyThroughMDM: a Mac answers SecurityInfo with a blob
// encrypted (by OpenSSL, as a Mac does) to an escrow certificate fvescrow
// does not hold, say a previous MDM's. The device's escrow status is
// undecryptable; the error and the kept version name the certificate's
// issuer and serial, so an admin can tell which identity would open it.
func TestUndecryptableKeyThroughMDM(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			m := s.enroll(fakemac.Options{})
			connect(t, s, m) // profile installed
			if err := m.EnableFileVault(); err != nil {
				t.Fatal(err)
			}
			other := foreignEscrowCert(t)
			blob := cmstest.OpenSSLEncrypt(t, other, []byte(m.PRK()), cmstest.OpenSSLOptions{})
			m.Handle(fde.RequestSecurityInfo, func(m *fakemac.Mac, _ map[string]any) (string, map[string]any) {
				si := m.SecurityInfoAnswer()["SecurityInfo"].(map[string]any)
				si["FDE_PersonalRecoveryKeyCMS"] = blob
				si["FDE_PersonalRecoveryKeyDeviceKey"] = m.Serial
				return fde.StatusAcknowledged, map[string]any{"SecurityInfo": si}
			})
			s.enqueue("securityinfo", m.UDID)
			connect(t, s, m)

			recipient := fmt.Sprintf("issuer %q serial %s", other.Issuer.String(), fde.SerialString(other.SerialNumber))
			d := device(t, s, m)
			if d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowUndecryptable) {
				t.Fatalf("escrow status %q, want %q (attrs %v)", d.Attrs[escrow.AttrEscrowStatus], escrow.EscrowUndecryptable, d.Attrs)
			}
			if e := d.Attrs[escrow.AttrEscrowError]; !strings.Contains(e, recipient) {
				t.Errorf("escrow error %q does not name %s", e, recipient)
			}
			if d.Attrs[escrow.AttrFDEEnabled] != "true" || d.Attrs[escrow.AttrFDEHasPRK] != "true" {
				t.Errorf("FileVault flags: %v", d.Attrs)
			}
			// The blob is kept as a version that is not a usable key, and
			// nothing was decrypted to the wrong place.
			vs, err := s.srv.svc.KeyVersions(ctx, d.ID, escrow.KindPRK)
			if err != nil || len(vs) != 1 || vs[0].Status != escrow.StatusUndecryptable || vs[0].Current() || !strings.Contains(vs[0].Error, recipient) {
				t.Fatalf("key versions %+v %v", vs, err)
			}
			if st, _ := s.srv.svc.OutboxStats(ctx); st.Pending != 0 {
				t.Errorf("outbox pending %d: an undecryptable blob is settled, not retried", st.Pending)
			}
			if _, err := s.srv.svc.Reveal(ctx, escrow.RevealRequest{Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "helpdesk@example.com"},
				Device: d.ID, Reason: "user locked out at FileVault login", Ticket: "IT-1002"}); err == nil {
				t.Error("an undecryptable blob was revealed")
			}
			// The help desk sees the same through the API.
			api := apiDevice(t, s, m.Serial)
			if api.Device.EscrowStatus != string(escrow.EscrowUndecryptable) || !strings.Contains(api.Device.Attrs[escrow.AttrEscrowError], recipient) {
				t.Errorf("API device: status %q, error %q", api.Device.EscrowStatus, api.Device.Attrs[escrow.AttrEscrowError])
			}
			if len(api.KeyVersions) != 1 || api.KeyVersions[0].Status != string(escrow.StatusUndecryptable) || api.KeyVersions[0].Current ||
				!strings.Contains(api.KeyVersions[0].Error, recipient) {
				t.Errorf("API key versions %+v", api.KeyVersions)
			}
			if api.Recoverable {
				t.Error("API: a device with only an undecryptable blob is recoverable")
			}
			if strings.Contains(s.logs.String(), m.PRK()) {
				t.Error("the recovery key reached the server log")
			}
		})
	}
}

// foreignEscrowCert is an escrow certificate from another issuer, whose key
// fvescrow never had.
func foreignEscrowCert(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	name := pkix.Name{CommonName: "Previous MDM FileVault Escrow", Organization: []string{"Elsewhere Inc"}}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x0BADC0DE5EED), Subject: name, Issuer: name,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestUserListHistory: a second UserList with changed accounts (a SecureToken
// granted, an account added, one removed) replaces the inventory, records
// each change, and updates the SecureToken holders; the help desk sees it in
// the API and `device show`.
func TestUserListHistory(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			m := s.enroll(fakemac.Options{Users: []fakemac.User{
				{UserName: "ada", FullName: "Ada Lovelace", UID: 501, GUID: "A-GUID", HasSecureToken: true, IsLoggedIn: true},
				{UserName: "itadmin", UID: 502, GUID: "B-GUID"},
				{UserName: "guest", UID: 201, GUID: "G-GUID"},
			}})
			connect(t, s, m)
			id := escrow.DeviceID(m.UDID)
			hist, err := s.srv.stores.meta.AccountHistory(ctx, id, 50)
			if err != nil || len(hist) != 3 {
				t.Fatalf("history after the first UserList: %+v %v", hist, err)
			}
			_, firstAt, _ := s.srv.stores.meta.Accounts(ctx, id)

			m.SetUsers([]fakemac.User{
				{UserName: "ada", FullName: "Ada Lovelace", UID: 501, GUID: "A-GUID", HasSecureToken: true},
				{UserName: "itadmin", UID: 502, GUID: "B-GUID", HasSecureToken: true, IsLoggedIn: true},
				{UserName: "bob", FullName: "Bob Smith", UID: 503, GUID: "C-GUID", MobileAccount: true},
			})
			if out := s.enqueue("userlist", m.UDID); !strings.Contains(out, "queued UserList") {
				t.Fatalf("enqueue: %s", out)
			}
			if got := connect(t, s, m); strings.Join(got, ",") != fde.RequestUserList {
				t.Fatalf("answered %v", got)
			}

			// The inventory is the new answer.
			accounts, at, err := s.srv.stores.meta.Accounts(ctx, id)
			if err != nil || len(accounts) != 3 || at.Before(firstAt) {
				t.Fatalf("accounts %+v at %v (first at %v): %v", accounts, at, firstAt, err)
			}
			byName := map[string]string{}
			for _, a := range accounts {
				byName[a.UserName] = fmt.Sprintf("token=%s mobile=%s loggedin=%s uid=%d", a.HasSecureToken, a.MobileAccount, a.IsLoggedIn, a.UID)
			}
			wantAccounts := map[string]string{
				"ada":     "token=true mobile=false loggedin=false uid=501",
				"itadmin": "token=true mobile=false loggedin=true uid=502",
				"bob":     "token=false mobile=true loggedin=false uid=503",
			}
			if !maps.Equal(byName, wantAccounts) {
				t.Errorf("accounts %v, want %v", byName, wantAccounts)
			}
			if h := device(t, s, m).Attrs[escrow.AttrTokenHolders]; h != "ada,itadmin" {
				t.Errorf("token holders %q, want ada,itadmin", h)
			}

			// The history keeps both reports, newest first.
			hist, err = s.srv.stores.meta.AccountHistory(ctx, id, 50)
			if err != nil || len(hist) != 6 {
				t.Fatalf("history: %+v %v", hist, err)
			}
			change := func(c escrow.AccountChange) string { return string(c.Kind) + " " + c.UserName }
			var second, first []string
			for _, c := range hist[:3] {
				second = append(second, change(c))
				if c.At.Before(hist[3].At) {
					t.Errorf("history not newest first: %+v", hist)
				}
			}
			for _, c := range hist[3:] {
				first = append(first, change(c))
			}
			if !sameSet(second, []string{"securetoken-granted itadmin", "added bob", "removed guest"}) {
				t.Errorf("changes of the second UserList: %v", second)
			}
			if !sameSet(first, []string{"added ada", "added itadmin", "added guest"}) {
				t.Errorf("changes of the first UserList: %v", first)
			}

			// The API's device page has the new inventory.
			api := apiDevice(t, s, m.UDID)
			apiAccounts := map[string]string{}
			for _, a := range api.Accounts {
				apiAccounts[a.UserName] = a.HasSecureToken
			}
			if !maps.Equal(apiAccounts, map[string]string{"ada": "true", "itadmin": "true", "bob": "false"}) {
				t.Errorf("API accounts %+v", api.Accounts)
			}
			// `device show --json` lists the changes.
			var report struct {
				Changes []struct{ Kind, UserName string } `json:"account_changes"`
			}
			show := s.cli(append([]string{"device", "show", "--json", m.Serial}, s.storeArgs()...)...)
			if err := json.Unmarshal([]byte(show), &report); err != nil {
				t.Fatalf("device show --json: %v\n%s", err, show)
			}
			var shown []string
			for _, c := range report.Changes {
				shown = append(shown, c.Kind+" "+c.UserName)
			}
			if !sameSet(shown, append(second, first...)) {
				t.Errorf("device show lists changes %v", shown)
			}
		})
	}
}

var firstAdminRE = regexp.MustCompile(`(?m)^created the local admin "admin"; its one-time password, shown only now and to be changed at first sign-in: (\S+)$`)

// TestFirstStartGuidance runs `fvescrow serve` (serve, as the command does)
// twice on the same storage, in both modes. The first start prints the next
// steps and the first admin's one-time password, which signs in (replaced
// at once, as it must be); the second start prints neither the password nor
// the creations again. testdata/serve_firststart.txtar checks the same text
// from the built command.
func TestFirstStartGuidance(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			c := defaultServeConfig()
			c.stores.dataDir = filepath.Join(dir, "data")
			if mode == modeProduction {
				c.stores.databaseURL = pgtest.NewDatabase(t)
				v := vaulttest.StartDev(t)
				policy, err := os.ReadFile("../../deploy/vault/fvescrow-policy.hcl")
				if err != nil {
					t.Fatal(err)
				}
				vt := filepath.Join(dir, "vault-token")
				writeFile(t, vt, v.PolicyToken(t, string(policy)))
				c.stores.vaultAddr, c.stores.vaultTokenFile = v.Addr, vt
			}
			first := runServe(t, &c, func(base string, out *syncBuffer) {
				// Sign in with the printed password, replacing it.
				login := func(pw, newPW string) int {
					body, _ := json.Marshal(wire.LoginRequest{Username: "admin", Password: pw, NewPassword: newPW})
					resp, err := http.Post(base+"/api/v1/login", "application/json", bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					return resp.StatusCode
				}
				if code := login("not-the-password", "A-new-passphrase-for-admin-42"); code != http.StatusUnauthorized {
					t.Errorf("sign-in with a wrong password: %d", code)
				}
				// serve prints before it answers: the password is there.
				m := firstAdminRE.FindStringSubmatch(out.String())
				if m == nil {
					t.Fatalf("no one-time password printed:\n%s", out.String())
				}
				pw := m[1]
				if code := login(pw, "A-new-passphrase-for-admin-42"); code != http.StatusOK {
					t.Errorf("sign-in with the printed one-time password: %d", code)
				}
			})
			for _, want := range []string{
				"created the escrow identity (serial ",
				"created the SCEP CA that issues device identities",
				"created an admin API token in " + filepath.Join(c.stores.dataDir, "api-token") + " (mode 0600)",
				"next: upload the APNs push certificate: fvescrow mdm push-cert upload --cert push.pem --key push.key (same storage flags)",
				"then: write the enrollment profile: fvescrow profile enroll --url https://YOUR-PUBLIC-HOST -o enroll.mobileconfig (same storage flags)",
			} {
				if !strings.Contains(first, want) {
					t.Errorf("first start does not say %q:\n%s", want, first)
				}
			}
			if n := len(firstAdminRE.FindAllString(first, -1)); n != 1 {
				t.Errorf("first start prints the admin password %d times:\n%s", n, first)
			}
			second := runServe(t, &c, nil)
			for _, never := range []string{"one-time password", "created the local admin", "created the escrow identity", "created the SCEP CA", "created an admin API token"} {
				if strings.Contains(second, never) {
					t.Errorf("second start says %q:\n%s", never, second)
				}
			}
			if !strings.Contains(second, "next: upload the APNs push certificate") {
				t.Errorf("second start, still without a push certificate, does not say what is next:\n%s", second)
			}
		})
	}
}

// runServe runs serve with c on a free port until during returns, and
// returns what it printed.
func runServe(t *testing.T, c *serveConfig, during func(base string, out *syncBuffer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.listen = ln.Addr().String()
	ln.Close()
	out := &syncBuffer{}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(sctx, c, slog.New(slog.NewTextHandler(io.Discard, nil)), out) }()
	base := "http://" + c.listen
	eventually(t, "/healthz", func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve: %v\n%s", err, out.String())
		default:
		}
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if during != nil {
		during(base, out)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	return out.String()
}
