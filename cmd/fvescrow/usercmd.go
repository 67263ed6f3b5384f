package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/spf13/cobra"
)

func newUserCmd(cc *clientConfig) *cobra.Command {
	c := &cobra.Command{Use: "user", Short: "Local accounts and operator blocks, through the server (admins)"}
	c.AddCommand(newUserAddCmd(cc), newUserListCmd(cc), newUserEnableCmd(cc, false), newUserEnableCmd(cc, true), newUserUnblockCmd(cc))
	return c
}

// userID accepts a local user name for its ID (ada → local:ada).
func userID(s string) string {
	if strings.Contains(s, ":") {
		return s
	}
	return "local:" + s
}

func newUserAddCmd(cc *clientConfig) *cobra.Command {
	var (
		roles       []string
		email, name string
		withTOTP    bool
	)
	c := &cobra.Command{
		Use:   "add USERNAME --role ROLE [--role ROLE]... [--email ADDR] [--name TEXT] [--totp]",
		Short: "Create a local account; prints its one-time password once",
		Long: `Create a local account with a one-time password, printed once on standard
output: the person changes it at first sign-in (fvescrow login asks for the
new one). With --totp the account also needs a TOTP code, and the otpauth://
URI for their authenticator app is printed once too. Roles: admin, helpdesk,
approver, auditor, viewer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			u, err := s.CreateUser(cmd.Context(), wire.UserRequest{Username: args[0], DisplayName: name, Email: email, Roles: roles, TOTP: withTOTP})
			if err != nil {
				return apiError(err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "created %s (%s)\n", u.User.ID, strings.Join(u.User.Roles, ", "))
			fmt.Fprintf(w, "one-time password (shown only now, to be changed at first sign-in): %s\n", u.OneTimePassword)
			if u.TOTPURI != "" {
				fmt.Fprintf(w, "TOTP URI for the authenticator app (shown only now): %s\n", u.TOTPURI)
			}
			return nil
		},
	}
	c.Flags().StringSliceVar(&roles, "role", nil, "a `ROLE` (repeat)")
	c.Flags().StringVar(&email, "email", "", "e-mail address")
	c.Flags().StringVar(&name, "name", "", "display name")
	c.Flags().BoolVar(&withTOTP, "totp", false, "require a TOTP code at sign-in")
	_ = c.MarkFlagRequired("role")
	return c
}

func newUserListCmd(cc *clientConfig) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list [--json]",
		Short: "List users (never a credential)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			us, err := s.Users(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), us)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "USER\tNAME\tSOURCE\tROLES\tTOTP\tSTATE\tLAST SIGN-IN")
			for _, u := range us {
				state := "active"
				if u.Disabled {
					state = "disabled"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\t%s\n", u.ID, dash(u.DisplayName), u.Source, strings.Join(u.Roles, ","), u.TOTP, state, optLocalTime(u.LastLoginAt))
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newUserEnableCmd(cc *clientConfig, disable bool) *cobra.Command {
	verb, done := "enable", "enabled"
	short := "Enable a disabled user"
	if disable {
		verb, done = "disable", "disabled"
		short = "Disable a user: their tokens and sessions stop working at once"
	}
	return &cobra.Command{
		Use:   verb + " USER",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			u, err := s.UpdateUser(cmd.Context(), userID(args[0]), wire.UserUpdate{Disabled: &disable})
			if err != nil {
				return apiError(err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", done, u.ID)
			return err
		},
	}
}

func newUserUnblockCmd(cc *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:   "unblock USER",
		Short: "Lift an operator's reveal block (after a rate limit)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			id := userID(args[0])
			if err := s.LiftBlock(cmd.Context(), id); err != nil {
				return apiError(err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "lifted the reveal blocks of %s\n", id)
			return err
		},
	}
}
