package pwpolicy

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/fvescrow/fvescrow/fde/passcode/icuregex"
)

// MaxPredicateLength bounds a policyContent string in bytes.
const MaxPredicateLength = 4096

// maxNesting bounds parentheses and operator nesting.
const maxNesting = 64

// Constants a predicate may use besides keywords and parameters. Apple's
// pwpolicy(8) example uses DAYS_TO_SECONDS; the others follow its pattern.
var constants = map[string]float64{
	"DAYS_TO_SECONDS":    86400,
	"HOURS_TO_SECONDS":   3600,
	"MINUTES_TO_SECONDS": 60,
}

var (
	// ErrPredicate: policyContent is not a predicate this package can parse.
	ErrPredicate = errors.New("invalid policy predicate")
	// ErrMissing: the predicate needs an attribute nobody supplied.
	ErrMissing = errors.New("attribute not available")
	// ErrEval: the predicate cannot be evaluated (wrong types, division by
	// zero, a regular expression that cannot be used).
	ErrEval = errors.New("predicate cannot be evaluated")
)

// SyntaxError locates a problem in a predicate. Predicates are policy text,
// not secrets; no error of this package contains a password.
type SyntaxError struct {
	Offset int
	Msg    string
	Err    error // wrapped cause, e.g. an icuregex error
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%v at offset %d: %s", ErrPredicate, e.Offset, e.Msg)
}

func (e *SyntaxError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrPredicate, e.Err}
	}
	return []error{ErrPredicate}
}

// MissingError names the attribute an evaluation lacked.
type MissingError struct{ Name string }

func (e *MissingError) Error() string { return fmt.Sprintf("%v: %s", ErrMissing, e.Name) }
func (e *MissingError) Unwrap() error { return ErrMissing }

// Kind is the type of a Value.
type Kind uint8

const (
	KindNumber Kind = iota + 1
	KindString
	KindList
)

// Value is what an attribute or expression evaluates to. Dates are numbers
// of seconds since the Unix epoch (NSDate comparisons and arithmetic alike).
type Value struct {
	kind Kind
	num  float64
	str  string
	list []Value
}

// Number makes a numeric Value.
func Number(f float64) Value { return Value{kind: KindNumber, num: f} }

// String makes a string Value.
func String(s string) Value { return Value{kind: KindString, str: s} }

// List makes a list Value (for IN).
func List(v ...Value) Value { return Value{kind: KindList, list: v} }

// Kind returns the Value's type.
func (v Value) Kind() Kind { return v.kind }

// Num returns the number of a KindNumber Value.
func (v Value) Num() float64 { return v.num }

// Str returns the text of a KindString Value.
func (v Value) Str() string { return v.str }

// Env supplies attribute values to an evaluation.
type Env interface {
	Lookup(name string) (Value, bool)
}

// MapEnv is an Env over a map.
type MapEnv map[string]Value

// Lookup implements Env.
func (m MapEnv) Lookup(name string) (Value, bool) { v, ok := m[name]; return v, ok }

// Predicate is a parsed policyContent string.
type Predicate struct {
	src  string
	root *expr
}

// String returns the predicate's source text.
func (p *Predicate) String() string { return p.src }

type exprKind uint8

const (
	eNum exprKind = iota
	eStr
	eIdent
	eList
	eArith // op + - * /
	eNeg
	eCmp // op ==, !=, <, <=, >, >=, MATCHES, LIKE, BEGINSWITH, ENDSWITH, CONTAINS, IN
	eAnd
	eOr
	eNot
	eConst // TRUEPREDICATE / FALSEPREDICATE: b
)

type expr struct {
	kind  exprKind
	op    string
	num   float64
	str   string
	b     bool
	l, r  *expr
	list  []*expr
	agg   string // ANY, ALL, NONE, SOME before a comparison
	fold  bool   // [c]
	pos   int
	reMu  sync.Mutex
	reSrc string
	re    *icuregex.Regexp
}

func (e *expr) isPred() bool {
	switch e.kind {
	case eCmp, eAnd, eOr, eNot, eConst:
		return true
	}
	return false
}

// ParsePredicate parses an NSPredicate subset large enough for account
// policies: comparisons (== = != <> < <= =< > >= =>), arithmetic (+ - * /),
// AND/&&, OR/||, NOT/!, parentheses, MATCHES (ICU, full string), LIKE,
// BEGINSWITH, ENDSWITH, CONTAINS (each with an optional [c]), IN with the
// aggregates ANY, ALL, NONE and SOME, TRUEPREDICATE, FALSEPREDICATE,
// numbers, quoted strings and identifiers (keywords, parameters and the
// constants DAYS_TO_SECONDS, HOURS_TO_SECONDS, MINUTES_TO_SECONDS).
func ParsePredicate(s string) (*Predicate, error) {
	if len(s) > MaxPredicateLength {
		return nil, &SyntaxError{Offset: MaxPredicateLength, Msg: fmt.Sprintf("longer than %d bytes", MaxPredicateLength)}
	}
	if !utf8.ValidString(s) {
		return nil, &SyntaxError{Msg: "not valid UTF-8"}
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := &predParser{toks: toks}
	root, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, &SyntaxError{Offset: t.pos, Msg: fmt.Sprintf("unexpected %q", t.text)}
	}
	if !root.isPred() {
		return nil, &SyntaxError{Offset: 0, Msg: "an expression, not a predicate (no comparison)"}
	}
	return &Predicate{src: s, root: root}, nil
}

// Identifiers returns the identifiers the predicate refers to, sorted,
// constants excluded.
func (p *Predicate) Identifiers() []string {
	seen := map[string]bool{}
	var walk func(e *expr)
	walk = func(e *expr) {
		if e == nil {
			return
		}
		if e.kind == eIdent {
			if _, c := constants[e.str]; !c {
				seen[e.str] = true
			}
		}
		walk(e.l)
		walk(e.r)
		for _, x := range e.list {
			walk(x)
		}
	}
	walk(p.root)
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// --- lexer ---

type tokKind uint8

const (
	tEOF tokKind = iota
	tNum
	tStr
	tIdent
	tOp
)

type token struct {
	kind tokKind
	text string // identifier, operator (upper-cased keyword operators) or raw text
	str  string // decoded string literal
	num  float64
	pos  int
}

var keywordOps = map[string]string{
	"AND": "AND", "OR": "OR", "NOT": "NOT", "MATCHES": "MATCHES", "LIKE": "LIKE",
	"BEGINSWITH": "BEGINSWITH", "ENDSWITH": "ENDSWITH", "CONTAINS": "CONTAINS", "IN": "IN",
	"ANY": "ANY", "ALL": "ALL", "NONE": "NONE", "SOME": "SOME",
	"TRUEPREDICATE": "TRUEPREDICATE", "FALSEPREDICATE": "FALSEPREDICATE",
	"TRUE": "TRUE", "FALSE": "FALSE", "YES": "YES", "NO": "NO",
}

func lex(s string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c >= '0' && c <= '9' || (c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			j := i
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
				j++
			}
			if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
				k := j + 1
				if k < len(s) && (s[k] == '+' || s[k] == '-') {
					k++
				}
				if k < len(s) && s[k] >= '0' && s[k] <= '9' {
					for k < len(s) && s[k] >= '0' && s[k] <= '9' {
						k++
					}
					j = k
				}
			}
			f, err := strconv.ParseFloat(s[i:j], 64)
			if err != nil || math.IsInf(f, 0) {
				return nil, &SyntaxError{Offset: i, Msg: fmt.Sprintf("bad number %q", s[i:j])}
			}
			toks = append(toks, token{kind: tNum, text: s[i:j], num: f, pos: i})
			i = j
		case c == '\'' || c == '"':
			str, n, err := lexString(s[i:])
			if err != nil {
				return nil, &SyntaxError{Offset: i, Msg: err.Error()}
			}
			toks = append(toks, token{kind: tStr, text: s[i : i+n], str: str, pos: i})
			i += n
		case c == '_' || c == '$' || c == '#' || c == '@' || c < utf8.RuneSelf && unicode.IsLetter(rune(c)):
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] >= '0' && s[j] <= '9' || s[j] < utf8.RuneSelf && unicode.IsLetter(rune(s[j]))) {
				j++
			}
			word := s[i:j]
			if c == '$' || c == '@' || c == '#' {
				return nil, &SyntaxError{Offset: i, Msg: fmt.Sprintf("%q: variables, key paths and reserved-word escapes are not supported", word)}
			}
			if op, ok := keywordOps[strings.ToUpper(word)]; ok {
				toks = append(toks, token{kind: tOp, text: op, pos: i})
			} else {
				toks = append(toks, token{kind: tIdent, text: word, pos: i})
			}
			i = j
		default:
			op, raw := "", 0
			for _, o := range []string{"==", "!=", "<>", "<=", "=<", ">=", "=>", "&&", "||", "=", "<", ">", "!", "+", "-", "*", "/", "(", ")", "[", "]", "{", "}", ","} {
				if strings.HasPrefix(s[i:], o) {
					op, raw = o, len(o)
					break
				}
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(s[i:])
				return nil, &SyntaxError{Offset: i, Msg: fmt.Sprintf("unexpected character %q", r)}
			}
			switch op {
			case "=":
				op = "=="
			case "<>":
				op = "!="
			case "=<":
				op = "<="
			case "=>":
				op = ">="
			case "&&":
				op = "AND"
			case "||":
				op = "OR"
			case "!":
				op = "NOT"
			}
			toks = append(toks, token{kind: tOp, text: op, pos: i})
			i += raw
		}
	}
	return append(toks, token{kind: tEOF, pos: len(s)}), nil
}

// lexString decodes a quoted string. Backslash escapes \\ \' \" \n \t \r
// are decoded; any other backslash is kept with its character, so a regular
// expression such as '\d' reads as written.
func lexString(s string) (string, int, error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q:
			return b.String(), i + 1, nil
		case c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case '\\', '\'', '"':
				b.WriteByte(s[i])
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			default:
				b.WriteByte('\\')
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, errors.New("unterminated string")
}

// QuoteString quotes s as a predicate string literal that ParsePredicate
// (and NSPredicate) read back as s.
func QuoteString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\t", `\t`, "\r", `\r`)
	return "'" + r.Replace(s) + "'"
}

// --- parser ---

type predParser struct {
	toks  []token
	i     int
	depth int
}

func (p *predParser) peek() token { return p.toks[p.i] }
func (p *predParser) take() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}
func (p *predParser) isOp(ops ...string) bool {
	t := p.peek()
	if t.kind != tOp {
		return false
	}
	for _, o := range ops {
		if t.text == o {
			return true
		}
	}
	return false
}

func (p *predParser) enter(pos int) error {
	p.depth++
	if p.depth > maxNesting {
		return &SyntaxError{Offset: pos, Msg: fmt.Sprintf("nested deeper than %d", maxNesting)}
	}
	return nil
}

func needPred(e *expr, what string) error {
	if !e.isPred() {
		return &SyntaxError{Offset: e.pos, Msg: what + " needs a predicate (a comparison), not a value"}
	}
	return nil
}

func needValue(e *expr) error {
	if e.isPred() {
		return &SyntaxError{Offset: e.pos, Msg: "a predicate where a value is expected"}
	}
	return nil
}

func (p *predParser) parseOr() (*expr, error) {
	if err := p.enter(p.peek().pos); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	l, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.isOp("OR") {
		t := p.take()
		r, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		if err := errors.Join(needPred(l, "OR"), needPred(r, "OR")); err != nil {
			return nil, firstErr(err)
		}
		l = &expr{kind: eOr, l: l, r: r, pos: t.pos}
	}
	return l, nil
}

func firstErr(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()[0]
	}
	return err
}

func (p *predParser) parseAnd() (*expr, error) {
	l, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	for p.isOp("AND") {
		t := p.take()
		r, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		if err := errors.Join(needPred(l, "AND"), needPred(r, "AND")); err != nil {
			return nil, firstErr(err)
		}
		l = &expr{kind: eAnd, l: l, r: r, pos: t.pos}
	}
	return l, nil
}

func (p *predParser) parseNot() (*expr, error) {
	if p.isOp("NOT") {
		t := p.take()
		if err := p.enter(t.pos); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		x, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		if err := needPred(x, "NOT"); err != nil {
			return nil, err
		}
		return &expr{kind: eNot, l: x, pos: t.pos}, nil
	}
	return p.parseCmp()
}

var cmpOps = []string{"==", "!=", "<", "<=", ">", ">=", "MATCHES", "LIKE", "BEGINSWITH", "ENDSWITH", "CONTAINS", "IN"}

func (p *predParser) parseCmp() (*expr, error) {
	agg := ""
	if p.isOp("ANY", "ALL", "NONE", "SOME") {
		agg = p.take().text
	}
	l, err := p.parseAdd()
	if err != nil {
		return nil, err
	}
	if !p.isOp(cmpOps...) {
		if agg != "" {
			return nil, &SyntaxError{Offset: p.peek().pos, Msg: agg + " needs a comparison"}
		}
		return l, nil
	}
	t := p.take()
	e := &expr{kind: eCmp, op: t.text, agg: agg, pos: t.pos}
	if p.isOp("[") {
		p.take()
		o := p.take()
		if o.kind != tIdent || !p.isOp("]") {
			return nil, &SyntaxError{Offset: o.pos, Msg: "bad comparison options, want [c]"}
		}
		p.take()
		for _, c := range o.text {
			switch c {
			case 'c':
				e.fold = true
			case 'd', 'n':
				// Diacritic-insensitive and normalized comparisons are not
				// implemented; refusing beats evaluating differently.
				return nil, &SyntaxError{Offset: o.pos, Msg: fmt.Sprintf("comparison option %q is not supported", c)}
			default:
				return nil, &SyntaxError{Offset: o.pos, Msg: fmt.Sprintf("unknown comparison option %q", c)}
			}
		}
	}
	r, err := p.parseAdd()
	if err != nil {
		return nil, err
	}
	if err := needValue(l); err != nil {
		return nil, err
	}
	if err := needValue(r); err != nil {
		return nil, err
	}
	e.l, e.r = l, r
	if e.op == "MATCHES" && r.kind == eStr {
		// An invalid expression is a syntax error; one this engine cannot
		// evaluate is reported when the policy is evaluated.
		if _, err := e.regex(r.str); err != nil && !errors.Is(err, icuregex.ErrUnsupported) {
			return nil, &SyntaxError{Offset: r.pos, Msg: "MATCHES: " + err.Error(), Err: err}
		}
	}
	if p.isOp(cmpOps...) {
		return nil, &SyntaxError{Offset: p.peek().pos, Msg: "comparisons do not chain; use AND"}
	}
	return e, nil
}

func (p *predParser) parseAdd() (*expr, error) {
	l, err := p.parseMul()
	if err != nil {
		return nil, err
	}
	for p.isOp("+", "-") {
		t := p.take()
		r, err := p.parseMul()
		if err != nil {
			return nil, err
		}
		if err := errors.Join(needValue(l), needValue(r)); err != nil {
			return nil, firstErr(err)
		}
		l = &expr{kind: eArith, op: t.text, l: l, r: r, pos: t.pos}
	}
	return l, nil
}

func (p *predParser) parseMul() (*expr, error) {
	l, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	for p.isOp("*", "/") {
		t := p.take()
		r, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		if err := errors.Join(needValue(l), needValue(r)); err != nil {
			return nil, firstErr(err)
		}
		l = &expr{kind: eArith, op: t.text, l: l, r: r, pos: t.pos}
	}
	return l, nil
}

func (p *predParser) parseUnary() (*expr, error) {
	if p.isOp("-") {
		t := p.take()
		if err := p.enter(t.pos); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		x, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		if err := needValue(x); err != nil {
			return nil, err
		}
		return &expr{kind: eNeg, l: x, pos: t.pos}, nil
	}
	return p.parsePrimary()
}

func (p *predParser) parsePrimary() (*expr, error) {
	t := p.take()
	switch t.kind {
	case tNum:
		return &expr{kind: eNum, num: t.num, pos: t.pos}, nil
	case tStr:
		return &expr{kind: eStr, str: t.str, pos: t.pos}, nil
	case tIdent:
		return &expr{kind: eIdent, str: t.text, pos: t.pos}, nil
	case tEOF:
		return nil, &SyntaxError{Offset: t.pos, Msg: "unexpected end of predicate"}
	}
	switch t.text {
	case "TRUEPREDICATE", "FALSEPREDICATE":
		return &expr{kind: eConst, b: t.text == "TRUEPREDICATE", pos: t.pos}, nil
	case "TRUE", "YES":
		return &expr{kind: eNum, num: 1, pos: t.pos}, nil
	case "FALSE", "NO":
		return &expr{kind: eNum, num: 0, pos: t.pos}, nil
	case "(":
		x, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if !p.isOp(")") {
			return nil, &SyntaxError{Offset: p.peek().pos, Msg: "missing )"}
		}
		p.take()
		return x, nil
	case "{":
		e := &expr{kind: eList, pos: t.pos}
		for !p.isOp("}") {
			if len(e.list) > 0 {
				if !p.isOp(",") {
					return nil, &SyntaxError{Offset: p.peek().pos, Msg: "want , or } in list"}
				}
				p.take()
			}
			x, err := p.parseAdd()
			if err != nil {
				return nil, err
			}
			e.list = append(e.list, x)
		}
		p.take()
		return e, nil
	}
	return nil, &SyntaxError{Offset: t.pos, Msg: fmt.Sprintf("unexpected %q", t.text)}
}

// --- evaluation ---

// Eval evaluates the predicate. A *MissingError means an attribute was not
// available: the outcome is unknown, not false.
func (p *Predicate) Eval(env Env) (bool, error) {
	return evalPred(p.root, env)
}

func evalPred(e *expr, env Env) (bool, error) {
	switch e.kind {
	case eConst:
		return e.b, nil
	case eNot:
		b, err := evalPred(e.l, env)
		return !b, err
	case eAnd, eOr:
		// Three-valued: a side whose attribute is missing is unknown, and
		// the result is unknown only if the known side does not decide it.
		l, errL := evalPred(e.l, env)
		r, errR := evalPred(e.r, env)
		for _, err := range []error{errL, errR} {
			if err != nil && !errors.Is(err, ErrMissing) {
				return false, err
			}
		}
		decides := e.kind == eOr // true decides OR, false decides AND
		if (errL == nil && l == decides) || (errR == nil && r == decides) {
			return decides, nil
		}
		if errL != nil {
			return false, errL
		}
		if errR != nil {
			return false, errR
		}
		return !decides, nil
	case eCmp:
		return evalCmp(e, env)
	}
	return false, fmt.Errorf("%w: not a predicate", ErrEval)
}

func evalValue(e *expr, env Env) (Value, error) {
	switch e.kind {
	case eNum:
		return Number(e.num), nil
	case eStr:
		return String(e.str), nil
	case eIdent:
		if c, ok := constants[e.str]; ok {
			return Number(c), nil
		}
		if env != nil {
			if v, ok := env.Lookup(e.str); ok {
				return v, nil
			}
		}
		return Value{}, &MissingError{Name: e.str}
	case eList:
		out := make([]Value, 0, len(e.list))
		for _, x := range e.list {
			v, err := evalValue(x, env)
			if err != nil {
				return Value{}, err
			}
			out = append(out, v)
		}
		return List(out...), nil
	case eNeg:
		v, err := evalValue(e.l, env)
		if err != nil {
			return Value{}, err
		}
		if v.kind != KindNumber {
			return Value{}, fmt.Errorf("%w: minus applied to a %s", ErrEval, v.kind)
		}
		return Number(-v.num), nil
	case eArith:
		l, errL := evalValue(e.l, env)
		r, errR := evalValue(e.r, env)
		if err := errors.Join(errL, errR); err != nil {
			return Value{}, firstErr(err)
		}
		if l.kind != KindNumber || r.kind != KindNumber {
			return Value{}, fmt.Errorf("%w: %s applied to %s and %s", ErrEval, e.op, l.kind, r.kind)
		}
		switch e.op {
		case "+":
			return Number(l.num + r.num), nil
		case "-":
			return Number(l.num - r.num), nil
		case "*":
			return Number(l.num * r.num), nil
		case "/":
			if r.num == 0 {
				return Value{}, fmt.Errorf("%w: division by zero", ErrEval)
			}
			return Number(l.num / r.num), nil
		}
	}
	return Value{}, fmt.Errorf("%w: a predicate where a value is expected", ErrEval)
}

func (k Kind) String() string {
	switch k {
	case KindNumber:
		return "number"
	case KindString:
		return "string"
	case KindList:
		return "list"
	}
	return "nothing"
}

func evalCmp(e *expr, env Env) (bool, error) {
	l, errL := evalValue(e.l, env)
	r, errR := evalValue(e.r, env)
	if err := errors.Join(errL, errR); err != nil {
		return false, firstErr(err)
	}
	if e.agg != "" || (l.kind == KindList && e.op != "IN") {
		if l.kind != KindList {
			return false, fmt.Errorf("%w: %s needs a list on the left", ErrEval, e.agg)
		}
		var hits int
		for _, x := range l.list {
			ok, err := compare(e, x, r)
			if err != nil {
				return false, err
			}
			if ok {
				hits++
			}
		}
		switch e.agg {
		case "ALL":
			return hits == len(l.list), nil
		case "NONE":
			return hits == 0, nil
		}
		return hits > 0, nil
	}
	if l.kind == KindList && e.op == "IN" {
		for _, x := range l.list {
			ok, err := compare(e, x, r)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	}
	return compare(e, l, r)
}

func compare(e *expr, l, r Value) (bool, error) {
	if e.op == "IN" {
		switch r.kind {
		case KindList:
			for _, x := range r.list {
				if equal(l, x, e.fold) {
					return true, nil
				}
			}
			return false, nil
		case KindString:
			if l.kind != KindString {
				return false, fmt.Errorf("%w: IN a string needs a string", ErrEval)
			}
			return strings.Contains(fold(r.str, e.fold), fold(l.str, e.fold)), nil
		}
		return false, fmt.Errorf("%w: IN needs a list or string on the right", ErrEval)
	}
	if l.kind == KindNumber && r.kind == KindNumber {
		switch e.op {
		case "==":
			return l.num == r.num, nil
		case "!=":
			return l.num != r.num, nil
		case "<":
			return l.num < r.num, nil
		case "<=":
			return l.num <= r.num, nil
		case ">":
			return l.num > r.num, nil
		case ">=":
			return l.num >= r.num, nil
		}
		return false, fmt.Errorf("%w: %s compares strings, got numbers", ErrEval, e.op)
	}
	if l.kind != KindString || r.kind != KindString {
		return false, fmt.Errorf("%w: %s between a %s and a %s", ErrEval, e.op, l.kind, r.kind)
	}
	a, b := fold(l.str, e.fold), fold(r.str, e.fold)
	switch e.op {
	case "==":
		return a == b, nil
	case "!=":
		return a != b, nil
	case "<":
		return a < b, nil
	case "<=":
		return a <= b, nil
	case ">":
		return a > b, nil
	case ">=":
		return a >= b, nil
	case "BEGINSWITH":
		return strings.HasPrefix(a, b), nil
	case "ENDSWITH":
		return strings.HasSuffix(a, b), nil
	case "CONTAINS":
		return strings.Contains(a, b), nil
	case "LIKE":
		re, err := e.regex(likeToICU(r.str))
		if err != nil {
			return false, fmt.Errorf("%w: LIKE: %w", ErrEval, err)
		}
		return matchFull(re, l.str)
	case "MATCHES":
		re, err := e.regex(r.str)
		if err != nil {
			return false, fmt.Errorf("%w: MATCHES: %w", ErrEval, err)
		}
		return matchFull(re, l.str)
	}
	return false, fmt.Errorf("%w: unknown operator %s", ErrEval, e.op)
}

func matchFull(re *icuregex.Regexp, s string) (bool, error) {
	ok, err := re.MatchString(s)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrEval, err)
	}
	return ok, nil
}

func equal(a, b Value, f bool) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case KindNumber:
		return a.num == b.num
	case KindString:
		return fold(a.str, f) == fold(b.str, f)
	}
	return false
}

func fold(s string, f bool) string {
	if f {
		return strings.ToLower(s)
	}
	return s
}

// likeToICU turns a LIKE pattern (* any run, ? one character) into ICU.
func likeToICU(p string) string {
	var b strings.Builder
	b.WriteString(`\Q`)
	for _, r := range p {
		switch r {
		case '*':
			b.WriteString(`\E.*\Q`)
		case '?':
			b.WriteString(`\E.\Q`)
		case '\\':
			b.WriteString(`\E\\\Q`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteString(`\E`)
	return b.String()
}

// regex compiles (and caches, per comparison) the pattern of a MATCHES or
// LIKE comparison; [c] makes it case-insensitive.
func (e *expr) regex(pattern string) (*icuregex.Regexp, error) {
	if e.fold {
		pattern = "(?i)" + pattern
	}
	e.reMu.Lock()
	defer e.reMu.Unlock()
	if e.re != nil && e.reSrc == pattern {
		return e.re, nil
	}
	re, err := icuregex.Compile(pattern)
	if err != nil {
		return nil, err
	}
	e.re, e.reSrc = re, pattern
	return re, nil
}
