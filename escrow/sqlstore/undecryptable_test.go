package sqlstore_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
)

// TestUndecryptableBlobKept ingests blobs no escrow identity opens through
// the real Service and reads the database behind the store's back: each blob
// is stored byte for byte in key_cms, tied to an undecryptable version, and
// the outbox no longer holds it, so key_cms is its only copy.
func TestUndecryptableBlobKept(t *testing.T) {
	ours, err := fde.NewIdentity(fde.IdentityOptions{CommonName: "escrow ours"})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := fde.NewIdentity(fde.IdentityOptions{CommonName: "escrow stranger"})
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 700)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	blobs := []struct {
		name string
		cms  []byte
	}{
		// As a Mac sends it (BER, indefinite lengths), to a certificate
		// not in the keyring.
		{"another recipient", cmstest.OpenSSLEncrypt(t, stranger.Certificate, []byte("ABCD-EFGH-JKLM-NPQR-STUV-WXY2"), cmstest.OpenSSLOptions{Cipher: "des3"})},
		{"not CMS at all", garbage},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.newStore(t)
			id, _, err := agestore.LoadOrCreateIdentity(filepath.Join(t.TempDir(), "age.key"))
			if err != nil {
				t.Fatal(err)
			}
			secrets, err := agestore.New(filepath.Join(t.TempDir(), "secrets"), id)
			if err != nil {
				t.Fatal(err)
			}
			if err := escrow.StoreEscrowIdentity(ctx, s, secrets, *ours, time.Now()); err != nil {
				t.Fatal(err)
			}
			kr, err := escrow.LoadKeyring(ctx, s, secrets)
			if err != nil {
				t.Fatal(err)
			}
			svc := escrow.New(secrets, s, kr)
			dev := escrow.Device{ID: "UNDECRYPTABLE-1", Serial: "C02UNDEC"}
			for i, blob := range blobs {
				r, err := svc.Ingest(ctx, dev, bytes.Clone(blob.cms), escrow.SourceSecurityInfo)
				if !errors.Is(err, escrow.ErrUndecryptable) || r.Version.Status != escrow.StatusUndecryptable || r.Version.Seq != i+1 {
					t.Fatalf("%s: ingest %+v %v", blob.name, r.Version, err)
				}
				sum := sha256.Sum256(blob.cms)
				var (
					stored  []byte
					status  string
					version int64
				)
				err = s.DB().QueryRowContext(ctx, s.Dialect().Rebind(`SELECT c.cms, v.status, c.version_id
					FROM key_cms c JOIN key_versions v ON v.id = c.version_id
					WHERE c.device = ? AND c.cms_sha256 = ?`), dev.ID, hex.EncodeToString(sum[:])).Scan(&stored, &status, &version)
				if err != nil {
					t.Fatalf("%s: the blob is not in key_cms: %v", blob.name, err)
				}
				if !bytes.Equal(stored, blob.cms) {
					t.Errorf("%s: stored %d bytes differ from the %d received", blob.name, len(stored), len(blob.cms))
				}
				if status != string(escrow.StatusUndecryptable) || version != r.Version.ID {
					t.Errorf("%s: stored against version %d (%s), want %d (undecryptable)", blob.name, version, status, r.Version.ID)
				}
			}
			var n int
			if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("outbox rows %d (%v): the blobs should be kept as versions, not left in the outbox", n, err)
			}
			if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM key_cms`).Scan(&n); err != nil || n != len(blobs) {
				t.Fatalf("key_cms rows %d (%v), want %d", n, err, len(blobs))
			}
		})
	}
}
