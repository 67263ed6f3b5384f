package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// envToken holds an API token itself, for automation that has no file to
// give (a CI secret). It is read, never mirrored to a flag.
const envToken = "FVESCROW_TOKEN"

// clientConfig is how the API commands reach a server: --server, the token
// (--token-file, FVESCROW_TOKEN, or what `fvescrow login` saved) and the CA
// to trust.
type clientConfig struct {
	server    string
	tokenFile string
	caCert    string
	lookupEnv func(string) (string, bool)
}

func newClientConfig() *clientConfig { return &clientConfig{lookupEnv: os.LookupEnv} }

func (c *clientConfig) register(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVar(&c.server, "server", "", "server `URL` for the API commands (default: the one fvescrow login saved)")
	f.StringVar(&c.tokenFile, "token-file", "", "API token `FILE` for the API commands; FVESCROW_TOKEN may hold the token itself (default: the one fvescrow login saved)")
	f.StringVar(&c.caCert, "ca-cert", "", "trust this CA certificate (`PEM`) for the server's TLS")
}

// credentials are what `fvescrow login` saves: a personal token for one
// server, in a 0600 file.
type credentials struct {
	Server    string    `json:"server"`
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
	User      string    `json:"user"`
	CACert    string    `json:"ca_cert,omitempty"`
}

// String and LogValue leave the token out.
func (c credentials) String() string {
	return fmt.Sprintf("%s at %s (token %s, expires %s)", c.User, c.Server, c.TokenID, c.ExpiresAt.Format(time.RFC3339))
}

func (c credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// credentialsPath is $XDG_CONFIG_HOME/fvescrow/credentials.json, or the
// same under the user's configuration folder.
func (c *clientConfig) credentialsPath() (string, error) {
	dir, ok := c.lookupEnv("XDG_CONFIG_HOME")
	if !ok || dir == "" {
		var err error
		if dir, err = os.UserConfigDir(); err != nil {
			return "", fmt.Errorf("no configuration folder for the saved sign-in: %w", err)
		}
	}
	return filepath.Join(dir, "fvescrow", "credentials.json"), nil
}

// loadCredentials returns the saved sign-in, or nil without one. A file
// others may read is refused: it holds a credential.
func (c *clientConfig) loadCredentials() (*credentials, string, error) {
	path, err := c.credentialsPath()
	if err != nil {
		return nil, "", err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, path, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, path, badInput(fmt.Errorf("%s is readable by others (mode %04o)", path, st.Mode().Perm()),
			"chmod 600 "+path+", then sign in again: the token may have been read: fvescrow login")
	}
	var cr credentials
	if err := json.NewDecoder(io.LimitReader(f, 64<<10)).Decode(&cr); err != nil {
		return nil, path, badInput(fmt.Errorf("%s: not a saved sign-in", path), "sign in again: fvescrow login")
	}
	return &cr, path, nil
}

// saveCredentials writes the sign-in atomically, mode 0600 in a 0700
// folder.
func saveCredentials(path string, cr credentials) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(cr, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*.json") // 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// sameServer compares server URLs after normalization: a saved token is
// only ever sent to the server that issued it.
func sameServer(a, b string) bool {
	ua, errA := client.ParseServer(a)
	ub, errB := client.ParseServer(b)
	return errA == nil && errB == nil && strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host) && ua.Path == ub.Path
}

// apiHTTPClient trusts the system roots, or only caFile.
func apiHTTPClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return &http.Client{Timeout: time.Minute}, nil
	}
	hc, err := httpClient(caFile)
	if err != nil {
		return nil, err
	}
	cp := *hc
	cp.Timeout = time.Minute
	return &cp, nil
}

// session is a connected client and where its token came from.
type session struct {
	*client.Client
	saved *credentials // the saved sign-in, when its token is used
}

var errNoServer = errors.New("no server: pass --server URL (or FVESCROW_SERVER), or sign in first with fvescrow login --server URL")

// connect builds the client of an API command. The token is, in order:
// --token-file, FVESCROW_TOKEN, the saved sign-in (for its own server only).
func (c *clientConfig) connect() (*session, error) {
	saved, _, err := c.loadCredentials()
	if err != nil {
		return nil, err
	}
	server, caCert := c.server, c.caCert
	if server == "" && saved != nil {
		server = saved.Server
	}
	if server == "" {
		return nil, badInput(errNoServer)
	}
	var token string
	var used *credentials
	switch env, _ := c.lookupEnv(envToken); {
	case c.tokenFile != "":
		b, err := readSecretFile(c.tokenFile)
		if err != nil {
			return nil, err
		}
		token = string(b)
	case strings.TrimSpace(env) != "":
		token = strings.TrimSpace(env)
	case saved != nil && sameServer(saved.Server, server):
		if !saved.ExpiresAt.IsZero() && time.Now().After(saved.ExpiresAt) {
			return nil, badInput(fmt.Errorf("your sign-in to %s expired at %s", saved.Server, saved.ExpiresAt.Local().Format(time.RFC3339)),
				"sign in again: fvescrow login")
		}
		token, used = saved.Token, saved
	default:
		return nil, badInput(fmt.Errorf("not signed in to %s", server),
			"sign in: fvescrow login --server "+server+" (automation: --token-file FILE or FVESCROW_TOKEN)")
	}
	// The CA the sign-in was made with is the server's, whatever the token.
	if caCert == "" && saved != nil && sameServer(saved.Server, server) {
		caCert = saved.CACert
	}
	hc, err := apiHTTPClient(caCert)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(server, client.WithHTTPClient(hc), client.WithToken(token), client.WithUserAgent("fvescrow/"+version))
	if err != nil {
		return nil, badInput(err)
	}
	return &session{Client: cl, saved: used}, nil
}

// apiError turns a client error into the CLI's error with an exit code and
// a hint: 401 → sign in again (exit 2); 403 and other refusals → exit 1;
// bad input → exit 2.
func apiError(err error) error {
	var e *client.Error
	if !errors.As(err, &e) {
		var ee *exitError
		if errors.As(err, &ee) || errors.Is(err, context.Canceled) {
			return err
		}
		return negative(fmt.Errorf("cannot reach the server: %w", err), "check --server (or FVESCROW_SERVER) and --ca-cert")
	}
	switch {
	case e.Status == http.StatusUnauthorized:
		return badInput(fmt.Errorf("the server refused the credentials: %w", e), "sign in again: fvescrow login")
	case e.Code == client.CodeApprovalRequired:
		return negative(e, "ask for one: fvescrow approval request DEVICE --reason TEXT --ticket ID; once approved, add --approval ID")
	case e.Status == http.StatusForbidden:
		return negative(fmt.Errorf("not allowed: %w", e), "sign in as someone with that right: fvescrow login")
	case e.Status == http.StatusTooManyRequests:
		return negative(e, "an admin must lift the block: fvescrow user unblock USER")
	case e.Status == http.StatusBadRequest, e.Status == http.StatusRequestEntityTooLarge:
		return badInput(e)
	}
	return negative(e)
}

// prompter asks for credentials: on the terminal without echo, or line by
// line from --password-stdin.
type prompter interface {
	line(prompt string) (string, error)   // echoed (a user name)
	secret(prompt string) (string, error) // never echoed
	newPassword() (string, error)
}

type termPrompter struct {
	in  *os.File
	out io.Writer
}

func (p termPrompter) line(prompt string) (string, error) {
	fmt.Fprint(p.out, prompt)
	s, err := bufio.NewReader(p.in).ReadString('\n')
	return strings.TrimSpace(s), err
}

func (p termPrompter) secret(prompt string) (string, error) {
	fmt.Fprint(p.out, prompt)
	b, err := term.ReadPassword(int(p.in.Fd()))
	fmt.Fprintln(p.out)
	return string(b), err
}

func (p termPrompter) newPassword() (string, error) {
	a, err := p.secret("New password (at least 12 characters): ")
	if err != nil {
		return "", err
	}
	b, err := p.secret("New password again: ")
	if err != nil {
		return "", err
	}
	if a != b {
		return "", badInput(errors.New("the new passwords differ"))
	}
	return a, nil
}

// linePrompter reads --password-stdin: the password, then the TOTP code
// (an empty line or nothing without TOTP), then a new password (used only
// when a one-time password must be replaced).
type linePrompter struct{ r *bufio.Reader }

func (p linePrompter) next() (string, error) {
	s, err := p.r.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && s != "") {
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

func (p linePrompter) line(string) (string, error) { return p.next() }

func (p linePrompter) secret(string) (string, error) { return p.next() }

func (p linePrompter) newPassword() (string, error) {
	s, err := p.next()
	if err != nil || s == "" {
		return "", badInput(errors.New("the account has a one-time password: give a new password as the third line of standard input"))
	}
	return s, nil
}

func newLoginCmd(cc *clientConfig) *cobra.Command {
	var (
		username      string
		passwordStdin bool
	)
	c := &cobra.Command{
		Use:   "login [--server URL] [--username NAME] [--password-stdin]",
		Short: "Sign in to a server with a local account and save a personal API token",
		Long: `Sign in with a local account and save the personal API token the server
issues (it expires after the server's --cli-token-ttl) with the server's URL
in $XDG_CONFIG_HOME/fvescrow/credentials.json (or the user configuration
folder), mode 0600. The other API commands use it for that server.

The password and TOTP code are asked on the terminal without echo. With
--password-stdin, standard input holds the password on its first line, the
TOTP code on the second (empty without TOTP) and, for an account still on its
one-time password, the new password on the third. An account on a one-time
password must choose a new one before anything else.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			saved, path, err := cc.loadCredentials()
			if err != nil {
				return err
			}
			server, caCert := cc.server, cc.caCert
			if server == "" && saved != nil {
				server = saved.Server
			}
			if server == "" {
				return badInput(errors.New("no server: pass --server URL (or FVESCROW_SERVER)"))
			}
			if caCert == "" && saved != nil && sameServer(saved.Server, server) {
				caCert = saved.CACert
			}
			if caCert != "" {
				if caCert, err = filepath.Abs(caCert); err != nil {
					return badInput(err)
				}
			}
			hc, err := apiHTTPClient(caCert)
			if err != nil {
				return err
			}
			cl, err := client.New(server, client.WithHTTPClient(hc), client.WithUserAgent("fvescrow/"+version))
			if err != nil {
				return badInput(err)
			}
			var p prompter
			if passwordStdin {
				p = linePrompter{bufio.NewReader(cmd.InOrStdin())}
			} else {
				f, ok := cmd.InOrStdin().(*os.File)
				if !ok || !term.IsTerminal(int(f.Fd())) {
					return badInput(errors.New("no terminal to ask for the password"), "give it on standard input: fvescrow login --password-stdin --username NAME < FILE")
				}
				p = termPrompter{in: f, out: cmd.ErrOrStderr()}
			}
			if username == "" {
				if passwordStdin {
					return badInput(errors.New("--username is required with --password-stdin"))
				}
				if username, err = p.line("User name: "); err != nil {
					return badInput(err)
				}
			}
			req := wire.LoginRequest{Username: username}
			if req.Password, err = p.secret("Password: "); err != nil {
				return badInput(fmt.Errorf("read the password: %w", err))
			}
			if req.TOTP, err = p.secret("TOTP code (empty if the account has none): "); err != nil && !errors.Is(err, io.EOF) {
				return badInput(fmt.Errorf("read the TOTP code: %w", err))
			}
			req.TOTP = strings.TrimSpace(req.TOTP)
			ctx := cmd.Context()
			res, err := cl.Login(ctx, req)
			if client.PasswordChangeRequired(err) {
				fmt.Fprintln(cmd.ErrOrStderr(), "fvescrow: the account has a one-time password: choose a new one")
				if req.NewPassword, err = p.newPassword(); err != nil {
					return err
				}
				res, err = cl.Login(ctx, req)
			}
			var e *client.Error
			if errors.As(err, &e) && e.Status == http.StatusUnauthorized {
				return badInput(fmt.Errorf("sign-in refused: %w", e), "check the user name, password and TOTP code; repeated failures lock the account for a while")
			}
			if err != nil {
				return apiError(err)
			}
			cr := credentials{Server: cl.Server(), Token: res.Token, TokenID: res.TokenID, ExpiresAt: res.ExpiresAt, User: res.Me.ID, CACert: caCert}
			if err := saveCredentials(path, cr); err != nil {
				return fmt.Errorf("save the sign-in: %w", err)
			}
			// The previous personal token of this server is not needed any more.
			if saved != nil && sameServer(saved.Server, cr.Server) && saved.TokenID != cr.TokenID {
				if err := cl.UseToken(saved.Token).RevokeToken(ctx, saved.TokenID); err == nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "fvescrow: revoked the previous token %s\n", saved.TokenID)
				}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "signed in to %s as %s (%s); token %s expires %s\n", cr.Server, res.Me.ID,
				strings.Join(res.Me.Roles, ", "), res.TokenID, res.ExpiresAt.Local().Format(time.RFC3339))
			return err
		},
	}
	c.Flags().StringVar(&username, "username", "", "local account `NAME` (asked when not given)")
	c.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password (then the TOTP code, then a new password) from standard input")
	return c
}

func newLogoutCmd(cc *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the saved personal token on the server and delete it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			saved, path, err := cc.loadCredentials()
			if err != nil {
				return err
			}
			if saved == nil {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), "not signed in")
				return err
			}
			hc, err := apiHTTPClient(saved.CACert)
			if err != nil {
				return err
			}
			cl, err := client.New(saved.Server, client.WithHTTPClient(hc), client.WithToken(saved.Token), client.WithUserAgent("fvescrow/"+version))
			if err != nil {
				return badInput(err)
			}
			// Refused as unknown or expired: the token is dead already.
			err = cl.RevokeToken(cmd.Context(), saved.TokenID)
			if err != nil && !client.IsCode(err, client.CodeUnauthenticated) && !client.IsCode(err, client.CodeNotFound) {
				return negative(fmt.Errorf("the server did not revoke token %s, so the sign-in is kept: %w", saved.TokenID, err),
					"try again when the server is reachable, or delete "+path+" (the token expires "+saved.ExpiresAt.Local().Format(time.RFC3339)+")")
			}
			if err := os.Remove(path); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "signed out of %s; token %s revoked\n", saved.Server, saved.TokenID)
			return err
		},
	}
}
