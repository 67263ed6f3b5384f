package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/spf13/cobra"
)

// The rotation verbs, over the REST API.
func newRotationCmd(cc *clientConfig) *cobra.Command {
	c := &cobra.Command{Use: "rotation", Short: "Rotate recovery keys through MDM and follow rotations (never shows keys)"}
	c.AddCommand(newRotationListCmd(cc), newRotationOverdueCmd(cc), newRotationStartCmd(cc), newCampaignCmd(cc), newRegenerationsCmd(cc))
	return c
}

func rotationTable(cmd *cobra.Command, rs []wire.Rotation) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tDEVICE\tSTATE\tTRIGGER\tUPDATED\tERROR")
	for _, r := range rs {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Device, r.State, dash(r.Trigger), r.UpdatedAt.Format(time.RFC3339), dash(r.Error))
	}
	return w.Flush()
}

func newRotationListCmd(cc *clientConfig) *cobra.Command {
	var (
		q      client.RotationQuery
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "list [--state open|verified|failed|canceled] [--device ID] [--campaign ID]",
		Short: "List rotations, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			rs, err := s.Rotations(cmd.Context(), q)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rs)
			}
			return rotationTable(cmd, rs)
		},
	}
	f := c.Flags()
	f.StringVar(&q.State, "state", "", "open, verified, failed or canceled")
	f.StringVar(&q.Device, "device", "", "one device (ID or serial)")
	f.Int64Var(&q.Campaign, "campaign", 0, "one campaign's rotations")
	f.IntVar(&q.Limit, "limit", 100, "at most `N` rotations")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newRotationOverdueCmd(cc *clientConfig) *cobra.Command {
	var (
		hours  float64
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "overdue [--hours N]",
		Short: "List keys disclosed more than N hours ago and still current (not rotated yet)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			out, err := s.Overdue(cmd.Context(), hours)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DEVICE\tSERIAL\tVERSION\tDISCLOSED\tROTATION")
			for _, k := range out.Keys {
				rot := "none"
				if k.Rotation != nil {
					rot = k.Rotation.State
					if k.Rotation.Error != "" {
						rot += ": " + k.Rotation.Error
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", k.Device, dash(k.Serial), k.Version, k.DisclosedAt.Format(time.RFC3339), rot)
			}
			return w.Flush()
		},
	}
	c.Flags().Float64Var(&hours, "hours", 4, "disclosed more than `N` hours ago")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newRotationStartCmd(cc *clientConfig) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "start SERIAL|UDID --reason TEXT",
		Short: "Rotate one device's recovery key now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			r, created, err := s.Rotate(cmd.Context(), args[0], reason)
			if err != nil {
				return apiError(err)
			}
			if created {
				fmt.Fprintf(cmd.OutOrStdout(), "rotation %d of %s scheduled; follow it with: fvescrow rotation list --device %s\n", r.ID, r.Device, args[0])
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "a rotation of %s is already under way (rotation %d, %s)\n", r.Device, r.ID, r.State)
			}
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	_ = c.MarkFlagRequired("reason")
	return c
}

func newCampaignCmd(cc *clientConfig) *cobra.Command {
	c := &cobra.Command{Use: "campaign", Short: "Rotate many devices' keys at once"}
	var (
		req     wire.CampaignRequest
		devices string
	)
	start := &cobra.Command{
		Use:   "start --name NAME --reason TEXT [--search TEXT | --devices ID,ID...] [--key-older-than-days N] [--disclosed-only]",
		Short: "Start a campaign over the selected devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if devices != "" {
				for _, d := range strings.Split(devices, ",") {
					if d = strings.TrimSpace(d); d != "" {
						req.Devices = append(req.Devices, d)
					}
				}
			}
			s, err := cc.connect()
			if err != nil {
				return err
			}
			out, err := s.StartCampaign(cmd.Context(), req)
			if err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "campaign %d: %d devices rotating, %d skipped; follow it with: fvescrow rotation campaign show %d\n",
				out.ID, out.Devices, out.Skipped, out.ID)
			return nil
		},
	}
	f := start.Flags()
	f.StringVar(&req.Name, "name", "", "campaign name")
	f.StringVar(&req.Reason, "reason", "", "why (recorded in the audit log)")
	f.StringVar(&req.Search, "search", "", "devices matching this text (serial, hostname, owner...); empty for all")
	f.StringVar(&devices, "devices", "", "comma-separated device IDs or serials (instead of --search)")
	f.IntVar(&req.KeyOlderThanDays, "key-older-than-days", 0, "only keys older than `N` days")
	f.BoolVar(&req.DisclosedOnly, "disclosed-only", false, "only keys that were revealed")
	_ = start.MarkFlagRequired("name")
	_ = start.MarkFlagRequired("reason")

	var asJSON bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a campaign's progress and failures",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return badInput(fmt.Errorf("campaign ID %q: want a number", args[0]))
			}
			s, err := cc.connect()
			if err != nil {
				return err
			}
			out, err := s.Campaign(cmd.Context(), id)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			state := "in progress"
			if out.Done {
				state = "finished"
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "campaign\t%d %s (%s)\n", out.ID, out.Name, state)
			fmt.Fprintf(w, "reason\t%s\n", out.Reason)
			fmt.Fprintf(w, "started\t%s by %s\n", out.CreatedAt.Format(time.RFC3339), out.CreatedBy)
			fmt.Fprintf(w, "devices\t%d rotating, %d skipped\n", out.Devices, out.Skipped)
			for _, st := range []string{"scheduled", "queued", "sent", "acknowledged", "escrowed", "retrying", "verified", "failed", "canceled"} {
				if n := out.States[st]; n > 0 {
					fmt.Fprintf(w, "%s\t%d\n", st, n)
				}
			}
			for why, n := range out.Failures {
				fmt.Fprintf(w, "failed\t%d × %s\n", n, why)
			}
			return w.Flush()
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(start, show)
	return c
}

func newRegenerationsCmd(cc *clientConfig) *cobra.Command {
	var (
		device string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "regenerations [--device SERIAL]",
		Short: "List Macs whose key an agent must regenerate (see fvescrow agent-script escrow-buddy)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cc.connect()
			if err != nil {
				return err
			}
			rs, err := s.Regenerations(cmd.Context(), device)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DEVICE\tSERIAL\tSINCE\tWHY")
			for _, r := range rs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Device, dash(r.Serial), r.Since.Format(time.RFC3339), r.Reason)
			}
			return w.Flush()
		},
	}
	c.Flags().StringVar(&device, "device", "", "one device (ID or serial)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
