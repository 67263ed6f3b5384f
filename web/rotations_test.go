package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
)

// TestRotationPages: the device page shows and starts rotations; the
// fleet page lists disclosed keys not yet rotated and Macs waiting for
// regeneration; campaigns start from the form and show their progress.
// Each action is allowed only to the roles the policy table names.
func TestRotationPages(t *testing.T) {
	r := newRig(t, rigOptions{})
	dev := "/ui/devices/" + string(r.device.ID)
	admin := r.user("root", escrow.RoleAdmin)
	hd := r.user("hd", escrow.RoleHelpdesk)
	viewer := r.user("viewer", escrow.RoleViewer)

	mustContain(t, "device page before", viewer.get(dev), "never been rotated")
	if strings.Contains(viewer.get(dev).body, "Rotate key now") {
		t.Error("the rotate form is shown to a viewer")
	}
	mustStatus(t, "viewer rotates", viewer.submit(dev+"/rotate", url.Values{"reason": {"curious"}}), http.StatusForbidden)
	mustStatus(t, "rotate without a reason", hd.submit(dev+"/rotate", url.Values{"reason": {""}}), http.StatusBadRequest)
	got := hd.submit(dev+"/rotate", url.Values{"reason": {"user read the key to the wrong person"}})
	mustStatus(t, "helpdesk rotates", got, http.StatusSeeOther)
	js, err := r.meta.Jobs(ctx, escrow.JobQuery{Kind: escrow.JobRotation, Device: r.device.ID})
	if err != nil || len(js) != 1 || js[0].Data[escrow.RotationDataTrigger] != escrow.TriggerManual || js[0].Step != escrow.RotationScheduled {
		t.Fatalf("rotation jobs %+v %v", js, err)
	}
	mustContain(t, "device page after", viewer.get(dev), "Scheduled", "manual", "(by user:local:hd)")

	// A reveal through the UI discloses the key; the fleet view lists it.
	admin.submit(dev+"/reveal", revealForm(goodReason, goodTicket))
	mustContain(t, "fleet view", viewer.get("/ui/rotations?hours=0"), "C02XK0AAJGH5", "Scheduled")
	if strings.Contains(viewer.get("/ui/rotations?hours=5").body, "C02XK0AAJGH5") {
		t.Error("a key disclosed just now is listed as overdue by 5 hours")
	}

	// Campaigns: admins only; the page shows progress by state.
	form := url.Values{"name": {"Q4"}, "reason": {"yearly rotation"}, "search": {""}, "key_older_than_days": {"0"}}
	mustStatus(t, "helpdesk starts a campaign", hd.submit("/ui/rotations/campaigns", form), http.StatusForbidden)
	got = admin.submit("/ui/rotations/campaigns", form)
	mustStatus(t, "admin starts a campaign", got, http.StatusSeeOther)
	if !strings.HasPrefix(got.location(), "/ui/rotations/campaigns/") {
		t.Fatalf("campaign redirect %q", got.location())
	}
	// The one device with a key is already rotating: skipped.
	mustContain(t, "campaign page", viewer.get(got.location()), "Campaign: Q4", "0 rotating, 2 skipped", "finished")
	mustStatus(t, "unknown campaign", viewer.get("/ui/rotations/campaigns/999"), http.StatusNotFound)

	// A Mac waiting for regeneration is on the fleet page and its device page.
	if _, err := r.meta.MarkRegeneration(ctx, escrow.Regeneration{Device: r.device.ID, Reason: "rotation failed: the device refused", VersionID: 1},
		escrow.Event{Actor: escrow.System, Action: escrow.ActionRegenerationNeeded, Device: r.device.ID}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "fleet regeneration", viewer.get("/ui/rotations"), "Waiting for key regeneration", "rotation failed: the device refused")
	mustContain(t, "device regeneration", viewer.get(dev), "needs its recovery key regenerated")
}

// TestAgentTokenFromTheUI: an admin may mint a token with the agent role
// (which their admin role covers); a helpdesk user may not mint roles they
// do not cover.
func TestAgentTokenFromTheUI(t *testing.T) {
	r := newRig(t, rigOptions{})
	admin := r.user("root", escrow.RoleAdmin)
	hd := r.user("hd", escrow.RoleHelpdesk)
	mustContain(t, "admin tokens page", admin.get("/ui/tokens"), `value="agent"`, `value="auditor"`)
	if strings.Contains(hd.get("/ui/tokens").body, `value="auditor"`) {
		t.Error("a helpdesk user is offered the auditor role")
	}
	got := admin.submit("/ui/tokens", url.Values{"name": {"mac agents"}, "roles": {"agent"}, "expires_in_hours": {"0"}})
	mustStatus(t, "agent token", got, http.StatusCreated)
	ts, err := r.meta.APITokens(ctx, "local:root")
	if err != nil || len(ts) != 1 || len(ts[0].Roles) != 1 || ts[0].Roles[0] != escrow.RoleAgent {
		t.Fatalf("tokens %+v %v", ts, err)
	}
	mustStatus(t, "helpdesk mints auditor", hd.submit("/ui/tokens", url.Values{"name": {"x"}, "roles": {"auditor"}, "expires_in_hours": {"24"}}), http.StatusForbidden)
}
