package main

import (
	"context"
	"log/slog"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/spf13/cobra"
)

// oidcConfig configures sign-in through an OpenID Connect provider.
type oidcConfig struct{}

func (c *oidcConfig) register(*cobra.Command) {}

// build returns the OIDC routes (nil when OIDC is not configured).
func (c *oidcConfig) build(ctx context.Context, authn *auth.Authenticator, users escrow.UserStore, audit auth.Auditor, log *slog.Logger) (api.Mounter, auth.Policy, error) {
	return nil, nil, nil
}
