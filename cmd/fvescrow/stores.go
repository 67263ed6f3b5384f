package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/escrow/vaultstore"
	"github.com/spf13/cobra"
)

// storeConfig chooses and configures the backends. The embedded default
// (SQLite + age-encrypted files in --data) needs nothing; --database-url
// selects PostgreSQL and --vault-addr selects Vault.
type storeConfig struct {
	dataDir         string
	ageIdentityFile string
	databaseURL     string
	databaseURLFile string

	vaultAddr, vaultMount, vaultPrefix, vaultCACert, vaultTokenFile string
	vaultRoleID, vaultSecretIDFile, vaultK8sRole, vaultK8sTokenFile string
}

// vaultConfig builds the Vault client configuration; vaultstore validates it.
func (c *storeConfig) vaultConfig() vaultstore.Config {
	cfg := vaultstore.Config{Address: c.vaultAddr, Mount: c.vaultMount, Prefix: c.vaultPrefix,
		TLS: vaultstore.TLS{CACert: c.vaultCACert}, Auth: vaultstore.Auth{TokenFile: c.vaultTokenFile}}
	if c.vaultRoleID != "" || c.vaultSecretIDFile != "" {
		cfg.Auth.AppRole = &vaultstore.AppRole{RoleID: c.vaultRoleID, SecretIDFile: c.vaultSecretIDFile}
	}
	if c.vaultK8sRole != "" {
		cfg.Auth.Kubernetes = &vaultstore.Kubernetes{Role: c.vaultK8sRole, ServiceAccountTokenFile: c.vaultK8sTokenFile}
	}
	return cfg
}

func (c *storeConfig) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.dataDir, "data", "fvescrow-data", "data `DIR` of the embedded default (SQLite, age-encrypted secrets, CA and keys)")
	f.StringVar(&c.ageIdentityFile, "age-identity-file", "", "age identity for the embedded secret store (default DIR/age-identity.txt)")
	f.StringVar(&c.databaseURL, "database-url", "", "PostgreSQL URL for metadata, e.g. postgres://fvescrow@db/fvescrow (give the password through PGPASSFILE or PGPASSWORD, not here)")
	f.StringVar(&c.databaseURLFile, "database-url-file", "", "read the PostgreSQL URL from a `FILE` (when it must hold a password)")
	f.StringVar(&c.vaultAddr, "vault-addr", "", "Vault address; selects Vault for every secret")
	f.StringVar(&c.vaultMount, "vault-mount", "secret", "Vault KV v2 mount")
	f.StringVar(&c.vaultPrefix, "vault-prefix", "fvescrow", "path prefix inside the mount (the policy must cover it)")
	f.StringVar(&c.vaultCACert, "vault-ca-cert", "", "CA certificate `PEM` for Vault's TLS")
	f.StringVar(&c.vaultTokenFile, "vault-token-file", "", "Vault token `FILE` (token auth)")
	f.StringVar(&c.vaultRoleID, "vault-approle-role-id", "", "AppRole role ID (AppRole auth)")
	f.StringVar(&c.vaultSecretIDFile, "vault-approle-secret-id-file", "", "AppRole secret ID `FILE`")
	f.StringVar(&c.vaultK8sRole, "vault-k8s-role", "", "Kubernetes auth role (Kubernetes auth)")
	f.StringVar(&c.vaultK8sTokenFile, "vault-k8s-token-file", "", "service account token `FILE` (default: the pod's token)")
}

// dsn is the PostgreSQL connection string, from the flag or its file.
func (c *storeConfig) dsn() (string, error) {
	if c.databaseURLFile == "" {
		return c.databaseURL, nil
	}
	b, err := os.ReadFile(c.databaseURLFile)
	if err != nil {
		return "", badInput(err)
	}
	return strings.TrimSpace(string(b)), nil
}

// stores are the opened backends.
type stores struct {
	meta     *sqlstore.Store
	secrets  escrow.SecretStore
	describe string
	closers  []func() error
}

func (s *stores) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		_ = s.closers[i]()
	}
}

// open opens the configured backends. With create false (admin commands),
// an embedded data folder must already exist: nothing is created by a
// command that only reads.
func (c *storeConfig) open(ctx context.Context, create bool, log *slog.Logger) (*stores, error) {
	s := &stores{}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	dsn, err := c.dsn()
	if err != nil {
		return nil, err
	}
	embedded := dsn == "" || c.vaultAddr == ""
	if embedded {
		if !create {
			if _, err := os.Stat(c.dataDir); errors.Is(err, fs.ErrNotExist) {
				return nil, badInput(fmt.Errorf("no fvescrow data in %s", c.dataDir), "pass --data DIR (or FVESCROW_DATA), or start the server once with fvescrow serve")
			}
		}
		if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
			return nil, err
		}
	}
	var parts []string
	switch {
	case dsn != "":
		m, err := sqlstore.OpenPostgres(ctx, dsn, sqlstore.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL: %w", err)
		}
		s.meta, parts = m, append(parts, "metadata in PostgreSQL")
	default:
		path := filepath.Join(c.dataDir, "fvescrow.db")
		m, err := sqlstore.OpenSQLite(ctx, path, sqlstore.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("open SQLite: %w", err)
		}
		s.meta, parts = m, append(parts, "metadata in SQLite "+path)
	}
	s.closers = append(s.closers, s.meta.Close)
	switch {
	case c.vaultAddr != "":
		v, err := vaultstore.New(ctx, c.vaultConfig(), vaultstore.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("open Vault: %w", err)
		}
		s.secrets, parts = v, append(parts, "secrets in Vault "+c.vaultAddr)
		s.closers = append(s.closers, func() error { v.Close(); return nil })
	default:
		idPath := c.ageIdentityFile
		if idPath == "" {
			idPath = filepath.Join(c.dataDir, "age-identity.txt")
		}
		id, created, err := loadAgeIdentity(idPath, create)
		if err != nil {
			return nil, err
		}
		if created {
			log.Warn("created the age identity that encrypts every escrowed secret; back it up offline", "path", idPath)
		}
		a, err := agestore.New(filepath.Join(c.dataDir, "secrets"), id, agestore.WithLogger(log))
		if err != nil {
			return nil, err
		}
		s.secrets, parts = a, append(parts, "secrets age-encrypted in "+filepath.Join(c.dataDir, "secrets"))
		if create { // the server says it once at start, admin commands need not
			log.Warn("secrets are in the embedded age store, with their identity on this disk: fine for trying fvescrow and small fleets; production should use Vault (--vault-addr)")
		}
	}
	s.describe = strings.Join(parts, ", ")
	ok = true
	return s, nil
}

func loadAgeIdentity(path string, create bool) (*age.X25519Identity, bool, error) {
	if create {
		return agestore.LoadOrCreateIdentity(path)
	}
	id, err := agestore.LoadIdentity(path)
	return id, false, err
}
