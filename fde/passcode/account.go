package passcode

import (
	"fmt"

	"github.com/fvescrow/fvescrow/fde/passcode/pwpolicy"
)

// Identifiers of the account policies AccountPolicies writes. minChars
// keeps Apple's legacy identifier (and its minimumLength parameter) so
// tools that know it recognize it.
const (
	IDMinLength         = "com.apple.policy.legacy.minChars"
	idPrefix            = "com.github.fvescrow.passcode."
	IDRequireLetter     = idPrefix + "requireLetter"
	IDRequireDigit      = idPrefix + "requireDigit"
	IDMinComplexChars   = idPrefix + "minComplexChars"
	IDMaxConsecutive    = idPrefix + "maxConsecutiveCharacters"
	IDMaxSequential     = idPrefix + "maxSequentialCharacters"
	IDCustomRegex       = idPrefix + "customRegex"
	IDPINHistory        = idPrefix + "pinHistory"
	IDMaxPINAgeInDays   = idPrefix + "maxPINAgeInDays"
	IDMaxFailedAttempts = idPrefix + "maxFailedAttempts"
)

// AccountPolicies maps the policy to account policies for
// `pwpolicy -setaccountpolicies`: the content keys become content
// policies evaluated exactly as Check does, maxPINAgeInDays a change
// policy, maxFailedAttempts (with minutesUntilFailedLoginReset) an
// authentication policy. Keys with no account-policy equivalent are listed
// in notes.
func (p Policy) AccountPolicies() (*pwpolicy.Policies, []string, error) {
	ps := &pwpolicy.Policies{}
	var notes []string
	content := func(id, pred string, params map[string]any, desc string) {
		pol := pwpolicy.Policy{Identifier: id, Content: pred, Parameters: params}
		if desc != "" {
			pol.ContentDescription = map[string]string{"en": desc}
		}
		ps.PasswordContent = append(ps.PasswordContent, pol)
	}
	if p.MinLength.Set && p.MinLength.Value > 0 {
		n := p.MinLength.Value
		content(IDMinLength, fmt.Sprintf("policyAttributePassword matches '.{%d,}+'", n), map[string]any{"minimumLength": n}, "")
	}
	if p.RequireAlphanumeric.Value {
		content(IDRequireLetter, `policyAttributePassword matches '.*\\p{L}.*'`, nil, "")
		content(IDRequireDigit, `policyAttributePassword matches '.*\\p{Nd}.*'`, nil, "")
	}
	if p.MinComplexChars.Set && p.MinComplexChars.Value > 0 {
		content(IDMinComplexChars, fmt.Sprintf(`policyAttributePassword matches '(?:[\\p{L}\\p{N}]*[^\\p{L}\\p{N}]){%d}.*'`, p.MinComplexChars.Value),
			map[string]any{"minimumComplexCharacters": p.MinComplexChars.Value}, "")
	}
	if p.AllowSimple.Set && !p.AllowSimple.Value {
		content(IDMaxConsecutive, "policyAttributeConsecutiveCharacters <= policyAttributeMaximumConsecutiveCharacters",
			map[string]any{"policyAttributeMaximumConsecutiveCharacters": int64(SimpleRun - 1)}, "")
		content(IDMaxSequential, "policyAttributeSequentialCharacters <= policyAttributeMaximumSequentialCharacters",
			map[string]any{"policyAttributeMaximumSequentialCharacters": int64(SimpleRun - 1)}, "")
	}
	if cr := p.CustomRegex; cr != nil {
		desc := ""
		for _, k := range []string{"en", "en-US", "default"} {
			if desc == "" {
				desc = cr.Description[k]
			}
		}
		content(IDCustomRegex, "policyAttributePassword matches "+pwpolicy.QuoteString(cr.Regex), nil, desc)
	}
	if p.PINHistory.Set && p.PINHistory.Value > 0 {
		content(IDPINHistory, "none policyAttributePasswordHashes in policyAttributePasswordHistory",
			map[string]any{"policyAttributePasswordHistoryDepth": p.PINHistory.Value}, "")
	}
	if p.MaxPINAgeInDays.Set && p.MaxPINAgeInDays.Value > 0 {
		ps.PasswordChange = append(ps.PasswordChange, pwpolicy.Policy{
			Identifier: IDMaxPINAgeInDays,
			Content:    "policyAttributeCurrentTime > policyAttributeLastPasswordChangeTime + policyAttributeExpiresEveryNDays * 24 * 60 * 60",
			Parameters: map[string]any{"policyAttributeExpiresEveryNDays": p.MaxPINAgeInDays.Value},
		})
	}
	if p.MaxFailedAttempts.Set {
		pol := pwpolicy.Policy{
			Identifier: IDMaxFailedAttempts,
			Content:    "policyAttributeFailedAuthentications < policyAttributeMaximumFailedAuthentications",
			Parameters: map[string]any{"policyAttributeMaximumFailedAuthentications": p.MaxFailedAttempts.Value},
		}
		if m := p.MinutesUntilFailedLoginReset; m.Set && m.Value > 0 {
			pol.Content = "(" + pol.Content + ") OR (policyAttributeCurrentTime > policyAttributeLastFailedAuthenticationTime + autoEnableInSeconds)"
			pol.Parameters["autoEnableInSeconds"] = m.Value * 60
		}
		ps.Authentication = append(ps.Authentication, pol)
	} else if p.MinutesUntilFailedLoginReset.Set {
		notes = append(notes, "minutesUntilFailedLoginReset: not mapped, it needs maxFailedAttempts")
	}
	for _, n := range []struct {
		key  string
		set  bool
		note string
	}{
		{KeyForcePIN, p.ForcePIN.Set, "no account-policy equivalent"},
		{KeyMaxInactivity, p.MaxInactivity.Set, "a screen saver setting, not an account policy"},
		{KeyMaxGracePeriod, p.MaxGracePeriod.Set, "a screen saver setting, not an account policy"},
		{KeyChangeAtNextAuth, p.ChangeAtNextAuth.Set, "not mapped; for one account use `fvescrow pwpolicy reset-script` (newPasswordRequired)"},
	} {
		if n.set {
			notes = append(notes, n.key+": "+n.note)
		}
	}
	if ps.Len() == 0 {
		return nil, notes, fmt.Errorf("account policies: the passcode policy has no key with an account-policy equivalent")
	}
	for _, c := range pwpolicy.Categories {
		for i := range ps.In(c) {
			if err := ps.In(c)[i].Compile(); err != nil {
				return nil, notes, err
			}
		}
	}
	return ps, notes, nil
}
