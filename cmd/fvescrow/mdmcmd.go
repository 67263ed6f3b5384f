package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/spf13/cobra"
)

func newMDMCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "mdm", Short: "Manage the embedded MDM: push certificate and commands"}
	push := &cobra.Command{Use: "push-cert", Short: "Manage the APNs push certificate"}
	push.AddCommand(newPushCertUploadCmd(g))
	c.AddCommand(push, newEnqueueCmd())
	return c
}

func newPushCertUploadCmd(g *globals) *cobra.Command {
	var (
		sc                storeConfig
		certPath, keyPath string
	)
	c := &cobra.Command{
		Use:   "upload --cert PEM --key PEM",
		Short: "Store the APNs push certificate (the key goes to the secret store)",
		Long: `Store the MDM push certificate from Apple's Push Certificates Portal and its
private key. The key is kept in the secret store (Vault in production), the
certificate and its topic in the metadata. A running server picks a renewed
certificate up at its next push.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			certPEM, err := os.ReadFile(certPath)
			if err != nil {
				return badInput(err)
			}
			keyPEM, err := os.ReadFile(keyPath)
			if err != nil {
				return badInput(err)
			}
			defer clear(keyPEM)
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s, err := sc.open(cmd.Context(), false, log)
			if err != nil {
				return err
			}
			defer s.Close()
			push := mdm.NewPushCerts(s.secrets, s.meta, s.meta)
			if err := push.Store(cmd.Context(), localActor(), certPEM, keyPEM); err != nil {
				if errors.Is(err, escrow.ErrInvalid) {
					return badInput(err)
				}
				return err
			}
			topic, _ := push.Topic(cmd.Context())
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "push certificate stored for topic %s\n", topic)
			return err
		},
	}
	sc.register(c)
	c.Flags().StringVar(&certPath, "cert", "", "push certificate `PEM`")
	c.Flags().StringVar(&keyPath, "key", "", "push certificate private key `PEM` (unencrypted)")
	_ = c.MarkFlagRequired("cert")
	_ = c.MarkFlagRequired("key")
	return c
}

func newEnqueueCmd() *cobra.Command {
	var (
		server, tokenFile, command, profile, caCert string
	)
	builders := map[string]func() (fde.Command, error){
		"securityinfo": func() (fde.Command, error) { return fde.NewSecurityInfo() },
		"userlist":     func() (fde.Command, error) { return fde.NewUserList() },
		"profilelist":  func() (fde.Command, error) { return fde.NewProfileList(false) },
	}
	c := &cobra.Command{
		Use:   "enqueue --server URL --command NAME DEVICE...",
		Short: "Queue an MDM command for devices through a running server",
		Long: `Queue a command for one or more devices (enrollment IDs, the UDID for Macs)
through the server's nanomdm API, which records it so the answer is
understood, and pushes. Commands: securityinfo, userlist, profilelist,
installprofile (with --profile FILE). The API token comes from
--api-token-file or FVESCROW_API_TOKEN_FILE.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				fc  fde.Command
				err error
			)
			switch b, ok := builders[command]; {
			case command == "installprofile":
				p, rerr := os.ReadFile(profile)
				if rerr != nil {
					return badInput(rerr)
				}
				fc, err = fde.NewInstallProfile(p)
			case ok:
				fc, err = b()
			default:
				return badInput(fmt.Errorf("--command %q: want securityinfo, userlist, profilelist or installprofile", command))
			}
			if err != nil {
				return badInput(err)
			}
			tok, err := readSecretFile(tokenFile)
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := escrow.DeviceID(id).Validate(); err != nil {
					return badInput(err)
				}
			}
			u := strings.TrimRight(server, "/") + "/nanomdm/v1/enqueue/" + url.PathEscape(strings.Join(args, ","))
			client, err := httpClient(caCert)
			if err != nil {
				return err
			}
			body, status, err := apiDo(cmd.Context(), client, http.MethodPut, u, string(tok), fc.Plist)
			if err != nil {
				return err
			}
			if status == http.StatusUnauthorized {
				return badInput(errors.New("the server refused the API token"))
			}
			var res struct {
				CommandError string `json:"command_error"`
				PushError    string `json:"push_error"`
			}
			_ = json.Unmarshal(body, &res)
			if res.CommandError != "" {
				return fmt.Errorf("enqueue: %s", res.CommandError)
			}
			if status >= 500 && res.PushError == "" {
				return fmt.Errorf("enqueue: server answered %d", status)
			}
			out := fmt.Sprintf("queued %s %s for %d device(s)", fc.RequestType, fc.UUID, len(args))
			if res.PushError != "" {
				out += " (push failed: the devices get it at their next check-in)"
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), out)
			return err
		},
	}
	c.Flags().StringVar(&server, "server", "", "server base `URL`")
	c.Flags().StringVar(&tokenFile, "api-token-file", "", "API token `FILE`")
	c.Flags().StringVar(&command, "command", "", "securityinfo, userlist, profilelist or installprofile")
	c.Flags().StringVar(&profile, "profile", "", "profile `FILE` for installprofile")
	c.Flags().StringVar(&caCert, "ca-cert", "", "trust this CA certificate (`PEM`) for the server's TLS")
	for _, f := range []string{"server", "api-token-file", "command"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

// httpClient trusts the system roots, or only caFile when given.
func httpClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return http.DefaultClient, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, badInput(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, badInput(fmt.Errorf("%s: no PEM certificate", caFile))
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

// apiDo makes one authenticated API request.
func apiDo(ctx context.Context, client *http.Client, method, url, token string, body []byte) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, 0, badInput(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return b, resp.StatusCode, err
}
