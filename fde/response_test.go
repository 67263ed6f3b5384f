package fde_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
)

func readResult(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/results/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSecurityInfo(t *testing.T) {
	t.Parallel()
	si, err := fde.ParseSecurityInfo(readResult(t, "securityinfo-escrowed.plist"))
	if err != nil {
		t.Fatal(err)
	}
	if si.Status != fde.StatusAcknowledged || si.UDID == "" || si.CommandUUID == "" || !si.Present {
		t.Errorf("envelope %+v", si.Result)
	}
	if !si.FDEEnabled.True() || !si.FDEHasPersonalRecoveryKey.True() || si.FDEHasInstitutionalRecoveryKey != fde.FlagFalse {
		t.Errorf("FDE flags %v %v %v", si.FDEEnabled, si.FDEHasPersonalRecoveryKey, si.FDEHasInstitutionalRecoveryKey)
	}
	if si.FDEPersonalRecoveryKeyDeviceKey != "C02XK0AAJGH5" {
		t.Errorf("device key %q", si.FDEPersonalRecoveryKeyDeviceKey)
	}
	if si.BootstrapTokenAllowedForAuthentication != "allowed" || !si.BootstrapTokenRequiredForSoftwareUpdate.True() ||
		si.BootstrapTokenRequiredForKernelExtensionApproval != fde.FlagFalse {
		t.Errorf("bootstrap fields wrong")
	}
	if !si.ManagementStatus.EnrolledViaDEP.True() || !si.ManagementStatus.UserApprovedEnrollment.True() {
		t.Errorf("management status %+v", si.ManagementStatus)
	}
	if si.PasscodePresent != fde.FlagUnknown {
		t.Errorf("iOS-only key should be unknown on a Mac")
	}
	if len(si.Warnings) != 0 {
		t.Errorf("warnings on a clean answer: %v", si.Warnings)
	}
	// The CMS in the answer is the one the keyring opens.
	key, _, err := fixtureKeyring(t).DecryptRecoveryKey(si.FDEPersonalRecoveryKeyCMS)
	if err != nil || key.Expose() != testPRK {
		t.Errorf("CMS from SecurityInfo: %v", err)
	}
}

func TestParseSecurityInfoStates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		file              string
		enabled, hasPRK   fde.Flag
		hasCMS            bool
		status            string
		warnings, errorCh int
	}{
		{"securityinfo-predates-profile.plist", fde.FlagTrue, fde.FlagTrue, false, fde.StatusAcknowledged, 0, 0},
		{"securityinfo-filevault-off.plist", fde.FlagFalse, fde.FlagUnknown, false, fde.StatusAcknowledged, 0, 0},
		{"securityinfo-odd-types.plist", fde.FlagUnknown, fde.FlagTrue, false, fde.StatusAcknowledged, 3, 0},
		{"error-chain.plist", fde.FlagUnknown, fde.FlagUnknown, false, fde.StatusError, 0, 1},
		{"notnow.plist", fde.FlagUnknown, fde.FlagUnknown, false, fde.StatusNotNow, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			si, err := fde.ParseSecurityInfo(readResult(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if si.FDEEnabled != tc.enabled || si.FDEHasPersonalRecoveryKey != tc.hasPRK || (len(si.FDEPersonalRecoveryKeyCMS) > 0) != tc.hasCMS || si.Status != tc.status {
				t.Errorf("got enabled=%v hasPRK=%v cms=%d status=%s", si.FDEEnabled, si.FDEHasPersonalRecoveryKey, len(si.FDEPersonalRecoveryKeyCMS), si.Status)
			}
			if len(si.Warnings) != tc.warnings || len(si.ErrorChain) != tc.errorCh {
				t.Errorf("warnings %v, error chain %v", si.Warnings, si.ErrorChain)
			}
			for _, w := range si.Warnings {
				if strings.Contains(w, "not data") {
					t.Errorf("warning carries a value: %s", w)
				}
			}
		})
	}
	si, _ := fde.ParseSecurityInfo(readResult(t, "error-chain.plist"))
	if e := si.ErrorChain[0]; e.ErrorCode != 12027 || e.ErrorDomain != "MCMDMErrorDomain" || e.USEnglishDescription == "" {
		t.Errorf("error chain %+v", e)
	}
}

func TestParseUserList(t *testing.T) {
	t.Parallel()
	ul, err := fde.ParseUserList(readResult(t, "userlist.plist"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ul.Users) != 3 {
		t.Fatalf("users %d", len(ul.Users))
	}
	ada := ul.Users[0]
	if ada.UserName != "ada" || ada.UID != 501 || !ada.HasSecureToken.True() || !ada.IsLoggedIn.True() || ada.MobileAccount != fde.FlagFalse || ada.UserGUID == "" {
		t.Errorf("ada %+v", ada)
	}
	if ul.Users[1].HasSecureToken != fde.FlagFalse {
		t.Errorf("itadmin token %v", ul.Users[1].HasSecureToken)
	}
	if old := ul.Users[2]; old.UID != -1 || old.HasSecureToken != fde.FlagUnknown {
		t.Errorf("sparse user %+v", old)
	}
}

func TestParseProfileList(t *testing.T) {
	t.Parallel()
	pl, err := fde.ParseProfileList(readResult(t, "profilelist.plist"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Profiles) != 1 || !pl.Profiles[0].HasPayloadType(fde.PayloadTypeEscrow) || pl.Profiles[0].PayloadIdentifier != fde.DefaultFileVaultIdentifier {
		t.Errorf("profiles %+v", pl.Profiles)
	}
	if pl.Profiles[0].HasPayloadType(fde.PayloadTypeFileVault2) || !pl.Profiles[0].IsManaged.True() {
		t.Errorf("profile %+v", pl.Profiles[0])
	}
}

func TestParseRotateResult(t *testing.T) {
	t.Parallel()
	rr, err := fde.ParseRotateResult(readResult(t, "rotate-acknowledged.plist"))
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := fixtureKeyring(t).DecryptRecoveryKey(rr.EncryptedNewRecoveryKey)
	if err != nil || key.Expose() != testPRK {
		t.Errorf("new key: %v", err)
	}
	rr, err = fde.ParseRotateResult(readResult(t, "rotate-acknowledged-no-key.plist"))
	if err != nil || rr.EncryptedNewRecoveryKey != nil || rr.Status != fde.StatusAcknowledged {
		t.Errorf("ack without key: %+v %v", rr, err)
	}
}

// TestParseInstallProfileResult: an InstallProfile answer carries only the
// common fields; on failure macOS sends an ErrorChain from the outer
// MCInstallationErrorDomain error down to the underlying cause.
func TestParseInstallProfileResult(t *testing.T) {
	t.Parallel()
	ack, err := fde.ParseResult(readResult(t, "installprofile-acknowledged.plist"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Status != fde.StatusAcknowledged || ack.CommandUUID != "3B9F2C4D-5E6A-4B7C-8D9E-0F1A2B3C4D5E" ||
		ack.UDID != "564D9E39-1A2B-4C3D-8E9F-0A1B2C3D4E5F" || len(ack.ErrorChain) != 0 || len(ack.Warnings) != 0 {
		t.Errorf("acknowledged: %+v", ack)
	}

	res, err := fde.ParseResult(readResult(t, "installprofile-error.plist"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != fde.StatusError || res.CommandUUID != "7C1D2E3F-4A5B-4C6D-9E8F-1A2B3C4D5E6F" || res.UDID != "564D9E39-1A2B-4C3D-8E9F-0A1B2C3D4E5F" {
		t.Errorf("error envelope: status %q command %q udid %q", res.Status, res.CommandUUID, res.UDID)
	}
	want := []fde.ErrorChainItem{
		{ErrorCode: 4001, ErrorDomain: "MCInstallationErrorDomain", LocalizedDescription: "Profile Installation Failed", USEnglishDescription: "Profile Installation Failed"},
		{ErrorCode: 1009, ErrorDomain: "MCProfileErrorDomain", LocalizedDescription: "Le profil « FileVault » n’a pas pu être installé.", USEnglishDescription: "The profile “FileVault” could not be installed."},
	}
	if len(res.ErrorChain) != len(want) {
		t.Fatalf("error chain %+v, want %d items", res.ErrorChain, len(want))
	}
	for i := range want {
		if res.ErrorChain[i] != want[i] {
			t.Errorf("error chain item %d: got %+v, want %+v", i, res.ErrorChain[i], want[i])
		}
	}
	// NotOnConsole is a key this parser does not know: ignored, no warning.
	if len(res.Warnings) != 0 {
		t.Errorf("warnings %v", res.Warnings)
	}
}

func TestParseRejectsNonPlist(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("<array>", 100) + strings.Repeat("</array>", 100)
	for name, in := range map[string]string{
		"empty":      "",
		"text":       "hello",
		"binary":     "bplist00\x00\x01",
		"array root": `<plist version="1.0"><array/></plist>`,
		"deep":       `<plist version="1.0">` + deep + `</plist>`,
		"unbalanced": `<plist version="1.0"><dict><key>a</key>`,
		"oversized":  `<plist version="1.0"><dict><key>a</key><string>` + strings.Repeat("x", fde.MaxResultSize) + `</string></dict></plist>`,
	} {
		if _, err := fde.ParseSecurityInfo([]byte(in)); !errors.Is(err, fde.ErrMalformedPlist) {
			t.Errorf("%s: got %v, want ErrMalformedPlist", name, err)
		}
	}
}
