// Package apitest starts the real HTTP API (api.New) on real stores for
// tests of the API, its Go client and the CLI: SQLite or PostgreSQL
// metadata, the age secret store, the escrow service with the reveal chain
// wired as serve wires it, local accounts and API tokens. Optionally the
// embedded MDM door and the companion webhook, OIDC sign-in against a real
// provider started in-process, and the web UI are mounted too, as serve
// mounts them, so every route serve can serve is served.
package apitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api"
	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/fvescrow/fvescrow/web"
	"github.com/micromdm/nanomdm/storage/diskv"
	"github.com/oauth2-proxy/mockoidc"
)

// Options shape the server. The zero value is the embedded default with
// serve's reveal rules and no rate limits.
type Options struct {
	// PostgresDSN puts metadata in PostgreSQL (a database of the test's own,
	// from pgtest.NewDatabase) instead of SQLite.
	PostgresDSN    string
	Limits         escrow.RateLimits
	ApprovalGroups []string // groups (or role:NAME) whose reveals need approval
	ApprovalTiming escrow.ApprovalTiming
	SecurityEmails []string // alerts and reveal notices go here
	// MDM mounts the embedded MDM door and the companion webhook.
	MDM bool
	// OIDC mounts OIDC sign-in (/auth/oidc/*) against a mockoidc provider
	// the server starts and stops; the provider's group "engineering" maps
	// to helpdesk.
	OIDC bool
	// UI mounts the web UI (web.New, web.Policy) under /ui as serve does,
	// after OIDC sign-in and offering it when OIDC is on.
	UI bool
	// Mounts and ExtraPolicy add routes and their access, as the web UI and
	// OIDC sign-in do.
	Mounts      []api.Mounter
	ExtraPolicy auth.Policy
	// Log receives the server's log at debug level (default: discarded).
	Log io.Writer
}

// Server is a running API server.
type Server struct {
	URL       string
	HTTP      *httptest.Server
	Handler   http.Handler
	Policy    auth.Policy
	Meta      *sqlstore.Store
	Secrets   escrow.SecretStore
	Service   *escrow.Service
	Auth      *auth.Authenticator
	Local     *auth.LocalAccounts
	Approvals *escrow.Approvals
	Rotations *escrow.Rotations
	// Clock is the approval workflow's clock: real time plus an offset the
	// test moves. The approval gate and the stores keep real time.
	Clock *Clock
	// StaticToken is an admin token accepted as --api-token-file's is.
	StaticToken string
	// IdP is the OIDC provider (Options.OIDC), else nil.
	IdP *mockoidc.MockOIDC

	dir string
}

// Clock is real time shifted by an offset.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the shifted time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Set sets the offset from real time.
func (c *Clock) Set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = d
}

// Start starts a server for t and stops it when t ends. Escrowing keys
// needs OpenSSL (testutil.Need semantics).
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	_, err := exec.LookPath("openssl")
	testutil.Need(t, "openssl", err)
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server; Close stops it and removes its files.
func New(o Options) (_ *Server, err error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "fvescrow-apitest")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, Clock: &Clock{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	var log *slog.Logger
	if o.Log != nil {
		log = slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		log = slog.New(slog.DiscardHandler)
	}
	if o.PostgresDSN != "" {
		s.Meta, err = sqlstore.OpenPostgres(ctx, o.PostgresDSN, sqlstore.WithLogger(log))
	} else {
		s.Meta, err = sqlstore.OpenSQLite(ctx, filepath.Join(dir, "fvescrow.db"), sqlstore.WithLogger(log))
	}
	if err != nil {
		return nil, err
	}
	id, _, err := agestore.LoadOrCreateIdentity(filepath.Join(dir, "age-identity.txt"))
	if err != nil {
		return nil, err
	}
	if s.Secrets, err = agestore.New(filepath.Join(dir, "secrets"), id, agestore.WithLogger(log)); err != nil {
		return nil, err
	}
	if _, _, err := escrow.EnsureEscrowIdentity(ctx, s.Meta, s.Secrets, fde.IdentityOptions{}); err != nil {
		return nil, err
	}
	kr, err := escrow.LoadKeyring(ctx, s.Meta, s.Secrets)
	if err != nil {
		return nil, err
	}
	rp := escrow.DefaultRevealPolicy()
	s.Service = escrow.New(s.Secrets, s.Meta, kr, escrow.WithLogger(log), escrow.WithRevealPolicy(rp))
	s.Auth = auth.NewAuthenticator(s.Meta, auth.WithLogger(log))
	s.Local = auth.NewLocalAccounts(s.Meta, s.Meta, s.Secrets, s.Meta)
	s.StaticToken = auth.NewSecret("fve_")
	s.Auth.AddStaticToken(s.StaticToken, auth.Principal{UserID: "token:api-token-file", Name: "API token file", Roles: []escrow.Role{escrow.RoleAdmin}})

	// The reveal chain as serve wires it (cmd/fvescrow serve.go and
	// helpdesk.go): a disclosed key is scheduled for rotation.
	s.Rotations = escrow.NewRotations(s.Meta, escrow.RotationPolicy{Delay: time.Hour}, log)
	n := escrow.NewNotifications(s.Meta, s.Meta, escrow.NotifyConfig{SecurityEmails: o.SecurityEmails, NotifyOwner: true})
	var chain escrow.Revealer = escrow.NewApprovalGate(escrow.NewRotateAfterReveal(s.Service, s.Rotations), s.Meta, escrow.RequireForGroups(o.ApprovalGroups))
	chain = escrow.NewRateLimiter(chain, s.Meta, n, o.Limits, log)
	chain = escrow.NewNotifying(chain, n)
	chain = escrow.NewRefusalAudit(chain, s.Meta)
	s.Approvals = escrow.NewApprovals(s.Meta, rp, o.ApprovalTiming).WithNow(s.Clock.Now)

	deps := api.Deps{
		Log: log, Auth: s.Auth, Local: s.Local, Devices: s.Service, Details: s.Meta, Audit: s.Meta, People: s.Meta,
		Revealer: chain, Approvals: s.Approvals, Mounts: slices.Clone(o.Mounts), ExtraPolicy: api.Merge(auth.Policy{}, o.ExtraPolicy),
		Rotations: s.Rotations, RotationStore: s.Meta,
		Ready: func(w http.ResponseWriter, r *http.Request) {
			if err := s.Meta.DB().PingContext(r.Context()); err != nil {
				api.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
				return
			}
			api.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		},
	}
	if o.MDM {
		if err := s.mountMDM(ctx, &deps, log); err != nil {
			return nil, err
		}
	}
	// The listener comes first: OIDC's redirect URL names it.
	s.HTTP = httptest.NewUnstartedServer(nil)
	// OIDC sign-in, then the UI offering it, as serve's buildServer mounts
	// them (cmd/fvescrow serve.go, oidccmd.go, webcmd.go).
	var sso web.SSO
	if o.OIDC {
		if sso, err = s.mountOIDC(ctx, &deps, log); err != nil {
			return nil, err
		}
	}
	if o.UI {
		cfg := web.Config{KeyDisplay: time.Minute, Rules: web.Rules{MinReason: rp.MinReasonLength}, SSO: sso}
		if rp.TicketPattern != nil {
			cfg.Rules.TicketPattern = rp.TicketPattern.String()
		}
		deps.Mounts = append(deps.Mounts, web.New(deps, cfg))
		deps.ExtraPolicy = api.Merge(deps.ExtraPolicy, web.Policy())
	}
	s.Handler, s.Policy = api.New(deps)
	s.HTTP.Config.Handler = s.Handler
	s.HTTP.Start()
	s.URL = s.HTTP.URL
	return s, nil
}

// mountOIDC starts a mockoidc provider and adds OIDC sign-in against it.
func (s *Server) mountOIDC(ctx context.Context, deps *api.Deps, log *slog.Logger) (*auth.OIDC, error) {
	idp, err := mockoidc.Run()
	if err != nil {
		return nil, err
	}
	s.IdP = idp
	cfg := auth.OIDCConfig{Issuer: idp.Issuer(), ClientID: idp.ClientID, ClientSecret: auth.NewClientSecret(idp.ClientSecret),
		RedirectURL: "http://" + s.HTTP.Listener.Addr().String() + auth.OIDCCallbackPath,
		RoleGroups:  map[escrow.Role][]string{escrow.RoleHelpdesk: {"engineering"}}}
	onErr := func(w http.ResponseWriter, r *http.Request, err error) { api.WriteError(w, r, log, err) }
	o, err := auth.NewOIDC(cfg, s.Auth, s.Meta, s.Meta, onErr, auth.OIDCLogger(log))
	if err != nil {
		return nil, err
	}
	if err := o.Discover(ctx); err != nil {
		return nil, err
	}
	deps.Mounts = append(deps.Mounts, o)
	deps.ExtraPolicy = api.Merge(deps.ExtraPolicy, o.Policy())
	return o, nil
}

// mountMDM adds the embedded MDM door (nanomdm on its file storage, SCEP)
// and the companion webhook, as serve builds them.
func (s *Server) mountMDM(ctx context.Context, deps *api.Deps, log *slog.Logger) error {
	push := mdm.NewPushCerts(s.Secrets, s.Meta, s.Meta)
	ca, _, err := mdm.LoadOrCreateSCEPCA(ctx, s.Secrets, s.Meta, "apitest")
	if err != nil {
		return err
	}
	challenge, err := mdm.LoadOrCreateChallenge(ctx, s.Secrets)
	if err != nil {
		return err
	}
	profile := func(ctx context.Context) ([]byte, error) {
		cert := s.Service.Keyring().Current(time.Now())
		if cert == nil {
			return nil, errors.New("no valid escrow certificate")
		}
		p, err := fde.NewFileVaultProfile(fde.FileVaultOptions{Location: "apitest", EscrowCertificate: cert})
		if err != nil {
			return nil, err
		}
		return p.XML()
	}
	guarded := mdm.Guard(diskv.New(filepath.Join(s.dir, "nanomdm")), push)
	enq := mdm.NewNanoEnqueuer(guarded, push, nil, log)
	capture := mdm.NewCapture(s.Service, s.Service, s.Service, s.Meta, enq, profile, mdm.WithLogger(log))
	emb, err := mdm.NewEmbedded(guarded, capture, enq, s.Meta, ca, challenge, mdm.WithEmbeddedLogger(log))
	if err != nil {
		return err
	}
	wh, err := mdm.NewWebhook(capture, s.Meta, []byte(auth.NewSecret("")), log)
	if err != nil {
		return err
	}
	deps.MDM, deps.Webhook = emb, mdm.LimitBody(mdm.MaxWebhookBody)(wh)
	return nil
}

// Close stops the server and removes its files.
func (s *Server) Close() {
	if s.HTTP != nil {
		s.HTTP.Close()
	}
	if s.IdP != nil {
		_ = s.IdP.Shutdown()
	}
	if s.Meta != nil {
		s.Meta.Close()
	}
	os.RemoveAll(s.dir)
}

// Client is an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.HTTP.Client() }

// User is a local account with a password it has set itself and a
// personal API token from POST /api/v1/login.
type User struct {
	ID       string
	Username string
	Password string
	Roles    []escrow.Role
	Token    string
	TokenID  string
}

// NewUser creates a local account, replaces its one-time password as a
// first sign-in does, and signs it in over HTTP for a token.
func (s *Server) NewUser(username string, roles ...escrow.Role) (User, error) {
	ctx := context.Background()
	nu, err := s.Local.CreateUser(ctx, escrow.System, username, strings.ToUpper(username[:1])+username[1:], username+"@example.com", roles, false)
	if err != nil {
		return User{}, err
	}
	u := User{ID: nu.User.ID, Username: username, Password: "pw-" + auth.NewSecret("")[:20], Roles: roles}
	if _, err := s.Local.Verify(ctx, username, nu.OneTimePassword, "", u.Password); err != nil {
		return User{}, err
	}
	body := fmt.Sprintf(`{"username": %q, "password": %q}`, username, u.Password)
	resp, err := s.Client().Post(s.URL+"/api/v1/login", "application/json", strings.NewReader(body))
	if err != nil {
		return User{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return User{}, fmt.Errorf("login %s: HTTP %d", username, resp.StatusCode)
	}
	var lr wire.LoginResponse
	if err := json.Unmarshal(b, &lr); err != nil {
		return User{}, fmt.Errorf("login %s: %w", username, err)
	}
	u.Token, u.TokenID = lr.Token, lr.TokenID
	if u.Token == "" || u.TokenID == "" {
		return User{}, fmt.Errorf("login %s: no token in the answer", username)
	}
	return u, nil
}

// MustUser is NewUser failing t.
func (s *Server) MustUser(t testing.TB, username string, roles ...escrow.Role) User {
	t.Helper()
	u, err := s.NewUser(username, roles...)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Session signs u in to a browser session (as the web UI and OIDC sign-in
// do) and returns its cookie and CSRF token.
func (s *Server) Session(u User) (*http.Cookie, string, error) {
	ctx := context.Background()
	eu, err := s.Meta.User(ctx, u.ID)
	if err != nil {
		return nil, "", err
	}
	rec := httptest.NewRecorder()
	csrf, err := s.Auth.NewSession(ctx, rec, eu, eu.Roles, nil, "")
	if err != nil {
		return nil, "", err
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == auth.CookieName {
			return c, csrf, nil
		}
	}
	return nil, "", errors.New("no session cookie set")
}

// Escrow records a Mac and escrows a new random recovery key for it, sent
// as a Mac sends it (CMS made by OpenSSL). It returns the key.
func (s *Server) Escrow(d escrow.Device) (string, error) {
	ctx := context.Background()
	if _, err := s.Service.UpsertDevice(ctx, d); err != nil {
		return "", err
	}
	prk := fakemac.RandomPRK()
	blob, err := fakemac.EncryptCMS(s.Service.Keyring().Current(time.Now()), prk)
	if err != nil {
		return "", err
	}
	if _, err := s.Service.Ingest(ctx, d, blob, escrow.SourceSecurityInfo); err != nil {
		return "", err
	}
	return prk, nil
}

// MustEscrow is Escrow failing t.
func (s *Server) MustEscrow(t testing.TB, d escrow.Device) string {
	t.Helper()
	prk, err := s.Escrow(d)
	if err != nil {
		t.Fatal(err)
	}
	return prk
}
