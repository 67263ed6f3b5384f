package mdm

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/logadapt"
	"github.com/micromdm/nanomdm/mdm"
	"github.com/micromdm/nanomdm/push"
	"github.com/micromdm/nanomdm/push/nanopush"
	pushsvc "github.com/micromdm/nanomdm/push/service"
	"github.com/micromdm/nanomdm/storage"
)

// NanoEnqueuer enqueues into the embedded nanomdm's queue and pushes through
// APNs when a push certificate is stored.
type NanoEnqueuer struct {
	store  storage.CommandEnqueuer
	pusher push.Pusher
	push   *PushCerts
	log    *slog.Logger
}

var _ Enqueuer = (*NanoEnqueuer)(nil)

// PushClient makes the HTTP client APNs requests go through (tests point it
// at a fake APNs server).
type PushClient func(*tls.Certificate) (*http.Client, error)

// NewNanoEnqueuer enqueues into store (nanomdm storage) and pushes with the
// certificate pushCerts keeps. client may be nil (Apple's APNs over HTTP/2).
func NewNanoEnqueuer(store storage.AllStorage, pushCerts *PushCerts, client PushClient, log *slog.Logger) *NanoEnqueuer {
	var opts []nanopush.Option
	if client != nil {
		opts = append(opts, nanopush.WithNewClient(nanopush.NewClient(client)))
	}
	return &NanoEnqueuer{
		store:  store,
		pusher: pushsvc.New(store, pushCerts, nanopush.NewFactory(opts...), logadapt.New(log.With("component", "push"))),
		push:   pushCerts,
		log:    log.With("component", "enqueue"),
	}
}

// Enqueue queues cmd and pushes in the background (a device that misses the
// push still gets the command at its next check-in).
func (e *NanoEnqueuer) Enqueue(ctx context.Context, id escrow.DeviceID, cmd fde.Command) error {
	if err := e.EnqueueQuiet(ctx, id, cmd); err != nil {
		return err
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Push(ctx, id); err != nil {
			e.log.Debug("push after enqueue", "device", id, "err", err)
		}
	}()
	return nil
}

// EnqueueQuiet queues cmd without a push (the caller pushes a batch).
func (e *NanoEnqueuer) EnqueueQuiet(ctx context.Context, id escrow.DeviceID, cmd fde.Command) error {
	m := &mdm.Command{CommandUUID: cmd.UUID, Raw: cmd.Plist}
	m.Command.RequestType = cmd.RequestType
	errs, err := e.store.EnqueueCommand(ctx, []string{string(id)}, m)
	if err == nil {
		// diskv keys its per-ID errors by command UUID.
		if err = errs[string(id)]; err == nil {
			err = errs[cmd.UUID]
		}
	}
	if err != nil {
		return fmt.Errorf("enqueue %v: %w", cmd, err)
	}
	return nil
}

// PushMany wakes many devices with one call to the push service, which
// sends the notifications concurrently.
func (e *NanoEnqueuer) PushMany(ctx context.Context, ids []escrow.DeviceID) error {
	if _, err := e.push.Topic(ctx); errors.Is(err, escrow.ErrNotFound) {
		return nil
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	res, err := e.pusher.Push(ctx, s)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range res {
		if r != nil && r.Err != nil {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("push failed for %d of %d devices", failed, len(ids))
	}
	return nil
}

// Push wakes a device. Without a stored push certificate it does nothing.
func (e *NanoEnqueuer) Push(ctx context.Context, id escrow.DeviceID) error {
	if _, err := e.push.Topic(ctx); errors.Is(err, escrow.ErrNotFound) {
		return nil
	}
	res, err := e.pusher.Push(ctx, []string{string(id)})
	if err != nil {
		return err
	}
	if r := res[string(id)]; r != nil && r.Err != nil {
		return r.Err
	}
	return nil
}

// APIEnqueuer enqueues through an external nanomdm's API (companion mode):
// PUT {base}/v1/enqueue/{id} with the raw command plist, HTTP Basic auth
// "nanomdm" + API key. nanomdm pushes after enqueueing.
type APIEnqueuer struct {
	base   *url.URL
	apiKey string
	client *http.Client
}

var _ Enqueuer = (*APIEnqueuer)(nil)

// NewAPIEnqueuer talks to the nanomdm at baseURL.
func NewAPIEnqueuer(baseURL, apiKey string, client *http.Client) (*APIEnqueuer, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%w: nanomdm URL %q", escrow.ErrInvalid, baseURL)
	}
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &APIEnqueuer{base: u, apiKey: apiKey, client: client}, nil
}

// apiResult is the part of nanomdm's APIResult fvescrow reads.
type apiResult struct {
	CommandUUID  string `json:"command_uuid"` // set once the command is decoded
	CommandError string `json:"command_error"`
	PushError    string `json:"push_error"`
	Status       map[string]struct {
		CommandError string `json:"command_error"`
		PushError    string `json:"push_error"`
	} `json:"status"`
}

func (e *APIEnqueuer) do(ctx context.Context, method, path string, body []byte) (*apiResult, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.base.String()+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("nanomdm", e.apiKey)
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: nanomdm API: %v", escrow.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r apiResult
	_ = json.Unmarshal(b, &r)
	// nanomdm answers its API result (JSON) even when some of the work
	// failed (a 500 whose push failed but whose command was queued): the
	// caller reads it. Any other answer that is not a success is an error,
	// never a silent "queued" (a wrong --nanomdm-url path gets a 404).
	isResult := r.CommandError != "" || len(r.Status) != 0 || r.CommandUUID != ""
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return &r, fmt.Errorf("%w: nanomdm API rejected the API key", escrow.ErrForbidden)
	case resp.StatusCode/100 == 2, isResult:
		return &r, nil
	case resp.StatusCode >= 500:
		return &r, fmt.Errorf("%w: nanomdm API answered %d", escrow.ErrUnavailable, resp.StatusCode)
	}
	return &r, fmt.Errorf("nanomdm API answered %d to %s %s: check --nanomdm-url", resp.StatusCode, method, path)
}

// Enqueue queues cmd on the external nanomdm.
func (e *APIEnqueuer) Enqueue(ctx context.Context, id escrow.DeviceID, cmd fde.Command) error {
	r, err := e.do(ctx, http.MethodPut, "/v1/enqueue/"+url.PathEscape(string(id)), cmd.Plist)
	if err != nil {
		return fmt.Errorf("enqueue %v: %w", cmd, err)
	}
	if r.CommandError != "" {
		return fmt.Errorf("enqueue %v: nanomdm: %s", cmd, r.CommandError)
	}
	if s, ok := r.Status[string(id)]; ok && s.CommandError != "" {
		return fmt.Errorf("enqueue %v: nanomdm: %s", cmd, s.CommandError)
	}
	return nil
}

// Push asks the external nanomdm to push.
func (e *APIEnqueuer) Push(ctx context.Context, id escrow.DeviceID) error {
	_, err := e.do(ctx, http.MethodGet, "/v1/push/"+url.PathEscape(string(id)), nil)
	return err
}
