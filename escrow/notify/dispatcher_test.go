package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/notify"
)

// TestTwoDispatchersDeliverOnce runs two dispatchers (two serve processes)
// on one database at once: every notification reaches the receiver exactly
// once.
func TestTwoDispatchersDeliverOnce(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			sink, srv := newHookSink(t)
			st := b.open(t)
			const total = 60
			for i := range total {
				enqueue(t, st, escrow.Notification{Channel: "webhook", Target: "soc", Subject: "s", Body: fmt.Sprintf(`{"n":%d}`, i), AuditSeq: int64(i)})
			}
			hooks := webhooks(t, nil, "soc", srv.URL, hookSecret)
			var wg sync.WaitGroup
			for i := range 2 {
				d := notify.NewDispatcher(st, map[string]notify.Sender{"webhook": hooks}, notify.WithBatch(3), notify.WithOwner(fmt.Sprint("replica-", i)))
				wg.Go(func() {
					for {
						n, err := d.RunOnce(ctx)
						if err != nil {
							t.Error(err)
							return
						}
						if n == 0 {
							return
						}
					}
				})
			}
			wg.Wait()
			seen := map[string]int{}
			for _, r := range sink.requests() {
				seen[r.delivery]++
			}
			if len(seen) != total {
				t.Errorf("%d distinct notifications delivered, want %d", len(seen), total)
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("%s delivered %d times", id, n)
				}
			}
			pending, _ := st.Notifications(ctx, escrow.NotificationQuery{States: []escrow.NotificationState{escrow.NotificationPending, escrow.NotificationFailed}})
			if len(pending) != 0 {
				t.Errorf("%d notifications not delivered", len(pending))
			}
		})
	}
}

// TestNoSenderFailsVisibly: e-mail queued while no SMTP server is configured
// fails at once with a reason, instead of waiting forever.
func TestNoSenderFailsVisibly(t *testing.T) {
	t.Parallel()
	st := sqlite(t)
	revealAlert(t, st, "security@example.com")
	var logs bytes.Buffer
	d := notify.NewDispatcher(st, nil, notify.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	n := only(t, st)
	if n.State != escrow.NotificationFailed || n.LastError != "no email delivery is configured" {
		t.Fatalf("%+v", n)
	}
	var line struct {
		Level, Msg, Target string
		Notification       int64
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Level != "ERROR" || line.Notification != n.ID || line.Target != "security@example.com" {
		t.Errorf("log %s (%v)", logs.String(), err)
	}
}

// TestRunStopsOnCancel: Run delivers what is due and returns when its
// context ends.
func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	sink, srv := newHookSink(t)
	st := sqlite(t)
	enqueue(t, st, escrow.Notification{Channel: "webhook", Target: "soc", Subject: "s", Body: `{}`})
	delivered := make(chan struct{})
	d := notify.NewDispatcher(st, map[string]notify.Sender{"webhook": notifyingSender{webhooks(t, nil, "soc", srv.URL, hookSecret), delivered}},
		notify.WithInterval(time.Hour))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(runCtx); close(done) }()
	select {
	case <-delivered:
	case <-time.After(30 * time.Second):
		t.Fatal("Run delivered nothing")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if len(sink.requests()) != 1 {
		t.Fatalf("%d requests", len(sink.requests()))
	}
}

type notifyingSender struct {
	notify.Sender
	done chan struct{}
}

func (s notifyingSender) Send(ctx context.Context, n escrow.Notification) error {
	err := s.Sender.Send(ctx, n)
	close(s.done)
	return err
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	var total time.Duration
	for i := 1; i < notify.DefaultRetry.Attempts; i++ {
		total += notify.DefaultRetry.Delay(i)
	}
	if total < 18*time.Hour || total > 26*time.Hour {
		t.Errorf("the default schedule spans %v, want about a day", total)
	}
	r := notify.Retry{Attempts: 5, First: time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for i := 1; i <= 5; i++ {
		got = append(got, r.Delay(i))
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}

func TestSecretRedacts(t *testing.T) {
	t.Parallel()
	s := notify.NewSecret([]byte("hunter2-secret"))
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "secret", s)
	js, _ := json.Marshal(struct{ S notify.Secret }{s})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), logs.String(), string(js)} {
		if strings.Contains(out, "hunter2") || !strings.Contains(out, "REDACTED") {
			t.Errorf("secret printed as %q", out)
		}
	}
}
