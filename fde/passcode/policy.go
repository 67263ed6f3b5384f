// Package passcode is fvescrow's passcode policy toolkit for the
// com.apple.mobiledevice.passwordpolicy payload: it reads a profile's
// passcode payloads tolerantly, lints them against Apple's schema and the
// ways such policies go wrong in practice (seeds 000 and 002), evaluates a
// candidate password offline, proves a policy satisfiable by constructing
// an example password, writes passcode profiles, and maps a passcode policy
// to the equivalent pwpolicy account policies.
//
// The package does no I/O, never logs and builds for GOOS=js GOARCH=wasm:
// the self-service portal runs [Policy.Check] in the browser so that a
// candidate password never leaves the user's device. No error or finding
// contains a password; [Report.Example] is an example the caller asked for,
// never a user's password.
//
// Sub-packages: icuregex evaluates ICU regular expressions (customRegex,
// NSPredicate MATCHES); pwpolicy handles account policies.
package passcode

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/micromdm/plist"
)

// PayloadType is the passcode payload's type.
const PayloadType = "com.apple.mobiledevice.passwordpolicy"

// MaxProfileSize bounds a profile in bytes.
const MaxProfileSize = 1 << 20

// MaxCustomRegexLength is Apple's limit on passwordContentRegex.
const MaxCustomRegexLength = 2048

const maxPlistDepth = 32

// ErrMalformed: the bytes are not a readable configuration profile.
var ErrMalformed = errors.New("malformed profile")

// Int is an integer key that may be absent.
type Int struct {
	Value int64
	Set   bool
}

// Bool is a boolean key that may be absent.
type Bool struct {
	Value bool
	Set   bool
}

// SetInt returns a present Int.
func SetInt(v int64) Int { return Int{Value: v, Set: true} }

// SetBool returns a present Bool.
func SetBool(v bool) Bool { return Bool{Value: v, Set: true} }

// CustomRegex is Passcode.CustomRegex (macOS 14+).
type CustomRegex struct {
	Regex string // passwordContentRegex, ICU syntax
	// Description is passwordContentDescription: language ("en-US",
	// "default") → text shown to the user.
	Description map[string]string
}

// Policy holds the keys of one passcode payload; an unset key is absent
// from the payload.
type Policy struct {
	AllowSimple                  Bool
	ChangeAtNextAuth             Bool
	CustomRegex                  *CustomRegex
	ForcePIN                     Bool
	MaxFailedAttempts            Int
	MaxGracePeriod               Int
	MaxInactivity                Int
	MaxPINAgeInDays              Int
	MinComplexChars              Int
	MinLength                    Int
	MinutesUntilFailedLoginReset Int
	PINHistory                   Int
	RequireAlphanumeric          Bool
}

// Payload keys.
const (
	KeyAllowSimple                  = "allowSimple"
	KeyChangeAtNextAuth             = "changeAtNextAuth"
	KeyCustomRegex                  = "customRegex"
	KeyForcePIN                     = "forcePIN"
	KeyMaxFailedAttempts            = "maxFailedAttempts"
	KeyMaxGracePeriod               = "maxGracePeriod"
	KeyMaxInactivity                = "maxInactivity"
	KeyMaxPINAgeInDays              = "maxPINAgeInDays"
	KeyMinComplexChars              = "minComplexChars"
	KeyMinLength                    = "minLength"
	KeyMinutesUntilFailedLoginReset = "minutesUntilFailedLoginReset"
	KeyPINHistory                   = "pinHistory"
	KeyRequireAlphanumeric          = "requireAlphanumeric"
)

type keyKind uint8

const (
	kindBool keyKind = iota + 1
	kindInt
	kindDict
)

// keySpec is what Apple's YAML (mdm/profiles/com.apple.mobiledevice.
// passwordpolicy.yaml) says about a key, encoded here so production code
// does not read the schema.
type keySpec struct {
	name     string
	kind     keyKind
	min, max int64 // range; max < 0: none
	iOS      bool  // available on iOS
	macOS    string
}

var keySpecs = []keySpec{
	{KeyAllowSimple, kindBool, 0, -1, true, "10.7"},
	{KeyChangeAtNextAuth, kindBool, 0, -1, false, "10.13"},
	{KeyCustomRegex, kindDict, 0, -1, false, "14.0"},
	{KeyForcePIN, kindBool, 0, -1, true, "10.7"},
	{KeyMaxFailedAttempts, kindInt, 2, 11, true, "10.7"},
	{KeyMaxGracePeriod, kindInt, 0, -1, true, "10.7"},
	{KeyMaxInactivity, kindInt, 0, 15, true, "10.7"}, // macOS: up to 60 (Apple's prose)
	{KeyMaxPINAgeInDays, kindInt, 0, 730, true, "10.7"},
	{KeyMinComplexChars, kindInt, 0, 4, true, "10.7"},
	{KeyMinLength, kindInt, 0, 16, true, "10.7"},
	{KeyMinutesUntilFailedLoginReset, kindInt, 0, -1, false, "10.10"},
	{KeyPINHistory, kindInt, 1, 50, true, "10.7"},
	{KeyRequireAlphanumeric, kindBool, 0, -1, true, "10.7"},
}

// MacOSMaxInactivity is the macOS maximum of maxInactivity (Apple's prose;
// the schema's range 0-15 is the iOS one).
const MacOSMaxInactivity = 60

func specOf(key string) (keySpec, bool) {
	for _, s := range keySpecs {
		if s.name == key {
			return s, true
		}
	}
	return keySpec{}, false
}

var headerKeys = map[string]bool{
	"PayloadIdentifier": true, "PayloadUUID": true, "PayloadType": true, "PayloadVersion": true,
	"PayloadDescription": true, "PayloadDisplayName": true, "PayloadOrganization": true,
}

// Profile is what ParseProfile found.
type Profile struct {
	// Scope is the top-level PayloadScope ("System", "User"), "" if absent.
	Scope    string
	Payloads []Payload
}

// Payload is one passcode payload.
type Payload struct {
	Index      int // position in PayloadContent; -1 when the document is a bare payload
	Identifier string
	Policy     Policy
	// Findings are the problems met while reading the payload: unknown
	// keys, wrong types, integers typed as <real>.
	Findings []Finding
	keys     map[string]bool
}

// Has reports whether the payload contains key.
func (p *Payload) Has(key string) bool { return p.keys[key] }

// ParseProfile reads the passcode payloads of an XML configuration profile
// (other payload types are ignored). A bare passcode payload dictionary is
// accepted too. Type problems do not stop reading; they become Findings.
func ParseProfile(b []byte) (*Profile, error) {
	root, err := decodeDict(b)
	if err != nil {
		return nil, err
	}
	prof := &Profile{}
	if s, ok := root["PayloadScope"].(string); ok {
		prof.Scope = s
	}
	if t, _ := root["PayloadType"].(string); t == PayloadType {
		prof.Payloads = append(prof.Payloads, decodePayload(-1, root))
		return prof, nil
	}
	content, ok := root["PayloadContent"].([]any)
	if _, present := root["PayloadContent"]; present && !ok {
		return nil, fmt.Errorf("%w: PayloadContent is not an array", ErrMalformed)
	}
	for i, it := range content {
		m, ok := it.(map[string]any)
		if !ok {
			continue
		}
		if t, _ := m["PayloadType"].(string); t == PayloadType {
			prof.Payloads = append(prof.Payloads, decodePayload(i, m))
		}
	}
	return prof, nil
}

func decodeDict(b []byte) (map[string]any, error) {
	if len(b) > MaxProfileSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrMalformed, len(b), MaxProfileSize)
	}
	if bytes.HasPrefix(b, []byte("bplist")) {
		return nil, fmt.Errorf("%w: binary property lists are not accepted; convert with plutil -convert xml1", ErrMalformed)
	}
	if bytes.HasPrefix(b, []byte{0x30, 0x80}) || bytes.HasPrefix(b, []byte{0x30, 0x82}) {
		return nil, fmt.Errorf("%w: this looks like a signed profile; unwrap it first (openssl smime -verify -noverify -inform DER)", ErrMalformed)
	}
	if err := checkXML(b); err != nil {
		return nil, err
	}
	var root any
	if err := plist.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	m, ok := root.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: the root is not a dictionary", ErrMalformed)
	}
	return m, nil
}

func decodePayload(index int, m map[string]any) Payload {
	p := Payload{Index: index, keys: map[string]bool{}}
	p.Identifier, _ = m["PayloadIdentifier"].(string)
	add := func(sev Severity, key, format string, a ...any) {
		p.Findings = append(p.Findings, Finding{Severity: sev, Key: key, Message: fmt.Sprintf(format, a...)})
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		if headerKeys[k] {
			continue
		}
		spec, ok := specOf(k)
		if !ok {
			msg := "unknown key: not in Apple's schema for " + PayloadType + "; the device ignores it"
			for _, s := range keySpecs {
				if strings.EqualFold(s.name, k) {
					msg += fmt.Sprintf(" (did you mean %s?)", s.name)
				}
			}
			add(SeverityError, k, "%s", msg)
			continue
		}
		switch spec.kind {
		case kindBool:
			b, ok := v.(bool)
			if !ok {
				add(SeverityError, k, "type is %s, Apple's schema says <boolean>; the key is not applied as intended", plistKind(v))
				continue
			}
			p.keys[k] = true
			setBool(&p.Policy, k, b)
		case kindInt:
			var n int64
			switch x := v.(type) {
			case int64:
				n = x
			case uint64:
				if x > math.MaxInt32 {
					add(SeverityError, k, "value %d out of range", x)
					continue
				}
				n = int64(x)
			case float64:
				if x != math.Trunc(x) || math.Abs(x) > math.MaxInt32 {
					add(SeverityError, k, "<real> %v is not a whole number; Apple's schema says <integer>", x)
					continue
				}
				n = int64(x)
				add(SeverityWarning, k, "typed as <real>; Apple's schema says <integer> (Apple's own example does this; write <integer> so every tool and device reads it the same way)")
			default:
				add(SeverityError, k, "type is %s, Apple's schema says <integer>; the key is not applied as intended", plistKind(v))
				continue
			}
			p.keys[k] = true
			setInt(&p.Policy, k, n)
		case kindDict:
			cr, fs := decodeCustomRegex(v)
			p.Findings = append(p.Findings, fs...)
			if cr != nil {
				p.keys[k] = true
				p.Policy.CustomRegex = cr
			}
		}
	}
	return p
}

func decodeCustomRegex(v any) (*CustomRegex, []Finding) {
	var fs []Finding
	bad := func(format string, a ...any) {
		fs = append(fs, Finding{Severity: SeverityError, Key: KeyCustomRegex, Message: fmt.Sprintf(format, a...)})
	}
	d, ok := v.(map[string]any)
	if !ok {
		bad("type is %s, Apple's schema says a dictionary with passwordContentRegex and passwordContentDescription", plistKind(v))
		return nil, fs
	}
	cr := &CustomRegex{}
	for _, k := range sortedKeys(d) {
		switch k {
		case "passwordContentRegex":
			s, ok := d[k].(string)
			if !ok {
				bad("passwordContentRegex: type is %s, want <string>", plistKind(d[k]))
				return nil, fs
			}
			cr.Regex = s
		case "passwordContentDescription":
			dd, ok := d[k].(map[string]any)
			if !ok {
				bad("passwordContentDescription: type is %s, want a dictionary of language → text", plistKind(d[k]))
				continue
			}
			cr.Description = map[string]string{}
			for lang, t := range dd {
				s, ok := t.(string)
				if !ok {
					bad("passwordContentDescription.%s: type is %s, want <string>", lang, plistKind(t))
					continue
				}
				cr.Description[lang] = s
			}
		default:
			bad("%s: unknown key (want passwordContentRegex, passwordContentDescription)", k)
		}
	}
	if _, ok := d["passwordContentRegex"]; !ok {
		bad("passwordContentRegex is required")
		return nil, fs
	}
	return cr, fs
}

func setBool(p *Policy, key string, v bool) {
	switch key {
	case KeyAllowSimple:
		p.AllowSimple = SetBool(v)
	case KeyChangeAtNextAuth:
		p.ChangeAtNextAuth = SetBool(v)
	case KeyForcePIN:
		p.ForcePIN = SetBool(v)
	case KeyRequireAlphanumeric:
		p.RequireAlphanumeric = SetBool(v)
	}
}

func setInt(p *Policy, key string, v int64) {
	switch key {
	case KeyMaxFailedAttempts:
		p.MaxFailedAttempts = SetInt(v)
	case KeyMaxGracePeriod:
		p.MaxGracePeriod = SetInt(v)
	case KeyMaxInactivity:
		p.MaxInactivity = SetInt(v)
	case KeyMaxPINAgeInDays:
		p.MaxPINAgeInDays = SetInt(v)
	case KeyMinComplexChars:
		p.MinComplexChars = SetInt(v)
	case KeyMinLength:
		p.MinLength = SetInt(v)
	case KeyMinutesUntilFailedLoginReset:
		p.MinutesUntilFailedLoginReset = SetInt(v)
	case KeyPINHistory:
		p.PINHistory = SetInt(v)
	}
}

// ints returns the integer keys in key order.
func (p *Policy) ints() []struct {
	key string
	v   Int
} {
	return []struct {
		key string
		v   Int
	}{
		{KeyMaxFailedAttempts, p.MaxFailedAttempts}, {KeyMaxGracePeriod, p.MaxGracePeriod},
		{KeyMaxInactivity, p.MaxInactivity}, {KeyMaxPINAgeInDays, p.MaxPINAgeInDays},
		{KeyMinComplexChars, p.MinComplexChars}, {KeyMinLength, p.MinLength},
		{KeyMinutesUntilFailedLoginReset, p.MinutesUntilFailedLoginReset}, {KeyPINHistory, p.PINHistory},
	}
}

func (p *Policy) bools() []struct {
	key string
	v   Bool
} {
	return []struct {
		key string
		v   Bool
	}{
		{KeyAllowSimple, p.AllowSimple}, {KeyChangeAtNextAuth, p.ChangeAtNextAuth},
		{KeyForcePIN, p.ForcePIN}, {KeyRequireAlphanumeric, p.RequireAlphanumeric},
	}
}

// payload returns the policy's keys as a plist dictionary (integers as
// int64 so they are written as <integer>).
func (p *Policy) payload() map[string]any {
	m := map[string]any{}
	for _, b := range p.bools() {
		if b.v.Set {
			m[b.key] = b.v.Value
		}
	}
	for _, n := range p.ints() {
		if n.v.Set {
			m[n.key] = n.v.Value
		}
	}
	if p.CustomRegex != nil {
		cr := map[string]any{"passwordContentRegex": p.CustomRegex.Regex}
		if len(p.CustomRegex.Description) > 0 {
			d := map[string]any{}
			for k, v := range p.CustomRegex.Description {
				d[k] = v
			}
			cr["passwordContentDescription"] = d
		}
		m[KeyCustomRegex] = cr
	}
	return m
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
		return "<string>"
	case bool:
		return "<boolean>"
	case uint64, int64:
		return "<integer>"
	case float64, float32:
		return "<real>"
	case []byte:
		return "<data>"
	case time.Time:
		return "<date>"
	case []any:
		return "<array>"
	case map[string]any:
		return "<dict>"
	}
	return fmt.Sprintf("%T", v)
}
