package web_test

import (
	"encoding/json"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
	"github.com/fvescrow/fvescrow/token"
)

// macAnswers records a device's SecurityInfo and UserList answers the way
// the MDM capture does (api/mdm/capture.go): the SecurityInfo attributes and
// the escrow status decided from them, the account inventory, and the
// SecureToken holders attribute.
func (r *rig) macAnswers(id escrow.DeviceID, securityInfo, userList string) {
	r.t.Helper()
	now := time.Now()
	si, err := fde.ParseSecurityInfo([]byte(securityInfo))
	if err != nil {
		r.t.Fatal(err)
	}
	vs, err := r.svc.KeyVersions(ctx, id, escrow.KindPRK)
	if err != nil {
		r.t.Fatal(err)
	}
	hasKey := slices.ContainsFunc(vs, func(v escrow.KeyVersion) bool { return v.Current() })
	attrs := escrow.SecurityInfoAttrs(si, now)
	attrs[escrow.AttrEscrowStatus] = string(escrow.StatusFromSecurityInfo(si, hasKey))
	if _, err := r.svc.UpsertDevice(ctx, escrow.Device{ID: id, Attrs: attrs}); err != nil {
		r.t.Fatal(err)
	}
	ul, err := fde.ParseUserList([]byte(userList))
	if err != nil {
		r.t.Fatal(err)
	}
	accounts := token.FromUserList(ul)
	if _, err := r.meta.ReplaceAccounts(ctx, id, accounts, now); err != nil {
		r.t.Fatal(err)
	}
	var names []string
	for _, h := range token.Holders(accounts) {
		names = append(names, h.UserName)
	}
	if _, err := r.svc.UpsertDevice(ctx, escrow.Device{ID: id, Attrs: map[string]string{
		escrow.AttrTokenHolders: strings.Join(names, ","), escrow.AttrUserListAt: now.UTC().Format(time.RFC3339)}}); err != nil {
		r.t.Fatal(err)
	}
}

func securityInfoPlist(fdeEnabled, hasPRK string) string {
	s := `<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>CommandUUID</key><string>0F5A3C1E-7D2B-4E8A-9C61-2B3D4E5F6A7B</string>
<key>Status</key><string>Acknowledged</string>
<key>SecurityInfo</key><dict>
<key>FDE_Enabled</key><` + fdeEnabled + `/>`
	if hasPRK != "" {
		s += `<key>FDE_HasPersonalRecoveryKey</key><` + hasPRK + `/>`
	}
	return s + `<key>BootstrapTokenAllowedForAuthentication</key><string>allowed</string>
<key>ManagementStatus</key><dict><key>UserApprovedEnrollment</key><true/><key>EnrolledViaDEP</key><false/></dict>
</dict></dict></plist>`
}

type plistUser struct {
	name, full string
	token      bool
}

func userListPlist(users ...plistUser) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>CommandUUID</key><string>1A5A3C1E-7D2B-4E8A-9C61-2B3D4E5F6A7B</string>
<key>Status</key><string>Acknowledged</string>
<key>Users</key><array>`)
	for i, u := range users {
		tok := "false"
		if u.token {
			tok = "true"
		}
		b.WriteString(`<dict><key>UserName</key><string>` + u.name + `</string><key>FullName</key><string>` + u.full +
			`</string><key>HasSecureToken</key><` + tok + `/><key>IsLoggedIn</key><false/><key>MobileAccount</key><false/>` +
			`<key>UID</key><integer>` + strconv.Itoa(501+i) + `</integer></dict>`)
	}
	b.WriteString(`</array></dict></plist>`)
	return b.String()
}

var tagRE = regexp.MustCompile(`<[^>]*>`)

// fact is the text of a <dd> that follows <dt>label</dt> on a page, tags
// stripped and entities decoded ("" when the page has no such fact).
func fact(body, label string) string {
	m := regexp.MustCompile(`(?s)<dt>` + regexp.QuoteMeta(label) + `</dt>\s*<dd>(.*?)</dd>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(html.UnescapeString(tagRE.ReplaceAllString(m[1], "")))
}

// section is the HTML of the page section labelled by heading id.
func section(t *testing.T, body, id string) string {
	t.Helper()
	i := strings.Index(body, `<section aria-labelledby="`+id+`">`)
	if i < 0 {
		t.Fatalf("no section %s in page:\n%s", id, body)
	}
	j := strings.Index(body[i:], `</section>`)
	if j < 0 {
		t.Fatalf("section %s is not closed", id)
	}
	return body[i : i+j]
}

// rowRE matches one row of a list table: its header cell and the rest.
var rowRE = regexp.MustCompile(`(?s)<tr>\s*<th scope="row">(.*?)</th>(.*?)</tr>`)

func tableRows(sectionHTML string) map[string]string {
	rows := map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(sectionHTML, -1) {
		head := strings.Join(strings.Fields(html.UnescapeString(tagRE.ReplaceAllString(m[1], " "))), " ")
		rows[head] = strings.Join(strings.Fields(html.UnescapeString(tagRE.ReplaceAllString(m[2], " "))), " ")
	}
	return rows
}

// The device page shows what the Mac reported: FileVault on or off, the
// escrow status in words, the SecureToken holders by name, and the key
// versions as metadata only; GET /api/v1/devices/{id} carries the same.
func TestDevicePageShowsFileVaultEscrowAndTokenHolders(t *testing.T) {
	r := newRig(t, rigOptions{})

	// ada-mbp: a second key arrives (as after a rotation), so two versions.
	key2 := "K7XQ-4WZR-M2PV-9TNB-HC3L-JD6F"
	if _, err := r.svc.Ingest(ctx, r.device, cmstest.Encrypt(t, r.svc.Keyring().Current(time.Now()), []byte(key2)), escrow.SourceSecurityInfo); err != nil {
		t.Fatal(err)
	}
	r.macAnswers(r.device.ID, securityInfoPlist("true", "true"), userListPlist(
		plistUser{"ada", "Ada Lovelace", true}, plistUser{"itadmin", "IT Admin", true}, plistUser{"kiosk", "Kiosk Account", false}))

	// grace-air: FileVault off, no key.
	grace := escrow.DeviceID("11111111-2222-3333-4444-555555555555")
	r.macAnswers(grace, securityInfoPlist("false", ""), userListPlist(plistUser{"grace", "Grace Hopper", true}))

	// lin-mini: FileVault on with a personal key made before the escrow
	// profile, so nothing in escrow.
	lin := escrow.Device{ID: "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE", UDID: "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE", Serial: "C02LINLINLIN",
		Hostname: "lin-mini", Owner: "lin", OwnerEmail: "lin@example.com", Platform: "macOS"}
	if _, err := r.svc.UpsertDevice(ctx, lin); err != nil {
		t.Fatal(err)
	}
	r.macAnswers(lin.ID, securityInfoPlist("true", "true"), userListPlist(
		plistUser{"lin", "Lin Admin", false}, plistUser{"root-helper", "Root Helper", true}))

	keys := []string{r.key, key2}
	noKey := func(what, body string) {
		t.Helper()
		for _, k := range keys {
			if strings.Contains(body, k) || strings.Contains(body, strings.ReplaceAll(k, "-", "")) {
				t.Fatalf("%s carries a recovery key", what)
			}
		}
		if strings.Contains(body, "data-group") {
			t.Fatalf("%s shows key groups", what)
		}
	}

	cases := []struct {
		name       string
		ref        string // the device's ID or serial number
		fileVault  string // the page's words
		apiFV      string // the API's flag
		status     escrow.EscrowStatus
		words      string
		holders    string
		apiHolders string
		notHolders []string
		versions   int
	}{
		{"ada-mbp", string(r.device.ID), "Yes", "true", escrow.EscrowEscrowed, "Recovery key escrowed", "ada, itadmin", "ada,itadmin", []string{"kiosk"}, 2},
		{"grace-air", "C02ZZ9ZZZZZZ", "No", "false", escrow.EscrowFileVaultOff, "FileVault is off", "grace", "grace", nil, 0},
		{"lin-mini", lin.Serial, "Yes", "true", escrow.EscrowPredatesProfile,
			"FileVault was turned on before the escrow profile; the key must be rotated", "root-helper", "root-helper", []string{"lin"}, 0},
	}
	viewer := r.user("vera", escrow.RoleViewer)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := viewer.get("/ui/devices/" + tc.ref)
			mustStatus(t, "device page", p, http.StatusOK)
			if got := fact(p.body, "FileVault on"); got != tc.fileVault {
				t.Errorf("FileVault on: %q, want %q", got, tc.fileVault)
			}
			if got := fact(p.body, "Escrow"); got != tc.words {
				t.Errorf("Escrow: %q, want %q", got, tc.words)
			}
			if !strings.Contains(p.body, `class="badge s-`+string(tc.status)+`"`) {
				t.Errorf("no badge for status %s", tc.status)
			}
			holders := fact(p.body, "SecureToken holders")
			if holders != tc.holders {
				t.Errorf("SecureToken holders: %q, want %q", holders, tc.holders)
			}
			for _, n := range tc.notHolders {
				if slices.Contains(strings.Split(holders, ", "), n) {
					t.Errorf("%s is listed as a SecureToken holder", n)
				}
			}
			// The account table says who holds a SecureToken, per account.
			accounts := tableRows(section(t, p.body, "h-accounts"))
			for _, h := range strings.Split(tc.holders, ", ") {
				if row, ok := findRow(accounts, h); !ok || !strings.HasPrefix(row, "Yes") {
					t.Errorf("account %s: row %q, want SecureToken Yes", h, row)
				}
			}
			for _, n := range tc.notHolders {
				if row, ok := findRow(accounts, n); !ok || !strings.HasPrefix(row, "No") {
					t.Errorf("account %s: row %q, want SecureToken No", n, row)
				}
			}

			// Key versions: metadata, newest current, never the key.
			kv := section(t, p.body, "h-keys")
			rows := tableRows(kv)
			if len(rows) != tc.versions {
				t.Errorf("%d key version rows, want %d: %v", len(rows), tc.versions, rows)
			}
			if tc.versions == 2 {
				if _, ok := rows["2 current"]; !ok {
					t.Errorf("version 2 is not shown as current: %v", rows)
				}
				if v1, ok := rows["1"]; !ok || !strings.Contains(v1, "via securityinfo") {
					t.Errorf("version 1: %q (%v)", v1, rows)
				}
			} else if !strings.Contains(kv, "No recovery key has been escrowed") {
				t.Errorf("a device without a key shows versions:\n%s", kv)
			}
			noKey("the device page", p.body)
			if strings.Contains(p.body, "/reveal") {
				t.Error("a viewer is offered a reveal")
			}

			// The JSON device detail says the same.
			a := viewer.get("/api/v1/devices/" + tc.ref)
			mustStatus(t, "API device", a, http.StatusOK)
			noKey("the API device detail", a.body)
			var det wire.DeviceDetail
			if err := json.Unmarshal([]byte(a.body), &det); err != nil {
				t.Fatalf("API device detail: %v\n%s", err, a.body)
			}
			if det.Device.FileVault != tc.apiFV || det.Device.EscrowStatus != string(tc.status) ||
				det.Device.Attrs[escrow.AttrTokenHolders] != tc.apiHolders {
				t.Errorf("API device: filevault %q, escrow %q, holders %q", det.Device.FileVault, det.Device.EscrowStatus, det.Device.Attrs[escrow.AttrTokenHolders])
			}
			var apiHolders []string
			for _, acc := range det.Accounts {
				if acc.HasSecureToken == "true" {
					apiHolders = append(apiHolders, acc.UserName)
				}
			}
			if strings.Join(apiHolders, ", ") != tc.holders {
				t.Errorf("API accounts with a SecureToken: %v, want %s", apiHolders, tc.holders)
			}
			if len(det.KeyVersions) != tc.versions {
				t.Fatalf("API key versions: %+v", det.KeyVersions)
			}
			for _, v := range det.KeyVersions {
				if v.Current != (v.Version == tc.versions) {
					t.Errorf("API key version %d current=%v", v.Version, v.Current)
				}
			}
		})
	}
}

// findRow finds an account row by user name (the header cell is the name,
// then the full name).
func findRow(rows map[string]string, name string) (string, bool) {
	for head, row := range rows {
		if head == name || strings.HasPrefix(head, name+" ") {
			return row, true
		}
	}
	return "", false
}
