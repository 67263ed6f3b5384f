package fde_test

import (
	"os"
	"path/filepath"
	"strings"
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

// prkSeeds are recovery keys as people and devices really write them; the
// file name says what the normaliser must make of each: ok-* normalises to
// testPRK, warn-* is kept with a warning, err-* is rejected.
const prkSeeds = "testdata/prk/*.txt"

func FuzzNormalizeRecoveryKey(f *testing.F) {
	addFiles(f, prkSeeds)
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

// TestRecoveryKeySeeds holds each seed of FuzzNormalizeRecoveryKey to the
// outcome its name promises, so the corpus keeps covering every branch.
func TestRecoveryKeySeeds(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(prkSeeds)
	if err != nil || len(files) == 0 {
		t.Fatalf("no seeds for %s", prkSeeds)
	}
	kinds := map[string]int{}
	for _, p := range files {
		name := filepath.Base(p)
		kind, _, _ := strings.Cut(name, "-")
		kinds[kind]++
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			k, err := fde.ParseRecoveryKey(b)
			switch kind {
			case "ok":
				if err != nil || !k.Canonical() || k.Expose() != testPRK {
					t.Errorf("got %q canonical=%v err=%v, want %s", k.Expose(), k.Canonical(), err, testPRK)
				}
			case "warn":
				if err != nil || k.IsZero() || k.Canonical() || k.Warning() == "" {
					t.Errorf("got %q canonical=%v warning=%q err=%v, want the key kept with a warning", k.Expose(), k.Canonical(), k.Warning(), err)
				}
			case "err":
				if err == nil || !k.IsZero() {
					t.Errorf("got %q err=%v, want a rejection", k.Expose(), err)
				}
			default:
				t.Errorf("seed name %s does not start with ok-, warn- or err-", name)
			}
		})
	}
	if kinds["ok"] == 0 || kinds["warn"] == 0 || kinds["err"] == 0 {
		t.Errorf("seed kinds %v: want some of each", kinds)
	}
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
