package pwpolicy

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
)

// Explanation is one policy in plain language.
type Explanation struct {
	Category   Category
	Identifier string
	Text       string
}

// Explain describes every policy in plain language: the sentences the
// self-service portal shows next to the new-password field.
func (ps *Policies) Explain() []Explanation {
	var out []Explanation
	for _, c := range Categories {
		for i := range ps.In(c) {
			p := &ps.In(c)[i]
			out = append(out, Explanation{Category: c, Identifier: p.Identifier, Text: Explain(c, p)})
		}
	}
	return out
}

// Explain describes one policy. It recognizes the common predicate shapes
// (length, letters, numbers, symbols, repeated and sequential characters,
// history, expiry, lockout) from the predicate itself, so the sentence
// matches what is enforced; then Apple's legacy identifiers; then the
// policy's own policyContentDescription; and otherwise says that a rule
// named by its identifier applies. It never shows a raw regular expression.
func Explain(c Category, p *Policy) string {
	if p.pred == nil {
		if err := p.Compile(); err != nil {
			return generic(c, p.Identifier)
		}
	}
	if t := explainExpr(c, p.pred.root, p.Parameters); t != "" {
		return t
	}
	if t := explainLegacy(p); t != "" {
		return t
	}
	if t := description(p.ContentDescription); t != "" {
		return t
	}
	return generic(c, p.Identifier)
}

func generic(c Category, id string) string {
	switch c {
	case CategoryPasswordChange:
		return fmt.Sprintf("Password must be changed when the rule %q applies.", id)
	case CategoryAuthentication:
		return fmt.Sprintf("Login is allowed only while the rule %q holds.", id)
	}
	return fmt.Sprintf("Password must satisfy the rule %q.", id)
}

func description(d map[string]string) string {
	for _, k := range []string{"en", "en-US", "default"} {
		if s := d[k]; s != "" {
			return s
		}
	}
	for _, k := range sortedKeys(d) {
		if d[k] != "" {
			return d[k]
		}
	}
	return ""
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// constant evaluates e with only the policy's parameters and constants.
func constant(e *expr, params map[string]any) (float64, bool) {
	v, err := evalValue(e, checkEnv{params: params})
	if err != nil || v.kind != KindNumber || math.IsNaN(v.num) || math.IsInf(v.num, 0) {
		return 0, false
	}
	return v.num, true
}

func isIdent(e *expr, name string) bool { return e != nil && e.kind == eIdent && e.str == name }

// limit reads "IDENT <= N" or "IDENT < N" (or mirrored) as a maximum.
func limit(e *expr, name string, params map[string]any) (int, bool) {
	if e.kind != eCmp {
		return 0, false
	}
	l, r, op := e.l, e.r, e.op
	if isIdent(r, name) {
		l, r = r, l
		op = map[string]string{">=": "<=", ">": "<", "<=": ">=", "<": ">"}[op]
	}
	if !isIdent(l, name) {
		return 0, false
	}
	n, ok := constant(r, params)
	if !ok || n != math.Trunc(n) {
		return 0, false
	}
	switch op {
	case "<=":
		return int(n), true
	case "<":
		return int(n) - 1, true
	}
	return 0, false
}

func explainExpr(c Category, e *expr, params map[string]any) string {
	switch c {
	case CategoryPasswordContent:
		if e.kind == eCmp && e.op == "MATCHES" && !e.fold && isIdent(e.l, AttrPassword) && e.r.kind == eStr {
			return explainRegex(e.r.str)
		}
		if n, ok := limit(e, AttrConsecutiveCharacters, params); ok {
			return fmt.Sprintf("Password must not repeat the same character more than %s in a row.", plural(n, "time", "times"))
		}
		if n, ok := limit(e, AttrSequentialCharacters, params); ok {
			return fmt.Sprintf("Password must not contain more than %s in ascending or descending order (such as “abc” or “321”).", plural(n, "letter or digit", "letters or digits"))
		}
		if e.kind == eCmp && e.op == "IN" && e.agg == "NONE" && isIdent(e.l, "policyAttributePasswordHashes") && isIdent(e.r, "policyAttributePasswordHistory") {
			if v, ok := params["policyAttributePasswordHistoryDepth"]; ok {
				if n, ok := ParamValue(v); ok && n.kind == KindNumber && n.num >= 1 {
					return fmt.Sprintf("Password must differ from your last %s.", plural(int(n.num), "password", "passwords"))
				}
			}
			return "Password must differ from your previous passwords."
		}
	case CategoryPasswordChange:
		// CurrentTime > LastPasswordChangeTime + interval
		if e.kind == eCmp && e.op == ">" && isIdent(e.l, AttrCurrentTime) && e.r.kind == eArith && e.r.op == "+" && isIdent(e.r.l, AttrLastPasswordChangeTime) {
			if secs, ok := constant(e.r.r, params); ok && secs > 0 {
				return "Password must be changed every " + duration(secs) + "."
			}
		}
	case CategoryAuthentication:
		if n, ok := limit(e, AttrFailedAuthentications, params); ok {
			return fmt.Sprintf("The account is locked after %s.", plural(n+1, "failed login attempt", "failed login attempts"))
		}
		if e.kind == eOr {
			a, b := explainExpr(c, e.l, params), lockoutReset(e.r, params)
			if a == "" {
				a, b = explainExpr(c, e.r, params), lockoutReset(e.l, params)
			}
			if a != "" && b != "" {
				return a[:len(a)-1] + " and unlocks after " + b + "."
			}
		}
	}
	return ""
}

// lockoutReset reads CurrentTime > LastFailedAuthenticationTime + interval.
func lockoutReset(e *expr, params map[string]any) string {
	if e.kind == eCmp && e.op == ">" && isIdent(e.l, AttrCurrentTime) && e.r.kind == eArith && e.r.op == "+" && isIdent(e.r.l, "policyAttributeLastFailedAuthenticationTime") {
		if secs, ok := constant(e.r.r, params); ok && secs > 0 {
			return duration(secs)
		}
	}
	return ""
}

func duration(secs float64) string {
	switch {
	case math.Mod(secs, 86400) == 0:
		return plural(int(secs/86400), "day", "days")
	case math.Mod(secs, 3600) == 0:
		return plural(int(secs/3600), "hour", "hours")
	case math.Mod(secs, 60) == 0:
		return plural(int(secs/60), "minute", "minutes")
	}
	return plural(int(secs), "second", "seconds")
}

var (
	reAtLeast = regexp.MustCompile(`^\^?\.\{(\d+),\}\+?\$?$`)
	reBetween = regexp.MustCompile(`^\^?\.\{(\d+),(\d+)\}\+?\$?$`)
	reComplex = regexp.MustCompile(`^\(\?:\[\\p\{L\}\\p\{N\}\]\*\[\^\\p\{L\}\\p\{N\}\]\)\{(\d+)\}\.\*$`)
)

var regexSentences = map[string]string{}

func init() {
	add := func(text string, res ...string) {
		for _, r := range res {
			regexSentences[r] = text
		}
	}
	add("Password must contain at least one letter.",
		`.*[A-Za-z].*`, `(.*[A-Za-z].*)`, `.*[a-zA-Z].*`, `(.*[a-zA-Z].*)`, `.*\p{L}.*`, `(?=.*\p{L}).*`, `(?=.*[A-Za-z]).*`)
	add("Password must contain at least one number.",
		`.*[0-9].*`, `(.*[0-9].*)`, `.*\d.*`, `.*\p{Nd}.*`, `(?=.*[0-9]).*`, `(?=.*\d).*`)
	add("Password must contain at least one uppercase letter.", `.*[A-Z].*`, `(.*[A-Z].*)`, `.*\p{Lu}.*`)
	add("Password must contain at least one lowercase letter.", `.*[a-z].*`, `(.*[a-z].*)`, `.*\p{Ll}.*`)
	add("Password must contain at least one symbol (a character other than a letter or number).",
		`.*[^A-Za-z0-9].*`, `(.*[^A-Za-z0-9].*)`, `.*[^a-zA-Z0-9].*`, `.*[^\p{L}\p{N}].*`)
}

func explainRegex(re string) string {
	if t, ok := regexSentences[re]; ok {
		return t
	}
	if m := reAtLeast.FindStringSubmatch(re); m != nil {
		n, _ := strconv.Atoi(m[1])
		return fmt.Sprintf("Password must be at least %s long.", plural(n, "character", "characters"))
	}
	if m := reBetween.FindStringSubmatch(re); m != nil {
		lo, _ := strconv.Atoi(m[1])
		hi, _ := strconv.Atoi(m[2])
		if lo == 0 {
			return fmt.Sprintf("Password must be at most %s long.", plural(hi, "character", "characters"))
		}
		return fmt.Sprintf("Password must be between %d and %s long.", lo, plural(hi, "character", "characters"))
	}
	if m := reComplex.FindStringSubmatch(re); m != nil {
		n, _ := strconv.Atoi(m[1])
		return fmt.Sprintf("Password must contain at least %s (characters other than letters and numbers).", plural(n, "symbol", "symbols"))
	}
	return ""
}

// explainLegacy covers Apple's legacy policy identifiers.
func explainLegacy(p *Policy) string {
	num := func(k string) (int, bool) {
		v, ok := ParamValue(p.Parameters[k])
		if !ok || v.kind != KindNumber {
			return 0, false
		}
		return int(v.num), true
	}
	switch p.Identifier {
	case "com.apple.policy.legacy.minChars":
		if n, ok := num("minimumLength"); ok {
			return fmt.Sprintf("Password must be at least %s long.", plural(n, "character", "characters"))
		}
	case "com.apple.policy.legacy.maxChars":
		if n, ok := num("maximumLength"); ok {
			return fmt.Sprintf("Password must be at most %s long.", plural(n, "character", "characters"))
		}
	case "com.apple.policy.legacy.requiresAlpha":
		return "Password must contain at least one letter."
	case "com.apple.policy.legacy.requiresNumeric":
		return "Password must contain at least one number."
	case "com.apple.policy.legacy.requiresMixedCase":
		return "Password must contain both uppercase and lowercase letters."
	case "com.apple.policy.legacy.requiresSymbol":
		return "Password must contain at least one symbol (a character other than a letter or number)."
	}
	return ""
}
