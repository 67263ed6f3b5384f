package main

import (
	"context"
	"log/slog"

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

// oidcConfig configures sign-in through an OpenID Connect provider.
type oidcConfig struct{}

func (c *oidcConfig) register(*cobra.Command) {}

// build returns the OIDC routes (nil when OIDC is not configured).
func (c *oidcConfig) build(ctx context.Context, authn *auth.Authenticator, users escrow.UserStore, audit auth.Auditor, log *slog.Logger) (ssoRoutes, auth.Policy, error) {
	return nil, nil, nil
}
