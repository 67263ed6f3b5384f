package fde

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"
)

// MinEscrowValidity is the shortest validity fvescrow gives an escrow
// certificate. Macs keep encrypting new keys to the certificate in the profile
// long after it was deployed; an expired one is a support call waiting.
const MinEscrowValidity = 10 * 365 * 24 * time.Hour

// DefaultEscrowSubject is the common name of a new escrow certificate.
const DefaultEscrowSubject = "fvescrow FileVault escrow"

// Identity is an escrow certificate and its private key.
type Identity struct {
	Certificate *x509.Certificate
	Key         PrivateKey
}

// IdentityOptions configure NewIdentity. The zero value is valid.
type IdentityOptions struct {
	Bits         int           // 2048 (default) or 3072
	CommonName   string        // default DefaultEscrowSubject
	Organization string        // optional O= in the subject
	Validity     time.Duration // default and minimum MinEscrowValidity
	Now          time.Time     // default time.Now()
	Rand         io.Reader     // default crypto/rand
}

func (o IdentityOptions) withDefaults() (IdentityOptions, error) {
	switch o.Bits {
	case 0:
		o.Bits = 2048
	case 2048, 3072:
	default:
		return o, fmt.Errorf("escrow key size %d: want 2048 or 3072", o.Bits)
	}
	if o.CommonName == "" {
		o.CommonName = DefaultEscrowSubject
	}
	if o.Validity == 0 {
		o.Validity = MinEscrowValidity
	}
	if o.Validity < MinEscrowValidity {
		return o, fmt.Errorf("escrow certificate validity %v: want at least 10 years", o.Validity)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	return o, nil
}

// NewIdentity creates an RSA key and a self-signed escrow certificate for it.
func NewIdentity(opts IdentityOptions) (*Identity, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	k, err := rsa.GenerateKey(o.Rand, o.Bits)
	if err != nil {
		return nil, fmt.Errorf("generate escrow key: %w", err)
	}
	key := NewPrivateKey(k)
	cert, err := newEscrowCertificate(key, o)
	if err != nil {
		return nil, err
	}
	return &Identity{Certificate: cert, Key: key}, nil
}

// RenewCertificate issues a new self-signed certificate for an existing key:
// a new serial and validity, the same subject unless opts set one. Blobs made
// for the old certificate still need the old certificate to be matched, so
// keep both in the keyring.
func RenewCertificate(old *x509.Certificate, key PrivateKey, opts IdentityOptions) (*x509.Certificate, error) {
	if key.IsZero() {
		return nil, errors.New("renew escrow certificate: no private key")
	}
	if err := checkKeyMatches(old, key); err != nil {
		return nil, err
	}
	opts.Bits = key.RSA().N.BitLen()
	if opts.CommonName == "" {
		opts.CommonName = old.Subject.CommonName
		if len(old.Subject.Organization) > 0 && opts.Organization == "" {
			opts.Organization = old.Subject.Organization[0]
		}
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return newEscrowCertificate(key, o)
}

func newEscrowCertificate(key PrivateKey, o IdentityOptions) (*x509.Certificate, error) {
	serial, err := rand.Int(o.Rand, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("escrow certificate serial: %w", err)
	}
	subject := pkix.Name{CommonName: o.CommonName}
	if o.Organization != "" {
		subject.Organization = []string{o.Organization}
	}
	notBefore := o.Now.Add(-time.Hour).UTC().Truncate(time.Second) // tolerate skewed clocks on Macs
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)), // never zero
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(o.Validity),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(o.Rand, tmpl, tmpl, key.Public(), key.Signer())
	if err != nil {
		return nil, fmt.Errorf("create escrow certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Fingerprint is the lower-case hex SHA-256 of a certificate's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodeCertificatePEM returns cert as a PEM CERTIFICATE block.
func EncodeCertificatePEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodePrivateKeyPEM returns key as a PKCS#8 PRIVATE KEY block.
func EncodePrivateKeyPEM(key PrivateKey) ([]byte, error) {
	if key.IsZero() {
		return nil, errors.New("encode private key: no key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key.Signer())
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificatesPEM reads every CERTIFICATE block in b. Other blocks are
// skipped; no certificate at all is an error.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// ParsePrivateKeyPEM reads the first private key block: PKCS#8 "PRIVATE
// KEY", PKCS#1 "RSA PRIVATE KEY" or SEC1 "EC PRIVATE KEY". Errors never
// include key material.
func ParsePrivateKeyPEM(b []byte) (PrivateKey, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return PrivateKey{}, errors.New("no PEM private key block found")
		}
		var (
			k   any
			err error
		)
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return PrivateKey{}, errors.New("encrypted private keys are not supported: decrypt it first or keep it in Vault")
		default:
			continue
		}
		if err != nil {
			return PrivateKey{}, fmt.Errorf("parse %s: invalid encoding", strings.ToLower(blk.Type))
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return NewPrivateKey(k), nil
		case *ecdsa.PrivateKey:
			return NewPrivateKey(k), nil
		default:
			return PrivateKey{}, fmt.Errorf("private key type %T is not supported (want RSA or ECDSA)", k)
		}
	}
}

func checkKeyMatches(cert *x509.Certificate, key PrivateKey) error {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("certificate %s has a %T key: escrow certificates must be RSA", SerialString(cert.SerialNumber), cert.PublicKey)
	}
	if key.RSA() == nil || !pub.Equal(key.Public()) {
		return fmt.Errorf("private key does not belong to certificate serial %s", SerialString(cert.SerialNumber))
	}
	return nil
}

// Validate checks that the key is RSA and belongs to the certificate.
func (id Identity) Validate() error {
	if id.Certificate == nil {
		return errors.New("identity has no certificate")
	}
	return checkKeyMatches(id.Certificate, id.Key)
}
