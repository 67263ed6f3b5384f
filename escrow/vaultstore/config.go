package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	vault "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// Defaults for Config.
const (
	DefaultMount                   = "secret"
	DefaultPrefix                  = "fvescrow"
	DefaultMaxVersions             = 10000
	DefaultAppRoleMountPath        = "approle"
	DefaultKubernetesMountPath     = "kubernetes"
	DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Config says where the secrets live and how to log in. cmd builds it from
// flags; secrets (token, secret ID, service-account JWT) are file paths, read
// at each login so a rotated file is picked up.
type Config struct {
	// Address of Vault, e.g. https://vault.example.com:8200. Required.
	Address string
	// Namespace (Vault Enterprise / HCP); empty for none.
	Namespace string
	// Mount is the KV v2 mount path (default "secret").
	Mount string
	// Prefix is the path under the mount for fvescrow's secrets (default
	// "fvescrow"). The Vault policy names mount and prefix: change both
	// together (deploy/vault/fvescrow-policy.hcl).
	Prefix string
	// MaxVersions is written as each secret's max_versions (default 10000).
	// KV v2 otherwise keeps 10 versions and silently deletes older ones;
	// fvescrow never deletes a key version.
	MaxVersions int
	TLS         TLS
	Auth        Auth
}

// TLS configures how the client verifies Vault.
type TLS struct {
	// CACert is a PEM file of CAs to trust instead of the system pool.
	CACert string
	// ServerName overrides the name checked in Vault's certificate.
	ServerName string
	// InsecureSkipVerify disables certificate checks. Tests only.
	InsecureSkipVerify bool
}

// Auth selects exactly one way to log in.
type Auth struct {
	// TokenFile holds a Vault token (e.g. a Vault Agent sink). It is read
	// again whenever the token reaches its end of life.
	TokenFile  string
	AppRole    *AppRole
	Kubernetes *Kubernetes
}

// AppRole logs in with the AppRole auth method.
type AppRole struct {
	RoleID       string
	SecretIDFile string
	MountPath    string // default "approle"
}

// Kubernetes logs in with the Kubernetes auth method using the pod's
// service-account token.
type Kubernetes struct {
	Role                    string
	ServiceAccountTokenFile string // default DefaultServiceAccountTokenFile
	MountPath               string // default "kubernetes"
}

// withDefaults returns c with empty fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Mount == "" {
		c.Mount = DefaultMount
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MaxVersions == 0 {
		c.MaxVersions = DefaultMaxVersions
	}
	if a := c.Auth.AppRole; a != nil && a.MountPath == "" {
		cp := *a
		cp.MountPath = DefaultAppRoleMountPath
		c.Auth.AppRole = &cp
	}
	if k := c.Auth.Kubernetes; k != nil && (k.MountPath == "" || k.ServiceAccountTokenFile == "") {
		cp := *k
		if cp.MountPath == "" {
			cp.MountPath = DefaultKubernetesMountPath
		}
		if cp.ServiceAccountTokenFile == "" {
			cp.ServiceAccountTokenFile = DefaultServiceAccountTokenFile
		}
		c.Auth.Kubernetes = &cp
	}
	return c
}

// Validate checks c (after defaults) without touching the network or files.
func (c Config) Validate() error {
	return c.withDefaults().validate(true)
}

func (c Config) validate(needAuth bool) error {
	if c.Address == "" {
		return errors.New("vaultstore: config: address is required")
	}
	if err := checkPath("mount", c.Mount); err != nil {
		return err
	}
	if err := checkPath("prefix", c.Prefix); err != nil {
		return err
	}
	if c.MaxVersions < 0 || c.MaxVersions > 1<<31-1 {
		return fmt.Errorf("vaultstore: config: max versions %d out of range", c.MaxVersions)
	}
	n := 0
	if c.Auth.TokenFile != "" {
		n++
	}
	if a := c.Auth.AppRole; a != nil {
		n++
		if a.RoleID == "" || a.SecretIDFile == "" {
			return errors.New("vaultstore: config: AppRole needs a role ID and a secret ID file")
		}
		if err := checkPath("AppRole mount path", a.MountPath); err != nil {
			return err
		}
	}
	if k := c.Auth.Kubernetes; k != nil {
		n++
		if k.Role == "" {
			return errors.New("vaultstore: config: Kubernetes auth needs a role")
		}
		if err := checkPath("Kubernetes mount path", k.MountPath); err != nil {
			return err
		}
	}
	switch {
	case n > 1:
		return errors.New("vaultstore: config: set exactly one of token file, AppRole and Kubernetes auth")
	case n == 0 && needAuth:
		return errors.New("vaultstore: config: no auth: set a token file, AppRole or Kubernetes auth")
	}
	return nil
}

// checkPath accepts slash-separated path elements: no empty, "." or ".."
// element, no leading or trailing slash, printable characters only.
func checkPath(what, p string) error {
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." || strings.ContainsFunc(el, func(r rune) bool {
			return !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '*' || r == '+' || r == '?' || r == '#'
		}) {
			return fmt.Errorf("vaultstore: config: %s %q is not a plain path", what, p)
		}
	}
	return nil
}

// authMethod returns the login for c.Auth, or nil when none is set (only
// allowed with WithClient).
func (c Config) authMethod() vault.AuthMethod {
	switch {
	case c.Auth.TokenFile != "":
		return tokenFileAuth{path: c.Auth.TokenFile}
	case c.Auth.AppRole != nil:
		return appRoleAuth(*c.Auth.AppRole)
	case c.Auth.Kubernetes != nil:
		return kubernetesAuth(*c.Auth.Kubernetes)
	}
	return nil
}

// appRoleAuth logs in with AppRole, reading the secret ID file at each
// login so a new secret ID is picked up.
type appRoleAuth AppRole

func (a appRoleAuth) Login(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
	sid, err := readCredential(a.SecretIDFile, maxTokenFile)
	if err != nil {
		return nil, fmt.Errorf("AppRole secret ID: %w", err)
	}
	m, err := approle.NewAppRoleAuth(a.RoleID, &approle.SecretID{FromString: sid}, approle.WithMountPath(a.MountPath))
	if err != nil {
		return nil, err
	}
	return m.Login(ctx, c)
}

func (a appRoleAuth) String() string { return "approle (auth/" + a.MountPath + ")" }

// kubernetesAuth logs in with the Kubernetes auth method. It reads the
// service-account token itself at each login: kubernetes.KubernetesAuth
// reads its file once, when built, but projected tokens rotate (about
// hourly), and it sends the file's bytes as they are, so a token file ending
// in a newline fails Kubernetes' TokenReview.
type kubernetesAuth Kubernetes

// maxJWTFile bounds what is read from a service-account token file.
const maxJWTFile = 64 << 10

func (k kubernetesAuth) Login(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
	jwt, err := readCredential(k.ServiceAccountTokenFile, maxJWTFile)
	if err != nil {
		return nil, fmt.Errorf("service-account token: %w", err)
	}
	m, err := kubernetes.NewKubernetesAuth(k.Role,
		kubernetes.WithServiceAccountToken(jwt),
		kubernetes.WithMountPath(k.MountPath))
	if err != nil {
		return nil, err
	}
	return m.Login(ctx, c)
}

func (k kubernetesAuth) String() string { return "kubernetes (auth/" + k.MountPath + ")" }

// tokenFileAuth "logs in" with a token read from a file: it looks the token
// up (auth/token/lookup-self) to learn its TTL, so the token can be renewed
// and the file read again when the token reaches its end of life.
type tokenFileAuth struct{ path string }

// maxTokenFile bounds what is read from a token file.
const maxTokenFile = 4096

func (a tokenFileAuth) Login(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
	token, err := readCredential(a.path, maxTokenFile)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	// Look the token up with a clone so the shared client keeps its current
	// token until this one is known to work.
	lc, err := c.Clone()
	if err != nil {
		return nil, err
	}
	if ns := c.Namespace(); ns != "" { // Clone drops headers, the namespace among them
		lc.SetNamespace(ns)
	} else {
		lc.ClearNamespace()
	}
	lc.SetToken(token)
	self, err := lc.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("look up the token from %s: %w", a.path, err)
	}
	ttl, err := self.TokenTTL()
	if err != nil {
		return nil, fmt.Errorf("look up the token from %s: %w", a.path, err)
	}
	renewable, _ := self.TokenIsRenewable()
	policies, _ := self.TokenPolicies()
	accessor, _ := self.TokenAccessor()
	return &vault.Secret{Auth: &vault.SecretAuth{
		ClientToken:   token,
		Accessor:      accessor,
		Policies:      policies,
		LeaseDuration: int(ttl.Seconds()),
		Renewable:     renewable,
	}}, nil
}

func (a tokenFileAuth) String() string { return "token file " + a.path }

// readCredential reads a file holding one credential (a token, a JWT) and
// trims surrounding white space. Errors name the file, never its content.
func readCredential(path string, limit int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" || int64(len(b)) > limit || strings.ContainsFunc(s, unicode.IsSpace) {
		return "", fmt.Errorf("%s does not hold one token", path)
	}
	return s, nil
}
