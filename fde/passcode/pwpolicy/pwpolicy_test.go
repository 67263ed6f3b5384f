package pwpolicy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSeed003ManPage: pwpolicy(8)'s own example is not well-formed XML; the
// report says where.
func TestSeed003ManPage(t *testing.T) {
	t.Parallel()
	_, _, err := Parse(mustRead(t, "seed003-manpage.plist"))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Parse error = %v, want ErrMalformed", err)
	}
	if want := "line 22: element <key> closed by </dict>"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

// TestSeed003Corrected: the example with its XML fixed parses, warns about
// the misnamed category and the reversed lockout, and evaluates.
func TestSeed003Corrected(t *testing.T) {
	t.Parallel()
	ps, warns, err := Parse(mustRead(t, "seed003-corrected.plist"))
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(warns, "\n")
	for _, want := range []string{
		"policyCategoryPasswordAuthentication: unknown policy category",
		"did you mean policyCategoryAuthentication?",
		`policy "failed auths": authentication is allowed while the predicate is true`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q:\n%s", want, joined)
		}
	}
	if len(ps.PasswordContent) != 1 || len(ps.PasswordChange) != 1 || len(ps.Authentication) != 0 {
		t.Fatalf("categories: %+v", ps)
	}
	now := time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		password string
		want     Outcome
	}{
		{"ab", Fail},
		{"abc", Pass},
		{"", Fail},
		{"ab\ncd", Fail}, // '.' does not match a line terminator
	} {
		rs, err := ps.Check(Input{Password: tc.password, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		got := outcome(t, rs, "com.apple.policy.legacy.minChars")
		if got != tc.want {
			t.Errorf("minChars(%d chars) = %v, want %v", len(tc.password), got, tc.want)
		}
		if o := outcome(t, rs, "Change every 30 days"); o != NotEvaluated {
			t.Errorf("change policy without last change time = %v, want not evaluated", o)
		}
	}
	// With the last change 31 days ago the password must change.
	rs, err := ps.Check(Input{Password: "abc", Now: now, Attributes: map[string]Value{
		"policyAttributeLastPasswordChangeTime": Number(float64(now.Add(-31 * 24 * time.Hour).Unix())),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if o := outcome(t, rs, "Change every 30 days"); o != Fail {
		t.Errorf("change policy after 31 days = %v, want fail (change required)", o)
	}
	rs, _ = ps.Check(Input{Password: "abc", Now: now, Attributes: map[string]Value{
		"policyAttributeLastPasswordChangeTime": Number(float64(now.Add(-29 * 24 * time.Hour).Unix())),
	}})
	if o := outcome(t, rs, "Change every 30 days"); o != Pass {
		t.Errorf("change policy after 29 days = %v, want pass", o)
	}
	got := ps.Explain()
	want := []string{"Password must be changed every 30 days.", "Password must be at least 3 characters long."}
	if len(got) != len(want) {
		t.Fatalf("Explain = %+v", got)
	}
	for i := range want {
		if got[i].Text != want[i] {
			t.Errorf("Explain[%d] = %q, want %q", i, got[i].Text, want[i])
		}
	}
}

func outcome(t *testing.T, rs []Result, id string) Outcome {
	t.Helper()
	for _, r := range rs {
		if r.Identifier == id {
			return r.Outcome
		}
	}
	t.Fatalf("no result for %q", id)
	return 0
}

func TestPredicateEval(t *testing.T) {
	t.Parallel()
	env := MapEnv{
		"policyAttributePassword":                     String("Secret-123"),
		"policyAttributeFailedAuthentications":        Number(3),
		"policyAttributeMaximumFailedAuthentications": Number(5),
		"policyAttributeCurrentTime":                  Number(1000000),
		"policyAttributeLastPasswordChangeTime":       Number(1000000 - 31*86400),
		"policyAttributeExpiresEveryNDays":            Number(30),
		"hist":                                        List(String("a"), String("b")),
		"cur":                                         List(String("b")),
	}
	tests := []struct {
		pred string
		want bool
	}{
		{"policyAttributePassword matches '.{3,}+'", true},
		{"policyAttributePassword MATCHES '.{3,}+x'", false},
		{"policyAttributePassword matches 'Secret'", false}, // whole string
		{"policyAttributePassword matches '(?=.*[0-9])(?=.*[A-Z]).*'", true},
		{`policyAttributePassword matches '.*(?<=\\d)'`, true},
		{`policyAttributePassword matches ".*\d.*"`, true},
		{"policyAttributePassword MATCHES[c] 'secret-123'", true},
		{"policyAttributePassword like 'Sec*-1?3'", true},
		{"policyAttributePassword BEGINSWITH 'Sec' AND policyAttributePassword ENDSWITH '23'", true},
		{"policyAttributePassword CONTAINS[c] 'RET'", true},
		{"policyAttributeFailedAuthentications < policyAttributeMaximumFailedAuthentications", true},
		{"policyAttributeFailedAuthentications >= policyAttributeMaximumFailedAuthentications", false},
		{"policyAttributeCurrentTime > policyAttributeLastPasswordChangeTime + policyAttributeExpiresEveryNDays * DAYS_TO_SECONDS", true},
		{"policyAttributeCurrentTime > policyAttributeLastPasswordChangeTime + (policyAttributeExpiresEveryNDays * 24 * 60 * 60)", true},
		{"(1 + 2) * 3 == 9 && 10 / 4 = 2.5", true},
		{"2 - -1 == 3", true},
		{"NOT (1 > 2) AND !(2 <> 2)", true},
		{"1 > 2 OR 2 =< 2", true},
		{"TRUEPREDICATE", true},
		{"FALSEPREDICATE OR TRUE == 1", true},
		{"none cur in hist", false},
		{"any cur in hist", true},
		{"all cur in hist", true},
		{"'b' IN {'a', 'b'}", true},
		{"'x' in 'xyz'", true},
	}
	for _, tc := range tests {
		p, err := ParsePredicate(tc.pred)
		if err != nil {
			t.Errorf("ParsePredicate(%q): %v", tc.pred, err)
			continue
		}
		got, err := p.Eval(env)
		if err != nil {
			t.Errorf("Eval(%q): %v", tc.pred, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Eval(%q) = %v, want %v", tc.pred, got, tc.want)
		}
	}
}

func TestPredicateMissingAndErrors(t *testing.T) {
	t.Parallel()
	env := MapEnv{"a": Number(1), "s": String("x")}
	for _, tc := range []struct {
		pred string
		want error
		res  bool
	}{
		{"a == 1 OR nope > 3", nil, true}, // the known side decides
		{"a == 2 AND nope > 3", nil, false},
		{"a == 1 AND nope > 3", ErrMissing, false},
		{"a / 0 > 1", ErrEval, false},
		{"s > 1", ErrEval, false},
		{"s matches a", ErrEval, false},
	} {
		p, err := ParsePredicate(tc.pred)
		if err != nil {
			t.Fatalf("%q: %v", tc.pred, err)
		}
		got, err := p.Eval(env)
		if !errors.Is(err, tc.want) || (err == nil && got != tc.res) {
			t.Errorf("Eval(%q) = %v, %v; want %v, %v", tc.pred, got, err, tc.res, tc.want)
		}
	}
	var me *MissingError
	p, _ := ParsePredicate("policyAttributeFailedAuthentications < 3")
	if _, err := p.Eval(nil); !errors.As(err, &me) || me.Name != "policyAttributeFailedAuthentications" {
		t.Errorf("missing attribute error = %v", err)
	}
}

func TestPredicateSyntaxErrors(t *testing.T) {
	t.Parallel()
	for _, pred := range []string{
		"", "a", "a +", "a == ", "(a == 1", "a == 1)", "a == 1 == 2", "a AND b", "NOT a",
		"a == 'unterminated", "a == $x", "a matches '('", "a matches '[[:alpha]]'", "a MATCHES[d] 'x'",
		"a ~ b", "(a == 1) + 2 > 3", "ANY a", strings.Repeat("(", 100) + "a==1" + strings.Repeat(")", 100),
		strings.Repeat("x", MaxPredicateLength+1), "a == 1e999",
	} {
		if _, err := ParsePredicate(pred); !errors.Is(err, ErrPredicate) {
			t.Errorf("ParsePredicate(%q) error = %v, want ErrPredicate", pred, err)
		}
	}
}

func TestCharacterCounts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s                string
		consec, seqChars int
	}{
		{"", 0, 0},
		{"a", 1, 1},
		{"aaB", 2, 2},
		{"xAaa", 3, 1},
		{"x123y", 1, 3},
		{"CBA", 1, 3},
		{"cBa", 1, 3},
		{"aba", 1, 2},
		{"9ab", 1, 2},
		{"az", 1, 1},
		{"12345", 1, 5},
		{"ab-cd", 1, 2},
		{"ééé", 3, 0},
	} {
		if got := ConsecutiveCharacters(tc.s); got != tc.consec {
			t.Errorf("ConsecutiveCharacters(%q) = %d, want %d", tc.s, got, tc.consec)
		}
		if got := SequentialCharacters(tc.s); got != tc.seqChars {
			t.Errorf("SequentialCharacters(%q) = %d, want %d", tc.s, got, tc.seqChars)
		}
	}
}

func TestParseProblems(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		doc  string
		want string
	}{
		"binary":      {"bplist00", "binary property lists"},
		"not xml":     {"hello", "no XML elements"},
		"root array":  {"<plist><array/></plist>", "root is not a dictionary"},
		"no policies": {"<dict/>", "no policies"},
		"bad array":   {"<dict><key>policyCategoryPasswordContent</key><string>x</string></dict>", "want an array"},
		"no content":  {"<dict><key>policyCategoryPasswordContent</key><array><dict><key>policyIdentifier</key><string>x</string></dict></array></dict>", "policyContent is missing"},
		"bad pred":    {"<dict><key>policyCategoryPasswordContent</key><array><dict><key>policyContent</key><string>a ==</string></dict></array></dict>", "invalid policy predicate"},
		"deep":        {strings.Repeat("<dict><key>a</key>", 40) + strings.Repeat("</dict>", 40), "nested deeper"},
	} {
		_, _, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}

func TestWriteRoundTrip(t *testing.T) {
	t.Parallel()
	ps, _, err := Parse(mustRead(t, "seed003-corrected.plist"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ps.XML()
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := Parse(b)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, b)
	}
	b2, _ := again.XML()
	if string(b) != string(b2) {
		t.Fatalf("write → parse → write differs:\n%s\n%s", b, b2)
	}
	if !strings.Contains(string(b), "<key>policyCategoryPasswordContent</key>") || strings.Contains(string(b), "policyCategoryPasswordAuthentication") {
		t.Fatalf("unexpected output:\n%s", b)
	}
}

func TestExplainFallbacks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		c    Category
		p    Policy
		want string
	}{
		{CategoryPasswordContent, Policy{Identifier: "corp.weird", Content: `policyAttributePassword matches '[A-Z]{2}\\d{4}'`}, `Password must satisfy the rule "corp.weird".`},
		{CategoryPasswordContent, Policy{Identifier: "corp.weird", Content: `policyAttributePassword matches '[A-Z]{2}\\d{4}'`, ContentDescription: map[string]string{"en": "Two capitals then four digits."}}, "Two capitals then four digits."},
		{CategoryPasswordContent, Policy{Identifier: "x", Content: "policyAttributePassword matches '.{8,}'"}, "Password must be at least 8 characters long."},
		{CategoryPasswordContent, Policy{Identifier: "x", Content: "policyAttributePassword matches '.{0,20}'"}, "Password must be at most 20 characters long."},
		{CategoryPasswordContent, Policy{Identifier: "x", Content: "policyAttributeConsecutiveCharacters < 3"}, "Password must not repeat the same character more than 2 times in a row."},
		{CategoryPasswordContent, Policy{Identifier: "com.apple.policy.legacy.requiresNumeric", Content: "policyAttributePassword matches '(.*[[:graph:]].*)'"}, "Password must contain at least one number."},
		{CategoryPasswordChange, Policy{Identifier: "odd", Content: "policyAttributeCurrentTime > 5"}, `Password must be changed when the rule "odd" applies.`},
		{CategoryAuthentication, Policy{Identifier: "lock", Content: "policyAttributeFailedAuthentications < policyAttributeMaximumFailedAuthentications", Parameters: map[string]any{"policyAttributeMaximumFailedAuthentications": int64(5)}}, "The account is locked after 5 failed login attempts."},
		{CategoryAuthentication, Policy{Identifier: "lock", Content: "(policyAttributeFailedAuthentications < 10) OR (policyAttributeCurrentTime > policyAttributeLastFailedAuthenticationTime + autoEnableInSeconds)", Parameters: map[string]any{"autoEnableInSeconds": int64(300)}}, "The account is locked after 10 failed login attempts and unlocks after 5 minutes."},
	} {
		p := tc.p
		if got := Explain(tc.c, &p); got != tc.want {
			t.Errorf("Explain(%s) = %q, want %q", p.Content, got, tc.want)
		}
	}
}

func TestResetScriptValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		t  ResetTarget
		ok bool
	}{
		{ResetTarget{User: "alice"}, true},
		{ResetTarget{User: "j.doe-2_x"}, true},
		{ResetTarget{UID: "501"}, true},
		{ResetTarget{UID: "499"}, false},
		{ResetTarget{UID: "499", AllowSystem: true}, true},
		{ResetTarget{UID: "0", AllowSystem: true}, false},
		{ResetTarget{User: "root", AllowSystem: true}, false},
		{ResetTarget{}, false},
		{ResetTarget{User: "a", UID: "501"}, false},
		{ResetTarget{User: "501"}, false},
		{ResetTarget{User: "-rf"}, false},
		{ResetTarget{User: "$(rm -rf /)"}, false},
		{ResetTarget{User: "a; reboot"}, false},
		{ResetTarget{User: "a'b"}, false},
		{ResetTarget{User: "a\nb"}, false},
		{ResetTarget{User: "a b"}, false},
		{ResetTarget{User: "`id`"}, false},
		{ResetTarget{User: strings.Repeat("a", 256)}, false},
		{ResetTarget{UID: "0501"}, false},
		{ResetTarget{UID: "+501"}, false},
		{ResetTarget{UID: "501; reboot"}, false},
		{ResetTarget{UID: "99999999999"}, false},
		{ResetTarget{UID: "-1"}, false},
	} {
		_, err := ResetScript(tc.t)
		if (err == nil) != tc.ok {
			t.Errorf("ResetScript(%+v) error = %v, want ok=%v", tc.t, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrResetTarget) {
			t.Errorf("error %v does not wrap ErrResetTarget", err)
		}
	}
}

// TestResetScriptRuns runs the script under sh with fake id and pwpolicy:
// it calls pwpolicy with exactly the validated name, refuses system
// accounts at run time, and carries no credentials.
func TestResetScriptRuns(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a POSIX shell")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "pwpolicy.log")
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// id: no argument → the caller (root); -u NAME → UID; -un UID → name.
	write("id", `#!/bin/sh
case "$#:$1:${2-}" in
1:-u:) echo 0 ;;
2:-u:alice) echo 501 ;;
2:-u:_svc) echo 250 ;;
2:-un:501) echo alice ;;
2:-un:250) echo _svc ;;
*) exit 1 ;;
esac
`)
	write("pwpolicy", `#!/bin/sh
for a in "$@"; do printf '[%s]' "$a"; done >> "$PWLOG"
echo >> "$PWLOG"
`)
	run := func(target ResetTarget) (string, error) {
		s, err := ResetScript(target)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"password=", "-p ", "token", "-a "} {
			if strings.Contains(s, bad) {
				t.Fatalf("script contains %q", bad)
			}
		}
		if out, err := exec.Command(sh, "-n", "-c", s).CombinedOutput(); err != nil {
			t.Fatalf("sh -n: %v\n%s", err, out)
		}
		_ = os.Remove(log)
		cmd := exec.Command(sh, "-c", s)
		cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "PWLOG=" + log}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pwlog := func() string { b, _ := os.ReadFile(log); return string(b) }

	out, err := run(ResetTarget{User: "alice"})
	if err != nil {
		t.Fatalf("alice: %v\n%s", err, out)
	}
	if got, want := pwlog(), "[-u][alice][-setpolicy][newPasswordRequired=1]\n"; got != want {
		t.Errorf("pwpolicy called with %q, want %q", got, want)
	}
	if !strings.Contains(out, "alice (UID 501) must choose a new password at the next login") {
		t.Errorf("output: %s", out)
	}
	out, err = run(ResetTarget{UID: "501"})
	if err != nil || pwlog() != "[-u][alice][-setpolicy][newPasswordRequired=1]\n" {
		t.Errorf("uid 501: %v %q\n%s", err, pwlog(), out)
	}
	// A system account found at run time is refused unless allowed.
	out, err = run(ResetTarget{User: "_svc"})
	if err == nil || pwlog() != "" || !strings.Contains(out, "refusing system account _svc (UID 250)") {
		t.Errorf("_svc: err=%v log=%q out=%s", err, pwlog(), out)
	}
	if _, err = run(ResetTarget{User: "_svc", AllowSystem: true}); err != nil || pwlog() == "" {
		t.Errorf("_svc allowed: %v %q", err, pwlog())
	}
	if out, err = run(ResetTarget{User: "bob"}); err == nil || !strings.Contains(out, "no account named bob") || pwlog() != "" {
		t.Errorf("unknown user: %v %s", err, out)
	}
}

func TestCheckRejectsBadPassword(t *testing.T) {
	t.Parallel()
	ps, _, err := Parse(mustRead(t, "seed003-corrected.plist"))
	if err != nil {
		t.Fatal(err)
	}
	secret := "\xffsecret"
	_, err = ps.Check(Input{Password: secret})
	if !errors.Is(err, ErrPassword) || strings.Contains(err.Error(), "secret") {
		t.Errorf("Check(invalid UTF-8) error = %v", err)
	}
	if _, err := ps.Check(Input{Password: strings.Repeat("a", MaxPasswordLength+1)}); !errors.Is(err, ErrPassword) {
		t.Errorf("Check(too long) error = %v", err)
	}
}

func TestQuoteString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{`a'b`, `\d{3}`, "x\ny", `"q"`, `\\`} {
		p, err := ParsePredicate("policyAttributePassword == " + QuoteString(s))
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		ok, err := p.Eval(MapEnv{"policyAttributePassword": String(s)})
		if err != nil || !ok {
			t.Errorf("QuoteString(%q) does not round-trip: %v %v", s, ok, err)
		}
	}
	if got := reflect.TypeOf(Value{}).Kind(); got != reflect.Struct {
		t.Fatal(got)
	}
}

// TestTimeKeywordsAndHistory: the current day of week (1 = Sunday, as
// NSCalendar) and time of day (HHMM) come from Input.Now; password history
// needs the hashes on the Mac, so a history policy is never guessed.
func TestTimeKeywordsAndHistory(t *testing.T) {
	t.Parallel()
	ps, _, err := Parse([]byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>policyCategoryAuthentication</key><array>
 <dict><key>policyIdentifier</key><string>office hours</string>
  <key>policyContent</key><string>policyAttributeCurrentDayOfWeek &gt;= 2 AND policyAttributeCurrentDayOfWeek &lt;= 6 AND policyAttributeCurrentTimeOfDay &gt;= 800 AND policyAttributeCurrentTimeOfDay &lt; 1830</string></dict>
</array>
<key>policyCategoryPasswordContent</key><array>
 <dict><key>policyIdentifier</key><string>history</string>
  <key>policyParameters</key><dict><key>policyAttributePasswordHistoryDepth</key><integer>5</integer></dict>
  <key>policyContent</key><string>NONE policyAttributePasswordHashes IN policyAttributePasswordHistory</string></dict>
</array>
</dict></plist>`))
	if err != nil {
		t.Fatal(err)
	}
	outcome := func(now time.Time, id string) Outcome {
		t.Helper()
		rs, err := ps.Check(Input{Password: "correct horse", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Identifier == id {
				return r.Outcome
			}
		}
		t.Fatalf("no result for %q", id)
		return 0
	}
	for _, tc := range []struct {
		now  time.Time
		want Outcome
	}{
		{time.Date(2026, 11, 23, 9, 15, 0, 0, time.UTC), Pass},  // Monday 09:15
		{time.Date(2026, 11, 27, 18, 29, 0, 0, time.UTC), Pass}, // Friday 18:29
		{time.Date(2026, 11, 27, 18, 30, 0, 0, time.UTC), Fail}, // Friday 18:30
		{time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), Fail},  // Sunday
		{time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC), Fail},  // Saturday
		{time.Date(2026, 11, 24, 7, 59, 0, 0, time.UTC), Fail},  // Tuesday 07:59
		{time.Time{}, NotEvaluated},                             // no clock
	} {
		if got := outcome(tc.now, "office hours"); got != tc.want {
			t.Errorf("%s: office hours %v, want %v", tc.now.Format(time.RFC1123), got, tc.want)
		}
	}
	if got := outcome(time.Now(), "history"); got != NotEvaluated {
		t.Errorf("history policy %v, want not evaluated (the old hashes are on the Mac)", got)
	}
}
