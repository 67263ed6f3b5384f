package fde_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
)

// Fuzz targets for every parser of device-supplied bytes. The property is:
// no panic; on error the result is nil; where the format allows, a round trip
// reproduces the input. `make test` runs each for a short fixed time.

func addFiles(f *testing.F, glob string) {
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds for %s", glob)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzDecryptPRK(f *testing.F) {
	addFiles(f, "testdata/cms/*.der")
	kr := fixtureKeyring(f)
	f.Fuzz(func(t *testing.T, blob []byte) {
		key, d, err := kr.DecryptRecoveryKey(blob)
		if err != nil {
			if !key.IsZero() || d != nil {
				t.Fatal("result on error")
			}
			return
		}
		if key.IsZero() || d == nil || d.Certificate == nil {
			t.Fatal("no result without error")
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	addFiles(f, "testdata/cms/*.der")
	f.Fuzz(func(t *testing.T, blob []byte) {
		env, err := fde.ParseEnvelope(blob)
		if (err == nil) == (env == nil) {
			t.Fatal("result and error disagree")
		}
		if err == nil && len(env.Recipients) == 0 {
			t.Fatal("envelope without recipients")
		}
	})
}

func FuzzNormalizeRecoveryKey(f *testing.F) {
	for _, s := range []string{testPRK, "abcd efgh jklm npqr stuv wxy2", "ABCD", "", "\x00", "ÄBCD-EFGH-JKLM-NPQR-STUV-WXY2"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		k, err := fde.ParseRecoveryKey(raw)
		if err != nil {
			if !k.IsZero() {
				t.Fatal("key on error")
			}
			return
		}
		// Normalising is idempotent, and a canonical key round-trips.
		again, err := fde.ParseRecoveryKey([]byte(k.Expose()))
		if err != nil || again.Expose() != k.Expose() || again.Canonical() != k.Canonical() {
			t.Fatalf("not idempotent: %v", err)
		}
		if k.Canonical() && (len(k.Expose()) != 29 || k.Warning() != "") {
			t.Fatal("canonical key of wrong shape")
		}
	})
}

func fuzzParser[T any](f *testing.F, parse func([]byte) (*T, error)) {
	addFiles(f, "testdata/results/*.plist")
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parse(b)
		if (err == nil) == (v == nil) {
			t.Fatal("result and error disagree")
		}
	})
}

func FuzzParseResult(f *testing.F)       { fuzzParser(f, fde.ParseResult) }
func FuzzParseSecurityInfo(f *testing.F) { fuzzParser(f, fde.ParseSecurityInfo) }
func FuzzParseUserList(f *testing.F)     { fuzzParser(f, fde.ParseUserList) }
func FuzzParseProfileList(f *testing.F)  { fuzzParser(f, fde.ParseProfileList) }
func FuzzParseRotateResult(f *testing.F) { fuzzParser(f, fde.ParseRotateResult) }
