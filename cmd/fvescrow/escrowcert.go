package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/spf13/cobra"
)

func newEscrowCertCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "escrow-cert",
		Short: "Create, renew and inspect FileVault escrow certificates",
	}
	c.AddCommand(newEscrowCertCreateCmd(), newEscrowCertRenewCmd(), newEscrowCertListCmd())
	return c
}

func newEscrowCertCreateCmd() *cobra.Command {
	var (
		outCert, outKey, subject, org string
		bits                          int
		years                         int
	)
	c := &cobra.Command{
		Use:   "create --out-cert FILE --out-key FILE",
		Short: "Create an escrow identity: an RSA key and a self-signed certificate",
		Long: `Create an escrow identity. Macs encrypt their personal recovery key to the
certificate; only the key opens it. The key file is written with mode 0600
and never overwritten. Keep it in Vault or offline; losing it loses every key
escrowed to this certificate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bits != 2048 && bits != 3072 {
				return badInput(fmt.Errorf("--bits %d: want 2048 or 3072", bits))
			}
			if years < 10 {
				return badInput(fmt.Errorf("--years %d: escrow certificates must be valid at least 10 years", years))
			}
			for _, p := range []string{outKey, outCert} {
				if _, err := os.Stat(p); err == nil {
					return badInput(fmt.Errorf("%s already exists; refusing to overwrite it", p))
				}
			}
			id, err := fde.NewIdentity(fde.IdentityOptions{
				Bits: bits, CommonName: subject, Organization: org,
				Validity: time.Duration(years) * 365 * 24 * time.Hour,
			})
			if err != nil {
				return err
			}
			keyPEM, err := fde.EncodePrivateKeyPEM(id.Key)
			if err != nil {
				return err
			}
			if err := writeNew(outKey, keyPEM, 0o600); err != nil {
				return err
			}
			if err := writeNew(outCert, fde.EncodeCertificatePEM(id.Certificate), 0o644); err != nil {
				return err
			}
			return printCertInfo(cmd, fde.Describe(id.Certificate))
		},
	}
	c.Flags().StringVar(&outCert, "out-cert", "", "write the certificate (PEM) to `FILE`")
	c.Flags().StringVar(&outKey, "out-key", "", "write the private key (PEM, mode 0600) to `FILE`")
	c.Flags().StringVar(&subject, "subject", fde.DefaultEscrowSubject, "certificate common name (`CN`)")
	c.Flags().StringVar(&org, "organization", "", "certificate organization (O)")
	c.Flags().IntVar(&bits, "bits", 2048, "RSA key size: 2048 or 3072")
	c.Flags().IntVar(&years, "years", 10, "validity in years (at least 10)")
	_ = c.MarkFlagRequired("out-cert")
	_ = c.MarkFlagRequired("out-key")
	return c
}

func newEscrowCertRenewCmd() *cobra.Command {
	var certPath, keyPath, outCert string
	c := &cobra.Command{
		Use:   "renew --cert PEM --key PEM --out-cert FILE",
		Short: "Issue a new certificate (new serial) for an existing escrow key",
		Long: `Issue a new self-signed certificate for an existing escrow key. Keep the old
certificate too: blobs made for it name its serial and only it matches them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ids, err := loadIdentities([]string{certPath}, []string{keyPath})
			if err != nil {
				return err
			}
			renewed, err := fde.RenewCertificate(ids[0].Certificate, ids[0].Key, fde.IdentityOptions{})
			if err != nil {
				return err
			}
			if err := writeNew(outCert, fde.EncodeCertificatePEM(renewed), 0o644); err != nil {
				return err
			}
			return printCertInfo(cmd, fde.Describe(renewed))
		},
	}
	c.Flags().StringVar(&certPath, "cert", "", "current escrow certificate (`PEM`)")
	c.Flags().StringVar(&keyPath, "key", "", "its private key (`PEM`)")
	c.Flags().StringVar(&outCert, "out-cert", "", "write the new certificate to `FILE`")
	for _, f := range []string{"cert", "key", "out-cert"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

func newEscrowCertListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list PEM...",
		Short: "List certificates with their SHA-256 fingerprints",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SHA256 FINGERPRINT\tSERIAL\tSUBJECT\tNOT AFTER\tBITS")
			for _, p := range args {
				b, err := os.ReadFile(p)
				if err != nil {
					return badInput(err)
				}
				certs, err := fde.ParseCertificatesPEM(b)
				if err != nil {
					return badInput(fmt.Errorf("%s: %w", p, err))
				}
				for _, c := range certs {
					ci := fde.Describe(c)
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", ci.Fingerprint, ci.Serial, ci.Subject, ci.NotAfter.Format(time.DateOnly), ci.KeyBits)
				}
			}
			return w.Flush()
		},
	}
}

func printCertInfo(cmd *cobra.Command, ci fde.CertInfo) error {
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "subject:     %s\nserial:      %s\nnot after:   %s\nsha256:      %s\n",
		ci.Subject, ci.Serial, ci.NotAfter.Format(time.RFC3339), ci.Fingerprint)
	return err
}

// writeNew creates a file that must not exist yet: an escrow key is never
// silently replaced.
func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return badInput(fmt.Errorf("%s already exists; refusing to overwrite it", path))
		}
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadIdentities pairs every certificate in certPaths with the key among
// keyPaths that belongs to it. Several certificates may share one key
// (renewal).
func loadIdentities(certPaths, keyPaths []string) ([]fde.Identity, error) {
	var keys []fde.PrivateKey
	for _, p := range keyPaths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, badInput(err)
		}
		k, err := fde.ParsePrivateKeyPEM(b)
		if err != nil {
			return nil, badInput(fmt.Errorf("%s: %w", p, err))
		}
		keys = append(keys, k)
	}
	var ids []fde.Identity
	for _, p := range certPaths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, badInput(err)
		}
		certs, err := fde.ParseCertificatesPEM(b)
		if err != nil {
			return nil, badInput(fmt.Errorf("%s: %w", p, err))
		}
	next:
		for _, c := range certs {
			for _, k := range keys {
				if id := (fde.Identity{Certificate: c, Key: k}); id.Validate() == nil {
					ids = append(ids, id)
					continue next
				}
			}
			return nil, badInput(fmt.Errorf("%s: no --key belongs to certificate serial %s", p, fde.SerialString(c.SerialNumber)))
		}
	}
	return ids, nil
}
