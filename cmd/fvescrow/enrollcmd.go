package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/spf13/cobra"
)

func newProfileEnrollCmd(g *globals) *cobra.Command {
	var (
		sc                        storeConfig
		baseURL, out, org, anchor string
		signCert, signKey         string
		accessRights              int
	)
	c := &cobra.Command{
		Use:   "enroll --data DIR --url BASE_URL [-o FILE]",
		Short: "Write the MDM enrollment profile (SCEP identity + MDM payload)",
		Long: `Write the enrollment profile for the embedded MDM: a SCEP payload (subject
unique per device, the server's challenge), and an MDM payload that signs
every message, checks in at BASE_URL/checkin, uses the stored push
certificate's topic, has access rights for security queries and FileVault key
rotation, and offers bootstrap-token escrow. BASE_URL must be https.

The profile contains the SCEP challenge: distribute it like a credential.`,
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
			ctx := cmd.Context()
			topic, err := mdm.NewPushCerts(s.secrets, s.meta, s.meta).Topic(ctx)
			if errors.Is(err, escrow.ErrNotFound) {
				return badInput(errors.New("no APNs push certificate stored"), "upload it first: fvescrow mdm push-cert upload --cert push.pem --key push.key")
			}
			if err != nil {
				return err
			}
			caPEM, err := s.meta.Setting(ctx, mdm.SettingSCEPCACert)
			if errors.Is(err, escrow.ErrNotFound) {
				return badInput(errors.New("no SCEP CA yet"), "start the server once: fvescrow serve")
			}
			if err != nil {
				return err
			}
			ca, err := fde.ParseCertificatesPEM(caPEM)
			if err != nil {
				return err
			}
			challenge, err := mdm.LoadOrCreateChallenge(ctx, s.secrets)
			if err != nil {
				return err
			}
			o := fde.EnrollmentOptions{BaseURL: baseURL, Topic: topic, Challenge: challenge, SCEPCA: ca[0], Organization: org, AccessRights: accessRights}
			if anchor != "" {
				b, err := os.ReadFile(anchor)
				if err != nil {
					return badInput(err)
				}
				certs, err := fde.ParseCertificatesPEM(b)
				if err != nil {
					return badInput(fmt.Errorf("%s: %w", anchor, err))
				}
				o.TrustAnchor = certs[0]
			}
			p, err := fde.NewEnrollmentProfile(o)
			if err != nil {
				return badInput(err)
			}
			xml, err := p.XML()
			if err != nil {
				return err
			}
			if (signCert == "") != (signKey == "") {
				return badInput(errors.New("--sign-cert and --sign-key go together"))
			}
			if signCert != "" {
				if xml, err = signWithFiles(xml, signCert, signKey); err != nil {
					return err
				}
			}
			return writeOutput(cmd, out, xml, 0o600)
		},
	}
	sc.register(c)
	f := c.Flags()
	f.StringVar(&baseURL, "url", "", "public https `BASE_URL` of the server")
	f.StringVarP(&out, "output", "o", "", "write to `FILE` (mode 0600) instead of standard output")
	f.StringVar(&org, "organization", "", "PayloadOrganization and SCEP subject O")
	f.StringVar(&anchor, "trust-anchor", "", "add this CA certificate (`PEM`) as a trusted root, for servers with a private CA")
	f.IntVar(&accessRights, "access-rights", fde.DefaultAccessRights, "MDM AccessRights bits (must include 1, 2, 4 and 1024)")
	f.StringVar(&signCert, "sign-cert", "", "sign with this certificate (`PEM`)")
	f.StringVar(&signKey, "sign-key", "", "signing key (`PEM`)")
	_ = c.MarkFlagRequired("url")
	return c
}
