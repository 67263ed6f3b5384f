package api

import (
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
)

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func toDevice(d escrow.Device) wire.Device {
	return wire.Device{ID: string(d.ID), UDID: d.UDID, Serial: d.Serial, Hostname: d.Hostname, Model: d.Model, OSVersion: d.OSVersion,
		Owner: d.Owner, OwnerEmail: d.OwnerEmail, Platform: d.Platform, EscrowStatus: d.Attrs[escrow.AttrEscrowStatus],
		FileVault: d.Attrs[escrow.AttrFDEEnabled], Attrs: d.Attrs, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, RetiredAt: optTime(d.RetiredAt)}
}

func toVersion(v escrow.KeyVersion) wire.KeyVersion {
	return wire.KeyVersion{Version: v.Seq, Status: string(v.Status), Source: string(v.Source), Current: v.Current(),
		CertFingerprint: v.CertFingerprint, Error: v.Error, Warning: v.Warning, ReceivedAt: v.ReceivedAt,
		SupersededAt: optTime(v.SupersededAt), DisclosedAt: optTime(v.DisclosedAt), VerifiedAt: optTime(v.VerifiedAt)}
}

// ToAudit converts an audit record to its wire form.
func ToAudit(r escrow.AuditRecord) wire.AuditRecord {
	return wire.AuditRecord{Seq: r.Seq, Time: r.Time, ActorKind: string(r.Actor.Kind), ActorID: r.Actor.ID, ActorName: r.Actor.Name,
		Action: r.Action, Device: string(r.Device), Reason: r.Reason, Ticket: r.Ticket, Detail: r.Detail, PrevHash: r.PrevHash, Hash: r.Hash}
}

func toApproval(a escrow.Approval, now time.Time) wire.Approval {
	return wire.Approval{ID: a.ID, Device: string(a.Device), Requester: a.Requester.ID, Reason: a.Reason, Ticket: a.Ticket,
		State: string(a.Effective(now)), CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt, Approver: a.Approver.ID,
		DecidedAt: optTime(a.DecidedAt), Note: a.DecisionNote, UseBy: optTime(a.UseBy), UsedAt: optTime(a.UsedAt)}
}

func toToken(t escrow.APIToken) wire.Token {
	return wire.Token{ID: t.ID, Name: t.Name, Owner: t.Owner, Roles: roleNames(t.Roles), CreatedAt: t.CreatedAt,
		ExpiresAt: optTime(t.ExpiresAt), RevokedAt: optTime(t.RevokedAt), LastUsedAt: optTime(t.LastUsedAt)}
}

func toUser(u escrow.User) wire.User {
	return wire.User{ID: u.ID, Username: u.Username, DisplayName: u.DisplayName, Email: u.Email, Source: u.Source,
		Roles: roleNames(u.Roles), TOTP: u.TOTPEnabled, Disabled: u.Disabled, LastLoginAt: optTime(u.LastLoginAt)}
}

func roleNames(rs []escrow.Role) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

func toMe(p *auth.Principal) wire.Me {
	perms := p.Permissions()
	ps := make([]string, len(perms))
	for i, x := range perms {
		ps[i] = string(x)
	}
	return wire.Me{ID: p.UserID, Name: p.Name, Email: p.Email, Roles: roleNames(p.Roles), Groups: p.Groups, Permissions: ps}
}
