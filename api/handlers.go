package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/token"
	"github.com/go-chi/chi/v5"
)

func (h *handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	WriteError(w, r, h.Log, err)
}

func principal(r *http.Request) *auth.Principal { return auth.FromContext(r.Context()) }

// ResolveDevice finds a device by ID (the UDID for Macs), or by a serial
// number typed at the help desk.
func ResolveDevice(r *http.Request, devices Devices, ref string) (escrow.Device, error) {
	if d, err := devices.Device(r.Context(), escrow.DeviceID(ref)); err == nil {
		return d, nil
	} else if !errors.Is(err, escrow.ErrNotFound) && !errors.Is(err, escrow.ErrInvalid) {
		return escrow.Device{}, err
	}
	list, err := devices.FindDevices(r.Context(), escrow.DeviceQuery{Text: ref, Limit: 20})
	if err != nil {
		return escrow.Device{}, err
	}
	var match []escrow.Device
	for _, d := range list {
		if strings.EqualFold(d.Serial, ref) || strings.EqualFold(d.UDID, ref) {
			match = append(match, d)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return escrow.Device{}, fmt.Errorf("device %q: %w", ref, escrow.ErrNotFound)
	}
	return escrow.Device{}, fmt.Errorf("%w: %q matches %d devices; use the device ID", escrow.ErrConflict, ref, len(match))
}

func (h *handlers) me(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, toMe(principal(r)))
}

func (h *handlers) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	devs, err := h.Devices.FindDevices(r.Context(), escrow.DeviceQuery{Text: strings.TrimSpace(q.Get("q")), IncludeRetired: q.Get("all") == "true",
		Limit: limit, AfterID: escrow.DeviceID(q.Get("after"))})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := wire.DeviceList{Devices: make([]wire.Device, 0, len(devs))}
	for _, d := range devs {
		out.Devices = append(out.Devices, toDevice(d))
	}
	if len(devs) == limit {
		out.Next = string(devs[len(devs)-1].ID)
	}
	WriteJSON(w, http.StatusOK, out)
}

// DeviceDetail builds a device page (shared by the API and the web UI).
func DeviceDetail(r *http.Request, devices Devices, details Details, audit Audit, d escrow.Device) (wire.DeviceDetail, error) {
	ctx := r.Context()
	vs, err := devices.KeyVersions(ctx, d.ID, escrow.KindPRK)
	if err != nil {
		return wire.DeviceDetail{}, err
	}
	accounts, _, err := details.Accounts(ctx, d.ID)
	if err != nil {
		return wire.DeviceDetail{}, err
	}
	jobs, err := details.Jobs(ctx, escrow.JobQuery{Device: d.ID, States: []escrow.JobState{escrow.JobPending, escrow.JobWaiting}})
	if err != nil {
		return wire.DeviceDetail{}, err
	}
	recs, err := audit.AuditRecords(ctx, escrow.AuditQuery{Device: d.ID, Limit: 200})
	if err != nil {
		return wire.DeviceDetail{}, err
	}
	boot, err := devices.KeyVersions(ctx, d.ID, escrow.KindBootstrapToken)
	if err != nil {
		return wire.DeviceDetail{}, err
	}
	out := wire.DeviceDetail{Device: toDevice(d), KeyVersions: []wire.KeyVersion{}, Accounts: []wire.Account{}, Audit: []wire.AuditRecord{}}
	st := token.State{
		FileVault: flagAttr(d.Attrs[escrow.AttrFDEEnabled]), HasPRK: flagAttr(d.Attrs[escrow.AttrFDEHasPRK]),
		BootstrapAllows: d.Attrs[escrow.AttrBootstrapAllowed], Accounts: accounts,
	}
	for _, v := range vs {
		out.KeyVersions = append(out.KeyVersions, toVersion(v))
		if v.Current() {
			st.PRKEscrowed, st.PRKVerified, st.PRKDisclosed = true, !v.VerifiedAt.IsZero(), !v.DisclosedAt.IsZero()
		}
	}
	for _, v := range boot {
		st.BootstrapHeld = st.BootstrapHeld || v.Current()
	}
	for _, a := range accounts {
		out.Accounts = append(out.Accounts, wire.Account{UserName: a.UserName, FullName: a.FullName, UID: a.UID,
			HasSecureToken: a.HasSecureToken.String(), MobileAccount: a.MobileAccount.String(), IsLoggedIn: a.IsLoggedIn.String()})
	}
	v := token.Assess(st)
	out.Recoverable, out.Paths = v.Recoverable, v.Paths
	for _, f := range v.Findings {
		out.Findings = append(out.Findings, wire.Finding{Severity: string(f.Severity), Code: f.Code, Message: f.Message})
	}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, wire.Job{Kind: j.Kind, State: string(j.State), Step: j.Step, RunAt: j.RunAt, Attempts: j.Attempts, Error: j.Error})
	}
	rots, err := details.Jobs(ctx, escrow.JobQuery{Kind: escrow.JobRotation, Device: d.ID, Limit: 1})
	if err != nil {
		return wire.DeviceDetail{}, err
	}
	if len(rots) == 1 {
		rot := ToRotation(rots[0])
		out.Rotation = &rot
	}
	regs, err := details.Regenerations(ctx, escrow.RegenerationQuery{Device: d.ID})
	if err != nil {
		return wire.DeviceDetail{}, err
	}
	if len(regs) == 1 {
		g := toRegeneration(regs[0])
		out.Regeneration = &g
	}
	// Newest first, at most 50.
	for i := len(recs) - 1; i >= 0 && len(out.Audit) < 50; i-- {
		out.Audit = append(out.Audit, ToAudit(recs[i]))
	}
	return out, nil
}

func flagAttr(s string) fde.Flag {
	switch s {
	case "true":
		return fde.FlagTrue
	case "false":
		return fde.FlagFalse
	}
	return fde.FlagUnknown
}

func (h *handlers) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := ResolveDevice(r, h.Devices, chi.URLParam(r, "device"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out, err := DeviceDetail(r, h.Devices, h.Details, h.Audit, d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, out)
}

// RevealRequest builds the escrow request a principal makes.
func RevealRequest(p *auth.Principal, d escrow.Device, reason, ticket, approval string, r *http.Request) escrow.RevealRequest {
	detail := map[string]string{"via": p.Method, "request_id": RequestID(r.Context())}
	if p.TokenID != "" {
		detail["token"] = p.TokenID
	}
	return escrow.RevealRequest{Actor: p.Actor(), Groups: p.GroupsAndRoles(), Device: d.ID, Reason: reason, Ticket: ticket,
		ApprovalID: approval, Detail: detail}
}

func (h *handlers) reveal(w http.ResponseWriter, r *http.Request) {
	var req wire.RevealRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	d, err := ResolveDevice(r, h.Devices, chi.URLParam(r, "device"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rv, err := h.Revealer.Reveal(r.Context(), RevealRequest(principal(r), d, req.Reason, req.Ticket, req.ApprovalID, r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, wire.RevealResponse{Key: rv.Key.Expose(), Device: string(d.ID), Serial: d.Serial, Version: rv.Version.Seq,
		AuditSeq: rv.Audit.Seq, DisclosedAt: rv.Audit.Time, Warning: rv.Key.Warning()})
}

func (h *handlers) requestApproval(w http.ResponseWriter, r *http.Request) {
	var req wire.ApprovalRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	d, err := ResolveDevice(r, h.Devices, chi.URLParam(r, "device"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	p := principal(r)
	a, err := h.Approvals.Request(r.Context(), RevealRequest(p, d, req.Reason, req.Ticket, "", r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusCreated, toApproval(a, h.Approvals.Now()))
}

// CanSeeApproval is the visibility rule: the requester; approvers while it
// is pending or when they decided it; auditors always. Nobody else sees
// someone's approved request.
func CanSeeApproval(p *auth.Principal, a escrow.Approval, now time.Time) bool {
	switch {
	case a.Requester.ID == p.UserID, p.Can(auth.PermAuditRead):
		return true
	case p.Can(auth.PermApprovalDecide):
		return a.Effective(now) == escrow.ApprovalPending || a.Approver.ID == p.UserID
	}
	return false
}

func (h *handlers) listApprovals(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	q := escrow.ApprovalQuery{Limit: 200}
	if st := r.URL.Query().Get("state"); st != "" {
		q.States = []escrow.ApprovalState{escrow.ApprovalState(st)}
	}
	list, err := h.Approvals.List(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	now := h.Approvals.Now()
	out := []wire.Approval{}
	for _, a := range list {
		if CanSeeApproval(p, a, now) {
			out = append(out, toApproval(a, now))
		}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"approvals": out})
}

func (h *handlers) getApproval(w http.ResponseWriter, r *http.Request) {
	a, err := h.Approvals.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !CanSeeApproval(principal(r), a, h.Approvals.Now()) {
		h.fail(w, r, escrow.ErrNotFound) // not theirs to know about
		return
	}
	WriteJSON(w, http.StatusOK, toApproval(a, h.Approvals.Now()))
}

func (h *handlers) decide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req wire.Decision
		if r.ContentLength != 0 {
			if err := DecodeJSON(w, r, &req); err != nil {
				h.fail(w, r, err)
				return
			}
		}
		a, err := h.Approvals.Decide(r.Context(), chi.URLParam(r, "id"), principal(r).Actor(), approve, req.Note)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		WriteJSON(w, http.StatusOK, toApproval(a, h.Approvals.Now()))
	}
}
