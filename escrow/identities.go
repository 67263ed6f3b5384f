package escrow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fvescrow/fvescrow/fde"
)

// Escrow identities: the certificate (public) lives in the MetaStore, the
// private key in the SecretStore (Vault in production, so no long-lived key
// sits on a server's disk), keyed by the certificate fingerprint.

// LoadKeyring builds the keyring from every escrow certificate ever stored
// and its key.
func LoadKeyring(ctx context.Context, certs EscrowCertStore, secrets SecretStore) (*fde.Keyring, error) {
	list, err := certs.EscrowCerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("load keyring: %w", err)
	}
	kr, err := fde.NewKeyring()
	if err != nil {
		return nil, err
	}
	for _, c := range list {
		pemKey, _, err := secrets.Get(ctx, SecretRef{Kind: KindEscrowKey, Owner: c.Fingerprint}, 0)
		if err != nil {
			return nil, fmt.Errorf("load keyring: key for certificate %s: %w", c.Fingerprint, err)
		}
		key, err := fde.ParsePrivateKeyPEM(pemKey)
		clear(pemKey)
		if err != nil {
			return nil, fmt.Errorf("load keyring: certificate %s: %w", c.Fingerprint, err)
		}
		if err := kr.Add(c.Certificate, key); err != nil {
			return nil, fmt.Errorf("load keyring: %w", err)
		}
	}
	return kr, nil
}

// StoreEscrowIdentity saves an identity: the key first, so a certificate is
// never listed without its key, then the certificate. Storing the same
// identity again is a no-op.
func StoreEscrowIdentity(ctx context.Context, certs EscrowCertStore, secrets SecretStore, id fde.Identity, at time.Time) error {
	if err := id.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	fp := fde.Fingerprint(id.Certificate)
	keyPEM, err := fde.EncodePrivateKeyPEM(id.Key)
	if err != nil {
		return err
	}
	defer clear(keyPEM)
	ref := SecretRef{Kind: KindEscrowKey, Owner: fp}
	if _, err := secrets.Put(ctx, ref, keyPEM, 0, SecretMeta{"kind": string(KindEscrowKey), "certificate": fp}); err != nil {
		if !errors.Is(err, ErrConflict) {
			return fmt.Errorf("store escrow key: %w", err)
		}
		// Already stored (a retry): it must be the same key.
		held, _, gerr := secrets.Get(ctx, ref, 0)
		if gerr != nil {
			return fmt.Errorf("store escrow key: %w", gerr)
		}
		k, perr := fde.ParsePrivateKeyPEM(held)
		clear(held)
		if perr != nil || (fde.Identity{Certificate: id.Certificate, Key: k}).Validate() != nil {
			return fmt.Errorf("store escrow key: %w: a different key is stored for certificate %s", ErrConflict, fp)
		}
	}
	if err := certs.AddEscrowCert(ctx, EscrowCert{Fingerprint: fp, Certificate: id.Certificate, AddedAt: at}); err != nil {
		return fmt.Errorf("store escrow certificate: %w", err)
	}
	return nil
}

// EnsureEscrowIdentity creates and stores an escrow identity when the stores
// hold none (first start). It returns the identity's certificate info and
// whether it was created.
func EnsureEscrowIdentity(ctx context.Context, certs EscrowCertStore, secrets SecretStore, opts fde.IdentityOptions) (fde.CertInfo, bool, error) {
	list, err := certs.EscrowCerts(ctx)
	if err != nil {
		return fde.CertInfo{}, false, err
	}
	if len(list) > 0 {
		return fde.Describe(list[len(list)-1].Certificate), false, nil
	}
	id, err := fde.NewIdentity(opts)
	if err != nil {
		return fde.CertInfo{}, false, err
	}
	if err := StoreEscrowIdentity(ctx, certs, secrets, *id, time.Now()); err != nil {
		return fde.CertInfo{}, false, err
	}
	return fde.Describe(id.Certificate), true, nil
}

// AddEscrowIdentity stores an identity (a renewed certificate, or one
// imported from files), adds it to the running keyring, and audits it.
func (s *Service) AddEscrowIdentity(ctx context.Context, actor Actor, id fde.Identity) error {
	if err := StoreEscrowIdentity(ctx, s.meta, s.secrets, id, s.now()); err != nil {
		return err
	}
	if err := s.keyring.Add(id.Certificate, id.Key); err != nil {
		return err
	}
	ci := fde.Describe(id.Certificate)
	_, err := s.meta.AppendAudit(ctx, Event{Time: s.now(), Actor: actor, Action: ActionEscrowCertAdded,
		Detail: map[string]string{"fingerprint": ci.Fingerprint, "serial": ci.Serial, "subject": ci.Subject}})
	return err
}
