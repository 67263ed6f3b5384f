package fde

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/smallstep/pkcs7"
)

// Keyring holds every escrow identity ever deployed. Macs encrypt the PRK to
// the certificate in their profile, and recipient matching is by issuer and
// serial, so a renewed certificate with the same key does not open blobs made
// for its predecessor: both certificates stay here. It is safe for concurrent
// use.
type Keyring struct {
	mu      sync.RWMutex
	entries []Identity
}

// CertInfo describes one keyring certificate; it holds nothing secret.
type CertInfo struct {
	Fingerprint string // SHA-256 of the DER certificate, lower-case hex
	Subject     string
	Issuer      string
	Serial      string // upper-case hex
	NotBefore   time.Time
	NotAfter    time.Time
	KeyBits     int
}

// NewKeyring returns a keyring holding ids.
func NewKeyring(ids ...Identity) (*Keyring, error) {
	k := &Keyring{}
	for _, id := range ids {
		if err := k.Add(id.Certificate, id.Key); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Add puts a certificate and its key in the keyring. The key must be the
// certificate's; adding the same certificate twice is a no-op.
func (k *Keyring) Add(cert *x509.Certificate, key PrivateKey) error {
	if cert == nil {
		return fmt.Errorf("keyring: nil certificate")
	}
	if err := checkKeyMatches(cert, key); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.entries {
		if bytes.Equal(e.Certificate.Raw, cert.Raw) {
			return nil
		}
	}
	k.entries = append(k.entries, Identity{Certificate: cert, Key: key})
	return nil
}

// Len is the number of certificates in the keyring.
func (k *Keyring) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.entries)
}

// List describes every certificate, newest NotBefore first.
func (k *Keyring) List() []CertInfo {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]CertInfo, 0, len(k.entries))
	for _, e := range k.entries {
		out = append(out, Describe(e.Certificate))
	}
	slices.SortStableFunc(out, func(a, b CertInfo) int { return b.NotBefore.Compare(a.NotBefore) })
	return out
}

// Describe returns the public facts about an escrow certificate.
func Describe(c *x509.Certificate) CertInfo {
	ci := CertInfo{
		Fingerprint: Fingerprint(c),
		Subject:     c.Subject.String(),
		Issuer:      c.Issuer.String(),
		Serial:      SerialString(c.SerialNumber),
		NotBefore:   c.NotBefore,
		NotAfter:    c.NotAfter,
	}
	if pub, ok := c.PublicKey.(interface{ Size() int }); ok {
		ci.KeyBits = pub.Size() * 8
	}
	return ci
}

// Current returns the certificate new profiles and rotation replies should
// use: the one valid at now with the latest NotBefore. It returns nil when
// none is valid.
func (k *Keyring) Current(now time.Time) *x509.Certificate {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var cur *x509.Certificate
	for _, e := range k.entries {
		c := e.Certificate
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			continue
		}
		if cur == nil || c.NotBefore.After(cur.NotBefore) {
			cur = c
		}
	}
	return cur
}

// Decrypted is the result of opening a blob.
type Decrypted struct {
	Plaintext   []byte            // secret: never log it
	Certificate *x509.Certificate // the keyring certificate that matched
	Envelope    *Envelope
}

// Decrypt opens a CMS EnvelopedData with whichever identity matches one of
// its recipients. A blob for a certificate the keyring lacks fails with a
// *NoRecipientError naming the recipients.
func (k *Keyring) Decrypt(blob []byte) (*Decrypted, error) {
	env, err := ParseEnvelope(blob)
	if err != nil {
		return nil, err
	}
	k.mu.RLock()
	var match []Identity
	for _, r := range env.Recipients {
		for _, e := range k.entries {
			if r.Serial != nil && e.Certificate.SerialNumber.Cmp(r.Serial) == 0 && bytes.Equal(e.Certificate.RawIssuer, r.rawIssuer) {
				match = append(match, e)
			}
		}
	}
	k.mu.RUnlock()
	if len(match) == 0 {
		if !slices.ContainsFunc(env.Recipients, func(r Recipient) bool { return r.Serial != nil }) {
			return nil, fmt.Errorf("%w: recipients are identified by subject key identifier; fvescrow needs issuer and serial (%v)",
				ErrUnsupportedCMS, &NoRecipientError{Recipients: env.Recipients})
		}
		return nil, &NoRecipientError{Recipients: env.Recipients}
	}
	var lastErr error
	for _, id := range match {
		pt, err := openEnvelope(env.der, id)
		if err == nil {
			return &Decrypted{Plaintext: pt, Certificate: id.Certificate, Envelope: env}, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// DecryptRecoveryKey opens an FDE_PersonalRecoveryKeyCMS blob and parses the
// plaintext as a recovery key (an odd format is kept, with a Warning).
func (k *Keyring) DecryptRecoveryKey(blob []byte) (RecoveryKey, *Decrypted, error) {
	d, err := k.Decrypt(blob)
	if err != nil {
		return RecoveryKey{}, nil, err
	}
	key, err := ParseRecoveryKey(d.Plaintext)
	clear(d.Plaintext)
	if err != nil {
		return RecoveryKey{}, nil, fmt.Errorf("decrypted content: %w", err)
	}
	d.Plaintext = nil
	return key, d, nil
}

// openEnvelope runs smallstep/pkcs7 on a structurally checked envelope.
// pkcs7 v0.2.3 slices with an unchecked padding length in unpad, so a blob
// anyone can make with our public certificate could panic it; recover turns
// that into ErrDecrypt.
func openEnvelope(der []byte, id Identity) (pt []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			pt, err = nil, fmt.Errorf("%w: invalid content padding", ErrDecrypt)
		}
	}()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCMS, err)
	}
	pt, err = p7.Decrypt(id.Certificate, id.Key.RSA())
	if err != nil {
		return nil, fmt.Errorf("%w with certificate %s: %v", ErrDecrypt, SerialString(id.Certificate.SerialNumber), err)
	}
	return pt, nil
}
