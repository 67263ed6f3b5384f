package icuregex

import (
	"regexp"
	"testing"
)

// TestTranslationHasNoInlineOptions: the parser applies ICU's flags itself,
// so a translation carries no regexp2 inline option. That matters beyond
// semantics: regexp2's (?d) is its Debug option, which prints the parsed
// pattern to os.Stdout (fde/passcode/imports_test.go allows regexp2's import
// of os on that ground), while ICU's (?d) is UNIX_LINES.
func TestTranslationHasNoInlineOptions(t *testing.T) {
	t.Parallel()
	option := regexp.MustCompile(`\(\?[a-zA-Z-]+[:)]`)
	for _, p := range []string{
		"(?d)a.b$", "(?i)abc", "(?m)^a$", "(?s).", "(?x) a b", "(?imsxdu)a", "(?i-d:a)", "(?u)(?-i)a",
		"(?d:.)", "a(?i:b)c", `\w(?m:$)`, "(?i)[a-z]", "(?i)(a)\\1",
	} {
		re := MustCompile(p)
		tr := re.Translated()
		// The translation's own groups are (?:, (?=, (?!, (?<=, (?<!, (?> and
		// (?i: around a case-insensitive back reference.
		for _, m := range option.FindAllString(tr, -1) {
			if m != "(?i:" {
				t.Errorf("%q translates to %s, with the inline option %s", p, tr, m)
			}
		}
	}
}
