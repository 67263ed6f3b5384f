package main

import (
	"fmt"

	"github.com/fvescrow/fvescrow/fde/passcode"
	"github.com/spf13/cobra"
)

func newProfilePasscodeCmd() *cobra.Command {
	var (
		o                        passcode.ProfileOptions
		out, minOS               string
		regex, regexDesc         string
		allowSimple, alnum       bool
		forcePIN, changeNextAuth bool
		ints                     = map[string]*int64{}
	)
	c := &cobra.Command{
		Use:   "passcode [flags] [-o FILE]",
		Short: "Write a passcode policy profile (com.apple.mobiledevice.passwordpolicy)",
		Long: `Write a profile with one passcode payload holding exactly the keys whose
flags are given (integers written as <integer>). The profile is linted
before it is written: errors stop it (exit 2), warnings go to standard
error.

A passcode profile does not make existing passwords change (seed 000): for
accounts that already exist use 'fvescrow pwpolicy reset-script' per host.
--change-at-next-auth is refused in a device (System) profile, where it
resets every user's password, admins included, on every redeploy; it is
allowed with --scope User.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var p passcode.Policy
			fl := cmd.Flags()
			if fl.Changed("allow-simple") {
				p.AllowSimple = passcode.SetBool(allowSimple)
			}
			if fl.Changed("require-alphanumeric") {
				p.RequireAlphanumeric = passcode.SetBool(alnum)
			}
			if fl.Changed("force-pin") {
				p.ForcePIN = passcode.SetBool(forcePIN)
			}
			if fl.Changed("change-at-next-auth") {
				p.ChangeAtNextAuth = passcode.SetBool(changeNextAuth)
			}
			set := func(flag string, dst *passcode.Int) {
				if fl.Changed(flag) {
					*dst = passcode.SetInt(*ints[flag])
				}
			}
			set("min-length", &p.MinLength)
			set("min-complex-chars", &p.MinComplexChars)
			set("max-failed-attempts", &p.MaxFailedAttempts)
			set("minutes-until-failed-login-reset", &p.MinutesUntilFailedLoginReset)
			set("max-grace-period", &p.MaxGracePeriod)
			set("max-inactivity", &p.MaxInactivity)
			set("max-pin-age-days", &p.MaxPINAgeInDays)
			set("pin-history", &p.PINHistory)
			if fl.Changed("custom-regex") {
				p.CustomRegex = &passcode.CustomRegex{Regex: regex}
				if regexDesc != "" {
					p.CustomRegex.Description = map[string]string{"default": regexDesc}
				}
			} else if regexDesc != "" {
				return badInput(fmt.Errorf("--custom-regex-description needs --custom-regex"))
			}
			if minOS != "" && !passcode.ValidVersion(minOS) {
				return badInput(fmt.Errorf("--min-os-version %q: want a version such as 14.0", minOS))
			}
			prof, err := passcode.NewProfile(p, o)
			if err != nil {
				return badInput(err)
			}
			xml, err := prof.XML()
			if err != nil {
				return err
			}
			r, err := passcode.Lint(xml, passcode.LintOptions{Platform: passcode.MacOS, MinOSVersion: minOS})
			if err != nil {
				return err
			}
			for _, f := range r.Findings {
				fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: %s\n", f)
			}
			if r.HasErrors() {
				return badInput(fmt.Errorf("the passcode policy has errors (listed above); no profile written"))
			}
			return writeOutput(cmd, out, xml, 0o644)
		},
	}
	f := c.Flags()
	intFlag := func(name, usage string) {
		ints[name] = new(int64)
		f.Int64Var(ints[name], name, 0, usage)
	}
	intFlag("min-length", "minLength: minimum number of characters (0-16)")
	f.BoolVar(&alnum, "require-alphanumeric", false, "requireAlphanumeric: require a letter and a digit")
	intFlag("min-complex-chars", "minComplexChars: minimum characters other than letters and digits (0-4)")
	f.BoolVar(&allowSimple, "allow-simple", false, "allowSimple (--allow-simple=false forbids runs such as aaa, 123 or CBA)")
	intFlag("max-failed-attempts", "maxFailedAttempts before the Mac locks (2-11)")
	intFlag("minutes-until-failed-login-reset", "minutesUntilFailedLoginReset: lockout duration (needs --max-failed-attempts)")
	intFlag("max-grace-period", "maxGracePeriod in minutes")
	intFlag("max-inactivity", "maxInactivity in minutes (macOS: up to 60)")
	intFlag("max-pin-age-days", "maxPINAgeInDays: days before the password must change (0-730)")
	intFlag("pin-history", "pinHistory: number of previous passwords that cannot be reused (1-50)")
	f.BoolVar(&forcePIN, "force-pin", false, "forcePIN")
	f.BoolVar(&changeNextAuth, "change-at-next-auth", false, "changeAtNextAuth (refused in a System profile; see above)")
	f.StringVar(&regex, "custom-regex", "", "customRegex passwordContentRegex (ICU, whole password; macOS 14+)")
	f.StringVar(&regexDesc, "custom-regex-description", "", "customRegex passwordContentDescription shown to users")
	f.StringVar(&minOS, "min-os-version", "", "oldest macOS `VERSION` the profile targets")
	f.StringVar(&o.Identifier, "identifier", passcode.DefaultIdentifier, "profile PayloadIdentifier (keep it stable so re-sends replace the profile)")
	f.StringVar(&o.Organization, "organization", "", "PayloadOrganization")
	f.StringVar(&o.Scope, "scope", "System", "PayloadScope: System (device) or User")
	f.StringVarP(&out, "output", "o", "", "write to `FILE` instead of standard output")
	return c
}
