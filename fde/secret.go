package fde

import (
	"crypto"
	"crypto/rsa"
	"crypto/subtle"
	"log/slog"
)

// Redacted is what every secret-bearing value prints instead of itself.
const Redacted = "REDACTED"

// PrivateKey is an escrow or profile-signing private key. It prints as
// [Redacted] everywhere so a stray %v, log attribute or JSON field cannot
// leak it.
type PrivateKey struct {
	s crypto.Signer
}

// NewPrivateKey wraps a private key.
func NewPrivateKey(s crypto.Signer) PrivateKey { return PrivateKey{s: s} }

// Signer returns the key for signing (profiles).
func (p PrivateKey) Signer() crypto.Signer { return p.s }

// RSA returns the key if it is RSA, else nil. CMS key transport needs RSA, so
// escrow identities are always RSA.
func (p PrivateKey) RSA() *rsa.PrivateKey {
	k, _ := p.s.(*rsa.PrivateKey)
	return k
}

// IsZero reports whether p holds no key.
func (p PrivateKey) IsZero() bool { return p.s == nil }

// Public returns the public half, which is not secret.
func (p PrivateKey) Public() crypto.PublicKey {
	if p.s == nil {
		return nil
	}
	return p.s.Public()
}

func (PrivateKey) String() string               { return Redacted }
func (PrivateKey) GoString() string             { return Redacted }
func (PrivateKey) LogValue() slog.Value         { return slog.StringValue(Redacted) }
func (PrivateKey) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }
func (PrivateKey) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
