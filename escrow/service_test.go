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
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			secrets, meta := b.open(t)
			e := newEnv(t, secrets, meta)
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
