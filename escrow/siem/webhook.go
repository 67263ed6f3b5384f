package siem

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/fvescrow/fvescrow/escrow/notify"
)

// Webhook posts batches as {"records": [...]} (the shape of the REST API's
// audit list) to an HTTP endpoint, signed like notification webhooks when
// the endpoint has a secret. Only a 2xx answer confirms a batch; anything
// else is retried, since skipping records would leave a gap.
type Webhook struct {
	e       notify.Endpoint
	client  *http.Client
	timeout time.Duration
	now     func() time.Time
}

var _ Sink = (*Webhook)(nil)

// NewWebhook returns the sink. A nil client means notify.NewHTTPClient(nil, nil).
func NewWebhook(e notify.Endpoint, client *http.Client) *Webhook {
	if client == nil {
		client = notify.NewHTTPClient(nil, nil)
	}
	return &Webhook{e: e, client: client, timeout: 30 * time.Second, now: time.Now}
}

// Send posts the batch. The delivery ID names the records it holds, so a
// receiver can recognise a batch sent again.
func (w *Webhook) Send(ctx context.Context, batch []Entry) error {
	if len(batch) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteString(`{"records":[`)
	for i, e := range batch {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(e.JSON)
	}
	b.WriteString(`]}`)
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	id := fmt.Sprintf("audit-%d-%d", batch[0].Record.Seq, batch[len(batch)-1].Record.Seq)
	return notify.Post(ctx, w.client, w.e, "audit", id, b.Bytes(), w.now())
}
