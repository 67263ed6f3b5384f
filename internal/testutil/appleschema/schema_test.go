package appleschema

import (
	"strings"
	"testing"
)

const fvProfile = `<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>PayloadContent</key><array><dict>
  <key>Enable</key><string>%ENABLE%</string>
  <key>Defer</key><true/>
  %EXTRA%
  <key>PayloadIdentifier</key><string>com.example.fv.fv2</string>
  <key>PayloadType</key><string>com.apple.MCX.FileVault2</string>
  <key>PayloadUUID</key><string>6A4B2F8E-5A0C-4F43-9D43-1B2C3D4E5F60</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict></array>
<key>PayloadDisplayName</key><string>x</string>
<key>PayloadIdentifier</key><string>com.example.fv</string>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key><string>6A4B2F8E-5A0C-4F43-9D43-1B2C3D4E5F61</string>
<key>PayloadVersion</key><integer>1</integer>
</dict></plist>`

func profile(enable, extra string) []byte {
	return []byte(strings.NewReplacer("%ENABLE%", enable, "%EXTRA%", extra).Replace(fvProfile))
}

// TestValidatorCatches proves the validator is not a rubber stamp.
func TestValidatorCatches(t *testing.T) {
	t.Parallel()
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, enable, extra, want string
	}{
		{"valid", "On", "", ""},
		{"value outside rangelist", "Yes", "", "not in"},
		{"unknown key", "On", "<key>EnableNow</key><true/>", "EnableNow: unknown key"},
		{"wrong type", "On", "<key>ShowRecoveryKey</key><string>false</string>", "ShowRecoveryKey: type is string"},
		{"integer as real", "On", "<key>DeferForceAtUserLoginMaxBypassAttempts</key><real>3</real>", "type is real, schema says integer"},
		{"out of range", "On", "<key>DeferForceAtUserLoginMaxBypassAttempts</key><integer>10000</integer>", "above maximum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := s.ValidateProfile(profile(tc.enable, tc.extra), Options{Platform: "macOS"})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid profile rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidatorRequiredAndPlatform(t *testing.T) {
	t.Parallel()
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	noEnable := strings.Replace(string(profile("On", "")), "<key>Enable</key><string>On</string>", "", 1)
	if err := s.ValidateProfile([]byte(noEnable), Options{}); err == nil || !strings.Contains(err.Error(), "Enable: required key missing") {
		t.Errorf("missing required key: %v", err)
	}
	if err := s.ValidateProfile(profile("On", ""), Options{Platform: "iOS"}); err == nil || !strings.Contains(err.Error(), "not available on iOS") {
		t.Errorf("platform: %v", err)
	}
	unknownType := strings.Replace(string(profile("On", "")), "com.apple.MCX.FileVault2", "com.example.nothing", 1)
	if err := s.ValidateProfile([]byte(unknownType), Options{}); err == nil || !strings.Contains(err.Error(), "no schema") {
		t.Errorf("unknown payload type: %v", err)
	}
}

func TestValidateCommand(t *testing.T) {
	t.Parallel()
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	ok := `<plist version="1.0"><dict><key>Command</key><dict><key>RequestType</key><string>RotateFileVaultKey</string>
<key>KeyType</key><string>personal</string><key>FileVaultUnlock</key><dict><key>Password</key><string>x</string></dict>
<key>ReplyEncryptionCertificate</key><data>AAAA</data></dict><key>CommandUUID</key><string>u</string></dict></plist>`
	if err := s.ValidateCommand([]byte(ok)); err != nil {
		t.Fatalf("valid command rejected: %v", err)
	}
	bad := strings.Replace(ok, "<key>Password</key>", "<key>Passwd</key>", 1)
	if err := s.ValidateCommand([]byte(bad)); err == nil || !strings.Contains(err.Error(), "Passwd: unknown key") {
		t.Errorf("got %v", err)
	}
	badType := strings.Replace(ok, "<string>personal</string>", "<string>sideways</string>", 1)
	if err := s.ValidateCommand([]byte(badType)); err == nil {
		t.Errorf("KeyType outside rangelist accepted")
	}
}
