package pwpolicy

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ErrResetTarget: the account named for a forced reset is not acceptable.
var ErrResetTarget = errors.New("reset target")

// FirstUserUID is the first UID macOS gives to people's accounts; lower
// UIDs belong to system accounts.
const FirstUserUID = 500

// ResetTarget names the one account whose password must change at its next
// login. Exactly one of User and UID is set.
type ResetTarget struct {
	User string // short name
	UID  string // decimal UID, as typed
	// AllowSystem permits UIDs 1-499. Root (UID 0) is always refused.
	AllowSystem bool
}

// A conservative subset of macOS short names: no leading '-', nothing the
// shell would interpret.
var shortNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// Validate checks the target without looking at any Mac.
func (t ResetTarget) Validate() error {
	switch {
	case t.User == "" && t.UID == "":
		return fmt.Errorf("%w: name the account with a user name or a UID", ErrResetTarget)
	case t.User != "" && t.UID != "":
		return fmt.Errorf("%w: give a user name or a UID, not both", ErrResetTarget)
	case t.User != "":
		if len(t.User) > 255 {
			return fmt.Errorf("%w: user name longer than 255 bytes", ErrResetTarget)
		}
		if !shortNameRE.MatchString(t.User) {
			return fmt.Errorf("%w: user name must be a macOS short name (letters, digits, _ . -, not starting with -)", ErrResetTarget)
		}
		if strings.Trim(t.User, "0123456789") == "" {
			return fmt.Errorf("%w: user name %q is all digits; give a UID as a UID", ErrResetTarget, t.User)
		}
		if t.User == "root" {
			return fmt.Errorf("%w: refusing root", ErrResetTarget)
		}
	default:
		uid, err := parseUID(t.UID)
		if err != nil {
			return err
		}
		if uid == 0 {
			return fmt.Errorf("%w: refusing UID 0 (root)", ErrResetTarget)
		}
		if uid < FirstUserUID && !t.AllowSystem {
			return fmt.Errorf("%w: UID %d belongs to a system account (below %d); allow it explicitly if you mean it", ErrResetTarget, uid, FirstUserUID)
		}
	}
	return nil
}

func parseUID(s string) (int, error) {
	if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%w: UID must be a decimal number without sign or leading zeros", ErrResetTarget)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > 1<<31-1 {
		return 0, fmt.Errorf("%w: UID out of range", ErrResetTarget)
	}
	return int(n), nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ResetScript returns a POSIX shell script that makes one account choose a
// new password at its next login with
// `pwpolicy -u NAME -setpolicy "newPasswordRequired=1"` (seed 000): the
// per-host alternative to changeAtNextAuth in a device profile. The script
// carries no credentials, runs as root, looks the account up, refuses root
// and system accounts (UID below 500) at run time too, and says what it did.
func ResetScript(t ResetTarget) (string, error) {
	if err := t.Validate(); err != nil {
		return "", err
	}
	allow := "0"
	if t.AllowSystem {
		allow = "1"
	}
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# Written by fvescrow pwpolicy reset-script. It forces one account to choose
# a new password at its next login. It carries no credentials and changes no
# password, SecureToken or FileVault setting by itself: the user does, by
# choosing the new password at login. Run it as root on the Mac.
set -eu

msg() { printf 'fvescrow-reset: %s\n' "$*"; }
fail() { printf 'fvescrow-reset: %s\n' "$*" >&2; exit 1; }

`)
	fmt.Fprintf(&b, "allow_system=%s\n", allow)
	if t.User != "" {
		fmt.Fprintf(&b, "user=%s\n", shellQuote(t.User))
		b.WriteString(`[ "$(id -u)" -eq 0 ] || fail "run this as root"
uid=$(id -u "$user" 2>/dev/null) || fail "no account named $user"
`)
	} else {
		fmt.Fprintf(&b, "uid=%s\n", shellQuote(t.UID))
		b.WriteString(`[ "$(id -u)" -eq 0 ] || fail "run this as root"
user=$(id -un "$uid" 2>/dev/null) || fail "no account with UID $uid"
[ -n "$user" ] || fail "no account with UID $uid"
[ "$(id -u "$user" 2>/dev/null)" = "$uid" ] || fail "account $user does not have UID $uid"
`)
	}
	b.WriteString(`case "$uid" in '' | *[!0-9]*) fail "unexpected UID for $user" ;; esac
[ "$uid" -ne 0 ] || fail "refusing root"
if [ "$uid" -lt 500 ] && [ "$allow_system" -ne 1 ]; then
	fail "refusing system account $user (UID $uid)"
fi
pwpolicy -u "$user" -setpolicy "newPasswordRequired=1"
msg "$user (UID $uid) must choose a new password at the next login"
`)
	return b.String(), nil
}
