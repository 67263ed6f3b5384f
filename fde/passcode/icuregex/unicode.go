package icuregex

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"

	"github.com/dlclark/regexp2"
)

// ICU's character classes where they differ from .NET's (regexp2's), built
// from Go's Unicode tables. regexp2's \p{...} reads the same tables, so a
// class written as \p{L} plus the ranges computed here is ICU's set for the
// Unicode version of the Go toolchain (15.0 for Go 1.21 and later, as in
// ICU 72-73; the differential test checks it against libicu).
//
//   - \w is [\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u200C\u200D] (.NET: L, Mn, Nd,
//     Pc), and \b and \B use that \w, ignore Grapheme_Extend and format
//     characters (Cf) like ICU's isWordBoundary.
//   - [:alpha:] is \p{Alphabetic}, [:upper:] \p{Uppercase}, [:lower:]
//     \p{Lowercase}, [:alnum:] [:alpha:] plus \p{Nd}, [:xdigit:] \p{Nd} plus
//     \p{Hex_Digit}.
//   - Case-insensitive matching ((?i)) uses Unicode simple case folding, as
//     ICU does for single characters and sets: a set matches c when c or a
//     character case folding makes equivalent to it is in the set, and a
//     negated set ([^...], \P{...}) is the complement of that closure.
type runeRange struct{ lo, hi rune }

// ranges returns the union of the tables as sorted, disjoint ranges.
func ranges(tables ...*unicode.RangeTable) []runeRange {
	var rs []runeRange
	add := func(lo, hi, stride rune) {
		if stride == 1 {
			rs = append(rs, runeRange{lo, hi})
			return
		}
		for r := lo; r <= hi; r += stride {
			rs = append(rs, runeRange{r, r})
		}
	}
	for _, t := range tables {
		for _, r := range t.R16 {
			add(rune(r.Lo), rune(r.Hi), rune(r.Stride))
		}
		for _, r := range t.R32 {
			add(rune(r.Lo), rune(r.Hi), rune(r.Stride))
		}
	}
	return normalize(rs)
}

func normalize(rs []runeRange) []runeRange {
	slices.SortFunc(rs, func(a, b runeRange) int { return int(a.lo - b.lo) })
	var out []runeRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// minus returns the code points of a that are not in b.
func minus(a, b []runeRange) []runeRange {
	var out []runeRange
	for _, r := range a {
		lo := r.lo
		for _, s := range b {
			if s.hi < lo || s.lo > r.hi {
				continue
			}
			if s.lo > lo {
				out = append(out, runeRange{lo, s.lo - 1})
			}
			lo = s.hi + 1
			if lo > r.hi {
				break
			}
		}
		if lo <= r.hi {
			out = append(out, runeRange{lo, r.hi})
		}
	}
	return out
}

// render writes ranges as the inside of a regexp2 character class.
func render(rs []runeRange) string {
	var b strings.Builder
	for _, r := range rs {
		if r.lo == r.hi {
			fmt.Fprintf(&b, `\x{%X}`, r.lo)
		} else {
			fmt.Fprintf(&b, `\x{%X}-\x{%X}`, r.lo, r.hi)
		}
	}
	return b.String()
}

// icuClasses holds ICU's classes as the inside of a regexp2 character
// class, computed on first use.
type icuClasses struct {
	word, notWord                    string // \w, and \W for use inside a set
	alpha, upper, lower, alnum, xdig string
	boundary                         string // \b, without its group
}

var icuClassesOnce = sync.OnceValue(func() *icuClasses {
	zwnj := &unicode.RangeTable{R16: []unicode.Range16{{Lo: 0x200C, Hi: 0x200D, Stride: 1}}}
	all := []runeRange{{0, unicode.MaxRune}}
	word := `\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}` +
		render(minus(ranges(unicode.Other_Alphabetic), ranges(unicode.L, unicode.Nl, unicode.M, unicode.Nd, unicode.Pc)))
	alpha := `\p{L}\p{Nl}` + render(minus(ranges(unicode.Other_Alphabetic), ranges(unicode.L, unicode.Nl)))
	// Grapheme_Extend is Me, Mn and Other_Grapheme_Extend; ICU's word
	// boundaries skip it and format characters.
	extend := `[\p{Mn}\p{Me}\p{Cf}` + render(minus(ranges(unicode.Other_Grapheme_Extend), ranges(unicode.Mn, unicode.Me, unicode.Cf))) + `]`
	w := `[` + word + `]`
	return &icuClasses{
		word:     word,
		notWord:  render(minus(all, ranges(unicode.L, unicode.Nl, unicode.Other_Alphabetic, unicode.M, unicode.Nd, unicode.Pc, zwnj))),
		alpha:    alpha,
		upper:    `\p{Lu}` + render(minus(ranges(unicode.Other_Uppercase), ranges(unicode.Lu))),
		lower:    `\p{Ll}` + render(minus(ranges(unicode.Other_Lowercase), ranges(unicode.Ll))),
		alnum:    alpha + `\p{Nd}`,
		xdig:     `\p{Nd}` + render(minus(ranges(unicode.Hex_Digit), ranges(unicode.Nd))),
		boundary: `(?!` + extend + `)(?:(?<=` + w + `(?>` + extend + `*))(?!` + w + `)|(?<!` + w + `(?>` + extend + `*))(?=` + w + `))`,
	}
})

// caseRunes lists the code points simple case folding makes equivalent to
// another one.
var caseRunes = sync.OnceValue(func() []rune {
	var rs []rune
	for _, cr := range unicode.CaseRanges {
		for r := rune(cr.Lo); r <= rune(cr.Hi); r++ {
			if unicode.SimpleFold(r) != r {
				// The whole orbit: ß has no case mapping of its own
				// (CaseRanges omits it) but folds with ẞ.
				rs = append(rs, orbit(r)...)
			}
		}
	}
	slices.Sort(rs)
	return slices.Compact(rs)
})

// orbit returns r and the characters simple case folding makes equivalent
// to it.
func orbit(r rune) []rune {
	o := []rune{r}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		o = append(o, f)
	}
	return o
}

var foldExtras sync.Map // class content → closure extras, rendered

// closureExtras returns, as the inside of a character class, the
// characters outside the class [content] that case folding makes
// equivalent to a character inside it.
func closureExtras(content string) string {
	if v, ok := foldExtras.Load(content); ok {
		return v.(string)
	}
	re, err := regexp2.Compile(`\A[`+content+`]\z`, regexp2.None)
	if err != nil {
		return "" // the whole pattern fails to compile with the same error
	}
	in := func(r rune) bool {
		ok, err := re.MatchString(string(r))
		return err == nil && ok
	}
	var extra []runeRange
	for _, c := range caseRunes() {
		if in(c) {
			continue
		}
		for _, f := range orbit(c)[1:] {
			if in(f) {
				extra = append(extra, runeRange{c, c})
				break
			}
		}
	}
	s := render(normalize(extra))
	foldExtras.Store(content, s)
	return s
}
