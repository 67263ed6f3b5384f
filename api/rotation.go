package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
)

// RotationReader is what the rotation routes read.
type RotationReader interface {
	Jobs(ctx context.Context, q escrow.JobQuery) ([]escrow.Job, error)
	DisclosedKeys(ctx context.Context, before time.Time, limit int) ([]escrow.KeyVersion, error)
	Campaign(ctx context.Context, id int64) (escrow.CampaignProgress, error)
	Campaigns(ctx context.Context, limit int) ([]escrow.Campaign, error)
	Regenerations(ctx context.Context, q escrow.RegenerationQuery) ([]escrow.Regeneration, error)
}

// rotationPolicy declares the rotation routes (served when Deps.Rotations
// is set).
func rotationPolicy() auth.Policy {
	p := auth.Policy{}
	add := func(method, pattern string, perm auth.Permission) { p[auth.Key(method, pattern)] = auth.Need(perm) }
	add(http.MethodGet, "/api/v1/rotations", auth.PermRotationRead)
	add(http.MethodGet, "/api/v1/rotations/overdue", auth.PermRotationRead)
	add(http.MethodPost, "/api/v1/devices/{device}/rotate", auth.PermRotationRequest)
	add(http.MethodGet, "/api/v1/campaigns", auth.PermRotationRead)
	add(http.MethodPost, "/api/v1/campaigns", auth.PermCampaignAdmin)
	add(http.MethodGet, "/api/v1/campaigns/{id}", auth.PermRotationRead)
	add(http.MethodGet, "/api/v1/key-regenerations", auth.PermRegenerationRead)
	return p
}

func (h *handlers) mountRotations(r chi.Router) {
	r.Get("/api/v1/rotations", h.listRotations)
	r.Get("/api/v1/rotations/overdue", h.overdueKeys)
	r.Post("/api/v1/devices/{device}/rotate", h.rotateDevice)
	r.Get("/api/v1/campaigns", h.listCampaigns)
	r.Post("/api/v1/campaigns", h.startCampaign)
	r.Get("/api/v1/campaigns/{id}", h.getCampaign)
	r.Get("/api/v1/key-regenerations", h.listRegenerations)
}

// ToRotation converts a rotation job (shared with the web UI).
func ToRotation(j escrow.Job) wire.Rotation {
	out := wire.Rotation{
		ID: j.ID, Device: string(j.Device), State: escrow.RotationState(j), Trigger: j.Data[escrow.RotationDataTrigger],
		RequestedBy: j.Data[escrow.RotationDataRequestedBy], Campaign: j.Campaign, RunAt: j.RunAt, Attempts: j.Attempts,
		Error: j.Error, NewVersion: j.Data[escrow.RotationDataNewVersion], CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
	}
	if !j.Open() {
		out.FinishedAt = optTime(j.UpdatedAt)
	}
	return out
}

// ToRegeneration converts a regeneration mark (shared with the web UI).
func ToRegeneration(r escrow.Regeneration) wire.Regeneration { return toRegeneration(r) }

// ToCampaign converts a campaign and its progress (shared with the web UI).
func ToCampaign(p escrow.CampaignProgress) wire.Campaign { return toCampaign(p) }

// OverdueKeys lists current keys disclosed before before, with their latest
// rotation: the fleet view the API and the web UI show.
func OverdueKeys(ctx context.Context, devices Devices, store RotationReader, before time.Time, limit int) ([]wire.OverdueKey, error) {
	vs, err := store.DisclosedKeys(ctx, before, limit)
	if err != nil {
		return nil, err
	}
	out := make([]wire.OverdueKey, 0, len(vs))
	for _, v := range vs {
		k := wire.OverdueKey{Device: string(v.Device), Version: v.Seq, DisclosedAt: v.DisclosedAt}
		if d, err := devices.Device(ctx, v.Device); err == nil {
			k.Serial = d.Serial
		}
		js, err := store.Jobs(ctx, escrow.JobQuery{Kind: escrow.JobRotation, Device: v.Device, Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(js) == 1 {
			rot := ToRotation(js[0])
			k.Rotation = &rot
		}
		out = append(out, k)
	}
	return out, nil
}

func toRegeneration(r escrow.Regeneration) wire.Regeneration {
	return wire.Regeneration{Device: string(r.Device), Serial: r.Serial, Reason: r.Reason, Since: r.Since, ClearedAt: optTime(r.ClearedAt)}
}

func toCampaign(p escrow.CampaignProgress) wire.Campaign {
	c := wire.Campaign{ID: p.ID, Name: p.Name, Reason: p.Reason, Filter: p.Filter, CreatedBy: p.CreatedBy.String(),
		CreatedAt: p.CreatedAt, Devices: p.Devices, Skipped: p.Skipped, States: p.States, Failures: p.Errors}
	if p.States != nil {
		open := 0
		for st, n := range p.States {
			if st != escrow.RotationVerified && st != escrow.RotationFailed && st != escrow.RotationCanceled {
				open += n
			}
		}
		c.Done = open == 0
	}
	return c
}

// rotationStates maps the state filter of /rotations to job states.
var rotationStates = map[string][]escrow.JobState{
	"open":     {escrow.JobPending, escrow.JobWaiting},
	"verified": {escrow.JobDone},
	"failed":   {escrow.JobFailed},
	"canceled": {escrow.JobCanceled},
}

func (h *handlers) listRotations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	jq := escrow.JobQuery{Kind: escrow.JobRotation, Limit: queryLimit(q.Get("limit"), 100, 1000)}
	if s := q.Get("state"); s != "" {
		states, ok := rotationStates[s]
		if !ok {
			h.fail(w, r, fmt.Errorf("%w: state must be open, verified, failed or canceled", escrow.ErrInvalid))
			return
		}
		jq.States = states
	}
	if ref := q.Get("device"); ref != "" {
		d, err := ResolveDevice(r, h.Devices, ref)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		jq.Device = d.ID
	}
	if c := q.Get("campaign"); c != "" {
		id, err := strconv.ParseInt(c, 10, 64)
		if err != nil || id <= 0 {
			h.fail(w, r, fmt.Errorf("%w: campaign must be a campaign ID", escrow.ErrInvalid))
			return
		}
		jq.Campaign = id
	}
	jobs, err := h.RotationStore.Jobs(r.Context(), jq)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := wire.RotationList{Rotations: make([]wire.Rotation, 0, len(jobs))}
	for _, j := range jobs {
		out.Rotations = append(out.Rotations, ToRotation(j))
	}
	WriteJSON(w, http.StatusOK, out)
}

func queryLimit(s string, def, max int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return def
	}
	return min(n, max)
}

// overdueKeys is the fleet view: keys disclosed more than ?hours= ago
// (default 1) and still current, with their rotation.
func (h *handlers) overdueKeys(w http.ResponseWriter, r *http.Request) {
	hours := 1.0
	if s := r.URL.Query().Get("hours"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 0 || v > 24*3650 {
			h.fail(w, r, fmt.Errorf("%w: hours must be a number of hours", escrow.ErrInvalid))
			return
		}
		hours = v
	}
	before := time.Now().Add(-time.Duration(hours * float64(time.Hour)))
	keys, err := OverdueKeys(r.Context(), h.Devices, h.RotationStore, before, queryLimit(r.URL.Query().Get("limit"), 1000, 10000))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, wire.OverdueList{OlderThanHours: hours, Keys: keys})
}

func (h *handlers) rotateDevice(w http.ResponseWriter, r *http.Request) {
	var req wire.RotateRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := req.Validate(); err != nil {
		h.fail(w, r, fmt.Errorf("%w: %v", escrow.ErrInvalid, err))
		return
	}
	d, err := ResolveDevice(r, h.Devices, chi.URLParam(r, "device"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	j, created, err := h.Rotations.Schedule(r.Context(), escrow.RotationRequest{Device: d.ID, Trigger: escrow.TriggerManual,
		By: principal(r).Actor(), Reason: strings.TrimSpace(req.Reason)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusAccepted
	if !created {
		status = http.StatusOK // a rotation was already under way; this is it
	}
	WriteJSON(w, status, ToRotation(j))
}

func (h *handlers) listCampaigns(w http.ResponseWriter, r *http.Request) {
	cs, err := h.RotationStore.Campaigns(r.Context(), queryLimit(r.URL.Query().Get("limit"), 100, 1000))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := wire.CampaignList{Campaigns: make([]wire.Campaign, 0, len(cs))}
	for _, c := range cs {
		out.Campaigns = append(out.Campaigns, toCampaign(escrow.CampaignProgress{Campaign: c}))
	}
	WriteJSON(w, http.StatusOK, out)
}

func (h *handlers) startCampaign(w http.ResponseWriter, r *http.Request) {
	var req wire.CampaignRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := req.Validate(); err != nil {
		h.fail(w, r, fmt.Errorf("%w: %v", escrow.ErrInvalid, err))
		return
	}
	cr := escrow.CampaignRequest{Name: req.Name, Reason: req.Reason, By: principal(r).Actor(), Text: strings.TrimSpace(req.Search),
		KeyOlderThan: time.Duration(req.KeyOlderThanDays) * 24 * time.Hour, DisclosedOnly: req.DisclosedOnly}
	for _, ref := range req.Devices {
		d, err := ResolveDevice(r, h.Devices, ref)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		cr.Devices = append(cr.Devices, d.ID)
	}
	p, err := h.Rotations.StartCampaign(r.Context(), cr)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusCreated, toCampaign(p))
}

func (h *handlers) getCampaign(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		h.fail(w, r, fmt.Errorf("campaign: %w", escrow.ErrNotFound))
		return
	}
	p, err := h.RotationStore.Campaign(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, toCampaign(p))
}

// listRegenerations is the list agents poll: Macs whose key must be
// regenerated on the Mac. ?device= (ID or serial) narrows it to one Mac;
// an unknown device gets an empty list, so agents need no special case.
func (h *handlers) listRegenerations(w http.ResponseWriter, r *http.Request) {
	q := escrow.RegenerationQuery{Limit: queryLimit(r.URL.Query().Get("limit"), 1000, 10000)}
	if ref := r.URL.Query().Get("device"); ref != "" {
		d, err := ResolveDevice(r, h.Devices, ref)
		if errors.Is(err, escrow.ErrNotFound) {
			WriteJSON(w, http.StatusOK, wire.RegenerationList{Devices: []wire.Regeneration{}})
			return
		} else if err != nil {
			h.fail(w, r, err)
			return
		}
		q.Device = d.ID
	}
	rs, err := h.RotationStore.Regenerations(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := wire.RegenerationList{Devices: make([]wire.Regeneration, 0, len(rs))}
	for _, g := range rs {
		out.Devices = append(out.Devices, toRegeneration(g))
	}
	WriteJSON(w, http.StatusOK, out)
}
