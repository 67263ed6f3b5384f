package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/notify"
	"github.com/fvescrow/fvescrow/escrow/siem"
	"github.com/spf13/cobra"
)

// notifyConfig configures notification delivery (SMTP, webhooks) and SIEM
// forwarding of the audit log. Who is notified (--notify-security-email,
// --notify-owner) is the helpdesk configuration; this is how.
type notifyConfig struct {
	smtpAddr, smtpFrom, smtpUser, smtpPasswordFile string
	smtpTLS, smtpCAFile, smtpHelo                  string

	webhooks       []string // NAME=URL
	webhookSecrets []string // NAME=FILE
	webhookCAFile  string
	attempts       int
	retryDelay     time.Duration

	siemSyslog                    string
	siemCAFile                    string
	siemClientCert, siemClientKey string
	siemWebhook                   string
	siemWebhookSecretFile         string
	siemFacility                  string
	siemHostname                  string

	// How often the loops look for work; not flags (tests shorten them).
	dispatchEvery, siemEvery time.Duration
}

func (c *notifyConfig) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.smtpAddr, "smtp-addr", "", "mail server `HOST:PORT` for e-mail notifications (587 with STARTTLS, 465 with --smtp-tls tls)")
	f.StringVar(&c.smtpFrom, "smtp-from", "", "sender `ADDRESS` of notification e-mail, e.g. \"fvescrow <fvescrow@example.com>\"")
	f.StringVar(&c.smtpUser, "smtp-user", "", "AUTH PLAIN user name (needs --smtp-password-file)")
	f.StringVar(&c.smtpPasswordFile, "smtp-password-file", "", "`FILE` holding the SMTP password")
	f.StringVar(&c.smtpTLS, "smtp-tls", "starttls", "how the mail connection is protected: starttls (required, not opportunistic), tls (implicit, port 465) or none (a local relay, no AUTH)")
	f.StringVar(&c.smtpCAFile, "smtp-ca-file", "", "CA certificates `PEM` trusted for the mail server (default: the system's)")
	f.StringVar(&c.smtpHelo, "smtp-helo", "", "name given in EHLO (default: this host's name)")
	f.StringSliceVar(&c.webhooks, "notify-webhook", nil, "JSON webhook told about every reveal and alert, as `NAME=URL` (https; repeat or separate with commas)")
	f.StringSliceVar(&c.webhookSecrets, "notify-webhook-secret", nil, "HMAC-SHA256 signing secret of a webhook, as `NAME=FILE` (required for each webhook)")
	f.StringVar(&c.webhookCAFile, "notify-webhook-ca-file", "", "CA certificates `PEM` trusted for webhook receivers (default: the system's)")
	f.IntVar(&c.attempts, "notify-attempts", notify.DefaultRetry.Attempts, "delivery attempts before a notification is marked failed")
	f.DurationVar(&c.retryDelay, "notify-retry-delay", notify.DefaultRetry.First, "wait after the first failed attempt, doubled after each further one (at most 12h)")
	f.StringVar(&c.siemSyslog, "siem-syslog", "", "forward the audit log as RFC 5424 syslog to `tls://HOST:PORT` (or tcp://HOST:PORT)")
	f.StringVar(&c.siemCAFile, "siem-ca-file", "", "CA certificates `PEM` trusted for the SIEM (syslog over TLS and the SIEM webhook)")
	f.StringVar(&c.siemClientCert, "siem-client-cert", "", "client certificate `PEM` presented to the SIEM (mutual TLS)")
	f.StringVar(&c.siemClientKey, "siem-client-key", "", "private key `PEM` of --siem-client-cert")
	f.StringVar(&c.siemWebhook, "siem-webhook", "", "forward the audit log as JSON batches POSTed to this `URL` (https)")
	f.StringVar(&c.siemWebhookSecretFile, "siem-webhook-secret-file", "", "`FILE` holding the secret that signs SIEM webhook batches (like --notify-webhook-secret)")
	f.StringVar(&c.siemFacility, "siem-facility", "authpriv", "syslog facility: a name (auth, authpriv, audit, local0-local7...) or 0-23")
	f.StringVar(&c.siemHostname, "siem-hostname", "", "HOSTNAME in syslog messages (default: this host's name)")
	c.dispatchEvery, c.siemEvery = 10*time.Second, 5*time.Second
}

// validate checks the flags without touching files or the network.
func (c *notifyConfig) validate() error {
	smtpSet := c.smtpFrom != "" || c.smtpUser != "" || c.smtpPasswordFile != "" || c.smtpCAFile != "" || c.smtpHelo != ""
	switch {
	case c.smtpAddr == "" && smtpSet:
		return errors.New("--smtp-from, --smtp-user, --smtp-password-file, --smtp-ca-file and --smtp-helo need --smtp-addr")
	case c.smtpAddr != "" && c.smtpFrom == "":
		return errors.New("--smtp-addr needs --smtp-from")
	case (c.smtpUser == "") != (c.smtpPasswordFile == ""):
		return errors.New("--smtp-user and --smtp-password-file go together")
	}
	switch notify.TLSMode(c.smtpTLS) {
	case notify.StartTLS, notify.ImplicitTLS:
	case notify.NoTLS:
		if c.smtpUser != "" {
			return errors.New("--smtp-tls none with --smtp-user would send the password in clear")
		}
	default:
		return fmt.Errorf("--smtp-tls %q: want starttls, tls or none", c.smtpTLS)
	}
	if c.smtpAddr != "" {
		if err := (notify.SMTPConfig{Addr: c.smtpAddr, From: c.smtpFrom, TLS: notify.TLSMode(c.smtpTLS), LocalName: c.smtpHelo}).Validate(); err != nil {
			return fmt.Errorf("--smtp-*: %w", err)
		}
	}
	if _, _, err := c.endpoints(); err != nil {
		return err
	}
	if c.attempts < 1 || c.retryDelay <= 0 {
		return errors.New("--notify-attempts must be at least 1 and --notify-retry-delay positive")
	}
	if _, _, err := c.syslogTarget(); err != nil {
		return err
	}
	if c.siemWebhook != "" {
		if _, err := notify.ParseEndpoint("siem", c.siemWebhook); err != nil {
			return fmt.Errorf("--siem-webhook: %w", err)
		}
	} else if c.siemWebhookSecretFile != "" {
		return errors.New("--siem-webhook-secret-file needs --siem-webhook")
	}
	if (c.siemClientCert == "") != (c.siemClientKey == "") {
		return errors.New("--siem-client-cert and --siem-client-key go together")
	}
	if c.siemSyslog == "" && c.siemWebhook == "" && (c.siemCAFile != "" || c.siemClientCert != "") {
		return errors.New("--siem-ca-file and --siem-client-cert need --siem-syslog or --siem-webhook")
	}
	if _, err := siem.ParseFacility(c.siemFacility); err != nil {
		return fmt.Errorf("--siem-facility: %w", err)
	}
	return nil
}

// endpoints pairs --notify-webhook with --notify-webhook-secret: the
// endpoints (without secrets) and each one's secret file.
func (c *notifyConfig) endpoints() ([]notify.Endpoint, map[string]string, error) {
	var out []notify.Endpoint
	seen := map[string]bool{}
	for _, kv := range c.webhooks {
		name, raw, ok := strings.Cut(kv, "=")
		if !ok || strings.ContainsAny(name, ":/") { // a bare URL: its own '=' is not the separator
			return nil, nil, fmt.Errorf("--notify-webhook %q: want NAME=URL", redactURL(kv))
		}
		e, err := notify.ParseEndpoint(name, raw)
		if err != nil {
			return nil, nil, fmt.Errorf("--notify-webhook: %w", err)
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("--notify-webhook %s is given twice", name)
		}
		seen[name] = true
		out = append(out, e)
	}
	files := map[string]string{}
	for _, kv := range c.webhookSecrets {
		name, file, ok := strings.Cut(kv, "=")
		if !ok || file == "" {
			return nil, nil, fmt.Errorf("--notify-webhook-secret %q: want NAME=FILE", kv)
		}
		if !seen[name] {
			return nil, nil, fmt.Errorf("--notify-webhook-secret %s: no --notify-webhook of that name", name)
		}
		files[name] = file
	}
	for _, e := range out {
		if files[e.Name] == "" {
			return nil, nil, fmt.Errorf("--notify-webhook %s needs --notify-webhook-secret %s=FILE: receivers must be able to check that alerts come from fvescrow", e.Name, e.Name)
		}
	}
	return out, files, nil
}

// redactURL keeps a mistyped flag value that may hold a webhook token out
// of error messages.
func redactURL(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		return s[:i+3] + "…"
	}
	return s
}

// syslogTarget reads --siem-syslog: the address and whether it is TLS.
func (c *notifyConfig) syslogTarget() (string, bool, error) {
	if c.siemSyslog == "" {
		return "", false, nil
	}
	u, err := url.Parse(c.siemSyslog)
	if err != nil || (u.Scheme != "tls" && u.Scheme != "tcp") || u.Port() == "" || u.Hostname() == "" ||
		(u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
		return "", false, fmt.Errorf("--siem-syslog %q: want tls://HOST:PORT or tcp://HOST:PORT", c.siemSyslog)
	}
	if u.Scheme == "tcp" && c.siemClientCert != "" {
		return "", false, errors.New("--siem-client-cert needs --siem-syslog tls://… (or --siem-webhook)")
	}
	return u.Host, u.Scheme == "tls", nil
}

// build validates the configuration and returns the names of the JSON
// webhooks reveals notify, and the background workers to run: the
// notification dispatcher always (so that e-mail queued without a mail
// server fails visibly), and one SIEM forwarder per configured sink.
func (c *notifyConfig) build(ctx context.Context, st *stores, log *slog.Logger) (webhooks []string, workers []func(context.Context), err error) {
	if err := c.validate(); err != nil {
		return nil, nil, badInput(err)
	}
	host, _ := os.Hostname()
	senders := map[string]notify.Sender{}
	if c.smtpAddr != "" {
		s, err := c.smtp(host)
		if err != nil {
			return nil, nil, err
		}
		senders[notify.ChannelEmail] = s
	} else {
		log.Warn("e-mail delivery is not configured (--smtp-addr): e-mail notifications to the security channel and device owners will be marked failed")
	}
	endpoints, files, _ := c.endpoints()
	if len(endpoints) > 0 {
		for i := range endpoints {
			secret, err := readSecretFile(files[endpoints[i].Name])
			if err != nil {
				return nil, nil, err
			}
			endpoints[i].Secret = notify.NewSecret(secret)
		}
		pool, err := certPool("--notify-webhook-ca-file", c.webhookCAFile)
		if err != nil {
			return nil, nil, err
		}
		hooks, err := notify.NewWebhooks(endpoints, notify.NewHTTPClient(pool, nil))
		if err != nil {
			return nil, nil, badInput(fmt.Errorf("--notify-webhook: %w", err))
		}
		senders[notify.ChannelWebhook] = hooks
		webhooks = hooks.Names()
	}
	d := notify.NewDispatcher(st.meta, senders, notify.WithLogger(log), notify.WithInterval(c.dispatchEvery),
		notify.WithRetry(notify.Retry{Attempts: c.attempts, First: c.retryDelay, Max: 12 * time.Hour}))
	workers = append(workers, d.Run)

	fws, err := c.forwarders(st, host, log)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range fws {
		workers = append(workers, f.Run)
	}
	return webhooks, workers, nil
}

func (c *notifyConfig) smtp(host string) (*notify.SMTP, error) {
	helo := c.smtpHelo
	if helo == "" {
		helo = host
	}
	cfg := notify.SMTPConfig{Addr: c.smtpAddr, From: c.smtpFrom, TLS: notify.TLSMode(c.smtpTLS), Username: c.smtpUser, LocalName: helo}
	if c.smtpPasswordFile != "" {
		pw, err := readSecretFile(c.smtpPasswordFile)
		if err != nil {
			return nil, err
		}
		cfg.Password = notify.NewSecret(pw)
	}
	pool, err := certPool("--smtp-ca-file", c.smtpCAFile)
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = pool
	s, err := notify.NewSMTP(cfg)
	if err != nil {
		return nil, badInput(err)
	}
	return s, nil
}

// encodeAudit is the SIEM payload of a record: the REST API's audit format,
// as `fvescrow audit export` and GET /api/v1/audit give it.
func encodeAudit(r escrow.AuditRecord) ([]byte, error) { return json.Marshal(api.ToAudit(r)) }

func (c *notifyConfig) forwarders(st *stores, host string, log *slog.Logger) ([]*siem.Forwarder, error) {
	if c.siemSyslog == "" && c.siemWebhook == "" {
		return nil, nil
	}
	pool, err := certPool("--siem-ca-file", c.siemCAFile)
	if err != nil {
		return nil, err
	}
	var client *tls.Certificate
	if c.siemClientCert != "" {
		cert, err := tls.LoadX509KeyPair(c.siemClientCert, c.siemClientKey)
		if err != nil {
			return nil, badInput(fmt.Errorf("--siem-client-cert: %w", err))
		}
		client = &cert
	}
	opts := []siem.Option{siem.WithLogger(log), siem.WithInterval(c.siemEvery)}
	var out []*siem.Forwarder
	if addr, useTLS, _ := c.syslogTarget(); addr != "" {
		facility, _ := siem.ParseFacility(c.siemFacility)
		name := c.siemHostname
		if name == "" {
			name = host
		}
		cfg := siem.SyslogConfig{Addr: addr, Facility: facility, Hostname: name}
		if useTLS {
			cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			if client != nil {
				cfg.TLS.Certificates = []tls.Certificate{*client}
			}
		}
		sink, err := siem.NewSyslog(cfg)
		if err != nil {
			return nil, badInput(fmt.Errorf("--siem-syslog: %w", err))
		}
		out = append(out, siem.NewForwarder("syslog", st.meta, st.meta, sink, encodeAudit, append(opts, siem.WithBatch(500))...))
		log.Info("forwarding the audit log by syslog", "to", c.siemSyslog, "facility", facility.String())
	}
	if c.siemWebhook != "" {
		e, _ := notify.ParseEndpoint("siem", c.siemWebhook)
		if c.siemWebhookSecretFile != "" {
			secret, err := readSecretFile(c.siemWebhookSecretFile)
			if err != nil {
				return nil, err
			}
			e.Secret = notify.NewSecret(secret)
		} else {
			log.Warn("SIEM webhook batches are not signed (no --siem-webhook-secret-file)")
		}
		out = append(out, siem.NewForwarder("webhook", st.meta, st.meta, siem.NewWebhook(e, notify.NewHTTPClient(pool, client)), encodeAudit,
			append(opts, siem.WithBatch(100))...))
		log.Info("forwarding the audit log to a webhook", "host", e.URL.Host)
	}
	return out, nil
}

// certPool reads a PEM file of CA certificates; "" means the system's.
func certPool(flag, path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, badInput(fmt.Errorf("%s: %w", flag, err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, badInput(fmt.Errorf("%s: %s holds no PEM certificate", flag, path))
	}
	return pool, nil
}
