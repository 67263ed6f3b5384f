// Package icuregex evaluates ICU regular expressions, the dialect Apple uses
// in passcode profiles (customRegex) and in NSPredicate MATCHES of pwpolicy
// account policies, without cgo.
//
// A pattern is parsed here with ICU's syntax rules, checked, and translated
// for github.com/dlclark/regexp2 (a backtracking engine with .NET syntax):
// possessive quantifiers (X*+, X++, X?+, X{n,m}+) become atomic groups,
// \Q...\E becomes escaped literals, named groups keep ICU's numbering, the
// escapes regexp2 lacks (\h, \v, \U, \0ooo) are rewritten, and the flags
// are applied here rather than by regexp2: free spacing, '.', '^' and '$'
// with ICU's line terminators (m, s, d), and case-insensitive matching with
// Unicode simple case folding (i). \w, \b and the [:alpha:]-style set items
// use ICU's Unicode definitions (unicode.go). ICU constructs that cannot be
// translated faithfully are refused with [ErrUnsupported] instead of being
// evaluated differently. icu_differential_test.go compares all this with
// libicu itself.
//
// [Regexp.MatchString] is a full-string match, as ICU's matches() and
// NSPredicate MATCHES are: "abc" does not match "abcd". Every match runs
// under a timeout; a timeout is an error ([ErrTimeout]), never a pass. No
// error of this package contains the input being matched.
//
// Known differences from ICU are listed in docs/passcode.md.
package icuregex

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// MaxPatternLength bounds a pattern in bytes. Apple limits
// passwordContentRegex to 2048 characters; pwpolicy predicates are bounded
// by their own limit.
const MaxPatternLength = 4096

// MaxInputLength bounds the string matched, in bytes.
const MaxInputLength = 4096

// DefaultTimeout bounds one match.
const DefaultTimeout = 250 * time.Millisecond

// maxRepeat bounds the counts of {n,m}. ICU accepts larger counts; nothing a
// password policy needs comes close.
const maxRepeat = 1000

// maxDepth bounds group nesting.
const maxDepth = 64

var (
	// ErrSyntax: the pattern is not a valid ICU regular expression.
	ErrSyntax = errors.New("invalid ICU regular expression")
	// ErrUnsupported: the pattern uses an ICU feature this package cannot
	// evaluate faithfully.
	ErrUnsupported = errors.New("ICU feature not supported by fvescrow's regex engine")
	// ErrTimeout: a match took longer than the timeout (catastrophic
	// backtracking). The outcome is unknown, so it is neither a pass nor a
	// fail.
	ErrTimeout = errors.New("regular expression match timed out")
	// ErrInput: the string to match is not valid UTF-8 or too long.
	ErrInput = errors.New("input cannot be matched")
)

// Error locates a problem in a pattern. The pattern is not secret (it comes
// from a profile or policy); the input matched against it never appears.
type Error struct {
	Offset int // byte offset in the pattern
	Msg    string
	Err    error // ErrSyntax or ErrUnsupported
}

func (e *Error) Error() string { return fmt.Sprintf("%v at offset %d: %s", e.Err, e.Offset, e.Msg) }
func (e *Error) Unwrap() error { return e.Err }

// Regexp is a compiled ICU regular expression. It is safe for concurrent
// use.
type Regexp struct {
	pattern    string
	translated string
	root       *node
	re         *regexp2.Regexp
	timeout    time.Duration
}

// Compile parses an ICU pattern and prepares it for full-string matching.
func Compile(pattern string) (*Regexp, error) {
	if len(pattern) > MaxPatternLength {
		return nil, &Error{Offset: MaxPatternLength, Msg: fmt.Sprintf("pattern longer than %d bytes", MaxPatternLength), Err: ErrUnsupported}
	}
	if !utf8.ValidString(pattern) {
		return nil, &Error{Msg: "pattern is not valid UTF-8", Err: ErrSyntax}
	}
	root, err := parse(pattern)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString(`\A(?:`)
	root.emit(&b)
	b.WriteString(`)\z`)
	tr := b.String()
	re, err := regexp2.Compile(tr, regexp2.None)
	if err != nil {
		// The pattern is valid ICU as far as the parser can tell, so the
		// engine lacks something (a property name, typically).
		return nil, &Error{Msg: engineMessage(err), Err: ErrUnsupported}
	}
	re.MatchTimeout = DefaultTimeout
	return &Regexp{pattern: pattern, translated: tr, root: root, re: re, timeout: DefaultTimeout}, nil
}

// engineMessage strips regexp2's echo of the pattern from its error.
func engineMessage(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "error parsing regexp: ")
	if i := strings.Index(s, " in `"); i >= 0 {
		s = s[:i]
	}
	return s
}

// MustCompile is Compile for patterns known to be valid; it panics
// otherwise. Use it only for constants.
func MustCompile(pattern string) *Regexp {
	re, err := Compile(pattern)
	if err != nil {
		panic(err)
	}
	return re
}

// String returns the ICU pattern.
func (re *Regexp) String() string { return re.pattern }

// Translated returns the regexp2 pattern the ICU pattern was translated to,
// anchored for a full-string match.
func (re *Regexp) Translated() string { return re.translated }

// WithTimeout returns a copy of re whose matches time out after d.
func (re *Regexp) WithTimeout(d time.Duration) *Regexp {
	c := *re
	r2, err := regexp2.Compile(re.translated, regexp2.None)
	if err != nil { // compiled before; cannot happen
		return re
	}
	r2.MatchTimeout = d
	c.re, c.timeout = r2, d
	return &c
}

// MatchString reports whether the whole of s matches. An error (timeout,
// invalid input) means the outcome is unknown.
func (re *Regexp) MatchString(s string) (bool, error) {
	if len(s) > MaxInputLength {
		return false, fmt.Errorf("%w: longer than %d bytes", ErrInput, MaxInputLength)
	}
	if !utf8.ValidString(s) {
		return false, fmt.Errorf("%w: not valid UTF-8", ErrInput)
	}
	ok, err := re.re.MatchString(s)
	if err != nil {
		// regexp2's error quotes the input: never pass it on.
		return false, fmt.Errorf("%w after %v", ErrTimeout, re.timeout)
	}
	return ok, nil
}

// MaxLength returns the longest string the pattern can match in runes, or
// -1 when it is unbounded. Lookaround does not count.
func (re *Regexp) MaxLength() int { return re.root.maxLen() }
