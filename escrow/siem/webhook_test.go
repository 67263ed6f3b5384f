package siem_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/escrow/notify"
	"github.com/fvescrow/fvescrow/escrow/siem"
)

const siemSecret = "siem-secret-0123456789"

// batchSink is a SIEM's HTTP collector: it verifies the signature the way
// docs/notifications.md describes and answers with scripted codes.
type batchSink struct {
	mu       sync.Mutex
	statuses []int
	batches  []webhookBatch
}

type webhookBatch struct {
	delivery string
	seqs     []int64
	signed   bool
	unsigned bool
}

func (s *batchSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	mac := hmac.New(sha256.New, []byte(siemSecret))
	mac.Write([]byte(r.Header.Get("Fvescrow-Timestamp") + "."))
	mac.Write(body)
	var b struct {
		Records []testRecord `json:"records"`
	}
	if err := json.Unmarshal(body, &b); err != nil || r.Header.Get("Fvescrow-Event") != "audit" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	got := webhookBatch{delivery: r.Header.Get("Fvescrow-Delivery"), signed: r.Header.Get("Fvescrow-Signature") == "v1="+hex.EncodeToString(mac.Sum(nil)),
		unsigned: r.Header.Get("Fvescrow-Signature") == ""}
	for _, rec := range b.Records {
		got.seqs = append(got.seqs, rec.Seq)
	}
	s.mu.Lock()
	s.batches = append(s.batches, got)
	code := http.StatusAccepted
	if len(s.statuses) > 0 {
		code, s.statuses = s.statuses[0], s.statuses[1:]
	}
	s.mu.Unlock()
	w.WriteHeader(code)
}

func TestWebhookSink(t *testing.T) {
	t.Parallel()
	sink := &batchSink{statuses: []int{503, 400}}
	srv := httptest.NewTLSServer(sink)
	t.Cleanup(srv.Close)
	e, err := notify.ParseEndpoint("siem", srv.URL+"/collect?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	e.Secret = notify.NewSecret([]byte(siemSecret))
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	st := openSQLite(t)
	appendRecords(t, st, 25, 0)
	f := siem.NewForwarder("webhook", st, st, siem.NewWebhook(e, notify.NewHTTPClient(pool, nil)), encode, siem.WithBatch(10))
	for i, want := range []string{"HTTP 503", "HTTP 400"} {
		if _, err := f.Step(ctx); err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "token=abc") {
			t.Fatalf("step %d: %v, want %s", i, err, want)
		}
		if cur, _ := f.Cursor(ctx); cur != 0 {
			t.Fatalf("cursor moved to %d on a failed send", cur)
		}
	}
	stepAll(t, f)
	if cur, _ := f.Cursor(ctx); cur != 25 {
		t.Fatalf("cursor %d", cur)
	}
	var sessions [][]int64
	for i, b := range sink.batches {
		if !b.signed {
			t.Errorf("batch %d: signature does not verify", i)
		}
		sessions = append(sessions, b.seqs)
	}
	if len(sink.batches) != 5 || sink.batches[0].delivery != "audit-1-10" || sink.batches[2].delivery != "audit-1-10" || sink.batches[4].delivery != "audit-21-25" {
		t.Errorf("batches %+v", sink.batches)
	}
	checkNoGap(t, sessions, 25)

	// Without a secret the batch goes unsigned (the SIEM authenticates by
	// its own means, such as mutual TLS).
	e.Secret = notify.Secret{}
	f2 := siem.NewForwarder("webhook-unsigned", st, st, siem.NewWebhook(e, notify.NewHTTPClient(pool, nil)), encode, siem.WithBatch(100))
	stepAll(t, f2)
	if last := sink.batches[len(sink.batches)-1]; !last.unsigned || len(last.seqs) != 25 {
		t.Errorf("unsigned batch %+v", last)
	}
}
