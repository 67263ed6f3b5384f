package escrow_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/escrow/vaultstore"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

var ctx = context.Background()

const (
	prk1 = "ABCD-EFGH-JKLM-NPQR-STUV-WXY2"
	prk2 = "ZZZZ-YYYY-XXXX-WWWW-VVVV-2345"
)

// env is a Service on one pair of real backends.
type env struct {
	svc     *escrow.Service
	meta    escrow.MetaStore
	secrets escrow.SecretStore
	id      *fde.Identity
	logs    *bytes.Buffer
}

// backends are the two storage modes: the embedded default and production.
var backends = []struct {
	name string
	open func(t testing.TB) (escrow.SecretStore, escrow.MetaStore)
}{
	{"embedded", openEmbedded},
	{"vault+postgres", openProduction},
}

func openEmbedded(t testing.TB) (escrow.SecretStore, escrow.MetaStore) {
	dir := t.TempDir()
	id, _, err := agestore.LoadOrCreateIdentity(filepath.Join(dir, "age.key"))
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := agestore.New(filepath.Join(dir, "secrets"), id)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "fvescrow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return secrets, meta
}

func openProduction(t testing.TB) (escrow.SecretStore, escrow.MetaStore) {
	v := vaulttest.StartDev(t)
	return openVault(t, v), openPostgres(t)
}

func openVault(t testing.TB, v *vaulttest.Server) escrow.SecretStore {
	policy, err := os.ReadFile("../deploy/vault/fvescrow-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(v.PolicyToken(t, string(policy))), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := vaultstore.New(ctx, vaultstore.Config{Address: v.Addr, Auth: vaultstore.Auth{TokenFile: tokenFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t testing.TB) escrow.MetaStore {
	meta, err := sqlstore.OpenPostgres(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return meta
}

var (
	idOnce sync.Once
	idVal  [2]*fde.Identity
)

func identities(t testing.TB) (*fde.Identity, *fde.Identity) {
	idOnce.Do(func() {
		for i := range idVal {
			id, err := fde.NewIdentity(fde.IdentityOptions{CommonName: fmt.Sprint("escrow test ", i)})
			if err != nil {
				panic(err)
			}
			idVal[i] = id
		}
	})
	return idVal[0], idVal[1]
}

func newEnv(t testing.TB, secrets escrow.SecretStore, meta escrow.MetaStore, opts ...escrow.Option) *env {
	t.Helper()
	id, _ := identities(t)
	if err := escrow.StoreEscrowIdentity(ctx, meta, secrets, *id, time.Now()); err != nil {
		t.Fatal(err)
	}
	kr, err := escrow.LoadKeyring(ctx, meta, secrets)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]escrow.Option{escrow.WithLogger(logger), escrow.WithOutboxTiming(time.Minute, time.Millisecond)}, opts...)
	return &env{svc: escrow.New(secrets, meta, kr, opts...), meta: meta, secrets: secrets, id: id, logs: &logs}
}

func forEachBackend(t *testing.T, f func(t *testing.T, e *env)) {
	forEachBackendWith(t, nil, f)
}

// forEachBackendWith is forEachBackend with Service options.
func forEachBackendWith(t *testing.T, opts []escrow.Option, f func(t *testing.T, e *env)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			secrets, meta := b.open(t)
			e := newEnv(t, secrets, meta, opts...)
			f(t, e)
			// No log line ever carries a key.
			for _, k := range []string{prk1, prk2} {
				if strings.Contains(e.logs.String(), k) {
					t.Errorf("a recovery key reached the log:\n%s", e.logs)
				}
			}
		})
	}
}

func macCMS(t *testing.T, cert *x509.Certificate, key string) []byte {
	return cmstest.OpenSSLEncrypt(t, cert, []byte(key), cmstest.OpenSSLOptions{Cipher: "des3"})
}

var dev = escrow.Device{ID: "564D9E39-1A2B-4C3D-8E9F-0A1B2C3D4E5F", Serial: "C02XK0AAJGH5"}

func alice() escrow.Actor {
	return escrow.Actor{Kind: escrow.ActorUser, ID: "alice@example.com", Name: "Alice"}
}

func reveal(t *testing.T, e *env) escrow.Revealed {
	t.Helper()
	r, err := e.svc.Reveal(ctx, escrow.RevealRequest{Actor: alice(), Device: dev.ID, Reason: "user forgot password at login", Ticket: "IT-1234"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestIngestLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		blob := macCMS(t, e.id.Certificate, prk1)
		r, err := e.svc.Ingest(ctx, dev, blob, escrow.SourceSecurityInfo)
		if err != nil || !r.New || r.Version.Seq != 1 || !r.Version.Current() {
			t.Fatalf("first ingest %+v %v", r, err)
		}
		// The escrow is in the audit log, by the device, naming the blob.
		escrowedRecords := func() []escrow.AuditRecord {
			t.Helper()
			recs, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{Device: dev.ID, Action: escrow.ActionKeyEscrowed})
			if err != nil {
				t.Fatal(err)
			}
			return recs
		}
		if recs := escrowedRecords(); len(recs) != 1 || recs[0].Actor.Kind != escrow.ActorDevice || recs[0].Actor.ID != string(dev.ID) ||
			recs[0].Detail["cms_sha256"] != r.Version.CMSSHA256 || recs[0].Detail["secret_version"] != "1" ||
			recs[0].Detail["source"] != string(escrow.SourceSecurityInfo) {
			t.Fatalf("audit of the first ingest: %+v", recs)
		}
		if got := reveal(t, e); got.Key.Expose() != prk1 {
			t.Fatal("revealed a different key")
		}

		// The same blob again (a retried SecurityInfo): no new version.
		r, err = e.svc.Ingest(ctx, dev, blob, escrow.SourceSecurityInfo)
		if err != nil || r.New || r.Version.Seq != 1 {
			t.Fatalf("retry %+v %v", r, err)
		}
		// Receive (the MDM door's step before it acknowledges) keeps no
		// outbox item for a blob already recorded: it is safe at rest.
		it, err := e.svc.Receive(ctx, dev, blob, escrow.SourceSecurityInfo)
		if err != nil || it.ID != 0 {
			t.Fatalf("receive of a recorded blob: item %d, %v", it.ID, err)
		}
		if ob, err := e.meta.OutboxStats(ctx); err != nil || ob.Pending != 0 {
			t.Fatalf("outbox after a recorded blob: %+v %v", ob, err)
		}
		if r, err = e.svc.EscrowReceived(ctx, dev, it); err != nil || r.New || r.Version.Seq != 1 {
			t.Fatalf("escrow of a recorded blob %+v %v", r, err)
		}
		if recs := escrowedRecords(); len(recs) != 1 {
			t.Fatalf("a repeated blob was audited as a new escrow: %d records", len(recs))
		}
		// A different blob of the same key: same version, now verified.
		r, err = e.svc.Ingest(ctx, dev, cmstest.Encrypt(t, e.id.Certificate, []byte(prk1)), escrow.SourceSecurityInfo)
		if err != nil || r.New || r.Version.Seq != 1 || r.Version.VerifiedAt.IsZero() {
			t.Fatalf("same key in a new blob %+v %v", r, err)
		}
		// A new key supersedes the old one, which is kept.
		r, err = e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk2), escrow.SourceRotation)
		if err != nil || !r.New || r.Version.Seq != 2 || r.Version.SecretVersion != 2 {
			t.Fatalf("new key %+v %v", r, err)
		}
		vs, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		if err != nil || len(vs) != 2 || vs[0].SupersededAt.IsZero() || vs[0].DisclosedAt.IsZero() || !vs[1].Current() {
			t.Fatalf("versions %+v %v", vs, err)
		}
		old, _, err := e.secrets.Get(ctx, escrow.SecretRef{Kind: escrow.KindPRK, Owner: string(dev.ID)}, vs[0].SecretVersion)
		if err != nil || string(old) != prk1 {
			t.Fatalf("superseded key not kept: %v", err)
		}
		if got := reveal(t, e); got.Key.Expose() != prk2 || got.Version.Seq != 2 {
			t.Fatal("reveal did not return the current key")
		}
		d, err := e.svc.Device(ctx, dev.ID)
		if err != nil || d.Serial != dev.Serial {
			t.Fatalf("device %+v %v", d, err)
		}
	})
}

func TestUndecryptableIsKept(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		_, stranger := identities(t)
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		r, err := e.svc.Ingest(ctx, dev, macCMS(t, stranger.Certificate, prk2), escrow.SourceSecurityInfo)
		if !errors.Is(err, escrow.ErrUndecryptable) {
			t.Fatalf("got %v, want ErrUndecryptable", err)
		}
		serial := fde.SerialString(stranger.Certificate.SerialNumber)
		if !strings.Contains(err.Error(), serial) || !strings.Contains(r.Version.Error, serial) {
			t.Errorf("the error does not name the recipient serial %s: %v", serial, err)
		}
		if r.Version.Status != escrow.StatusUndecryptable || r.Version.Current() {
			t.Errorf("version %+v", r.Version)
		}
		if got := reveal(t, e); got.Key.Expose() != prk1 {
			t.Error("an undecryptable blob replaced the current key")
		}
		recs, _ := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyUndecryptable})
		if len(recs) != 1 || !strings.Contains(recs[0].Detail["error"], serial) {
			t.Errorf("audit %+v", recs)
		}
		if st, _ := e.svc.OutboxStats(ctx); st.Pending != 0 {
			t.Errorf("outbox pending %d: the blob is kept as a version, not left in the outbox", st.Pending)
		}
	})
}

func TestRevealRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		req := escrow.RevealRequest{Actor: alice(), Device: dev.ID, Reason: "user forgot password at login", Ticket: "IT-1234"}
		if _, err := e.svc.Reveal(ctx, req); !errors.Is(err, escrow.ErrNotFound) {
			t.Fatalf("no key yet: %v", err)
		}
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		bad := []escrow.RevealRequest{
			{Actor: alice(), Device: dev.ID, Reason: "short", Ticket: "IT-1"},
			{Actor: alice(), Device: dev.ID, Reason: "a long enough reason", Ticket: ""},
			{Actor: alice(), Device: dev.ID, Reason: "a long enough reason", Ticket: "not a ticket!"},
			{Device: dev.ID, Reason: "a long enough reason", Ticket: "IT-1"},
			{Actor: alice(), Device: "../etc", Reason: "a long enough reason", Ticket: "IT-1"},
		}
		for _, b := range bad {
			if _, err := e.svc.Reveal(ctx, b); !errors.Is(err, escrow.ErrInvalid) {
				t.Errorf("%+v: %v, want ErrInvalid", b, err)
			}
		}
		if recs, _ := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed}); len(recs) != 0 {
			t.Fatalf("refused reveals were audited as reveals: %d", len(recs))
		}
		got, err := e.svc.Reveal(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		// The audit record is durable by the time the key is returned.
		recs, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed})
		if err != nil || len(recs) != 1 || recs[0].Seq != got.Audit.Seq {
			t.Fatalf("audit %+v %v", recs, err)
		}
		if r := recs[0]; r.Reason != req.Reason || r.Ticket != req.Ticket || r.Actor.ID != req.Actor.ID || r.Device != dev.ID {
			t.Errorf("audit record %+v", r)
		}
		if got.Version.DisclosedAt.IsZero() {
			t.Error("version not marked disclosed")
		}
		if strings.Contains(fmt.Sprintf("%v %+v", got, got), prk1) {
			t.Error("Revealed prints the key")
		}
	})
}

// TestConcurrentIngest: the same blob from several goroutines makes exactly
// one version, in the metadata and in the secret store.
func TestConcurrentIngest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		blob := macCMS(t, e.id.Certificate, prk1)
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.svc.Ingest(ctx, dev, blob, escrow.SourceSecurityInfo); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		vs, _ := e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		_, sv, err := e.secrets.Get(ctx, escrow.SecretRef{Kind: escrow.KindPRK, Owner: string(dev.ID)}, 0)
		if len(vs) != 1 || err != nil || sv != 1 {
			t.Fatalf("%d versions in metadata, latest secret version %d (%v); want exactly one", len(vs), sv, err)
		}
		// Two different keys at once: two versions, none lost.
		wg.Add(2)
		for _, k := range []string{prk2, "QQQQ-RRRR-SSSS-TTTT-UUUU-2222"} {
			go func() {
				defer wg.Done()
				if _, err := e.svc.Ingest(ctx, dev, cmstest.Encrypt(t, e.id.Certificate, []byte(k)), escrow.SourceRotation); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		vs, _ = e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		_, sv, _ = e.secrets.Get(ctx, escrow.SecretRef{Kind: escrow.KindPRK, Owner: string(dev.ID)}, 0)
		if len(vs) != 3 || sv != 3 {
			t.Fatalf("%d versions, secret version %d; want 3 and 3", len(vs), sv)
		}
	})
}

// TestCrashAfterSecretWrite: a process that wrote the secret but died before
// recording it leaves the blob in the outbox; the retry adopts the stored
// version instead of writing a second one.
func TestCrashAfterSecretWrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: string(dev.ID)}
		if _, err := e.secrets.Put(ctx, ref, []byte(prk1), 0, nil); err != nil {
			t.Fatal(err)
		}
		r, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo)
		if err != nil || !r.New || r.Version.SecretVersion != 1 {
			t.Fatalf("%+v %v", r, err)
		}
		if _, sv, _ := e.secrets.Get(ctx, ref, 0); sv != 1 {
			t.Fatalf("secret version %d, want 1", sv)
		}
	})
}

func TestTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		tok := []byte{0x00, 0x01, 0xfe, 0xff, 'b', 't'}
		r, err := e.svc.PutToken(ctx, dev, escrow.KindBootstrapToken, tok, escrow.SourceCheckin)
		if err != nil || !r.New {
			t.Fatalf("%+v %v", r, err)
		}
		if r, err = e.svc.PutToken(ctx, dev, escrow.KindBootstrapToken, tok, escrow.SourceCheckin); err != nil || r.New {
			t.Fatalf("same token again %+v %v", r, err)
		}
		got, err := e.svc.Token(ctx, escrow.Actor{Kind: escrow.ActorDevice, ID: string(dev.ID)}, dev.ID, escrow.KindBootstrapToken)
		if err != nil || !bytes.Equal(got, tok) {
			t.Fatalf("token %v", err)
		}
		if recs, _ := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionTokenServed}); len(recs) != 1 {
			t.Errorf("serving a token was not audited")
		}
		if _, err := e.svc.Token(ctx, escrow.System, dev.ID, escrow.KindUnlockToken); !errors.Is(err, escrow.ErrNotFound) {
			t.Errorf("missing unlock token: %v", err)
		}
		if _, err := e.svc.PutToken(ctx, dev, escrow.KindPRK, tok, escrow.SourceCheckin); !errors.Is(err, escrow.ErrInvalid) {
			t.Errorf("PRK through PutToken: %v", err)
		}
	})
}

// TestEscrowIdentities: identities persist across restarts, and a renewed
// certificate joins the keyring.
func TestEscrowIdentities(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		renewed, err := fde.RenewCertificate(e.id.Certificate, e.id.Key, fde.IdentityOptions{})
		if err != nil {
			t.Fatal(err)
		}
		oldBlob := macCMS(t, e.id.Certificate, prk1)
		newBlob := macCMS(t, renewed, prk2)
		if _, err := e.svc.Ingest(ctx, dev, newBlob, escrow.SourceSecurityInfo); !errors.Is(err, escrow.ErrUndecryptable) {
			t.Fatalf("blob for a certificate not yet in the keyring: %v", err)
		}
		if err := e.svc.AddEscrowIdentity(ctx, alice(), fde.Identity{Certificate: renewed, Key: e.id.Key}); err != nil {
			t.Fatal(err)
		}
		// A restarted server loads both certificates.
		kr, err := escrow.LoadKeyring(ctx, e.meta, e.secrets)
		if err != nil || kr.Len() != 2 {
			t.Fatalf("keyring after restart: %d %v", kr.Len(), err)
		}
		svc2 := escrow.New(e.secrets, e.meta, kr)
		other := escrow.Device{ID: "OTHER-1", Serial: "S2"}
		for _, b := range [][]byte{oldBlob, cmstest.Encrypt(t, renewed, []byte(prk2))} {
			if _, err := svc2.Ingest(ctx, other, b, escrow.SourceSecurityInfo); err != nil {
				t.Errorf("ingest after restart: %v", err)
			}
		}
		info, created, err := escrow.EnsureEscrowIdentity(ctx, e.meta, e.secrets, fde.IdentityOptions{})
		if err != nil || created || info.Fingerprint == "" {
			t.Fatalf("ensure with identities present: created=%v %v", created, err)
		}
		if recs, _ := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionEscrowCertAdded}); len(recs) != 1 {
			t.Error("adding an escrow identity was not audited")
		}
	})
}

func TestAuditCheckpointsAndVerify(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		pub, err := e.svc.EnsureAuditKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		reveal(t, e)
		c, wrote, err := e.svc.Checkpoint(ctx)
		if err != nil || !wrote || c.Seq != 2 {
			t.Fatalf("checkpoint %+v %v %v", c, wrote, err)
		}
		if _, wrote, _ := e.svc.Checkpoint(ctx); wrote {
			t.Error("a checkpoint without new records")
		}
		reveal(t, e)
		// A restarted service signs with the same key.
		kr, _ := escrow.LoadKeyring(ctx, e.meta, e.secrets)
		svc2 := escrow.New(e.secrets, e.meta, kr)
		pub2, err := svc2.EnsureAuditKey(ctx)
		if err != nil || !pub2.Equal(pub) {
			t.Fatalf("audit key changed across restarts: %v", err)
		}
		if _, wrote, err := svc2.Checkpoint(ctx); err != nil || !wrote {
			t.Fatalf("second checkpoint: %v", err)
		}
		stored, _ := svc2.AuditPublicKey(ctx)
		rep, err := escrow.VerifyAudit(ctx, e.meta, stored)
		if err != nil || rep.Broken != nil || rep.Records != 3 || rep.Checkpoints != 2 {
			t.Fatalf("verify %+v %v", rep, err)
		}
		wrong, _, _ := ed25519.GenerateKey(nil)
		if rep, _ := escrow.VerifyAudit(ctx, e.meta, wrong); rep.Broken == nil || !strings.Contains(rep.Broken.Reason, "signature") {
			t.Errorf("verify with another key: %+v", rep)
		}
	})
}

func TestExport(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		var recs []escrow.ExportRecord
		n, err := e.svc.Export(ctx, alice(), []string{"age1example"}, func(r escrow.ExportRecord) error {
			// The export is audited before the first record leaves.
			if audit, _ := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionExportCreated}); len(audit) != 1 {
				t.Error("record emitted before the export was audited")
			}
			recs = append(recs, r)
			return nil
		})
		if err != nil || n != 2 || len(recs) != 2 {
			t.Fatalf("export %d %v", n, err)
		}
		if recs[0].Kind != escrow.KindEscrowKey || !strings.Contains(recs[0].Data, "PRIVATE KEY") || !strings.Contains(recs[0].Data, "CERTIFICATE") {
			t.Errorf("escrow key record %s", recs[0])
		}
		if recs[1].Kind != escrow.KindPRK || recs[1].Data != prk1 || recs[1].Serial != dev.Serial {
			t.Errorf("PRK record %s", recs[1])
		}
		if strings.Contains(fmt.Sprint(recs), prk1) {
			t.Error("ExportRecord prints its data")
		}
	})
}

// TestVaultDownDuringIngest: with the secret store down, a blob waits in the
// outbox, visibly; when Vault returns, the drainer escrows it.
func TestVaultDownDuringIngest(t *testing.T) {
	v := vaulttest.StartPersistent(t)
	secrets := openVault(t, v)
	e := newEnv(t, secrets, openPostgres(t))
	if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
		t.Fatal(err)
	}
	v.Stop()
	other := escrow.Device{ID: "DOWN-1", Serial: "SDOWN"}
	r, err := e.svc.Ingest(ctx, other, macCMS(t, e.id.Certificate, prk2), escrow.SourceSecurityInfo)
	if !errors.Is(err, escrow.ErrUnavailable) || !r.Pending {
		t.Fatalf("ingest with Vault down: %+v %v", r, err)
	}
	st, err := e.svc.OutboxStats(ctx)
	if err != nil || st.Pending != 1 || st.LastError == "" {
		t.Fatalf("outbox status %+v %v", st, err)
	}
	if n, err := e.svc.DrainOutbox(ctx); n != 0 || !errors.Is(err, escrow.ErrUnavailable) {
		t.Fatalf("drain while down: %d %v", n, err)
	}
	v.Start()
	time.Sleep(5 * time.Millisecond) // past the retry backoff set by newEnv
	if n, err := e.svc.DrainOutbox(ctx); n != 1 || err != nil {
		t.Fatalf("drain after restart: %d %v", n, err)
	}
	if st, _ := e.svc.OutboxStats(ctx); st.Pending != 0 {
		t.Fatalf("still pending %+v", st)
	}
	got, err := e.svc.Reveal(ctx, escrow.RevealRequest{Actor: alice(), Device: other.ID, Reason: "user forgot password at login", Ticket: "IT-9"})
	if err != nil || got.Key.Expose() != prk2 {
		t.Fatalf("key after drain: %v", err)
	}
	if strings.Contains(e.logs.String(), prk2) {
		t.Error("key in logs")
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline. It asserts no timing: only that the state is reached.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// outageBackends are the two storage modes, each with a real way to take its
// secret store down and bring it back.
var outageBackends = []struct {
	name string
	open func(t *testing.T) (secrets escrow.SecretStore, meta escrow.MetaStore, down, up func())
}{
	{"embedded", openEmbeddedOutage},
	{"vault+postgres", openProductionOutage},
}

// openEmbeddedOutage is openEmbedded whose secrets folder can go away, as an
// unmounted volume does: the folder is moved aside and a plain file left in
// its place, so every read and write under it fails with ENOTDIR. (A
// read-only mode would not stop a test running as root.)
func openEmbeddedOutage(t *testing.T) (escrow.SecretStore, escrow.MetaStore, func(), func()) {
	dir := t.TempDir()
	id, _, err := agestore.LoadOrCreateIdentity(filepath.Join(dir, "age.key"))
	if err != nil {
		t.Fatal(err)
	}
	secretsDir := filepath.Join(dir, "secrets")
	secrets, err := agestore.New(secretsDir, id)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "fvescrow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	offline := secretsDir + ".offline"
	down := func() {
		if err := os.Rename(secretsDir, offline); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(secretsDir, []byte("volume not mounted\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	up := func() {
		if err := os.Remove(secretsDir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(offline, secretsDir); err != nil {
			t.Fatal(err)
		}
	}
	return secrets, meta, down, up
}

// openProductionOutage: a Vault process that is stopped and restarted (with
// its storage kept), and PostgreSQL.
func openProductionOutage(t *testing.T) (escrow.SecretStore, escrow.MetaStore, func(), func()) {
	v := vaulttest.StartPersistent(t)
	return openVault(t, v), openPostgres(t), v.Stop, v.Start
}

// outboxAttempts reads an outbox item's attempt count straight from the
// database; the item must be there.
func outboxAttempts(t *testing.T, s *sqlstore.Store, id escrow.DeviceID) int {
	t.Helper()
	var n int
	err := s.DB().QueryRowContext(ctx, s.Dialect().Rebind(`SELECT attempts FROM outbox WHERE device = ?`), id).Scan(&n)
	if err != nil {
		t.Fatalf("outbox item of %s: %v", id, err)
	}
	return n
}

// TestOutboxRetryLoop: with the secret store down, an ingested blob waits in
// the outbox; RunOutbox keeps retrying it without losing it, and once the
// store is back the loop escrows it and empties the outbox. The loop ends
// with its context.
func TestOutboxRetryLoop(t *testing.T) {
	for _, b := range outageBackends {
		t.Run(b.name, func(t *testing.T) {
			secrets, meta, down, up := b.open(t)
			e := newEnv(t, secrets, meta)
			store := meta.(*sqlstore.Store)
			if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
				t.Fatal(err)
			}

			down()
			other := escrow.Device{ID: "DOWN-1", Serial: "SDOWN"}
			r, err := e.svc.Ingest(ctx, other, macCMS(t, e.id.Certificate, prk2), escrow.SourceSecurityInfo)
			if !errors.Is(err, escrow.ErrUnavailable) || !r.Pending {
				t.Fatalf("ingest with the secret store down: %+v %v", r, err)
			}
			if st, err := e.svc.OutboxStats(ctx); err != nil || st.Pending != 1 || st.LastError == "" {
				t.Fatalf("outbox status %+v %v", st, err)
			}

			loopCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				e.svc.RunOutbox(loopCtx, 5*time.Millisecond)
			}()
			stopped := func() bool {
				stop()
				select {
				case <-done:
					return true
				case <-time.After(60 * time.Second):
					return false
				}
			}
			defer stopped() // also when a check below fails

			// The loop retries while the store is down, and keeps the blob.
			first := outboxAttempts(t, store, other.ID)
			waitFor(t, "the loop to retry while the store is down", func() bool {
				return outboxAttempts(t, store, other.ID) >= first+2
			})
			if st, err := e.svc.OutboxStats(ctx); err != nil || st.Pending != 1 || st.LastError == "" {
				t.Fatalf("outbox status while down: %+v %v", st, err)
			}
			if vs, err := e.svc.KeyVersions(ctx, other.ID, escrow.KindPRK); err != nil || len(vs) != 0 {
				t.Fatalf("a version recorded while the store was down: %+v %v", vs, err)
			}

			up()
			waitFor(t, "the loop to drain the outbox", func() bool {
				st, err := e.svc.OutboxStats(ctx)
				return err == nil && st.Pending == 0
			})
			if !stopped() {
				t.Fatal("RunOutbox did not return after its context ended")
			}

			vs, err := e.svc.KeyVersions(ctx, other.ID, escrow.KindPRK)
			if err != nil || len(vs) != 1 || !vs[0].Current() || vs[0].Seq != 1 || vs[0].SecretVersion != 1 || vs[0].Source != escrow.SourceSecurityInfo {
				t.Fatalf("versions after the drain %+v %v", vs, err)
			}
			got, sv, err := e.secrets.Get(ctx, escrow.SecretRef{Kind: escrow.KindPRK, Owner: string(other.ID)}, 0)
			if err != nil || sv != 1 || string(got) != prk2 {
				t.Fatalf("secret after the drain: version %d, %v", sv, err)
			}
			if recs, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{Device: other.ID, Action: escrow.ActionKeyEscrowed}); err != nil || len(recs) != 1 {
				t.Fatalf("audit of the drained escrow %+v %v", recs, err)
			}
			if d, err := e.svc.Device(ctx, other.ID); err != nil || d.Serial != other.Serial {
				t.Fatalf("device after the drain %+v %v", d, err)
			}
			if strings.Contains(e.logs.String(), prk2) {
				t.Error("a recovery key reached the log")
			}
		})
	}
}

// failAuditInserts makes the real database refuse every new audit row, as a
// full disk or a broken replica would, and returns what undoes it.
func failAuditInserts(t *testing.T, s *sqlstore.Store) (restore func()) {
	t.Helper()
	var create, drop []string
	switch s.Dialect() {
	case sqlstore.SQLite:
		create = []string{`CREATE TRIGGER audit_refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit storage failure'); END`}
		drop = []string{`DROP TRIGGER audit_refuse`}
	case sqlstore.Postgres:
		create = []string{
			`CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit storage failure'; END $$`,
			`CREATE TRIGGER audit_refuse BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_refuse()`,
		}
		drop = []string{`DROP TRIGGER audit_refuse ON audit`, `DROP FUNCTION audit_refuse()`}
	default:
		t.Fatalf("dialect %v", s.Dialect())
	}
	run := func(qs []string) {
		for _, q := range qs {
			if _, err := s.DB().ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	run(create)
	return func() { run(drop) }
}

// TestRevealRefusedWhenAuditFails: no key leaves Reveal unless its audit
// record is durably written, and a failed audit write marks nothing
// disclosed.
func TestRevealRefusedWhenAuditFails(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		before, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{})
		if err != nil {
			t.Fatal(err)
		}
		restore := failAuditInserts(t, e.meta.(*sqlstore.Store))
		req := escrow.RevealRequest{Actor: alice(), Device: dev.ID, Reason: "user forgot password at login", Ticket: "IT-1234"}
		got, err := e.svc.Reveal(ctx, req)
		if err == nil || !strings.Contains(err.Error(), "audit storage failure") {
			t.Fatalf("reveal with the audit log failing: %v, want the audit failure", err)
		}
		if !reflect.ValueOf(got).IsZero() || got.Key.Expose() != "" {
			t.Fatalf("a refused reveal returned something: version %+v", got.Version)
		}
		vs, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		if err != nil || len(vs) != 1 || !vs[0].DisclosedAt.IsZero() {
			t.Fatalf("version marked disclosed without an audit record: %+v %v", vs, err)
		}
		after, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{})
		if err != nil || len(after) != len(before) {
			t.Fatalf("audit records %d before, %d after (%v)", len(before), len(after), err)
		}

		// The same request succeeds once the audit log takes writes again.
		restore()
		got = reveal(t, e)
		if got.Key.Expose() != prk1 || got.Version.DisclosedAt.IsZero() || got.Audit.Seq != int64(len(before)+1) {
			t.Fatalf("reveal after the audit log recovered: version %+v, audit seq %d", got.Version, got.Audit.Seq)
		}
	})
}

// TestCustomRevealPolicy: the reason and ticket rules are the configured
// ones, not the defaults, and a refused request discloses nothing.
func TestCustomRevealPolicy(t *testing.T) {
	policy := escrow.RevealPolicy{MinReasonLength: 30, MaxReasonLength: 80, TicketPattern: regexp.MustCompile(`^INC[0-9]{6}$`)}
	forEachBackendWith(t, []escrow.Option{escrow.WithRevealPolicy(policy)}, func(t *testing.T, e *env) {
		if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, prk1), escrow.SourceSecurityInfo); err != nil {
			t.Fatal(err)
		}
		longReason := "locked out after a password reset at the service desk" // 53 characters
		defaults := escrow.DefaultRevealPolicy()
		bad := []struct {
			name        string
			reason      string
			ticket      string
			defaultOK   bool // the default rules would accept it
			errContains string
		}{
			{"reason the default accepts", "user forgot password at login", "INC123456", true, "at least 30"},
			{"ticket the default accepts", longReason, "IT-1234", true, "^INC[0-9]{6}$"},
			{"ticket INC with five digits", longReason, "INC12345", true, "^INC[0-9]{6}$"},
			{"ticket INC with seven digits", longReason, "INC1234567", true, "^INC[0-9]{6}$"},
			{"ticket with a prefix", longReason, "XINC123456", true, "^INC[0-9]{6}$"},
			{"lower-case ticket", longReason, "inc123456", true, "^INC[0-9]{6}$"},
			{"reason too long", strings.Repeat("x", 81), "INC123456", true, "at most 80"},
			{"no ticket", longReason, "", false, "ticket ID is required"},
		}
		for _, b := range bad {
			r := escrow.RevealRequest{Actor: alice(), Device: dev.ID, Reason: b.reason, Ticket: b.ticket}
			if err := defaults.Validate(r); (err == nil) != b.defaultOK {
				t.Fatalf("%s: the default policy says %v", b.name, err)
			}
			got, err := e.svc.Reveal(ctx, r)
			if !errors.Is(err, escrow.ErrInvalid) || !strings.Contains(err.Error(), b.errContains) {
				t.Errorf("%s: %v, want ErrInvalid naming %q", b.name, err, b.errContains)
			}
			if got.Key.Expose() != "" {
				t.Errorf("%s: a refused reveal returned a key", b.name)
			}
		}
		// Nothing was disclosed or audited as a reveal.
		vs, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		if err != nil || len(vs) != 1 || !vs[0].DisclosedAt.IsZero() {
			t.Fatalf("refused reveals disclosed the version: %+v %v", vs, err)
		}
		if recs, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed}); err != nil || len(recs) != 0 {
			t.Fatalf("refused reveals were audited as reveals: %d %v", len(recs), err)
		}

		// Exactly at the bounds, with surrounding space trimmed: accepted.
		for i, reason := range []string{strings.Repeat("r", 30), "  " + strings.Repeat("é", 80) + " "} {
			ticket := fmt.Sprintf("INC%06d", 123456+i)
			got, err := e.svc.Reveal(ctx, escrow.RevealRequest{Actor: alice(), Device: dev.ID, Reason: reason, Ticket: " " + ticket})
			if err != nil || got.Key.Expose() != prk1 || got.Version.DisclosedAt.IsZero() {
				t.Fatalf("accepted request %d: %v", i, err)
			}
			if got.Audit.Ticket != ticket || got.Audit.Reason != strings.TrimSpace(reason) || got.Audit.Action != escrow.ActionKeyRevealed {
				t.Errorf("audit record %+v", got.Audit)
			}
		}
		if recs, _ := e.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed}); len(recs) != 2 {
			t.Fatalf("%d reveal records, want 2", len(recs))
		}
	})
}

// TestRetireKeepsKeys: retiring a device is explicit and audited, and deletes
// nothing: every key version stays in the metadata and in the secret store.
func TestRetireKeepsKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		for i, k := range []string{prk1, prk2} {
			if _, err := e.svc.Ingest(ctx, dev, macCMS(t, e.id.Certificate, k), escrow.SourceSecurityInfo); err != nil {
				t.Fatalf("ingest %d: %v", i, err)
			}
		}
		tok := []byte("bootstrap-token-bytes")
		if _, err := e.svc.PutToken(ctx, dev, escrow.KindBootstrapToken, tok, escrow.SourceCheckin); err != nil {
			t.Fatal(err)
		}
		before, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		if err != nil || len(before) != 2 {
			t.Fatalf("versions %+v %v", before, err)
		}

		// No reason, no retirement.
		if err := e.svc.RetireDevice(ctx, alice(), dev.ID, "  "); !errors.Is(err, escrow.ErrInvalid) {
			t.Fatalf("retire without a reason: %v", err)
		}
		if d, err := e.svc.Device(ctx, dev.ID); err != nil || d.Retired() {
			t.Fatalf("device after a refused retirement %+v %v", d, err)
		}
		if err := e.svc.RetireDevice(ctx, alice(), "NO-SUCH-DEVICE", "returned to vendor"); !errors.Is(err, escrow.ErrNotFound) {
			t.Errorf("retire an unknown device: %v", err)
		}

		const why = "laptop returned to IT, disk to be wiped"
		if err := e.svc.RetireDevice(ctx, alice(), dev.ID, why); err != nil {
			t.Fatal(err)
		}
		if d, err := e.svc.Device(ctx, dev.ID); err != nil || !d.Retired() || d.Serial != dev.Serial {
			t.Fatalf("device after retirement %+v %v", d, err)
		}
		recs, err := e.svc.AuditRecords(ctx, escrow.AuditQuery{Device: dev.ID, Action: escrow.ActionDeviceRetired})
		if err != nil || len(recs) != 1 || recs[0].Actor.ID != alice().ID || recs[0].Reason != why {
			t.Fatalf("audit of the retirement %+v %v", recs, err)
		}

		after, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindPRK)
		if err != nil || !reflect.DeepEqual(after, before) {
			t.Fatalf("key versions changed by retirement:\nbefore %+v\nafter  %+v (%v)", before, after, err)
		}
		ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: string(dev.ID)}
		for i, want := range []string{prk1, prk2} {
			got, _, err := e.secrets.Get(ctx, ref, after[i].SecretVersion)
			if err != nil || string(got) != want {
				t.Errorf("key version %d after retirement: %v", after[i].Seq, err)
			}
		}
		tv, err := e.svc.KeyVersions(ctx, dev.ID, escrow.KindBootstrapToken)
		if err != nil || len(tv) != 1 {
			t.Fatalf("token versions %+v %v", tv, err)
		}
		if got, _, err := e.secrets.Get(ctx, escrow.SecretRef{Kind: escrow.KindBootstrapToken, Owner: string(dev.ID)}, tv[0].SecretVersion); err != nil || !bytes.Equal(got, tok) {
			t.Errorf("bootstrap token after retirement: %v", err)
		}
		// The chain still verifies: nothing was removed from the audit log either.
		if rep, err := escrow.VerifyAudit(ctx, e.meta, nil); err != nil || rep.Broken != nil {
			t.Errorf("audit verify after retirement %+v %v", rep, err)
		}
	})
}
