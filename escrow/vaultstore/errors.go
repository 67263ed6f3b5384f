package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow"
)

// casMismatch is how KV v2 rejects a check-and-set write (HTTP 400).
const casMismatch = "check-and-set parameter did not match the current version"

// translate turns a vault/api error into an error wrapping an escrow
// sentinel, so no caller needs vault/api to branch on it. The message keeps
// Vault's status and error text (paths and reasons, never request bodies, so
// never a secret or a token) but not the vault/api error itself: callers get
// no handle on vault types.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var re *vault.ResponseError
	switch {
	case errors.Is(err, vault.ErrSecretNotFound):
		return escrow.ErrNotFound
	case errors.As(err, &re):
		return responseError(re)
	case errors.Is(err, context.Canceled):
		return err // the caller gave up: not a statement about Vault
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", escrow.ErrUnavailable, context.DeadlineExceeded)
	case isNetwork(err):
		return fmt.Errorf("%w: %s", escrow.ErrUnavailable, oneLine(err.Error()))
	}
	return errors.New(oneLine(err.Error()))
}

func responseError(re *vault.ResponseError) error {
	msg := ""
	if !re.RawError { // a raw body may be anything (a proxy's HTML page): leave it out
		msg = oneLine(strings.Join(re.Errors, "; "))
	}
	var sentinel error
	switch code := re.StatusCode; {
	case code == http.StatusBadRequest && strings.Contains(msg, casMismatch):
		sentinel = escrow.ErrConflict
	case code == http.StatusBadRequest:
		sentinel = escrow.ErrInvalid
	case code == http.StatusForbidden, code == http.StatusUnauthorized:
		sentinel = escrow.ErrForbidden
	case code == http.StatusNotFound:
		sentinel = escrow.ErrNotFound
	case code == http.StatusTooManyRequests, code == http.StatusPreconditionFailed, code >= 500:
		// 503 is also "Vault is sealed"; 429 a rate limit or a standby; 412
		// a replica that has not caught up. All pass with time.
		sentinel = escrow.ErrUnavailable
	default:
		return fmt.Errorf("vault %d: %s", code, msg)
	}
	if msg == "" {
		return fmt.Errorf("%w: vault %d", sentinel, re.StatusCode)
	}
	return fmt.Errorf("%w: vault %d: %s", sentinel, re.StatusCode, msg)
}

// isNetwork reports errors of reaching Vault at all.
func isNetwork(err error) bool {
	var ne net.Error
	var oe *net.OpError
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.As(err, &ue) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "giving up after") // retryablehttp's exhausted retries
}

// oneLine flattens Vault's multi-line error text and bounds its length.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.TrimPrefix(s, "1 error occurred: * ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// invalidToken reports whether Vault refused a request because it does not
// know the token (expired, revoked), rather than because of the policy.
func invalidToken(err error) bool {
	var re *vault.ResponseError
	// Vault sends one multi-error string: "2 errors occurred: * permission
	// denied * invalid token".
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden &&
		strings.Contains(strings.Join(re.Errors, "\n"), "invalid token")
}
