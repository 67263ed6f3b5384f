package escrow

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Revealer is anything that reveals a key: the Service, or a decorator
// adding policy around it. Decorators compose:
//
//	Notifying(RateLimiter(ApprovalGate(service)))
type Revealer interface {
	Reveal(ctx context.Context, r RevealRequest) (Revealed, error)
}

var _ Revealer = (*Service)(nil)

// Audit actions of the reveal policy.
const (
	ActionApprovalRequested = "approval.requested"
	ActionApprovalApproved  = "approval.approved"
	ActionApprovalDenied    = "approval.denied"
	ActionOperatorBlocked   = "operator.blocked"
	ActionOperatorUnblocked = "operator.unblocked"
	ActionRevealRefused     = "key.reveal-refused"
)

// ApprovalTiming says how long a request waits for an approver and how long
// an approved request stays usable.
type ApprovalTiming struct {
	Pending time.Duration // default 30 minutes
	Window  time.Duration // default 15 minutes
}

func (t ApprovalTiming) withDefaults() ApprovalTiming {
	if t.Pending <= 0 {
		t.Pending = 30 * time.Minute
	}
	if t.Window <= 0 {
		t.Window = 15 * time.Minute
	}
	return t
}

// Approvals is the two-person approval workflow.
type Approvals struct {
	store  ApprovalStore
	policy RevealPolicy
	timing ApprovalTiming
	now    func() time.Time
}

// NewApprovals returns the approval workflow. Requests are validated with
// the same reason and ticket rules as reveals.
func NewApprovals(store ApprovalStore, policy RevealPolicy, timing ApprovalTiming) *Approvals {
	return &Approvals{store: store, policy: policy, timing: timing.withDefaults(), now: time.Now}
}

// WithNow sets the clock (tests).
func (a *Approvals) WithNow(now func() time.Time) *Approvals { a.now = now; return a }

func newID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Request asks for a second person's approval to reveal a device's key.
func (a *Approvals) Request(ctx context.Context, r RevealRequest) (Approval, error) {
	if err := a.policy.Validate(r); err != nil {
		return Approval{}, err
	}
	if err := r.Device.Validate(); err != nil {
		return Approval{}, err
	}
	now := a.now()
	ap := Approval{ID: newID("apr_"), Device: r.Device, Requester: r.Actor, Reason: strings.TrimSpace(r.Reason),
		Ticket: strings.TrimSpace(r.Ticket), State: ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(a.timing.Pending)}
	err := a.store.CreateApproval(ctx, ap, Event{Time: now, Actor: r.Actor, Action: ActionApprovalRequested, Device: r.Device,
		Reason: ap.Reason, Ticket: ap.Ticket, Detail: map[string]string{"approval": ap.ID}})
	return ap, err
}

// Decide approves or denies a request. The approver must be someone else.
func (a *Approvals) Decide(ctx context.Context, id string, approver Actor, approve bool, note string) (Approval, error) {
	now := a.now()
	action := ActionApprovalDenied
	if approve {
		action = ActionApprovalApproved
	}
	cur, err := a.store.Approval(ctx, id)
	if err != nil {
		return Approval{}, err
	}
	return a.store.DecideApproval(ctx, id, approver, approve, note, now, now.Add(a.timing.Window), Event{Time: now, Actor: approver,
		Action: action, Device: cur.Device, Reason: note, Detail: map[string]string{"approval": id, "requester": cur.Requester.ID}})
}

// Get returns an approval.
func (a *Approvals) Get(ctx context.Context, id string) (Approval, error) {
	return a.store.Approval(ctx, id)
}

// List lists approvals.
func (a *Approvals) List(ctx context.Context, q ApprovalQuery) ([]Approval, error) {
	return a.store.Approvals(ctx, q)
}

// Now is the workflow's clock, for callers that show effective states.
func (a *Approvals) Now() time.Time { return a.now() }

// ApprovalGate requires an approval from a second person for requesters in
// the configured groups, and consumes it: single use, bound to requester,
// device, reason and ticket.
type ApprovalGate struct {
	next     Revealer
	store    ApprovalStore
	requires func(RevealRequest) bool
	now      func() time.Time
}

// NewApprovalGate wraps next. requires decides who needs approval.
func NewApprovalGate(next Revealer, store ApprovalStore, requires func(RevealRequest) bool) *ApprovalGate {
	return &ApprovalGate{next: next, store: store, requires: requires, now: time.Now}
}

// RequireForGroups needs approval when the requester is in any of groups
// (roles count as groups too, as "role:<name>").
func RequireForGroups(groups []string) func(RevealRequest) bool {
	return func(r RevealRequest) bool {
		for _, g := range r.Groups {
			if slices.Contains(groups, g) {
				return true
			}
		}
		return false
	}
}

// Reveal checks and consumes the approval, then reveals.
func (g *ApprovalGate) Reveal(ctx context.Context, r RevealRequest) (Revealed, error) {
	if r.ApprovalID == "" {
		if g.requires(r) {
			return Revealed{}, fmt.Errorf("%w: your group needs a second person's approval; request one first", ErrApprovalRequired)
		}
		return g.next.Reveal(ctx, r)
	}
	ap, err := g.store.Approval(ctx, r.ApprovalID)
	if err != nil {
		return Revealed{}, err
	}
	if ap.Requester.ID != r.Actor.ID {
		// Someone else's approval is not theirs to see or use.
		return Revealed{}, fmt.Errorf("approval %s: %w", r.ApprovalID, ErrNotFound)
	}
	if ap.Reason != strings.TrimSpace(r.Reason) || ap.Ticket != strings.TrimSpace(r.Ticket) {
		return Revealed{}, fmt.Errorf("%w: the reason and ticket must be the ones approved", ErrForbidden)
	}
	ap, err = g.store.UseApproval(ctx, r.ApprovalID, r.Actor, r.Device, g.now())
	if err != nil {
		return Revealed{}, err
	}
	r.Detail = withDetail(r.Detail, map[string]string{"approval": ap.ID, "approver": ap.Approver.ID})
	return g.next.Reveal(ctx, r)
}

func withDetail(d map[string]string, more map[string]string) map[string]string {
	out := make(map[string]string, len(d)+len(more))
	for k, v := range d {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// RateLimits bound reveals. A zero limit disables that check.
type RateLimits struct {
	PerOperator int           // reveals by one person per Window; reaching it blocks them
	PerDevice   int           // reveals of one device per Window
	Window      time.Duration // default 24h
	BlockFor    time.Duration // how long a block lasts; zero: until an admin lifts it
}

// RateStore counts reveals and keeps blocks.
type RateStore interface {
	CountAudit(ctx context.Context, q AuditQuery) (int, error)
	BlockStore
}

// RateLimiter refuses reveals past the limits. An operator who reaches the
// limit is blocked and the security channel is alerted; a device revealed
// too often is refused and alerted on.
type RateLimiter struct {
	next   Revealer
	store  RateStore
	alert  Alerter
	limits RateLimits
	now    func() time.Time
	log    *slog.Logger
}

// Alerter sends an alert to the security channel.
type Alerter interface {
	Alert(ctx context.Context, subject string, fields map[string]string, auditSeq int64) error
}

// NewRateLimiter wraps next.
func NewRateLimiter(next Revealer, store RateStore, alert Alerter, limits RateLimits, log *slog.Logger) *RateLimiter {
	if limits.Window <= 0 {
		limits.Window = 24 * time.Hour
	}
	return &RateLimiter{next: next, store: store, alert: alert, limits: limits, now: time.Now, log: log.With("component", "rate-limit")}
}

// Reveal applies the limits, then reveals.
func (l *RateLimiter) Reveal(ctx context.Context, r RevealRequest) (Revealed, error) {
	now := l.now()
	if b, err := l.store.ActiveBlock(ctx, r.Actor.ID, now); err == nil {
		return Revealed{}, fmt.Errorf("%w: reveals are blocked for you (%s); an admin must lift the block", ErrForbidden, b.Reason)
	} else if !errors.Is(err, ErrNotFound) {
		return Revealed{}, err
	}
	since := now.Add(-l.limits.Window)
	if l.limits.PerOperator > 0 {
		n, err := l.store.CountAudit(ctx, AuditQuery{ActorID: r.Actor.ID, Action: ActionKeyRevealed, Since: since})
		if err != nil {
			return Revealed{}, err
		}
		if n >= l.limits.PerOperator {
			reason := fmt.Sprintf("%d reveals within %v", n, l.limits.Window)
			b := Block{ActorID: r.Actor.ID, Reason: reason, CreatedAt: now}
			if l.limits.BlockFor > 0 {
				b.Until = now.Add(l.limits.BlockFor)
			}
			if err := l.store.BlockActor(ctx, b, Event{Time: now, Actor: System, Action: ActionOperatorBlocked, Device: r.Device,
				Reason: reason, Detail: map[string]string{"operator": r.Actor.ID}}); err != nil {
				return Revealed{}, err
			}
			l.raise(ctx, "fvescrow: operator blocked after too many recovery key reveals", map[string]string{
				"operator": r.Actor.ID, "reason": reason, "device": string(r.Device)})
			return Revealed{}, fmt.Errorf("%w: you reached %d reveals in %v and are now blocked; an admin was alerted", ErrRateLimited, n, l.limits.Window)
		}
	}
	if l.limits.PerDevice > 0 {
		n, err := l.store.CountAudit(ctx, AuditQuery{Device: r.Device, Action: ActionKeyRevealed, Since: since})
		if err != nil {
			return Revealed{}, err
		}
		if n >= l.limits.PerDevice {
			l.raise(ctx, "fvescrow: a device's recovery key was requested too often", map[string]string{
				"operator": r.Actor.ID, "device": string(r.Device), "reason": fmt.Sprintf("%d reveals within %v", n, l.limits.Window)})
			return Revealed{}, fmt.Errorf("%w: this device's key was revealed %d times in %v; the security team was alerted", ErrRateLimited, n, l.limits.Window)
		}
	}
	return l.next.Reveal(ctx, r)
}

func (l *RateLimiter) raise(ctx context.Context, subject string, fields map[string]string) {
	if err := l.alert.Alert(ctx, subject, fields, 0); err != nil {
		l.log.ErrorContext(ctx, "alert could not be queued", "subject", subject, "err", err)
	}
}

// NotifyConfig says who hears about reveals and alerts.
type NotifyConfig struct {
	SecurityEmails []string // the security channel by e-mail
	Webhooks       []string // names of JSON webhooks (the sender knows their URLs)
	NotifyOwner    bool     // e-mail the device's owner, when known
}

// Notifications turns reveals and alerts into queued notifications.
type Notifications struct {
	store   Notifier
	devices interface {
		Device(ctx context.Context, id DeviceID) (Device, error)
	}
	cfg NotifyConfig
}

// NewNotifications returns the notification source.
func NewNotifications(store Notifier, devices interface {
	Device(ctx context.Context, id DeviceID) (Device, error)
}, cfg NotifyConfig) *Notifications {
	return &Notifications{store: store, devices: devices, cfg: cfg}
}

func (n *Notifications) send(ctx context.Context, emails []string, subject, text string, fields map[string]string, auditSeq int64) error {
	var errs []error
	for _, to := range emails {
		if _, err := n.store.EnqueueNotification(ctx, Notification{Channel: "email", Target: to, Subject: subject, Body: text, AuditSeq: auditSeq}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(n.cfg.Webhooks) > 0 {
		body, err := json.Marshal(map[string]any{"event": subject, "fields": fields, "audit_seq": auditSeq})
		if err != nil {
			return err
		}
		for _, w := range n.cfg.Webhooks {
			if _, err := n.store.EnqueueNotification(ctx, Notification{Channel: "webhook", Target: w, Subject: subject, Body: string(body), AuditSeq: auditSeq}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Alert queues an alert for the security channel.
func (n *Notifications) Alert(ctx context.Context, subject string, fields map[string]string, auditSeq int64) error {
	return n.send(ctx, n.cfg.SecurityEmails, subject, formatFields(subject, fields), fields, auditSeq)
}

func formatFields(title string, fields map[string]string) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(title + "\n\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, fields[k])
	}
	return b.String()
}

// Notifying queues a notification for every reveal, to the device's owner
// and the security channel, before the key is returned: a reveal nobody
// hears about does not happen.
type Notifying struct {
	next Revealer
	n    *Notifications
}

// NewNotifying wraps next.
func NewNotifying(next Revealer, n *Notifications) *Notifying { return &Notifying{next: next, n: n} }

// Reveal reveals, then queues the notifications; if they cannot be queued,
// the key is not returned.
func (w *Notifying) Reveal(ctx context.Context, r RevealRequest) (Revealed, error) {
	rv, err := w.next.Reveal(ctx, r)
	if err != nil {
		return Revealed{}, err
	}
	d, _ := w.n.devices.Device(ctx, r.Device)
	fields := map[string]string{
		"device": string(r.Device), "serial": d.Serial, "hostname": d.Hostname, "revealed_by": r.Actor.ID,
		"reason": rv.Audit.Reason, "ticket": rv.Audit.Ticket, "time": rv.Audit.Time.Format(time.RFC3339), "audit_record": fmt.Sprint(rv.Audit.Seq),
	}
	if ap := r.Detail["approval"]; ap != "" {
		fields["approval"] = ap
	}
	subject := "fvescrow: a FileVault recovery key was revealed"
	text := formatFields(subject, fields) + "\nThe key will be rotated once it has been used. No key is included in this message.\n"
	to := append([]string(nil), w.n.cfg.SecurityEmails...)
	if w.n.cfg.NotifyOwner && d.OwnerEmail != "" {
		to = append(to, d.OwnerEmail)
	}
	if err := w.n.send(ctx, to, subject, text, fields, rv.Audit.Seq); err != nil {
		rv.Key = rv.Key.Discard()
		return Revealed{}, fmt.Errorf("reveal: queue notifications: %w", err)
	}
	return rv, nil
}

// RefusalAudit records every refused reveal (missing approval, limits,
// blocks, bad reasons) so probing shows up in the audit log too.
type RefusalAudit struct {
	next  Revealer
	audit interface {
		AppendAudit(ctx context.Context, e Event) (AuditRecord, error)
	}
	now func() time.Time
}

// NewRefusalAudit wraps next.
func NewRefusalAudit(next Revealer, audit interface {
	AppendAudit(ctx context.Context, e Event) (AuditRecord, error)
}) *RefusalAudit {
	return &RefusalAudit{next: next, audit: audit, now: time.Now}
}

// Reveal reveals; a refusal is audited with its reason.
func (a *RefusalAudit) Reveal(ctx context.Context, r RevealRequest) (Revealed, error) {
	rv, err := a.next.Reveal(ctx, r)
	if err == nil || r.Actor.ID == "" {
		return rv, err
	}
	why := "error"
	for _, s := range []error{ErrInvalid, ErrApprovalRequired, ErrRateLimited, ErrForbidden, ErrConflict, ErrNotFound} {
		if errors.Is(err, s) {
			why = s.Error()
			break
		}
	}
	if why == "error" {
		return rv, err // an outage is not a refusal
	}
	detail := withDetail(r.Detail, map[string]string{"refused": why, "message": err.Error()})
	if r.ApprovalID != "" {
		detail["approval"] = r.ApprovalID
	}
	if _, aerr := a.audit.AppendAudit(ctx, Event{Time: a.now(), Actor: r.Actor, Action: ActionRevealRefused, Device: r.Device,
		Reason: truncate(strings.TrimSpace(r.Reason), 500), Ticket: truncate(strings.TrimSpace(r.Ticket), 100), Detail: detail}); aerr != nil {
		return rv, errors.Join(err, aerr)
	}
	return rv, err
}
