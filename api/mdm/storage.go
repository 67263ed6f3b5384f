package mdm

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/micromdm/nanomdm/mdm"
	"github.com/micromdm/nanomdm/storage"
	"github.com/micromdm/plist"
)

// guardedStorage is nanomdm's storage with the secrets taken out: bootstrap
// and unlock tokens live in fvescrow's secret store (Capture puts them there
// before nanomdm sees the message), and the APNs key with PushCerts. Every
// other method passes through to nanomdm's backend.
type guardedStorage struct {
	storage.AllStorage
	push *PushCerts
}

var _ storage.AllStorage = (*guardedStorage)(nil)

// StoreTokenUpdate drops the UnlockToken from the message and from the raw
// plist nanomdm keeps.
func (g *guardedStorage) StoreTokenUpdate(r *mdm.Request, msg *mdm.TokenUpdate) error {
	if len(msg.UnlockToken) > 0 {
		clean := *msg
		clean.UnlockToken = nil
		raw, err := withoutKey(msg.Raw, "UnlockToken")
		if err != nil {
			return fmt.Errorf("strip unlock token: %w", err)
		}
		clean.Raw = raw
		msg = &clean
	}
	return g.AllStorage.StoreTokenUpdate(r, msg)
}

// StoreBootstrapToken stores nothing: the token is escrowed by Capture.
func (g *guardedStorage) StoreBootstrapToken(*mdm.Request, *mdm.SetBootstrapToken) error { return nil }

// RetrieveBootstrapToken has nothing to return: Capture serves the token.
func (g *guardedStorage) RetrieveBootstrapToken(*mdm.Request, *mdm.GetBootstrapToken) (*mdm.BootstrapToken, error) {
	return nil, nil
}

func (g *guardedStorage) StorePushCert(ctx context.Context, pemCert, pemKey []byte) error {
	return g.push.StorePushCert(ctx, pemCert, pemKey)
}

func (g *guardedStorage) RetrievePushCert(ctx context.Context, topic string) (*tls.Certificate, string, error) {
	return g.push.RetrievePushCert(ctx, topic)
}

func (g *guardedStorage) IsPushCertStale(ctx context.Context, topic, staleToken string) (bool, error) {
	return g.push.IsPushCertStale(ctx, topic, staleToken)
}

// withoutKey re-encodes a plist dictionary without one key.
func withoutKey(raw []byte, key string) ([]byte, error) {
	var m map[string]any
	if err := plist.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	delete(m, key)
	return plist.Marshal(m)
}
