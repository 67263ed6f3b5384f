package main

import (
	"log/slog"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/spf13/cobra"
)

// webConfig configures the web UI.
type webConfig struct{}

func (c *webConfig) register(*cobra.Command) {}

// build returns the web UI's routes (nil to serve none). sso is nil when
// OIDC sign-in is not configured.
func (c *webConfig) build(deps api.Deps, sso ssoRoutes, log *slog.Logger) (api.Mounter, auth.Policy, error) {
	return nil, nil, nil
}
