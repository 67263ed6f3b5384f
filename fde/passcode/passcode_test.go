package passcode

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/fde/passcode/pwpolicy"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/appleschema"
	"github.com/fvescrow/fvescrow/internal/testutil/golden"
)

// seeded returns a deterministic UUID source for golden files.
func seeded() *rand.ChaCha8 {
	var seed [32]byte
	copy(seed[:], "fvescrow passcode golden seed...")
	return rand.NewChaCha8(seed)
}

func profileXML(t testing.TB, p Policy, o ProfileOptions) []byte {
	t.Helper()
	if o.Rand == nil {
		o.Rand = seeded()
	}
	prof, err := NewProfile(p, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := prof.XML()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// payloadXML wraps payload keys (plist XML fragments) in a profile.
func payloadXML(scope string, keys string) []byte {
	s := `<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>PayloadContent</key><array><dict>
` + keys + `
<key>PayloadIdentifier</key><string>com.example.passcode.p</string>
<key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string>
<key>PayloadUUID</key><string>2A8A75E5-D17D-44D5-B062-3CB92161AF9F</string>
<key>PayloadVersion</key><integer>1</integer>
</dict></array>
<key>PayloadDisplayName</key><string>Passcode</string>
<key>PayloadIdentifier</key><string>com.example.passcode</string>`
	if scope != "" {
		s += `<key>PayloadScope</key><string>` + scope + `</string>`
	}
	return []byte(s + `
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key><string>E044F50D-FF67-4BCD-9F3F-D7B678091061</string>
<key>PayloadVersion</key><integer>1</integer>
</dict></plist>`)
}

func lines(r *Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.String())
	}
	return out
}

// TestLintRules: one case per lint rule. Each case names a finding that
// must appear (prefix match); removing the rule fails its case.
func TestLintRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		scope string
		keys  string
		opts  LintOptions
		want  string // a finding line prefix that must appear
		not   string // a finding line prefix that must not appear
	}{
		{"changeAtNextAuth in a device profile (seed 000)", "", `<key>changeAtNextAuth</key><true/>`, LintOptions{},
			"error changeAtNextAuth: in a device profile it forces every user, admins included, to change their password; admin authentications may fail until the admin's password is reset too; and it fires again each time the profile is redeployed. Use `fvescrow pwpolicy reset-script --user NAME` on the one host instead", ""},
		{"changeAtNextAuth in a user profile", "User", `<key>changeAtNextAuth</key><true/>`, LintOptions{},
			"warning changeAtNextAuth: forces this user's password change again", "error changeAtNextAuth"},
		{"changeAtNextAuth on iOS", "", `<key>changeAtNextAuth</key><true/>`, LintOptions{Platform: IOS},
			"warning changeAtNextAuth: macOS only", "error changeAtNextAuth"},
		{"maxInactivity above the macOS maximum", "", `<key>maxInactivity</key><integer>61</integer>`, LintOptions{},
			"error maxInactivity: 61 minutes is above the macOS maximum of 60", ""},
		{"maxInactivity 30 valid on macOS, outside schema", "", `<key>maxInactivity</key><integer>30</integer>`, LintOptions{},
			"warning maxInactivity: 30 is valid on macOS", "error maxInactivity"},
		{"maxInactivity 30 invalid on iOS", "", `<key>maxInactivity</key><integer>30</integer>`, LintOptions{Platform: IOS},
			"error maxInactivity: 30 is above Apple's maximum 15", ""},
		{"minutesUntilFailedLoginReset without maxFailedAttempts", "", `<key>minutesUntilFailedLoginReset</key><integer>5</integer>`, LintOptions{},
			"error minutesUntilFailedLoginReset: requires maxFailedAttempts", ""},
		{"minutesUntilFailedLoginReset with maxFailedAttempts", "", `<key>minutesUntilFailedLoginReset</key><integer>5</integer><key>maxFailedAttempts</key><integer>5</integer>`, LintOptions{},
			"warning profile:", "error minutesUntilFailedLoginReset"},
		{"customRegex below macOS 14", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>.{8,}</string><key>passwordContentDescription</key><dict><key>default</key><string>8+</string></dict></dict>`, LintOptions{MinOSVersion: "13.6"},
			"error customRegex: needs macOS 14 or later; Macs on 13.6 ignore it", ""},
		{"customRegex with unknown macOS version", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>.{8,}</string></dict>`, LintOptions{},
			"warning customRegex: needs macOS 14 or later", "error"},
		{"customRegex on macOS 14", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>.{8,}</string><key>passwordContentDescription</key><dict><key>default</key><string>8+</string></dict></dict>`, LintOptions{MinOSVersion: "14.0"},
			"warning profile:", "customRegex"},
		{"customRegex not valid ICU", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>(abc</string></dict>`, LintOptions{MinOSVersion: "14"},
			"error customRegex: not a valid ICU regular expression", ""},
		{"customRegex valid ICU fvescrow cannot evaluate", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>\X+</string></dict>`, LintOptions{MinOSVersion: "14"},
			"warning customRegex: fvescrow cannot evaluate", "error customRegex"},
		{"customRegex without description", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>.+</string></dict>`, LintOptions{MinOSVersion: "14"},
			"warning customRegex: no passwordContentDescription", ""},
		{"customRegex not a dictionary", "", `<key>customRegex</key><string>.{8,}</string>`, LintOptions{},
			"error customRegex: type is <string>", ""},
		{"customRegex without passwordContentRegex", "", `<key>customRegex</key><dict><key>regex</key><string>.+</string></dict>`, LintOptions{},
			"error customRegex: passwordContentRegex is required", ""},
		{"customRegex longer than Apple's limit", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>` + strings.Repeat("a", 2049) + `</string></dict>`, LintOptions{},
			"error customRegex: passwordContentRegex is 2049 characters", ""},
		{"customRegex on iOS", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>.+</string></dict>`, LintOptions{Platform: IOS},
			"warning customRegex: macOS only", ""},
		{"integer typed as real (seed 002)", "", `<key>pinHistory</key><real>2</real>`, LintOptions{},
			"warning pinHistory: typed as <real>", "error pinHistory"},
		{"real that is not a whole number", "", `<key>minLength</key><real>8.5</real>`, LintOptions{},
			"error minLength: <real> 8.5 is not a whole number", ""},
		{"wrong type", "", `<key>minLength</key><string>8</string>`, LintOptions{},
			"error minLength: type is <string>", ""},
		{"boolean of the wrong type", "", `<key>allowSimple</key><string>false</string>`, LintOptions{},
			"error allowSimple: type is <string>", ""},
		{"unknown key", "", `<key>minlength</key><integer>8</integer>`, LintOptions{},
			"error minlength: unknown key: not in Apple's schema", ""},
		{"unknown key suggests the right one", "", `<key>MinLength</key><integer>8</integer>`, LintOptions{},
			"error MinLength: unknown key: not in Apple's schema for com.apple.mobiledevice.passwordpolicy; the device ignores it (did you mean minLength?)", ""},
		{"value above Apple's range", "", `<key>minLength</key><integer>20</integer>`, LintOptions{},
			"error minLength: 20 is above Apple's maximum 16", ""},
		{"value below Apple's range", "", `<key>maxFailedAttempts</key><integer>1</integer>`, LintOptions{},
			"error maxFailedAttempts: 1 is below Apple's minimum 2", ""},
		{"pinHistory range", "", `<key>pinHistory</key><integer>0</integer>`, LintOptions{},
			"error pinHistory: 0 is below Apple's minimum 1", ""},
		{"negative grace period", "", `<key>maxGracePeriod</key><integer>-1</integer>`, LintOptions{},
			"error maxGracePeriod: -1 is below Apple's minimum 0", ""},
		{"regex caps the length below minLength", "", `<key>minLength</key><integer>8</integer><key>customRegex</key><dict><key>passwordContentRegex</key><string>[a-z]{4}</string></dict>`, LintOptions{MinOSVersion: "14"},
			"error customRegex: policy cannot be satisfied: customRegex accepts at most 4 characters, below minLength 8", ""},
		{"regex forbids what requireAlphanumeric requires", "", `<key>requireAlphanumeric</key><true/><key>customRegex</key><dict><key>passwordContentRegex</key><string>[0-9]{8,}</string></dict>`, LintOptions{MinOSVersion: "14"},
			"error customRegex: policy cannot be satisfied: no password matching customRegex also satisfies requireAlphanumeric", ""},
		{"regex forbids complex characters", "", `<key>minComplexChars</key><integer>1</integer><key>customRegex</key><dict><key>passwordContentRegex</key><string>[A-Za-z0-9]+</string></dict>`, LintOptions{MinOSVersion: "14"},
			"error customRegex: policy cannot be satisfied: no password matching customRegex also satisfies minComplexChars 1", ""},
		{"regex only allows simple passwords", "", `<key>allowSimple</key><false/><key>customRegex</key><dict><key>passwordContentRegex</key><string>(abc)+</string></dict>`, LintOptions{MinOSVersion: "14"},
			"error customRegex: policy cannot be satisfied: no password matching customRegex also satisfies allowSimple false", ""},
		{"possessive quantifier that matches nothing", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>.{3,}+x</string></dict>`, LintOptions{MinOSVersion: "14"},
			"error customRegex: policy cannot be satisfied: customRegex matches no password", ""},
		{"satisfiable regex with lookahead", "", `<key>minLength</key><integer>10</integer><key>requireAlphanumeric</key><true/><key>minComplexChars</key><integer>1</integer><key>allowSimple</key><false/><key>customRegex</key><dict><key>passwordContentRegex</key><string>(?=.*[A-Z])(?=.*[a-z]).{10,}+</string><key>passwordContentDescription</key><dict><key>default</key><string>x</string></dict></dict>`, LintOptions{MinOSVersion: "14"},
			"warning profile:", "error"},
		{"catastrophic backtracking", "", `<key>customRegex</key><dict><key>passwordContentRegex</key><string>(a+)+b</string></dict>`, LintOptions{MinOSVersion: "14"},
			"error customRegex:", ""},
		{"minComplexChars raises the real minimum", "", `<key>minLength</key><integer>2</integer><key>minComplexChars</key><integer>4</integer>`, LintOptions{},
			"warning minComplexChars: minComplexChars 4 raises the real minimum length from 2 to 4", ""},
		{"minComplexChars plus alphanumeric raise the minimum", "", `<key>minLength</key><integer>4</integer><key>minComplexChars</key><integer>3</integer><key>requireAlphanumeric</key><true/>`, LintOptions{},
			"warning minComplexChars: minComplexChars 3 plus a letter and a digit (requireAlphanumeric) raises the real minimum length from 4 to 5", ""},
		{"user enrollment overrides (seed 002)", "", `<key>minLength</key><integer>10</integer><key>minComplexChars</key><integer>2</integer><key>maxInactivity</key><integer>5</integer>`, LintOptions{Platform: IOS, UserEnrollment: true},
			"warning minLength: a user enrollment always uses 6", ""},
		{"user enrollment ignores minComplexChars", "", `<key>minComplexChars</key><integer>2</integer>`, LintOptions{Platform: IOS, UserEnrollment: true},
			"warning minComplexChars: ignored in a user enrollment", ""},
		{"user enrollment maxInactivity", "", `<key>maxInactivity</key><integer>5</integer>`, LintOptions{Platform: IOS, UserEnrollment: true},
			"warning maxInactivity: its value is ignored in a user enrollment", ""},
		{"user enrollment on macOS", "", `<key>minLength</key><integer>6</integer>`, LintOptions{UserEnrollment: true},
			"error profile: Apple's schema forbids the passcode payload in macOS user enrollments", ""},
		{"existing accounts are not forced to change (seed 000)", "System", `<key>minLength</key><integer>10</integer>`, LintOptions{},
			"warning profile: a passcode profile that arrives after accounts exist does not make existing passwords change", ""},
		{"no existing-accounts warning on iOS", "", `<key>minLength</key><integer>6</integer>`, LintOptions{Platform: IOS},
			"", "warning profile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := Lint(payloadXML(tc.scope, tc.keys), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := lines(r)
			has := func(prefix string) bool {
				return slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, prefix) })
			}
			if tc.want != "" && !has(tc.want) {
				t.Errorf("no finding %q in:\n%s", tc.want, strings.Join(got, "\n"))
			}
			if tc.not != "" && has(tc.not) {
				t.Errorf("unexpected finding %q in:\n%s", tc.not, strings.Join(got, "\n"))
			}
			for _, l := range got {
				if strings.Count(l, "\n") > 0 {
					t.Errorf("finding spans lines: %q", l)
				}
			}
		})
	}
}

func TestLintProfileLevel(t *testing.T) {
	t.Parallel()
	r, err := Lint([]byte(`<plist><dict><key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.MCX</string></dict></array></dict></plist>`), LintOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(r); len(got) != 1 || got[0] != "error PayloadContent: no com.apple.mobiledevice.passwordpolicy payload in the profile" || !r.HasErrors() {
		t.Fatalf("findings: %q", got)
	}
	two := payloadXML("", `<key>minLength</key><integer>6</integer>`)
	two = []byte(strings.Replace(string(two), "<key>PayloadContent</key><array>", `<key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string><key>minLength</key><integer>40</integer></dict>`, 1))
	r, err = Lint(two, LintOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(lines(r), "\n")
	for _, want := range []string{"error PayloadContent[0].minLength: 40 is above", "warning PayloadContent: 2 passcode payloads"} {
		if !strings.Contains(got, want) {
			t.Errorf("lack %q in:\n%s", want, got)
		}
	}
	for _, bad := range [][]byte{nil, []byte("bplist00"), []byte("<dict><key>a</key>"), []byte("<plist><array/></plist>"), {0x30, 0x82, 1}, make([]byte, MaxProfileSize+1)} {
		if _, err := Lint(bad, LintOptions{}); !errors.Is(err, ErrMalformed) {
			t.Errorf("Lint(%.10q) error = %v, want ErrMalformed", bad, err)
		}
	}
}

// TestFindingsSorted: errors first, then by key.
func TestFindingsSorted(t *testing.T) {
	t.Parallel()
	r, err := Lint(payloadXML("", `<key>pinHistory</key><real>2</real><key>zzz</key><true/><key>minLength</key><integer>99</integer><key>changeAtNextAuth</key><true/>`), LintOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := lines(r)
	want := []string{"error changeAtNextAuth:", "error minLength:", "error zzz:", "warning pinHistory:", "warning profile:"}
	if len(got) != len(want) {
		t.Fatalf("findings:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("finding %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

// TestAppleExample: Apple's example profile from seed 002 types two
// integers as <real>; lint flags both and nothing else is an error.
func TestAppleExample(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/seed002-apple-example.mobileconfig")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Lint(b, LintOptions{Example: true})
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "lint-seed002-apple-example", []byte(strings.Join(lines(r), "\n")+"\n"))
	if r.HasErrors() {
		t.Error("Apple's example has lint errors")
	}
	prof, err := ParseProfile(b)
	if err != nil {
		t.Fatal(err)
	}
	pol := prof.Payloads[0].Policy
	if pol.MaxPINAgeInDays != SetInt(30) || pol.PINHistory != SetInt(2) || pol.MinLength != SetInt(8) || pol.AllowSimple != SetBool(true) {
		t.Errorf("policy: %+v", pol)
	}
	if fails, _ := pol.Check(r.Example); len(fails) != 0 {
		t.Errorf("example fails %v", fails)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	strict := Policy{
		MinLength: SetInt(8), RequireAlphanumeric: SetBool(true), MinComplexChars: SetInt(2),
		AllowSimple: SetBool(false), CustomRegex: &CustomRegex{Regex: `(?=.*[A-Z]).*`},
	}
	tests := []struct {
		name     string
		p        Policy
		password string
		want     []string
	}{
		{"empty policy", Policy{}, "", nil},
		{"too short", Policy{MinLength: SetInt(4)}, "abc", []string{KeyMinLength}},
		{"length counts characters, not bytes", Policy{MinLength: SetInt(4)}, "ééé", []string{KeyMinLength}},
		{"long enough", Policy{MinLength: SetInt(4)}, "éééé", nil},
		{"digits only", Policy{RequireAlphanumeric: SetBool(true)}, "123456", []string{KeyRequireAlphanumeric}},
		{"letters only", Policy{RequireAlphanumeric: SetBool(true)}, "abcdef", []string{KeyRequireAlphanumeric}},
		{"letter and digit", Policy{RequireAlphanumeric: SetBool(true)}, "abc1", nil},
		{"requireAlphanumeric false", Policy{RequireAlphanumeric: SetBool(false)}, "1234", nil},
		{"complex chars", Policy{MinComplexChars: SetInt(2)}, "ab#d", []string{KeyMinComplexChars}},
		{"complex chars met", Policy{MinComplexChars: SetInt(2)}, "a b#", nil},
		{"repeated", Policy{AllowSimple: SetBool(false)}, "xaaay", []string{KeyAllowSimple}},
		{"repeated ignoring case", Policy{AllowSimple: SetBool(false)}, "xaAay", []string{KeyAllowSimple}},
		{"ascending digits", Policy{AllowSimple: SetBool(false)}, "x123y", []string{KeyAllowSimple}},
		{"descending letters (CBA)", Policy{AllowSimple: SetBool(false)}, "xCBAy", []string{KeyAllowSimple}},
		{"two in a row is not simple", Policy{AllowSimple: SetBool(false)}, "aab12x", nil},
		{"simple allowed", Policy{AllowSimple: SetBool(true)}, "1234", nil},
		{"customRegex is a full match", Policy{CustomRegex: &CustomRegex{Regex: "abc"}}, "abcd", []string{KeyCustomRegex}},
		{"customRegex possessive", Policy{CustomRegex: &CustomRegex{Regex: ".{3,}+"}}, "ab", []string{KeyCustomRegex}},
		{"everything fails", strict, "aaa", []string{KeyMinLength, KeyRequireAlphanumeric, KeyMinComplexChars, KeyAllowSimple, KeyCustomRegex}},
		{"everything passes", strict, "Zq7#kP!x", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.p.Check(tc.password)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Check = %v, want %v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"\xff" + "hunter2", strings.Repeat("a", MaxPasswordLength+1)} {
		_, err := strict.Check(bad)
		if !errors.Is(err, ErrPassword) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Check(bad) error = %v", err)
		}
	}
	if _, err := (Policy{CustomRegex: &CustomRegex{Regex: "("}}).Check("x"); !errors.Is(err, ErrRegex) {
		t.Errorf("invalid regex: %v", err)
	}
}

func TestUserEnrollmentPolicy(t *testing.T) {
	t.Parallel()
	p := Policy{MinLength: SetInt(12), MinComplexChars: SetInt(3), AllowSimple: SetBool(true)}.UserEnrollment()
	if fails, _ := p.Check("Zq7kPx"); len(fails) != 0 {
		t.Errorf("6 characters fail in a user enrollment: %v", fails)
	}
	if fails, _ := p.Check("123456"); !slices.Equal(fails, []string{KeyAllowSimple}) {
		t.Errorf("simple passcode: %v", fails)
	}
}

func TestExample(t *testing.T) {
	t.Parallel()
	for _, p := range []Policy{
		{},
		{MinLength: SetInt(16), RequireAlphanumeric: SetBool(true), MinComplexChars: SetInt(4), AllowSimple: SetBool(false)},
		{MinLength: SetInt(12), CustomRegex: &CustomRegex{Regex: `(?=.*[0-9])(?=.*[A-Z])(?=.*[^A-Za-z0-9]).{12,}+`}},
		{CustomRegex: &CustomRegex{Regex: `[A-Z]{2}-[0-9]{4}`}, AllowSimple: SetBool(false)},
	} {
		s, err := p.Example()
		if err != nil {
			t.Errorf("Example(%+v): %v", p, err)
			continue
		}
		if fails, err := p.Check(s); err != nil || len(fails) != 0 {
			t.Errorf("example fails %v (%v)", fails, err)
		}
		again, _ := p.Example()
		if again != s {
			t.Error("Example is not deterministic")
		}
	}
	_, err := Policy{MinLength: SetInt(8), CustomRegex: &CustomRegex{Regex: "[a-z]{4}"}}.Example()
	if !errors.Is(err, ErrUnsatisfiable) {
		t.Errorf("unsatisfiable: %v", err)
	}
}

// TestGeneratedProfiles: every generated profile validates against Apple's
// YAML, lints clean of errors and matches its golden file.
func TestGeneratedProfiles(t *testing.T) {
	t.Parallel()
	schema, err := appleschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		p Policy
		o ProfileOptions
	}{
		"profile-passcode-minimal": {Policy{MinLength: SetInt(10)}, ProfileOptions{}},
		"profile-passcode-all-options": {Policy{
			AllowSimple: SetBool(false), ForcePIN: SetBool(true), MaxFailedAttempts: SetInt(10), MaxGracePeriod: SetInt(5),
			MaxInactivity: SetInt(15), MaxPINAgeInDays: SetInt(365), MinComplexChars: SetInt(1), MinLength: SetInt(12),
			MinutesUntilFailedLoginReset: SetInt(15), PINHistory: SetInt(5), RequireAlphanumeric: SetBool(true),
			CustomRegex: &CustomRegex{Regex: `(?=.*[A-Z])(?=.*[a-z]).*`, Description: map[string]string{"default": "Upper and lower case letters."}},
		}, ProfileOptions{Identifier: "com.example.passcode", Organization: "Example Corp"}},
		"profile-passcode-user-scope": {Policy{ChangeAtNextAuth: SetBool(true), MinLength: SetInt(8)}, ProfileOptions{Scope: "User"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := profileXML(t, tc.p, tc.o)
			golden.Assert(t, name, b)
			if err := schema.ValidateProfile(b, appleschema.Options{Platform: "macOS"}); err != nil {
				t.Errorf("Apple's schema: %v", err)
			}
			r, err := Lint(b, LintOptions{MinOSVersion: "14"})
			if err != nil || r.HasErrors() {
				t.Errorf("lint: %v %q", err, lines(r))
			}
			if strings.Contains(string(b), "<real>") {
				t.Error("integers written as <real>")
			}
			prof, err := ParseProfile(b)
			if err != nil || len(prof.Payloads) != 1 || prof.Payloads[0].Policy.MinLength != tc.p.MinLength {
				t.Errorf("round trip: %v %+v", err, prof)
			}
		})
	}
	if _, err := NewProfile(Policy{}, ProfileOptions{Scope: "Device"}); err == nil {
		t.Error("scope Device accepted")
	}
	if _, err := NewProfile(Policy{}, ProfileOptions{Identifier: "bad id"}); err == nil {
		t.Error("bad identifier accepted")
	}
}

// TestSchemaKeysMatch: the key table encoded in the package agrees with
// Apple's YAML: names, types, ranges, platforms.
func TestSchemaKeysMatch(t *testing.T) {
	t.Parallel()
	schema, err := appleschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	keys := schema.PayloadKeys(PayloadType)
	if len(keys) != len(keySpecs) {
		t.Fatalf("schema has %d keys, the package %d", len(keys), len(keySpecs))
	}
	kinds := map[keyKind]string{kindBool: "<boolean>", kindInt: "<integer>", kindDict: "<dictionary>"}
	for _, k := range keys {
		s, ok := specOf(k.Key)
		if !ok {
			t.Errorf("%s: missing from keySpecs", k.Key)
			continue
		}
		if kinds[s.kind] != k.Type {
			t.Errorf("%s: type %s, schema %s", k.Key, kinds[s.kind], k.Type)
		}
		if k.Range != nil {
			if k.Range.Min != nil && int64(*k.Range.Min) != s.min {
				t.Errorf("%s: min %d, schema %v", k.Key, s.min, *k.Range.Min)
			}
			if k.Range.Max != nil && int64(*k.Range.Max) != s.max {
				t.Errorf("%s: max %d, schema %v", k.Key, s.max, *k.Range.Max)
			}
		} else if s.max >= 0 {
			t.Errorf("%s: package has a range the schema lacks", k.Key)
		}
		ios := k.SupportedOS["iOS"].Introduced != "n/a"
		if ios != s.iOS {
			t.Errorf("%s: iOS %v, schema %v", k.Key, s.iOS, ios)
		}
		if v := k.SupportedOS["macOS"].Introduced; v != "" && v != s.macOS {
			t.Errorf("%s: macOS %s, schema %s", k.Key, s.macOS, v)
		}
	}
}

func TestAccountPolicies(t *testing.T) {
	t.Parallel()
	p := Policy{
		MinLength: SetInt(10), RequireAlphanumeric: SetBool(true), MinComplexChars: SetInt(2), AllowSimple: SetBool(false),
		CustomRegex:     &CustomRegex{Regex: `(?=.*[A-Z]).*\d.*`, Description: map[string]string{"default": "An uppercase letter and a digit."}},
		MaxPINAgeInDays: SetInt(90), PINHistory: SetInt(5), MaxFailedAttempts: SetInt(10), MinutesUntilFailedLoginReset: SetInt(15),
		MaxInactivity: SetInt(5), ChangeAtNextAuth: SetBool(false),
	}
	ps, notes, err := p.AccountPolicies()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ps.XML()
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "account-policies-all-options", b)
	if got := strings.Join(notes, "\n"); !strings.Contains(got, "maxInactivity") || !strings.Contains(got, "changeAtNextAuth") {
		t.Errorf("notes: %s", got)
	}
	var explained []string
	for _, e := range ps.Explain() {
		explained = append(explained, e.Text)
	}
	golden.Assert(t, "account-policies-all-options-explain", []byte(strings.Join(explained, "\n")+"\n"))
	// The content policies accept and reject exactly what Check does.
	for _, pw := range []string{"Zq7#kP!x9w", "short", "Zq7#kP!x9wa", "Zq7#kP!x123", "zq7#kp!x9w", "Zq7#kP!xaaa", "Zq7kPx9wmn", "ZQ#!ZQ#!ZQ#!"} {
		fails, err := p.Check(pw)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := ps.Check(pwpolicyInput(pw))
		if err != nil {
			t.Fatal(err)
		}
		contentFails := 0
		for _, r := range rs {
			if r.Category == "policyCategoryPasswordContent" && r.Outcome.String() == "fail" {
				contentFails++
			}
		}
		if (len(fails) == 0) != (contentFails == 0) {
			t.Errorf("%q: Check fails %v but account policies fail %d", pw, fails, contentFails)
		}
	}
}

// TestWasmBuild: the evaluator packages build for the browser.
func TestWasmBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds with the go tool")
	}
	gobin := testutil.LookPath(t, "go")
	out := filepath.Join(t.TempDir(), "x.wasm")
	for _, pkg := range []string{".", "./icuregex", "./pwpolicy"} {
		cmd := exec.Command(gobin, "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=js GOARCH=wasm go build %s: %v\n%s", pkg, err, b)
		}
	}
}

func pwpolicyInput(pw string) pwpolicy.Input { return pwpolicy.Input{Password: pw} }
