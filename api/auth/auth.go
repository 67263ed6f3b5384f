// Package auth is who may do what over HTTP: principals (a person signed in
// through a session, or an API token), the permissions of each role in one
// declared table, the policy table that maps every route to the permission
// it needs, and the middleware that enforces them. Handlers never check
// permissions themselves.
package auth

import (
	"context"
	"slices"

	"github.com/fvescrow/fvescrow/escrow"
)

// Permission is one thing a route lets a principal do.
type Permission string

const (
	PermDeviceRead       Permission = "device:read"       // device state, key metadata, device audit trail
	PermKeyReveal        Permission = "key:reveal"        // reveal a recovery key (with reason and ticket)
	PermApprovalRequest  Permission = "approval:request"  // ask for a second person's approval
	PermApprovalDecide   Permission = "approval:decide"   // approve or deny someone else's request
	PermApprovalRead     Permission = "approval:read"     // see approvals one may act on
	PermAuditRead        Permission = "audit:read"        // the whole audit log and its exports
	PermNotificationRead Permission = "notification:read" // delivery state of notifications
	PermTokenSelf        Permission = "token:self"        // manage one's own API tokens
	PermTokenAdmin       Permission = "token:admin"       // manage everyone's tokens
	PermUserAdmin        Permission = "user:admin"        // local accounts, roles
	PermBlockAdmin       Permission = "block:admin"       // lift operator blocks
	PermMDMAdmin         Permission = "mdm:admin"         // nanomdm API: enqueue, push, push certificate
	PermRotationRead     Permission = "rotation:read"     // rotation state, the fleet view, campaigns
	PermRotationRequest  Permission = "rotation:request"  // rotate one device's key now
	PermCampaignAdmin    Permission = "rotation:campaign" // rotate many devices at once
	PermRegenerationRead Permission = "regeneration:read" // the list of Macs whose key an agent must regenerate
)

// AllPermissions lists every permission.
var AllPermissions = []Permission{PermDeviceRead, PermKeyReveal, PermApprovalRequest, PermApprovalDecide, PermApprovalRead,
	PermAuditRead, PermNotificationRead, PermTokenSelf, PermTokenAdmin, PermUserAdmin, PermBlockAdmin, PermMDMAdmin,
	PermRotationRead, PermRotationRequest, PermCampaignAdmin, PermRegenerationRead}

// RolePermissions is the declared table of what each role may do. Auditors
// and viewers never reveal keys; agents (scripts on the Macs) only read the
// key-regeneration list.
var RolePermissions = map[escrow.Role][]Permission{
	escrow.RoleAdmin:    AllPermissions,
	escrow.RoleHelpdesk: {PermDeviceRead, PermKeyReveal, PermApprovalRequest, PermApprovalRead, PermTokenSelf, PermRotationRead, PermRotationRequest},
	escrow.RoleApprover: {PermDeviceRead, PermApprovalDecide, PermApprovalRead, PermTokenSelf, PermRotationRead},
	escrow.RoleAuditor:  {PermDeviceRead, PermAuditRead, PermApprovalRead, PermNotificationRead, PermTokenSelf, PermRotationRead},
	escrow.RoleViewer:   {PermDeviceRead, PermTokenSelf, PermRotationRead},
	escrow.RoleAgent:    {PermRegenerationRead},
}

// Covers reports whether roles allow everything role allows: role is one
// of them, or each of its permissions is granted by one of them (an admin
// covers the agent role). Tokens never carry a role their owner does not
// cover.
func Covers(roles []escrow.Role, role escrow.Role) bool {
	if slices.Contains(roles, role) {
		return true
	}
	p := Principal{Roles: roles}
	for _, perm := range RolePermissions[role] {
		if !p.Can(perm) {
			return false
		}
	}
	return role.Valid()
}

// Principal is who is making a request.
type Principal struct {
	UserID   string // "local:ada", "oidc:<sub>", or "token:<id>" for a static token
	Name     string
	Email    string
	Roles    []escrow.Role
	Groups   []string
	Method   string // "session" or "token"
	TokenID  string // the API token used, if any
	CSRF     string // the session's CSRF token (sessions only)
	Password bool   // the session must change its password before anything else
}

// Can reports whether the principal's roles grant p.
func (p *Principal) Can(perm Permission) bool {
	if p == nil || p.Password {
		return false
	}
	for _, r := range p.Roles {
		if slices.Contains(RolePermissions[r], perm) {
			return true
		}
	}
	return false
}

// Permissions lists what the principal may do.
func (p *Principal) Permissions() []Permission {
	var out []Permission
	for _, perm := range AllPermissions {
		if p.Can(perm) {
			out = append(out, perm)
		}
	}
	return out
}

// Actor is the principal as the audit log names it: always the person, even
// through a token (the token ID goes into the record's detail).
func (p *Principal) Actor() escrow.Actor {
	return escrow.Actor{Kind: escrow.ActorUser, ID: p.UserID, Name: p.Name}
}

// GroupsAndRoles is what the approval policy matches on: IdP groups, and
// roles as "role:<name>".
func (p *Principal) GroupsAndRoles() []string {
	out := append([]string(nil), p.Groups...)
	for _, r := range p.Roles {
		out = append(out, "role:"+string(r))
	}
	return out
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the request's principal, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}
