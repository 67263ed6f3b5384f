package icuregex

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

type kind uint8

const (
	kLit     kind = iota // one literal rune
	kSet                 // one character from a set; src is a single regexp2 atom
	kAssert              // zero-width: ^ $ \b \B \A \z \Z \G
	kEmpty               // nothing to match: a flag setting such as (?i), or a comment
	kConcat              // sub in sequence
	kAlt                 // one of sub
	kGroup               // sub[0] inside a group of kind group
	kRepeat              // sub[0] repeated min..max (max -1: unbounded)
	kBackref             // the text of capture group index
)

type groupKind uint8

const (
	gCapture groupKind = iota
	gNonCapture
	gAtomic
	gAhead
	gNegAhead
	gBehind
	gNegBehind
)

var groupOpen = map[groupKind]string{
	gCapture: "(", gNonCapture: "(?:", gAtomic: "(?>",
	gAhead: "(?=", gNegAhead: "(?!", gBehind: "(?<=", gNegBehind: "(?<!",
}

type flags struct{ i, m, s, x, d bool }

type node struct {
	kind  kind
	r     rune
	src   string // kSet, kAssert, kEmpty: the regexp2 text; kGroup: the opening for gNonCapture with flags
	sub   []*node
	min   int
	max   int
	mode  byte // kRepeat: 0 greedy, '?' lazy, '+' possessive
	group groupKind
	index int
	name  string // kBackref by name, resolved after parsing
	off   int
	fold  bool // case-insensitive (kLit, kBackref)

	anchor bool // kAssert: ^ or $, which ICU lets a quantifier follow
	crlf   bool // kSet: (?s). also matches CR LF as one character

	once    *sync.Once // kSet: members computed on first use
	members []rune
}

type parser struct {
	src   string
	pos   int
	fl    flags
	quote bool // inside \Q...\E
	depth int
	ncap  int
	names map[string]int
	refs  []*node
}

func parse(pattern string) (*node, error) {
	p := &parser{src: pattern, names: map[string]int{}}
	n, err := p.parseAlt()
	if err != nil {
		return nil, err
	}
	if !p.eof() {
		return nil, p.errf(ErrSyntax, "unmatched )")
	}
	for _, r := range p.refs {
		if r.name != "" {
			i, ok := p.names[r.name]
			if !ok {
				return nil, &Error{Offset: r.off, Msg: fmt.Sprintf("back reference to undefined group name %q", r.name), Err: ErrSyntax}
			}
			r.index = i
		}
		if r.index > p.ncap {
			return nil, &Error{Offset: r.off, Msg: fmt.Sprintf("back reference \\%d to a group that does not exist", r.index), Err: ErrSyntax}
		}
	}
	return n, nil
}

func (p *parser) errf(err error, format string, a ...any) error {
	return &Error{Offset: p.pos, Msg: fmt.Sprintf(format, a...), Err: err}
}

func (p *parser) eof() bool { return p.pos >= len(p.src) }

func (p *parser) peek() rune {
	if p.eof() {
		return -1
	}
	r, _ := utf8.DecodeRuneInString(p.src[p.pos:])
	return r
}

func (p *parser) peekAt(k int) rune {
	i := p.pos
	for ; k > 0 && i < len(p.src); k-- {
		_, w := utf8.DecodeRuneInString(p.src[i:])
		i += w
	}
	if i >= len(p.src) {
		return -1
	}
	r, _ := utf8.DecodeRuneInString(p.src[i:])
	return r
}

func (p *parser) next() rune {
	if p.eof() {
		return -1
	}
	r, w := utf8.DecodeRuneInString(p.src[p.pos:])
	p.pos += w
	return r
}

func (p *parser) eat(r rune) bool {
	if p.peek() == r {
		p.next()
		return true
	}
	return false
}

// ICU's Pattern_White_Space, skipped in free-spacing mode.
func isPatternSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0x200E, 0x200F, 0x2028, 0x2029:
		return true
	}
	return false
}

func isLineEnd(r rune) bool { return r == '\n' || r == '\r' || r == 0x85 || r == 0x2028 }

// skip drops white space and #comments in free-spacing mode, as ICU does
// everywhere outside \Q...\E, character sets included.
func (p *parser) skip() {
	if !p.fl.x || p.quote {
		return
	}
	for !p.eof() {
		r := p.peek()
		switch {
		case isPatternSpace(r):
			p.next()
		case r == '#':
			for !p.eof() && !isLineEnd(p.peek()) {
				p.next()
			}
		default:
			return
		}
	}
}

func (p *parser) parseAlt() (*node, error) {
	var alts []*node
	for {
		c, err := p.parseConcat()
		if err != nil {
			return nil, err
		}
		alts = append(alts, c)
		p.skip()
		if !p.quote && p.eat('|') {
			continue
		}
		break
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return &node{kind: kAlt, sub: alts}, nil
}

func (p *parser) parseConcat() (*node, error) {
	seq := &node{kind: kConcat}
	for {
		p.skip()
		if p.eof() {
			break
		}
		if !p.quote && (p.peek() == '|' || p.peek() == ')') {
			break
		}
		atom, err := p.parseAtom()
		if err != nil {
			return nil, err
		}
		if atom == nil {
			continue
		}
		p.skipInvisible()
		if !p.quote && isQuantStart(p.peek()) {
			if (atom.kind == kAssert && !atom.anchor) || atom.kind == kEmpty || atom.isLookaround() {
				return nil, p.errf(ErrSyntax, "nothing to repeat")
			}
			if atom, err = p.parseQuant(atom); err != nil {
				return nil, err
			}
			p.skipInvisible()
			if !p.quote && isQuantStart(p.peek()) {
				return nil, p.errf(ErrSyntax, "quantifier follows a quantifier")
			}
		}
		seq.sub = append(seq.sub, atom)
	}
	if len(seq.sub) == 1 {
		return seq.sub[0], nil
	}
	return seq, nil
}

func isQuantStart(r rune) bool { return r == '*' || r == '+' || r == '?' || r == '{' }

// skipInvisible drops what ICU's scanner drops before it looks for a
// quantifier, so that one after them applies to the atom before: white
// space and comments in free-spacing mode, (?#...) comments and empty
// \Q\E quotes ("a(?#c)+" is "a+").
func (p *parser) skipInvisible() {
	for {
		p.skip()
		if p.quote {
			return
		}
		rest := p.src[p.pos:]
		switch {
		case strings.HasPrefix(rest, "(?#"):
			end := strings.IndexByte(rest, ')')
			if end < 0 {
				return // unterminated: parseGroup reports it
			}
			p.pos += end + 1
		case strings.HasPrefix(rest, `\Q\E`):
			p.pos += 4
		default:
			return
		}
	}
}

func (n *node) isLookaround() bool {
	if n.kind != kGroup {
		return false
	}
	switch n.group {
	case gAhead, gNegAhead, gBehind, gNegBehind:
		return true
	}
	return false
}

func (p *parser) parseQuant(atom *node) (*node, error) {
	n := &node{kind: kRepeat, sub: []*node{atom}, off: p.pos}
	switch p.next() {
	case '*':
		n.min, n.max = 0, -1
	case '+':
		n.min, n.max = 1, -1
	case '?':
		n.min, n.max = 0, 1
	case '{':
		lo, err := p.number()
		if err != nil {
			return nil, err
		}
		n.min, n.max = lo, lo
		p.skip()
		if p.eat(',') {
			p.skip()
			if p.peek() == '}' {
				n.max = -1
			} else if hi, err := p.number(); err == nil {
				n.max = hi
			} else {
				return nil, err
			}
		}
		p.skip()
		if !p.eat('}') {
			return nil, p.errf(ErrSyntax, "bad interval: missing }")
		}
		if n.max >= 0 && n.max < n.min {
			return nil, p.errf(ErrSyntax, "bad interval: maximum %d below minimum %d", n.max, n.min)
		}
	}
	switch p.peek() {
	case '?':
		p.next()
		n.mode = '?'
	case '+':
		p.next()
		n.mode = '+'
	}
	return n, nil
}

// icuMaxRepeat is the largest count ICU accepts in {n,m}.
const icuMaxRepeat = 0xFFFFFF

func (p *parser) number() (int, error) {
	p.skip()
	start := p.pos
	for !p.eof() && p.peek() >= '0' && p.peek() <= '9' {
		p.next()
	}
	if p.pos == start {
		return 0, p.errf(ErrSyntax, "bad interval: {n}, {n,} or {n,m} expected")
	}
	v, err := strconv.Atoi(p.src[start:p.pos])
	switch {
	case err != nil || v > icuMaxRepeat:
		p.pos = start
		return 0, p.errf(ErrSyntax, "bad interval: count above %d", icuMaxRepeat)
	case v > maxRepeat:
		p.pos = start
		return 0, p.errf(ErrUnsupported, "repetition count above %d", maxRepeat)
	}
	return v, nil
}

func (p *parser) lit(r rune) *node { return &node{kind: kLit, r: r, fold: p.fl.i} }

func (p *parser) set(src string) *node {
	return &node{kind: kSet, src: src, once: new(sync.Once)}
}

// lineEnds are ICU's line terminators (CR LF also counts as one).
const lineEnds = `\n\x0B\f\r\x85\u2028\u2029`

// endAnchor is ICU's $ outside multi-line mode, and \Z: the end of the
// input, or before a line terminator that ends it (not between CR and LF).
const endAnchor = `(?:\z|(?=[\x0B\f\r\x85\u2028\u2029]\z)|(?<!\r)(?=\n\z)|(?=\r\n\z))`

// anchor translates ^ and $ with ICU's line terminators under the current
// flags: m (multi-line) and d (UNIX_LINES: only LF ends a line).
func (p *parser) anchor(r rune) *node {
	var src string
	switch {
	case r == '^' && !p.fl.m:
		src = `^`
	case r == '^' && p.fl.d:
		src = `(?:\A|(?<=\n)(?!\z))`
	case r == '^': // after any line terminator, but not at the end of the input
		src = `(?:\A|(?<=[` + lineEnds + `])(?!\z))`
	case !p.fl.m && p.fl.d:
		src = `(?=\n?\z)`
	case !p.fl.m:
		src = endAnchor
	case p.fl.d:
		src = `(?=\n|\z)`
	default: // before any line terminator, but not between CR and LF
		src = `(?:\z|(?=[\x0B\f\r\x85\u2028\u2029])|(?<!\r)(?=\n))`
	}
	return &node{kind: kAssert, src: src, anchor: true}
}

// class returns the set node for a character class: pos is the inside of
// a regexp2 class (characters, ranges, escapes, \p{...}), negProps the
// names of \P{...} items in it, neg whether the whole set is negated.
//
// Under (?i) the set is closed under simple case folding as ICU closes it:
// each item's closure is taken before that item, or the whole set, is
// negated ((?i)[^a] matches neither a nor A; (?i)\P{Lu} matches no cased
// letter). regexp2's own IgnoreCase is never used; it lower-cases instead.
func (p *parser) class(pos string, negProps []string, neg bool) *node {
	if !p.fl.i {
		var b strings.Builder
		b.WriteByte('[')
		if neg {
			b.WriteByte('^')
		}
		b.WriteString(pos)
		for _, name := range negProps {
			b.WriteString(`\P{` + name + `}`)
		}
		b.WriteByte(']')
		return p.set(b.String())
	}
	posCls := ""
	if pos != "" {
		posCls = `[` + pos + closureExtras(pos) + `]`
	}
	if len(negProps) == 0 {
		if neg {
			return p.set(`[^` + posCls[1:])
		}
		return p.set(posCls)
	}
	// Negated items cannot be combined inside one regexp2 class once
	// closed: test the next character against each, then consume it.
	var b strings.Builder
	b.WriteString("(?:")
	if neg {
		if posCls != "" {
			b.WriteString("(?!" + posCls + ")")
		}
		for _, name := range negProps {
			b.WriteString(`(?=[\p{` + name + `}` + closureExtras(`\p{`+name+`}`) + `])`)
		}
	} else {
		var alts []string
		if posCls != "" {
			alts = append(alts, "(?="+posCls+")")
		}
		for _, name := range negProps {
			alts = append(alts, `(?![\p{`+name+`}`+closureExtras(`\p{`+name+`}`)+`])`)
		}
		b.WriteString("(?:" + strings.Join(alts, "|") + ")")
	}
	b.WriteString(`(?s:.))`)
	return p.set(b.String())
}

// parseAtom returns nil for things that match nothing and take no
// quantifier: comments, \Q, \E, flag settings are returned as kEmpty.
func (p *parser) parseAtom() (*node, error) {
	if p.quote {
		if p.peek() == '\\' && p.peekAt(1) == 'E' {
			p.next()
			p.next()
			p.quote = false
			return nil, nil
		}
		n := p.lit(p.next())
		if p.peek() == '\\' && p.peekAt(1) == 'E' { // a quantifier after \E applies to this character
			p.next()
			p.next()
			p.quote = false
		}
		return n, nil
	}
	start := p.pos
	r := p.next()
	switch r {
	case '(':
		return p.parseGroup(start)
	case '[':
		return p.parseClass()
	case '.':
		switch {
		case p.fl.s:
			// ICU's . takes CR LF whole and never gives back the LF; written
			// without an atomic group so that it reads the same backwards
			// (in a look-behind).
			n := p.set(`(?:\r\n|\r(?!\n)|[^\r])`)
			n.crlf = true
			return n, nil
		case p.fl.d:
			return p.set(`[^\n]`), nil
		}
		return p.set(`[^` + lineEnds + `]`), nil
	case '^', '$':
		return p.anchor(r), nil
	case '\\':
		return p.parseEscape()
	case '*', '+', '?', '{':
		p.pos = start
		return nil, p.errf(ErrSyntax, "nothing to repeat before %q", r)
	case '}':
		p.pos = start
		return nil, p.errf(ErrSyntax, "unescaped }")
	}
	return p.lit(r), nil
}

func (p *parser) parseGroup(start int) (*node, error) {
	if p.depth >= maxDepth {
		return nil, p.errf(ErrUnsupported, "groups nested deeper than %d", maxDepth)
	}
	g := &node{kind: kGroup, group: gCapture, off: start}
	saved := p.fl
	if p.eat('?') {
		switch r := p.next(); r {
		case ':':
			g.group = gNonCapture
		case '>':
			g.group = gAtomic
		case '=':
			g.group = gAhead
		case '!':
			g.group = gNegAhead
		case '#':
			for !p.eof() && p.peek() != ')' {
				p.next()
			}
			if !p.eat(')') {
				return nil, p.errf(ErrSyntax, "unterminated (?# comment")
			}
			return &node{kind: kEmpty}, nil
		case '<':
			switch p.peek() {
			case '=':
				p.next()
				g.group = gBehind
			case '!':
				p.next()
				g.group = gNegBehind
			default:
				name := p.groupName()
				if name == "" || !p.eat('>') {
					return nil, p.errf(ErrSyntax, "bad capture group name")
				}
				if _, dup := p.names[name]; dup {
					return nil, p.errf(ErrSyntax, "duplicate capture group name %q", name)
				}
				p.ncap++
				g.index = p.ncap
				p.names[name] = g.index
			}
		default:
			p.pos -= utf8.RuneLen(r)
			standalone, err := p.flagGroup()
			if err != nil {
				return nil, err
			}
			if standalone {
				return &node{kind: kEmpty}, nil
			}
			g.group = gNonCapture
		}
	} else {
		p.ncap++
		g.index = p.ncap
	}
	p.depth++
	body, err := p.parseAlt()
	p.depth--
	if err != nil {
		return nil, err
	}
	if !p.eat(')') {
		return nil, p.errf(ErrSyntax, "missing )")
	}
	p.fl = saved
	if g.group == gBehind || g.group == gNegBehind {
		if body.behindLen() < 0 {
			return nil, &Error{Offset: start, Msg: "look-behind pattern must have a bounded maximum length", Err: ErrSyntax}
		}
		// ICU tries the look-behind forwards from each possible start;
		// regexp2 matches it backwards. The two agree except where a
		// match cannot be given back.
		if body.hasAtomic() {
			return nil, &Error{Offset: start, Msg: "possessive quantifier or atomic group inside a look-behind", Err: ErrUnsupported}
		}
	}
	g.sub = []*node{body}
	return g, nil
}

func (p *parser) groupName() string {
	start := p.pos
	for !p.eof() {
		r := p.peek()
		isLetter := (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !isLetter && !(p.pos > start && r >= '0' && r <= '9') {
			break
		}
		p.next()
	}
	return p.src[start:p.pos]
}

// flagGroup parses the flags of (?imsxdu-imsxdu) or (?imsxdu-imsxdu: after
// "(?". The parser applies every flag itself (case folding, line
// terminators, dot-all, free spacing), so nothing is passed to regexp2.
// u (Unicode case) is accepted and ignored, as ICU does.
func (p *parser) flagGroup() (standalone bool, err error) {
	on := true
	n := 0
	for ; ; n++ {
		r := p.next()
		switch r {
		case 'i':
			p.fl.i = on
		case 'm':
			p.fl.m = on
		case 's':
			p.fl.s = on
		case 'x':
			p.fl.x = on
		case 'd':
			p.fl.d = on
		case 'u':
		case '-':
			if !on {
				return false, p.errf(ErrSyntax, "bad flag group")
			}
			on = false
		case 'w':
			return false, p.errf(ErrUnsupported, "flag w (Unicode word boundaries)")
		case ')', ':':
			if n == 0 && r == ')' {
				return false, p.errf(ErrSyntax, "bad group: (?)")
			}
			return r == ')', nil
		default:
			return false, p.errf(ErrSyntax, "bad group: (?%c", r)
		}
	}
}

// parseEscape handles a backslash outside a set.
func (p *parser) parseEscape() (*node, error) {
	start := p.pos - 1
	if p.eof() {
		return nil, p.errf(ErrSyntax, "trailing backslash")
	}
	r := p.next()
	switch r {
	case 'Q':
		p.quote = true
		return nil, nil
	case 'd', 'D':
		return p.class(`\d`, nil, r == 'D'), nil
	case 's', 'S':
		return p.class(`\s`, nil, r == 'S'), nil
	case 'w', 'W':
		return p.class(icuClassesOnce().word, nil, r == 'W'), nil
	case 'h', 'H':
		return p.class(`\t\p{Zs}`, nil, r == 'H'), nil
	case 'v', 'V':
		return p.class(lineEnds, nil, r == 'V'), nil
	case 'p', 'P':
		name, neg, err := p.property(r)
		if err != nil {
			return nil, err
		}
		return p.class(`\p{`+name+`}`, nil, neg), nil
	case 'b':
		return &node{kind: kAssert, src: `(?:` + icuClassesOnce().boundary + `)`}, nil
	case 'B':
		return &node{kind: kAssert, src: `(?!` + icuClassesOnce().boundary + `)`}, nil
	case 'Z':
		return &node{kind: kAssert, src: endAnchor}, nil
	case 'A', 'G', 'z':
		return &node{kind: kAssert, src: `\` + string(r)}, nil
	case 'X', 'R', 'N':
		p.pos = start
		return nil, p.errf(ErrUnsupported, `\%c`, r)
	case 'k':
		if !p.eat('<') {
			return nil, p.errf(ErrSyntax, `\k must be followed by <name>`)
		}
		name := p.groupName()
		if name == "" || !p.eat('>') {
			return nil, p.errf(ErrSyntax, `bad \k<name>`)
		}
		n := &node{kind: kBackref, name: name, off: start, fold: p.fl.i}
		p.refs = append(p.refs, n)
		return n, nil
	}
	if r >= '1' && r <= '9' {
		// As ICU: take more digits only while the number is below the
		// count of groups opened so far (so (a)\10 is \1 then "0").
		v := int(r - '0')
		for p.peek() >= '0' && p.peek() <= '9' && v < p.ncap && v < 1000 {
			v = v*10 + int(p.next()-'0')
		}
		n := &node{kind: kBackref, index: v, off: start, fold: p.fl.i}
		p.refs = append(p.refs, n)
		return n, nil
	}
	c, err := p.escapedChar(r)
	if err != nil {
		return nil, err
	}
	return p.lit(c), nil
}

// escapedChar decodes an escape that stands for one character; r follows
// the backslash. Unknown escapes stand for the character itself, as in ICU.
func (p *parser) escapedChar(r rune) (rune, error) {
	switch r {
	case 'a':
		return 7, nil
	case 'e':
		return 0x1B, nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'c':
		if p.eof() { // as ICU: a final \c is the letter
			return 'c', nil
		}
		return p.next() & 0x1F, nil
	case '0':
		v, k := 0, 0
		for ; k < 3 && p.peek() >= '0' && p.peek() <= '7'; k++ {
			nv := v*8 + int(p.peek()-'0')
			if nv > 0xFF {
				break
			}
			v = nv
			p.next()
		}
		if k == 0 {
			return 0, p.errf(ErrSyntax, `\0 must be followed by octal digits`)
		}
		return rune(v), nil
	case 'x':
		if p.eat('{') {
			return p.hexUntilBrace()
		}
		return p.hex(1, 2)
	case 'u':
		return p.hex(4, 4)
	case 'U':
		return p.hex(8, 8)
	}
	return r, nil
}

func hexVal(r rune) int {
	switch {
	case r >= '0' && r <= '9':
		return int(r - '0')
	case r >= 'a' && r <= 'f':
		return int(r-'a') + 10
	case r >= 'A' && r <= 'F':
		return int(r-'A') + 10
	}
	return -1
}

func (p *parser) hex(min, max int) (rune, error) {
	v, k := 0, 0
	for ; k < max && hexVal(p.peek()) >= 0; k++ {
		v = v*16 + hexVal(p.next())
	}
	if k < min || v > utf8.MaxRune {
		return 0, p.errf(ErrSyntax, "bad hexadecimal escape")
	}
	return checkSurrogate(p, v)
}

func (p *parser) hexUntilBrace() (rune, error) {
	v, k := 0, 0
	for hexVal(p.peek()) >= 0 && k < 8 {
		v = v*16 + hexVal(p.next())
		k++
	}
	if k == 0 || !p.eat('}') || v > utf8.MaxRune {
		return 0, p.errf(ErrSyntax, `bad \x{...} escape`)
	}
	return checkSurrogate(p, v)
}

// checkSurrogate refuses a surrogate code point: ICU accepts one (it
// matches UTF-16 text), but a Go string cannot hold it.
func checkSurrogate(p *parser, v int) (rune, error) {
	if v >= 0xD800 && v <= 0xDFFF {
		return 0, p.errf(ErrUnsupported, "surrogate code point U+%04X", v)
	}
	return rune(v), nil
}

// propertyNames maps ICU long property names to the general-category
// abbreviations regexp2 knows. Anything else is passed through and refused
// by the engine if unknown.
var propertyNames = map[string]string{
	"letter": "L", "uppercase_letter": "Lu", "lowercase_letter": "Ll", "titlecase_letter": "Lt",
	"modifier_letter": "Lm", "other_letter": "Lo", "mark": "M", "number": "N",
	"decimal_number": "Nd", "digit": "Nd", "letter_number": "Nl", "other_number": "No",
	"punctuation": "P", "symbol": "S", "math_symbol": "Sm", "currency_symbol": "Sc",
	"separator": "Z", "space_separator": "Zs", "control": "Cc", "other": "C",
}

// property reads the {name} of \p{name} or \P{name} (r) and returns the
// name regexp2 knows it by, and whether the set is negated.
func (p *parser) property(r rune) (name string, neg bool, err error) {
	if !p.eat('{') { // ICU requires the braces: \pL is an error
		return "", false, p.errf(ErrSyntax, `\%c must be followed by {name}`, r)
	}
	start := p.pos
	for !p.eof() && p.peek() != '}' {
		p.next()
	}
	name = p.src[start:p.pos]
	if !p.eat('}') {
		return "", false, p.errf(ErrSyntax, `missing } in \%c{...}`, r)
	}
	name = strings.TrimSpace(name)
	if strings.HasPrefix(name, "^") { // an error in ICU's \p{...} (not in [:^name:])
		return "", false, p.errf(ErrSyntax, `\%c{^...}`, r)
	}
	key := strings.ToLower(strings.NewReplacer(" ", "_", "-", "_").Replace(name))
	if strings.HasPrefix(key, "gc=") || strings.HasPrefix(key, "general_category=") {
		key = key[strings.IndexByte(key, '=')+1:]
		name = name[strings.IndexByte(name, '=')+1:]
	}
	if short, ok := propertyNames[key]; ok {
		name = short
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return "", false, p.errf(ErrUnsupported, "property %q", name)
		}
	}
	if name == "" {
		return "", false, p.errf(ErrSyntax, "empty property name")
	}
	return name, r == 'P', nil
}

// parseClass parses a set after its '['. ICU set operations (nested sets,
// &&, --) are refused: regexp2 would read them differently.
func (p *parser) parseClass() (*node, error) {
	start := p.pos - 1
	var b strings.Builder
	var negProps []string
	neg := p.eat('^')
	first := true
	for {
		p.skip()
		if p.eof() {
			p.pos = start
			return nil, p.errf(ErrSyntax, "missing ] in set")
		}
		r := p.next()
		if r == ']' && !first {
			break
		}
		first = false
		switch {
		case r == '[' && p.peek() == ':':
			cls, err := p.posixClass()
			if err != nil {
				return nil, err
			}
			b.WriteString(cls)
			continue
		case r == '[':
			return nil, p.errf(ErrUnsupported, "nested sets in a set; use \\p{...} or list the characters")
		case r == '&' && p.peek() == '&':
			return nil, p.errf(ErrUnsupported, "set intersection &&")
		case r == '-' && p.peek() == '-':
			return nil, p.errf(ErrUnsupported, "set difference --")
		}
		lo, cls, negProp, err := p.classItem(r)
		if err != nil {
			return nil, err
		}
		if negProp != "" {
			negProps = append(negProps, negProp)
			continue
		}
		if cls != "" {
			b.WriteString(cls)
			continue
		}
		p.skip()
		if p.peek() == '-' && p.peekAt(1) == '-' {
			return nil, p.errf(ErrUnsupported, "set difference --")
		}
		if p.peek() == '-' && p.peekAt(1) != ']' && p.peekAt(1) != -1 {
			p.next()
			p.skip()
			r2 := p.next()
			hi, cls2, neg2, err := p.classItem(r2)
			if err != nil {
				return nil, err
			}
			if cls2 != "" || neg2 != "" {
				return nil, p.errf(ErrSyntax, "a range cannot end in a character class")
			}
			if hi < lo {
				return nil, p.errf(ErrSyntax, "range out of order in set")
			}
			writeClassLit(&b, lo)
			b.WriteByte('-')
			writeClassLit(&b, hi)
			continue
		}
		writeClassLit(&b, lo)
	}
	return p.class(b.String(), negProps, neg), nil
}

// posixClasses maps ICU's [:name:] set items to the inside of a regexp2
// class; alpha, upper, lower, alnum and xdigit are ICU's Unicode
// properties (unicode.go).
var posixClasses = map[string]func() string{
	"digit": func() string { return `\p{Nd}` }, "punct": func() string { return `\p{P}` },
	"space": func() string { return `\s` }, "blank": func() string { return `\t\p{Zs}` },
	"cntrl": func() string { return `\p{Cc}` },
	"alpha": func() string { return icuClassesOnce().alpha }, "alnum": func() string { return icuClassesOnce().alnum },
	"upper": func() string { return icuClassesOnce().upper }, "lower": func() string { return icuClassesOnce().lower },
	"xdigit": func() string { return icuClassesOnce().xdig },
}

// posixClass reads [:name:] after its '['.
func (p *parser) posixClass() (string, error) {
	p.next() // ':'
	start := p.pos
	for !p.eof() && p.peek() != ':' && p.pos-start < 16 {
		p.next()
	}
	name := p.src[start:p.pos]
	if !p.eat(':') || !p.eat(']') {
		return "", p.errf(ErrSyntax, "bad [:name:] in set")
	}
	cls, ok := posixClasses[strings.ToLower(name)]
	if !ok {
		return "", p.errf(ErrUnsupported, "[:%s:]", name)
	}
	return cls(), nil
}

// classItem reads one set element starting with r: a character (lit), a
// class escape (cls, regexp2 text to put inside brackets), or \P{name}
// (negProp: name).
func (p *parser) classItem(r rune) (lit rune, cls, negProp string, err error) {
	if r != '\\' {
		return r, "", "", nil
	}
	if p.eof() {
		return 0, "", "", p.errf(ErrSyntax, "trailing backslash")
	}
	e := p.next()
	switch e {
	case 'd', 'D', 's', 'S': // the same sets in ICU and regexp2, and caseless
		return 0, `\` + string(e), "", nil
	case 'w':
		return 0, icuClassesOnce().word, "", nil
	case 'W':
		return 0, icuClassesOnce().notWord, "", nil
	case 'h':
		return 0, `\t\p{Zs}`, "", nil
	case 'v':
		return 0, lineEnds, "", nil
	case 'p', 'P':
		name, neg, err := p.property(e)
		if neg {
			return 0, "", name, err
		}
		return 0, `\p{` + name + `}`, "", err
	case 'b': // as ICU: the letter, not a backspace
		return 'b', "", "", nil
	case 'Q', 'H', 'V', 'N', 'X', 'R':
		return 0, "", "", p.errf(ErrUnsupported, `\%c inside a set`, e)
	}
	c, err := p.escapedChar(e)
	return c, "", "", err
}

func writeClassLit(b *strings.Builder, r rune) {
	switch {
	case r == '\\' || r == ']' || r == '[' || r == '^' || r == '-':
		b.WriteByte('\\')
		b.WriteRune(r)
	case r < 0x20 || r == 0x7F || isPatternSpace(r):
		fmt.Fprintf(b, `\x{%X}`, r)
	default:
		b.WriteRune(r)
	}
}

func writeLit(b *strings.Builder, r rune) {
	switch {
	case strings.ContainsRune(`\.^$|?*+()[]{}#`, r):
		b.WriteByte('\\')
		b.WriteRune(r)
	case r < 0x20 || r == 0x7F || isPatternSpace(r):
		fmt.Fprintf(b, `\x{%X}`, r)
	default:
		b.WriteRune(r)
	}
}

func (n *node) emit(b *strings.Builder) {
	switch n.kind {
	case kLit:
		var o []rune
		if n.fold {
			o = orbit(n.r) // n.r and what simple case folding equates with it
		}
		if len(o) > 1 {
			b.WriteByte('[')
			for _, r := range o {
				writeClassLit(b, r)
			}
			b.WriteByte(']')
		} else {
			writeLit(b, n.r)
		}
	case kSet, kAssert, kEmpty:
		b.WriteString(n.src)
	case kConcat:
		for _, s := range n.sub {
			s.emit(b)
		}
	case kAlt:
		for i, s := range n.sub {
			if i > 0 {
				b.WriteByte('|')
			}
			s.emit(b)
		}
	case kGroup:
		if n.src != "" {
			b.WriteString(n.src)
		} else {
			b.WriteString(groupOpen[n.group])
		}
		n.sub[0].emit(b)
		b.WriteByte(')')
	case kRepeat:
		if n.mode == '+' {
			b.WriteString("(?>")
		}
		if n.sub[0].kind == kAssert { // ^* and $+ are valid ICU
			b.WriteString("(?:")
			n.sub[0].emit(b)
			b.WriteByte(')')
		} else {
			n.sub[0].emit(b)
		}
		switch {
		case n.min == 0 && n.max == -1:
			b.WriteByte('*')
		case n.min == 1 && n.max == -1:
			b.WriteByte('+')
		case n.min == 0 && n.max == 1:
			b.WriteByte('?')
		case n.max == -1:
			fmt.Fprintf(b, "{%d,}", n.min)
		case n.min == n.max:
			fmt.Fprintf(b, "{%d}", n.min)
		default:
			fmt.Fprintf(b, "{%d,%d}", n.min, n.max)
		}
		switch n.mode {
		case '?':
			b.WriteByte('?')
		case '+':
			b.WriteByte(')')
		}
	case kBackref:
		if n.fold { // regexp2 lower-cases; ICU folds (docs/passcode.md)
			fmt.Fprintf(b, `(?i:\k<%d>)`, n.index)
		} else {
			fmt.Fprintf(b, `\k<%d>`, n.index)
		}
	}
}

// behindLen is maxLen as ICU computes it to bound a look-behind: an
// unbounded repetition is unbounded even when what it repeats is empty.
func (n *node) behindLen() int {
	switch n.kind {
	case kConcat, kAlt:
		t := 0
		for _, s := range n.sub {
			m := s.behindLen()
			if m < 0 {
				return -1
			}
			if n.kind == kConcat {
				t += m
			} else {
				t = max(t, m)
			}
		}
		return t
	case kGroup:
		if n.isLookaround() {
			return 0
		}
		return n.sub[0].behindLen()
	case kRepeat:
		m := n.sub[0].behindLen()
		if m < 0 || n.max < 0 {
			return -1
		}
		return m * n.max
	}
	return n.maxLen()
}

// hasAtomic reports a possessive quantifier or an atomic group outside
// nested look-arounds (which keep their own direction).
func (n *node) hasAtomic() bool {
	if (n.kind == kRepeat && n.mode == '+') || (n.kind == kGroup && n.group == gAtomic) {
		return true
	}
	if n.isLookaround() {
		return false
	}
	for _, s := range n.sub {
		if s.hasAtomic() {
			return true
		}
	}
	return false
}

// maxLen is the longest match in runes, -1 if unbounded.
func (n *node) maxLen() int {
	switch n.kind {
	case kLit:
		return 1
	case kSet:
		if n.crlf {
			return 2
		}
		return 1
	case kAssert, kEmpty:
		return 0
	case kConcat:
		t := 0
		for _, s := range n.sub {
			m := s.maxLen()
			if m < 0 {
				return -1
			}
			t += m
		}
		return t
	case kAlt:
		t := 0
		for _, s := range n.sub {
			m := s.maxLen()
			if m < 0 {
				return -1
			}
			t = max(t, m)
		}
		return t
	case kGroup:
		switch n.group {
		case gAhead, gNegAhead, gBehind, gNegBehind:
			return 0
		}
		return n.sub[0].maxLen()
	case kRepeat:
		m := n.sub[0].maxLen()
		if m == 0 {
			return 0
		}
		if m < 0 || n.max < 0 {
			return -1
		}
		return m * n.max
	}
	return -1 // back reference
}
