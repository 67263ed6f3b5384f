// Package vaultstore is the escrow.SecretStore over HashiCorp Vault's KV v2
// secrets engine, for production deployments. It is the only package that
// imports github.com/hashicorp/vault/api.
//
// # Layout in Vault
//
// Each secret (a kind and an owner) is one KV v2 secret, and each escrow
// version is one KV v2 version:
//
//	<mount>/data/<prefix>/<kind>/<owner>       {"value": base64(secret)}, versions 1, 2, ...
//	<mount>/metadata/<prefix>/<kind>/<owner>   max_versions, custom_metadata (never secret)
//
// with mount "secret" and prefix "fvescrow" by default, e.g.
// secret/data/fvescrow/prk/<device ID>. The secret is stored base64-encoded
// so any bytes round-trip through JSON. Put uses KV v2 check-and-set, so a
// stale writer gets escrow.ErrConflict and writes no version.
//
// # Why max_versions is set
//
// KV v2 keeps 10 versions of a secret unless told otherwise and silently
// deletes the oldest when an 11th is written. fvescrow never deletes a key
// version (an old recovery key may still unlock a disk restored from
// backup), so before the first version of a secret is written its metadata
// gets max_versions = Config.MaxVersions (10000 by default). It is written
// before the data, so a crash between the two requests cannot leave a secret
// with Vault's default of 10. Operators must not set delete_version_after on
// the mount: a key cannot lift the mount's limit.
//
// # Access
//
// deploy/vault/fvescrow-policy.hcl is the least-privilege policy the tests
// run under: create, read and update on the data paths, create and update on
// the metadata paths, nothing that deletes, destroys or lists. The store logs
// in with a token file, AppRole or Kubernetes auth (credentials are read from
// files at each login), renews its token while it can, and logs in again when
// the token reaches its maximum TTL, or when Vault no longer knows it
// (revoked, expired early): the refused request is then retried once.
//
// The client is built as vault/api recommends, from vault.DefaultConfig,
// which reads VAULT_* variables. Config wins over them for the address
// (VAULT_ADDR, VAULT_AGENT_ADDR), TLS (VAULT_CACERT, VAULT_SKIP_VERIFY...),
// token and namespace; the others (VAULT_CLIENT_TIMEOUT, VAULT_MAX_RETRIES,
// proxies) still apply.
package vaultstore

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow"
)

var _ escrow.SecretStore = (*Store)(nil)

// kindKey is the custom-metadata key vaultstore adds with the secret kind.
const kindKey = "fvescrow-kind"

// valueKey is the data key that holds the base64 secret.
const valueKey = "value"

// kvStore is the part of KV v2 the store uses; *vault.KVv2 (through kvv2)
// in production, a fake in unit tests.
type kvStore interface {
	Put(ctx context.Context, path string, data map[string]any, opts ...vault.KVOption) (*vault.KVSecret, error)
	Get(ctx context.Context, path string) (*vault.KVSecret, error)
	GetVersion(ctx context.Context, path string, version int) (*vault.KVSecret, error)
	// WriteMetadata sets only the given metadata fields of a secret,
	// creating its metadata if need be. (KVv2.PutMetadata resets every field
	// it is not given, custom metadata included.)
	WriteMetadata(ctx context.Context, path string, fields map[string]any) error
}

// kvv2 adds WriteMetadata to *vault.KVv2.
type kvv2 struct {
	*vault.KVv2
	client *vault.Client
	mount  string
}

func (k kvv2) WriteMetadata(ctx context.Context, path string, fields map[string]any) error {
	_, err := k.client.Logical().WriteWithContext(ctx, k.mount+"/metadata/"+path, fields)
	return err
}

// Store is an escrow.SecretStore over Vault KV v2. It is safe for
// concurrent use. Close it to stop token renewal.
type Store struct {
	client      *vault.Client
	kv          kvStore
	prefix      string
	maxVersions int
	log         *slog.Logger

	auth    vault.AuthMethod   // nil: the token of a WithClient client, not renewed
	loginMu sync.Mutex         // one login at a time
	fresh   chan *vault.Secret // a login made by a request, for the token keeper to watch
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
}

// Option configures New.
type Option func(*options)

type options struct {
	log    *slog.Logger
	client *vault.Client
}

// WithLogger sets the logger (default: discard). Tokens are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithClient makes the store use c (tests). Config.Address, Namespace and TLS
// are then ignored. With an auth method in Config the store logs in on c
// (replacing c's token); without one it uses c's token as is and never
// renews it.
func WithClient(c *vault.Client) Option { return func(o *options) { o.client = c } }

// New logs in to Vault and returns a store. It fails when the first login
// fails, so a wrong credential is reported at startup. The token is then
// renewed, and replaced by a new login, until Close.
func New(ctx context.Context, cfg Config, opts ...Option) (*Store, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.withDefaults()
	if o.client != nil && cfg.Address == "" {
		cfg.Address = o.client.Address()
	}
	if err := cfg.validate(o.client == nil); err != nil {
		return nil, err
	}
	client := o.client
	if client == nil {
		var err error
		if client, err = newClient(cfg); err != nil {
			return nil, err
		}
	}
	s := &Store{
		client:      client,
		kv:          kvv2{KVv2: client.KVv2(cfg.Mount), client: client, mount: cfg.Mount},
		prefix:      cfg.Prefix,
		maxVersions: cfg.MaxVersions,
		log:         o.log.With("component", "vaultstore"),
		auth:        cfg.authMethod(),
		fresh:       make(chan *vault.Secret, 1),
		done:        make(chan struct{}),
	}
	if s.auth == nil {
		close(s.done)
		s.cancel = func() {}
		return s, nil
	}
	s.loginMu.Lock()
	secret, err := s.login(ctx)
	s.loginMu.Unlock()
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.keepToken(rctx, secret)
	return s, nil
}

// newClient follows vault/api's own recipe: DefaultConfig (which reads
// VAULT_* variables), check its Error, then override what fvescrow's config
// says, so the config always wins over the environment.
func newClient(cfg Config) (*vault.Client, error) {
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vaultstore: client config: %w", vc.Error)
	}
	vc.Address = cfg.Address
	vc.AgentAddress = "" // VAULT_AGENT_ADDR would silently take precedence over Address
	// ConfigureTLS only ever adds to the TLS config DefaultConfig built from
	// VAULT_CACERT, VAULT_SKIP_VERIFY etc. (Insecure false does not undo
	// VAULT_SKIP_VERIFY=true), so start from a clean one.
	tr, ok := vc.HttpClient.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("vaultstore: client config: transport %T", vc.HttpClient.Transport)
	}
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	err := vc.ConfigureTLS(&vault.TLSConfig{
		CACert:        cfg.TLS.CACert,
		TLSServerName: cfg.TLS.ServerName,
		Insecure:      cfg.TLS.InsecureSkipVerify,
	})
	if err != nil {
		return nil, fmt.Errorf("vaultstore: TLS config: %w", err)
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vaultstore: client: %w", err)
	}
	c.ClearToken() // NewClient takes VAULT_TOKEN from the environment; we log in instead
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	} else {
		c.ClearNamespace()
	}
	return c, nil
}

// Close stops token renewal. It does not revoke the token, which expires at
// its TTL. The store must not be used after Close.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.cancel()
		<-s.done
	})
	return nil
}

// Ping checks that Vault answers and accepts the store's token (token
// lookup-self), for readiness probes: escrow.ErrUnavailable when Vault is
// down or sealed, escrow.ErrForbidden when the token is refused.
func (s *Store) Ping(ctx context.Context) error {
	err := s.do(ctx, func() error {
		_, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
		return err
	})
	if err != nil {
		return s.fail("ping", "", err)
	}
	return nil
}

// Put writes secret as a new version of ref, if cas is the latest version (0:
// the secret does not exist yet), and returns the new version.
//
// For a first version (cas 0) it sets the secret's max_versions first, then
// writes the version, then records meta (without empty values, plus
// "fvescrow-kind": the kind) as the secret's custom metadata. Custom metadata belongs to the secret, not to a
// version, and later Puts leave it alone: per-version facts live in the
// MetaStore. A conflicting first write may re-assert max_versions; it writes
// nothing else.
func (s *Store) Put(ctx context.Context, ref escrow.SecretRef, secret []byte, cas int, meta escrow.SecretMeta) (int, error) {
	if err := ref.Validate(); err != nil {
		return 0, fmt.Errorf("vaultstore: put: %w", err)
	}
	if cas < 0 {
		return 0, fmt.Errorf("vaultstore: put %s: %w: check-and-set version %d", ref, escrow.ErrInvalid, cas)
	}
	custom, err := customMetadata(ref, meta)
	if err != nil {
		return 0, fmt.Errorf("vaultstore: put %s: %w", ref, err)
	}
	path := s.path(ref)
	if cas == 0 {
		err := s.do(ctx, func() error {
			return s.kv.WriteMetadata(ctx, path, map[string]any{"max_versions": s.maxVersions})
		})
		if err != nil {
			return 0, s.fail("put", ref.String(), err)
		}
	}
	data := map[string]any{valueKey: base64.StdEncoding.EncodeToString(secret)}
	var res *vault.KVSecret
	err = s.do(ctx, func() (err error) {
		res, err = s.kv.Put(ctx, path, data, vault.WithCheckAndSet(cas))
		return err
	})
	if err != nil {
		return 0, s.fail("put", ref.String(), err)
	}
	if res == nil || res.VersionMetadata == nil || res.VersionMetadata.Version <= cas {
		return 0, fmt.Errorf("vaultstore: put %s: vault returned no new version", ref)
	}
	v := res.VersionMetadata.Version
	if cas == 0 {
		err := s.do(ctx, func() error {
			return s.kv.WriteMetadata(ctx, path, map[string]any{"custom_metadata": custom})
		})
		if err != nil {
			// The version is written and safe (max_versions is set); only
			// descriptive metadata is missing. Do not fail the Put: a
			// retry would conflict with the version just written.
			s.log.Warn("secret written; custom metadata not set", "ref", ref.String(), "version", v, "err", s.fail("put metadata", ref.String(), err))
		}
	}
	return v, nil
}

// Get reads version v of ref (0: the latest). escrow.ErrNotFound when the
// secret or the version does not exist, or the version was deleted or
// destroyed outside fvescrow.
func (s *Store) Get(ctx context.Context, ref escrow.SecretRef, v int) ([]byte, int, error) {
	if err := ref.Validate(); err != nil {
		return nil, 0, fmt.Errorf("vaultstore: get: %w", err)
	}
	if v < 0 {
		return nil, 0, fmt.Errorf("vaultstore: get %s: %w: version %d", ref, escrow.ErrInvalid, v)
	}
	var res *vault.KVSecret
	err := s.do(ctx, func() (err error) {
		if v == 0 {
			res, err = s.kv.Get(ctx, s.path(ref))
		} else {
			res, err = s.kv.GetVersion(ctx, s.path(ref), v)
		}
		return err
	})
	if err != nil {
		return nil, 0, s.fail("get", refVersion(ref, v), err)
	}
	// A deleted or destroyed version comes back with metadata and no data.
	if res == nil || res.Data == nil || res.VersionMetadata == nil ||
		res.VersionMetadata.Destroyed || !res.VersionMetadata.DeletionTime.IsZero() {
		return nil, 0, fmt.Errorf("vaultstore: get %s: %w", refVersion(ref, v), escrow.ErrNotFound)
	}
	enc, ok := res.Data[valueKey].(string)
	if !ok {
		return nil, 0, fmt.Errorf("vaultstore: get %s: version %d has no %q string (not written by fvescrow?)", ref, res.VersionMetadata.Version, valueKey)
	}
	secret, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		// The decode error names an offset only, never the data.
		return nil, 0, fmt.Errorf("vaultstore: get %s: version %d: stored value is not base64: %w", ref, res.VersionMetadata.Version, err)
	}
	return secret, res.VersionMetadata.Version, nil
}

// path is <prefix>/<kind>/<owner>; ref is validated, so both are plain
// path elements.
func (s *Store) path(ref escrow.SecretRef) string {
	return s.prefix + "/" + string(ref.Kind) + "/" + ref.Owner
}

// fail wraps a Vault error for op on what: "vaultstore: put prk/X:
// conflict: vault 400: ...".
func (s *Store) fail(op, what string, err error) error {
	err = translate(err)
	if what == "" {
		return fmt.Errorf("vaultstore: %s: %w", op, err)
	}
	return fmt.Errorf("vaultstore: %s %s: %w", op, what, err)
}

func refVersion(ref escrow.SecretRef, v int) string {
	if v == 0 {
		return ref.String()
	}
	return ref.String() + " v" + strconv.Itoa(v)
}

// Vault's limits on custom metadata (KV v2 path_metadata.go).
const (
	maxMetaKeys     = 64
	maxMetaKeyLen   = 128
	maxMetaValueLen = 512
)

// customMetadata builds the custom metadata of a first version: meta without
// empty values (Vault refuses them), plus the kind. It is checked against
// Vault's limits before anything is written, so a bad meta fails the Put
// rather than leaving a version without metadata.
func customMetadata(ref escrow.SecretRef, meta escrow.SecretMeta) (map[string]any, error) {
	out := make(map[string]any, len(meta)+1)
	for _, k := range sortedKeys(meta) {
		v := meta[k]
		if v == "" || k == kindKey {
			continue
		}
		if k == "" || len(k) > maxMetaKeyLen || !printable(k) {
			return nil, fmt.Errorf("%w: metadata key %.40q", escrow.ErrInvalid, k)
		}
		if len(v) > maxMetaValueLen || !printable(v) {
			return nil, fmt.Errorf("%w: metadata value of %.40q (%d bytes)", escrow.ErrInvalid, k, len(v))
		}
		out[k] = v
	}
	out[kindKey] = string(ref.Kind)
	if len(out) > maxMetaKeys {
		return nil, fmt.Errorf("%w: %d metadata keys, at most %d", escrow.ErrInvalid, len(meta), maxMetaKeys-1)
	}
	return out, nil
}

func printable(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) })
}

func sortedKeys(m escrow.SecretMeta) []string { return slices.Sorted(maps.Keys(m)) }
