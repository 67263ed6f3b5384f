// Package appleschema validates property lists fvescrow writes (profiles, MDM
// commands) against Apple's device-management YAML schema
// (github.com/apple/device-management), so every key name, type, range and
// required key matches what Apple documents. It is a test helper.
//
// The schema files are a snapshot under snapshot/, stripped of Apple's prose
// (only structure remains) so tests run on a clean clone. TestSnapshotInSync
// compares the snapshot with the full source when it is present
// (FVESCROW_APPLE_SCHEMA, or ../shared/apple-device-management found upward
// from the package), and `go test ./internal/testutil/appleschema -update`
// regenerates it.
package appleschema

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/micromdm/plist"
	"gopkg.in/yaml.v3"
)

//go:embed snapshot
var snapshot embed.FS

// Key is one entry of payloadkeys/responsekeys/subkeys.
type Key struct {
	Key         string            `yaml:"key"`
	Type        string            `yaml:"type"`
	Presence    string            `yaml:"presence"`
	RangeList   []any             `yaml:"rangelist"`
	Range       *Range            `yaml:"range"`
	Format      string            `yaml:"format"`
	Default     any               `yaml:"default"`
	Subkeys     []Key             `yaml:"subkeys"`
	Repetition  *Repetition       `yaml:"repetition"`
	SupportedOS map[string]OSInfo `yaml:"supportedOS"`
}

// Range bounds a number.
type Range struct {
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
}

// Repetition bounds an array's length.
type Repetition struct {
	Min *int `yaml:"min"`
	Max *int `yaml:"max"`
}

// OSInfo is the availability of a payload or key on one platform.
type OSInfo struct {
	Introduced string `yaml:"introduced"`
	Removed    string `yaml:"removed"`
	Deprecated string `yaml:"deprecated"`
}

// File is one schema file.
type File struct {
	Name    string
	Payload struct {
		PayloadType string            `yaml:"payloadtype"`
		RequestType string            `yaml:"requesttype"`
		SupportedOS map[string]OSInfo `yaml:"supportedOS"`
	} `yaml:"payload"`
	PayloadKeys  []Key `yaml:"payloadkeys"`
	ResponseKeys []Key `yaml:"responsekeys"`
}

// Schema indexes schema files by payload type and request type.
type Schema struct {
	payloads map[string][]*File // payload type → files (com.apple.MCX has several)
	commands map[string]*File
}

// Load reads the embedded snapshot.
func Load() (*Schema, error) {
	sub, err := fs.Sub(snapshot, "snapshot/mdm")
	if err != nil {
		return nil, err
	}
	return LoadFS(sub)
}

// LoadFS reads schema files from fsys laid out as Apple's mdm/ folder
// (profiles/, commands/, checkin/).
func LoadFS(fsys fs.FS) (*Schema, error) {
	s := &Schema{payloads: map[string][]*File{}, commands: map[string]*File{}}
	for _, dir := range []string{"profiles", "commands"} {
		names, err := fs.Glob(fsys, dir+"/*.yaml")
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			b, err := fs.ReadFile(fsys, n)
			if err != nil {
				return nil, err
			}
			f := &File{Name: n}
			if err := yaml.Unmarshal(b, f); err != nil {
				return nil, fmt.Errorf("%s: %w", n, err)
			}
			if pt := f.Payload.PayloadType; pt != "" {
				s.payloads[pt] = append(s.payloads[pt], f)
			}
			if rt := f.Payload.RequestType; rt != "" {
				s.commands[rt] = f
			}
		}
	}
	if len(s.payloads["TopLevel"]) == 0 || len(s.payloads["CommonPayloadKeys"]) == 0 {
		return nil, errors.New("schema: TopLevel and CommonPayloadKeys are required")
	}
	return s, nil
}

// PayloadKeys returns the keys Apple defines for a payload type (nil if the
// type is unknown).
func (s *Schema) PayloadKeys(payloadType string) []Key {
	var keys []Key
	for _, f := range s.payloads[payloadType] {
		keys = append(keys, f.PayloadKeys...)
	}
	return keys
}

// PayloadFiles returns the schema files of a payload type.
func (s *Schema) PayloadFiles(payloadType string) []*File { return s.payloads[payloadType] }

// Options narrow validation.
type Options struct {
	// Platform, when set ("macOS", "iOS"), requires every payload to be
	// available on it.
	Platform string
}

// ValidateProfile checks an XML configuration profile: the top-level keys,
// then every PayloadContent item against CommonPayloadKeys plus its payload
// type's keys. It returns every problem found, joined.
func (s *Schema) ValidateProfile(b []byte, opts Options) error {
	root, err := decode(b)
	if err != nil {
		return err
	}
	var errs []error
	top := s.payloads["TopLevel"][0].PayloadKeys
	// PayloadContent items are checked per payload type below.
	errs = append(errs, checkDict("", root, withoutSubkeys(top, "PayloadContent"))...)
	items, _ := root["PayloadContent"].([]any)
	seen := map[string]bool{}
	for i, it := range items {
		p := fmt.Sprintf("PayloadContent[%d]", i)
		m, ok := it.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: want dictionary", p))
			continue
		}
		pt, _ := m["PayloadType"].(string)
		files := s.payloads[pt]
		if len(files) == 0 {
			errs = append(errs, fmt.Errorf("%s: no schema for payload type %q", p, pt))
			continue
		}
		if opts.Platform != "" && !availableOn(files, opts.Platform) {
			errs = append(errs, fmt.Errorf("%s: payload type %s is not available on %s", p, pt, opts.Platform))
		}
		keys := merge(s.payloads["CommonPayloadKeys"][0].PayloadKeys, s.PayloadKeys(pt))
		errs = append(errs, checkDict(p+".", m, keys)...)
		for _, k := range []string{"PayloadIdentifier", "PayloadUUID"} {
			if v, _ := m[k].(string); v != "" {
				if seen[k+v] {
					errs = append(errs, fmt.Errorf("%s: duplicate %s %q", p, k, v))
				}
				seen[k+v] = true
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateCommand checks an MDM command plist: CommandUUID and a Command
// dictionary whose RequestType has a schema and whose keys match it.
func (s *Schema) ValidateCommand(b []byte) error {
	root, err := decode(b)
	if err != nil {
		return err
	}
	var errs []error
	if u, ok := root["CommandUUID"].(string); !ok || u == "" {
		errs = append(errs, errors.New("command UUID: required string missing"))
	}
	cmd, ok := root["Command"].(map[string]any)
	if !ok {
		return errors.Join(append(errs, errors.New("command dictionary missing"))...)
	}
	rt, _ := cmd["RequestType"].(string)
	f := s.commands[rt]
	if f == nil {
		return errors.Join(append(errs, fmt.Errorf("Command.RequestType: no schema for %q", rt))...)
	}
	keys := append([]Key{{Key: "RequestType", Type: "<string>", Presence: "required"}}, f.PayloadKeys...)
	errs = append(errs, checkDict("Command.", cmd, keys)...)
	for k := range root {
		if k != "CommandUUID" && k != "Command" {
			errs = append(errs, fmt.Errorf("%s: unknown key", k))
		}
	}
	return errors.Join(errs...)
}

// ValidateResponse checks the request-specific keys of a command result.
// Keys every result shares (UDID, Status, ...) are allowed.
func (s *Schema) ValidateResponse(requestType string, b []byte) error {
	root, err := decode(b)
	if err != nil {
		return err
	}
	f := s.commands[requestType]
	if f == nil {
		return fmt.Errorf("no schema for %q", requestType)
	}
	common := []Key{
		{Key: "UDID", Type: "<string>"}, {Key: "EnrollmentID", Type: "<string>"},
		{Key: "EnrollmentUserID", Type: "<string>"}, {Key: "UserID", Type: "<string>"},
		{Key: "CommandUUID", Type: "<string>", Presence: "required"}, {Key: "Status", Type: "<string>", Presence: "required"},
		{Key: "ErrorChain", Type: "<array>"}, {Key: "RejectionReason", Type: "<string>"},
	}
	return errors.Join(checkDict("", root, append(common, f.ResponseKeys...))...)
}

func decode(b []byte) (map[string]any, error) {
	var root any
	if err := plist.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("not a property list: %w", err)
	}
	m, ok := root.(map[string]any)
	if !ok {
		return nil, errors.New("root is not a dictionary")
	}
	return m, nil
}

func availableOn(files []*File, platform string) bool {
	for _, f := range files {
		if os, ok := f.Payload.SupportedOS[platform]; ok && os.Introduced != "" && os.Introduced != "n/a" {
			return true
		}
	}
	return false
}

// merge overlays specific keys on common ones (a payload may redefine
// PayloadContent, as pkcs1 does).
func merge(common, specific []Key) []Key {
	out := append([]Key(nil), specific...)
	have := map[string]bool{}
	for _, k := range specific {
		have[k.Key] = true
	}
	for _, k := range common {
		if !have[k.Key] {
			out = append(out, k)
		}
	}
	return out
}

func withoutSubkeys(keys []Key, name string) []Key {
	out := append([]Key(nil), keys...)
	for i := range out {
		if out[i].Key == name {
			out[i].Subkeys = nil
			out[i].Type = "<array>"
		}
	}
	return out
}

func checkDict(prefix string, m map[string]any, keys []Key) []error {
	var errs []error
	byName := map[string]Key{}
	var wildcard *Key
	for i, k := range keys {
		if k.Key == "ANY" || strings.HasPrefix(k.Key, "ANY ") {
			wildcard = &keys[i]
			continue
		}
		byName[k.Key] = k
		if _, ok := m[k.Key]; !ok && k.Presence == "required" {
			errs = append(errs, fmt.Errorf("%s%s: required key missing", prefix, k.Key))
		}
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		k, ok := byName[n]
		if !ok {
			if wildcard == nil {
				errs = append(errs, fmt.Errorf("%s%s: unknown key", prefix, n))
				continue
			}
			k = *wildcard
		}
		errs = append(errs, checkValue(prefix+n, m[n], k)...)
	}
	return errs
}

var formatCache = map[string]*regexp.Regexp{}

func checkValue(p string, v any, k Key) []error {
	want := strings.Trim(k.Type, "<>")
	got := kind(v)
	if want != "any" && want != got && !(want == "real" && got == "integer") {
		return []error{fmt.Errorf("%s: type is %s, schema says %s", p, got, want)}
	}
	var errs []error
	if len(k.RangeList) > 0 && !inList(v, k.RangeList) {
		errs = append(errs, fmt.Errorf("%s: value %v not in %v", p, v, k.RangeList))
	}
	if k.Range != nil {
		if f, ok := number(v); ok {
			if k.Range.Min != nil && f < *k.Range.Min {
				errs = append(errs, fmt.Errorf("%s: %v below minimum %v", p, v, *k.Range.Min))
			}
			if k.Range.Max != nil && f > *k.Range.Max {
				errs = append(errs, fmt.Errorf("%s: %v above maximum %v", p, v, *k.Range.Max))
			}
		}
	}
	if s, ok := v.(string); ok && k.Format != "" {
		re, ok := formatCache[k.Format]
		if !ok {
			re = regexp.MustCompile(k.Format)
			formatCache[k.Format] = re
		}
		if !re.MatchString(s) {
			errs = append(errs, fmt.Errorf("%s: %q does not match %s", p, s, k.Format))
		}
	}
	switch x := v.(type) {
	case map[string]any:
		if len(k.Subkeys) > 0 {
			errs = append(errs, checkDict(p+".", x, k.Subkeys)...)
		}
	case []any:
		if r := k.Repetition; r != nil {
			if (r.Min != nil && len(x) < *r.Min) || (r.Max != nil && len(x) > *r.Max) {
				errs = append(errs, fmt.Errorf("%s: %d items outside repetition bounds", p, len(x)))
			}
		}
		if len(k.Subkeys) > 0 {
			for i, e := range x {
				errs = append(errs, checkValue(fmt.Sprintf("%s[%d]", p, i), e, k.Subkeys[0])...)
			}
		}
	}
	return errs
}

func kind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, uint64:
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
	return reflect.TypeOf(v).String()
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	case float32:
		return float64(n), true
	}
	return math.NaN(), false
}

func inList(v any, list []any) bool {
	for _, e := range list {
		if f, ok := number(v); ok {
			switch n := e.(type) {
			case int:
				if f == float64(n) {
					return true
				}
			case float64:
				if f == n {
					return true
				}
			}
			continue
		}
		if fmt.Sprint(e) == fmt.Sprint(v) {
			return true
		}
		// YAML may read 'On' unquoted as a bool in other files; compare text.
		if b, ok := e.(bool); ok && strconv.FormatBool(b) == fmt.Sprint(v) {
			return true
		}
	}
	return false
}

// Strip returns a schema file reduced to its structure: Apple's prose
// (content, description, title, notes) is removed.
func Strip(src []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(src, &n); err != nil {
		return nil, err
	}
	stripNode(&n)
	return yaml.Marshal(&n)
}

var proseKeys = map[string]bool{"content": true, "description": true, "title": true, "notes": true, "Notes": true}

func stripNode(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if proseKeys[n.Content[i].Value] {
				continue
			}
			kept = append(kept, n.Content[i], n.Content[i+1])
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		stripNode(c)
	}
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
}

// SnapshotFiles lists the schema files in the snapshot, relative to mdm/.
func SnapshotFiles() ([]string, error) {
	var out []string
	err := fs.WalkDir(snapshot, "snapshot/mdm", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && path.Ext(p) == ".yaml" {
			out = append(out, strings.TrimPrefix(p, "snapshot/mdm/"))
		}
		return nil
	})
	return out, err
}

// SnapshotFile returns one snapshot file's bytes.
func SnapshotFile(rel string) ([]byte, error) { return snapshot.ReadFile("snapshot/mdm/" + rel) }
