// Package siem forwards the audit log to a SIEM: as RFC 5424 syslog
// messages over TCP or TLS (octet-counted framing, RFC 6587 and RFC 5425),
// or as signed JSON batches to a webhook.
//
// Delivery is at least once, in sequence order, with no gap: the Forwarder
// keeps a cursor (the last record sequence number the receiver confirmed) in
// the settings store and advances it only after a whole batch was
// confirmed. After a failure it resends from the cursor, so a receiver may
// see a record twice; records carry their sequence number and chain hash to
// deduplicate on.
//
// The JSON of each record is made by an Encoder the caller passes: the
// server passes the REST API's audit record format (api/wire), so a SIEM
// sees the same shape from syslog, the webhook, the API and `fvescrow audit
// export`. This package cannot import api itself (escrow must not import
// api).
package siem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
)

// Source reads the audit log.
type Source interface {
	// AuditRecords lists records in Seq order.
	AuditRecords(ctx context.Context, q escrow.AuditQuery) ([]escrow.AuditRecord, error)
	// AuditHead returns the last record, or escrow.ErrNotFound.
	AuditHead(ctx context.Context) (escrow.AuditRecord, error)
}

// CursorStore keeps the cursor between runs (the settings table).
type CursorStore interface {
	Setting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
}

// Encoder renders one record as JSON.
type Encoder func(escrow.AuditRecord) ([]byte, error)

// Entry is a record ready to send: the record and its JSON.
type Entry struct {
	Record escrow.AuditRecord
	JSON   []byte
}

// Sink delivers a batch of entries. It returns nil only when the receiver
// has confirmed all of them; on error the whole batch is sent again.
type Sink interface {
	Send(ctx context.Context, batch []Entry) error
}

// CursorSetting is the name of the setting holding a forwarder's cursor.
func CursorSetting(name string) string { return "siem.cursor." + name }

// Forwarder sends the audit log to one sink.
type Forwarder struct {
	name     string
	src      Source
	cursor   CursorStore
	sink     Sink
	encode   Encoder
	batch    int
	interval time.Duration
	first    time.Duration
	maxWait  time.Duration
	log      *slog.Logger
}

// Option configures a Forwarder.
type Option func(*Forwarder)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(f *Forwarder) { f.log = l } }

// WithBatch sets how many records one send carries at most (default 100).
func WithBatch(n int) Option { return func(f *Forwarder) { f.batch = max(n, 1) } }

// WithInterval sets how often Run looks for new records once it has caught
// up (default 5s).
func WithInterval(d time.Duration) Option { return func(f *Forwarder) { f.interval = d } }

// WithBackoff sets the wait after a failed send, doubled after each further
// failure up to maxWait (default 1s to 5m).
func WithBackoff(first, maxWait time.Duration) Option {
	return func(f *Forwarder) { f.first, f.maxWait = first, maxWait }
}

// NewForwarder returns a forwarder named name (the cursor's key: one per
// sink) reading src, keeping its cursor in cursor, sending to sink.
func NewForwarder(name string, src Source, cursor CursorStore, sink Sink, encode Encoder, opts ...Option) *Forwarder {
	if src == nil || cursor == nil || sink == nil || encode == nil {
		panic("siem: nil dependency")
	}
	f := &Forwarder{name: name, src: src, cursor: cursor, sink: sink, encode: encode, batch: 100, interval: 5 * time.Second,
		first: time.Second, maxWait: 5 * time.Minute, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(f)
	}
	f.log = f.log.With("component", "siem", "sink", name)
	return f
}

// Cursor returns the sequence number of the last record the receiver
// confirmed (0: none yet).
func (f *Forwarder) Cursor(ctx context.Context) (int64, error) {
	b, err := f.cursor.Setting(ctx, CursorSetting(f.name))
	if errors.Is(err, escrow.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("siem: read cursor: %w", err)
	}
	seq, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || seq < 0 {
		return 0, fmt.Errorf("siem: cursor %s holds %q, not a record number", CursorSetting(f.name), b)
	}
	return seq, nil
}

// Step sends the next batch after the cursor and advances the cursor once
// the sink confirmed it. It returns how many records it sent.
func (f *Forwarder) Step(ctx context.Context) (int, error) {
	after, err := f.Cursor(ctx)
	if err != nil {
		return 0, err
	}
	recs, err := f.src.AuditRecords(ctx, escrow.AuditQuery{AfterSeq: after, Limit: f.batch})
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	batch := make([]Entry, len(recs))
	want := after + 1
	for i, r := range recs {
		if r.Seq != want {
			// The chain never skips a number: a hole means records were
			// removed. Send what is there (hiding it helps nobody), loudly.
			f.log.Error("audit records missing: the chain has a gap; run fvescrow audit verify", "from", want, "to", r.Seq-1)
		}
		want = r.Seq + 1
		b, err := f.encode(r)
		if err != nil {
			return 0, fmt.Errorf("siem: encode record %d: %w", r.Seq, err)
		}
		batch[i] = Entry{Record: r, JSON: b}
	}
	if err := f.sink.Send(ctx, batch); err != nil {
		return 0, err
	}
	last := recs[len(recs)-1].Seq
	if err := f.cursor.PutSetting(ctx, CursorSetting(f.name), []byte(strconv.FormatInt(last, 10))); err != nil {
		// Sent but not recorded: the batch goes again (at least once).
		return 0, fmt.Errorf("siem: save cursor: %w", err)
	}
	return len(recs), nil
}

// Run forwards until ctx is done, retrying failures with backoff. Failures
// and how far the receiver lags behind the log are logged.
func (f *Forwarder) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := f.Step(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := f.interval
		switch {
		case err != nil:
			failures++
			wait = f.backoff(failures)
			f.log.Warn("SIEM forwarding failed; retrying from the cursor", "err", err, "failures", failures, "retry_in", wait, f.lag(ctx))
		case n > 0:
			if failures > 0 {
				f.log.Info("SIEM forwarding resumed", "after_failures", failures)
			}
			failures = 0
			f.log.Info("audit records forwarded", "records", n, f.lag(ctx))
			if n == f.batch {
				wait = 0
			}
		default:
			failures = 0
		}
		t.Reset(wait)
	}
}

func (f *Forwarder) backoff(failures int) time.Duration {
	d := f.first
	for i := 1; i < failures && d < f.maxWait; i++ {
		d *= 2
	}
	return min(d, f.maxWait)
}

// lag is a log attribute: the cursor, the log's head and the difference.
func (f *Forwarder) lag(ctx context.Context) slog.Attr {
	cur, err := f.Cursor(ctx)
	if err != nil {
		return slog.String("lag", "unknown")
	}
	head, err := f.src.AuditHead(ctx)
	if err != nil {
		return slog.Group("lag", "cursor", cur)
	}
	return slog.Group("lag", "cursor", cur, "head", head.Seq, "records", head.Seq-cur)
}
