package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/spf13/cobra"
)

// exportFormat names the break-glass export format: age-encrypted JSON lines,
// a header, one escrow.ExportRecord per line, and a trailer whose count
// detects truncation.
const exportFormat = "fvescrow-export/v1"

type exportHeader struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
}

type exportTrailer struct {
	End     bool `json:"end"`
	Records int  `json:"records"`
}

func newExportCmd(g *globals) *cobra.Command {
	var (
		sc             storeConfig
		recipients     []string
		recipientsFile string
		out            string
	)
	c := &cobra.Command{
		Use:   "export --recipient AGE_RECIPIENT [--recipient ...] -o FILE",
		Short: "Break-glass export: every current key and escrow private key, age-encrypted to offline recipients",
		Long: `Write every device's current recovery key and every escrow private key (with
its certificate) to FILE, encrypted with age to the given recipients (age1...
public keys whose identities are kept offline). The export is audited before
anything is read. Check it with 'fvescrow export verify'.

Use it to survive the loss of Vault or of the server; see docs/operations.md
(Disaster recovery).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if recipientsFile != "" {
				b, err := os.ReadFile(recipientsFile)
				if err != nil {
					return badInput(err)
				}
				for _, l := range strings.Split(string(b), "\n") {
					if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
						recipients = append(recipients, l)
					}
				}
			}
			if len(recipients) == 0 {
				return badInput(errors.New("at least one --recipient is required"))
			}
			var rs []age.Recipient
			for _, r := range recipients {
				x, err := age.ParseX25519Recipient(r)
				if err != nil {
					return badInput(fmt.Errorf("recipient %q: %w", r, err))
				}
				rs = append(rs, x)
			}
			if out == "" {
				return badInput(errors.New("-o FILE is required: an export never goes to a terminal"))
			}
			svc, s, err := openService(cmd, g, &sc)
			if err != nil {
				return err
			}
			defer s.Close()
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return badInput(err)
			}
			n, err := writeExport(cmd, svc, f, rs, recipients)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "exported %d secrets to %s for %d recipient(s)\n", n, out, len(rs))
			return err
		},
	}
	sc.register(c)
	c.Flags().StringArrayVar(&recipients, "recipient", nil, "age recipient (age1...) that can decrypt the export; repeatable")
	c.Flags().StringVar(&recipientsFile, "recipients-file", "", "read recipients from `FILE`, one per line")
	c.Flags().StringVarP(&out, "output", "o", "", "write the encrypted export to `FILE` (created, mode 0600)")
	c.AddCommand(newExportVerifyCmd())
	return c
}

func writeExport(cmd *cobra.Command, svc *escrow.Service, f *os.File, rs []age.Recipient, names []string) (int, error) {
	w, err := age.Encrypt(f, rs...)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(exportHeader{Format: exportFormat, Created: time.Now().UTC()}); err != nil {
		return 0, err
	}
	n, err := svc.Export(cmd.Context(), localActor(), names, func(r escrow.ExportRecord) error { return enc.Encode(r) })
	if err != nil {
		return n, err
	}
	if err := enc.Encode(exportTrailer{End: true, Records: n}); err != nil {
		return n, err
	}
	if err := bw.Flush(); err != nil {
		return n, err
	}
	return n, w.Close()
}

func newExportVerifyCmd() *cobra.Command {
	var identity string
	c := &cobra.Command{
		Use:   "verify --identity FILE EXPORT",
		Short: "Decrypt an export with an offline identity and check every record (prints no secret)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ib, err := os.ReadFile(identity)
			if err != nil {
				return badInput(err)
			}
			ids, err := age.ParseIdentities(bytes.NewReader(ib))
			if err != nil {
				return badInput(fmt.Errorf("%s: not an age identity file", identity))
			}
			f, err := os.Open(args[0])
			if err != nil {
				return badInput(err)
			}
			defer f.Close()
			r, err := age.Decrypt(f, ids...)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				// age says "failed to read line: EOF" for a cut header.
				return negative(fmt.Errorf("%s is truncated or damaged (its age header is incomplete): %w", args[0], err))
			} else if err != nil {
				return negative(fmt.Errorf("decrypt %s: %w", args[0], err))
			}
			sum, err := checkExport(bufio.NewScanner(r))
			if err != nil {
				return negative(fmt.Errorf("%s: %w", args[0], err))
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "export OK: %d recovery keys, %d escrow identities, created %s\n", sum.prks, sum.escrowKeys, sum.created.Format(time.RFC3339))
			return err
		},
	}
	c.Flags().StringVar(&identity, "identity", "", "age identity `FILE` of one of the recipients")
	_ = c.MarkFlagRequired("identity")
	return c
}

type exportSummary struct {
	prks, escrowKeys int
	created          time.Time
}

func checkExport(sc *bufio.Scanner) (exportSummary, error) {
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var sum exportSummary
	line := 0
	var trailer *exportTrailer
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if line == 1 {
			var h exportHeader
			if err := json.Unmarshal(b, &h); err != nil || h.Format != exportFormat {
				return sum, fmt.Errorf("line 1: not an %s export", exportFormat)
			}
			sum.created = h.Created
			continue
		}
		if trailer != nil {
			return sum, fmt.Errorf("line %d: data after the end marker", line)
		}
		if bytes.Contains(b, []byte(`"end":true`)) {
			var t exportTrailer
			if err := json.Unmarshal(b, &t); err == nil && t.End {
				trailer = &t
				continue
			}
		}
		var rec escrow.ExportRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return sum, fmt.Errorf("line %d: not a record", line)
		}
		switch rec.Kind {
		case escrow.KindPRK:
			if _, err := fde.ParseRecoveryKey([]byte(rec.Data)); err != nil {
				return sum, fmt.Errorf("line %d: device %s: %w", line, rec.Device, err)
			}
			sum.prks++
		case escrow.KindEscrowKey:
			certs, err := fde.ParseCertificatesPEM([]byte(rec.Data))
			if err != nil {
				return sum, fmt.Errorf("line %d: escrow identity %s: %w", line, rec.Fingerprint, err)
			}
			key, err := fde.ParsePrivateKeyPEM([]byte(rec.Data))
			if err != nil {
				return sum, fmt.Errorf("line %d: escrow identity %s: %w", line, rec.Fingerprint, err)
			}
			if err := (fde.Identity{Certificate: certs[0], Key: key}).Validate(); err != nil || fde.Fingerprint(certs[0]) != rec.Fingerprint {
				return sum, fmt.Errorf("line %d: escrow identity %s: key and certificate do not match", line, rec.Fingerprint)
			}
			sum.escrowKeys++
		default:
			return sum, fmt.Errorf("line %d: unknown kind %q", line, rec.Kind)
		}
	}
	if err := sc.Err(); err != nil {
		return sum, err
	}
	if trailer == nil {
		return sum, errors.New("truncated: no end marker")
	}
	if trailer.Records != sum.prks+sum.escrowKeys {
		return sum, fmt.Errorf("end marker counts %d records, found %d", trailer.Records, sum.prks+sum.escrowKeys)
	}
	return sum, nil
}
