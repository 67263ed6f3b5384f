package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/spf13/cobra"
)

// helpdeskConfig is how keys are revealed: the rules every reveal obeys,
// who needs a second person's approval, the limits, and who is told.
type helpdeskConfig struct {
	reasonMin       int
	ticketPattern   string
	approvalGroups  []string
	approvalPending time.Duration
	approvalWindow  time.Duration
	limitOperator   int
	limitDevice     int
	limitWindow     time.Duration
	blockFor        time.Duration
	securityEmails  []string
	notifyOwner     bool
	sessionIdle     time.Duration
	sessionMax      time.Duration
	cliTokenTTL     time.Duration
	adminUser       string
}

func (c *helpdeskConfig) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&c.reasonMin, "reveal-reason-min", 10, "minimum length of a reveal reason")
	f.StringVar(&c.ticketPattern, "reveal-ticket-pattern", escrow.DefaultTicketPattern, "regular expression a ticket ID must match")
	f.StringSliceVar(&c.approvalGroups, "approval-required-groups", nil, "IdP groups (or role:NAME) whose reveals need a second person's approval")
	f.DurationVar(&c.approvalPending, "approval-timeout", 30*time.Minute, "how long an approval request waits for an approver")
	f.DurationVar(&c.approvalWindow, "approval-window", 15*time.Minute, "how long an approved request may be used (once)")
	f.IntVar(&c.limitOperator, "reveal-limit-operator", 10, "reveals one person may make per window before being blocked (0: no limit)")
	f.IntVar(&c.limitDevice, "reveal-limit-device", 3, "reveals of one device per window (0: no limit)")
	f.DurationVar(&c.limitWindow, "reveal-limit-window", 24*time.Hour, "the window of the reveal limits")
	f.DurationVar(&c.blockFor, "block-duration", 0, "how long a rate-limit block lasts (0: until an admin lifts it)")
	f.StringSliceVar(&c.securityEmails, "notify-security-email", nil, "security channel e-mail addresses told about every reveal and alert")
	f.BoolVar(&c.notifyOwner, "notify-owner", true, "e-mail a device's owner when their key is revealed")
	f.DurationVar(&c.sessionIdle, "session-idle-timeout", 30*time.Minute, "web sessions end after this long without activity")
	f.DurationVar(&c.sessionMax, "session-max-age", 8*time.Hour, "web sessions end after this long regardless")
	f.DurationVar(&c.cliTokenTTL, "cli-token-ttl", 12*time.Hour, "lifetime of the tokens `fvescrow login` gets")
	f.StringVar(&c.adminUser, "admin-user", "admin", "the local admin created on first start")
}

func (c *helpdeskConfig) revealPolicy() (escrow.RevealPolicy, error) {
	re, err := regexp.Compile(c.ticketPattern)
	if err != nil {
		return escrow.RevealPolicy{}, fmt.Errorf("--reveal-ticket-pattern: %w", err)
	}
	if c.reasonMin < 1 {
		return escrow.RevealPolicy{}, errors.New("--reveal-reason-min must be at least 1")
	}
	return escrow.RevealPolicy{MinReasonLength: c.reasonMin, MaxReasonLength: 500, TicketPattern: re}, nil
}

// revealChain wraps the service with the reveal policy, outermost first:
// refusals audited, notifications before the key, limits, approvals.
func (c *helpdeskConfig) revealChain(svc escrow.Revealer, meta interface {
	escrow.ApprovalStore
	escrow.RateStore
	escrow.Notifier
	escrow.DeviceStore
	AppendAudit(ctx context.Context, e escrow.Event) (escrow.AuditRecord, error)
}, webhooks []string, log *slog.Logger) escrow.Revealer {
	n := escrow.NewNotifications(meta, meta, escrow.NotifyConfig{SecurityEmails: c.securityEmails, Webhooks: webhooks, NotifyOwner: c.notifyOwner})
	var r escrow.Revealer = escrow.NewApprovalGate(svc, meta, escrow.RequireForGroups(c.approvalGroups))
	r = escrow.NewRateLimiter(r, meta, n, escrow.RateLimits{PerOperator: c.limitOperator, PerDevice: c.limitDevice, Window: c.limitWindow, BlockFor: c.blockFor}, log)
	r = escrow.NewNotifying(r, n)
	return escrow.NewRefusalAudit(r, meta)
}

// ensureAdmin creates the first local admin on first start, with a one-time
// password shown once (it must be changed at first sign-in).
func ensureAdmin(ctx context.Context, local *auth.LocalAccounts, users escrow.UserStore, name string) (string, error) {
	us, err := users.Users(ctx)
	if err != nil {
		return "", err
	}
	if len(us) > 0 {
		return "", nil
	}
	nu, err := local.CreateUser(ctx, escrow.System, name, "Administrator", "", []escrow.Role{escrow.RoleAdmin}, false)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("created the local admin %q; its one-time password, shown only now and to be changed at first sign-in: %s",
		name, strings.TrimSpace(nu.OneTimePassword)), nil
}
