package mdm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/logadapt"
	"github.com/go-chi/chi/v5"
	"github.com/micromdm/nanomdm/cryptoutil"
	httpapi "github.com/micromdm/nanomdm/http/api"
	httpmdm "github.com/micromdm/nanomdm/http/mdm"
	"github.com/micromdm/nanomdm/mdm"
	"github.com/micromdm/nanomdm/service/certauth"
	"github.com/micromdm/nanomdm/service/nanomdm"
	"github.com/micromdm/nanomdm/storage"
)

// MaxDeviceBody bounds a check-in or command result. ProfileList answers of
// heavily managed Macs are the largest normal bodies, well under this.
const MaxDeviceBody = 4 << 20

// Guard wraps nanomdm's storage so it never keeps fvescrow's secrets: tokens
// go to escrow (through Capture) and the APNs key to PushCerts.
func Guard(store storage.AllStorage, push *PushCerts) storage.AllStorage {
	return &guardedStorage{AllStorage: store, push: push}
}

// Embedded is the embedded MDM server: device endpoints, SCEP and the
// nanomdm API, with Capture inside certauth.
type Embedded struct {
	checkin   http.Handler
	commands  http.Handler
	scep      http.Handler
	store     storage.AllStorage
	pusher    *NanoEnqueuer
	commandsL escrow.CommandStore
	log       *slog.Logger
}

// EmbeddedOption configures the embedded server.
type EmbeddedOption func(*embeddedConfig)

type embeddedConfig struct {
	log        *slog.Logger
	certHeader string
	purge      QueuePurger
}

// WithQueuePurger deletes answered rotation commands and their results
// from nanomdm storage that would otherwise keep them (diskv).
func WithQueuePurger(p QueuePurger) EmbeddedOption { return func(c *embeddedConfig) { c.purge = p } }

// WithEmbeddedLogger sets the logger.
func WithEmbeddedLogger(l *slog.Logger) EmbeddedOption { return func(c *embeddedConfig) { c.log = l } }

// WithCertHeader reads the device identity from a header set by a proxy
// that terminates mutual TLS (RFC 9440 or URL-escaped PEM), instead of the
// Mdm-Signature header.
func WithCertHeader(name string) EmbeddedOption {
	return func(c *embeddedConfig) { c.certHeader = name }
}

// NewEmbedded builds the embedded server over guarded nanomdm storage (see
// Guard), the capture logic, and the SCEP CA and challenge.
func NewEmbedded(guarded storage.AllStorage, capture *Capture, enq *NanoEnqueuer, commands escrow.CommandStore, ca *SCEPCA, challenge string, opts ...EmbeddedOption) (*Embedded, error) {
	cfg := embeddedConfig{log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	log := cfg.log.With("component", "mdm")
	nl := logadapt.New(log)
	nano := nanomdm.New(guarded, nanomdm.WithLogger(nl.With("service", "nanomdm")))
	svc := certauth.New(&captureService{next: nano, capture: capture, purge: cfg.purge, log: log}, guarded, certauth.WithLogger(nl.With("service", "certauth")))
	verifier, err := ca.Verifier()
	if err != nil {
		return nil, err
	}
	identify := func(h http.Handler) http.Handler {
		h = httpmdm.CertVerifyMiddleware(h, verifier, nl.With("handler", "cert-verify"))
		if cfg.certHeader != "" {
			return httpmdm.CertExtractPEMHeaderMiddleware(h, cfg.certHeader, nl.With("handler", "cert-extract"))
		}
		return httpmdm.CertExtractMdmSignatureMiddleware(h, httpmdm.MdmSignatureVerifierFunc(cryptoutil.VerifyMdmSignature), httpmdm.SigLogWithLogger(nl.With("handler", "cert-extract")))
	}
	scep, err := ca.Handler(challenge, log)
	if err != nil {
		return nil, err
	}
	return &Embedded{
		// Clients with a separate CheckInURL send check-ins there; others send
		// both kinds to /mdm and tell them apart by Content-Type.
		checkin:   LimitBody(MaxDeviceBody)(identify(httpmdm.CheckinHandler(svc, nl.With("handler", "checkin")))),
		commands:  LimitBody(MaxDeviceBody)(identify(httpmdm.CheckinAndCommandHandler(svc, nl.With("handler", "mdm")))),
		scep:      scep,
		store:     guarded,
		pusher:    enq,
		commandsL: commands,
		log:       log,
	}, nil
}

// Mount registers the device endpoints (/mdm, /checkin, /scep) and nanomdm's
// API under /nanomdm/v1 (enqueue, push, pushcert); the router's policy
// table guards the API.
func (e *Embedded) Mount(r chi.Router) {
	r.Handle("/mdm", e.commands)
	r.Handle("/checkin", e.checkin)
	r.Handle("/scep", e.scep)
	api := &chiMux{r: r.With(LimitBody(MaxDeviceBody))}
	httpapi.HandleAPIv1("/nanomdm/v1", api, logadapt.New(e.log.With("component", "nanomdm-api")),
		recordingStore{AllStorage: e.store, commands: e.commandsL}, e.pusher.pusher)
}

// chiMux adapts a chi router to nanomdm's Mux, including the trailing-slash
// prefix patterns http.ServeMux understands.
type chiMux struct{ r chi.Router }

func (m *chiMux) Handle(pattern string, h http.Handler) {
	if pattern[len(pattern)-1] == '/' {
		m.r.Handle(pattern+"*", h)
		return
	}
	m.r.Handle(pattern, h)
}

// recordingStore records what the nanomdm enqueue API queues, so results
// of manually enqueued commands are recognised, and refuses commands whose
// body would carry a secret: those go through fvescrow's own flows, which
// never put a secret in the queue at rest.
type recordingStore struct {
	storage.AllStorage
	commands escrow.CommandStore
}

// secretBearing are request types whose bodies carry a credential.
var secretBearing = map[string]bool{
	fde.RequestRotateFileVaultKey: true,
	"ClearPasscode":               true,
	"SetFirmwarePassword":         true,
	"SetRecoveryLock":             true,
	"SetAutoAdminPassword":        true,
	"UnlockUserAccount":           true,
}

func (s recordingStore) EnqueueCommand(ctx context.Context, ids []string, cmd *mdm.Command) (map[string]error, error) {
	if secretBearing[cmd.Command.RequestType] {
		return nil, fmt.Errorf("%s carries a credential and cannot be enqueued raw: fvescrow sends it itself", cmd.Command.RequestType)
	}
	for _, id := range ids {
		if err := s.commands.RecordCommand(ctx, escrow.Command{UUID: cmd.CommandUUID, Device: escrow.DeviceID(id), RequestType: cmd.Command.RequestType, Purpose: PurposeManual}); err != nil {
			return nil, err
		}
	}
	return s.AllStorage.EnqueueCommand(ctx, ids, cmd)
}

// LimitBody answers 413 to a request body over n bytes, before any handler
// reads it, and hands the handler the buffered body.
func LimitBody(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				b, err := io.ReadAll(io.LimitReader(r.Body, n+1))
				if err != nil {
					http.Error(w, "reading request body", http.StatusBadRequest)
					return
				}
				if int64(len(b)) > n {
					http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
			next.ServeHTTP(w, r)
		})
	}
}
