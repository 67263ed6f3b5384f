package icuregex

import (
	"math/rand/v2"

	"github.com/dlclark/regexp2"
)

// samplePool is the alphabet Sample draws set members from: printable
// ASCII first, then a few letters, digits and symbols from other scripts so
// that sets such as \p{Lo} or [^\x00-\x7F] have members too.
var samplePool = func() []rune {
	var p []rune
	for r := rune(0x21); r < 0x7F; r++ {
		p = append(p, r)
	}
	return append(p, ' ', 'é', 'Ä', 'ß', 'Ω', 'ж', 'ǅ', '٣', '中', '€', '😀', '\u00A0')
}()

// maxSample bounds a sample in runes.
const maxSample = 256

// Sample returns a string built by walking the pattern: each set yields one
// of its members, each repetition a count between its minimum and minimum +
// stretch, each alternation one branch. Positive lookahead is honoured
// approximately (its own sample is laid over the text that follows).
// The result is a candidate, not a guarantee: check it with MatchString.
// ok is false when some set has no member in the sample alphabet.
func (re *Regexp) Sample(rng *rand.Rand, stretch int) (s string, ok bool) {
	sm := &sampler{rng: rng, stretch: max(stretch, 0), caps: map[int][]rune{}}
	if !sm.walk(re.root) {
		return "", false
	}
	out := sm.out
	for _, h := range sm.hints {
		for i, r := range h.text {
			if h.at+i < len(out) {
				out[h.at+i] = r
			} else {
				out = append(out, r)
			}
		}
	}
	return string(out), true
}

type hint struct {
	at   int
	text []rune
}

type sampler struct {
	rng     *rand.Rand
	stretch int
	out     []rune
	caps    map[int][]rune
	hints   []hint
}

func (s *sampler) walk(n *node) bool {
	if len(s.out) > maxSample {
		return true
	}
	switch n.kind {
	case kLit:
		s.out = append(s.out, n.r)
	case kSet:
		m := n.setMembers()
		if len(m) == 0 {
			return false
		}
		s.out = append(s.out, m[s.rng.IntN(len(m))])
	case kAssert, kEmpty:
	case kConcat:
		for _, c := range n.sub {
			if !s.walk(c) {
				return false
			}
		}
	case kAlt:
		start := s.rng.IntN(len(n.sub))
		for k := range n.sub {
			mark, nh := len(s.out), len(s.hints)
			if s.walk(n.sub[(start+k)%len(n.sub)]) {
				return true
			}
			s.out, s.hints = s.out[:mark], s.hints[:nh]
		}
		return false
	case kGroup:
		switch n.group {
		case gAhead:
			inner := &sampler{rng: s.rng, stretch: s.stretch, caps: s.caps}
			if inner.walk(n.sub[0]) {
				s.hints = append(s.hints, hint{at: len(s.out), text: inner.out})
			}
		case gNegAhead, gBehind, gNegBehind:
		default:
			mark := len(s.out)
			if !s.walk(n.sub[0]) {
				return false
			}
			if n.group == gCapture {
				s.caps[n.index] = append([]rune(nil), s.out[mark:]...)
			}
		}
	case kRepeat:
		hi := n.min + s.stretch
		if n.max >= 0 && n.max < hi {
			hi = n.max
		}
		count := n.min
		if hi > n.min {
			count += s.rng.IntN(hi - n.min + 1)
		}
		for i := 0; i < count; i++ {
			if !s.walk(n.sub[0]) {
				return i >= n.min
			}
		}
	case kBackref:
		s.out = append(s.out, s.caps[n.index]...)
	}
	return true
}

// setMembers returns the sample-alphabet characters the set matches,
// computed once with the engine itself.
func (n *node) setMembers() []rune {
	n.once.Do(func() {
		// Case folding is part of src (parser.class).
		re, err := regexp2.Compile(`\A(?:`+n.src+`)\z`, regexp2.None)
		if err != nil {
			return
		}
		for _, r := range samplePool {
			if ok, err := re.MatchString(string(r)); err == nil && ok {
				n.members = append(n.members, r)
			}
		}
	})
	return n.members
}
