package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/token"
	"github.com/go-chi/chi/v5"
)

// Devices is the HTTP layer's view of devices and their keys' metadata.
type Devices interface {
	Device(ctx context.Context, id escrow.DeviceID) (escrow.Device, error)
	FindDevices(ctx context.Context, q escrow.DeviceQuery) ([]escrow.Device, error)
	KeyVersions(ctx context.Context, id escrow.DeviceID, kind escrow.SecretKind) ([]escrow.KeyVersion, error)
}

// Details are the rest of a device page.
type Details interface {
	Accounts(ctx context.Context, id escrow.DeviceID) ([]token.Account, time.Time, error)
	Jobs(ctx context.Context, q escrow.JobQuery) ([]escrow.Job, error)
	Regenerations(ctx context.Context, q escrow.RegenerationQuery) ([]escrow.Regeneration, error)
}

// Audit reads the audit log.
type Audit interface {
	AuditRecords(ctx context.Context, q escrow.AuditQuery) ([]escrow.AuditRecord, error)
	AppendAudit(ctx context.Context, e escrow.Event) (escrow.AuditRecord, error)
}

// People is users, tokens, blocks and notifications.
type People interface {
	escrow.UserStore
	escrow.TokenStore
	escrow.SessionStore
	LiftBlocks(ctx context.Context, actorID string, by escrow.Actor, at time.Time, e escrow.Event) error
	Notifications(ctx context.Context, q escrow.NotificationQuery) ([]escrow.Notification, error)
}

// Mounter adds routes (the embedded MDM, the web UI) to the router; their
// routes must be in the policy table.
type Mounter interface {
	Mount(r chi.Router)
}

// Pages is a Mounter serving HTML pages (the web UI). For the requests it
// owns, the errors of authentication and authorization are its to render
// (a sign-in page rather than JSON), and bodies are bounded before the CSRF
// check reads a form field.
type Pages interface {
	Owns(r *http.Request) bool
	WriteError(w http.ResponseWriter, r *http.Request, err error)
}

// MaxFormBody bounds the form bodies of Pages.
const MaxFormBody = 64 << 10

// pagesFor returns the Pages mount owning r, if any.
func pagesFor(mounts []Mounter, r *http.Request) Pages {
	for _, m := range mounts {
		if p, ok := m.(Pages); ok && p.Owns(r) {
			return p
		}
	}
	return nil
}

// Deps are everything the HTTP layer uses. Required: Log, Auth, Local,
// Devices, Details, Audit, People, Revealer, Approvals.
type Deps struct {
	Log       *slog.Logger
	Auth      *auth.Authenticator
	Local     *auth.LocalAccounts
	Devices   Devices
	Details   Details
	Audit     Audit
	People    People
	Revealer  escrow.Revealer
	Approvals *escrow.Approvals
	Ready     http.HandlerFunc
	MDM       Mounter      // optional
	Webhook   http.Handler // optional (companion mode)
	// Mounts add more routes (the web UI, OIDC sign-in); ExtraPolicy
	// declares their access.
	Mounts      []Mounter
	ExtraPolicy auth.Policy
	// TokenTTL is the lifetime of the personal tokens /api/v1/login issues.
	TokenTTL time.Duration
	// Rotations and RotationStore (optional, together) serve the rotation
	// routes: per-device rotation, campaigns, the fleet view and the
	// key-regeneration list agents poll.
	Rotations     *escrow.Rotations
	RotationStore RotationReader
}

// handlers holds the dependencies of the REST handlers.
type handlers struct{ Deps }

// New builds the server's HTTP handler and returns it with the policy table
// it enforces.
func New(d Deps) (http.Handler, auth.Policy) {
	if d.Log == nil || d.Auth == nil || d.Local == nil || d.Devices == nil || d.Details == nil || d.Audit == nil ||
		d.People == nil || d.Revealer == nil || d.Approvals == nil {
		panic("api.New: missing dependency")
	}
	if d.TokenTTL == 0 {
		d.TokenTTL = 12 * time.Hour
	}
	policy := Merge(Policy(), d.ExtraPolicy)
	if d.Rotations != nil && d.RotationStore != nil {
		policy = Merge(policy, rotationPolicy())
	}
	h := &handlers{Deps: d}
	onErr := func(w http.ResponseWriter, r *http.Request, err error) {
		if p := pagesFor(d.Mounts, r); p != nil {
			p.WriteError(w, r, err)
			return
		}
		WriteError(w, r, d.Log, err)
	}
	limitPages := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if pagesFor(d.Mounts, r) != nil {
				r.Body = http.MaxBytesReader(w, r.Body, MaxFormBody)
			}
			next.ServeHTTP(w, r)
		})
	}
	r := chi.NewRouter()
	r.Use(RequestIDs, Recover(d.Log), SecurityHeaders, AccessLog(d.Log.With("component", "http")))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { onErr(w, r, escrow.ErrNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusMethodNotAllowed, errorBody{Error: errorDetail{Code: "method_not_allowed", Message: "method not allowed", RequestID: RequestID(r.Context())}})
	})
	r.Group(func(r chi.Router) {
		r.Use(limitPages, d.Auth.Authenticate(onErr), auth.Authorize(policy, onErr))
		r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})
		if d.Ready != nil {
			r.Get("/readyz", d.Ready)
		}
		// A group, not r.Route: a mounted subrouter would run Authorize before
		// its own routing, when the pattern is still "/api/v1/*".
		r.Group(func(r chi.Router) {
			r.Use(LimitJSON)
			r.Post("/api/v1/login", h.login)
			r.Get("/api/v1/me", h.me)
			r.Get("/api/v1/devices", h.listDevices)
			r.Get("/api/v1/devices/{device}", h.getDevice)
			r.Post("/api/v1/devices/{device}/reveal", h.reveal)
			r.Post("/api/v1/devices/{device}/approvals", h.requestApproval)
			r.Get("/api/v1/approvals", h.listApprovals)
			r.Get("/api/v1/approvals/{id}", h.getApproval)
			r.Post("/api/v1/approvals/{id}/approve", h.decide(true))
			r.Post("/api/v1/approvals/{id}/deny", h.decide(false))
			r.Get("/api/v1/audit", h.listAudit)
			r.Get("/api/v1/audit/export", h.exportAudit)
			r.Get("/api/v1/notifications", h.listNotifications)
			r.Get("/api/v1/tokens", h.listTokens)
			r.Post("/api/v1/tokens", h.createToken)
			r.Delete("/api/v1/tokens/{id}", h.revokeToken)
			r.Get("/api/v1/users", h.listUsers)
			r.Post("/api/v1/users", h.createUser)
			r.Patch("/api/v1/users/{id}", h.updateUser)
			r.Delete("/api/v1/blocks/{actor}", h.liftBlock)
			if d.Rotations != nil && d.RotationStore != nil {
				h.mountRotations(r)
			}
		})
		if d.MDM != nil {
			d.MDM.Mount(r)
		}
		if d.Webhook != nil {
			r.Post("/webhook/nanomdm", d.Webhook.ServeHTTP)
		}
		for _, m := range d.Mounts {
			m.Mount(r)
		}
	})
	return r, policy
}

// IssueToken creates a personal API token for u, as POST /api/v1/tokens
// does (the web UI's token page uses it). It returns the secret, shown once.
func IssueToken(d Deps, r *http.Request, u escrow.User, name string, roles []escrow.Role, ttl time.Duration) (string, escrow.APIToken, error) {
	return (&handlers{Deps: d}).issueToken(r, u, name, roles, ttl)
}

// The REST handlers' conversions, shared with the web UI so both show the
// same fields.
func ToDevice(d escrow.Device) wire.Device                      { return toDevice(d) }
func ToApproval(a escrow.Approval, now time.Time) wire.Approval { return toApproval(a, now) }
func ToToken(t escrow.APIToken) wire.Token                      { return toToken(t) }
func ToUser(u escrow.User) wire.User                            { return toUser(u) }

// LimitJSON bounds API request bodies.
func LimitJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, MaxJSONBody)
		next.ServeHTTP(w, r)
	})
}
