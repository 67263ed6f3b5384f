package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// storageFlags select the stores directly; device list and show read them
// when one is given and ask the server otherwise.
var storageFlags = []string{"data", "database-url", "database-url-file", "vault-addr", "age-identity-file"}

func storageFlagGiven(cmd *cobra.Command) bool {
	given := false
	cmd.Flags().Visit(func(f *pflag.Flag) { given = given || slices.Contains(storageFlags, f.Name) })
	return given
}

// withStoreHint adds the offline way to a "no server" error.
func withStoreHint(err error) error {
	if ee, ok := err.(*exitError); ok && ee.err == errNoServer {
		ee.hints = append(ee.hints, "on the server itself, read the stores directly with --data DIR (or the storage flags of serve)")
	}
	return err
}

func newDeviceSearchCmd(cc *clientConfig) *cobra.Command {
	var (
		all    bool
		limit  int
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "search QUERY [--all] [--json]",
		Short: "Search devices on the server by serial, UDID, hostname, owner or e-mail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return remoteDeviceList(cmd, cc, client.DeviceQuery{Text: args[0], All: all, Limit: limit}, asJSON)
		},
	}
	c.Flags().BoolVar(&all, "all", false, "include retired devices")
	c.Flags().IntVar(&limit, "limit", 100, "at most `N` devices")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func remoteDeviceList(cmd *cobra.Command, cc *clientConfig, q client.DeviceQuery, asJSON bool) error {
	s, err := cc.connect()
	if err != nil {
		return withStoreHint(err)
	}
	list, err := s.SearchDevices(cmd.Context(), q)
	if err != nil {
		return apiError(err)
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), list.Devices)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DEVICE\tSERIAL\tHOSTNAME\tESCROW STATUS\tFILEVAULT\tUPDATED")
	for _, d := range list.Devices {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, dash(d.Serial), dash(d.Hostname), dash(d.EscrowStatus), dash(d.FileVault), d.UpdatedAt.Format(time.RFC3339))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(list.Devices) == 0 && q.Text != "" {
		return negative(fmt.Errorf("no device matches %q", q.Text))
	}
	return nil
}

func remoteDeviceShow(cmd *cobra.Command, cc *clientConfig, ref string, asJSON bool) error {
	s, err := cc.connect()
	if err != nil {
		return withStoreHint(err)
	}
	d, err := s.Device(cmd.Context(), ref)
	if client.IsCode(err, client.CodeNotFound) {
		return negative(fmt.Errorf("no device %q", ref))
	}
	if err != nil {
		return apiError(err)
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), d)
	}
	return printDeviceDetail(cmd.OutOrStdout(), d)
}

func printDeviceDetail(out io.Writer, d wire.DeviceDetail) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	dv := d.Device
	fmt.Fprintf(w, "device:\t%s\nserial:\t%s\nhostname:\t%s\nmodel:\t%s\nos:\t%s\nowner:\t%s\n", dv.ID, dash(dv.Serial), dash(dv.Hostname), dash(dv.Model),
		dash(dv.OSVersion), dash(dv.Owner))
	keys := make([]string, 0, len(dv.Attrs))
	for k := range dv.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if dv.Attrs[k] != "" {
			fmt.Fprintf(w, "%s:\t%s\n", strings.ReplaceAll(k, "_", " "), dv.Attrs[k])
		}
	}
	fmt.Fprintf(w, "recoverable:\t%t %s\n", d.Recoverable, strings.Join(d.Paths, ", "))
	fmt.Fprintln(w, "\nKEY VERSION\tSTATUS\tSOURCE\tRECEIVED\tSTATE")
	for _, v := range d.KeyVersions {
		state := "current"
		switch {
		case v.Error != "":
			state = v.Error
		case !v.Current:
			state = "superseded " + optLocalTime(v.SupersededAt)
		}
		if v.DisclosedAt != nil {
			state += ", disclosed " + localTime(*v.DisclosedAt)
		}
		if v.VerifiedAt != nil {
			state += ", verified"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", v.Version, v.Status, v.Source, localTime(v.ReceivedAt), state)
	}
	fmt.Fprintln(w, "\nACCOUNT\tUID\tSECURETOKEN\tMOBILE")
	for _, a := range d.Accounts {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", a.UserName, a.UID, a.HasSecureToken, a.MobileAccount)
	}
	if len(d.Findings) > 0 {
		fmt.Fprintln(w, "\nFINDING\tSEVERITY\tMESSAGE")
		for _, f := range d.Findings {
			fmt.Fprintf(w, "%s\t%s\t%s\n", f.Code, f.Severity, f.Message)
		}
	}
	if len(d.Jobs) > 0 {
		fmt.Fprintln(w, "\nJOB\tSTATE\tSTEP\tRUN AT\tATTEMPTS")
		for _, j := range d.Jobs {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", j.Kind, j.State, dash(j.Step), localTime(j.RunAt), j.Attempts)
		}
	}
	fmt.Fprintln(w, "\nAUDIT\tTIME\tACTOR\tACTION\tTICKET")
	for _, r := range d.Audit {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", r.Seq, localTime(r.Time), r.ActorID, r.Action, dash(r.Ticket))
	}
	return w.Flush()
}

// auditFilters are the filters of the REST audit commands.
type auditFilters struct{ device, actor, action, since, until string }

func (f *auditFilters) register(c *cobra.Command) {
	c.Flags().StringVar(&f.device, "device", "", "only this device `ID`")
	c.Flags().StringVar(&f.actor, "actor", "", "only this actor (user ID, e.g. local:ada)")
	c.Flags().StringVar(&f.action, "action", "", "only this action (e.g. key.revealed)")
	c.Flags().StringVar(&f.since, "since", "", "only records at or after `TIME` (RFC 3339, or a duration such as 24h)")
	c.Flags().StringVar(&f.until, "until", "", "only records before `TIME` (RFC 3339, or a duration such as 1h)")
}

func (f *auditFilters) query() (client.AuditQuery, error) {
	q := client.AuditQuery{Device: f.device, Actor: f.actor, Action: f.action}
	now := time.Now()
	for _, p := range []struct {
		flag, v string
		dst     *time.Time
	}{{"--since", f.since, &q.Since}, {"--until", f.until, &q.Until}} {
		if p.v == "" {
			continue
		}
		t, err := parseSince(p.v, now)
		if err != nil {
			return q, badInput(fmt.Errorf("%s %q: want an RFC 3339 time or a duration", p.flag, p.v))
		}
		*p.dst = t
	}
	return q, nil
}

func newAuditListCmd(cc *clientConfig) *cobra.Command {
	var (
		f      auditFilters
		limit  int
		after  int64
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "list [--device ID] [--actor ID] [--action NAME] [--since TIME] [--until TIME] [--json]",
		Short: "List audit records from the server (oldest first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := f.query()
			if err != nil {
				return err
			}
			q.Limit, q.After = limit, after
			s, err := cc.connect()
			if err != nil {
				return err
			}
			list, err := s.Audit(cmd.Context(), q)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SEQ\tTIME\tACTOR\tACTION\tDEVICE\tTICKET\tREASON")
			for _, r := range list.Records {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, localTime(r.Time), r.ActorID, r.Action, dash(r.Device), dash(r.Ticket), dash(oneLine(r.Reason)))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if list.Next != 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: more records: add --after %d\n", list.Next)
			}
			return nil
		},
	}
	f.register(c)
	c.Flags().IntVar(&limit, "limit", 200, "at most `N` records (1000 at most)")
	c.Flags().Int64Var(&after, "after", 0, "records after this record number (for the next page)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newAuditDownloadCmd(cc *clientConfig) *cobra.Command {
	var (
		f      auditFilters
		format string
		out    string
	)
	c := &cobra.Command{
		Use:   "download [filters] [--format jsonl|csv] [-o FILE]",
		Short: "Download audit records from the server for a SIEM (export reads the stores instead)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "jsonl" && format != "csv" {
				return badInput(fmt.Errorf("--format %q: want jsonl or csv", format))
			}
			q, err := f.query()
			if err != nil {
				return err
			}
			s, err := cc.connect()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			var file *os.File
			if out != "" && out != "-" {
				if file, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
					return badInput(err)
				}
				defer file.Close()
				w = file
			}
			if _, err := s.ExportAudit(cmd.Context(), q, format, w); err != nil {
				return apiError(err)
			}
			if file != nil {
				return file.Close()
			}
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	c.Flags().StringVarP(&out, "output", "o", "", "write to `FILE` (mode 0600) instead of standard output")
	return c
}
