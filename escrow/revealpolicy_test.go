package escrow_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
)

// policyEnv is the reveal chain as cmd wires it, on the embedded backend:
// RefusalAudit(Notifying(RateLimiter(ApprovalGate(service)))).
type policyEnv struct {
	*env
	meta      *sqlstore.Store
	approvals *escrow.Approvals
	chain     escrow.Revealer
}

func newPolicyEnv(t *testing.T, limits escrow.RateLimits, approvalGroups []string, notifier escrow.Notifier) *policyEnv {
	t.Helper()
	secrets, metaStore := openEmbedded(t)
	e := newEnv(t, secrets, metaStore)
	meta := metaStore.(*sqlstore.Store)
	if notifier == nil {
		notifier = meta
	}
	n := escrow.NewNotifications(notifier, meta, escrow.NotifyConfig{SecurityEmails: []string{"security@example.com"}, Webhooks: []string{"siem"}, NotifyOwner: true})
	var chain escrow.Revealer = escrow.NewApprovalGate(e.svc, meta, escrow.RequireForGroups(approvalGroups))
	chain = escrow.NewRateLimiter(chain, meta, n, limits, e.svc.Logger())
	chain = escrow.NewNotifying(chain, n)
	chain = escrow.NewRefusalAudit(chain, meta)
	return &policyEnv{env: e, meta: meta, approvals: escrow.NewApprovals(meta, escrow.DefaultRevealPolicy(), escrow.ApprovalTiming{}), chain: chain}
}

func (p *policyEnv) escrowKey(t *testing.T, d escrow.Device, key string) {
	t.Helper()
	if _, err := p.svc.UpsertDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := p.svc.Ingest(ctx, d, macCMS(t, p.id.Certificate, key), escrow.SourceSecurityInfo); err != nil {
		t.Fatal(err)
	}
}

var bobActor = escrow.Actor{Kind: escrow.ActorUser, ID: "local:bob", Name: "Bob"}

func req(actor escrow.Actor, groups ...string) escrow.RevealRequest {
	return escrow.RevealRequest{Actor: actor, Groups: groups, Device: dev.ID, Reason: "user forgot password at login", Ticket: "IT-1234"}
}

func TestApprovalWorkflow(t *testing.T) {
	p := newPolicyEnv(t, escrow.RateLimits{}, []string{"tier1"}, nil)
	p.escrowKey(t, dev, prk1)

	// Tier 1 needs an approval; others do not.
	if _, err := p.chain.Reveal(ctx, req(alice(), "tier1")); !errors.Is(err, escrow.ErrApprovalRequired) {
		t.Fatalf("without approval: %v", err)
	}
	if r, err := p.chain.Reveal(ctx, req(bobActor, "tier2")); err != nil || r.Key.Expose() != prk1 {
		t.Fatalf("no approval needed: %v", err)
	}
	ap, err := p.approvals.Request(ctx, req(alice(), "tier1"))
	if err != nil || ap.State != escrow.ApprovalPending {
		t.Fatalf("request %+v %v", ap, err)
	}
	// Not yet approved; no self-approval.
	r := req(alice(), "tier1")
	r.ApprovalID = ap.ID
	if _, err := p.chain.Reveal(ctx, r); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("pending approval used: %v", err)
	}
	if _, err := p.approvals.Decide(ctx, ap.ID, alice(), true, ""); !errors.Is(err, escrow.ErrForbidden) {
		t.Fatalf("self-approval: %v", err)
	}
	if _, err := p.approvals.Decide(ctx, ap.ID, bobActor, true, "checked the ticket"); err != nil {
		t.Fatal(err)
	}
	// Someone else cannot use (or see) Alice's approval.
	other := req(escrow.Actor{Kind: escrow.ActorUser, ID: "local:mallory"}, "tier1")
	other.ApprovalID = ap.ID
	if _, err := p.chain.Reveal(ctx, other); !errors.Is(err, escrow.ErrNotFound) {
		t.Fatalf("another operator used the approval: %v", err)
	}
	// The approval is bound to its reason and ticket.
	changed := r
	changed.Ticket = "IT-9999"
	if _, err := p.chain.Reveal(ctx, changed); !errors.Is(err, escrow.ErrForbidden) {
		t.Fatalf("different ticket: %v", err)
	}
	got, err := p.chain.Reveal(ctx, r)
	if err != nil || got.Key.Expose() != prk1 || got.Audit.Detail["approval"] != ap.ID || got.Audit.Detail["approver"] != bobActor.ID {
		t.Fatalf("reveal with approval: %+v %v", got.Audit, err)
	}
	if _, err := p.chain.Reveal(ctx, r); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("approval reused: %v", err)
	}
	// Expiry: an approval unused within its window is spent.
	late := escrow.NewApprovals(p.meta, escrow.DefaultRevealPolicy(), escrow.ApprovalTiming{Pending: time.Minute, Window: time.Millisecond})
	ap2, _ := late.Request(ctx, req(alice(), "tier1"))
	if _, err := late.Decide(ctx, ap2.ID, bobActor, true, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	r.ApprovalID = ap2.ID
	if _, err := p.chain.Reveal(ctx, r); !errors.Is(err, escrow.ErrConflict) {
		t.Fatalf("expired approval: %v", err)
	}
	refused, _ := p.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionRevealRefused})
	if len(refused) != 6 {
		t.Errorf("%d refused reveals audited, want 6", len(refused))
	}
}

func TestRateLimitsBlockAndAlert(t *testing.T) {
	p := newPolicyEnv(t, escrow.RateLimits{PerOperator: 2, PerDevice: 3, Window: time.Hour}, nil, nil)
	p.escrowKey(t, dev, prk1)
	other := escrow.Device{ID: "OTHER-1", Serial: "S2"}
	p.escrowKey(t, other, prk2)
	for i := 0; i < 2; i++ {
		if _, err := p.chain.Reveal(ctx, req(alice())); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.chain.Reveal(ctx, req(alice())); !errors.Is(err, escrow.ErrRateLimited) {
		t.Fatalf("third reveal: %v", err)
	}
	// Blocked now, for every device.
	ro := req(alice())
	ro.Device = other.ID
	if _, err := p.chain.Reveal(ctx, ro); !errors.Is(err, escrow.ErrForbidden) || !strings.Contains(err.Error(), "blocked") {
		t.Fatalf("blocked operator: %v", err)
	}
	if recs, _ := p.svc.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionOperatorBlocked}); len(recs) != 1 {
		t.Fatalf("block not audited")
	}
	alerts, _ := p.meta.Notifications(ctx, escrow.NotificationQuery{})
	found := false
	for _, n := range alerts {
		if strings.Contains(n.Subject, "operator blocked") && n.Target == "security@example.com" && strings.Contains(n.Body, alice().ID) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no alert to the security channel: %+v", alerts)
	}
	// Lifting the block lets them work again.
	if err := p.meta.LiftBlocks(ctx, alice().ID, bobActor, time.Now(), escrow.Event{Time: time.Now(), Actor: bobActor, Action: escrow.ActionOperatorUnblocked}); err != nil {
		t.Fatal(err)
	}
	// The device limit: a third reveal of the same device by anyone.
	if _, err := p.chain.Reveal(ctx, req(bobActor)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.chain.Reveal(ctx, req(escrow.Actor{Kind: escrow.ActorUser, ID: "local:carol"})); !errors.Is(err, escrow.ErrRateLimited) {
		t.Fatalf("device limit: %v", err)
	}
}

func TestEveryRevealNotifies(t *testing.T) {
	p := newPolicyEnv(t, escrow.RateLimits{}, nil, nil)
	owned := dev
	owned.OwnerEmail = "ada@example.com"
	p.escrowKey(t, owned, prk1)
	rv, err := p.chain.Reveal(ctx, req(alice()))
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := p.meta.Notifications(ctx, escrow.NotificationQuery{})
	targets := map[string]bool{}
	for _, n := range ns {
		targets[n.Channel+":"+n.Target] = true
		if strings.Contains(n.Body, prk1) || n.AuditSeq != rv.Audit.Seq {
			t.Errorf("notification %+v", n)
		}
	}
	for _, want := range []string{"email:ada@example.com", "email:security@example.com", "webhook:siem"} {
		if !targets[want] {
			t.Errorf("no notification to %s (got %v)", want, targets)
		}
	}
}

// failingNotifier stands in for a notification queue that cannot be
// written (the failure mode matters, not the queue).
type failingNotifier struct{}

func (failingNotifier) EnqueueNotification(context.Context, escrow.Notification) (escrow.Notification, error) {
	return escrow.Notification{}, errors.New("queue unavailable")
}

func TestNoNotificationNoKey(t *testing.T) {
	p := newPolicyEnv(t, escrow.RateLimits{}, nil, failingNotifier{})
	p.escrowKey(t, dev, prk1)
	rv, err := p.chain.Reveal(ctx, req(alice()))
	if err == nil || !rv.Key.IsZero() {
		t.Fatalf("a key left without its notification: %v", err)
	}
}
