package mdmbench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/micromdm/nanolib/http/trace"
	nllog "github.com/micromdm/nanolib/log"
	"github.com/micromdm/nanomdm/certverify"
	"github.com/micromdm/nanomdm/cryptoutil"
	httpmdm "github.com/micromdm/nanomdm/http/mdm"
	nanomdmmdm "github.com/micromdm/nanomdm/mdm"
	"github.com/micromdm/nanomdm/service/certauth"
	"github.com/micromdm/nanomdm/service/nanomdm"
	"github.com/micromdm/nanomdm/storage"
	"github.com/micromdm/nanomdm/storage/diskv"
	"github.com/micromdm/nanomdm/storage/pgsql"
	"github.com/micromdm/nanomdm/test/protocol"
	"github.com/micromdm/plist"
	"github.com/micromdm/scep/v2/scep"
	"github.com/smallstep/pkcs7"
)

var discard = slog.New(slog.DiscardHandler)

// storageKind opens fresh storage of one kind for each server.
type storageKind struct {
	name string
	// bare opens nanomdm storage for bare nanomdm.
	bare func(tb testing.TB, dir string) storage.AllStorage
	// fvescrow opens fvescrow's metadata store and the nanomdm storage it
	// embeds, as `fvescrow serve` does for this kind (secrets are in an age
	// store in dir for both kinds).
	fvescrow func(tb testing.TB, dir string) (*sqlstore.Store, storage.AllStorage)
}

var storageKinds = []storageKind{
	{
		name: "embedded",
		bare: func(_ testing.TB, dir string) storage.AllStorage { return diskv.New(dir) },
		fvescrow: func(tb testing.TB, dir string) (*sqlstore.Store, storage.AllStorage) {
			meta, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "fvescrow.db"))
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = meta.Close() })
			return meta, diskv.New(filepath.Join(dir, "nanomdm"))
		},
	},
	{
		name: "postgres",
		bare: func(tb testing.TB, _ string) storage.AllStorage {
			db := openPgx(tb, pgtest.NewDatabase(tb), "")
			if _, err := db.Exec(pgsql.Schema); err != nil {
				tb.Fatal(err)
			}
			return newPgsql(tb, db)
		},
		fvescrow: func(tb testing.TB, _ string) (*sqlstore.Store, storage.AllStorage) {
			// As cmd/fvescrow's openNanoStorage: nanomdm's tables in schema
			// "nanomdm" of fvescrow's database, through a migration set.
			ctx := context.Background()
			dsn := pgtest.NewDatabase(tb)
			meta, err := sqlstore.OpenPostgres(ctx, dsn)
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = meta.Close() })
			err = meta.Migrate(ctx, "nanomdm", []sqlstore.Migration{{Version: 1, Name: "nanomdm v0.9.0 schema",
				SQL: "CREATE SCHEMA IF NOT EXISTS nanomdm;\nSET LOCAL search_path TO nanomdm;\n" + pgsql.Schema + "\nSET LOCAL search_path TO DEFAULT;"}})
			if err != nil {
				tb.Fatal(err)
			}
			return meta, newPgsql(tb, openPgx(tb, dsn, "nanomdm"))
		},
	},
}

// openPgx opens a database/sql pool with pgx, optionally on a search path.
func openPgx(tb testing.TB, dsn, searchPath string) *sql.DB {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	if searchPath != "" {
		cfg.RuntimeParams["search_path"] = searchPath
	}
	db := stdlib.OpenDB(*cfg)
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// newPgsql is nanomdm's PostgreSQL storage as fvescrow configures it
// (command bodies and results deleted once answered), for both servers.
func newPgsql(tb testing.TB, db *sql.DB) storage.AllStorage {
	st, err := pgsql.New(pgsql.WithDB(db), pgsql.WithLogger(nllog.NopLogger), pgsql.WithDeleteCommands())
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// server is one MDM server under test, as its devices and its admin see it.
type server struct {
	url    string // the device endpoint, …/mdm
	client *http.Client
	// issue signs a device identity certificate.
	issue func(csr *x509.CertificateRequest) (*x509.Certificate, error)
	// enqueue queues a command for a device.
	enqueue func(ctx context.Context, id string, cmd fde.Command) error
	// recipient is the certificate devices encrypt recovery keys to.
	recipient *x509.Certificate
	devices   []*device

	meta *sqlstore.Store // fvescrow's metadata, for the test's checks
}

// nanoEnqueue queues cmd in nanomdm storage, as mdm.NanoEnqueuer does.
func nanoEnqueue(ctx context.Context, st storage.CommandEnqueuer, id string, cmd fde.Command) error {
	m := &nanomdmmdm.Command{CommandUUID: cmd.UUID, Raw: cmd.Plist}
	m.Command.RequestType = cmd.RequestType
	errs, err := st.EnqueueCommand(ctx, []string{id}, m)
	for _, e := range errs {
		err = errors.Join(err, e)
	}
	return err
}

// newBare starts bare nanomdm the way cmd/nanomdm wires it: certauth around
// the core service, Mdm-Signature extraction then verification against the
// device CA, the check-in and command handler on /mdm, and the trace
// logging handler outermost. Its device CA has a 2048-bit RSA key, like
// fvescrow's SCEP CA.
func newBare(tb testing.TB, kind storageKind, caKey *rsa.PrivateKey) *server {
	st := kind.bare(tb, tb.TempDir())
	caCert := selfSignedCA(tb, caKey)
	verifier, err := certverify.NewPoolVerifier(fde.EncodeCertificatePEM(caCert), nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		tb.Fatal(err)
	}
	nop := nllog.NopLogger
	svc := certauth.New(nanomdm.New(st, nanomdm.WithLogger(nop)), st, certauth.WithLogger(nop))
	var h http.Handler = httpmdm.CheckinAndCommandHandler(svc, nop)
	h = httpmdm.CertVerifyMiddleware(h, verifier, nop)
	h = httpmdm.CertExtractMdmSignatureMiddleware(h, httpmdm.MdmSignatureVerifierFunc(cryptoutil.VerifyMdmSignature), httpmdm.SigLogWithLogger(nop))
	mux := http.NewServeMux()
	mux.Handle("/mdm", h)
	s := &server{
		issue: func(csr *x509.CertificateRequest) (*x509.Certificate, error) {
			return issueDeviceCert(caCert, caKey, csr)
		},
		enqueue: func(ctx context.Context, id string, cmd fde.Command) error {
			return nanoEnqueue(ctx, st, id, cmd)
		},
		recipient: caCert, // any RSA certificate: bare nanomdm never opens the blob
	}
	s.start(tb, trace.NewTraceLoggingHandler(mux, nop, traceID))
	return s
}

// traceID is cmd/nanomdm's newTraceID.
func traceID(*http.Request) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newFvescrow starts fvescrow's embedded MDM as cmd/fvescrow's buildServer
// assembles it: escrow identity, escrow.Service, PushCerts, guarded nanomdm
// storage, NanoEnqueuer, Capture, SCEP CA, mdm.NewEmbedded mounted by the
// production router, api.New. Logs are discarded, as for bare.
func newFvescrow(tb testing.TB, kind storageKind) *server {
	ctx := context.Background()
	dir := tb.TempDir()
	meta, nano := kind.fvescrow(tb, dir)
	id, _, err := agestore.LoadOrCreateIdentity(filepath.Join(dir, "age-identity.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	secrets, err := agestore.New(filepath.Join(dir, "secrets"), id)
	if err != nil {
		tb.Fatal(err)
	}
	if _, _, err := escrow.EnsureEscrowIdentity(ctx, meta, secrets, fde.IdentityOptions{}); err != nil {
		tb.Fatal(err)
	}
	kr, err := escrow.LoadKeyring(ctx, meta, secrets)
	if err != nil {
		tb.Fatal(err)
	}
	svc := escrow.New(secrets, meta, kr)
	if _, err := svc.EnsureAuditKey(ctx); err != nil {
		tb.Fatal(err)
	}
	push := mdm.NewPushCerts(secrets, meta, meta)
	profile := func(context.Context) ([]byte, error) {
		p, err := fde.NewFileVaultProfile(fde.FileVaultOptions{Location: "Bench IT", EscrowCertificate: kr.Current(time.Now())})
		if err != nil {
			return nil, err
		}
		return p.XML()
	}
	guarded := mdm.Guard(nano, push)
	enq := mdm.NewNanoEnqueuer(guarded, push, nil, discard)
	capture := mdm.NewCapture(svc, svc, svc, meta, enq, profile)
	ca, _, err := mdm.LoadOrCreateSCEPCA(ctx, secrets, meta, "Bench")
	if err != nil {
		tb.Fatal(err)
	}
	challenge, err := mdm.LoadOrCreateChallenge(ctx, secrets)
	if err != nil {
		tb.Fatal(err)
	}
	emb, err := mdm.NewEmbedded(guarded, capture, enq, meta, ca, challenge, mdm.WithEmbeddedLogger(discard))
	if err != nil {
		tb.Fatal(err)
	}
	// The production router (api.New): its middleware, then the policy
	// table's authentication and authorization (devices are public to it).
	handler, _ := api.New(api.Deps{
		Log: discard, Auth: auth.NewAuthenticator(meta), Local: auth.NewLocalAccounts(meta, meta, secrets, meta),
		Devices: svc, Details: meta, Audit: meta, People: meta, Revealer: svc,
		Approvals: escrow.NewApprovals(meta, escrow.DefaultRevealPolicy(), escrow.ApprovalTiming{}),
		MDM:       emb,
	})
	s := &server{
		issue: func(csr *x509.CertificateRequest) (*x509.Certificate, error) {
			return ca.SignCSR(&scep.CSRReqMessage{CSR: csr})
		},
		// Record, then enqueue: what Capture.send and the enqueue API do,
		// without the background push (no push certificate here).
		enqueue: func(ctx context.Context, id string, cmd fde.Command) error {
			err := meta.RecordCommand(ctx, escrow.Command{UUID: cmd.UUID, Device: escrow.DeviceID(id),
				RequestType: cmd.RequestType, Purpose: mdm.PurposeManual, EnqueuedAt: time.Now()})
			if err != nil {
				return err
			}
			return nanoEnqueue(ctx, guarded, id, cmd)
		},
		recipient: kr.Current(time.Now()),
		meta:      meta,
	}
	s.start(tb, handler)
	return s
}

// start serves h on loopback, with a client that keeps a connection per
// device.
func (s *server) start(tb testing.TB, h http.Handler) {
	ts := httptest.NewServer(h)
	tb.Cleanup(ts.Close)
	s.url = ts.URL + "/mdm"
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	tb.Cleanup(tr.CloseIdleConnections)
	s.client = &http.Client{Transport: tr, Timeout: time.Minute}
}

// send PUTs a signed body to /mdm and returns the response body.
func (s *server) send(ctx context.Context, body []byte, sig string, checkin bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(protocol.MDMSignatureHeader, sig)
	if checkin {
		req.Header.Set("Content-Type", protocol.CheckInMIMEType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// device is one enrolled Mac.
type device struct {
	udid, serial string
	signer       *protocol.Transport // signs with the device identity
	idle         []byte              // the Idle report
	idleSig      string              // its Mdm-Signature, computed once
	cms          []byte              // FDE_PersonalRecoveryKeyCMS, the same blob every time
}

func (d *device) sign(body []byte) (string, error) {
	return d.signer.SignMessage(context.Background(), body)
}

// enroll enrolls len(keys) devices: an identity certificate from the
// server's CA, Authenticate and TokenUpdate, then the commands the server
// queued at enrollment (fvescrow's profile, SecurityInfo and UserList;
// nothing on bare nanomdm) are answered, so every queue starts empty. The
// SecurityInfo answer carries the device's recovery key blob, so fvescrow
// has escrowed it before any measurement.
func (s *server) enroll(tb testing.TB, keys []*rsa.PrivateKey) {
	ctx := context.Background()
	for i, key := range keys {
		// Random UDIDs, as Intel Macs have: nanomdm's diskv storage files a
		// device's queue under the first four characters of its ID, and
		// devices sharing them share a directory.
		d := &device{udid: randomUDID(), serial: fmt.Sprintf("C02BENCH%04d", i)}
		csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench " + d.udid}}, key)
		if err != nil {
			tb.Fatal(err)
		}
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			tb.Fatal(err)
		}
		cert, err := s.issue(csr)
		if err != nil {
			tb.Fatal(err)
		}
		d.signer = protocol.NewTransport(protocol.WithSignMessage(),
			protocol.WithIdentityProvider(func(context.Context) (*x509.Certificate, crypto.PrivateKey, error) { return cert, key, nil }))
		if d.cms, err = encryptPRK(s.recipient); err != nil {
			tb.Fatal(err)
		}
		d.idle = mustPlist(tb, map[string]any{"Status": "Idle", "UDID": d.udid})
		if d.idleSig, err = d.sign(d.idle); err != nil {
			tb.Fatal(err)
		}
		topic := "com.apple.mgmt.External.bench"
		for _, msg := range []map[string]any{
			{"MessageType": "Authenticate", "UDID": d.udid, "Topic": topic, "SerialNumber": d.serial, "DeviceName": d.serial,
				"Model": "Mac14,2", "ModelName": "MacBook Air", "ProductName": "Mac14,2", "OSVersion": "15.1", "BuildVersion": "24B83"},
			{"MessageType": "TokenUpdate", "UDID": d.udid, "Topic": topic, "PushMagic": "push-magic-" + d.udid, "Token": []byte("apns-token-" + d.udid)},
		} {
			body := mustPlist(tb, msg)
			sig, err := d.sign(body)
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := s.send(ctx, body, sig, true); err != nil {
				tb.Fatalf("%s: %v", msg["MessageType"], err)
			}
		}
		s.devices = append(s.devices, d)
		if err := s.drain(ctx, d); err != nil {
			tb.Fatal(err)
		}
	}
}

// drain answers every queued command of d until the server has none.
func (s *server) drain(ctx context.Context, d *device) error {
	body, sig := d.idle, d.idleSig
	for range 20 {
		b, err := s.send(ctx, body, sig, false)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return nil
		}
		var cmd struct {
			CommandUUID string
			Command     struct{ RequestType string }
		}
		if err := plist.Unmarshal(b, &cmd); err != nil {
			return err
		}
		answer := map[string]any{"Status": "Acknowledged"}
		switch cmd.Command.RequestType {
		case fde.RequestSecurityInfo:
			answer = securityInfoAnswer(d, d.cms)
		case fde.RequestUserList:
			answer["Users"] = []any{}
		}
		answer["UDID"], answer["CommandUUID"] = d.udid, cmd.CommandUUID
		if body, err = plist.Marshal(answer); err != nil {
			return err
		}
		if sig, err = d.sign(body); err != nil {
			return err
		}
	}
	return errors.New("drain: the queue does not empty")
}

// op is one prepared round trip: everything the device sends is built and
// signed before the timer starts.
type op struct {
	dev    *device
	cmd    fde.Command
	result []byte // the device's answer
	sig    string // its Mdm-Signature
}

// roundTrip enqueues the command, reports Idle and expects the command,
// then reports the answer and expects nothing more.
func (s *server) roundTrip(ctx context.Context, o *op) error {
	if err := s.enqueue(ctx, o.dev.udid, o.cmd); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	b, err := s.send(ctx, o.dev.idle, o.dev.idleSig, false)
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	if !bytes.Contains(b, []byte(o.cmd.UUID)) {
		return fmt.Errorf("idle: got %.200q, want command %s", b, o.cmd.UUID)
	}
	if b, err = s.send(ctx, o.result, o.sig, false); err != nil {
		return fmt.Errorf("%s result: %w", o.cmd.RequestType, err)
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return fmt.Errorf("%s result: got another command: %.200q", o.cmd.RequestType, b)
	}
	return nil
}

// workload is the command a round trip carries and the device's answer.
type workload struct {
	name    string
	command func() (fde.Command, error)
	answer  func(s *server, d *device) (map[string]any, error)
}

var workloads = []workload{
	{
		name:    "ProfileList",
		command: func() (fde.Command, error) { return fde.NewProfileList(false) },
		answer: func(*server, *device) (map[string]any, error) {
			return map[string]any{"Status": "Acknowledged", "ProfileList": []any{map[string]any{
				"PayloadIdentifier": "com.example.wifi", "PayloadUUID": "5A1C3E4F-0000-4000-8000-000000000001", "IsManaged": true,
				"PayloadContent": []any{map[string]any{"PayloadType": "com.apple.wifi.managed"}},
			}}}, nil
		},
	},
	{
		name:    "SecurityInfo",
		command: func() (fde.Command, error) { return fde.NewSecurityInfo() },
		answer:  func(_ *server, d *device) (map[string]any, error) { return securityInfoAnswer(d, d.cms), nil },
	},
	{
		name:    "SecurityInfoNewKey",
		command: func() (fde.Command, error) { return fde.NewSecurityInfo() },
		answer: func(s *server, d *device) (map[string]any, error) {
			cms, err := encryptPRK(s.recipient)
			return securityInfoAnswer(d, cms), err
		},
	},
}

func securityInfoAnswer(d *device, cms []byte) map[string]any {
	return map[string]any{"Status": "Acknowledged", "SecurityInfo": map[string]any{
		"FDE_Enabled": true, "FDE_HasPersonalRecoveryKey": true, "FDE_HasInstitutionalRecoveryKey": false,
		"FDE_PersonalRecoveryKeyCMS": cms, "FDE_PersonalRecoveryKeyDeviceKey": d.serial,
		"ManagementStatus":                       map[string]any{"EnrolledViaDEP": false, "UserApprovedEnrollment": true, "IsUserEnrollment": false},
		"BootstrapTokenAllowedForAuthentication": "allowed", "SystemIntegrityProtectionEnabled": true,
	}}
}

// prepare builds n round trips over the server's devices in turn, signing
// on every CPU.
func prepare(tb testing.TB, s *server, w workload, n int) []op {
	ops := make([]op, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	workers := runtime.GOMAXPROCS(0)
	for g := range workers {
		wg.Go(func() {
			for i := g; i < n; i += workers {
				o := &ops[i]
				o.dev = s.devices[i%len(s.devices)]
				var answer map[string]any
				var err error
				if o.cmd, err = w.command(); err == nil {
					answer, err = w.answer(s, o.dev)
				}
				if err == nil {
					answer["UDID"], answer["CommandUUID"] = o.dev.udid, o.cmd.UUID
					if o.result, err = plist.Marshal(answer); err == nil {
						o.sig, err = o.dev.sign(o.result)
					}
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		tb.Fatal(firstErr)
	}
	return ops
}

// deviceKeys returns n 2048-bit RSA keys (the size fvescrow's SCEP CA
// requires and Macs use), generated once per process and shared by both
// servers.
func deviceKeys(n int) []*rsa.PrivateKey {
	keyCache.mu.Lock()
	defer keyCache.mu.Unlock()
	missing := n - len(keyCache.keys)
	if missing > 0 {
		fresh := make([]*rsa.PrivateKey, missing)
		var wg sync.WaitGroup
		for i := range fresh {
			wg.Go(func() {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					panic(err) // crypto/rand does not fail
				}
				fresh[i] = k
			})
		}
		wg.Wait()
		keyCache.keys = append(keyCache.keys, fresh...)
	}
	return keyCache.keys[:n]
}

var keyCache struct {
	mu   sync.Mutex
	keys []*rsa.PrivateKey
}

// selfSignedCA makes bare nanomdm's device CA.
func selfSignedCA(tb testing.TB, key *rsa.PrivateKey) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench device CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// issueDeviceCert issues what mdm.SCEPCA.SignCSR issues: a client
// authentication certificate for the CSR's key.
func issueDeviceCert(ca *x509.Certificate, caKey *rsa.PrivateKey, csr *x509.CertificateRequest) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func mustPlist(tb testing.TB, v any) []byte {
	b, err := plist.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

var cmsOnce sync.Once

// encryptPRK makes an FDE_PersonalRecoveryKeyCMS of a new recovery key for
// cert, in Go (AES-256-CBC, RSA PKCS#1 v1.5) as cmstest.Encrypt does, but
// safe to call from several goroutines.
func encryptPRK(cert *x509.Certificate) ([]byte, error) {
	cmsOnce.Do(func() { pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC })
	return pkcs7.Encrypt([]byte(randomPRK()), []*x509.Certificate{cert})
}

func randomUDID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

// randomPRK makes a personal recovery key in Apple's format.
func randomPRK() string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	out := make([]byte, 0, 29)
	for i, c := range b {
		if i > 0 && i%4 == 0 {
			out = append(out, '-')
		}
		out = append(out, alphabet[int(c)%len(alphabet)])
	}
	return string(out)
}
