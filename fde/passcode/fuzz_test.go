package passcode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func addTestdata(f *testing.F, glob string) {
	names, _ := filepath.Glob(filepath.Join("testdata", glob))
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil {
			f.Add(b)
		}
	}
}

// FuzzParsePasscodeProfile: no panic; an error means no profile; every
// parsed payload can be written and read back with the same policy.
func FuzzParsePasscodeProfile(f *testing.F) {
	// Small seeds: the fuzzer minimizes each new input, which takes long
	// for the multi-kilobyte profiles under testdata.
	addTestdata(f, "fuzz-*.mobileconfig")
	f.Fuzz(func(t *testing.T, b []byte) {
		prof, err := ParseProfile(b)
		if err != nil {
			if prof != nil {
				t.Fatal("profile returned with an error")
			}
			return
		}
		for _, p := range prof.Payloads {
			np, err := NewProfile(p.Policy, ProfileOptions{Rand: seeded()})
			if err != nil {
				continue // e.g. an empty customRegex
			}
			x, err := np.XML()
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseProfile(x)
			if err != nil || len(again.Payloads) != 1 {
				t.Fatalf("re-parse: %v", err)
			}
			a, b := again.Payloads[0].Policy, p.Policy
			if a.MinLength != b.MinLength || a.AllowSimple != b.AllowSimple || a.PINHistory != b.PINHistory ||
				(a.CustomRegex == nil) != (b.CustomRegex == nil) {
				t.Fatalf("round trip changed the policy: %+v vs %+v", a, b)
			}
		}
	})
}

// FuzzEvaluatePasscode: Check never panics, never quotes the password in
// an error, and agrees with the account policies from-profile writes.
func FuzzEvaluatePasscode(f *testing.F) {
	f.Add("Zq7#kP!x", int64(8), true, int64(1), false, ".*")
	f.Add("aaa", int64(2), false, int64(0), true, ".{3,}+")
	f.Add("x123y", int64(0), false, int64(0), false, "(?=.*[0-9]).*")
	f.Fuzz(func(t *testing.T, pw string, minLen int64, alnum bool, complexN int64, simpleOK bool, regex string) {
		if len(regex) > 64 {
			return
		}
		p := Policy{MinLength: SetInt(minLen % 20), RequireAlphanumeric: SetBool(alnum), MinComplexChars: SetInt(complexN % 5), AllowSimple: SetBool(simpleOK)}
		if regex != "" {
			p.CustomRegex = &CustomRegex{Regex: regex}
		}
		fails, err := p.Check(pw)
		if err != nil {
			if len(pw) > 3 && strings.Contains(err.Error(), pw) {
				t.Fatalf("error quotes the password: %v", err)
			}
			return
		}
		ps, _, err := p.AccountPolicies()
		if err != nil || strings.ContainsAny(pw, "\n\r\u0085\u2028\u2029\u000b\u000c") {
			return // line terminators: '.' in the written regexes excludes them
		}
		rs, err := ps.Check(pwpolicyInput(pw))
		if err != nil {
			return
		}
		contentFails := 0
		for _, r := range rs {
			if r.Category == "policyCategoryPasswordContent" && r.Outcome.String() == "fail" {
				contentFails++
			}
		}
		if (len(fails) == 0) != (contentFails == 0) {
			t.Fatalf("Check fails %v, account policies fail %d", fails, contentFails)
		}
	})
}
