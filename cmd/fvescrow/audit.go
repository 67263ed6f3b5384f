package main

import (
	"crypto/ed25519"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/spf13/cobra"
)

func newAuditCmd(g *globals, cc *clientConfig) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Verify, export and sign the hash-chained audit log; list and download it from a server",
	}
	c.AddCommand(newAuditVerifyCmd(g), newAuditExportCmd(g), newAuditPublicKeyCmd(g), newAuditCheckpointCmd(g),
		newAuditListCmd(cc), newAuditDownloadCmd(cc))
	return c
}

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var sc storeConfig
	var pubFile string
	c := &cobra.Command{
		Use:   "verify [--public-key FILE]",
		Short: "Walk the audit chain and name the first broken record",
		Long: `Walk the audit chain from the first record, checking every hash link and every
signed checkpoint. Exit 0 when intact; exit 1 naming the first record that does
not fit (edited, missing, relinked, or contradicting a signed checkpoint).

Checkpoint signatures are checked against --public-key (the hex key printed by
'fvescrow audit public-key', kept somewhere the database administrator cannot
change). Without it the key stored in the database is used, which proves
consistency but not that the database was not rewritten wholesale.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s, err := sc.open(cmd.Context(), false, log)
			if err != nil {
				return err
			}
			defer s.Close()
			var pub ed25519.PublicKey
			if pubFile != "" {
				b, err := os.ReadFile(pubFile)
				if err != nil {
					return badInput(err)
				}
				if pub, err = parsePublicKey(b); err != nil {
					return badInput(fmt.Errorf("%s: %w", pubFile, err))
				}
			} else {
				pub, err = escrow.AuditPublicKey(cmd.Context(), s.meta)
				if err != nil && !errors.Is(err, escrow.ErrNotFound) {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "fvescrow: warning: checking signatures with the public key stored in the database; pass --public-key from a trusted copy")
			}
			rep, err := escrow.VerifyAudit(cmd.Context(), s.meta, pub)
			if err != nil {
				return err
			}
			if rep.Broken != nil {
				return negative(fmt.Errorf("audit chain broken at record %d: %s (%d records before it verified)", rep.Broken.Seq, rep.Broken.Reason, rep.Records))
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "audit chain intact: %d records, %d signed checkpoints verified, head %s\n", rep.Records, rep.Checkpoints, rep.Head)
			return err
		},
	}
	sc.register(c)
	c.Flags().StringVar(&pubFile, "public-key", "", "hex audit public key `FILE` (from fvescrow audit public-key)")
	return c
}

func parsePublicKey(b []byte) (ed25519.PublicKey, error) {
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, errors.New("not a hex Ed25519 public key")
	}
	return k, nil
}

func newAuditPublicKeyCmd(g *globals) *cobra.Command {
	var sc storeConfig
	c := &cobra.Command{
		Use:   "public-key",
		Short: "Print the key that signs audit checkpoints (hex), to keep for verification",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s, err := sc.open(cmd.Context(), false, log)
			if err != nil {
				return err
			}
			defer s.Close()
			pub, err := escrow.AuditPublicKey(cmd.Context(), s.meta)
			if errors.Is(err, escrow.ErrNotFound) {
				return negative(errors.New("no audit key yet"), "it is created when the server first starts, or by fvescrow audit checkpoint")
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), hex.EncodeToString(pub))
			return err
		},
	}
	sc.register(c)
	return c
}

func newAuditCheckpointCmd(g *globals) *cobra.Command {
	var sc storeConfig
	c := &cobra.Command{
		Use:   "checkpoint",
		Short: "Sign a checkpoint of the audit chain now (the server also does this periodically)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svc, s, err := openService(cmd, g, &sc)
			if err != nil {
				return err
			}
			defer s.Close()
			cp, wrote, err := svc.Checkpoint(cmd.Context())
			if err != nil {
				return err
			}
			state := "signed"
			if !wrote {
				state = "unchanged since"
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "checkpoint %s at record %d, hash %s\n", state, cp.Seq, cp.Hash)
			return err
		},
	}
	sc.register(c)
	return c
}

// openService opens the stores and the escrow service for an admin command.
func openService(cmd *cobra.Command, g *globals, sc *storeConfig) (*escrow.Service, *stores, error) {
	log, err := g.logger(cmd.ErrOrStderr())
	if err != nil {
		return nil, nil, err
	}
	s, err := sc.open(cmd.Context(), false, log)
	if err != nil {
		return nil, nil, err
	}
	kr, err := escrow.LoadKeyring(cmd.Context(), s.meta, s.secrets)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return escrow.New(s.secrets, s.meta, kr, escrow.WithLogger(log)), s, nil
}

func newAuditExportCmd(g *globals) *cobra.Command {
	var (
		sc            storeConfig
		since, format string
		out           string
	)
	c := &cobra.Command{
		Use:   "export [--since TIME] [--format jsonl|csv] [-o FILE]",
		Short: "Export audit records for a SIEM",
		Long: `Export audit records, oldest first, as JSON lines or CSV. --since takes an
RFC 3339 time (2026-11-01T00:00:00Z) or a duration back from now (24h).
Each record carries its sequence number and chain hashes, so an export can be
checked against the live chain.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := escrow.AuditQuery{Limit: 1000}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return badInput(err)
				}
				q.Since = t
			}
			if format != "jsonl" && format != "csv" {
				return badInput(fmt.Errorf("--format %q: want jsonl or csv", format))
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
			w := cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return badInput(err)
				}
				defer f.Close()
				w = f
			}
			enc := newAuditEncoder(w, format)
			for {
				recs, err := s.meta.AuditRecords(cmd.Context(), q)
				if err != nil {
					return err
				}
				for _, r := range recs {
					if err := enc.write(r); err != nil {
						return err
					}
					q.AfterSeq = r.Seq
				}
				if len(recs) < q.Limit {
					return enc.flush()
				}
			}
		},
	}
	sc.register(c)
	c.Flags().StringVar(&since, "since", "", "only records at or after `TIME` (RFC 3339, or a duration such as 24h)")
	c.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	c.Flags().StringVarP(&out, "output", "o", "", "write to `FILE` (mode 0600) instead of standard output")
	return c
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time or a duration", s)
	}
	return t, nil
}

// AuditJSON is the export form of an audit record (also used by the API).
type auditJSON struct {
	Seq       int64             `json:"seq"`
	Time      time.Time         `json:"time"`
	ActorKind string            `json:"actor_kind"`
	ActorID   string            `json:"actor_id"`
	ActorName string            `json:"actor_name,omitempty"`
	Action    string            `json:"action"`
	Device    string            `json:"device,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	Ticket    string            `json:"ticket,omitempty"`
	Detail    map[string]string `json:"detail,omitempty"`
	PrevHash  string            `json:"prev_hash"`
	Hash      string            `json:"hash"`
}

func toAuditJSON(r escrow.AuditRecord) auditJSON {
	return auditJSON{Seq: r.Seq, Time: r.Time, ActorKind: string(r.Actor.Kind), ActorID: r.Actor.ID, ActorName: r.Actor.Name,
		Action: r.Action, Device: string(r.Device), Reason: r.Reason, Ticket: r.Ticket, Detail: r.Detail, PrevHash: r.PrevHash, Hash: r.Hash}
}

type auditEncoder struct {
	json *json.Encoder
	csv  *csv.Writer
	head bool
}

func newAuditEncoder(w io.Writer, format string) *auditEncoder {
	if format == "csv" {
		return &auditEncoder{csv: csv.NewWriter(w)}
	}
	return &auditEncoder{json: json.NewEncoder(w)}
}

func (e *auditEncoder) write(r escrow.AuditRecord) error {
	if e.json != nil {
		return e.json.Encode(toAuditJSON(r))
	}
	if !e.head {
		e.head = true
		if err := e.csv.Write([]string{"seq", "time", "actor_kind", "actor_id", "actor_name", "action", "device", "reason", "ticket", "detail", "prev_hash", "hash"}); err != nil {
			return err
		}
	}
	detail, _ := json.Marshal(r.Detail)
	return e.csv.Write([]string{fmt.Sprint(r.Seq), r.Time.Format(time.RFC3339Nano), string(r.Actor.Kind), r.Actor.ID, r.Actor.Name,
		r.Action, string(r.Device), csvSafe(r.Reason), csvSafe(r.Ticket), string(detail), r.PrevHash, r.Hash})
}

// csvSafe defuses spreadsheet formula injection in free text an operator
// typed (a reason starting with = runs as a formula in Excel).
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func (e *auditEncoder) flush() error {
	if e.csv != nil {
		e.csv.Flush()
		return e.csv.Error()
	}
	return nil
}
