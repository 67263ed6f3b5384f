package main

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/spf13/cobra"
)

func newCMSCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "cms",
		Short: "Work with FDE_PersonalRecoveryKeyCMS blobs",
	}
	c.AddCommand(newCMSDecryptCmd())
	return c
}

func newCMSDecryptCmd() *cobra.Command {
	var certs, keys []string
	c := &cobra.Command{
		Use:   "decrypt --cert PEM [--cert PEM ...] --key PEM [FILE]",
		Short: "Decrypt a recovery key blob with the escrow keyring",
		Long: `Decrypt an FDE_PersonalRecoveryKeyCMS blob (DER, base64 or PEM) from FILE or
standard input and print the recovery key.

Exit status: 0 when the key was decrypted; 1 when no --cert matches the
blob's recipient (the recipient's issuer and serial are printed); 2 when the
input is malformed or the invocation is wrong.

Several certificates may share one key (a renewed certificate): give every
certificate ever deployed, since a blob names the exact one it was made for.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := loadIdentities(certs, keys)
			if err != nil {
				return err
			}
			kr, err := fde.NewKeyring(ids...)
			if err != nil {
				return badInput(err)
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			// base64 inflates the blob by a third; allow for line breaks too.
			raw, err := readInput(cmd, name, 2*fde.MaxCMSSize)
			if err != nil {
				return err
			}
			blob, err := decodeBlob(raw)
			if err != nil {
				return badInput(err)
			}
			key, _, err := kr.DecryptRecoveryKey(blob)
			switch {
			case errors.Is(err, fde.ErrNoRecipient):
				return negative(err, "add the escrow certificate this Mac's profile carried (fvescrow escrow-cert list shows serials)")
			case err != nil:
				return badInput(err)
			}
			if w := key.Warning(); w != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: warning: %s\n", w)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key.Expose())
			return err
		},
	}
	c.Flags().StringArrayVar(&certs, "cert", nil, "escrow certificate `PEM` file (repeat for every certificate ever deployed)")
	c.Flags().StringArrayVar(&keys, "key", nil, "escrow private key `PEM` file (repeat if certificates have different keys)")
	_ = c.MarkFlagRequired("cert")
	_ = c.MarkFlagRequired("key")
	return c
}

// decodeBlob accepts DER, PEM (any label) or base64 text.
func decodeBlob(raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return nil, errors.New("no input: give a FILE or pipe the blob on standard input")
	}
	if raw[0] == 0x30 {
		return raw, nil
	}
	trimmed := bytes.TrimSpace(raw)
	if blk, _ := pem.Decode(trimmed); blk != nil {
		return blk.Bytes, nil
	}
	compact := bytes.Join(bytes.Fields(trimmed), nil)
	out := make([]byte, base64.StdEncoding.DecodedLen(len(compact)))
	n, err := base64.StdEncoding.Decode(out, compact)
	if err != nil {
		return nil, fmt.Errorf("%w: input is neither DER, PEM nor base64", fde.ErrMalformedCMS)
	}
	return out[:n], nil
}
