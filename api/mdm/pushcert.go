package mdm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/micromdm/nanomdm/cryptoutil"
	"github.com/micromdm/nanomdm/storage"
)

// Settings holding the APNs push certificate (public) and its topic.
const (
	SettingPushCert  = "mdm.push-cert"
	SettingPushTopic = "mdm.push-topic"
)

// SecretKeeper is the part of the secret store PushCerts uses.
type SecretKeeper interface {
	escrow.SecretStore
}

// SettingKeeper reads and replaces settings.
type SettingKeeper interface {
	escrow.SettingStore
	escrow.MutableSettings
}

// PushCerts keeps the APNs push certificate for nanomdm: the certificate in
// the settings, its private key in the secret store (Vault in production),
// never in nanomdm's own tables. Every upload is a new key version, which is
// also the "stale token" nanomdm uses to rebuild its APNs client.
type PushCerts struct {
	secrets  SecretKeeper
	settings SettingKeeper
	audit    Auditor
}

// Auditor records security events.
type Auditor interface {
	AppendAudit(ctx context.Context, e escrow.Event) (escrow.AuditRecord, error)
}

var (
	_ storage.PushCertStore  = (*PushCerts)(nil)
	_ storage.PushCertStorer = (*PushCerts)(nil)
)

// NewPushCerts returns the push certificate keeper; every upload is audited.
func NewPushCerts(secrets SecretKeeper, settings SettingKeeper, audit Auditor) *PushCerts {
	return &PushCerts{secrets: secrets, settings: settings, audit: audit}
}

// ActionPushCertStored is the audit action of a push certificate upload.
const ActionPushCertStored = "mdm.push-cert.stored"

func pushKeyRef(topic string) escrow.SecretRef {
	return escrow.SecretRef{Kind: escrow.KindPushKey, Owner: topic}
}

// StorePushCert validates the pair, stores the key as a new secret version
// and the certificate and topic as settings, and audits it.
func (p *PushCerts) StorePushCert(ctx context.Context, pemCert, pemKey []byte) error {
	return p.Store(ctx, escrow.Actor{Kind: escrow.ActorToken, ID: "api"}, pemCert, pemKey)
}

// Store is StorePushCert with the actor named in the audit record.
func (p *PushCerts) Store(ctx context.Context, actor escrow.Actor, pemCert, pemKey []byte) error {
	if _, err := tls.X509KeyPair(pemCert, pemKey); err != nil {
		return fmt.Errorf("%w: push certificate and key do not form a pair", escrow.ErrInvalid)
	}
	topic, err := cryptoutil.TopicFromPEMCert(pemCert)
	if err != nil {
		return fmt.Errorf("%w: push certificate: %v", escrow.ErrInvalid, err)
	}
	ref := pushKeyRef(topic)
	latest := 0
	if _, v, err := p.secrets.Get(ctx, ref, 0); err == nil {
		latest = v
	} else if !errors.Is(err, escrow.ErrNotFound) {
		return err
	}
	if _, err := p.secrets.Put(ctx, ref, pemKey, latest, escrow.SecretMeta{"kind": string(escrow.KindPushKey), "topic": topic}); err != nil {
		return fmt.Errorf("store push key: %w", err)
	}
	if err := p.settings.PutSetting(ctx, SettingPushCert, pemCert); err != nil {
		return err
	}
	if err := p.settings.PutSetting(ctx, SettingPushTopic, []byte(topic)); err != nil {
		return err
	}
	cert, _ := cryptoutil.DecodePEMCertificate(pemCert)
	detail := map[string]string{"topic": topic}
	if cert != nil {
		detail["not_after"] = cert.NotAfter.UTC().Format(time.RFC3339)
	}
	_, err = p.audit.AppendAudit(ctx, escrow.Event{Time: time.Now(), Actor: actor, Action: ActionPushCertStored, Detail: detail})
	return err
}

// Topic returns the stored push topic, or ErrNotFound before an upload.
func (p *PushCerts) Topic(ctx context.Context) (string, error) {
	b, err := p.settings.Setting(ctx, SettingPushTopic)
	return string(b), err
}

// RetrievePushCert loads the certificate and key for topic.
func (p *PushCerts) RetrievePushCert(ctx context.Context, topic string) (*tls.Certificate, string, error) {
	stored, err := p.Topic(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("push certificate: %w", err)
	}
	if stored != topic {
		return nil, "", fmt.Errorf("push certificate for topic %q: %w (stored topic is %q)", topic, escrow.ErrNotFound, stored)
	}
	certPEM, err := p.settings.Setting(ctx, SettingPushCert)
	if err != nil {
		return nil, "", err
	}
	keyPEM, v, err := p.secrets.Get(ctx, pushKeyRef(topic), 0)
	if err != nil {
		return nil, "", err
	}
	defer clear(keyPEM)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, "", fmt.Errorf("push certificate: %w", err)
	}
	return &pair, strconv.Itoa(v), nil
}

// IsPushCertStale reports whether a newer key version was uploaded.
func (p *PushCerts) IsPushCertStale(ctx context.Context, topic, staleToken string) (bool, error) {
	_, v, err := p.secrets.Get(ctx, pushKeyRef(topic), 0)
	if err != nil {
		return false, err
	}
	return strconv.Itoa(v) != staleToken, nil
}
