package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes. A command that answers a yes/no question (does this key
// decrypt, does this password pass) exits 1 for "no"; 2 always means the
// input or the invocation was bad.
const (
	exitOK    = 0
	exitNo    = 1
	exitUsage = 2
)

// exitError carries an exit code and optional hints to run.
type exitError struct {
	code  int
	err   error
	hints []string
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// badInput marks an error as bad input (exit 2).
func badInput(err error, hints ...string) error {
	return &exitError{code: exitUsage, err: err, hints: hints}
}

// negative marks an error as a "no" answer (exit 1).
func negative(err error, hints ...string) error {
	return &exitError{code: exitNo, err: err, hints: hints}
}

// silent is an exit code with nothing more to print (the command already
// reported on stdout).
type silent int

func (s silent) Error() string { return fmt.Sprintf("exit %d", int(s)) }

// run builds the command tree, runs it and maps the outcome to an exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	started := false
	walk(root, func(c *cobra.Command) {
		if c.RunE == nil {
			return
		}
		inner := c.RunE
		c.RunE = func(cmd *cobra.Command, a []string) error {
			started = true
			return inner(cmd, a)
		}
	})
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var s silent
	if errors.As(err, &s) {
		return int(s)
	}
	code, hints := exitNo, []string(nil)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code, hints = ee.code, ee.hints
	case !started:
		// cobra rejected the flags or arguments before the command ran.
		code = exitUsage
		hints = []string{fmt.Sprintf("run '%s --help' for usage", commandPath(root, args))}
	}
	fmt.Fprintf(stderr, "fvescrow: error: %s\n", oneLine(err.Error()))
	for _, h := range hints {
		fmt.Fprintf(stderr, "fvescrow: hint: %s\n", h)
	}
	return code
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func commandPath(root *cobra.Command, args []string) string {
	c, _, err := root.Find(args)
	if err != nil {
		return root.Name()
	}
	return c.CommandPath()
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	cc := newClientConfig()
	root := &cobra.Command{
		Use:   "fvescrow",
		Short: "FileVault and SecureToken recovery toolkit with key escrow",
		Long: `fvescrow is a FileVault and SecureToken recovery toolkit with key escrow. It
escrows the personal recovery keys Macs send through MDM, hands them only to
verified people with an audit trail, and rotates them after use.

Every flag can also be set through an environment variable named FVESCROW_
followed by the flag name in upper case with dashes as underscores
(--escrow-cert is FVESCROW_ESCROW_CERT). Secrets are always given as file paths.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd, os.LookupEnv)
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return badInput(err, fmt.Sprintf("run '%s --help' for usage", c.CommandPath()))
	})
	root.AddCommand(
		newVersionCmd(),
		newEscrowCertCmd(),
		newCMSCmd(),
		newProfileCmd(g),
		newPasscodeCmd(),
		newPwpolicyCmd(),
		newAuditCmd(g, cc),
		newServeCmd(g),
		newMDMCmd(g),
		newDeviceCmd(g, cc),
		newExportCmd(g),
		newLoginCmd(cc),
		newLogoutCmd(cc),
		newKeyCmd(cc),
		newApprovalCmd(cc),
		newTokenCmd(cc),
		newUserCmd(cc),
		newRotationCmd(cc),
		newAgentScriptCmd(),
	)
	g.register(root)
	cc.register(root)
	walk(root, documentEnv)
	return root
}

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}

// envName is the environment variable mirroring a flag.
func envName(flag string) string {
	return "FVESCROW_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag the command line left unset from its environment
// variable.
func applyEnv(cmd *cobra.Command, lookup func(string) (string, bool)) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		if err := cmd.Flags().Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
		}
	})
	if len(errs) > 0 {
		return badInput(errors.Join(errs...))
	}
	return nil
}

// documentEnv appends each flag's environment variable to its usage, and
// whether it is set, never its value.
func documentEnv(c *cobra.Command) {
	doc := func(f *pflag.Flag) {
		if f.Name == "help" || strings.Contains(f.Usage, "(env ") {
			return
		}
		name := envName(f.Name)
		f.Usage += " (env " + name
		if _, ok := os.LookupEnv(name); ok {
			f.Usage += ", set"
		}
		f.Usage += ")"
	}
	c.Flags().VisitAll(doc)
	c.PersistentFlags().VisitAll(doc) // the global flags
}

// readInput reads a named file, or stdin for "" or "-", up to limit bytes.
func readInput(cmd *cobra.Command, name string, limit int64) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	label := "standard input"
	if name != "" && name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, badInput(err)
		}
		defer f.Close()
		r, label = f, name
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, badInput(fmt.Errorf("read %s: %w", label, err))
	}
	if int64(len(b)) > limit {
		return nil, badInput(fmt.Errorf("%s is larger than %d bytes", label, limit))
	}
	return b, nil
}

// writeOutput writes b to a file (mode perm) or, for "" or "-", to stdout.
func writeOutput(cmd *cobra.Command, name string, b []byte, perm os.FileMode) error {
	if name == "" || name == "-" {
		_, err := cmd.OutOrStdout().Write(b)
		return err
	}
	return os.WriteFile(name, b, perm)
}
