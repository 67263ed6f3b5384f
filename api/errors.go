package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/fvescrow/fvescrow/escrow"
)

// Errors of the HTTP layer itself.
var (
	ErrUnauthenticated = escrow.ErrUnauthenticated
	ErrBadRequest      = errors.New("bad request")
	ErrTooLarge        = errors.New("request body too large")
	ErrRateLimited     = escrow.ErrRateLimited
)

// errorBody is the one error format of every JSON endpoint.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// WriteError maps an error to an HTTP status and a stable, safe message. It
// is the only place that does so. A 5xx hides the cause from the client and
// logs it with the request ID.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, code, msg := classify(err)
	rid := RequestID(r.Context())
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "status", status, "err", err, "request_id", rid, "path", r.URL.Path)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fvescrow"`)
	}
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg, RequestID: rid}})
}

// Classify is WriteError's mapping, for pages that render errors as HTML:
// the status, a stable code and a message safe to show.
func Classify(err error) (status int, code, msg string) { return classify(err) }

func classify(err error) (status int, code, msg string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe), errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large", "request body too large"
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated", "authentication required"
	case errors.Is(err, escrow.ErrApprovalRequired):
		return http.StatusForbidden, "approval_required", detail(err)
	case errors.Is(err, escrow.ErrForbidden):
		return http.StatusForbidden, "forbidden", detail(err)
	case errors.Is(err, escrow.ErrNotFound):
		return http.StatusNotFound, "not_found", "not found"
	case errors.Is(err, escrow.ErrInvalid), errors.Is(err, ErrBadRequest):
		// These messages are written by fvescrow's own validation and name
		// the rule that failed; they never carry secrets.
		return http.StatusBadRequest, "invalid", detail(err)
	case errors.Is(err, escrow.ErrConflict):
		return http.StatusConflict, "conflict", "conflict with the current state"
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests, "rate_limited", detail(err)
	case errors.Is(err, escrow.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable", "a backing store is unavailable; try again later"
	case errors.Is(err, context.Canceled):
		return 499, "canceled", "request canceled"
	}
	return http.StatusInternalServerError, "internal", "internal error"
}

// detail keeps the part of an error after its sentinel's text: the rule
// that failed, written by fvescrow's own checks (never a secret, never a
// Go error from a library).
func detail(err error) string {
	s := err.Error()
	for _, sentinel := range []error{escrow.ErrInvalid, ErrBadRequest, escrow.ErrForbidden, escrow.ErrApprovalRequired, escrow.ErrRateLimited} {
		// A secret store's own refusal (Vault's 403 text) is an internal
		// matter: only fvescrow's rules are worth repeating to the client.
		if i := strings.Index(s, sentinel.Error()+": "); i >= 0 && !strings.Contains(s[:i], "vaultstore:") {
			return s[i+len(sentinel.Error())+2:]
		}
	}
	switch {
	case errors.Is(err, escrow.ErrForbidden):
		return "not allowed"
	case errors.Is(err, escrow.ErrApprovalRequired):
		return "a second person's approval is required"
	case errors.Is(err, escrow.ErrRateLimited):
		return "too many requests"
	}
	return "invalid request"
}
