package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
)

// TokenFromRequest reads a bearer token, or the password of HTTP Basic auth
// (what nanomdm's tools send: user "nanomdm", password = API key).
func TokenFromRequest(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw
	}
	return ""
}

// TokenHash is how tokens are kept at rest.
func TokenHash(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// StaticTokenAuth admits requests carrying the token whose SHA-256 is hash.
// It compares in constant time and never logs the presented token.
func StaticTokenAuth(hash [32]byte, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t := TokenFromRequest(r)
			got := TokenHash(t)
			if t == "" || subtle.ConstantTimeCompare(got[:], hash[:]) != 1 {
				WriteError(w, r, log, ErrUnauthenticated)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
