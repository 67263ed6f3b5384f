package pwpolicy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParsePredicate: no panic; an error means no predicate; a parsed
// predicate evaluates without panicking.
func FuzzParsePredicate(f *testing.F) {
	for _, s := range []string{
		"policyAttributePassword matches '.{3,}+'",
		"policyAttributeCurrentTime > policyAttributeLastPasswordChangeTime + policyAttributeExpiresEveryNDays * DAYS_TO_SECONDS",
		"(policyAttributeFailedAuthentications < 5) OR (policyAttributeCurrentTime > x + 300)",
		"none policyAttributePasswordHashes in policyAttributePasswordHistory",
		"NOT (a == 'b') && c MATCHES[c] \"(?=.*\\\\d).*\" || TRUEPREDICATE",
		"-1 * (2 + 3) / 4 <= {1, 2}",
	} {
		f.Add(s)
	}
	env := MapEnv{"policyAttributePassword": String("abc1"), "a": Number(1), "c": String("x1"), "x": Number(0)}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePredicate(s)
		if err != nil {
			if p != nil {
				t.Fatal("predicate returned with an error")
			}
			return
		}
		_, _ = p.Eval(env)
		_ = p.Identifiers()
		_ = Explain(CategoryPasswordContent, &Policy{Identifier: "f", Content: s})
	})
}

// FuzzParseAccountPolicy: no panic; an error means no policies; parsed
// policies write and re-parse to the same bytes.
func FuzzParseAccountPolicy(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("testdata", "fuzz-*.plist"))
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, _, err := Parse(b)
		if err != nil {
			if ps != nil {
				t.Fatal("policies returned with an error")
			}
			return
		}
		_, _ = ps.Check(Input{Password: "abc"})
		_ = ps.Explain()
		x, err := ps.XML()
		if err != nil {
			return // e.g. a parameter value the writer cannot encode
		}
		again, _, err := Parse(x)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, x)
		}
		y, err := again.XML()
		if err != nil || string(x) != string(y) {
			t.Fatalf("write → parse → write differs:\n%s\n%s", x, y)
		}
	})
}
