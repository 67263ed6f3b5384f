package passcode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"unicode/utf8"

	"github.com/fvescrow/fvescrow/fde/passcode/icuregex"
)

// ExampleMaxLength bounds the passwords the satisfiability search builds
// (or the effective minimum length plus 16, when that is more).
const ExampleMaxLength = 64

// exampleTries bounds the candidates per search.
const exampleTries = 2000

// ErrUnsatisfiable: no password satisfying the policy was found.
var ErrUnsatisfiable = errors.New("policy cannot be satisfied")

// exampleAlphabet is what candidates without a customRegex are drawn from.
const exampleAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789#%&*+=?@!$^~"

// Example constructs a password that satisfies every content rule of the
// policy, proving it satisfiable. The search is deterministic (the same
// policy always gives the same example), so an example is public: never
// use it as a password. When none is found within ExampleMaxLength
// characters the error wraps ErrUnsatisfiable and names the conflict
// (a customRegex capping the length below minLength, a customRegex that
// forbids what another key requires, a customRegex matching nothing).
func (p Policy) Example() (string, error) {
	c, err := p.Compile()
	if err != nil {
		return "", err
	}
	s, ok, err := c.search()
	if err != nil || ok {
		return s, err
	}
	return "", c.diagnose()
}

func (c *Compiled) search() (string, bool, error) {
	rng := rand.New(rand.NewPCG(0x66766573, 0x63726f77))
	stretches := []int{0, 1, 2, 4, 8, 16, 32, 64}
	minLen := int(c.EffectiveMinLength())
	for i := 0; i < exampleTries; i++ {
		var cand string
		if c.re != nil {
			s, ok := c.re.Sample(rng, stretches[i%len(stretches)])
			if !ok {
				continue
			}
			cand = s
		} else {
			n := max(minLen, 4) + rng.IntN(4)
			b := make([]byte, n)
			for j := range b {
				b[j] = exampleAlphabet[rng.IntN(len(exampleAlphabet))]
			}
			cand = string(b)
		}
		if utf8.RuneCountInString(cand) > max(ExampleMaxLength, minLen+16) || !utf8.ValidString(cand) {
			continue
		}
		fails, err := c.Check(cand)
		if err != nil {
			if errors.Is(err, icuregex.ErrTimeout) {
				return "", false, fmt.Errorf("%w: matching a %d-character candidate timed out: the expression backtracks catastrophically", ErrRegex, utf8.RuneCountInString(cand))
			}
			continue // a candidate the rules cannot evaluate
		}
		if len(fails) == 0 {
			return cand, true, nil
		}
	}
	return "", false, nil
}

// diagnose explains why search found nothing, relaxing one key at a time.
func (c *Compiled) diagnose() error {
	if c.re == nil {
		return fmt.Errorf("%w: no password of up to %d characters was found", ErrUnsatisfiable, max(ExampleMaxLength, c.EffectiveMinLength()+16))
	}
	if m := c.re.MaxLength(); m >= 0 && c.MinLength.Set && int64(m) < c.MinLength.Value {
		return fmt.Errorf("%w: customRegex accepts at most %d characters, below minLength %d", ErrUnsatisfiable, m, c.MinLength.Value)
	}
	alone := &Compiled{Policy: Policy{CustomRegex: c.CustomRegex}, re: c.re}
	if _, ok, _ := alone.search(); !ok {
		return fmt.Errorf("%w: customRegex matches no password of up to %d characters that fvescrow could construct (check the expression: possessive quantifiers, for one, never give back what they matched)", ErrUnsatisfiable, ExampleMaxLength)
	}
	relax := []struct {
		key   string
		set   bool
		drop  func(p *Policy)
		value string
	}{
		{KeyMinLength, c.MinLength.Set, func(p *Policy) { p.MinLength = Int{} }, fmt.Sprint(c.MinLength.Value)},
		{KeyRequireAlphanumeric, c.RequireAlphanumeric.Value, func(p *Policy) { p.RequireAlphanumeric = Bool{} }, "true"},
		{KeyMinComplexChars, c.MinComplexChars.Set && c.MinComplexChars.Value > 0, func(p *Policy) { p.MinComplexChars = Int{} }, fmt.Sprint(c.MinComplexChars.Value)},
		{KeyAllowSimple, c.AllowSimple.Set && !c.AllowSimple.Value, func(p *Policy) { p.AllowSimple = Bool{} }, "false"},
	}
	for _, r := range relax {
		if !r.set {
			continue
		}
		q := c.Policy
		r.drop(&q)
		if _, ok, _ := (&Compiled{Policy: q, re: c.re}).search(); ok {
			return fmt.Errorf("%w: no password matching customRegex also satisfies %s %s (without %s one exists)", ErrUnsatisfiable, r.key, r.value, r.key)
		}
	}
	return fmt.Errorf("%w: no password of up to %d characters satisfies customRegex together with the other keys", ErrUnsatisfiable, ExampleMaxLength)
}

// probeBacktracking matches inputs that make badly nested quantifiers
// explode ("aaaa…a!" against (a+)+b): a run of each of the example's first
// characters followed by a character that rarely matches. A timeout means
// a login could hang on a wrong password.
func (c *Compiled) probeBacktracking(example string) error {
	if c.re == nil {
		return nil
	}
	seen := map[rune]bool{}
	for _, r := range example {
		if seen[r] || len(seen) == 8 {
			continue
		}
		seen[r] = true
		for _, tail := range []string{"\u0001", ""} {
			in := strings.Repeat(string(r), 40) + tail
			if _, err := c.re.MatchString(in); errors.Is(err, icuregex.ErrTimeout) {
				return fmt.Errorf("%w: matching a %d-character input timed out: the expression backtracks catastrophically (nested quantifiers such as (a+)+), so checking a password could hang", ErrRegex, utf8.RuneCountInString(in))
			}
		}
	}
	return nil
}
