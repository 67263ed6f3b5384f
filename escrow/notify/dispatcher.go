package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fvescrow/fvescrow/escrow"
)

// Store is the part of escrow.NotificationStore the Dispatcher uses.
type Store interface {
	ClaimNotifications(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]escrow.Notification, error)
	FinishNotification(ctx context.Context, id int64, delivered bool, errText string, next, at time.Time) error
}

// Retry is the retry schedule: the wait after the first failure is First,
// doubled after each further failure up to Max, and the notification fails
// for good after Attempts tries.
type Retry struct {
	Attempts int           // tries in all, the first included (default 8)
	First    time.Duration // default 10 minutes
	Max      time.Duration // default 12 hours
}

// DefaultRetry tries 8 times over about 21 hours (waits of 10, 20, 40, 80,
// 160, 320 and 640 minutes): long enough to ride out a mail server's
// maintenance window, short enough that a failure shows the same day.
var DefaultRetry = Retry{Attempts: 8, First: 10 * time.Minute, Max: 12 * time.Hour}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetry.Attempts
	}
	if r.First <= 0 {
		r.First = DefaultRetry.First
	}
	if r.Max <= 0 {
		r.Max = DefaultRetry.Max
	}
	return r
}

// Delay is the wait after the failed-th failed try (1 for the first).
func (r Retry) Delay(failed int) time.Duration {
	r = r.withDefaults()
	d := r.First
	for i := 1; i < failed && d < r.Max; i++ {
		d *= 2
	}
	return min(d, r.Max)
}

// Dispatcher delivers due notifications through the sender of their channel.
type Dispatcher struct {
	store    Store
	senders  map[string]Sender
	retry    Retry
	owner    string
	batch    int
	timeout  time.Duration
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
}

// Option configures a Dispatcher.
type Option func(*Dispatcher)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(d *Dispatcher) { d.log = l } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(d *Dispatcher) { d.now = now } }

// WithRetry sets the retry schedule (default DefaultRetry).
func WithRetry(r Retry) Option { return func(d *Dispatcher) { d.retry = r.withDefaults() } }

// WithOwner names this dispatcher in claims (default: host, pid and a
// random suffix).
func WithOwner(owner string) Option { return func(d *Dispatcher) { d.owner = owner } }

// WithBatch sets how many notifications one claim takes (default 10).
func WithBatch(n int) Option { return func(d *Dispatcher) { d.batch = max(n, 1) } }

// WithSendTimeout bounds one delivery attempt (default 30s).
func WithSendTimeout(t time.Duration) Option { return func(d *Dispatcher) { d.timeout = t } }

// WithInterval sets how often Run looks for due notifications (default 10s).
func WithInterval(t time.Duration) Option { return func(d *Dispatcher) { d.interval = t } }

// NewDispatcher returns a dispatcher sending through senders, keyed by
// channel (ChannelEmail, ChannelWebhook). A notification whose channel has
// no sender fails at once: it is visible as failed rather than waiting for a
// sender that is not configured.
func NewDispatcher(store Store, senders map[string]Sender, opts ...Option) *Dispatcher {
	if store == nil {
		panic("notify: nil store")
	}
	d := &Dispatcher{store: store, senders: senders, retry: DefaultRetry, batch: 10, timeout: 30 * time.Second,
		interval: 10 * time.Second, now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(d)
	}
	if d.owner == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		d.owner = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	d.log = d.log.With("component", "notify")
	return d
}

// Run delivers due notifications until ctx is done.
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := d.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Error("notification delivery", "err", err)
		}
		wait := d.interval
		if n == d.batch && err == nil {
			wait = 0 // more may be due
		}
		t.Reset(wait)
	}
}

// RunOnce claims one batch of due notifications and tries each once. It
// returns how many it claimed.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) {
	now := d.now()
	// The lease outlasts the whole batch, each attempt being bounded by the
	// send timeout: no other dispatcher can claim a notification while this
	// one may still be sending it.
	lease := now.Add(time.Duration(d.batch)*d.timeout + time.Minute)
	ns, err := d.store.ClaimNotifications(ctx, d.owner, now, lease, d.batch)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, n := range ns {
		if ctx.Err() != nil {
			break // the rest are claimed until the lease ends, then retried
		}
		if err := d.deliver(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return len(ns), errors.Join(errs...)
}

func (d *Dispatcher) deliver(ctx context.Context, n escrow.Notification) error {
	attempt := n.Attempts + 1
	log := d.log.With("notification", n.ID, "channel", n.Channel, "target", n.Target, "audit_seq", n.AuditSeq, "attempt", attempt)
	err := checkNoKey(n)
	if err == nil {
		err = d.send(ctx, n)
	}
	if err != nil && ctx.Err() != nil {
		// Shutting down mid-send: not the receiver's fault, so not counted.
		// The lease ends and another run tries again.
		return nil
	}
	at := d.now()
	if err == nil {
		log.Info("notification delivered")
		return d.store.FinishNotification(ctx, n.ID, true, "", time.Time{}, at)
	}
	text := safeText(err)
	if IsPermanent(err) || attempt >= d.retry.Attempts {
		log.Error("notification failed for good; it stays listed as failed", "err", text, "retryable", !IsPermanent(err))
		return d.store.FinishNotification(ctx, n.ID, false, text, time.Time{}, at)
	}
	next := at.Add(d.retry.Delay(attempt))
	log.Warn("notification delivery failed; will retry", "err", text, "of", d.retry.Attempts, "next_attempt", next)
	return d.store.FinishNotification(ctx, n.ID, false, text, next, at)
}

func (d *Dispatcher) send(ctx context.Context, n escrow.Notification) error {
	s, ok := d.senders[n.Channel]
	if !ok || s == nil {
		return Permanent(fmt.Errorf("no %s delivery is configured", n.Channel))
	}
	sctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return s.Send(sctx, n)
}

// safeText is an error as stored and shown: one line, bounded. Senders
// build their errors without secrets; this only keeps them tidy.
func safeText(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	const maxLen = 500
	if len(s) > maxLen {
		s = s[:maxLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}
