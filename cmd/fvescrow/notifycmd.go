package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"
)

// notifyConfig configures notification delivery (SMTP, webhooks) and SIEM
// forwarding of the audit log.
type notifyConfig struct{}

func (c *notifyConfig) register(*cobra.Command) {}

// build validates the configuration and returns the names of the JSON
// webhooks reveals notify, and the background workers to run.
func (c *notifyConfig) build(ctx context.Context, st *stores, log *slog.Logger) (webhooks []string, workers []func(context.Context), err error) {
	return nil, nil, nil
}
