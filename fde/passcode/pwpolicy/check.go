package pwpolicy

import (
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Keywords computed by the evaluator; an Input's Attributes cannot replace
// them.
const (
	AttrPassword                     = "policyAttributePassword"
	AttrConsecutiveCharacters        = "policyAttributeConsecutiveCharacters"
	AttrSequentialCharacters         = "policyAttributeSequentialCharacters"
	AttrCurrentTime                  = "policyAttributeCurrentTime"
	AttrCurrentDate                  = "policyAttributeCurrentDate"
	AttrCurrentDayOfWeek             = "policyAttributeCurrentDayOfWeek"
	AttrCurrentTimeOfDay             = "policyAttributeCurrentTimeOfDay"
	AttrFailedAuthentications        = "policyAttributeFailedAuthentications"
	AttrMaximumFailedAuthentications = "policyAttributeMaximumFailedAuthentications"
	AttrLastPasswordChangeTime       = "policyAttributeLastPasswordChangeTime"
)

// Keywords lists the keywords pwpolicy(8) documents (seed 003).
var Keywords = []string{
	"policyAttributePassword", "policyAttributePasswordHashes", "policyAttributePasswordHistory",
	"policyAttributePasswordHistoryDepth", "policyAttributeCurrentDate", "policyAttributeCurrentTime",
	"policyAttributeCurrentDayOfWeek", "policyAttributeCurrentTimeOfDay", "policyAttributeFailedAuthentications",
	"policyAttributeMaximumFailedAuthentications", "policyAttributeLastFailedAuthenticationTime",
	"policyAttributeLastAuthenticationTime", "policyAttributeLastPasswordChangeTime",
	"policyAttributeNewPasswordRequiredTime", "policyAttributeCreationTime",
	"policyAttributeConsecutiveCharacters", "policyAttributeMaximumConsecutiveCharacters",
	"policyAttributeSequentialCharacters", "policyAttributeMaximumSequentialCharacters",
	"policyAttributeExpiresEveryNDays", "policyAttributeDaysUntilExpiration",
	"policyAttributeEnableOnDate", "policyAttributeExpiresOnDate", "policyAttributeEnableOnDayOfWeek",
	"policyAttributeExpiresOnDayOfWeek", "policyAttributeEnableAtTimeOfDay", "policyAttributeExpiresAtTimeOfDay",
}

// MaxPasswordLength bounds a candidate password in bytes.
const MaxPasswordLength = 1024

// ErrPassword: the candidate password cannot be evaluated (not UTF-8, too
// long). The message never contains the password.
var ErrPassword = errors.New("password cannot be evaluated")

// ConsecutiveCharacters returns the length of the longest run of the same
// character, ignoring case ("aaB" → 2, "xAaa" → 3): the value of
// policyAttributeConsecutiveCharacters.
func ConsecutiveCharacters(s string) int {
	best, run := 0, 0
	var prev rune = -1
	for _, r := range s {
		r = unicode.ToLower(r)
		if r == prev {
			run++
		} else {
			run = 1
		}
		prev = r
		best = max(best, run)
	}
	return best
}

// SequentialCharacters returns the length of the longest ascending or
// descending run of ASCII letters (case ignored) or digits ("x123" → 3,
// "CBA" → 3, "az" → 1): the value of policyAttributeSequentialCharacters.
// Letters and digits do not continue each other ("9a" is no run).
func SequentialCharacters(s string) int {
	best, run, dir := 0, 0, 0
	var prev rune = -1
	for _, r := range s {
		c := seqClass(r)
		if c == 0 {
			best, run, dir, prev = max(best, run), 0, 0, -1
			continue
		}
		r = unicode.ToLower(r)
		d := int(r - prev)
		switch {
		case prev >= 0 && seqClass(prev) == c && (d == 1 || d == -1) && (dir == 0 || dir == d):
			run++
			dir = d
		case prev >= 0 && seqClass(prev) == c && (d == 1 || d == -1):
			run, dir = 2, d // direction changed: "aba" is two runs of 2
		default:
			run, dir = 1, 0
		}
		prev = r
		best = max(best, run)
	}
	return best
}

func seqClass(r rune) int {
	switch {
	case r >= '0' && r <= '9':
		return 1
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		return 2
	}
	return 0
}

// Outcome is the result of one policy.
type Outcome uint8

const (
	// Pass: a content policy accepted the password, an authentication
	// policy allows login, a change policy does not require a change.
	Pass Outcome = iota + 1
	// Fail: the opposite of Pass.
	Fail
	// NotEvaluated: an attribute the policy needs was not supplied.
	NotEvaluated
	// Error: the policy cannot be evaluated (a type mismatch, a regular
	// expression that timed out).
	Error
)

func (o Outcome) String() string {
	switch o {
	case Pass:
		return "pass"
	case Fail:
		return "fail"
	case NotEvaluated:
		return "not evaluated"
	case Error:
		return "error"
	}
	return "unknown"
}

// Result is the outcome of one policy.
type Result struct {
	Category   Category
	Identifier string
	Outcome    Outcome
	Missing    string // NotEvaluated: the attribute that was missing
	Err        error  // Error: why
}

// Input is what a check evaluates against.
type Input struct {
	// Password is the candidate password. It is never copied into a result
	// or error.
	Password string
	// Attributes are values from the user's record (failed
	// authentications, last password change time...), dates as Unix
	// seconds. They cannot replace the computed keywords (the password and
	// its character counts, the current time).
	Attributes map[string]Value
	// Now is the evaluation time; the zero value means "now" is unknown and
	// time keywords are missing.
	Now time.Time
}

type checkEnv struct {
	computed map[string]Value
	params   map[string]any
	attrs    map[string]Value
}

func (e checkEnv) Lookup(name string) (Value, bool) {
	if v, ok := e.computed[name]; ok {
		return v, true
	}
	if v, ok := e.params[name]; ok {
		return ParamValue(v)
	}
	v, ok := e.attrs[name]
	return v, ok
}

// Check evaluates every policy. Content policies pass when their predicate
// is true, authentication policies pass when it is true (login allowed),
// change policies pass when it is false (no change required). A policy
// needing an attribute that Input lacks is NotEvaluated, never Fail.
func (ps *Policies) Check(in Input) ([]Result, error) {
	if len(in.Password) > MaxPasswordLength {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrPassword, MaxPasswordLength)
	}
	if !utf8.ValidString(in.Password) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrPassword)
	}
	computed := map[string]Value{
		AttrPassword:              String(in.Password),
		AttrConsecutiveCharacters: Number(float64(ConsecutiveCharacters(in.Password))),
		AttrSequentialCharacters:  Number(float64(SequentialCharacters(in.Password))),
	}
	if !in.Now.IsZero() {
		secs := Number(float64(in.Now.Unix()))
		computed[AttrCurrentTime] = secs
		computed[AttrCurrentDate] = secs
		computed[AttrCurrentDayOfWeek] = Number(float64(in.Now.Weekday()) + 1) // 1 = Sunday, as NSCalendar
		computed[AttrCurrentTimeOfDay] = Number(float64(in.Now.Hour()*100 + in.Now.Minute()))
	}
	var out []Result
	for _, c := range Categories {
		for i := range ps.In(c) {
			p := &ps.In(c)[i]
			r := Result{Category: c, Identifier: p.Identifier}
			if p.pred == nil {
				if err := p.Compile(); err != nil {
					return nil, err
				}
			}
			ok, err := p.pred.Eval(checkEnv{computed: computed, params: p.Parameters, attrs: in.Attributes})
			var me *MissingError
			switch {
			case errors.As(err, &me):
				r.Outcome, r.Missing = NotEvaluated, me.Name
			case err != nil:
				r.Outcome, r.Err = Error, err
			case ok == (c != CategoryPasswordChange):
				r.Outcome = Pass
			default:
				r.Outcome = Fail
			}
			out = append(out, r)
		}
	}
	return out, nil
}
