package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/spf13/cobra"
)

func newDeviceCmd(g *globals, cc *clientConfig) *cobra.Command {
	c := &cobra.Command{Use: "device", Short: "Search, list and inspect devices (never shows keys)"}
	c.AddCommand(newDeviceSearchCmd(cc), newDeviceListCmd(g, cc), newDeviceShowCmd(g, cc))
	return c
}

func newDeviceListCmd(g *globals, cc *clientConfig) *cobra.Command {
	var (
		sc     storeConfig
		search string
		all    bool
		limit  int
	)
	c := &cobra.Command{
		Use:   "list [--search TEXT]",
		Short: "List devices with their escrow status",
		Long: `List devices with their escrow status. With a storage flag (--data,
--database-url, --vault-addr...) the stores are read directly; otherwise the
server is asked (--server, or the one fvescrow login saved).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !storageFlagGiven(cmd) {
				return remoteDeviceList(cmd, cc, client.DeviceQuery{Text: search, All: all, Limit: limit}, false)
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s, err := sc.open(cmd.Context(), false, log)
			if err != nil {
				return err
			}
			defer s.Close()
			devs, err := s.meta.FindDevices(cmd.Context(), escrow.DeviceQuery{Text: search, IncludeRetired: all, Limit: limit})
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DEVICE\tSERIAL\tHOSTNAME\tESCROW STATUS\tFILEVAULT\tUPDATED")
			for _, d := range devs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, dash(d.Serial), dash(d.Hostname), dash(d.Attrs[escrow.AttrEscrowStatus]),
					dash(d.Attrs[escrow.AttrFDEEnabled]), d.UpdatedAt.Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	sc.register(c)
	c.Flags().StringVar(&search, "search", "", "match serial, UDID, hostname, owner or e-mail")
	c.Flags().BoolVar(&all, "all", false, "include retired devices")
	c.Flags().IntVar(&limit, "limit", 100, "at most `N` devices")
	return c
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// deviceReport is `device show --json`; it holds metadata only.
type deviceReport struct {
	Device   escrow.Device          `json:"device"`
	Versions []escrow.KeyVersion    `json:"key_versions"`
	Accounts any                    `json:"accounts"`
	Changes  []escrow.AccountChange `json:"account_changes"`
	Commands []escrow.Command       `json:"commands"`
}

func newDeviceShowCmd(g *globals, cc *clientConfig) *cobra.Command {
	var (
		sc     storeConfig
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "show DEVICE",
		Short: "Show a device: escrow state, key versions (metadata only), accounts, commands",
		Long: `Show a device by device ID, UDID or serial number. With a storage flag
(--data, --database-url, --vault-addr...) the stores are read directly;
otherwise the server is asked (--server, or the one fvescrow login saved),
which adds recoverability findings and the device's audit trail.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !storageFlagGiven(cmd) {
				return remoteDeviceShow(cmd, cc, args[0], asJSON)
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s, err := sc.open(cmd.Context(), false, log)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx := cmd.Context()
			d, err := findDevice(cmd, s, args[0])
			if err != nil {
				return err
			}
			vs, err := s.meta.KeyVersions(ctx, d.ID, escrow.KindPRK)
			if err != nil {
				return err
			}
			accounts, _, err := s.meta.Accounts(ctx, d.ID)
			if err != nil {
				return err
			}
			changes, err := s.meta.AccountHistory(ctx, d.ID, 20)
			if err != nil {
				return err
			}
			cmds, err := s.meta.Commands(ctx, d.ID, 20)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(deviceReport{Device: d, Versions: vs, Accounts: accounts, Changes: changes, Commands: cmds})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "device:\t%s\nserial:\t%s\nhostname:\t%s\nmodel:\t%s\nos:\t%s\n", d.ID, dash(d.Serial), dash(d.Hostname), dash(d.Model), dash(d.OSVersion))
			keys := make([]string, 0, len(d.Attrs))
			for k := range d.Attrs {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				if d.Attrs[k] != "" {
					fmt.Fprintf(w, "%s:\t%s\n", strings.ReplaceAll(k, "_", " "), d.Attrs[k])
				}
			}
			fmt.Fprintln(w, "\nKEY VERSION\tSTATUS\tSOURCE\tRECEIVED\tSTATE")
			for _, v := range vs {
				state := "current"
				switch {
				case v.Status == escrow.StatusUndecryptable:
					state = v.Error
				case !v.SupersededAt.IsZero():
					state = "superseded " + v.SupersededAt.Format(time.RFC3339)
				}
				if !v.DisclosedAt.IsZero() {
					state += ", disclosed " + v.DisclosedAt.Format(time.RFC3339)
				}
				if !v.VerifiedAt.IsZero() {
					state += ", verified"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", v.Seq, v.Status, v.Source, v.ReceivedAt.Format(time.RFC3339), state)
			}
			fmt.Fprintln(w, "\nACCOUNT\tUID\tSECURETOKEN\tMOBILE")
			for _, a := range accounts {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", a.UserName, a.UID, a.HasSecureToken, a.MobileAccount)
			}
			fmt.Fprintln(w, "\nCOMMAND\tTYPE\tPURPOSE\tSTATUS\tENQUEUED")
			for _, c := range cmds {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.UUID, c.RequestType, dash(c.Purpose), dash(c.Status), c.EnqueuedAt.Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	sc.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// findDevice resolves a device ID, or a serial number typed at the help desk.
func findDevice(cmd *cobra.Command, s *stores, ref string) (escrow.Device, error) {
	ctx := cmd.Context()
	if d, err := s.meta.Device(ctx, escrow.DeviceID(ref)); err == nil {
		return d, nil
	}
	devs, err := s.meta.FindDevices(ctx, escrow.DeviceQuery{Text: ref, IncludeRetired: true, Limit: 10})
	if err != nil {
		return escrow.Device{}, err
	}
	var exact []escrow.Device
	for _, d := range devs {
		if strings.EqualFold(d.Serial, ref) || strings.EqualFold(d.UDID, ref) {
			exact = append(exact, d)
		}
	}
	switch len(exact) {
	case 1:
		return exact[0], nil
	case 0:
		return escrow.Device{}, negative(fmt.Errorf("no device %q", ref))
	}
	return escrow.Device{}, badInput(fmt.Errorf("%q matches %d devices; use the device ID", ref, len(exact)))
}
