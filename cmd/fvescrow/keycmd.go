package main

import (
	"fmt"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/spf13/cobra"
)

func newKeyCmd(cc *clientConfig) *cobra.Command {
	c := &cobra.Command{Use: "key", Short: "Reveal a device's recovery key through the server (audited)"}
	c.AddCommand(newKeyRevealCmd(cc))
	return c
}

func newKeyRevealCmd(cc *clientConfig) *cobra.Command {
	var reason, ticket, approval string
	c := &cobra.Command{
		Use:   "reveal SERIAL|UDID --reason TEXT --ticket ID [--approval ID]",
		Short: "Reveal a device's current recovery key (prints only the key)",
		Long: `Ask the server for a device's current personal recovery key, with the reason
and the ticket the audit log records. Standard output gets the key alone;
standard error says that the key is now marked disclosed and will be rotated.
Operators in an approval-required group first need a second person's
approval (fvescrow approval request), then pass its ID with --approval.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			rv, err := s.Reveal(cmd.Context(), args[0], wire.RevealRequest{Reason: reason, Ticket: ticket, ApprovalID: approval})
			if client.IsCode(err, client.CodeNotFound) {
				return negative(fmt.Errorf("no device %q with an escrowed key, or no such approval", args[0]), "find the device: fvescrow device search TEXT")
			}
			if err != nil {
				return apiError(err)
			}
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), rv.Key); err != nil {
				return err
			}
			name := rv.Serial
			if name == "" {
				name = rv.Device
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: warning: the recovery key of %s (version %d) is now marked disclosed (audit record %d) and will be rotated: use it now, keep no copy\n",
				name, rv.Version, rv.AuditSeq)
			if rv.Warning != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: warning: %s\n", rv.Warning)
			}
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why the key is needed (recorded in the audit log)")
	c.Flags().StringVar(&ticket, "ticket", "", "ticket `ID` (recorded in the audit log)")
	c.Flags().StringVar(&approval, "approval", "", "approval `ID` a second person granted")
	_ = c.MarkFlagRequired("reason")
	_ = c.MarkFlagRequired("ticket")
	return c
}
