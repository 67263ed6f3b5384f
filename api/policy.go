package api

import (
	"net/http"

	"github.com/fvescrow/fvescrow/api/auth"
)

// Policy is the declared table of every route the server serves and what it
// needs. A route missing here is refused at run time, and the authorization
// matrix test fails. Device endpoints are public to this table: nanomdm
// authenticates devices by their signed requests and certificates.
func Policy() auth.Policy {
	const (
		get, post, patch, del = http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete
	)
	p := auth.Policy{}
	add := func(method, pattern string, a auth.Access) { p[auth.Key(method, pattern)] = a }

	add(get, "/healthz", auth.Public)
	add(get, "/readyz", auth.Public)

	// The MDM device endpoints and SCEP (devices authenticate themselves).
	// Routes registered for every method use "*".
	add(auth.AnyMethod, "/mdm", auth.Public)
	add(auth.AnyMethod, "/checkin", auth.Public)
	add(auth.AnyMethod, "/scep", auth.Public)
	add(post, "/webhook/nanomdm", auth.Public) // HMAC-verified by the handler

	// nanomdm's API: enqueue, push and the push certificate.
	add(auth.AnyMethod, "/nanomdm/v1/enqueue/*", auth.Need(auth.PermMDMAdmin))
	add(auth.AnyMethod, "/nanomdm/v1/push/*", auth.Need(auth.PermMDMAdmin))
	add(auth.AnyMethod, "/nanomdm/v1/pushcert", auth.Need(auth.PermMDMAdmin))
	add(auth.AnyMethod, "/nanomdm/v1/escrowkeyunlock", auth.Need(auth.PermMDMAdmin))

	add(post, "/api/v1/login", auth.Public) // checks credentials itself
	add(get, "/api/v1/me", auth.Authenticated)
	add(get, "/api/v1/devices", auth.Need(auth.PermDeviceRead))
	add(get, "/api/v1/devices/{device}", auth.Need(auth.PermDeviceRead))
	add(post, "/api/v1/devices/{device}/reveal", auth.Need(auth.PermKeyReveal))
	add(post, "/api/v1/devices/{device}/approvals", auth.Need(auth.PermApprovalRequest))
	add(get, "/api/v1/approvals", auth.Need(auth.PermApprovalRead))
	add(get, "/api/v1/approvals/{id}", auth.Need(auth.PermApprovalRead))
	add(post, "/api/v1/approvals/{id}/approve", auth.Need(auth.PermApprovalDecide))
	add(post, "/api/v1/approvals/{id}/deny", auth.Need(auth.PermApprovalDecide))
	add(get, "/api/v1/audit", auth.Need(auth.PermAuditRead))
	add(get, "/api/v1/audit/export", auth.Need(auth.PermAuditRead))
	add(get, "/api/v1/notifications", auth.Need(auth.PermNotificationRead))
	add(get, "/api/v1/tokens", auth.Need(auth.PermTokenSelf))
	add(post, "/api/v1/tokens", auth.Need(auth.PermTokenSelf))
	add(del, "/api/v1/tokens/{id}", auth.Need(auth.PermTokenSelf))
	add(get, "/api/v1/users", auth.Need(auth.PermUserAdmin))
	add(post, "/api/v1/users", auth.Need(auth.PermUserAdmin))
	add(patch, "/api/v1/users/{id}", auth.Need(auth.PermUserAdmin))
	add(del, "/api/v1/blocks/{actor}", auth.Need(auth.PermBlockAdmin))
	return p
}

// Merge adds other's entries to p (the web UI declares its own table).
func Merge(p, other auth.Policy) auth.Policy {
	for k, v := range other {
		p[k] = v
	}
	return p
}
