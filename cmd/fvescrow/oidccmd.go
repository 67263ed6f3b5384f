package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/spf13/cobra"
)

// ssoRoutes is OIDC sign-in as the rest of serve sees it: routes to mount,
// where a browser starts signing in, and where it goes to end its IdP
// session.
type ssoRoutes interface {
	api.Mounter
	LoginPath() string
	// LogoutURL is the IdP's end-session URL for a session it created, or
	// "" when there is none.
	LogoutURL(s escrow.Session) string
}

var _ ssoRoutes = (*auth.OIDC)(nil)

// oidcConfig configures sign-in through an OpenID Connect provider.
type oidcConfig struct {
	issuer         string
	clientID       string
	secretFile     string
	redirectURL    string
	postLogoutURL  string
	roles          []string // ROLE=GROUP
	groupsClaim    string
	scopes         []string
	requireMFA     bool
	mfaAMR         []string
	mfaACR         string
	allowedDomains []string

	// testHTTPClient reaches the IdP in tests.
	testHTTPClient *http.Client
}

func (c *oidcConfig) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.issuer, "oidc-issuer", "", "OpenID Connect issuer `URL` (https); turns on OIDC sign-in")
	f.StringVar(&c.clientID, "oidc-client-id", "", "OIDC client `ID` registered at the IdP")
	f.StringVar(&c.secretFile, "oidc-client-secret-file", "", "`FILE` holding the OIDC client secret")
	f.StringVar(&c.redirectURL, "oidc-redirect-url", "", "this server's public `URL` of /auth/oidc/callback, as registered at the IdP")
	f.StringVar(&c.postLogoutURL, "oidc-post-logout-url", "", "where the IdP sends a browser after logout (default: the redirect URL's origin + /)")
	f.StringArrayVar(&c.roles, "oidc-role", nil, "`ROLE=GROUP`: members of the IdP group get the role (repeatable; email:ADDRESS instead of a group names one verified address; several per value on separate lines)")
	f.StringVar(&c.groupsClaim, "oidc-groups-claim", "groups", "ID token claim with the user's groups (dotted for nested, e.g. realm_access.roles)")
	f.StringSliceVar(&c.scopes, "oidc-scopes", []string{"openid", "email", "profile"}, "scopes to request (add groups if the IdP needs it)")
	f.BoolVar(&c.requireMFA, "oidc-require-mfa", false, "refuse sign-ins whose ID token shows no second factor (amr or acr)")
	f.StringSliceVar(&c.mfaAMR, "oidc-mfa-amr", auth.DefaultMFAMethods, "amr values that count as a second factor")
	f.StringVar(&c.mfaACR, "oidc-mfa-acr", "", "an acr value that counts as a second factor (also requested with acr_values)")
	f.StringSliceVar(&c.allowedDomains, "oidc-allowed-domain", nil, "admit only e-mail addresses in these domains")

	// Check before serve opens (and on first start creates) anything: a
	// refused start must not have used up the first admin's one-time
	// password, which is shown only on a successful start.
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if prev != nil {
			if err := prev(cmd, args); err != nil {
				return err
			}
		}
		if _, err := c.config(); err != nil {
			return badInput(err)
		}
		return nil
	}
}

// enabled reports whether OIDC sign-in is configured.
func (c *oidcConfig) enabled() bool { return c.issuer != "" }

// config turns the flags into auth's typed configuration, reading the
// client secret, and validates it. Without --oidc-issuer it checks that no
// other OIDC flag is set and returns nil.
func (c *oidcConfig) config() (*auth.OIDCConfig, error) {
	if !c.enabled() {
		if c.clientID != "" || c.secretFile != "" || c.redirectURL != "" || len(c.roles) > 0 || c.requireMFA || c.mfaACR != "" || len(c.allowedDomains) > 0 {
			return nil, errors.New("the --oidc-* flags need --oidc-issuer")
		}
		return nil, nil
	}
	if c.secretFile == "" {
		return nil, errors.New("--oidc-issuer needs --oidc-client-secret-file")
	}
	secret, err := readSecretFile(c.secretFile)
	if err != nil {
		return nil, fmt.Errorf("--oidc-client-secret-file: %w", err)
	}
	rg, err := parseRoleMappings(c.roles)
	if err != nil {
		return nil, err
	}
	cfg := &auth.OIDCConfig{Issuer: c.issuer, ClientID: c.clientID, ClientSecret: auth.NewClientSecret(string(secret)),
		RedirectURL: c.redirectURL, PostLogoutRedirectURL: c.postLogoutURL, Scopes: c.scopes, GroupsClaim: c.groupsClaim,
		RoleGroups: rg, RequireMFA: c.requireMFA, MFAMethods: c.mfaAMR, MFAACR: c.mfaACR, AllowedDomains: c.allowedDomains,
		HTTPClient: c.testHTTPClient}
	if c.redirectURL == "" {
		return nil, errors.New("--oidc-issuer needs --oidc-redirect-url (https://YOUR-HOST/auth/oidc/callback)")
	}
	if err := cfg.Validate(); err != nil {
		return nil, flagError(err)
	}
	return cfg, nil
}

// parseRoleMappings reads ROLE=GROUP values. A value may hold several
// mappings on separate lines (one environment variable can then carry
// them all); the group is everything after the first "=", since group
// names such as LDAP DNs contain "=" and ",".
func parseRoleMappings(values []string) (map[escrow.Role][]string, error) {
	if len(values) == 0 {
		return nil, errors.New("--oidc-issuer needs at least one --oidc-role ROLE=GROUP (nobody could sign in)")
	}
	out := map[escrow.Role][]string{}
	for _, v := range values {
		for _, line := range strings.Split(v, "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			role, group, ok := strings.Cut(line, "=")
			role, group = strings.TrimSpace(role), strings.TrimSpace(group)
			if !ok || group == "" {
				return nil, fmt.Errorf("--oidc-role %q: want ROLE=GROUP", line)
			}
			r := escrow.Role(role)
			if !r.Valid() {
				var names []string
				for _, known := range escrow.AllRoles {
					names = append(names, string(known))
				}
				return nil, fmt.Errorf("--oidc-role %q: unknown role %q (roles: %s)", line, role, strings.Join(names, ", "))
			}
			out[r] = append(out[r], group)
		}
	}
	return out, nil
}

// flagError drops the "invalid input: " of auth's validation errors: at
// the command line the message reads better without it.
func flagError(err error) error {
	return errors.New(strings.Replace(err.Error(), auth.ErrBadRequest.Error()+": ", "", 1))
}

// build returns the OIDC routes (nil when OIDC is not configured). An IdP
// that cannot be reached does not stop the server (devices keep escrowing
// keys); sign-in answers 503 until discovery succeeds. An issuer the IdP
// does not recognise as its own does.
func (c *oidcConfig) build(ctx context.Context, authn *auth.Authenticator, users escrow.UserStore, audit auth.Auditor, log *slog.Logger) (ssoRoutes, auth.Policy, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, nil, badInput(err)
	}
	if cfg == nil {
		return nil, nil, nil
	}
	onError := func(w http.ResponseWriter, r *http.Request, err error) { api.WriteError(w, r, log, err) }
	o, err := auth.NewOIDC(*cfg, authn, users, audit, onError, auth.OIDCLogger(log))
	if err != nil {
		return nil, nil, badInput(flagError(err))
	}
	if err := o.Discover(ctx); err != nil {
		if errors.Is(err, auth.ErrBadRequest) {
			return nil, nil, badInput(fmt.Errorf("--oidc-issuer: %w", flagError(err)))
		}
		log.Warn("OIDC discovery failed; sign-in will retry", "issuer", cfg.Issuer, "err", err)
	}
	return o, o.Policy(), nil
}
