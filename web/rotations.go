package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
)

// rotationPolicy declares the rotation pages (served when the server runs
// rotations).
func rotationPolicy() auth.Policy {
	p := auth.Policy{}
	add := func(method, pattern string, perm auth.Permission) { p[auth.Key(method, pattern)] = auth.Need(perm) }
	add(http.MethodPost, "/ui/devices/{device}/rotate", auth.PermRotationRequest)
	add(http.MethodGet, "/ui/rotations", auth.PermRotationRead)
	add(http.MethodPost, "/ui/rotations/campaigns", auth.PermCampaignAdmin)
	add(http.MethodGet, "/ui/rotations/campaigns/{id}", auth.PermRotationRead)
	return p
}

func (u *UI) rotations() bool { return u.d.Rotations != nil && u.d.RotationStore != nil }

// mountRotations adds the rotation pages; without rotations (a server
// built without them) they answer 404.
func (u *UI) mountRotations(r chi.Router) {
	only := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !u.rotations() {
				u.fail(w, r, escrow.ErrNotFound)
				return
			}
			h(w, r)
		}
	}
	r.Post("/ui/devices/{device}/rotate", only(u.rotateDevice))
	r.Get("/ui/rotations", only(u.rotationsPage))
	r.Post("/ui/rotations/campaigns", only(u.startCampaign))
	r.Get("/ui/rotations/campaigns/{id}", only(u.campaignPage))
}

// rotateDevice queues a rotation of one device's key now.
func (u *UI) rotateDevice(w http.ResponseWriter, r *http.Request) {
	d, ok := u.resolve(w, r)
	if !ok {
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" {
		u.fail(w, r, fmt.Errorf("%w: a reason is required to rotate a key", escrow.ErrInvalid))
		return
	}
	if _, _, err := u.d.Rotations.Schedule(r.Context(), escrow.RotationRequest{Device: d.ID, Trigger: escrow.TriggerManual,
		By: principal(r).Actor(), Reason: reason}); err != nil {
		u.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/devices/"+string(d.ID)+"?rotation=1", http.StatusSeeOther)
}

type rotationsPage struct {
	Hours         float64
	Overdue       []wire.OverdueKey
	Failed        []wire.Rotation
	Regenerations []wire.Regeneration
	Campaigns     []wire.Campaign
	MaxAgeDays    int
}

// rotationsPage is the fleet view: keys disclosed more than N hours ago
// and not rotated, failed rotations, Macs waiting for key regeneration, and
// campaigns.
func (u *UI) rotationsPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	pg := rotationsPage{Hours: 4}
	if s := r.URL.Query().Get("hours"); s != "" {
		if h, err := strconv.ParseFloat(s, 64); err == nil && h >= 0 && h <= 24*365 {
			pg.Hours = h
		}
	}
	var err error
	pg.Overdue, err = api.OverdueKeys(ctx, u.d.Devices, u.d.RotationStore, time.Now().Add(-time.Duration(pg.Hours*float64(time.Hour))), 500)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	failed, err := u.d.RotationStore.Jobs(ctx, escrow.JobQuery{Kind: escrow.JobRotation, States: []escrow.JobState{escrow.JobFailed}, Limit: 100})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for _, j := range failed {
		pg.Failed = append(pg.Failed, api.ToRotation(j))
	}
	regs, err := u.d.RotationStore.Regenerations(ctx, escrow.RegenerationQuery{Limit: 500})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for _, g := range regs {
		pg.Regenerations = append(pg.Regenerations, api.ToRegeneration(g))
	}
	cs, err := u.d.RotationStore.Campaigns(ctx, 20)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for _, c := range cs {
		pg.Campaigns = append(pg.Campaigns, api.ToCampaign(escrow.CampaignProgress{Campaign: c}))
	}
	u.render(w, r, http.StatusOK, "rotations", "Key rotations", pg)
}

func (u *UI) startCampaign(w http.ResponseWriter, r *http.Request) {
	days, _ := strconv.Atoi(r.PostFormValue("key_older_than_days"))
	req := escrow.CampaignRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Reason: strings.TrimSpace(r.PostFormValue("reason")),
		By: principal(r).Actor(), Text: strings.TrimSpace(r.PostFormValue("search")), DisclosedOnly: r.PostFormValue("disclosed_only") == "on"}
	if days < 0 {
		u.fail(w, r, fmt.Errorf("%w: the key age must not be negative", escrow.ErrInvalid))
		return
	}
	req.KeyOlderThan = time.Duration(days) * 24 * time.Hour
	p, err := u.d.Rotations.StartCampaign(r.Context(), req)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprint("/ui/rotations/campaigns/", p.ID), http.StatusSeeOther)
}

type campaignPage struct {
	Campaign  wire.Campaign
	Rotations []wire.Rotation
	Order     []string
}

// campaignStates is the order progress is shown in.
var campaignStates = []string{escrow.RotationScheduled, escrow.RotationQueued, escrow.RotationSent, escrow.RotationAcknowledged,
	escrow.RotationEscrowed, escrow.RotationRetrying, escrow.RotationVerified, escrow.RotationFailed, escrow.RotationCanceled}

func (u *UI) campaignPage(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		u.fail(w, r, fmt.Errorf("campaign: %w", escrow.ErrNotFound))
		return
	}
	p, err := u.d.RotationStore.Campaign(r.Context(), id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	jobs, err := u.d.RotationStore.Jobs(r.Context(), escrow.JobQuery{Kind: escrow.JobRotation, Campaign: id, Limit: 200})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	cp := campaignPage{Order: campaignStates, Campaign: api.ToCampaign(p)}
	for _, j := range jobs {
		cp.Rotations = append(cp.Rotations, api.ToRotation(j))
	}
	u.render(w, r, http.StatusOK, "campaign", "Campaign "+p.Name, cp)
}
