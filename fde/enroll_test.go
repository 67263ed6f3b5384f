package fde_test

import (
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/appleschema"
	"github.com/fvescrow/fvescrow/internal/testutil/golden"
)

func TestEnrollmentProfile(t *testing.T) {
	t.Parallel()
	ca := fixtureCert(t)
	cases := []struct {
		name string
		o    fde.EnrollmentOptions
	}{
		{"enroll", fde.EnrollmentOptions{BaseURL: "https://mdm.example.com/", Topic: "com.apple.mgmt.External.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Challenge: "test-challenge"}},
		{"enroll-pinned", fde.EnrollmentOptions{BaseURL: "https://127.0.0.1:9443", Topic: "com.apple.mgmt.External.x", Challenge: "c", Organization: "Example Corp",
			SCEPCA: ca, TrustAnchor: ca, AccessRights: 8191}},
	}
	s := schema(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.o.Rand = seeded()
			p, err := fde.NewEnrollmentProfile(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			b, err := p.XML()
			if err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, "profile-"+tc.name, b)
			if err := s.ValidateProfile(b, appleschema.Options{Platform: "macOS"}); err != nil {
				t.Errorf("does not validate against Apple's schema:\n%v", err)
			}
			x := string(b)
			for _, want := range []string{"<key>SignMessage</key>\n\t\t\t<true/>", "/checkin</string>", "com.apple.mdm.bootstraptoken", "%HardwareUUID%"} {
				if !strings.Contains(x, want) {
					t.Errorf("profile lacks %q", want)
				}
			}
			// The MDM payload names the SCEP payload as its identity.
			if uuidOf(t, b, fde.PayloadTypeSCEP) == "" || !strings.Contains(x, "<key>IdentityCertificateUUID</key>\n\t\t\t<string>"+uuidOf(t, b, fde.PayloadTypeSCEP)) {
				t.Error("IdentityCertificateUUID does not name the SCEP payload")
			}
		})
	}
}

func TestEnrollmentProfileRejects(t *testing.T) {
	t.Parallel()
	ok := fde.EnrollmentOptions{BaseURL: "https://mdm.example.com", Topic: "com.apple.mgmt.External.x"}
	bad := map[string]func(o *fde.EnrollmentOptions){
		"no topic":            func(o *fde.EnrollmentOptions) { o.Topic = "" },
		"not an APNs topic":   func(o *fde.EnrollmentOptions) { o.Topic = "com.example" },
		"no URL":              func(o *fde.EnrollmentOptions) { o.BaseURL = "" },
		"ftp URL":             func(o *fde.EnrollmentOptions) { o.BaseURL = "ftp://x" },
		"plain HTTP":          func(o *fde.EnrollmentOptions) { o.BaseURL = "http://mdm.example.com" },
		"no security queries": func(o *fde.EnrollmentOptions) { o.AccessRights = 1 | 2 | 4 },
		"no lock right":       func(o *fde.EnrollmentOptions) { o.AccessRights = 1 | 2 | 1024 },
		"too many bits":       func(o *fde.EnrollmentOptions) { o.AccessRights = 16383 },
	}
	for name, f := range bad {
		o := ok
		f(&o)
		if _, err := fde.NewEnrollmentProfile(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := fde.NewEnrollmentProfile(ok); err != nil {
		t.Fatal(err)
	}
}
