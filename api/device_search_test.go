package api_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
)

// TestDeviceSearchByUser: GET /api/v1/devices?q= finds a Mac by its user
// (owner) when nothing else about it matches, case-insensitively, and not
// the Macs of others; the owner's e-mail finds it too.
func TestDeviceSearchByUser(t *testing.T) {
	backends(t, apitest.Options{}, func(t *testing.T, s *apitest.Server) {
		ctx := context.Background()
		// Nothing but the owner holds "osei": not the hostname, serial,
		// UDID (hex) or e-mail.
		mine := escrow.Device{ID: "0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9", UDID: "0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9", Serial: "C02USERQ0001",
			Hostname: "lab-204", Platform: "macOS", Owner: "kwame.osei", OwnerEmail: "kw17@corp.example"}
		other := escrow.Device{ID: "1B2C3D4E-5F60-4172-8384-A5B6C7D8E9F0", UDID: "1B2C3D4E-5F60-4172-8384-A5B6C7D8E9F0", Serial: "C02USERQ0002",
			Hostname: "lab-205", Platform: "macOS", Owner: "li.wei", OwnerEmail: "lw3@corp.example"}
		for _, d := range []escrow.Device{mine, other} {
			if _, err := s.Service.UpsertDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		vic := s.MustUser(t, "vic", escrow.RoleViewer)
		search := func(q string) []wire.Device {
			t.Helper()
			return decode[wire.DeviceList](t, call(t, s, bearer("vic", vic.Token), http.MethodGet, "/api/v1/devices?q="+url.QueryEscape(q), nil), http.StatusOK).Devices
		}
		for _, q := range []string{"osei", "OSEI", "kwame.osei", "kw17@corp"} {
			got := search(q)
			if len(got) != 1 || got[0].ID != string(mine.ID) || got[0].Owner != "kwame.osei" || got[0].OwnerEmail != "kw17@corp.example" {
				t.Errorf("search %q: %+v, want only %s", q, got, mine.ID)
			}
		}
		if got := search("li.wei"); len(got) != 1 || got[0].ID != string(other.ID) {
			t.Errorf("search li.wei: %+v", got)
		}
		if got := search("nobody.here"); len(got) != 0 {
			t.Errorf("search nobody.here: %+v", got)
		}
	})
}
