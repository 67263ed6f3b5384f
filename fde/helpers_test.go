package fde_test

import (
	"os"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
)

var (
	idOnce  sync.Once
	idCache [2]*fde.Identity
	idErr   error
)

// testIdentities returns two escrow identities shared by the package's tests
// (RSA key generation is the slow part).
func testIdentities(t testing.TB) (*fde.Identity, *fde.Identity) {
	t.Helper()
	idOnce.Do(func() {
		for i := range idCache {
			idCache[i], idErr = fde.NewIdentity(fde.IdentityOptions{CommonName: "fvescrow test escrow"})
			if idErr != nil {
				return
			}
		}
	})
	if idErr != nil {
		t.Fatal(idErr)
	}
	return idCache[0], idCache[1]
}

func keyringOf(t testing.TB, ids ...*fde.Identity) *fde.Keyring {
	t.Helper()
	k, err := fde.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := k.Add(id.Certificate, id.Key); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// fixtureKeyring is the committed test-only identity the testdata blobs use.
func fixtureKeyring(t testing.TB) *fde.Keyring {
	t.Helper()
	certPEM, err := os.ReadFile("testdata/cms/test-escrow.cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile("testdata/cms/test-escrow.key.pem")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := fde.ParseCertificatesPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := fde.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	k, err := fde.NewKeyring(fde.Identity{Certificate: certs[0], Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const testPRK = "ABCD-EFGH-JKLM-NPQR-STUV-WXY2"
