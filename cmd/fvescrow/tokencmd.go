package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/spf13/cobra"
)

func newTokenCmd(cc *clientConfig) *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "API tokens for automation: create, list, revoke"}
	c.AddCommand(newTokenCreateCmd(cc), newTokenListCmd(cc), newTokenRevokeCmd(cc))
	return c
}

// parseExpiry reads a token lifetime: a Go duration (72h) or days (30d),
// in whole hours; 0 never expires.
func parseExpiry(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("--expires %q: want a duration such as 720h or 30d", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return 0, fmt.Errorf("--expires %q: want a duration such as 720h or 30d", s)
		}
	}
	hours := int((d + time.Hour - 1) / time.Hour)
	if hours > 24*366 {
		return 0, errors.New("--expires: at most 366d")
	}
	return hours, nil
}

func newTokenCreateCmd(cc *clientConfig) *cobra.Command {
	var (
		name    string
		roles   []string
		expires string
	)
	c := &cobra.Command{
		Use:   "create --name NAME [--role ROLE]... [--expires 30d]",
		Short: "Create an API token (printed once, on standard output)",
		Long: `Create an API token for automation. It carries the given roles (each must be
one of yours; default all of them), never more than you hold when it is used,
and expires after --expires (0: never). Only its hash is stored on the
server: the token is printed once, alone, on standard output. Keep it in a
secrets manager and give it to tools as a file (--token-file) or in
FVESCROW_TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hours, err := parseExpiry(expires)
			if err != nil {
				return badInput(err)
			}
			s, err := cc.connect()
			if err != nil {
				return err
			}
			t, err := s.CreateToken(cmd.Context(), wire.TokenRequest{Name: name, Roles: roles, ExpiresInHours: hours})
			if err != nil {
				return apiError(err)
			}
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), t.Token); err != nil {
				return err
			}
			exp := "never expires"
			if t.Info.ExpiresAt != nil {
				exp = "expires " + localTime(*t.Info.ExpiresAt)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: created token %s %q (%s), %s; it is shown only now: keep it in a secrets manager\n",
				t.Info.ID, t.Info.Name, strings.Join(t.Info.Roles, ", "), exp)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "what the token is for")
	c.Flags().StringSliceVar(&roles, "role", nil, "a `ROLE` the token carries (repeat; default all of yours)")
	c.Flags().StringVar(&expires, "expires", "30d", "lifetime (720h, 30d; 0: never)")
	_ = c.MarkFlagRequired("name")
	return c
}

func newTokenListCmd(cc *clientConfig) *cobra.Command {
	var all, asJSON bool
	c := &cobra.Command{
		Use:   "list [--all] [--json]",
		Short: "List your API tokens (everyone's with --all, for admins)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			ts, err := s.Tokens(cmd.Context(), all)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ts)
			}
			now := time.Now()
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TOKEN\tNAME\tOWNER\tROLES\tSTATE\tEXPIRES\tLAST USED")
			for _, t := range ts {
				state := "active"
				switch {
				case t.RevokedAt != nil:
					state = "revoked"
				case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
					state = "expired"
				}
				if s.saved != nil && t.ID == s.saved.TokenID {
					state += " (this sign-in)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Owner, strings.Join(t.Roles, ","), state, optLocalTime(t.ExpiresAt), optLocalTime(t.LastUsedAt))
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&all, "all", false, "everyone's tokens (needs token:admin)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newTokenRevokeCmd(cc *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API token (yours, or anyone's for admins)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			if err := s.RevokeToken(cmd.Context(), args[0]); err != nil {
				return apiError(err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return err
		},
	}
}
