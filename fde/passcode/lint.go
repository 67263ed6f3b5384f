package passcode

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/fvescrow/fvescrow/fde/passcode/icuregex"
)

// Severity grades a finding.
type Severity uint8

const (
	// SeverityError: the policy will not do what it says; lint exits 1.
	SeverityError Severity = iota + 1
	// SeverityWarning: worth knowing before pushing the profile.
	SeverityWarning
)

func (s Severity) String() string {
	if s == SeverityError {
		return "error"
	}
	return "warning"
}

// Finding is one lint result. Messages never contain a password.
type Finding struct {
	Severity Severity
	Key      string // payload key, or "profile" for the profile as a whole
	Message  string
}

// String formats the finding as "error KEY: message".
func (f Finding) String() string { return fmt.Sprintf("%s %s: %s", f.Severity, f.Key, f.Message) }

// Platform is the platform a profile is linted for.
type Platform string

const (
	MacOS Platform = "macOS"
	IOS   Platform = "iOS"
)

// ParsePlatform accepts macOS and iOS in any case.
func ParsePlatform(s string) (Platform, error) {
	switch strings.ToLower(s) {
	case "macos", "":
		return MacOS, nil
	case "ios":
		return IOS, nil
	}
	return "", fmt.Errorf("platform %q: want macOS or iOS", s)
}

// LintOptions narrow a lint.
type LintOptions struct {
	Platform Platform // default macOS
	// UserEnrollment lints for a user enrollment, where the payload's
	// presence forces a few settings and the rest is ignored (seed 002).
	UserEnrollment bool
	// MinOSVersion is the oldest OS version the profile targets ("13.6");
	// empty when unknown.
	MinOSVersion string
	// Example asks for an example password in the report.
	Example bool
}

// Report is the outcome of Lint.
type Report struct {
	Findings []Finding
	// Example is a password satisfying the (first) passcode payload, set
	// only when LintOptions.Example asked for it and one exists.
	Example string
}

// HasErrors reports whether any finding is an error.
func (r *Report) HasErrors() bool {
	for _, f := range r.Findings {
		if f.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Lint reads a profile and reports every problem with its passcode
// payloads. An error means the bytes are not a readable profile; policy
// problems are findings. Findings are sorted: errors first, then by key.
func Lint(b []byte, o LintOptions) (*Report, error) {
	prof, err := ParseProfile(b)
	if err != nil {
		return nil, err
	}
	return LintProfile(prof, o), nil
}

// LintProfile lints an already parsed profile.
func LintProfile(prof *Profile, o LintOptions) *Report {
	if o.Platform == "" {
		o.Platform = MacOS
	}
	r := &Report{}
	if len(prof.Payloads) == 0 {
		r.Findings = append(r.Findings, Finding{SeverityError, "PayloadContent", "no " + PayloadType + " payload in the profile"})
		return r
	}
	if len(prof.Payloads) > 1 {
		r.Findings = append(r.Findings, Finding{SeverityWarning, "PayloadContent", fmt.Sprintf("%d passcode payloads: the device combines them and the strictest value of each key wins, which is hard to read; prefer one", len(prof.Payloads))})
	}
	device := prof.Scope != "User"
	if o.Platform == MacOS && device && !o.UserEnrollment {
		r.Findings = append(r.Findings, Finding{SeverityWarning, "profile", "a passcode profile that arrives after accounts exist does not make existing passwords change: macOS only offers \"Change Later\" (seed 000); for accounts that already exist run `fvescrow pwpolicy reset-script` on each host, not changeAtNextAuth"})
	}
	for i := range prof.Payloads {
		p := &prof.Payloads[i]
		prefix := ""
		if len(prof.Payloads) > 1 {
			prefix = fmt.Sprintf("PayloadContent[%d].", p.Index)
		}
		fs, example := lintPayload(p, prof.Scope, o)
		for _, f := range fs {
			f.Key = prefix + f.Key
			r.Findings = append(r.Findings, f)
		}
		if o.Example && r.Example == "" {
			r.Example = example
		}
	}
	sort.SliceStable(r.Findings, func(i, j int) bool {
		a, b := r.Findings[i], r.Findings[j]
		if a.Severity != b.Severity {
			return a.Severity < b.Severity
		}
		return a.Key < b.Key
	})
	return r
}

func lintPayload(p *Payload, scope string, o LintOptions) ([]Finding, string) {
	fs := append([]Finding(nil), p.Findings...)
	add := func(sev Severity, key, format string, a ...any) {
		fs = append(fs, Finding{sev, key, fmt.Sprintf(format, a...)})
	}
	pol := p.Policy
	mac := o.Platform == MacOS

	// Availability per platform and Apple's ranges.
	for _, s := range keySpecs {
		if !p.Has(s.name) {
			continue
		}
		if !mac && !s.iOS {
			add(SeverityWarning, s.name, "macOS only (macOS %s+); iOS ignores it", s.macOS)
		}
	}
	for _, n := range pol.ints() {
		if !n.v.Set {
			continue
		}
		s, _ := specOf(n.key)
		max := s.max
		if n.key == KeyMaxInactivity && mac {
			max = MacOSMaxInactivity
		}
		switch {
		case n.v.Value < s.min:
			add(SeverityError, n.key, "%d is below Apple's minimum %d", n.v.Value, s.min)
		case max >= 0 && n.v.Value > max && n.key == KeyMaxInactivity && mac:
			add(SeverityError, n.key, "%d minutes is above the macOS maximum of %d", n.v.Value, MacOSMaxInactivity)
		case max >= 0 && n.v.Value > max:
			add(SeverityError, n.key, "%d is above Apple's maximum %d (range %d-%d)", n.v.Value, max, s.min, max)
		case n.key == KeyMaxInactivity && mac && n.v.Value > s.max:
			add(SeverityWarning, n.key, "%d is valid on macOS (up to %d) but outside the schema range %d-%d, which is iOS's; tools that validate against Apple's schema may reject the profile", n.v.Value, MacOSMaxInactivity, s.min, s.max)
		}
	}

	// changeAtNextAuth (seed 000).
	if pol.ChangeAtNextAuth.Value && mac {
		if scope == "User" {
			add(SeverityWarning, KeyChangeAtNextAuth, "forces this user's password change again every time the profile is (re)installed; for a one-off reset use `fvescrow pwpolicy reset-script` on the host")
		} else {
			add(SeverityError, KeyChangeAtNextAuth, "in a device profile it forces every user, admins included, to change their password; admin authentications may fail until the admin's password is reset too; and it fires again each time the profile is redeployed. Use `fvescrow pwpolicy reset-script --user NAME` on the one host instead")
		}
	}

	// minutesUntilFailedLoginReset needs maxFailedAttempts.
	if pol.MinutesUntilFailedLoginReset.Set && !pol.MaxFailedAttempts.Set {
		add(SeverityError, KeyMinutesUntilFailedLoginReset, "requires maxFailedAttempts; without it there is no lockout to reset and the key does nothing")
	}

	// minComplexChars (and requireAlphanumeric) silently raising the
	// minimum length.
	if eff := pol.EffectiveMinLength(); pol.MinComplexChars.Value > 0 && eff > pol.MinLength.Value {
		why := fmt.Sprintf("minComplexChars %d", pol.MinComplexChars.Value)
		if pol.RequireAlphanumeric.Value {
			why += " plus a letter and a digit (requireAlphanumeric)"
		}
		add(SeverityWarning, KeyMinComplexChars, "%s raises the real minimum length from %d to %d; set minLength to at least %d so the policy says what it enforces", why, pol.MinLength.Value, eff, eff)
	}

	// customRegex.
	var compiled *Compiled
	regexOK := true
	if cr := pol.CustomRegex; cr != nil {
		if mac {
			switch v := o.MinOSVersion; {
			case v == "":
				add(SeverityWarning, KeyCustomRegex, "needs macOS 14 or later; older Macs ignore it and enforce only the other keys (give --min-os-version to check)")
			case versionLess(v, "14"):
				add(SeverityError, KeyCustomRegex, "needs macOS 14 or later; Macs on %s ignore it and enforce only the other keys", v)
			}
		}
		if len(cr.Regex) > MaxCustomRegexLength {
			add(SeverityError, KeyCustomRegex, "passwordContentRegex is %d characters; Apple's limit is %d", len(cr.Regex), MaxCustomRegexLength)
		}
		if len(cr.Description) == 0 {
			add(SeverityWarning, KeyCustomRegex, "no passwordContentDescription: users are not told what the expression requires")
		}
		if _, err := icuregex.Compile(cr.Regex); err != nil {
			regexOK = false
			if errors.Is(err, icuregex.ErrUnsupported) {
				add(SeverityWarning, KeyCustomRegex, "fvescrow cannot evaluate this expression (%v); satisfiability was not checked", err)
			} else {
				add(SeverityError, KeyCustomRegex, "not a valid ICU regular expression: %v", err)
			}
		}
	}

	// User enrollment (seed 002).
	if o.UserEnrollment {
		if mac {
			add(SeverityError, "profile", "Apple's schema forbids the passcode payload in macOS user enrollments")
		} else {
			for _, k := range []struct {
				key, msg string
			}{
				{KeyAllowSimple, "a user enrollment always uses false"},
				{KeyForcePIN, "a user enrollment always uses true"},
				{KeyMinLength, "a user enrollment always uses 6"},
			} {
				add(SeverityWarning, k.key, "%s, whatever the profile says", k.msg)
			}
			if p.Has(KeyMaxInactivity) {
				add(SeverityWarning, KeyMaxInactivity, "its value is ignored in a user enrollment; the key only removes the \"never\" option")
			}
			for _, s := range keySpecs {
				switch s.name {
				case KeyAllowSimple, KeyForcePIN, KeyMinLength, KeyMaxInactivity:
					continue
				}
				if p.Has(s.name) {
					add(SeverityWarning, s.name, "ignored in a user enrollment")
				}
			}
			pol = pol.UserEnrollment()
		}
	}

	// Satisfiability: construct an example password.
	var example string
	if regexOK {
		var err error
		if compiled, err = pol.Compile(); err == nil {
			s, ok, err := compiled.search()
			switch {
			case err != nil:
				add(SeverityError, KeyCustomRegex, "%v", err)
			case ok:
				example = s
				if err := compiled.probeBacktracking(s); err != nil {
					add(SeverityError, KeyCustomRegex, "%v", err)
				}
			default:
				key := KeyCustomRegex
				if pol.CustomRegex == nil {
					key = KeyMinLength
				}
				add(SeverityError, key, "%v", compiled.diagnose())
			}
		}
	}
	return fs, example
}

// versionLess compares dotted versions numerically ("13.6" < "14").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// ValidVersion reports whether s is a dotted numeric version.
func ValidVersion(s string) bool {
	for _, p := range strings.Split(s, ".") {
		if _, err := strconv.Atoi(p); err != nil || p == "" || len(p) > 4 {
			return false
		}
	}
	return s != ""
}
