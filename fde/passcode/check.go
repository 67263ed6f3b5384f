package passcode

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/fvescrow/fvescrow/fde/passcode/icuregex"
	"github.com/fvescrow/fvescrow/fde/passcode/pwpolicy"
)

// MaxPasswordLength bounds a candidate password in bytes.
const MaxPasswordLength = 1024

// SimpleRun is the run length that makes a passcode simple: three identical
// characters in a row ("aaa") or three ascending or descending letters or
// digits ("123", "CBA").
const SimpleRun = 3

var (
	// ErrPassword: the candidate cannot be evaluated (not UTF-8, too long).
	// Messages never contain the password.
	ErrPassword = errors.New("password cannot be evaluated")
	// ErrRegex: customRegex cannot be used (invalid ICU, unsupported
	// feature, timeout).
	ErrRegex = errors.New("customRegex cannot be evaluated")
)

// Compiled is a policy ready for repeated checks: its customRegex is
// compiled once.
type Compiled struct {
	Policy
	re *icuregex.Regexp
}

// Compile prepares p for Check.
func (p Policy) Compile() (*Compiled, error) {
	c := &Compiled{Policy: p}
	if p.CustomRegex != nil {
		re, err := icuregex.Compile(p.CustomRegex.Regex)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRegex, err)
		}
		c.re = re
	}
	return c, nil
}

// Check evaluates a candidate password and returns the payload keys it
// fails, in a fixed order (minLength, requireAlphanumeric, minComplexChars,
// allowSimple, customRegex); none means it passes every rule. The rules:
//
//   - minLength: at least N characters (Unicode code points).
//   - requireAlphanumeric: at least one letter and at least one digit.
//     Apple's prose says "alphabetic characters instead of only numeric";
//     macOS enforces a letter and a number, so the stricter reading is used.
//   - minComplexChars: at least N characters that are neither letters nor
//     numbers.
//   - allowSimple false: no character three or more times in a row (case
//     ignored) and no run of three or more ascending or descending ASCII
//     letters or digits ("123", "CBA").
//   - customRegex: the whole password matches (ICU, as NSPredicate MATCHES).
func (c *Compiled) Check(password string) ([]string, error) {
	if len(password) > MaxPasswordLength {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrPassword, MaxPasswordLength)
	}
	if !utf8.ValidString(password) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrPassword)
	}
	var fails []string
	if c.MinLength.Set && int64(utf8.RuneCountInString(password)) < c.MinLength.Value {
		fails = append(fails, KeyMinLength)
	}
	if c.RequireAlphanumeric.Value && !(hasLetter(password) && hasDigit(password)) {
		fails = append(fails, KeyRequireAlphanumeric)
	}
	if c.MinComplexChars.Set && int64(ComplexChars(password)) < c.MinComplexChars.Value {
		fails = append(fails, KeyMinComplexChars)
	}
	if c.AllowSimple.Set && !c.AllowSimple.Value && IsSimple(password) {
		fails = append(fails, KeyAllowSimple)
	}
	if c.re != nil {
		ok, err := c.re.MatchString(password)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRegex, err)
		}
		if !ok {
			fails = append(fails, KeyCustomRegex)
		}
	}
	return fails, nil
}

// Check compiles p and checks password; see Compiled.Check.
func (p Policy) Check(password string) ([]string, error) {
	c, err := p.Compile()
	if err != nil {
		return nil, err
	}
	return c.Check(password)
}

// IsSimple reports whether s contains a simple run: SimpleRun identical
// characters, or SimpleRun ascending or descending letters or digits.
func IsSimple(s string) bool {
	return pwpolicy.ConsecutiveCharacters(s) >= SimpleRun || pwpolicy.SequentialCharacters(s) >= SimpleRun
}

// ComplexChars counts the characters that are neither letters nor numbers.
func ComplexChars(s string) int {
	n := 0
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsNumber(r) {
			n++
		}
	}
	return n
}

func hasLetter(s string) bool {
	for _, r := range s {
		if unicode.IsLetter(r) {
			return true
		}
	}
	return false
}

func hasDigit(s string) bool {
	for _, r := range s {
		if unicode.IsDigit(r) {
			return true
		}
	}
	return false
}

// UserEnrollment returns the policy a user enrollment actually applies
// (seed 002): the payload's presence forces allowSimple false, forcePIN
// true and minLength 6; every other key is ignored (maxInactivity only
// removes the "never" option).
func (p Policy) UserEnrollment() Policy {
	return Policy{AllowSimple: SetBool(false), ForcePIN: SetBool(true), MinLength: SetInt(6)}
}

// EffectiveMinLength is the shortest length any password can have under
// the policy's length and character-class keys: minComplexChars and
// requireAlphanumeric can raise it above minLength.
func (p Policy) EffectiveMinLength() int64 {
	n := p.MinLength.Value
	need := p.MinComplexChars.Value
	if p.RequireAlphanumeric.Value {
		need += 2
	}
	return max(n, need)
}
