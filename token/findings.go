package token

import (
	"fmt"
	"slices"
	"strings"

	"github.com/fvescrow/fvescrow/fde"
)

// Severity of a finding.
type Severity string

const (
	Warning Severity = "warning"
	Info    Severity = "info"
	Problem Severity = "problem"
)

// Finding is something about a Mac's recoverability an admin should see.
type Finding struct {
	Severity Severity
	Code     string
	Message  string
}

// State is what fvescrow knows about one Mac, as input to Assess.
type State struct {
	FileVault       fde.Flag // FDE_Enabled
	HasPRK          fde.Flag // FDE_HasPersonalRecoveryKey
	PRKEscrowed     bool     // a current decrypted PRK is in escrow
	PRKVerified     bool     // the Mac later reported a CMS of that same key
	PRKDisclosed    bool     // the current key was revealed and not yet rotated
	BootstrapAllows string   // BootstrapTokenAllowedForAuthentication
	BootstrapHeld   bool     // a bootstrap token is escrowed
	Accounts        []Account
	// ManagementAccounts are account names the organisation uses for IT
	// administration; a SecureToken on them is flagged (seed 004).
	ManagementAccounts []string
}

// Verdict says whether, and how, fvescrow can get a user back into the Mac.
type Verdict struct {
	Recoverable bool
	// Paths are the recovery routes that work today, best first.
	Paths    []string
	Findings []Finding
}

// Assess gives the recoverability verdict and findings for a Mac.
func Assess(s State) Verdict {
	var v Verdict
	add := func(sev Severity, code, format string, args ...any) {
		v.Findings = append(v.Findings, Finding{Severity: sev, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	holders := Holders(s.Accounts)
	if s.FileVault == fde.FlagFalse {
		v.Recoverable = true
		v.Paths = append(v.Paths, "FileVault is off: the disk is not encrypted")
		add(Problem, "filevault-off", "FileVault is off; data on this Mac is not protected at rest")
	}
	switch {
	case s.PRKEscrowed && s.PRKDisclosed:
		v.Recoverable = true
		v.Paths = append(v.Paths, "escrowed personal recovery key (already disclosed: rotate it)")
		add(Warning, "prk-disclosed", "the escrowed recovery key was revealed and has not been rotated yet")
	case s.PRKEscrowed:
		v.Recoverable = true
		p := "escrowed personal recovery key"
		if s.PRKVerified {
			p += " (verified by the Mac)"
		}
		v.Paths = append(v.Paths, p)
	case s.FileVault.True() && s.HasPRK.True():
		add(Problem, "prk-not-escrowed", "the Mac has a personal recovery key but fvescrow does not hold it: FileVault predates the escrow profile, or the blob is undecryptable; the key must be regenerated")
	case s.FileVault.True() && s.HasPRK == fde.FlagFalse:
		add(Problem, "no-prk", "FileVault is on without a personal recovery key; nothing can unlock the disk if every token holder forgets their password")
	}
	if s.BootstrapHeld {
		v.Paths = append(v.Paths, "escrowed bootstrap token (grants SecureTokens to new accounts; not a disk unlock by itself)")
	} else if s.BootstrapAllows == "allowed" {
		add(Info, "bootstrap-not-escrowed", "the Mac supports a bootstrap token but none is escrowed yet")
	}
	if len(s.Accounts) > 0 && s.FileVault.True() && len(holders) == 0 && slices.ContainsFunc(s.Accounts, func(a Account) bool { return a.HasSecureToken != fde.FlagUnknown }) {
		add(Problem, "no-token-holder", "no account reports a SecureToken; no one can unlock FileVault with a password")
	}
	var mgmt []string
	for _, h := range holders {
		if slices.ContainsFunc(s.ManagementAccounts, func(m string) bool { return strings.EqualFold(m, h.UserName) }) {
			mgmt = append(mgmt, h.UserName)
		}
	}
	if len(mgmt) > 0 {
		add(Warning, "management-account-token", "management account %s holds a SecureToken; only end users should, since an extra token holder complicates resets and appears at the FileVault screen", strings.Join(mgmt, ", "))
	}
	for _, a := range s.Accounts {
		if a.MobileAccount.True() && a.HasSecureToken == fde.FlagFalse {
			add(Warning, "mobile-account-without-token", "mobile account %s has no SecureToken and cannot unlock FileVault", a.UserName)
		}
	}
	return v
}
