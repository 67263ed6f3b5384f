package mdm

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/micromdm/nanomdm/mdm"
)

// HMACHeader carries base64(HMAC-SHA256(secret, body)) on nanomdm webhooks.
const HMACHeader = "X-Hmac-Signature"

// MaxWebhookBody bounds a webhook event (a base64 device payload inside JSON).
const MaxWebhookBody = 8 << 20

// webhookEvent is the nanomdm (and MicroMDM) webhook event.
type webhookEvent struct {
	Topic        string            `json:"topic"`
	EventID      string            `json:"event_id"`
	CreatedAt    time.Time         `json:"created_at"`
	CheckinEvent *checkinEvent     `json:"checkin_event"`
	Acknowledge  *acknowledgeEvent `json:"acknowledge_event"`
}

type checkinEvent struct {
	UDID         string `json:"udid"`
	EnrollmentID string `json:"enrollment_id"`
	RawPayload   []byte `json:"raw_payload"`
}

type acknowledgeEvent struct {
	UDID         string `json:"udid"`
	EnrollmentID string `json:"enrollment_id"`
	Status       string `json:"status"`
	CommandUUID  string `json:"command_uuid"`
	RawPayload   []byte `json:"raw_payload"`
}

// Webhook receives an external nanomdm's (or MicroMDM's) webhook events in
// companion mode and feeds the same Capture the embedded server uses.
// Follow-up commands go through the external server's enqueue API.
type Webhook struct {
	capture *Capture
	events  escrow.EventStore
	secret  []byte
	log     *slog.Logger
	// nanomdm sends each event from its own goroutine: one device's
	// events are handled one at a time (within this process).
	devices [64]sync.Mutex
}

// lockDevice serialises the handling of one device's events.
func (h *Webhook) lockDevice(id string) func() {
	f := fnv.New32a()
	f.Write([]byte(id))
	m := &h.devices[f.Sum32()%uint32(len(h.devices))]
	m.Lock()
	return m.Unlock
}

// device is the UDID (or EnrollmentID) an event is about.
func (ev *webhookEvent) device() string {
	switch {
	case ev.CheckinEvent != nil && ev.CheckinEvent.UDID != "":
		return ev.CheckinEvent.UDID
	case ev.CheckinEvent != nil:
		return ev.CheckinEvent.EnrollmentID
	case ev.Acknowledge != nil && ev.Acknowledge.UDID != "":
		return ev.Acknowledge.UDID
	case ev.Acknowledge != nil:
		return ev.Acknowledge.EnrollmentID
	}
	return ""
}

// NewWebhook verifies events with secret (HMAC-SHA256). An empty secret is
// refused: an unauthenticated webhook would let anyone plant keys.
func NewWebhook(capture *Capture, events escrow.EventStore, secret []byte, log *slog.Logger) (*Webhook, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("%w: the webhook HMAC secret must be at least 16 bytes", escrow.ErrInvalid)
	}
	return &Webhook{capture: capture, events: events, secret: secret, log: log.With("component", "webhook")}, nil
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxWebhookBody+1))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	if len(body) > MaxWebhookBody {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if !h.verify(r.Header.Get(HMACHeader), body) {
		h.log.WarnContext(r.Context(), "webhook with a missing or bad signature rejected", "remote", r.RemoteAddr)
		http.Error(w, "bad or missing "+HMACHeader, http.StatusUnauthorized)
		return
	}
	var ev webhookEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "malformed event", http.StatusBadRequest)
		return
	}
	defer h.lockDevice(ev.device())()
	// A replayed event (same bytes) is acknowledged and ignored.
	sum := sha256.Sum256(body)
	eventID := hex.EncodeToString(sum[:])
	fresh, err := h.events.MarkEvent(r.Context(), eventID, h.capture.now())
	if err != nil {
		h.log.ErrorContext(r.Context(), "webhook: record event", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if !fresh {
		w.WriteHeader(http.StatusOK)
		return
	}
	if err := h.handle(r, ev); err != nil {
		// Not processed: a redelivery of these bytes must be processed.
		if ferr := h.events.ForgetEvent(r.Context(), eventID); ferr != nil {
			h.log.ErrorContext(r.Context(), "webhook: forget failed event", "err", ferr)
		}
		var bad badEvent
		if errors.As(err, &bad) {
			http.Error(w, string(bad), http.StatusBadRequest)
			return
		}
		h.log.ErrorContext(r.Context(), "webhook event", "topic", ev.Topic, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type badEvent string

func (b badEvent) Error() string { return string(b) }

func (h *Webhook) verify(header string, body []byte) bool {
	got, err := base64.StdEncoding.DecodeString(header)
	if header == "" || err != nil {
		return false
	}
	mac := hmac.New(sha256.New, h.secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

func (h *Webhook) handle(r *http.Request, ev webhookEvent) error {
	ctx := r.Context()
	switch ev.Topic {
	case "mdm.Connect":
		a := ev.Acknowledge
		if a == nil {
			return badEvent("mdm.Connect without acknowledge_event")
		}
		id, ok := deviceChannel(mdm.Enrollment{UDID: a.UDID, EnrollmentID: a.EnrollmentID})
		if !ok {
			return nil
		}
		after, _, err := h.capture.Result(ctx, id, a.Status, a.CommandUUID, a.RawPayload)
		if errors.Is(err, ErrUnknownCommand) {
			return nil // a command someone else sent
		}
		if err != nil {
			return err
		}
		return after(ctx)
	case "mdm.Authenticate", "mdm.TokenUpdate", "mdm.CheckOut", "mdm.SetBootstrapToken":
		c := ev.CheckinEvent
		if c == nil {
			return badEvent(ev.Topic + " without checkin_event")
		}
		msg, err := mdm.DecodeCheckin(c.RawPayload)
		if err != nil {
			return badEvent("undecodable check-in payload")
		}
		return h.checkin(r, msg, ev.CreatedAt)
	}
	return nil // topics fvescrow does not act on
}

func (h *Webhook) checkin(r *http.Request, msg any, at time.Time) error {
	ctx := r.Context()
	switch m := msg.(type) {
	case *mdm.Authenticate:
		if id, ok := deviceChannel(m.Enrollment); ok {
			return h.capture.AuthenticateAt(ctx, id, m.Raw, at)
		}
	case *mdm.TokenUpdate:
		if id, ok := deviceChannel(m.Enrollment); ok {
			if err := h.capture.EscrowUnlockToken(ctx, id, m.UnlockToken); err != nil {
				return err
			}
			return h.capture.TokenUpdateAt(ctx, id, at)
		}
	case *mdm.CheckOut:
		if id, ok := deviceChannel(m.Enrollment); ok {
			return h.capture.CheckOut(ctx, id)
		}
	case *mdm.SetBootstrapToken:
		if id, ok := deviceChannel(m.Enrollment); ok {
			return h.capture.SetBootstrapToken(ctx, id, m.BootstrapToken.BootstrapToken)
		}
	}
	return nil
}
