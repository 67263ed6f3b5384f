package escrow

import "errors"

// Sentinel errors callers branch on. Backends translate their own errors to
// these; the API maps them to HTTP status in one place.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrForbidden   = errors.New("forbidden")
	ErrInvalid     = errors.New("invalid input")
	ErrInvalidKey  = errors.New("invalid key")
	ErrUnavailable = errors.New("store unavailable")
	// ErrUndecryptable: a blob no escrow identity opens. The blob is kept.
	ErrUndecryptable = errors.New("undecryptable")
	// ErrApprovalRequired: the requester needs a second person's approval.
	ErrApprovalRequired = errors.New("approval required")
	// ErrRateLimited: a reveal limit was reached.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnauthenticated: nobody is signed in (HTTP 401).
	ErrUnauthenticated = errors.New("authentication required")
)
