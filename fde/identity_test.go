package fde_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/fde"
)

func TestNewIdentity(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts fde.IdentityOptions
		bits int
		cn   string
		bad  bool
	}{
		{"default", fde.IdentityOptions{}, 2048, fde.DefaultEscrowSubject, false},
		{"3072 with subject", fde.IdentityOptions{Bits: 3072, CommonName: "Example Corp FileVault", Organization: "Example Corp"}, 3072, "Example Corp FileVault", false},
		{"1024 refused", fde.IdentityOptions{Bits: 1024}, 0, "", true},
		{"short validity refused", fde.IdentityOptions{Validity: 365 * 24 * time.Hour}, 0, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, err := fde.NewIdentity(tc.opts)
			if tc.bad {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := id.Certificate
			if got := c.PublicKey.(*rsa.PublicKey).N.BitLen(); got != tc.bits {
				t.Errorf("bits %d, want %d", got, tc.bits)
			}
			if c.Subject.CommonName != tc.cn {
				t.Errorf("CN %q, want %q", c.Subject.CommonName, tc.cn)
			}
			if c.NotAfter.Sub(c.NotBefore) < fde.MinEscrowValidity {
				t.Errorf("validity %v shorter than 10 years", c.NotAfter.Sub(c.NotBefore))
			}
			if c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
				t.Error("no keyEncipherment usage: CMS key transport needs it")
			}
			if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
		})
	}
}

func TestPEMRoundTrip(t *testing.T) {
	t.Parallel()
	id, _ := testIdentities(t)
	keyPEM, err := fde.EncodePrivateKeyPEM(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	key, err := fde.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := fde.ParseCertificatesPEM(append(fde.EncodeCertificatePEM(id.Certificate), fde.EncodeCertificatePEM(id.Certificate)...))
	if err != nil || len(certs) != 2 {
		t.Fatalf("certs %d, err %v", len(certs), err)
	}
	if _, err := fde.NewKeyring(fde.Identity{Certificate: certs[0], Key: key}); err != nil {
		t.Fatal(err)
	}
	// PKCS#1 form is accepted too.
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(id.Key.RSA())})
	if _, err := fde.ParsePrivateKeyPEM(pkcs1); err != nil {
		t.Fatal(err)
	}
}

func TestParsePrivateKeyPEMErrorsHoldNoKey(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	k, err := fde.ParsePrivateKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}))
	if err != nil || k.RSA() != nil {
		t.Fatalf("EC key: %v", err)
	}
	// An EC key signs profiles but cannot be an escrow key.
	id, _ := testIdentities(t)
	if _, err := fde.NewKeyring(fde.Identity{Certificate: id.Certificate, Key: k}); err == nil {
		t.Error("keyring accepted an EC key")
	}
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("SECRETSECRETSECRET")})
	_, err = fde.ParsePrivateKeyPEM(corrupt)
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("got %v", err)
	}
	if _, err := fde.ParsePrivateKeyPEM([]byte("nothing here")); err == nil {
		t.Error("no error for missing key")
	}
	if _, err := fde.ParseCertificatesPEM([]byte("nothing")); err == nil {
		t.Error("no error for missing cert")
	}
}
