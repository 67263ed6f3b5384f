package appleschema

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "regenerate the snapshot from Apple's full schema")

// snapshotFiles are the schema files fvescrow's output is checked against.
var snapshotFiles = []string{
	"profiles/TopLevel.yaml",
	"profiles/CommonPayloadKeys.yaml",
	"profiles/com.apple.MCX.FileVault2.yaml",
	"profiles/com.apple.MCX(FileVault2).yaml",
	"profiles/com.apple.security.FDERecoveryKeyEscrow.yaml",
	"profiles/com.apple.security.pkcs1.yaml",
	"profiles/com.apple.security.root.yaml",
	"profiles/com.apple.security.scep.yaml",
	"profiles/com.apple.mdm.yaml",
	"profiles/com.apple.mobiledevice.passwordpolicy.yaml",
	"commands/information.security.yaml",
	"commands/information.device.yaml",
	"commands/user.list.yaml",
	"commands/profile.install.yaml",
	"commands/profile.list.yaml",
	"commands/rotate.file.vault.key.yaml",
	"commands/passcode.clear.yaml",
	"checkin/authenticate.yaml",
	"checkin/tokenupdate.yaml",
	"checkin/checkout.yaml",
	"checkin/setbootstraptoken.yaml",
	"checkin/getbootstraptoken.yaml",
}

// sourceDir finds Apple's full schema: $FVESCROW_APPLE_SCHEMA, or a
// shared/apple-device-management folder above the working directory.
func sourceDir(t *testing.T) string {
	if d := os.Getenv("FVESCROW_APPLE_SCHEMA"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		for _, c := range []string{"shared/apple-device-management", "apple-device-management"} {
			p := filepath.Join(dir, c)
			if st, err := os.Stat(filepath.Join(p, "mdm", "profiles")); err == nil && st.IsDir() {
				return p
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// TestSnapshotInSync proves the embedded snapshot is Apple's schema with only
// the prose removed. On a clean clone without the source it checks the
// snapshot is complete instead.
func TestSnapshotInSync(t *testing.T) {
	src := sourceDir(t)
	if src == "" {
		for _, f := range snapshotFiles {
			if _, err := SnapshotFile(f); err != nil {
				t.Errorf("snapshot lacks %s: %v", f, err)
			}
		}
		t.Logf("Apple's full schema not found (set FVESCROW_APPLE_SCHEMA); checked the snapshot is complete")
		return
	}
	for _, f := range snapshotFiles {
		full, err := os.ReadFile(filepath.Join(src, "mdm", f))
		if err != nil {
			t.Fatal(err)
		}
		want, err := Strip(full)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if *update {
			dst := filepath.Join("snapshot", "mdm", f)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := SnapshotFile(f)
		if err != nil {
			t.Fatalf("snapshot lacks %s (run with -update): %v", f, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("snapshot %s is out of date with %s (run with -update)", f, src)
		}
	}
	if *update {
		lic, err := os.ReadFile(filepath.Join(src, "LICENSE.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("snapshot", "LICENSE.txt"), lic, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
