package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/fvescrow/fvescrow/fde/passcode"
	"github.com/fvescrow/fvescrow/fde/passcode/pwpolicy"
	"github.com/spf13/cobra"
)

func newPwpolicyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "pwpolicy",
		Short: "Account policies (pwpolicy -setaccountpolicies) and forced password resets",
	}
	c.AddCommand(newPwpolicyCheckCmd(), newPwpolicyFromProfileCmd(), newPwpolicyExplainCmd(), newPwpolicyResetScriptCmd())
	return c
}

func readPolicies(cmd *cobra.Command, name string) (*pwpolicy.Policies, error) {
	b, err := readInput(cmd, name, pwpolicy.MaxPolicySize)
	if err != nil {
		return nil, err
	}
	ps, warns, err := pwpolicy.Parse(b)
	for _, w := range warns {
		fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: warning: %s\n", w)
	}
	if err != nil {
		return nil, badInput(fmt.Errorf("%s: %w", inputName(name), err))
	}
	return ps, nil
}

var attrNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseAttr reads NAME=VALUE: a number, an RFC 3339 date (as Unix
// seconds), or text.
func parseAttr(s string) (string, pwpolicy.Value, error) {
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			continue
		}
		name, v := s[:i], s[i+1:]
		if !attrNameRE.MatchString(name) {
			break
		}
		if name == pwpolicy.AttrPassword {
			return "", pwpolicy.Value{}, errors.New("--attr: the password comes from standard input only")
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return name, pwpolicy.Number(f), nil
		}
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return name, pwpolicy.Number(float64(t.Unix())), nil
		}
		return name, pwpolicy.String(v), nil
	}
	return "", pwpolicy.Value{}, fmt.Errorf("--attr %q: want NAME=VALUE", s)
}

func newPwpolicyCheckCmd() *cobra.Command {
	var (
		stdin bool
		attrs []string
		now   string
	)
	c := &cobra.Command{
		Use:   "check POLICY --password-stdin [--attr NAME=VALUE ...]",
		Short: "Dry-run an account policy against a password, offline",
		Long: `Evaluate the account policies in POLICY (a pwpolicy -getaccountpolicies or
-setaccountpolicies plist) against the password read from standard input
(one trailing newline is dropped). Content policies pass when their predicate
is true, authentication policies when it is true (login allowed), change
policies when it is false (no change required).

Policies that need attributes of the user's record (failed
authentications, last password change time...) are evaluated only when
--attr supplies them (numbers, or RFC 3339 dates); otherwise they are listed
on standard error as not evaluated and do not count as failures. The
current time is now, or --now.

Exit status: 0 every evaluated policy passes, 1 some fail (each failing
policyIdentifier is printed on its own line), 2 bad input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !stdin {
				return badInput(errors.New("the password is read from standard input only: give --password-stdin"))
			}
			if args[0] == "-" {
				return badInput(errors.New("standard input carries the password; give the policy as a file"))
			}
			in := pwpolicy.Input{Attributes: map[string]pwpolicy.Value{}, Now: time.Now()}
			if now != "" {
				t, err := time.Parse(time.RFC3339, now)
				if err != nil {
					return badInput(fmt.Errorf("--now: want an RFC 3339 time: %w", err))
				}
				in.Now = t
			}
			for _, a := range attrs {
				name, v, err := parseAttr(a)
				if err != nil {
					return badInput(err)
				}
				in.Attributes[name] = v
			}
			ps, err := readPolicies(cmd, args[0])
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd, pwpolicy.MaxPasswordLength)
			if err != nil {
				return err
			}
			in.Password = pw
			results, err := ps.Check(in)
			if err != nil {
				return badInput(err)
			}
			var failed int
			var errs []error
			for _, r := range results {
				switch r.Outcome {
				case pwpolicy.Fail:
					failed++
					fmt.Fprintln(cmd.OutOrStdout(), r.Identifier)
				case pwpolicy.NotEvaluated:
					fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: not evaluated: %s (needs %s; give it with --attr %s=VALUE)\n", r.Identifier, r.Missing, r.Missing)
				case pwpolicy.Error:
					errs = append(errs, fmt.Errorf("policy %q: %w", r.Identifier, r.Err))
				}
			}
			if len(errs) > 0 {
				return badInput(errors.Join(errs...))
			}
			if failed > 0 {
				return silent(exitNo)
			}
			return nil
		},
	}
	f := c.Flags()
	f.BoolVar(&stdin, "password-stdin", false, "read the password from standard input (required)")
	f.StringArrayVar(&attrs, "attr", nil, "user record attribute `NAME=VALUE` (repeatable)")
	f.StringVar(&now, "now", "", "evaluate at this RFC 3339 `TIME` instead of now")
	return c
}

func newPwpolicyFromProfileCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "from-profile PROFILE [-o FILE]",
		Short: "Write the account policies equivalent to a passcode profile",
		Long: `Write the account-policy plist for 'pwpolicy -setaccountpolicies FILE' that
enforces the passcode payload of PROFILE: minLength, requireAlphanumeric,
minComplexChars, allowSimple and customRegex as content policies,
maxPINAgeInDays as a change policy, maxFailedAttempts (and
minutesUntilFailedLoginReset) as an authentication policy. Keys without an
equivalent are listed on standard error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := readInput(cmd, args[0], passcode.MaxProfileSize)
			if err != nil {
				return err
			}
			prof, err := passcode.ParseProfile(b)
			if err != nil {
				return badInput(fmt.Errorf("%s: %w", inputName(args[0]), err))
			}
			if len(prof.Payloads) == 0 {
				return badInput(fmt.Errorf("%s: no %s payload", inputName(args[0]), passcode.PayloadType))
			}
			if len(prof.Payloads) > 1 {
				fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: warning: %d passcode payloads; using the first\n", len(prof.Payloads))
			}
			p := prof.Payloads[0]
			for _, f := range p.Findings {
				if f.Severity == passcode.SeverityError {
					return badInput(fmt.Errorf("%s: %s (run 'fvescrow passcode lint')", inputName(args[0]), f))
				}
			}
			ps, notes, err := p.Policy.AccountPolicies()
			for _, n := range notes {
				fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: note: %s\n", n)
			}
			if err != nil {
				return badInput(err)
			}
			xml, err := ps.XML()
			if err != nil {
				return err
			}
			return writeOutput(cmd, out, xml, 0o644)
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "write to `FILE` instead of standard output")
	return c
}

func newPwpolicyExplainCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "explain POLICY",
		Short: "Describe each account policy in plain language",
		Long: `Print one line per policy in POLICY describing it in plain language: the
text the self-service portal shows users. Policies fvescrow cannot describe
are named by their policyIdentifier (or their policyContentDescription);
a raw regular expression is never shown.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := readPolicies(cmd, args[0])
			if err != nil {
				return err
			}
			for _, e := range ps.Explain() {
				fmt.Fprintln(cmd.OutOrStdout(), e.Text)
			}
			return nil
		},
	}
}

func newPwpolicyResetScriptCmd() *cobra.Command {
	var (
		t   pwpolicy.ResetTarget
		out string
	)
	c := &cobra.Command{
		Use:   "reset-script (--user NAME | --uid N) [--allow-system] [-o FILE]",
		Short: "Write a script forcing one account to change its password at next login",
		Long: `Write a POSIX shell script that makes one account choose a new password at its
next login: pwpolicy -u NAME -setpolicy "newPasswordRequired=1" (seed 000).
Run it as root on that one Mac, for example through the MDM's script
runner: the per-host alternative to changeAtNextAuth in a device profile.

The script carries no credentials. Names must be macOS short names and UIDs
decimal numbers; root is always refused, and system accounts (UID below
500) unless --allow-system, both here and again on the Mac when it runs.
It does not change the password, SecureToken or FileVault itself: the user
does, at the next login. pwpolicy -setpolicy is deprecated; see
docs/passcode.md for its limits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := pwpolicy.ResetScript(t)
			if err != nil {
				return badInput(err)
			}
			return writeOutput(cmd, out, []byte(s), 0o755)
		},
	}
	f := c.Flags()
	f.StringVar(&t.User, "user", "", "short `NAME` of the account")
	f.StringVar(&t.UID, "uid", "", "`UID` of the account")
	f.BoolVar(&t.AllowSystem, "allow-system", false, "allow system accounts (UID 1-499); root is always refused")
	f.StringVarP(&out, "output", "o", "", "write to `FILE` instead of standard output")
	return c
}
