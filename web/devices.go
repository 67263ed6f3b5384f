package web

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
)

type homePage struct {
	ToDecide int // pending approvals this person may decide
	Mine     int // their own approvals that are ready to use
}

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	var hp homePage
	if p.Can(auth.PermApprovalRead) {
		list, err := u.d.Approvals.List(r.Context(), escrow.ApprovalQuery{States: []escrow.ApprovalState{escrow.ApprovalPending, escrow.ApprovalApproved}, Limit: 200})
		if err != nil {
			u.fail(w, r, err)
			return
		}
		now := u.d.Approvals.Now()
		for _, a := range list {
			switch st := a.Effective(now); {
			case st == escrow.ApprovalPending && a.Requester.ID != p.UserID && p.Can(auth.PermApprovalDecide):
				hp.ToDecide++
			case st == escrow.ApprovalApproved && a.Requester.ID == p.UserID:
				hp.Mine++
			}
		}
	}
	u.render(w, r, http.StatusOK, "home", "Home", hp)
}

type searchPage struct {
	Query    string
	Searched bool
	Devices  []wire.Device
	More     bool
}

const searchLimit = 50

func (u *UI) searchDevices(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	sp := searchPage{Query: q, Searched: r.URL.Query().Has("q")}
	if sp.Searched {
		devs, err := u.d.Devices.FindDevices(r.Context(), escrow.DeviceQuery{Text: q, Limit: searchLimit + 1})
		if err != nil {
			u.fail(w, r, err)
			return
		}
		if len(devs) > searchLimit {
			devs, sp.More = devs[:searchLimit], true
		}
		for _, d := range devs {
			sp.Devices = append(sp.Devices, api.ToDevice(d))
		}
	}
	u.render(w, r, http.StatusOK, "devices", "Devices", sp)
}

type devicePage struct {
	wire.DeviceDetail
	HasKey  bool
	Ready   []wire.Approval // the viewer's approved, unused approvals for this device
	Waiting []wire.Approval // the viewer's pending requests for this device
	Holders []string
}

func (u *UI) resolve(w http.ResponseWriter, r *http.Request) (escrow.Device, bool) {
	d, err := api.ResolveDevice(r, u.d.Devices, chi.URLParam(r, "device"))
	if err != nil {
		u.fail(w, r, err)
		return escrow.Device{}, false
	}
	return d, true
}

func (u *UI) devicePage(w http.ResponseWriter, r *http.Request) {
	d, ok := u.resolve(w, r)
	if !ok {
		return
	}
	det, err := api.DeviceDetail(r, u.d.Devices, u.d.Details, u.d.Audit, d)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	dp := devicePage{DeviceDetail: det}
	for _, v := range det.KeyVersions {
		dp.HasKey = dp.HasKey || v.Current
	}
	for _, a := range det.Accounts {
		if a.HasSecureToken == "true" {
			dp.Holders = append(dp.Holders, a.UserName)
		}
	}
	if dp.Ready, dp.Waiting, err = u.myApprovals(r, d.ID); err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "device", deviceName(det.Device), dp)
}

func deviceName(d wire.Device) string {
	switch {
	case d.Hostname != "":
		return d.Hostname
	case d.Serial != "":
		return d.Serial
	}
	return d.ID
}

// myApprovals are the viewer's own approvals for a device: approved and
// ready to use, and still waiting.
func (u *UI) myApprovals(r *http.Request, id escrow.DeviceID) (ready, waiting []wire.Approval, err error) {
	p := principal(r)
	if !p.Can(auth.PermApprovalRequest) {
		return nil, nil, nil
	}
	list, err := u.d.Approvals.List(r.Context(), escrow.ApprovalQuery{RequesterID: p.UserID, Device: id,
		States: []escrow.ApprovalState{escrow.ApprovalPending, escrow.ApprovalApproved}, Limit: 50})
	if err != nil {
		return nil, nil, err
	}
	now := u.d.Approvals.Now()
	for _, a := range list {
		if a.Requester.ID != p.UserID || a.Device != id {
			continue
		}
		switch a.Effective(now) {
		case escrow.ApprovalApproved:
			ready = append(ready, api.ToApproval(a, now))
		case escrow.ApprovalPending:
			waiting = append(waiting, api.ToApproval(a, now))
		}
	}
	return ready, waiting, nil
}

type revealForm struct {
	Device         wire.Device
	Rules          Rules
	Reason, Ticket string
	ApprovalID     string
	NeedsApproval  bool // the last attempt was refused for want of an approval
	Ready          []wire.Approval
	Waiting        []wire.Approval
}

func (u *UI) revealFormData(r *http.Request, d escrow.Device) (revealForm, error) {
	rf := revealForm{Device: api.ToDevice(d), Rules: u.cfg.Rules}
	var err error
	rf.Ready, rf.Waiting, err = u.myApprovals(r, d.ID)
	return rf, err
}

func (u *UI) revealForm(w http.ResponseWriter, r *http.Request) {
	d, ok := u.resolve(w, r)
	if !ok {
		return
	}
	rf, err := u.revealFormData(r, d)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "reveal", "Reveal the recovery key of "+deviceName(rf.Device), rf)
}

type revealedPage struct {
	Device      wire.Device
	Groups      []string // the key in its dash-separated blocks
	Version     int
	AuditSeq    int64
	DisclosedAt time.Time
	Warning     string
	HideAfter   int // seconds
}

// reveal is the only handler that puts a key in a response: the body of
// this POST, after the reveal chain has written the audit record.
func (u *UI) reveal(w http.ResponseWriter, r *http.Request) {
	d, ok := u.resolve(w, r)
	if !ok {
		return
	}
	p := principal(r)
	reason, ticket, approval := r.PostFormValue("reason"), r.PostFormValue("ticket"), strings.TrimSpace(r.PostFormValue("approval_id"))
	rv, err := u.d.Revealer.Reveal(r.Context(), api.RevealRequest(p, d, reason, ticket, approval, r))
	if err != nil {
		rf, ferr := u.revealFormData(r, d)
		if ferr != nil {
			u.fail(w, r, ferr)
			return
		}
		rf.Reason, rf.Ticket, rf.ApprovalID = reason, ticket, approval
		rf.NeedsApproval = errors.Is(err, escrow.ErrApprovalRequired)
		status, msg := u.classify(r, err)
		u.render(w, r, status, "reveal", "Reveal the recovery key of "+deviceName(rf.Device), rf, withError(msg))
		return
	}
	key := rv.Key.Expose()
	groups := []string{key}
	if rv.Key.Canonical() {
		groups = strings.Split(key, "-")
	}
	u.render(w, r, http.StatusOK, "revealed", "Recovery key of "+deviceName(api.ToDevice(d)), revealedPage{Device: api.ToDevice(d), Groups: groups,
		Version: rv.Version.Seq, AuditSeq: rv.Audit.Seq, DisclosedAt: rv.Audit.Time, Warning: rv.Key.Warning(),
		HideAfter: int(u.cfg.KeyDisplay / time.Second)})
}

func (u *UI) requestApproval(w http.ResponseWriter, r *http.Request) {
	d, ok := u.resolve(w, r)
	if !ok {
		return
	}
	reason, ticket := r.PostFormValue("reason"), r.PostFormValue("ticket")
	a, err := u.d.Approvals.Request(r.Context(), api.RevealRequest(principal(r), d, reason, ticket, "", r))
	if err != nil {
		rf, ferr := u.revealFormData(r, d)
		if ferr != nil {
			u.fail(w, r, ferr)
			return
		}
		rf.Reason, rf.Ticket, rf.NeedsApproval = reason, ticket, true
		status, msg := u.classify(r, err)
		u.render(w, r, status, "reveal", "Reveal the recovery key of "+deviceName(rf.Device), rf, withError(msg))
		return
	}
	http.Redirect(w, r, "/ui/approvals/"+a.ID+"?requested=1", http.StatusSeeOther)
}
