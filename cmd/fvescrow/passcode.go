package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/fvescrow/fvescrow/fde/passcode"
	"github.com/spf13/cobra"
)

func newPasscodeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "passcode",
		Short: "Lint passcode profiles and check passwords against them",
	}
	c.AddCommand(newPasscodeLintCmd(), newPasscodeCheckCmd())
	return c
}

func newPasscodeLintCmd() *cobra.Command {
	var (
		platform, minOS string
		userEnrollment  bool
		example         bool
	)
	c := &cobra.Command{
		Use:   "lint PROFILE",
		Short: "Report problems with a profile's passcode payloads",
		Long: `Report problems with the com.apple.mobiledevice.passwordpolicy payloads of a
profile (PROFILE, or - for standard input), one per line:

  error KEY: message
  warning KEY: message

Errors come first. The checks: unknown keys, wrong types and integers typed
as <real>, values outside Apple's ranges (maxInactivity up to 60 on macOS),
changeAtNextAuth in a device profile, minutesUntilFailedLoginReset without
maxFailedAttempts, customRegex on macOS before 14 or not valid ICU,
policies no password can satisfy (proved by constructing an example),
minComplexChars raising the real minimum length, what a user enrollment
overrides, and that a profile does not make existing passwords change.

--example prints the example password that proves the policy satisfiable.
It is deterministic and therefore public: never use it.

Exit status: 0 no errors (warnings allowed), 1 errors found, 2 unreadable
input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := passcode.ParsePlatform(platform)
			if err != nil {
				return badInput(err)
			}
			if minOS != "" && !passcode.ValidVersion(minOS) {
				return badInput(fmt.Errorf("--min-os-version %q: want a version such as 13.6", minOS))
			}
			b, err := readInput(cmd, args[0], passcode.MaxProfileSize)
			if err != nil {
				return err
			}
			r, err := passcode.Lint(b, passcode.LintOptions{Platform: p, UserEnrollment: userEnrollment, MinOSVersion: minOS, Example: example})
			if err != nil {
				return badInput(fmt.Errorf("%s: %w", inputName(args[0]), err))
			}
			out := cmd.OutOrStdout()
			for _, f := range r.Findings {
				fmt.Fprintln(out, f)
			}
			if example && r.Example != "" {
				fmt.Fprintf(out, "example: %s\n", r.Example)
			}
			if r.HasErrors() {
				return silent(exitNo)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&platform, "platform", "macOS", "platform to lint for: macOS or iOS")
	f.BoolVar(&userEnrollment, "user-enrollment", false, "lint for a user enrollment (most keys ignored, a few forced)")
	f.StringVar(&minOS, "min-os-version", "", "oldest OS `VERSION` the profile targets (checks customRegex needs macOS 14)")
	f.BoolVar(&example, "example", false, "print an example password proving the policy satisfiable (public: never use it)")
	return c
}

func newPasscodeCheckCmd() *cobra.Command {
	var (
		stdin          bool
		userEnrollment bool
	)
	c := &cobra.Command{
		Use:   "check PROFILE --password-stdin",
		Short: "Check a password against a profile's passcode rules, offline",
		Long: `Check the password read from standard input (one trailing newline is
dropped) against the passcode rules of PROFILE: minLength,
requireAlphanumeric (a letter and a digit), minComplexChars (characters
other than letters and digits), allowSimple false (no character three times
in a row, no run of three ascending or descending letters or digits such as
123 or CBA) and customRegex (ICU, whole password).

The password is never printed. Exit status: 0 it satisfies every rule, 1 it
does not (each failing payload key is printed on its own line), 2 bad input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !stdin {
				return badInput(errors.New("the password is read from standard input only: give --password-stdin"))
			}
			if args[0] == "-" {
				return badInput(errors.New("standard input carries the password; give the profile as a file"))
			}
			b, err := readInput(cmd, args[0], passcode.MaxProfileSize)
			if err != nil {
				return err
			}
			prof, err := passcode.ParseProfile(b)
			if err != nil {
				return badInput(fmt.Errorf("%s: %w", args[0], err))
			}
			if len(prof.Payloads) == 0 {
				return badInput(fmt.Errorf("%s: no %s payload", args[0], passcode.PayloadType))
			}
			pw, err := readPassword(cmd, passcode.MaxPasswordLength)
			if err != nil {
				return err
			}
			var failed []string
			for _, p := range prof.Payloads {
				pol := p.Policy
				if userEnrollment {
					pol = pol.UserEnrollment()
				}
				fails, err := pol.Check(pw)
				if err != nil {
					return badInput(err)
				}
				for _, k := range fails {
					if !slices.Contains(failed, k) {
						failed = append(failed, k)
					}
				}
			}
			for _, k := range failed {
				fmt.Fprintln(cmd.OutOrStdout(), k)
			}
			if len(failed) > 0 {
				return silent(exitNo)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input (required)")
	c.Flags().BoolVar(&userEnrollment, "user-enrollment", false, "apply what a user enrollment enforces instead of the payload's keys")
	return c
}

// readPassword reads a password from standard input and drops one trailing
// newline. Errors never contain the password.
func readPassword(cmd *cobra.Command, limit int) (string, error) {
	b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), int64(limit)+3))
	if err != nil {
		return "", badInput(fmt.Errorf("read password: %w", err))
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) > limit {
		return "", badInput(fmt.Errorf("password is longer than %d bytes", limit))
	}
	return string(b), nil
}

func inputName(name string) string {
	if name == "" || name == "-" {
		return "standard input"
	}
	return name
}
