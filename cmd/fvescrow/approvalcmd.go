package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/spf13/cobra"
)

func newApprovalCmd(cc *clientConfig) *cobra.Command {
	c := &cobra.Command{Use: "approval", Short: "Two-person approval of reveals: request, list, show, approve, deny"}
	c.AddCommand(newApprovalRequestCmd(cc), newApprovalListCmd(cc), newApprovalShowCmd(cc), newApprovalDecideCmd(cc, true), newApprovalDecideCmd(cc, false))
	return c
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func localTime(t time.Time) string { return t.Local().Format(time.RFC3339) }

func optLocalTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return localTime(*t)
}

func newApprovalRequestCmd(cc *clientConfig) *cobra.Command {
	var reason, ticket string
	c := &cobra.Command{
		Use:   "request SERIAL|UDID --reason TEXT --ticket ID",
		Short: "Ask a second person to approve revealing a device's key (prints the approval ID)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			ap, err := s.RequestApproval(cmd.Context(), args[0], wire.ApprovalRequest{Reason: reason, Ticket: ticket})
			if err != nil {
				return apiError(err)
			}
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), ap.ID); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: approval %s waits for an approver until %s (fvescrow approval approve %s); then reveal with the same reason and ticket and --approval %s\n",
				ap.ID, localTime(ap.ExpiresAt), ap.ID, ap.ID)
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why the key is needed")
	c.Flags().StringVar(&ticket, "ticket", "", "ticket `ID`")
	_ = c.MarkFlagRequired("reason")
	_ = c.MarkFlagRequired("ticket")
	return c
}

func newApprovalListCmd(cc *clientConfig) *cobra.Command {
	var (
		state  string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "list [--state pending|approved|denied|used] [--json]",
		Short: "List the approvals you may see (newest first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			list, err := s.Approvals(cmd.Context(), state)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "APPROVAL\tSTATE\tDEVICE\tREQUESTER\tTICKET\tCREATED\tAPPROVER")
			for _, a := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.State, a.Device, a.Requester, a.Ticket, localTime(a.CreatedAt), dash(a.Approver))
			}
			return w.Flush()
		},
	}
	c.Flags().StringVar(&state, "state", "", "only approvals stored in this state")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func printApproval(w io.Writer, a wire.Approval) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "approval:\t%s\nstate:\t%s\ndevice:\t%s\nrequester:\t%s\nreason:\t%s\nticket:\t%s\ncreated:\t%s\nexpires:\t%s\n",
		a.ID, a.State, a.Device, a.Requester, a.Reason, a.Ticket, localTime(a.CreatedAt), localTime(a.ExpiresAt))
	if a.Approver != "" {
		fmt.Fprintf(tw, "approver:\t%s\ndecided:\t%s\nnote:\t%s\nuse by:\t%s\nused:\t%s\n", a.Approver, optLocalTime(a.DecidedAt), dash(a.Note),
			optLocalTime(a.UseBy), optLocalTime(a.UsedAt))
	}
	return tw.Flush()
}

func newApprovalShowCmd(cc *clientConfig) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show one approval",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			a, err := s.Approval(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), a)
			}
			return printApproval(cmd.OutOrStdout(), a)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newApprovalDecideCmd(cc *clientConfig, approve bool) *cobra.Command {
	verb, done := "deny", "denied"
	if approve {
		verb, done = "approve", "approved"
	}
	var note string
	c := &cobra.Command{
		Use:   verb + " ID [--note TEXT]",
		Short: map[bool]string{true: "Approve someone else's request (never your own)", false: "Deny someone else's request"}[approve],
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			decide := s.Deny
			if approve {
				decide = s.Approve
			}
			a, err := decide(cmd.Context(), args[0], note)
			if err != nil {
				return apiError(err)
			}
			out := fmt.Sprintf("%s %s for %s (device %s, ticket %s)", done, a.ID, a.Requester, a.Device, a.Ticket)
			if approve && a.UseBy != nil {
				out += "; usable once until " + localTime(*a.UseBy)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), out)
			return err
		},
	}
	c.Flags().StringVar(&note, "note", "", "a note for the audit log")
	return c
}
