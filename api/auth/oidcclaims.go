package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/fvescrow/fvescrow/escrow"
	"golang.org/x/oauth2"
)

// maxGroups bounds the groups a sign-in may carry. Beyond it the sign-in is
// refused rather than truncated: a dropped group could be the one that
// makes a reveal need approval.
const maxGroups = 1000

// claims is what sign-in reads from the ID token (and UserInfo).
type claims struct {
	Email         string
	EmailVerified *bool // nil when the IdP does not say (Entra ID)
	Name          string
	Username      string
	Groups        []string
	AMR           []string
	ACR           string
}

func (c claims) username() string {
	switch {
	case c.Username != "":
		return c.Username
	case c.Email != "":
		return c.Email
	}
	return "oidc-user"
}

// hasMFA reports whether the token shows a second factor.
func (c claims) hasMFA(methods []string, acr string) bool {
	if acr != "" && c.ACR == acr {
		return true
	}
	for _, m := range c.AMR {
		if slices.Contains(methods, m) {
			return true
		}
	}
	return false
}

// inDomain reports whether the e-mail address is in one of domains and not
// marked unverified.
func (c claims) inDomain(domains []string) bool {
	if c.EmailVerified != nil && !*c.EmailVerified {
		return false
	}
	at := strings.LastIndexByte(c.Email, '@')
	if at < 0 {
		return false
	}
	d := strings.ToLower(c.Email[at+1:])
	for _, want := range domains {
		if strings.EqualFold(d, want) {
			return true
		}
	}
	return false
}

// mapRoles returns the roles c's groups (or verified e-mail) grant, in the
// order of escrow.AllRoles.
func mapRoles(m map[escrow.Role][]string, c claims) []escrow.Role {
	var out []escrow.Role
	for _, role := range escrow.AllRoles {
		for _, g := range m[role] {
			if addr, ok := strings.CutPrefix(g, "email:"); ok {
				if c.EmailVerified != nil && *c.EmailVerified && c.Email != "" && strings.EqualFold(addr, c.Email) {
					out = append(out, role)
					break
				}
				continue
			}
			if slices.Contains(c.Groups, g) {
				out = append(out, role)
				break
			}
		}
	}
	return out
}

// groupSummary lists groups for an audit record, bounded.
func groupSummary(groups []string) string {
	if len(groups) == 0 {
		return "(none)"
	}
	if len(groups) > 20 {
		return strings.Join(groups[:20], ",") + fmt.Sprintf(",... (%d in all)", len(groups))
	}
	return strings.Join(groups, ",")
}

// claims reads the verified ID token's claims; groups come from UserInfo
// when the ID token does not carry the groups claim at all.
func (o *OIDC) claims(ctx context.Context, d *discovered, idt *oidc.IDToken, tok *oauth2.Token) (claims, error) {
	var raw map[string]any
	if err := idt.Claims(&raw); err != nil {
		return claims{}, err
	}
	c := claims{Email: str(raw["email"]), Name: str(raw["name"]), Username: str(raw["preferred_username"]),
		AMR: strList(raw["amr"]), ACR: str(raw["acr"])}
	if v, ok := boolClaim(raw["email_verified"]); ok {
		c.EmailVerified = &v
	}
	groups, found := lookup(raw, o.cfg.GroupsClaim)
	if !found && d.provider.UserInfoEndpoint() != "" {
		ui, err := d.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return claims{}, fmt.Errorf("user info: %w", errors.New(userInfoError(err)))
		}
		if ui.Subject != idt.Subject {
			return claims{}, errors.New("user info is about another subject")
		}
		var uraw map[string]any
		if err := ui.Claims(&uraw); err != nil {
			return claims{}, err
		}
		groups, _ = lookup(uraw, o.cfg.GroupsClaim)
	}
	c.Groups = strList(groups)
	if len(c.Groups) > maxGroups {
		return claims{}, fmt.Errorf("the user is in %d groups, more than %d", len(c.Groups), maxGroups)
	}
	return c, nil
}

// userInfoError keeps the status of a failed UserInfo call and drops the
// body go-oidc quotes (it is the IdP's text, possibly personal data).
func userInfoError(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": "); i > 0 && i < 40 {
		return s[:i]
	}
	return "request failed"
}

// lookup finds a claim by name; a dotted name walks into nested objects when
// no top-level claim has that name.
func lookup(m map[string]any, name string) (any, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	parts := strings.Split(name, ".")
	var cur any = m
	for _, p := range parts {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// strList reads a claim that is a list of strings or a single string.
func strList(v any) []string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil
		}
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			if s, ok := x.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// boolClaim reads a boolean some IdPs send as a string.
func boolClaim(v any) (bool, bool) {
	switch v := v.(type) {
	case bool:
		return v, true
	case string:
		var b bool
		if err := json.Unmarshal([]byte(v), &b); err == nil {
			return b, true
		}
	}
	return false, false
}
