package notify_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/notify"
)

const hookSecret = "whsec-0123456789abcdef-test"

// hookSink is an HTTP receiver that checks signatures as docs/notifications.md
// tells receivers to, independently of notify.Sign, and answers with the
// scripted status codes (then 200).
type hookSink struct {
	t      *testing.T
	secret string

	mu       sync.Mutex
	statuses []int
	got      []hookRequest
}

type hookRequest struct {
	delivery, event string
	body            []byte
	signed          bool
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts := r.Header.Get("Fvescrow-Timestamp")
	mac := hmac.New(sha256.New, []byte(h.secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := "v1=" + hex.EncodeToString(mac.Sum(nil))
	sec, err := strconv.ParseInt(ts, 10, 64)
	signed := err == nil && hmac.Equal([]byte(r.Header.Get("Fvescrow-Signature")), []byte(want)) &&
		time.Since(time.Unix(sec, 0)).Abs() < 5*time.Minute
	h.mu.Lock()
	h.got = append(h.got, hookRequest{delivery: r.Header.Get("Fvescrow-Delivery"), event: r.Header.Get("Fvescrow-Event"), body: body, signed: signed})
	code := http.StatusOK
	if len(h.statuses) > 0 {
		code, h.statuses = h.statuses[0], h.statuses[1:]
	}
	h.mu.Unlock()
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		code = http.StatusBadRequest
	}
	w.WriteHeader(code)
}

func (h *hookSink) requests() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.got...)
}

func newHookSink(t *testing.T, statuses ...int) (*hookSink, *httptest.Server) {
	h := &hookSink{t: t, secret: hookSecret, statuses: statuses}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func webhooks(t *testing.T, client *http.Client, name, url, secret string) *notify.Webhooks {
	t.Helper()
	e, err := notify.ParseEndpoint(name, url)
	if err != nil {
		t.Fatal(err)
	}
	e.Secret = notify.NewSecret([]byte(secret))
	w, err := notify.NewWebhooks([]notify.Endpoint{e}, client)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWebhookDelivery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		statuses     []int
		wantStates   []escrow.NotificationState // after each run, a minute apart
		wantRequests int
		wantErr      string
	}{
		{"200 delivers", []int{200}, []escrow.NotificationState{"delivered"}, 1, ""},
		{"500 then 200 delivers on the retry", []int{500, 200}, []escrow.NotificationState{"pending", "delivered"}, 2, ""},
		{"429 and 408 are retried", []int{429, 408, 204}, []escrow.NotificationState{"pending", "pending", "delivered"}, 3, ""},
		{"400 fails at once", []int{400}, []escrow.NotificationState{"failed"}, 1, "HTTP 400 Bad Request"},
		{"a redirect is not followed", []int{302}, []escrow.NotificationState{"failed"}, 1, "HTTP 302 Found"},
		{"503 until the last try fails", []int{503, 503, 503}, []escrow.NotificationState{"pending", "pending", "failed"}, 3, "HTTP 503"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sink, srv := newHookSink(t, tc.statuses...)
			st := sqlite(t)
			n := escrow.NewNotifications(st, nil, escrow.NotifyConfig{Webhooks: []string{"soc"}})
			if err := n.Alert(ctx, "fvescrow: a device's recovery key was requested too often", map[string]string{"device": "D-9"}, 7); err != nil {
				t.Fatal(err)
			}
			clk := newClock()
			d := notify.NewDispatcher(st, map[string]notify.Sender{"webhook": webhooks(t, nil, "soc", srv.URL+"/hook", hookSecret)},
				notify.WithClock(clk.Now), notify.WithRetry(notify.Retry{Attempts: 3, First: time.Minute, Max: time.Minute}))
			var got escrow.Notification
			for i, want := range tc.wantStates {
				if _, err := d.RunOnce(ctx); err != nil {
					t.Fatal(err)
				}
				if got = only(t, st); got.State != want || got.Attempts != i+1 {
					t.Fatalf("run %d: %s after %d attempts (%q), want %s", i+1, got.State, got.Attempts, got.LastError, want)
				}
				clk.Add(time.Minute)
			}
			if !strings.Contains(got.LastError, tc.wantErr) || strings.Contains(got.LastError, "127.0.0.1") {
				t.Errorf("LastError %q, want %q and no URL", got.LastError, tc.wantErr)
			}
			reqs := sink.requests()
			if len(reqs) != tc.wantRequests {
				t.Fatalf("%d requests, want %d", len(reqs), tc.wantRequests)
			}
			for _, r := range reqs {
				if !r.signed {
					t.Error("the signature does not verify")
				}
				if r.delivery != fmt.Sprint("notification-", got.ID) || r.event != "notification" {
					t.Errorf("delivery %q event %q", r.delivery, r.event)
				}
				var body struct {
					Event    string            `json:"event"`
					Fields   map[string]string `json:"fields"`
					AuditSeq int64             `json:"audit_seq"`
				}
				if err := json.Unmarshal(r.body, &body); err != nil || body.Fields["device"] != "D-9" || body.AuditSeq != 7 ||
					body.Event != "fvescrow: a device's recovery key was requested too often" {
					t.Errorf("body %s (%v)", r.body, err)
				}
			}
		})
	}
}

// TestWebhookSignatureMismatch: a receiver holding another secret sees a
// signature that does not verify (the sink's check can fail).
func TestWebhookSignatureMismatch(t *testing.T) {
	t.Parallel()
	sink, srv := newHookSink(t)
	st := sqlite(t)
	enqueue(t, st, escrow.Notification{Channel: "webhook", Target: "soc", Subject: "s", Body: `{"event":"x"}`})
	d := notify.NewDispatcher(st, map[string]notify.Sender{"webhook": webhooks(t, nil, "soc", srv.URL, "another-secret-of-16+bytes")})
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if r := sink.requests(); len(r) != 1 || r[0].signed {
		t.Fatalf("requests %+v", r)
	}
}

// TestWebhookErrorsHideTheURL: a token in the URL never reaches the stored
// error or the log.
func TestWebhookErrorsHideTheURL(t *testing.T) {
	t.Parallel()
	st := sqlite(t)
	enqueue(t, st, escrow.Notification{Channel: "webhook", Target: "chat", Subject: "s", Body: `{"event":"x"}`})
	enqueue(t, st, escrow.Notification{Channel: "webhook", Target: "unknown", Subject: "s", Body: `{"event":"x"}`})
	var logs bytes.Buffer
	url := "http://" + freeAddr(t) + "/services/T0/B0/pathtoken123?token=querytoken456"
	d := notify.NewDispatcher(st, map[string]notify.Sender{"webhook": webhooks(t, nil, "chat", url, hookSecret)},
		notify.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	ns, err := st.Notifications(ctx, escrow.NotificationQuery{})
	if err != nil || len(ns) != 2 {
		t.Fatal(ns, err)
	}
	for _, n := range ns {
		for _, secret := range []string{"pathtoken123", "querytoken456", hookSecret} {
			if strings.Contains(n.LastError, secret) || strings.Contains(logs.String(), secret) {
				t.Errorf("%q leaks through the error or log: %q", secret, n.LastError)
			}
		}
		switch n.Target {
		case "chat":
			if n.State != escrow.NotificationPending || !strings.Contains(n.LastError, "webhook chat:") || !strings.Contains(n.LastError, "refused") {
				t.Errorf("unreachable hook: %+v", n)
			}
		case "unknown":
			if n.State != escrow.NotificationFailed || !strings.Contains(n.LastError, "not configured") {
				t.Errorf("unknown hook: %+v", n)
			}
		}
	}
}

// TestWebhookTLS posts to an https receiver whose CA is given.
func TestWebhookTLS(t *testing.T) {
	t.Parallel()
	sink := &hookSink{t: t, secret: hookSecret}
	srv := httptest.NewTLSServer(sink)
	t.Cleanup(srv.Close)
	st := sqlite(t)
	enqueue(t, st, escrow.Notification{Channel: "webhook", Target: "soc", Subject: "s", Body: `{"event":"x"}`})
	enqueue(t, st, escrow.Notification{Channel: "webhook", Target: "untrusted", Subject: "s", Body: `{"event":"x"}`})
	good, _ := notify.ParseEndpoint("soc", srv.URL)
	bad, _ := notify.ParseEndpoint("untrusted", srv.URL)
	good.Secret, bad.Secret = notify.NewSecret([]byte(hookSecret)), notify.NewSecret([]byte(hookSecret))
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	trusting, _ := notify.NewWebhooks([]notify.Endpoint{good}, notify.NewHTTPClient(pool, nil))
	system, _ := notify.NewWebhooks([]notify.Endpoint{bad}, nil)
	d := notify.NewDispatcher(st, map[string]notify.Sender{"webhook": senderByTarget{"soc": trusting, "untrusted": system}})
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	ns, _ := st.Notifications(ctx, escrow.NotificationQuery{})
	for _, n := range ns {
		wantState := map[string]escrow.NotificationState{"soc": "delivered", "untrusted": "pending"}[n.Target]
		if n.State != wantState {
			t.Errorf("%s: %s (%q), want %s", n.Target, n.State, n.LastError, wantState)
		}
	}
	if r := sink.requests(); len(r) != 1 || !r[0].signed {
		t.Errorf("requests %+v", r)
	}
}

type senderByTarget map[string]notify.Sender

func (s senderByTarget) Send(ctx context.Context, n escrow.Notification) error {
	return s[n.Target].Send(ctx, n)
}

func TestParseEndpoint(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url, want string }{
		{"soc", "https://siem.example.com/in?k=v", ""},
		{"local", "http://127.0.0.1:8080/hook", ""},
		{"local6", "http://[::1]:8080/hook", ""},
		{"plain", "http://hooks.example.com/x", "must be https"},
		{"creds", "https://user:pw@hooks.example.com/x", "no credentials"},
		{"Bad Name", "https://hooks.example.com/x", "webhook name"},
		{"rel", "/relative", "absolute URL"},
	}
	for _, tc := range tests {
		_, err := notify.ParseEndpoint(tc.name, tc.url)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ParseEndpoint(%q, %q) = %v, want %q", tc.name, tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("error quotes the URL: %v", err)
		}
	}
	e, _ := notify.ParseEndpoint("x", "https://h.example.com/")
	if _, err := notify.NewWebhooks([]notify.Endpoint{e}, nil); err == nil || !strings.Contains(err.Error(), "secret of at least 16 bytes") {
		t.Errorf("a webhook without a secret: %v", err)
	}
	e.Secret = notify.NewSecret([]byte(hookSecret))
	if _, err := notify.NewWebhooks([]notify.Endpoint{e, e}, nil); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a webhook defined twice: %v", err)
	}
}
