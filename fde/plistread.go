package fde

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/micromdm/plist"
)

// MaxResultSize bounds a command result or other device plist fvescrow parses.
// ProfileList answers of large fleets' Macs stay well under 1 MiB.
const MaxResultSize = 4 << 20

// maxPlistDepth bounds nesting. The plist decoder recurses per level, so a
// deeply nested document from a device would otherwise cost stack and time.
const maxPlistDepth = 32

// ErrMalformedPlist: device bytes that are not an XML property list dictionary.
var ErrMalformedPlist = errors.New("malformed property list")

// ParseError names the field of a device response that was wrong. It never
// holds payload bytes: a SecurityInfo answer carries an encrypted PRK and
// other results may carry secrets.
type ParseError struct {
	Field string
	Err   error
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s: %v", e.Field, e.Err) }
func (e *ParseError) Unwrap() error { return e.Err }

// dict is a decoded plist dictionary with typed, tolerant accessors: a missing
// key is normal and yields the zero value; a key of the wrong type is recorded
// as a warning rather than failing the whole response.
type dict struct {
	m        map[string]any
	path     string
	warnings *[]string
}

// decodeDict reads an XML plist whose root is a dictionary.
func decodeDict(b []byte, limit int) (dict, error) {
	if len(b) > limit {
		return dict{}, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrMalformedPlist, len(b), limit)
	}
	if bytes.HasPrefix(b, []byte("bplist")) {
		return dict{}, fmt.Errorf("%w: binary property lists are not accepted", ErrMalformedPlist)
	}
	if err := checkXMLDepth(b, maxPlistDepth); err != nil {
		return dict{}, err
	}
	var root any
	if err := plist.Unmarshal(b, &root); err != nil {
		return dict{}, fmt.Errorf("%w: %v", ErrMalformedPlist, errors.Unwrap(err))
	}
	m, ok := root.(map[string]any)
	if !ok {
		return dict{}, fmt.Errorf("%w: root is not a dictionary", ErrMalformedPlist)
	}
	return dict{m: m, warnings: new([]string)}, nil
}

// checkXMLDepth rejects XML nested deeper than max before the recursive
// plist parser sees it. It also rejects non-XML input early.
func checkXMLDepth(b []byte, max int) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	depth, elems := 0, 0
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: not well-formed XML at byte %d", ErrMalformedPlist, d.InputOffset())
		}
		switch tok.(type) {
		case xml.StartElement:
			elems++
			if depth++; depth > max {
				return fmt.Errorf("%w: nested deeper than %d", ErrMalformedPlist, max)
			}
		case xml.EndElement:
			depth--
		}
	}
	if elems == 0 {
		return fmt.Errorf("%w: no XML elements", ErrMalformedPlist)
	}
	return nil
}

func (d dict) warn(key, want string, got any) {
	*d.warnings = append(*d.warnings, fmt.Sprintf("%s%s: want %s, got %s", d.path, key, want, plistKind(got)))
}

func plistKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case uint64, int64:
		return "integer"
	case float32, float64:
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

func (d dict) str(key string) string {
	v, ok := d.m[key]
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		d.warn(key, "string", v)
	}
	return s
}

func (d dict) flag(key string) Flag {
	v, ok := d.m[key]
	if !ok {
		return FlagUnknown
	}
	b, ok := v.(bool)
	if !ok {
		d.warn(key, "boolean", v)
		return FlagUnknown
	}
	return FlagOf(b)
}

// integer returns the value and whether it was present as an integer. Reals
// with an integral value are accepted with a warning: Apple's own examples
// type integers as reals.
func (d dict) integer(key string) (int64, bool) {
	v, ok := d.m[key]
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		if n > 1<<62 {
			d.warn(key, "integer in range", v)
			return 0, false
		}
		return int64(n), true
	case float64:
		if n == float64(int64(n)) {
			d.warn(key, "integer", v)
			return int64(n), true
		}
	}
	d.warn(key, "integer", v)
	return 0, false
}

func (d dict) data(key string) []byte {
	v, ok := d.m[key]
	if !ok {
		return nil
	}
	b, ok := v.([]byte)
	if !ok {
		d.warn(key, "data", v)
	}
	return b
}

func (d dict) sub(key string) (dict, bool) {
	v, ok := d.m[key]
	if !ok {
		return dict{}, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		d.warn(key, "dictionary", v)
		return dict{}, false
	}
	return dict{m: m, path: d.path + key + ".", warnings: d.warnings}, true
}

// dicts returns the dictionaries of an array, skipping (and warning about)
// other element types.
func (d dict) dicts(key string) []dict {
	v, ok := d.m[key]
	if !ok {
		return nil
	}
	arr, ok := v.([]any)
	if !ok {
		d.warn(key, "array", v)
		return nil
	}
	out := make([]dict, 0, len(arr))
	for i, e := range arr {
		m, ok := e.(map[string]any)
		if !ok {
			d.warn(fmt.Sprintf("%s[%d]", key, i), "dictionary", e)
			continue
		}
		out = append(out, dict{m: m, path: fmt.Sprintf("%s%s[%d].", d.path, key, i), warnings: d.warnings})
	}
	return out
}

// Flag is a boolean a device may or may not have reported.
type Flag uint8

const (
	FlagUnknown Flag = iota // the key was absent
	FlagFalse
	FlagTrue
)

// FlagOf converts a reported boolean.
func FlagOf(b bool) Flag {
	if b {
		return FlagTrue
	}
	return FlagFalse
}

// True reports whether the device said true.
func (f Flag) True() bool { return f == FlagTrue }

func (f Flag) String() string {
	switch f {
	case FlagTrue:
		return "true"
	case FlagFalse:
		return "false"
	}
	return "unknown"
}
