package web

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
)

// The datetime-local inputs of the filter form, read as UTC.
const localTime = "2006-01-02T15:04"

type auditFilter struct {
	Device, Actor, Action, From, To string
	After                           int64
}

func (f auditFilter) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"device": f.Device, "actor": f.Actor, "action": f.Action, "from": f.From, "to": f.To} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

type auditPage struct {
	Filter    auditFilter
	Records   []wire.AuditRecord // newest first
	Next      template.URL       // query of the next (newer) page
	ExportCSV template.URL       // export queries (url.Values.Encode output)
	ExportJL  template.URL
	Actions   []string
	Defaulted bool // From was filled in for a first visit
}

// Actions offered in the filter's suggestions.
var knownActions = []string{escrow.ActionKeyRevealed, escrow.ActionRevealRefused, escrow.ActionApprovalRequested, escrow.ActionApprovalApproved,
	escrow.ActionApprovalDenied, escrow.ActionOperatorBlocked, escrow.ActionOperatorUnblocked, auth.ActionLoginSucceeded, auth.ActionLoginFailed,
	auth.ActionLogout, auth.ActionPasswordChanged, auth.ActionUserCreated, auth.ActionUserUpdated, auth.ActionTokenCreated, auth.ActionTokenRevoked}

const auditPageSize = 200

// auditFilterOf reads the filter. A first visit (no parameters) shows the
// last seven days, filled into the form so it is visible and clearable.
func (u *UI) auditFilterOf(r *http.Request) (auditFilter, escrow.AuditQuery, bool, error) {
	v := r.URL.Query()
	f := auditFilter{Device: strings.TrimSpace(v.Get("device")), Actor: strings.TrimSpace(v.Get("actor")), Action: strings.TrimSpace(v.Get("action")),
		From: v.Get("from"), To: v.Get("to")}
	defaulted := len(v) == 0
	if defaulted {
		f.From = time.Now().UTC().Add(-7 * 24 * time.Hour).Format(localTime)
	}
	q := escrow.AuditQuery{ActorID: f.Actor, Action: f.Action}
	if f.Device != "" {
		// A serial number works too: it names the device when it is unique.
		q.Device = escrow.DeviceID(f.Device)
		if d, err := api.ResolveDevice(r, u.d.Devices, f.Device); err == nil {
			q.Device = d.ID
		}
	}
	var err error
	if s := v.Get("after"); s != "" {
		if f.After, err = strconv.ParseInt(s, 10, 64); err != nil || f.After < 0 {
			return f, q, false, fmt.Errorf("%w: after must be a record number", escrow.ErrInvalid)
		}
		q.AfterSeq = f.After
	}
	for _, t := range []struct {
		name string
		in   string
		out  *time.Time
	}{{"from", f.From, &q.Since}, {"to", f.To, &q.Until}} {
		if t.in == "" {
			continue
		}
		ts, err := time.ParseInLocation(localTime, t.in, time.UTC)
		if err != nil {
			if ts, err = time.Parse(time.RFC3339, t.in); err != nil {
				return f, q, false, fmt.Errorf("%w: %s must be a date and time like 2026-01-31T14:05", escrow.ErrInvalid, t.name)
			}
		}
		*t.out = ts
	}
	return f, q, defaulted, nil
}

func (u *UI) auditPage(w http.ResponseWriter, r *http.Request) {
	f, q, defaulted, err := u.auditFilterOf(r)
	ap := auditPage{Filter: f, Actions: knownActions, Defaulted: defaulted}
	if err != nil {
		status, msg := u.classify(r, err)
		u.render(w, r, status, "audit", "Audit log", ap, withError(msg))
		return
	}
	q.Limit = auditPageSize
	recs, err := u.d.Audit.AuditRecords(r.Context(), q)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for i := len(recs) - 1; i >= 0; i-- {
		ap.Records = append(ap.Records, api.ToAudit(recs[i]))
	}
	if len(recs) == auditPageSize {
		next := f.values()
		next.Set("after", strconv.FormatInt(recs[len(recs)-1].Seq, 10))
		ap.Next = template.URL(next.Encode())
	}
	export := f.values()
	export.Set("format", "csv")
	ap.ExportCSV = template.URL(export.Encode())
	export.Set("format", "jsonl")
	ap.ExportJL = template.URL(export.Encode())
	u.render(w, r, http.StatusOK, "audit", "Audit log", ap)
}

// exportAudit streams every record matching the filter (as GET
// /api/v1/audit/export does), as a download.
func (u *UI) exportAudit(w http.ResponseWriter, r *http.Request) {
	_, q, _, err := u.auditFilterOf(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	format := r.URL.Query().Get("format")
	aw, err := wire.NewAuditWriter(w, format)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	ct, ext := "application/x-ndjson", "jsonl"
	if format == "csv" {
		ct, ext = "text/csv; charset=utf-8", "csv"
	}
	pageHeaders(w)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="fvescrow-audit-%s.%s"`, time.Now().UTC().Format("20060102T150405Z"), ext))
	q.Limit = 1000
	for {
		recs, err := u.d.Audit.AuditRecords(r.Context(), q)
		if err != nil {
			if !errors.Is(err, r.Context().Err()) {
				// Headers are gone: the body is cut short.
				u.log.ErrorContext(r.Context(), "audit export", "err", err, "request_id", api.RequestID(r.Context()))
			}
			return
		}
		for _, rec := range recs {
			if err := aw.Write(api.ToAudit(rec)); err != nil {
				return
			}
			q.AfterSeq = rec.Seq
		}
		if len(recs) < q.Limit {
			_ = aw.Flush()
			return
		}
	}
}
