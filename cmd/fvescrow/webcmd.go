package main

import (
	"errors"
	"log/slog"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/web"
	"github.com/spf13/cobra"
)

// webConfig configures the web UI.
type webConfig struct {
	enabled        bool
	keyDisplaySecs int
	// cmd is serve's command, to read the reveal rules the helpdesk flags
	// set, so the forms can explain them.
	cmd *cobra.Command
}

func (c *webConfig) register(cmd *cobra.Command) {
	c.cmd = cmd
	f := cmd.Flags()
	f.BoolVar(&c.enabled, "ui", true, "serve the helpdesk web UI under /ui/")
	f.IntVar(&c.keyDisplaySecs, "ui-key-display-seconds", 60, "seconds a revealed recovery key stays on screen before the page hides it")
}

// rules reads the reveal rules from serve's helpdesk flags (display only:
// the reveal chain enforces them).
func (c *webConfig) rules() web.Rules {
	var r web.Rules
	if c.cmd == nil {
		return r
	}
	r.MinReason, _ = c.cmd.Flags().GetInt("reveal-reason-min")
	r.TicketPattern, _ = c.cmd.Flags().GetString("reveal-ticket-pattern")
	return r
}

// build returns the web UI's routes (nil to serve none). sso is nil when
// OIDC sign-in is not configured.
func (c *webConfig) build(deps api.Deps, sso ssoRoutes, log *slog.Logger) (api.Mounter, auth.Policy, error) {
	if !c.enabled {
		return nil, nil, nil
	}
	if c.keyDisplaySecs < 5 || c.keyDisplaySecs > 600 {
		return nil, nil, badInput(errors.New("--ui-key-display-seconds must be between 5 and 600"))
	}
	cfg := web.Config{KeyDisplay: time.Duration(c.keyDisplaySecs) * time.Second, Rules: c.rules()}
	if sso != nil {
		cfg.SSO = sso
	}
	deps.Log = log
	return web.New(deps, cfg), web.Policy(), nil
}
