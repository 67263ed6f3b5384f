package escrow_test

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
)

// benchBlobs makes n distinct recovery keys and their CMS blobs for cert.
// Blobs are made before timing starts, in Go (cmstest.Encrypt), because an
// openssl process per blob would dominate setup.
func benchBlobs(b *testing.B, id *fde.Identity, n int) [][]byte {
	b.Helper()
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	blobs := make([][]byte, n)
	for i := range blobs {
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			b.Fatal(err)
		}
		key := make([]byte, 0, 29)
		for j, c := range raw {
			if j > 0 && j%4 == 0 {
				key = append(key, '-')
			}
			key = append(key, alphabet[int(c)%len(alphabet)])
		}
		blobs[i] = cmstest.Encrypt(b, id.Certificate, key)
	}
	return blobs
}

// BenchmarkIngest measures the whole escrow path a check-in triggers: the
// outbox write, CMS decrypt, the secret store write and the metadata
// record, one new device per operation, on both storage modes. Compare it
// with BenchmarkDecrypt (the bare crypto) and vaultstore's BenchmarkRawKVPut
// (the bare Vault write) from the same run: `make bench`.
func BenchmarkIngest(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			secrets, meta := be.open(b)
			e := newEnv(b, secrets, meta)
			blobs := benchBlobs(b, e.id, 256)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				d := escrow.Device{ID: escrow.DeviceID(fmt.Sprintf("BENCH-%08d-0000-0000-0000-000000000000", i)), Serial: fmt.Sprintf("C02B%08d", i)}
				res, err := e.svc.Ingest(ctx, d, blobs[i%len(blobs)], escrow.SourceSecurityInfo)
				if err != nil {
					b.Fatal(err)
				}
				if !res.New || res.Pending {
					b.Fatalf("ingest %d: %+v", i, res)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
		})
	}
}

// BenchmarkDecrypt is the crypto floor under ingest: the bare RSA-2048
// PKCS#1 v1.5 key-transport decrypt, and the full CMS decrypt through the
// keyring.
func BenchmarkDecrypt(b *testing.B) {
	id, _ := identities(b)
	b.Run("rsa2048", func(b *testing.B) {
		pub := id.Certificate.PublicKey.(*rsa.PublicKey)
		//lint:ignore SA1019 Macs wrap the content key with PKCS #1 v1.5; this measures that.
		ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, make([]byte, 32))
		if err != nil {
			b.Fatal(err)
		}
		priv := id.Key.RSA()
		b.ResetTimer()
		for range b.N {
			//lint:ignore SA1019 the decrypt every escrowed Mac key needs (PKCS #1 v1.5 key transport).
			if _, err := rsa.DecryptPKCS1v15(nil, priv, ct); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("cms", func(b *testing.B) {
		kr, err := fde.NewKeyring(*id)
		if err != nil {
			b.Fatal(err)
		}
		blob := benchBlobs(b, id, 1)[0]
		b.ResetTimer()
		for range b.N {
			if _, _, err := kr.DecryptRecoveryKey(blob); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}
