package fde_test

import (
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/golden"
)

// TestCommands: every builder yields a plist that matches its golden file and
// Apple's command schema, with a unique CommandUUID per call.
func TestCommands(t *testing.T) {
	t.Parallel()
	cert := fixtureCert(t)
	key, err := fde.ParseRecoveryKey([]byte(testPRK))
	if err != nil {
		t.Fatal(err)
	}
	const uuid = "00000000-0000-4000-8000-000000000001"
	builders := map[string]func(...fde.CommandOption) (fde.Command, error){
		"securityinfo": fde.NewSecurityInfo,
		"userlist":     fde.NewUserList,
		"profilelist": func(o ...fde.CommandOption) (fde.Command, error) {
			return fde.NewProfileList(true, o...)
		},
		"installprofile": func(o ...fde.CommandOption) (fde.Command, error) {
			return fde.NewInstallProfile([]byte("<plist/>"), o...)
		},
		"rotatefilevaultkey": func(o ...fde.CommandOption) (fde.Command, error) {
			return fde.NewRotateFileVaultKey(key, cert, o...)
		},
	}
	s := schema(t)
	for name, build := range builders {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := build(fde.WithCommandUUID(uuid))
			if err != nil {
				t.Fatal(err)
			}
			if c.UUID != uuid || !strings.EqualFold(c.RequestType, name) {
				t.Errorf("command %v", c)
			}
			golden.Assert(t, "command-"+name, c.Plist)
			if err := s.ValidateCommand(c.Plist); err != nil {
				t.Errorf("does not validate against Apple's schema:\n%v", err)
			}
			a, _ := build()
			b, _ := build()
			if a.UUID == b.UUID || a.UUID == "" {
				t.Errorf("CommandUUIDs not unique: %q %q", a.UUID, b.UUID)
			}
		})
	}
}

func TestRotateCommandNeedsKeyAndCert(t *testing.T) {
	t.Parallel()
	key, _ := fde.ParseRecoveryKey([]byte(testPRK))
	if _, err := fde.NewRotateFileVaultKey(fde.RecoveryKey{}, fixtureCert(t)); err == nil {
		t.Error("no key accepted")
	}
	if _, err := fde.NewRotateFileVaultKey(key, nil); err == nil {
		t.Error("no reply certificate accepted")
	}
	c, err := fde.NewRotateFileVaultKey(key, fixtureCert(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{c.String(), c.GoString(), c.LogValue().String()} {
		if strings.Contains(s, testPRK) {
			t.Errorf("command printing leaks the key: %s", s)
		}
	}
	if _, err := fde.NewInstallProfile(nil); err == nil {
		t.Error("empty profile accepted")
	}
}

// TestRotateReference: the queued form of RotateFileVaultKey is the same
// command, valid against Apple's schema, with a reference where the key goes
// and no key anywhere in it.
func TestRotateReference(t *testing.T) {
	t.Parallel()
	cert := fixtureCert(t)
	ref, err := fde.NewRotateFileVaultKeyReference("prk/DEVICE-1/3", cert, fde.WithCommandUUID("00000000-0000-4000-8000-000000000002"))
	if err != nil {
		t.Fatal(err)
	}
	if err := schema(t).ValidateCommand(ref.Plist); err != nil {
		t.Errorf("does not validate against Apple's schema:\n%v", err)
	}
	body := string(ref.Plist)
	if !strings.Contains(body, "<string>"+fde.RotationReferencePrefix+"prk/DEVICE-1/3</string>") {
		t.Errorf("reference missing from the queued body:\n%s", body)
	}
	if strings.Contains(body, testPRK) {
		t.Error("queued body holds the key")
	}
	if ref.RequestType != fde.RequestRotateFileVaultKey || ref.UUID != "00000000-0000-4000-8000-000000000002" {
		t.Errorf("command %v", ref)
	}
	for _, bad := range []string{"", "a<b", "x&y"} {
		if _, err := fde.NewRotateFileVaultKeyReference(bad, cert); err == nil {
			t.Errorf("reference %q accepted", bad)
		}
	}
	if _, err := fde.NewRotateFileVaultKeyReference("prk/x/1", nil); err == nil {
		t.Error("no reply certificate accepted")
	}
}
