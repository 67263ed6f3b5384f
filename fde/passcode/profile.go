package passcode

import (
	"fmt"
	"io"

	"github.com/fvescrow/fvescrow/fde"
)

// DefaultIdentifier is the PayloadIdentifier of passcode profiles. Keep it
// stable so a re-sent profile replaces the installed one.
const DefaultIdentifier = "com.github.fvescrow.passcode"

// ProfileOptions configure NewProfile.
type ProfileOptions struct {
	Identifier   string // default DefaultIdentifier
	Organization string
	// Scope is PayloadScope: "System" (default, device channel) or "User".
	Scope string
	Rand  io.Reader // UUID source; crypto/rand when nil
}

// NewProfile builds a configuration profile with one passcode payload
// holding exactly the policy's set keys, integers as <integer>. It does not
// lint; callers lint the result (Lint) before writing it.
func NewProfile(p Policy, o ProfileOptions) (*fde.Profile, error) {
	if o.Identifier == "" {
		o.Identifier = DefaultIdentifier
	}
	switch o.Scope {
	case "":
		o.Scope = "System"
	case "System", "User":
	default:
		return nil, fmt.Errorf("passcode profile: scope %q: want System or User", o.Scope)
	}
	if p.CustomRegex != nil && p.CustomRegex.Regex == "" {
		return nil, fmt.Errorf("passcode profile: customRegex needs an expression")
	}
	b := fde.ProfileBuilder{Identifier: o.Identifier, Rand: o.Rand}
	prof, err := b.New("Passcode policy", "Password and passcode rules.", o.Organization)
	if err != nil {
		return nil, fmt.Errorf("passcode profile: %w", err)
	}
	prof.PayloadScope = o.Scope
	hdr, err := b.Header(PayloadType, "passwordpolicy", "Passcode")
	if err != nil {
		return nil, fmt.Errorf("passcode profile: %w", err)
	}
	m := p.payload()
	m["PayloadDisplayName"] = hdr.PayloadDisplayName
	m["PayloadIdentifier"] = hdr.PayloadIdentifier
	m["PayloadType"] = hdr.PayloadType
	m["PayloadUUID"] = hdr.PayloadUUID
	m["PayloadVersion"] = int64(hdr.PayloadVersion)
	prof.PayloadContent = append(prof.PayloadContent, m)
	return prof, nil
}
