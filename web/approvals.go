package web

import (
	"net/http"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
)

type approvalsPage struct {
	Mine     []wire.Approval
	ToDecide []wire.Approval
	Others   []wire.Approval // auditors see the rest
}

func (u *UI) listApprovals(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	list, err := u.d.Approvals.List(r.Context(), escrow.ApprovalQuery{Limit: 200})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	now := u.d.Approvals.Now()
	var ap approvalsPage
	for _, a := range list {
		if !api.CanSeeApproval(p, a, now) {
			continue
		}
		wa := api.ToApproval(a, now)
		switch {
		case a.Requester.ID == p.UserID:
			ap.Mine = append(ap.Mine, wa)
		case p.Can(auth.PermApprovalDecide) && a.Effective(now) == escrow.ApprovalPending:
			ap.ToDecide = append(ap.ToDecide, wa)
		default:
			ap.Others = append(ap.Others, wa)
		}
	}
	u.render(w, r, http.StatusOK, "approvals", "Approvals", ap)
}

type approvalPage struct {
	A         wire.Approval
	Device    wire.Device
	Mine      bool
	CanDecide bool // pending, someone else's, and the viewer decides
	CanUse    bool // approved, the viewer's, not used yet
}

func (u *UI) approvalPage(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	a, err := u.d.Approvals.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		u.fail(w, r, err)
		return
	}
	now := u.d.Approvals.Now()
	if !api.CanSeeApproval(p, a, now) {
		u.fail(w, r, escrow.ErrNotFound) // not theirs to know about
		return
	}
	d, err := u.d.Devices.Device(r.Context(), a.Device)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	st := a.Effective(now)
	ap := approvalPage{A: api.ToApproval(a, now), Device: api.ToDevice(d), Mine: a.Requester.ID == p.UserID}
	ap.CanDecide = !ap.Mine && st == escrow.ApprovalPending && p.Can(auth.PermApprovalDecide)
	ap.CanUse = ap.Mine && st == escrow.ApprovalApproved && p.Can(auth.PermKeyReveal)
	var opts []func(*view)
	if r.URL.Query().Get("requested") == "1" && st == escrow.ApprovalPending {
		opts = append(opts, withFlash("Approval requested. Someone else with the approver role must approve it before it expires."))
	}
	u.render(w, r, http.StatusOK, "approval", "Approval request", ap, opts...)
}

func (u *UI) decide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		note := r.PostFormValue("note")
		if err := (wire.Decision{Note: note}).Validate(); err != nil {
			u.fail(w, r, err)
			return
		}
		id := chi.URLParam(r, "id")
		if _, err := u.d.Approvals.Decide(r.Context(), id, principal(r).Actor(), approve, note); err != nil {
			u.fail(w, r, err)
			return
		}
		http.Redirect(w, r, "/ui/approvals/"+id, http.StatusSeeOther)
	}
}
