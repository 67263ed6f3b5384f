// Package token is the SecureToken side of FileVault recovery: which local
// accounts can unlock a Mac (SecureToken holders), what changed between two
// UserList answers, and what an admin should look at. It is pure: no I/O,
// no logging.
//
// Background (seed 004): only end users should hold SecureTokens. An extra
// admin with a token complicates password resets and appears on the
// FileVault unlock screen; the personal recovery key, escrowed by fvescrow,
// is the recovery path for a forgotten password, and the bootstrap token
// lets the MDM grant tokens to accounts created later.
package token

import (
	"fmt"
	"slices"
	"strings"

	"github.com/fvescrow/fvescrow/fde"
)

// Account is one local account as a UserList answer reports it.
type Account struct {
	UserName       string
	FullName       string
	UID            int64 // -1 when unknown
	GUID           string
	HasSecureToken fde.Flag
	MobileAccount  fde.Flag
	IsLoggedIn     fde.Flag
}

// FromUserList converts a parsed UserList answer, sorted by user name.
func FromUserList(ul *fde.UserList) []Account {
	out := make([]Account, 0, len(ul.Users))
	for _, u := range ul.Users {
		if u.UserName == "" {
			continue
		}
		out = append(out, Account{
			UserName: u.UserName, FullName: u.FullName, UID: u.UID, GUID: u.UserGUID,
			HasSecureToken: u.HasSecureToken, MobileAccount: u.MobileAccount, IsLoggedIn: u.IsLoggedIn,
		})
	}
	slices.SortFunc(out, func(a, b Account) int { return strings.Compare(a.UserName, b.UserName) })
	return out
}

// ChangeKind says what changed about an account.
type ChangeKind string

const (
	Added       ChangeKind = "added"
	Removed     ChangeKind = "removed"
	TokenGained ChangeKind = "securetoken-granted"
	TokenLost   ChangeKind = "securetoken-lost"
	Updated     ChangeKind = "updated" // name, UID, GUID or account type changed
)

// Change is one difference between two inventories.
type Change struct {
	Kind     ChangeKind
	UserName string
	Detail   string
}

func (c Change) String() string {
	if c.Detail == "" {
		return fmt.Sprintf("%s %s", c.UserName, c.Kind)
	}
	return fmt.Sprintf("%s %s (%s)", c.UserName, c.Kind, c.Detail)
}

// Diff lists what changed from old to new, keyed by user name. Login state is
// not a change: it moves all day.
func Diff(old, new []Account) []Change {
	byName := func(as []Account) map[string]Account {
		m := make(map[string]Account, len(as))
		for _, a := range as {
			m[a.UserName] = a
		}
		return m
	}
	o, n := byName(old), byName(new)
	var out []Change
	for _, a := range new {
		prev, ok := o[a.UserName]
		if !ok {
			d := ""
			if a.HasSecureToken.True() {
				d = "holds a SecureToken"
			}
			out = append(out, Change{Kind: Added, UserName: a.UserName, Detail: d})
			continue
		}
		switch {
		case !prev.HasSecureToken.True() && a.HasSecureToken.True():
			out = append(out, Change{Kind: TokenGained, UserName: a.UserName})
		case prev.HasSecureToken.True() && a.HasSecureToken == fde.FlagFalse:
			out = append(out, Change{Kind: TokenLost, UserName: a.UserName})
		}
		var diffs []string
		if prev.UID != a.UID && prev.UID >= 0 && a.UID >= 0 {
			diffs = append(diffs, fmt.Sprintf("UID %d → %d", prev.UID, a.UID))
		}
		if prev.GUID != a.GUID && prev.GUID != "" && a.GUID != "" {
			diffs = append(diffs, "GUID changed")
		}
		if prev.FullName != a.FullName {
			diffs = append(diffs, "full name changed")
		}
		if prev.MobileAccount != a.MobileAccount && a.MobileAccount != fde.FlagUnknown {
			diffs = append(diffs, "mobile account "+a.MobileAccount.String())
		}
		if len(diffs) > 0 {
			out = append(out, Change{Kind: Updated, UserName: a.UserName, Detail: strings.Join(diffs, ", ")})
		}
	}
	for _, a := range old {
		if _, ok := n[a.UserName]; !ok {
			out = append(out, Change{Kind: Removed, UserName: a.UserName})
		}
	}
	return out
}

// Holders returns the accounts that hold a SecureToken.
func Holders(as []Account) []Account {
	var out []Account
	for _, a := range as {
		if a.HasSecureToken.True() {
			out = append(out, a)
		}
	}
	return out
}
