package icuregex

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestICUSemantics pins the behaviour ICU documents and Go's regexp lacks:
// full-string matching, possessive quantifiers, lookaround, free spacing,
// \Q...\E, ICU escapes and named-group numbering.
func TestICUSemantics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		input   string
		want    bool
	}{
		// Full-string match, as ICU matches() and NSPredicate MATCHES.
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"abc", "xabc", false},
		{"b", "abc", false},
		{"a|ab", "ab", true}, // the whole input, not the leftmost alternative
		{"abc$", "abc\n", false},
		{".*", "", true},
		// Possessive quantifiers never give back what they matched.
		{".{3,}+", "abcdef", true},
		{".{3,}+", "ab", false},
		{".{3,}+x", "abcx", false},
		{".{3,}x", "abcx", true},
		{"a*+a", "aaa", false},
		{"a*a", "aaa", true},
		{"a++b", "aab", true},
		{"a?+a", "a", false},
		{"(?:ab)++c", "ababc", true},
		{"[a-z]{2,4}+[a-z]", "abcde", true},
		{"[a-z]{2,4}+[a-z]", "abcd", false},
		{`\d++\d`, "123", false},
		// Atomic groups.
		{"(?>a*)a", "aaa", false},
		// Lookahead and lookbehind.
		{"(?=.*[0-9]).{4,}", "abc1", true},
		{"(?=.*[0-9]).{4,}", "abcd", false},
		{"(?!.*password).*", "my password", false},
		{"(?!.*password).*", "my secret", true},
		{".*(?<=[0-9])", "abc1", true},
		{".*(?<=[0-9])", "abc", false},
		{".*(?<!x)", "abx", false},
		{"(?=(?:.*[A-Z]){2}).{3}", "AbC", true},
		// Flags and free spacing.
		{"(?i)abc", "ABC", true},
		{"(?i:a)b", "AB", false},
		{"(?x) a b  c # a comment", "abc", true},
		{"(?x)a\\ b", "a b", true},
		{"(?x)[a b]+", "ab", true},
		{"(?x)[a b]+", "a b", false}, // ICU ignores white space inside sets too
		{"(?x)a#)\nb", "ab", true},
		// Dot and line terminators.
		{".", "\n", false},
		{".", "\r", false},
		{".", "\u2028", false},
		{"(?s).", "\n", true},
		{".", "😀", true},
		// Escapes ICU has and regexp2 spells differently or lacks.
		{`\Qa.b*\E+`, "a.b**", true},
		{`\Qa.b\E`, "axb", false},
		{`\x{1F600}`, "😀", true},
		{`\U0001F600`, "😀", true},
		{`\u0041`, "A", true},
		{`\x41`, "A", true},
		{`\0101`, "A", true},
		{`\h`, " ", true},
		{`\h`, "\n", false},
		{`\v`, "\n", true},
		{`\e`, "\x1b", true},
		{`\y`, "y", true}, // unknown escapes are the letter itself
		{`\p{Lu}\p{Letter}`, "Ab", true},
		{`\p{L}`, "é", true},
		{`\P{L}`, "1", true},
		{`[\p{Lu}\d]+`, "A1B2", true},
		{`[]a]+`, "]a", true},
		{`[^]a]`, "b", true},
		{`[a\-z]+`, "-", true},
		{`[\\]`, `\`, true},
		{`[.]`, "x", false},
		// POSIX-style set items.
		{"[[:digit:]]+", "123", true},
		{"[[:alpha:][:digit:]]+", "a1", true},
		{"[^[:alnum:]]", "#", true},
		{"[[:upper:]]", "a", false},
		// Named groups keep ICU's numbering (regexp2 would number them last).
		{`(?<first>a)(b)\1`, "aba", true},
		{`(?<first>a)(b)\2`, "abb", true},
		{`(?<x>a)\k<x>`, "aa", true},
		{`(a)\10`, "aa0", true},
		// Quantifier details.
		{"a{2}", "aa", true},
		{"a{2,}", "aaaa", true},
		{"a{1,2}", "aaa", false},
		{"a{ 2 }", "aa", false}, // without (?x) the interval cannot contain spaces: a syntax error below
		// Found by TestICUDifferential (libicu): quantified anchors,
		// comments, line terminators, ICU's \w and POSIX items, case folding.
		{"$+", "", true},
		{"a(?#c)+", "aa", true},
		{`a$\r`, "a\r", true},
		{`(?s)a\r$.*`, "a\r\n", false}, // never between CR and LF
		{"(?ms).*^b", "a\u0085b", true},
		{"(?s).", "\r\n", true}, // CR LF is one character for (?s).
		{"(?s)..", "\r\n", false},
		{"(?d).", "\r", true},
		{`\w`, "Ⓐ", true}, // Alphabetic, not a letter
		{`\w`, "\u0903", true},
		{`.*\b.*`, "\u200c", false},
		{"[[:upper:]]", "Ⅻ", true},
		{"[[:xdigit:]]", "Ｆ", true},
		{`[\b]`, "b", true},
		{`\c`, "c", true},
		{"(?i)s", "ſ", true},
		{"(?i)i", "İ", false},
		{"(?i)[a-z]", "\u212a", true},
		{"(?i)[^a]", "A", false},
		{`(?i)\P{Lu}`, "a", false},
		{`(?i)\p{Lu}`, "ĸ", false},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+"/"+tc.input, func(t *testing.T) {
			t.Parallel()
			re, err := Compile(tc.pattern)
			if tc.pattern == "a{ 2 }" {
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("Compile(%q) error = %v, want ErrSyntax", tc.pattern, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Compile(%q): %v", tc.pattern, err)
			}
			got, err := re.MatchString(tc.input)
			if err != nil {
				t.Fatalf("MatchString: %v", err)
			}
			if got != tc.want {
				t.Errorf("%q matches %q = %v, want %v (translated %s)", tc.pattern, tc.input, got, tc.want, re.Translated())
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		want    error
	}{
		{"(", ErrSyntax},
		{")", ErrSyntax},
		{"a)|(b", ErrSyntax},
		{"*a", ErrSyntax},
		{"a**", ErrSyntax},
		{"a{,3}", ErrSyntax},
		{"a{3", ErrSyntax},
		{"a{3,2}", ErrSyntax},
		{"}", ErrSyntax},
		{"[a-", ErrSyntax},
		{"[z-a]", ErrSyntax},
		{`\`, ErrSyntax},
		{`(a)\2`, ErrSyntax},
		{`\k<nope>`, ErrSyntax},
		{"(?<=a*)b", ErrSyntax}, // ICU needs a bounded look-behind
		{"(?<=a+)b", ErrSyntax},
		{"(?P<n>a)", ErrSyntax},
		{"(?(1)a|b)", ErrSyntax},
		{"(?z)", ErrSyntax},
		{`\b*`, ErrSyntax}, // ICU lets a quantifier follow ^ and $, not \b
		{"(?=a)*", ErrSyntax},
		{"[[:graph:]]", ErrUnsupported},
		{"[[:alpha]]", ErrSyntax},
		{"[a-z&&[^b]]", ErrUnsupported},
		{"[a-z--[b]]", ErrUnsupported},
		{"[[a][b]]", ErrUnsupported},
		{`\X`, ErrUnsupported},
		{`\N{LATIN SMALL LETTER A}`, ErrUnsupported},
		{"(?w)a", ErrUnsupported},
		{`\p{Alphabetic}`, ErrUnsupported},
		{strings.Repeat("(", maxDepth+1) + strings.Repeat(")", maxDepth+1), ErrUnsupported},
		{strings.Repeat("a", MaxPatternLength+1), ErrUnsupported},
		{`\pL`, ErrSyntax},
		{`\p{^L}`, ErrSyntax},
		{"(?)", ErrSyntax},
		{"(?<=(?:$)*)a", ErrSyntax}, // unbounded, as ICU counts it
		{"(?<=a{1,2}+)b", ErrUnsupported},
		{`\x{D800}`, ErrUnsupported},
		{"a{1001}", ErrUnsupported}, // valid ICU up to 16777215
		{"a{16777216}", ErrSyntax},
	}
	for _, tc := range tests {
		t.Run(tc.pattern, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tc.pattern)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Compile(%q) error = %v, want %v", tc.pattern, err, tc.want)
			}
		})
	}
}

// TestTimeoutHidesInput: catastrophic backtracking is an error, not a pass,
// and the error does not quote the input (it may be a password).
func TestTimeoutHidesInput(t *testing.T) {
	t.Parallel()
	re := MustCompile("(a+)+b").WithTimeout(20 * time.Millisecond)
	secret := strings.Repeat("a", 40) + "c"
	ok, err := re.MatchString(secret)
	if !errors.Is(err, ErrTimeout) || ok {
		t.Fatalf("MatchString = %v, %v; want ErrTimeout", ok, err)
	}
	if strings.Contains(err.Error(), "aaaa") {
		t.Fatalf("error quotes the input: %v", err)
	}
}

func TestInputLimits(t *testing.T) {
	t.Parallel()
	re := MustCompile(".*")
	if _, err := re.MatchString("\xff"); !errors.Is(err, ErrInput) {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if _, err := re.MatchString(strings.Repeat("a", MaxInputLength+1)); !errors.Is(err, ErrInput) {
		t.Errorf("too long: %v", err)
	}
}

func TestMaxLength(t *testing.T) {
	t.Parallel()
	for pattern, want := range map[string]int{
		"abc": 3, "[a-z]{2,5}": 5, "a|bcd": 3, ".*": -1, "(?=.*1)a{3}": 3, `(a)\1`: -1, "x{2}+": 2,
	} {
		if got := MustCompile(pattern).MaxLength(); got != want {
			t.Errorf("MaxLength(%q) = %d, want %d", pattern, got, want)
		}
	}
}

// TestSample: samples of satisfiable patterns match them, found within a
// few tries, including ones that need lookahead hints and back references.
func TestSample(t *testing.T) {
	t.Parallel()
	for _, pattern := range []string{
		"[A-Z]{2}[0-9]{4}-[a-z]+",
		"(?=.*[0-9])(?=.*[a-z])(?=.*[A-Z]).{8,}",
		"(?=.*XYZ).{5,}",
		`(ab|cd)\1x`,
		`(?i)hello\p{Nd}{2}`,
		`[^\x00-\x7F]{3}`,
		`\Q.*\E[!#]{2}+`,
	} {
		re := MustCompile(pattern)
		rng := rand.New(rand.NewPCG(1, 2))
		found := false
		for i := 0; i < 500 && !found; i++ {
			s, ok := re.Sample(rng, i%16)
			if !ok {
				continue
			}
			m, err := re.MatchString(s)
			if err != nil {
				t.Fatal(err)
			}
			found = m
		}
		if !found {
			t.Errorf("no sample of %q matches it", pattern)
		}
	}
	// A set with no member in the alphabet yields ok == false.
	if _, ok := MustCompile(`\x{E000}`).Sample(rand.New(rand.NewPCG(1, 2)), 1); ok {
		// A literal is always sampled; only sets can fail.
		t.Log("literal sampled")
	}
	if _, ok := MustCompile(`[\x{E000}-\x{E0FF}]`).Sample(rand.New(rand.NewPCG(1, 2)), 1); ok {
		t.Error("Sample of a set outside the alphabet reported ok")
	}
}

func FuzzCompile(f *testing.F) {
	for _, s := range []string{".{3,}+", "(?=.*[0-9])(?<=a)b", `\Qa\E`, "(?x) a # c\n b", "[]a-z\\d]", `(?<n>a)\k<n>\1`, "a{2,3}?+", `\p{L}\x{41}\U0001F600`} {
		f.Add(s, "abc1")
	}
	f.Fuzz(func(t *testing.T, pattern, input string) {
		if len(pattern) > 256 || len(input) > 64 {
			return
		}
		re, err := Compile(pattern)
		if err != nil {
			if re != nil {
				t.Fatal("non-nil Regexp with error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is not *Error: %v", err)
			}
			return
		}
		re = re.WithTimeout(50 * time.Millisecond)
		_, err = re.MatchString(input)
		if err != nil && input != "" && strings.Contains(err.Error(), input) {
			t.Fatalf("error quotes the input: %v", err)
		}
		re.Sample(rand.New(rand.NewPCG(1, 2)), 3)
	})
}
