package main

import (
	"fmt"
	"os"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/spf13/cobra"
)

func newProfileCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "profile",
		Short: "Write configuration profiles",
	}
	c.AddCommand(newProfileFileVaultCmd(), newProfileEnrollCmd(g), newProfilePasscodeCmd())
	return c
}

func newProfileFileVaultCmd() *cobra.Command {
	var (
		o                 fde.FileVaultOptions
		certPath, out     string
		signCert, signKey string
		bypass            int
	)
	c := &cobra.Command{
		Use:   "filevault --escrow-cert PEM --location TEXT [-o FILE]",
		Short: "Write the FileVault + recovery key escrow profile",
		Long: `Write the profile that turns FileVault on (deferred to the next logout, the key
never shown to the user) and has macOS encrypt the personal recovery key to
the escrow certificate, so it reaches fvescrow through SecurityInfo.

Install it on the device channel as a system profile before FileVault is
turned on: a key made earlier was never encrypted to the certificate and
needs rotating. --escrow-only leaves FileVault enforcement to something else.
The profile is unsigned unless --sign-cert and --sign-key are given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(certPath)
			if err != nil {
				return badInput(err)
			}
			certs, err := fde.ParseCertificatesPEM(b)
			if err != nil {
				return badInput(fmt.Errorf("%s: %w", certPath, err))
			}
			o.EscrowCertificate = certs[0]
			if cmd.Flags().Changed("max-bypass-attempts") {
				o.MaxBypassAttempts = &bypass
			}
			p, err := fde.NewFileVaultProfile(o)
			if err != nil {
				return badInput(err)
			}
			xml, err := p.XML()
			if err != nil {
				return err
			}
			if (signCert == "") != (signKey == "") {
				return badInput(fmt.Errorf("--sign-cert and --sign-key go together"))
			}
			if signCert != "" {
				if xml, err = signWithFiles(xml, signCert, signKey); err != nil {
					return err
				}
			}
			return writeOutput(cmd, out, xml, 0o644)
		},
	}
	f := c.Flags()
	f.StringVar(&certPath, "escrow-cert", "", "escrow certificate (`PEM`) the recovery key is encrypted to")
	f.StringVar(&o.Location, "location", "", "who holds the key, shown to the user (e.g. \"Example Corp IT\")")
	f.BoolVar(&o.EscrowOnly, "escrow-only", false, "escrow payload and certificate only, without turning FileVault on")
	f.StringVar(&o.DeviceKey, "device-key", "", "text shown in the forgotten-password help (default: serial number)")
	f.StringVar(&o.Identifier, "identifier", fde.DefaultFileVaultIdentifier, "profile PayloadIdentifier (keep it stable so re-sends replace the profile)")
	f.StringVar(&o.Organization, "organization", "", "PayloadOrganization")
	f.IntVar(&bypass, "max-bypass-attempts", 0, "times a user may skip enabling FileVault at login (-1..9999)")
	f.BoolVar(&o.DontAskAtUserLogout, "dont-ask-at-logout", false, "do not ask to enable FileVault at logout")
	f.BoolVar(&o.ForceEnableInSetupAssistant, "force-in-setup-assistant", false, "enable FileVault in Setup Assistant (macOS 14+, automated enrollment)")
	f.BoolVar(&o.DontAllowFDEDisable, "dont-allow-disable", false, "add com.apple.MCX dontAllowFDEDisable")
	f.StringVar(&signCert, "sign-cert", "", "sign with this certificate (`PEM`)")
	f.StringVar(&signKey, "sign-key", "", "signing key (`PEM`)")
	f.StringVarP(&out, "output", "o", "", "write to `FILE` instead of standard output")
	_ = c.MarkFlagRequired("escrow-cert")
	_ = c.MarkFlagRequired("location")
	return c
}

func signWithFiles(xml []byte, certPath, keyPath string) ([]byte, error) {
	b, err := os.ReadFile(certPath)
	if err != nil {
		return nil, badInput(err)
	}
	certs, err := fde.ParseCertificatesPEM(b)
	if err != nil {
		return nil, badInput(fmt.Errorf("%s: %w", certPath, err))
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, badInput(err)
	}
	key, err := fde.ParsePrivateKeyPEM(kb)
	if err != nil {
		return nil, badInput(fmt.Errorf("%s: %w", keyPath, err))
	}
	return fde.SignProfile(xml, certs[0], key, certs[1:]...)
}
