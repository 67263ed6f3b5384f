// Package pwpolicy reads, writes, evaluates and explains macOS account
// policies, the dictionary `pwpolicy -setaccountpolicies` takes (pwpolicy(8),
// seed 003): policy categories holding policies whose policyContent is an
// NSPredicate over keywords such as policyAttributePassword.
//
// The package is pure Go with no I/O and builds for GOOS=js GOARCH=wasm, so
// a self-service portal can evaluate a candidate password in the browser.
// No error or result it returns contains a password.
//
// It also writes the per-host forced password change script
// ([ResetScript]), the per-user alternative to changeAtNextAuth.
package pwpolicy

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/micromdm/plist"
)

// MaxPolicySize bounds an account-policy plist in bytes.
const MaxPolicySize = 1 << 20

const maxDepth = 32

// ErrMalformed: the bytes are not an account-policy property list.
var ErrMalformed = errors.New("malformed account policy")

// Category is a policy category key.
type Category string

// The policy categories pwpolicy(8) documents.
const (
	CategoryAuthentication  Category = "policyCategoryAuthentication"
	CategoryPasswordChange  Category = "policyCategoryPasswordChange"
	CategoryPasswordContent Category = "policyCategoryPasswordContent"
)

// Categories lists the valid categories in the order they are written.
var Categories = []Category{CategoryAuthentication, CategoryPasswordChange, CategoryPasswordContent}

// Policy is one policy dictionary.
type Policy struct {
	Identifier string
	Content    string
	// Parameters are user-defined keywords (and documentation values such
	// as minimumLength): int64, float64, string, bool, time.Time or []any.
	Parameters map[string]any
	// ContentDescription maps a language ("en", "default") to the text
	// macOS shows for the policy.
	ContentDescription map[string]string

	pred *Predicate
}

// Predicate returns the parsed policyContent (nil for a Policy not made by
// Parse or Compile).
func (p *Policy) Predicate() *Predicate { return p.pred }

// Compile parses Content. Parse calls it for every policy; callers building
// policies by hand call it before Check or Explain.
func (p *Policy) Compile() error {
	pr, err := ParsePredicate(p.Content)
	if err != nil {
		return fmt.Errorf("policy %q: %w", p.Identifier, err)
	}
	p.pred = pr
	return nil
}

// Policies is an account-policy dictionary.
type Policies struct {
	Authentication  []Policy
	PasswordChange  []Policy
	PasswordContent []Policy
}

// In returns the policies of a category.
func (ps *Policies) In(c Category) []Policy {
	switch c {
	case CategoryAuthentication:
		return ps.Authentication
	case CategoryPasswordChange:
		return ps.PasswordChange
	case CategoryPasswordContent:
		return ps.PasswordContent
	}
	return nil
}

func (ps *Policies) add(c Category, p Policy) {
	switch c {
	case CategoryAuthentication:
		ps.Authentication = append(ps.Authentication, p)
	case CategoryPasswordChange:
		ps.PasswordChange = append(ps.PasswordChange, p)
	case CategoryPasswordContent:
		ps.PasswordContent = append(ps.PasswordContent, p)
	}
}

// Len counts the policies in all categories.
func (ps *Policies) Len() int {
	return len(ps.Authentication) + len(ps.PasswordChange) + len(ps.PasswordContent)
}

// Parse reads an account-policy plist: a <plist> holding the dictionary, or
// the bare <dict> pwpolicy(8) shows. Malformed XML is reported with its line
// ("line 23: element <key> closed by </dict>"). Quirks that do not stop
// parsing (an unknown category such as the man page's own
// policyCategoryPasswordAuthentication, unknown keys, a reversed lockout
// comparison) come back as warnings. Every policyContent is parsed; one
// that is not a valid predicate is an error.
func Parse(b []byte) (*Policies, []string, error) {
	if len(b) > MaxPolicySize {
		return nil, nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrMalformed, len(b), MaxPolicySize)
	}
	if bytes.HasPrefix(b, []byte("bplist")) {
		return nil, nil, fmt.Errorf("%w: binary property lists are not accepted; convert with plutil -convert xml1", ErrMalformed)
	}
	if err := checkXML(b); err != nil {
		return nil, nil, err
	}
	var root any
	if err := plist.Unmarshal(b, &root); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	m, ok := root.(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("%w: the root is not a dictionary", ErrMalformed)
	}
	ps := &Policies{}
	var warns []string
	for _, k := range sortedKeys(m) {
		c := Category(k)
		if !validCategory(c) {
			warns = append(warns, unknownCategory(k))
			// Read its policies anyway, for their warnings.
			arr, _ := m[k].([]any)
			for i, e := range arr {
				if d, ok := e.(map[string]any); ok {
					p, w, err := parsePolicy(fmt.Sprintf("%s[%d]", k, i), d)
					warns = append(warns, w...)
					if err == nil && strings.Contains(strings.ToLower(k), "authentication") {
						if w := reversedLockout(&p); w != "" {
							warns = append(warns, w)
						}
					}
				}
			}
			continue
		}
		arr, ok := m[k].([]any)
		if !ok {
			return nil, warns, fmt.Errorf("%w: %s: want an array of policies, got %s", ErrMalformed, k, plistKind(m[k]))
		}
		for i, e := range arr {
			d, ok := e.(map[string]any)
			if !ok {
				return nil, warns, fmt.Errorf("%w: %s[%d]: want a dictionary, got %s", ErrMalformed, k, i, plistKind(e))
			}
			p, w, err := parsePolicy(fmt.Sprintf("%s[%d]", k, i), d)
			warns = append(warns, w...)
			if err != nil {
				return nil, warns, err
			}
			if c == CategoryAuthentication {
				if w := reversedLockout(&p); w != "" {
					warns = append(warns, w)
				}
			}
			ps.add(c, p)
		}
	}
	if ps.Len() == 0 {
		return nil, warns, fmt.Errorf("%w: no policies in %s", ErrMalformed, categoryList())
	}
	return ps, warns, nil
}

func validCategory(c Category) bool {
	for _, v := range Categories {
		if v == c {
			return true
		}
	}
	return false
}

func categoryList() string {
	s := make([]string, len(Categories))
	for i, c := range Categories {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

func unknownCategory(k string) string {
	msg := fmt.Sprintf("%s: unknown policy category, ignored (valid: %s)", k, categoryList())
	lk := strings.ToLower(k)
	for _, hint := range []struct{ word string }{{"content"}, {"change"}, {"authentication"}} {
		if strings.Contains(lk, hint.word) {
			for _, c := range Categories {
				if strings.Contains(strings.ToLower(string(c)), hint.word) {
					return msg + fmt.Sprintf("; did you mean %s?", c)
				}
			}
		}
	}
	return msg
}

func parsePolicy(path string, d map[string]any) (Policy, []string, error) {
	var p Policy
	var warns []string
	for _, k := range sortedKeys(d) {
		v := d[k]
		switch k {
		case "policyIdentifier":
			s, ok := v.(string)
			if !ok {
				return p, warns, fmt.Errorf("%w: %s.policyIdentifier: want a string, got %s", ErrMalformed, path, plistKind(v))
			}
			p.Identifier = s
		case "policyContent":
			s, ok := v.(string)
			if !ok {
				return p, warns, fmt.Errorf("%w: %s.policyContent: want a string, got %s", ErrMalformed, path, plistKind(v))
			}
			p.Content = s
		case "policyParameters":
			pm, ok := v.(map[string]any)
			if !ok {
				return p, warns, fmt.Errorf("%w: %s.policyParameters: want a dictionary, got %s", ErrMalformed, path, plistKind(v))
			}
			p.Parameters = pm
		case "policyContentDescription":
			dm, ok := v.(map[string]any)
			if !ok {
				warns = append(warns, fmt.Sprintf("%s.policyContentDescription: want a dictionary, got %s; ignored", path, plistKind(v)))
				continue
			}
			p.ContentDescription = map[string]string{}
			for lang, t := range dm {
				if s, ok := t.(string); ok {
					p.ContentDescription[lang] = s
				}
			}
		default:
			warns = append(warns, fmt.Sprintf("%s.%s: unknown policy key, ignored", path, k))
		}
	}
	if p.Content == "" {
		return p, warns, fmt.Errorf("%w: %s: policyContent is missing", ErrMalformed, path)
	}
	if p.Identifier == "" {
		warns = append(warns, fmt.Sprintf("%s: policyIdentifier is missing; reports will call it %q", path, path))
		p.Identifier = path
	}
	if err := p.Compile(); err != nil {
		return p, warns, err
	}
	return p, warns, nil
}

// reversedLockout spots pwpolicy(8)'s own example, which lets an account
// authenticate only once its failures exceed the maximum.
func reversedLockout(p *Policy) string {
	var found bool
	walk(p.pred.root, func(e *expr) {
		if e.kind != eCmp || e.l.kind != eIdent || e.r.kind != eIdent {
			return
		}
		l, r := e.l.str, e.r.str
		if (e.op == "<" || e.op == "<=") && l == "policyAttributeMaximumFailedAuthentications" && r == "policyAttributeFailedAuthentications" ||
			(e.op == ">" || e.op == ">=") && l == "policyAttributeFailedAuthentications" && r == "policyAttributeMaximumFailedAuthentications" {
			found = true
		}
	})
	if !found {
		return ""
	}
	return fmt.Sprintf("policy %q: authentication is allowed while the predicate is true, so this allows login only after the failures exceed the maximum; the usual form is policyAttributeFailedAuthentications < policyAttributeMaximumFailedAuthentications", p.Identifier)
}

func walk(e *expr, f func(*expr)) {
	if e == nil {
		return
	}
	f(e)
	walk(e.l, f)
	walk(e.r, f)
	for _, x := range e.list {
		walk(x, f)
	}
}

// checkXML reports the first XML error with its line, and bounds nesting.
func checkXML(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	depth, elems := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return fmt.Errorf("%w: line %d: %s", ErrMalformed, se.Line, se.Msg)
			}
			return fmt.Errorf("%w: not well-formed XML: %v", ErrMalformed, err)
		}
		switch tok.(type) {
		case xml.StartElement:
			elems++
			if depth++; depth > maxDepth {
				return fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
			}
		case xml.EndElement:
			depth--
		}
	}
	if elems == 0 {
		return fmt.Errorf("%w: no XML elements", ErrMalformed)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func plistKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case uint64, int64:
		return "integer"
	case float64, float32:
		return "real"
	case []byte:
		return "data"
	case time.Time:
		return "date"
	case []any:
		return "array"
	case map[string]any:
		return "dictionary"
	}
	return fmt.Sprintf("%T", v)
}

// ParamValue converts a policyParameters value for evaluation: numbers and
// booleans (1/0) as numbers, dates as Unix seconds, strings, arrays as
// lists. ok is false for dictionaries and data.
func ParamValue(v any) (Value, bool) {
	switch x := v.(type) {
	case int64:
		return Number(float64(x)), true
	case uint64:
		return Number(float64(x)), true
	case int:
		return Number(float64(x)), true
	case float64:
		if math.IsNaN(x) {
			return Value{}, false
		}
		return Number(x), true
	case bool:
		if x {
			return Number(1), true
		}
		return Number(0), true
	case string:
		return String(x), true
	case time.Time:
		return Number(float64(x.Unix())), true
	case []any:
		out := make([]Value, 0, len(x))
		for _, e := range x {
			ev, ok := ParamValue(e)
			if !ok {
				return Value{}, false
			}
			out = append(out, ev)
		}
		return List(out...), true
	}
	return Value{}, false
}

type wirePolicy struct {
	Content            string            `plist:"policyContent"`
	ContentDescription map[string]string `plist:"policyContentDescription,omitempty"`
	Identifier         string            `plist:"policyIdentifier"`
	Parameters         map[string]any    `plist:"policyParameters,omitempty"`
}

type wirePolicies struct {
	Authentication  []wirePolicy `plist:"policyCategoryAuthentication,omitempty"`
	PasswordChange  []wirePolicy `plist:"policyCategoryPasswordChange,omitempty"`
	PasswordContent []wirePolicy `plist:"policyCategoryPasswordContent,omitempty"`
}

func toWire(ps []Policy) []wirePolicy {
	out := make([]wirePolicy, len(ps))
	for i, p := range ps {
		out[i] = wirePolicy{Content: p.Content, ContentDescription: p.ContentDescription, Identifier: p.Identifier, Parameters: p.Parameters}
	}
	return out
}

// XML writes the policies as the plist `pwpolicy -setaccountpolicies FILE`
// reads.
func (ps *Policies) XML() ([]byte, error) {
	w := wirePolicies{toWire(ps.Authentication), toWire(ps.PasswordChange), toWire(ps.PasswordContent)}
	b, err := plist.MarshalIndent(w, "\t")
	if err != nil {
		return nil, fmt.Errorf("marshal account policies: %w", err)
	}
	return append(b, '\n'), nil
}
