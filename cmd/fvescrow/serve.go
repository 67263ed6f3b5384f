package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/spf13/cobra"
)

// serveConfig is everything `fvescrow serve` takes.
type serveConfig struct {
	stores   storeConfig
	helpdesk helpdeskConfig
	oidc     oidcConfig
	notify   notifyConfig
	web      webConfig
	rotation rotationConfig

	listen          string
	tlsCert, tlsKey string
	mdmCertHeader   string
	apiTokenFile    string
	organization    string
	fvLocation      string
	fvEscrowOnly    bool
	checkInterval   time.Duration
	outboxInterval  time.Duration
	checkpointEvery time.Duration
	shutdownTimeout time.Duration
	companion       bool
	nanomdmURL      string
	nanomdmKeyFile  string
	nanomdmCACert   string
	webhookKeyFile  string

	// Test hooks: an APNs client pointing at a fake APNs, and a wrapper
	// around the escrow service as the MDM door sees it (to stop a
	// "crashed" server between the outbox write and the ingest).
	testPushClient mdm.PushClient
	testWrapKeys   func(mdm.Keys) mdm.Keys
	// testNow is the clock of the escrow service, the MDM door and the
	// rotation scheduler (tests move it past delays).
	testNow func() time.Time
}

func (c *serveConfig) Validate() error {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.companion && (c.nanomdmURL == "" || c.nanomdmKeyFile == "" || c.webhookKeyFile == "") {
		return errors.New("--companion needs --nanomdm-url, --nanomdm-api-key-file and --webhook-hmac-key-file")
	}
	if !c.companion && (c.nanomdmURL != "" || c.webhookKeyFile != "" || c.nanomdmCACert != "") {
		return errors.New("--nanomdm-url, --nanomdm-ca-cert and --webhook-hmac-key-file are for --companion mode")
	}
	if c.fvLocation == "" {
		return errors.New("--filevault-location must not be empty: macOS shows it when FileVault is enabled")
	}
	if c.checkInterval <= 0 || c.outboxInterval <= 0 || c.checkpointEvery <= 0 {
		return errors.New("intervals must be positive")
	}
	if err := c.rotation.validate(); err != nil {
		return err
	}
	if _, err := c.helpdesk.revealPolicy(); err != nil {
		return err
	}
	// Checked before any store is opened, so a refused first start creates
	// nothing (and loses no one-time password).
	return c.notify.validate()
}

func newServeCmd(g *globals) *cobra.Command {
	var c serveConfig
	cmd := &cobra.Command{
		Use:   "serve [--data DIR] [--listen ADDR]",
		Short: "Run the escrow server (embedded MDM by default, or beside an existing nanomdm with --companion)",
		Long: `Run the fvescrow server.

With no database or Vault configured it runs on the embedded default: SQLite
metadata, age-encrypted secrets and nanomdm's file storage in --data, created
on first start with a SCEP CA, an escrow identity and the keys they need.
--database-url selects PostgreSQL (metadata and nanomdm's queue) and
--vault-addr selects Vault for every secret.

Endpoints: /mdm and /checkin (devices), /scep, /nanomdm/v1/ (nanomdm's
enqueue, push and pushcert API, behind the API token), /healthz, /readyz,
and /webhook/nanomdm in --companion mode.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.Validate(); err != nil {
				return badInput(err)
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, &c, log, cmd.ErrOrStderr())
		},
	}
	c.register(cmd)
	return cmd
}

// register defines serve's flags, bound to c.
func (c *serveConfig) register(cmd *cobra.Command) {
	c.stores.register(cmd)
	c.helpdesk.register(cmd)
	c.oidc.register(cmd)
	c.notify.register(cmd)
	c.web.register(cmd)
	c.rotation.register(cmd)
	f := cmd.Flags()
	f.StringVar(&c.listen, "listen", "127.0.0.1:9000", "listen `ADDR`ess")
	f.StringVar(&c.tlsCert, "tls-cert", "", "serve TLS with this certificate `PEM` (otherwise run behind a TLS-terminating proxy)")
	f.StringVar(&c.tlsKey, "tls-key", "", "TLS private key `PEM`")
	f.StringVar(&c.mdmCertHeader, "mdm-cert-header", "", "take the device certificate from this header set by a proxy doing mutual TLS, instead of Mdm-Signature")
	f.StringVar(&c.apiTokenFile, "api-token-file", "", "API token `FILE` for /nanomdm/v1 (default: generate one on first start and print it once)")
	f.StringVar(&c.organization, "organization", "", "organization name in profiles and the SCEP CA")
	f.StringVar(&c.fvLocation, "filevault-location", "your IT department", "where the recovery key is escrowed, shown by macOS when FileVault is enabled")
	f.BoolVar(&c.fvEscrowOnly, "filevault-escrow-only", false, "install the escrow payload only; something else enforces FileVault")
	f.DurationVar(&c.checkInterval, "check-interval", 30*time.Second, "how often due SecurityInfo checks are sent")
	f.DurationVar(&c.outboxInterval, "outbox-interval", 30*time.Second, "how often the outbox is drained")
	f.DurationVar(&c.checkpointEvery, "audit-checkpoint-interval", 10*time.Minute, "how often the audit chain head is signed")
	f.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 15*time.Second, "grace period for requests in flight at shutdown")
	f.BoolVar(&c.companion, "companion", false, "run beside an existing nanomdm: receive its webhook, enqueue through its API")
	f.StringVar(&c.nanomdmURL, "nanomdm-url", "", "companion: base URL of the nanomdm API")
	f.StringVar(&c.nanomdmKeyFile, "nanomdm-api-key-file", "", "companion: `FILE` holding nanomdm's API key")
	f.StringVar(&c.nanomdmCACert, "nanomdm-ca-cert", "", "companion: CA certificate `PEM` that nanomdm's TLS certificate chains to (default: the system roots)")
	f.StringVar(&c.webhookKeyFile, "webhook-hmac-key-file", "", "companion: `FILE` holding the webhook HMAC secret (nanomdm -webhook-hmac-key)")
}

// server is a running fvescrow.
type server struct {
	handler   http.Handler
	policy    auth.Policy
	workers   []func(context.Context) // background work (notification delivery, SIEM)
	svc       *escrow.Service
	capture   *mdm.Capture
	rotations *escrow.Rotations
	stores    *stores
	closers   []func() error
}

func serve(ctx context.Context, c *serveConfig, log *slog.Logger, out io.Writer) error {
	srv, notes, err := buildServer(ctx, c, log)
	if err != nil {
		return err
	}
	defer srv.close()
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	scheme := "http"
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return badInput(fmt.Errorf("TLS: %w", err))
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
		scheme = "https"
	}
	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	go srv.svc.RunOutbox(bg, c.outboxInterval)
	if srv.capture != nil {
		go srv.capture.Run(bg, c.checkInterval)
		go srv.capture.RunRotationLoop(bg, c.rotation.interval)
	}
	go srv.rotations.Run(bg, c.rotation.interval)
	go runCheckpoints(bg, srv.svc, c.checkpointEvery, log)
	for _, w := range srv.workers {
		go w(bg)
	}

	fmt.Fprintf(out, "fvescrow %s listening on %s://%s (%s)\n", version, scheme, ln.Addr(), srv.stores.describe)
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer scancel()
	return hs.Shutdown(sctx)
}

func runCheckpoints(ctx context.Context, svc *escrow.Service, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, _, err := svc.Checkpoint(ctx); err != nil {
				log.Warn("audit checkpoint", "err", err)
			}
		}
	}
}

func (s *server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		_ = s.closers[i]()
	}
	s.stores.Close()
}

// buildServer opens everything, creating what a first start needs, and
// returns the server and what the admin must do next.
func buildServer(ctx context.Context, c *serveConfig, log *slog.Logger) (*server, []string, error) {
	st, err := c.stores.open(ctx, true, log)
	if err != nil {
		return nil, nil, err
	}
	srv := &server{stores: st}
	ok := false
	defer func() {
		if !ok {
			srv.close()
		}
	}()
	var notes []string
	info, created, err := escrow.EnsureEscrowIdentity(ctx, st.meta, st.secrets, fde.IdentityOptions{Organization: c.organization})
	if err != nil {
		return nil, nil, fmt.Errorf("escrow identity: %w", err)
	}
	if created {
		notes = append(notes, fmt.Sprintf("created the escrow identity (serial %s, sha256 %s): Macs encrypt their recovery keys to it", info.Serial, info.Fingerprint))
	}
	kr, err := escrow.LoadKeyring(ctx, st.meta, st.secrets)
	if err != nil {
		return nil, nil, err
	}
	rp, err := c.helpdesk.revealPolicy()
	if err != nil {
		return nil, nil, badInput(err)
	}
	now := time.Now
	if c.testNow != nil {
		now = c.testNow
	}
	svc := escrow.New(st.secrets, st.meta, kr, escrow.WithLogger(log), escrow.WithRevealPolicy(rp), escrow.WithClock(now))
	if _, err := svc.EnsureAuditKey(ctx); err != nil {
		return nil, nil, fmt.Errorf("audit key: %w", err)
	}
	srv.svc = svc
	if created {
		if _, err := svc.Audit(ctx, escrow.Event{Actor: escrow.System, Action: escrow.ActionEscrowCertAdded,
			Detail: map[string]string{"fingerprint": info.Fingerprint, "serial": info.Serial, "subject": info.Subject, "why": "first start"}}); err != nil {
			return nil, nil, err
		}
	}
	authn := auth.NewAuthenticator(st.meta, auth.WithLogger(log), auth.WithSessionTimeouts(c.helpdesk.sessionIdle, c.helpdesk.sessionMax))
	local := auth.NewLocalAccounts(st.meta, st.meta, st.secrets, st.meta)
	adminNote, err := ensureAdmin(ctx, local, st.meta, c.helpdesk.adminUser)
	if err != nil {
		return nil, nil, fmt.Errorf("first admin: %w", err)
	}
	if adminNote != "" {
		notes = append(notes, adminNote)
	}
	tokenNote, err := apiTokenFile(ctx, c.apiTokenFile, c.stores.dataDir, authn, st.meta)
	if err != nil {
		return nil, nil, err
	}
	if tokenNote != "" {
		notes = append(notes, tokenNote)
	}
	push := mdm.NewPushCerts(st.secrets, st.meta, st.meta)
	profile := func(ctx context.Context) ([]byte, error) {
		cert := svc.Keyring().Current(time.Now())
		if cert == nil {
			return nil, errors.New("no valid escrow certificate")
		}
		p, err := fde.NewFileVaultProfile(fde.FileVaultOptions{Location: c.fvLocation, EscrowCertificate: cert, EscrowOnly: c.fvEscrowOnly, Organization: c.organization})
		if err != nil {
			return nil, err
		}
		return p.XML()
	}
	var keys mdm.Keys = svc
	if c.testWrapKeys != nil {
		keys = c.testWrapKeys(keys)
	}
	webhooks, workers, err := c.notify.build(ctx, st, log)
	if err != nil {
		return nil, nil, err
	}
	srv.workers = workers
	rot := escrow.NewRotations(st.meta, escrow.RotationPolicy{Delay: c.rotation.delay, MaxAge: c.rotation.maxAge}, log).WithClock(now)
	srv.rotations = rot
	deps := api.Deps{
		Log: log, Auth: authn, Local: local, Devices: svc, Details: st.meta, Audit: st.meta, People: st.meta,
		Revealer:  c.helpdesk.revealChain(escrow.NewRotateAfterReveal(svc, rot), st.meta, webhooks, log),
		Approvals: escrow.NewApprovals(st.meta, rp, escrow.ApprovalTiming{Pending: c.helpdesk.approvalPending, Window: c.helpdesk.approvalWindow}),
		Ready:     readyHandler(st, svc, log),
		TokenTTL:  c.helpdesk.cliTokenTTL,
		Rotations: rot, RotationStore: st.meta,
	}
	if c.companion {
		key, err := readSecretFile(c.nanomdmKeyFile)
		if err != nil {
			return nil, nil, err
		}
		hmacKey, err := readSecretFile(c.webhookKeyFile)
		if err != nil {
			return nil, nil, err
		}
		var nanoClient *http.Client
		if c.nanomdmCACert != "" {
			if nanoClient, err = httpClient(c.nanomdmCACert); err != nil {
				return nil, nil, err
			}
			nanoClient.Timeout = 30 * time.Second
		}
		enq, err := mdm.NewAPIEnqueuer(c.nanomdmURL, string(key), nanoClient)
		if err != nil {
			return nil, nil, badInput(err)
		}
		// The external server's queue would keep the key at rest: rotations
		// fall back to regeneration by an agent. It sends each result to
		// fvescrow once: a check whose answer was lost on the way is sent
		// again after two pushes.
		capture := mdm.NewCapture(keys, svc, svc, st.meta, enq, profile, mdm.WithLogger(log), mdm.WithClock(now), mdm.WithRotation(mdm.RotationConfig{
			Store: st.meta, GiveUp: c.rotation.giveUp,
			Unavailable: "companion mode: RotateFileVaultKey would rest, with the current key, in the external MDM's queue",
		}), mdm.WithResendAfter(2))
		wh, err := mdm.NewWebhook(capture, st.meta, hmacKey, log)
		if err != nil {
			return nil, nil, badInput(err)
		}
		deps.Webhook = mdm.LimitBody(mdm.MaxWebhookBody)(wh)
		srv.capture = capture
		notes = append(notes, "companion mode: point nanomdm's -webhook-url at /webhook/nanomdm with the same -webhook-hmac-key")
	} else {
		ca, caCreated, err := mdm.LoadOrCreateSCEPCA(ctx, st.secrets, st.meta, c.organization)
		if err != nil {
			return nil, nil, fmt.Errorf("SCEP CA: %w", err)
		}
		challenge, err := mdm.LoadOrCreateChallenge(ctx, st.secrets)
		if err != nil {
			return nil, nil, fmt.Errorf("SCEP challenge: %w", err)
		}
		nano, purger, closeNano, err := openNanoStorage(ctx, &c.stores, st, log)
		if err != nil {
			return nil, nil, err
		}
		srv.closers = append(srv.closers, closeNano)
		guarded := mdm.Guard(nano, push)
		enq := mdm.NewNanoEnqueuer(guarded, push, c.testPushClient, log)
		capture := mdm.NewCapture(keys, svc, svc, st.meta, enq, profile, mdm.WithLogger(log), mdm.WithClock(now),
			mdm.WithRotation(mdm.RotationConfig{Store: st.meta, Keys: svc, GiveUp: c.rotation.giveUp}))
		var opts []mdm.EmbeddedOption
		opts = append(opts, mdm.WithEmbeddedLogger(log))
		if purger != nil {
			opts = append(opts, mdm.WithQueuePurger(purger))
		}
		if c.mdmCertHeader != "" {
			opts = append(opts, mdm.WithCertHeader(c.mdmCertHeader))
		}
		emb, err := mdm.NewEmbedded(guarded, capture, enq, st.meta, ca, challenge, opts...)
		if err != nil {
			return nil, nil, err
		}
		deps.MDM = emb
		srv.capture = capture
		if caCreated {
			notes = append(notes, "created the SCEP CA that issues device identities")
		}
		if _, err := push.Topic(ctx); errors.Is(err, escrow.ErrNotFound) {
			notes = append(notes,
				"next: upload the APNs push certificate: fvescrow mdm push-cert upload --cert push.pem --key push.key (same storage flags)",
				"then: write the enrollment profile: fvescrow profile enroll --url https://YOUR-PUBLIC-HOST -o enroll.mobileconfig (same storage flags)")
		}
	}
	oidcRoutes, oidcPolicy, err := c.oidc.build(ctx, authn, st.meta, st.meta, log)
	if err != nil {
		return nil, nil, err
	}
	if oidcRoutes != nil {
		deps.Mounts, deps.ExtraPolicy = append(deps.Mounts, oidcRoutes), api.Merge(auth.Policy{}, oidcPolicy)
	}
	webRoutes, webPolicy, err := c.web.build(deps, oidcRoutes, log)
	if err != nil {
		return nil, nil, err
	}
	if webRoutes != nil {
		deps.Mounts, deps.ExtraPolicy = append(deps.Mounts, webRoutes), api.Merge(api.Merge(auth.Policy{}, deps.ExtraPolicy), webPolicy)
	}
	srv.handler, srv.policy = api.New(deps)
	ok = true
	return srv, notes, nil
}

func readSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, badInput(err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) == 0 {
		return nil, badInput(fmt.Errorf("%s is empty", path))
	}
	return b, nil
}

// pinger is a backend that can report it is reachable.
type pinger interface{ Ping(context.Context) error }

func readyHandler(st *stores, svc *escrow.Service, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		status := map[string]any{"status": "ready"}
		code := http.StatusOK
		if err := st.meta.DB().PingContext(ctx); err != nil {
			status["metadata"], code = "unavailable", http.StatusServiceUnavailable
		}
		if p, ok := st.secrets.(pinger); ok {
			if err := p.Ping(ctx); err != nil {
				status["secrets"], code = "unavailable", http.StatusServiceUnavailable
			}
		}
		if ob, err := svc.OutboxStats(ctx); err == nil {
			status["outbox_pending"] = ob.Pending
		}
		if code != http.StatusOK {
			status["status"] = "not ready"
			log.Warn("not ready", "status", status)
		}
		api.WriteJSON(w, code, status)
	}
}

// defaultServeConfig is serveConfig with every flag at its default (pflag
// stores a default when a flag is defined), for tests that build a server
// without a command line.
func defaultServeConfig() serveConfig {
	var c serveConfig
	c.register(&cobra.Command{})
	return c
}
