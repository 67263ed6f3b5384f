package fde_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/appleschema"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
	"github.com/fvescrow/fvescrow/internal/testutil/golden"
	"github.com/micromdm/plist"
)

func fixtureCert(t testing.TB) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile("testdata/cms/test-escrow.cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := fde.ParseCertificatesPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func seeded() *rand.ChaCha8 { return rand.NewChaCha8([32]byte{'f', 'v', 'e', 's', 'c', 'r', 'o', 'w'}) }

func schema(t testing.TB) *appleschema.Schema {
	t.Helper()
	s, err := appleschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func intp(i int) *int { return &i }

// TestFileVaultProfiles: every variant matches its golden file and validates
// against Apple's schema.
func TestFileVaultProfiles(t *testing.T) {
	t.Parallel()
	cert := fixtureCert(t)
	cases := []struct {
		name string
		opts fde.FileVaultOptions
	}{
		{"filevault", fde.FileVaultOptions{Location: "Example Corp IT"}},
		{"filevault-all-options", fde.FileVaultOptions{
			Location: "Example Corp IT", Organization: "Example Corp", DeviceKey: "asset tag", Identifier: "com.example.fv",
			MaxBypassAttempts: intp(3), DontAskAtUserLogout: true, ForceEnableInSetupAssistant: true, DontAllowFDEDisable: true,
		}},
		{"escrow-only", fde.FileVaultOptions{Location: "Example Corp IT", EscrowOnly: true}},
		{"escrow-only-no-disable", fde.FileVaultOptions{Location: "Example Corp IT", EscrowOnly: true, DontAllowFDEDisable: true}},
	}
	s := schema(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.opts.EscrowCertificate = cert
			tc.opts.Rand = seeded()
			p, err := fde.NewFileVaultProfile(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := p.XML()
			if err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, "profile-"+tc.name, b)
			if err := s.ValidateProfile(b, appleschema.Options{Platform: "macOS"}); err != nil {
				t.Errorf("profile does not validate against Apple's schema:\n%v", err)
			}
			checkProfileShape(t, p, tc.opts)
		})
	}
}

func checkProfileShape(t *testing.T, p *fde.Profile, o fde.FileVaultOptions) {
	t.Helper()
	if p.PayloadScope != "System" {
		t.Errorf("scope %q, want System", p.PayloadScope)
	}
	b, _ := p.XML()
	x := string(b)
	hasFV := strings.Contains(x, fde.PayloadTypeFileVault2)
	if hasFV == o.EscrowOnly {
		t.Errorf("FileVault2 payload present=%v with escrow-only=%v", hasFV, o.EscrowOnly)
	}
	if strings.Count(x, fde.PayloadTypeEscrow) != 1 {
		t.Error("want exactly one escrow payload (macOS refuses a second)")
	}
	// The escrow payload points at the pkcs1 payload's UUID.
	certUUID, escrowRef := uuidOf(t, b, fde.PayloadTypePKCS1), refOf(t, b)
	if certUUID == "" || certUUID != escrowRef {
		t.Errorf("EncryptCertPayloadUUID %q does not name the pkcs1 payload %q", escrowRef, certUUID)
	}
}

// uuidOf finds the PayloadUUID of the payload of a type in the XML, relying on
// the encoder's sorted keys (PayloadType precedes PayloadUUID).
func uuidOf(t *testing.T, b []byte, typ string) string {
	t.Helper()
	i := bytes.Index(b, []byte("<string>"+typ+"</string>"))
	if i < 0 {
		return ""
	}
	rest := b[i:]
	j := bytes.Index(rest, []byte("<key>PayloadUUID</key>"))
	rest = rest[j+len("<key>PayloadUUID</key>"):]
	s := bytes.Index(rest, []byte("<string>")) + len("<string>")
	e := bytes.Index(rest, []byte("</string>"))
	return string(rest[s:e])
}

func refOf(t *testing.T, b []byte) string {
	t.Helper()
	i := bytes.Index(b, []byte("<key>EncryptCertPayloadUUID</key>"))
	rest := b[i:]
	s := bytes.Index(rest, []byte("<string>")) + len("<string>")
	e := bytes.Index(rest, []byte("</string>"))
	return string(rest[s:e])
}

// payloadIDs is what a written profile says about itself: the profile's own
// identifier and UUID and those of every nested payload, plus the escrow
// payload's reference to the certificate payload.
type payloadIDs struct {
	PayloadIdentifier string
	PayloadUUID       string
	PayloadContent    []struct {
		PayloadType            string
		PayloadIdentifier      string
		PayloadUUID            string
		EncryptCertPayloadUUID string
	}
}

func readPayloadIDs(t *testing.T, p *fde.Profile) payloadIDs {
	t.Helper()
	b, err := p.XML()
	if err != nil {
		t.Fatal(err)
	}
	var ids payloadIDs
	if err := plist.Unmarshal(b, &ids); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestFileVaultProfileFreshUUIDs: every UUID, the profile's and each nested
// payload's, is new on each generation and distinct within a profile, while
// every PayloadIdentifier stays the same so a re-sent profile replaces the
// installed one.
func TestFileVaultProfileFreshUUIDs(t *testing.T) {
	t.Parallel()
	cert := fixtureCert(t)
	gen := func() payloadIDs {
		p, err := fde.NewFileVaultProfile(fde.FileVaultOptions{Location: "IT", EscrowCertificate: cert, DontAllowFDEDisable: true})
		if err != nil {
			t.Fatal(err)
		}
		return readPayloadIDs(t, p)
	}
	a, b := gen(), gen()
	wantTypes := []string{fde.PayloadTypeFileVault2, fde.PayloadTypeEscrow, fde.PayloadTypePKCS1, fde.PayloadTypeMCX}
	seen := map[string]string{} // UUID -> where it was seen
	for gi, g := range []payloadIDs{a, b} {
		if g.PayloadIdentifier != fde.DefaultFileVaultIdentifier {
			t.Errorf("profile %d identifier %q, want %q", gi, g.PayloadIdentifier, fde.DefaultFileVaultIdentifier)
		}
		if len(g.PayloadContent) != len(wantTypes) {
			t.Fatalf("profile %d has %d payloads, want %d (%v)", gi, len(g.PayloadContent), len(wantTypes), wantTypes)
		}
		uuids := []string{g.PayloadUUID}
		var certUUID, escrowRef string
		for i, pl := range g.PayloadContent {
			if pl.PayloadType != wantTypes[i] {
				t.Errorf("profile %d payload %d type %q, want %q", gi, i, pl.PayloadType, wantTypes[i])
			}
			if !strings.HasPrefix(pl.PayloadIdentifier, fde.DefaultFileVaultIdentifier+".") {
				t.Errorf("payload %s identifier %q not under the profile's", pl.PayloadType, pl.PayloadIdentifier)
			}
			uuids = append(uuids, pl.PayloadUUID)
			switch pl.PayloadType {
			case fde.PayloadTypePKCS1:
				certUUID = pl.PayloadUUID
			case fde.PayloadTypeEscrow:
				escrowRef = pl.EncryptCertPayloadUUID
			}
		}
		if certUUID == "" || escrowRef != certUUID {
			t.Errorf("profile %d: EncryptCertPayloadUUID %q does not name this profile's pkcs1 payload %q", gi, escrowRef, certUUID)
		}
		for i, u := range uuids {
			where := fmt.Sprintf("profile %d UUID %d", gi, i)
			if len(u) != 36 {
				t.Errorf("%s: %q is not a UUID", where, u)
			}
			if prev, dup := seen[u]; dup {
				t.Errorf("%s repeats %s: %s", where, prev, u)
			}
			seen[u] = where
		}
	}
	// Identifiers are stable across generations, payload by payload.
	for i := range a.PayloadContent {
		if a.PayloadContent[i].PayloadIdentifier != b.PayloadContent[i].PayloadIdentifier {
			t.Errorf("payload %s identifier changed: %q then %q", a.PayloadContent[i].PayloadType, a.PayloadContent[i].PayloadIdentifier, b.PayloadContent[i].PayloadIdentifier)
		}
	}
	if len(seen) != 2*(1+len(wantTypes)) {
		t.Errorf("%d distinct UUIDs, want %d", len(seen), 2*(1+len(wantTypes)))
	}
}

func TestFileVaultProfileRejects(t *testing.T) {
	t.Parallel()
	cert := fixtureCert(t)
	ec := ecCert(t)
	cases := map[string]fde.FileVaultOptions{
		"no location":          {EscrowCertificate: cert},
		"no cert":              {Location: "IT"},
		"EC cert":              {Location: "IT", EscrowCertificate: ec},
		"bypass out of range":  {Location: "IT", EscrowCertificate: cert, MaxBypassAttempts: intp(10000)},
		"bypass below -1":      {Location: "IT", EscrowCertificate: cert, MaxBypassAttempts: intp(-2)},
		"escrow-only + force":  {Location: "IT", EscrowCertificate: cert, EscrowOnly: true, ForceEnableInSetupAssistant: true},
		"bad identifier":       {Location: "IT", EscrowCertificate: cert, Identifier: "not an identifier"},
		"identifier no domain": {Location: "IT", EscrowCertificate: cert, Identifier: "filevault"},
	}
	for name, o := range cases {
		if _, err := fde.NewFileVaultProfile(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestSignedProfileVerifiesWithOpenSSL: the signed form unwraps with
// `openssl smime -verify` to exactly the unsigned profile.
func TestSignedProfileVerifiesWithOpenSSL(t *testing.T) {
	t.Parallel()
	id, _ := testIdentities(t)
	p, err := fde.NewFileVaultProfile(fde.FileVaultOptions{Location: "IT", EscrowCertificate: fixtureCert(t)})
	if err != nil {
		t.Fatal(err)
	}
	xml, _ := p.XML()
	signed, err := fde.SignProfile(xml, id.Certificate, id.Key)
	if err != nil {
		t.Fatal(err)
	}
	bin := testutil.LookPath(t, "openssl")
	dir := t.TempDir()
	got := cmstest.Run(t, bin, "smime", "-verify", "-noverify", "-inform", "DER", "-in", cmstest.WriteFile(t, dir, "p.mobileconfig", signed))
	if !bytes.Equal(got, xml) {
		t.Errorf("verified content differs from the unsigned profile")
	}
	if err := schema(t).ValidateProfile(got, appleschema.Options{Platform: "macOS"}); err != nil {
		t.Error(err)
	}
}
