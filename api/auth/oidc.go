package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/go-chi/chi/v5"
	"golang.org/x/oauth2"
)

// Routes of OIDC sign-in.
const (
	OIDCLoginPath    = "/auth/oidc/login"
	OIDCCallbackPath = "/auth/oidc/callback"
	// DefaultReturnTo is where a browser lands after signing in when it did
	// not ask for a page.
	DefaultReturnTo = "/ui/"
)

// DefaultMFAMethods are the RFC 8176 "amr" values that count as a second
// factor: any multi-factor, one-time code, or a proof of possession of a
// hardware or software key.
var DefaultMFAMethods = []string{"mfa", "otp", "hwk", "swk"}

// ClientSecret is the OIDC client secret. It prints as "REDACTED" through
// fmt, slog and encoding/json.
type ClientSecret struct{ s string }

// NewClientSecret wraps a client secret.
func NewClientSecret(s string) ClientSecret { return ClientSecret{s: s} }

// Reveal returns the secret itself, for the token endpoint only.
func (c ClientSecret) Reveal() string { return c.s }

// IsZero reports whether the secret is empty.
func (c ClientSecret) IsZero() bool { return c.s == "" }

func (ClientSecret) String() string               { return redacted }
func (ClientSecret) GoString() string             { return redacted }
func (ClientSecret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (ClientSecret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (ClientSecret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

const redacted = "REDACTED"

// OIDCConfig configures sign-in through an OpenID Connect provider.
type OIDCConfig struct {
	// Issuer is the IdP's issuer URL, exactly as its discovery document
	// names it (https; http only on a loopback address, for tests).
	Issuer       string
	ClientID     string
	ClientSecret ClientSecret
	// RedirectURL is this server's callback as registered at the IdP:
	// https://HOST/auth/oidc/callback.
	RedirectURL string
	// PostLogoutRedirectURL is where the IdP sends a browser after logout
	// (default: RedirectURL's origin + "/").
	PostLogoutRedirectURL string
	// Scopes requested; "openid" is always added (default openid, email,
	// profile).
	Scopes []string
	// GroupsClaim names the claim holding the user's groups (default
	// "groups"); a dotted name reaches into nested objects
	// ("realm_access.roles").
	GroupsClaim string
	// RoleGroups maps each role to the IdP groups that grant it. A value
	// "email:ADDRESS" grants the role to that verified e-mail address (for
	// IdPs such as Google whose tokens carry no groups).
	RoleGroups map[escrow.Role][]string
	// RequireMFA refuses sign-ins whose ID token does not show a second
	// factor: an "amr" value in MFAMethods, or "acr" equal to MFAACR.
	RequireMFA bool
	MFAMethods []string // default DefaultMFAMethods
	// MFAACR is an "acr" value that proves MFA; it is also requested with
	// acr_values so the IdP steps up.
	MFAACR string
	// AllowedDomains, when set, admit only e-mail addresses in these
	// domains.
	AllowedDomains []string
	// HTTPClient makes the requests to the IdP (default: 10s timeout).
	HTTPClient *http.Client `json:"-"`
}

// Validate checks the configuration; errors name the field at fault.
func (c *OIDCConfig) Validate() error {
	if _, err := checkURL("issuer", c.Issuer); err != nil {
		return err
	}
	if c.ClientID == "" {
		return fmt.Errorf("%w: the OIDC client ID is required", ErrBadRequest)
	}
	if c.ClientSecret.IsZero() {
		return fmt.Errorf("%w: the OIDC client secret is required", ErrBadRequest)
	}
	ru, err := checkURL("redirect URL", c.RedirectURL)
	if err != nil {
		return err
	}
	if ru.Path != OIDCCallbackPath {
		return fmt.Errorf("%w: the OIDC redirect URL must end in %s (got path %q)", ErrBadRequest, OIDCCallbackPath, ru.Path)
	}
	if c.PostLogoutRedirectURL != "" {
		if _, err := checkURL("post-logout redirect URL", c.PostLogoutRedirectURL); err != nil {
			return err
		}
	}
	if len(c.RoleGroups) == 0 {
		return fmt.Errorf("%w: map at least one IdP group to a role", ErrBadRequest)
	}
	for role, groups := range c.RoleGroups {
		if !role.Valid() {
			return fmt.Errorf("%w: unknown role %q (roles: %s)", ErrBadRequest, role, roleList())
		}
		if len(groups) == 0 || slices.Contains(groups, "") {
			return fmt.Errorf("%w: role %s is mapped to an empty group", ErrBadRequest, role)
		}
	}
	for _, d := range c.AllowedDomains {
		if d == "" || strings.ContainsAny(d, "@/ ") {
			return fmt.Errorf("%w: %q is not an e-mail domain", ErrBadRequest, d)
		}
	}
	for _, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\n") {
			return fmt.Errorf("%w: %q is not a scope", ErrBadRequest, s)
		}
	}
	return nil
}

func roleList() string {
	names := make([]string, len(escrow.AllRoles))
	for i, r := range escrow.AllRoles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// checkURL accepts an absolute https URL, or http on a loopback address
// (an IdP running inside a test).
func checkURL(what, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("%w: the OIDC %s must be an absolute URL", ErrBadRequest, what)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("%w: the OIDC %s must be https (got %s://%s)", ErrBadRequest, what, u.Scheme, u.Host)
	}
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// OIDC signs people in through an OpenID Connect provider: authorization
// code flow with PKCE (S256), state and nonce; the IdP's groups map to
// fvescrow roles, fixed in the session at sign-in.
type OIDC struct {
	cfg        OIDCConfig
	authn      *Authenticator
	users      escrow.UserStore
	audit      Auditor
	onError    func(http.ResponseWriter, *http.Request, error)
	log        *slog.Logger
	now        func() time.Time
	client     *http.Client
	idPrefix   string // "oidc:<issuer host>:"
	postLogout string
	flows      *flowSealer
	used       *replayCache

	mu   sync.Mutex
	disc *discovered // nil until discovery succeeds
}

// discovered is what the IdP's discovery document told us.
type discovered struct {
	provider   *oidc.Provider
	verifier   *oidc.IDTokenVerifier
	oauth      oauth2.Config
	endSession string
}

// OIDCOption configures OIDC.
type OIDCOption func(*OIDC)

// OIDCLogger sets the logger.
func OIDCLogger(l *slog.Logger) OIDCOption {
	return func(o *OIDC) { o.log = l.With("component", "oidc") }
}

// OIDCClock sets the clock of flow expiry and ID token checks (tests).
func OIDCClock(now func() time.Time) OIDCOption { return func(o *OIDC) { o.now = now } }

// NewOIDC returns OIDC sign-in. Sessions are made by authn; users are
// recorded in users (Source "oidc"); every sign-in and every refusal of a
// known person is audited; onError writes errors (api.WriteError). It does
// not contact the IdP: Discover does, and sign-in retries it until it works.
func NewOIDC(cfg OIDCConfig, authn *Authenticator, users escrow.UserStore, audit Auditor,
	onError func(http.ResponseWriter, *http.Request, error), opts ...OIDCOption) (*OIDC, error) {
	if authn == nil || users == nil || audit == nil || onError == nil {
		panic("auth.NewOIDC: missing dependency")
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	} else if !slices.Contains(cfg.Scopes, oidc.ScopeOpenID) {
		cfg.Scopes = append([]string{oidc.ScopeOpenID}, cfg.Scopes...)
	}
	if len(cfg.MFAMethods) == 0 {
		cfg.MFAMethods = DefaultMFAMethods
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	iss, _ := url.Parse(cfg.Issuer)
	ru, _ := url.Parse(cfg.RedirectURL)
	o := &OIDC{cfg: cfg, authn: authn, users: users, audit: audit, onError: onError,
		log: slog.New(slog.DiscardHandler), now: time.Now, client: cfg.HTTPClient,
		idPrefix: "oidc:" + iss.Host + ":", postLogout: cfg.PostLogoutRedirectURL,
		flows: newFlowSealer(cfg.ClientSecret, cfg.Issuer, cfg.ClientID), used: newReplayCache()}
	if o.postLogout == "" {
		o.postLogout = ru.Scheme + "://" + ru.Host + "/"
	}
	if o.client == nil {
		o.client = &http.Client{Timeout: 10 * time.Second}
	}
	o.client = limitedClient(o.client)
	for _, opt := range opts {
		opt(o)
	}
	return o, nil
}

// ErrDiscovery: the IdP's discovery document could not be fetched or used.
var ErrDiscovery = errors.New("OIDC discovery")

// Discover reads the IdP's discovery document now. A wrong issuer (the
// document names another) wraps ErrBadRequest: that is configuration, not
// an outage.
func (o *OIDC) Discover(ctx context.Context) error {
	_, err := o.discovery(ctx)
	return err
}

func (o *OIDC) cached() *discovered {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.disc
}

// discovery returns what the IdP's discovery document says, fetching it
// the first time. The fetch runs outside the lock: while the IdP is down,
// LogoutURL must not wait for it.
func (o *OIDC) discovery(ctx context.Context) (*discovered, error) {
	if d := o.cached(); d != nil {
		return d, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, o.client), o.cfg.Issuer)
	var mismatch *oidc.IssuerMismatchError
	if errors.As(err, &mismatch) {
		return nil, fmt.Errorf("%w: %w: the IdP names its issuer %q; use exactly that", ErrDiscovery, ErrBadRequest, mismatch.Discovered)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v: %w", ErrDiscovery, err, escrow.ErrUnavailable)
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	_ = p.Claims(&extra)
	d := &discovered{provider: p,
		verifier: p.VerifierContext(oidc.ClientContext(context.Background(), o.client), &oidc.Config{ClientID: o.cfg.ClientID, Now: o.now}),
		oauth: oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret.Reveal(), Endpoint: p.Endpoint(),
			RedirectURL: o.cfg.RedirectURL, Scopes: o.cfg.Scopes}}
	if extra.EndSession != "" {
		// The logout URL carries the ID token as a hint: only over TLS.
		if _, err := checkURL("end_session_endpoint", extra.EndSession); err == nil {
			d.endSession = extra.EndSession
		} else {
			o.log.Warn("ignoring the IdP's end_session_endpoint: not https")
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.disc == nil { // a concurrent discovery may have won; keep its result
		o.disc = d
		o.log.Info("OIDC provider discovered", "issuer", o.cfg.Issuer, "end_session", d.endSession != "")
	}
	return o.disc, nil
}

// Mount adds the sign-in routes.
func (o *OIDC) Mount(r chi.Router) {
	r.Get(OIDCLoginPath, o.login)
	r.Get(OIDCCallbackPath, o.callback)
}

// Policy declares the sign-in routes: public, they authenticate people
// themselves.
func (o *OIDC) Policy() Policy {
	return Policy{
		Key(http.MethodGet, OIDCLoginPath):    Public,
		Key(http.MethodGet, OIDCCallbackPath): Public,
	}
}

// LoginPath is where a browser starts signing in (add ?return_to=/local/path).
func (o *OIDC) LoginPath() string { return OIDCLoginPath }

// LogoutURL is the IdP's end-session URL for a session it created, with
// the ID token as a hint and where to come back to, or "" when the IdP has
// no end-session endpoint or the session is not an OIDC one.
func (o *OIDC) LogoutURL(s escrow.Session) string {
	if s.Source != "oidc" {
		return ""
	}
	d := o.cached()
	if d == nil || d.endSession == "" {
		return ""
	}
	u, err := url.Parse(d.endSession)
	if err != nil {
		return ""
	}
	q := u.Query()
	if s.IDToken != "" {
		q.Set("id_token_hint", s.IDToken)
	}
	q.Set("client_id", o.cfg.ClientID)
	q.Set("post_logout_redirect_uri", o.postLogout)
	u.RawQuery = q.Encode()
	return u.String()
}

func (o *OIDC) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	returnTo := r.URL.Query().Get("return_to")
	if returnTo == "" {
		returnTo = DefaultReturnTo
	} else if !LocalPath(returnTo) {
		o.onError(w, r, fmt.Errorf("%w: return_to must be a path on this server", ErrBadRequest))
		return
	}
	d, err := o.discovery(r.Context())
	if err != nil {
		o.log.Warn("sign-in unavailable", "err", err)
		o.onError(w, r, fmt.Errorf("%w: the identity provider cannot be reached", escrow.ErrUnavailable))
		return
	}
	f := flow{State: NewSecret(""), Nonce: NewSecret(""), Verifier: oauth2.GenerateVerifier(), ReturnTo: returnTo,
		Expires: o.now().Add(flowLifetime).Unix()}
	sealed, err := o.flows.seal(f)
	if err != nil {
		o.onError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: sealed, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(flowLifetime / time.Second)})
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(f.Verifier), oidc.Nonce(f.Nonce)}
	if o.cfg.RequireMFA && o.cfg.MFAACR != "" {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", o.cfg.MFAACR))
	}
	http.Redirect(w, r, d.oauth.AuthCodeURL(f.State, opts...), http.StatusFound)
}

// oauthErrors are the error codes of RFC 6749 and OIDC Core an IdP sends
// back; only these are repeated to the user (the parameter is
// attacker-controlled text otherwise).
var oauthErrors = []string{"access_denied", "invalid_request", "unauthorized_client", "unsupported_response_type",
	"invalid_scope", "server_error", "temporarily_unavailable", "interaction_required", "login_required",
	"account_selection_required", "consent_required", "invalid_request_uri", "invalid_request_object",
	"request_not_supported", "request_uri_not_supported", "registration_not_supported"}

func (o *OIDC) callback(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ctx := r.Context()
	q := r.URL.Query()
	f, err := o.takeFlow(w, r, q.Get("state"))
	if err != nil {
		o.log.Info("sign-in callback refused", "why", err.Error())
		o.onError(w, r, fmt.Errorf("%w: this sign-in has expired or was started in another window; sign in again", ErrBadRequest))
		return
	}
	if e := q.Get("error"); e != "" {
		if !slices.Contains(oauthErrors, e) {
			e = "unknown error"
		}
		o.log.Info("the IdP did not sign the user in", "error", e)
		o.onError(w, r, fmt.Errorf("%w: the identity provider did not sign you in (%s)", ErrForbidden, e))
		return
	}
	code := q.Get("code")
	if code == "" {
		o.onError(w, r, fmt.Errorf("%w: the identity provider sent no sign-in code", ErrBadRequest))
		return
	}
	d, err := o.discovery(ctx)
	if err != nil {
		o.log.Warn("sign-in unavailable", "err", err)
		o.onError(w, r, fmt.Errorf("%w: the identity provider cannot be reached", escrow.ErrUnavailable))
		return
	}
	xctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, o.client), 15*time.Second)
	defer cancel()
	tok, err := d.oauth.Exchange(xctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		o.log.Warn("redeeming the sign-in code", "err", tokenError(err))
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			o.onError(w, r, fmt.Errorf("%w: the identity provider refused the sign-in; sign in again", ErrBadRequest))
			return
		}
		o.onError(w, r, fmt.Errorf("%w: the identity provider cannot be reached", escrow.ErrUnavailable))
		return
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		o.log.Warn("the token response has no ID token")
		o.onError(w, r, fmt.Errorf("%w: the identity provider sent no ID token", ErrForbidden))
		return
	}
	idt, err := d.verifier.Verify(xctx, rawID)
	if err != nil {
		// go-oidc's verification errors name issuers, audiences and
		// times, never token bytes.
		o.log.Warn("ID token refused", "err", err)
		o.onError(w, r, fmt.Errorf("%w: the identity provider's answer could not be verified", ErrForbidden))
		return
	}
	id := o.idPrefix + idt.Subject
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		o.refuse(w, r, escrow.User{ID: id}, "nonce mismatch", nil, "the identity provider's answer could not be verified")
		return
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			o.refuse(w, r, escrow.User{ID: id}, "access token hash mismatch", nil, "the identity provider's answer could not be verified")
			return
		}
	}
	c, err := o.claims(xctx, d, idt, tok)
	if err != nil {
		o.log.Warn("reading the user's claims", "err", err)
		o.onError(w, r, fmt.Errorf("%w: the identity provider's answer could not be read", ErrForbidden))
		return
	}
	o.signIn(w, r, id, c, rawID, d.endSession != "", f.ReturnTo)
}

// signIn applies fvescrow's rules to a verified identity and, if they
// pass, records the user, audits and starts the session.
func (o *OIDC) signIn(w http.ResponseWriter, r *http.Request, id string, c claims, rawID string, keepIDToken bool, returnTo string) {
	ctx := r.Context()
	who := escrow.User{ID: id, Username: c.username(), DisplayName: c.Name, Email: c.Email, Groups: c.Groups}
	if len(id) > 320 {
		o.refuse(w, r, escrow.User{ID: id[:320]}, "subject too long", nil, "your account cannot sign in here")
		return
	}
	if o.cfg.RequireMFA && !c.hasMFA(o.cfg.MFAMethods, o.cfg.MFAACR) {
		o.refuse(w, r, who, "no second factor", map[string]string{"amr": strings.Join(c.AMR, ","), "acr": c.ACR},
			"sign in again with multi-factor authentication")
		return
	}
	if len(o.cfg.AllowedDomains) > 0 && !c.inDomain(o.cfg.AllowedDomains) {
		o.refuse(w, r, who, "e-mail domain not allowed", nil, "your e-mail domain may not sign in here")
		return
	}
	u, err := o.users.User(ctx, id)
	exists := err == nil
	switch {
	case errors.Is(err, escrow.ErrNotFound):
	case err != nil:
		o.onError(w, r, err)
		return
	case u.Source != "oidc":
		o.refuse(w, r, who, "not an OIDC account", nil, "your account cannot sign in here")
		return
	case u.Disabled:
		o.refuse(w, r, who, "disabled", nil, "your account is disabled")
		return
	}
	roles := mapRoles(o.cfg.RoleGroups, c)
	if len(roles) == 0 {
		o.refuse(w, r, who, "no group maps to a role", map[string]string{"groups": groupSummary(c.Groups)},
			"you are in no group that gives access to fvescrow; ask your administrator")
		return
	}
	now := o.now()
	u.ID, u.Username, u.DisplayName, u.Email, u.Source = id, who.Username, who.DisplayName, who.Email, "oidc"
	u.Roles, u.Groups, u.LastLoginAt = roles, c.Groups, now
	if exists {
		err = o.users.UpdateUser(ctx, u)
	} else if err = o.users.CreateUser(ctx, u); errors.Is(err, escrow.ErrConflict) {
		// Two first sign-ins at once: the other one created the record.
		err = o.users.UpdateUser(ctx, u)
	}
	if err != nil {
		o.onError(w, r, err)
		return
	}
	names := make([]string, len(roles))
	for i, role := range roles {
		names[i] = string(role)
	}
	detail := map[string]string{"method": "oidc", "roles": strings.Join(names, ",")}
	if len(c.AMR) > 0 {
		detail["amr"] = strings.Join(c.AMR, ",")
	}
	if c.ACR != "" {
		detail["acr"] = c.ACR
	}
	if _, err := o.audit.AppendAudit(ctx, escrow.Event{Time: now, Actor: escrow.Actor{Kind: escrow.ActorUser, ID: u.ID, Name: displayName(u)},
		Action: ActionLoginSucceeded, Detail: detail}); err != nil {
		o.onError(w, r, err)
		return
	}
	// A browser signing in ends whatever session it had (a shared machine).
	o.authn.EndSession(ctx, w, r)
	idToken := ""
	if keepIDToken {
		idToken = rawID // only as the logout hint
	}
	if _, err := o.authn.NewSession(ctx, w, u, roles, c.Groups, idToken); err != nil {
		o.onError(w, r, err)
		return
	}
	http.Redirect(w, r, returnTo, http.StatusSeeOther)
}

// refuse audits a refused sign-in of a known person and answers 403 with
// msg.
func (o *OIDC) refuse(w http.ResponseWriter, r *http.Request, who escrow.User, why string, detail map[string]string, msg string) {
	d := map[string]string{"method": "oidc", "why": why}
	for k, v := range detail {
		if v != "" {
			d[k] = v
		}
	}
	if who.Email != "" {
		d["email"] = who.Email
	}
	o.log.Info("sign-in refused", "user", who.ID, "why", why)
	if _, err := o.audit.AppendAudit(r.Context(), escrow.Event{Time: o.now(), Actor: escrow.Actor{Kind: escrow.ActorUser, ID: who.ID, Name: who.DisplayName},
		Action: ActionLoginFailed, Detail: d}); err != nil {
		o.onError(w, r, err)
		return
	}
	o.onError(w, r, fmt.Errorf("%w: %s", ErrForbidden, msg))
}

// takeFlow clears the flow cookie and returns the flow it sealed, if the
// state matches, it has not expired and was not used before.
func (o *OIDC) takeFlow(w http.ResponseWriter, r *http.Request, state string) (flow, error) {
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	c, err := r.Cookie(flowCookie)
	if err != nil || c.Value == "" {
		return flow{}, errors.New("no sign-in in progress (flow cookie missing)")
	}
	f, err := o.flows.open(c.Value)
	if err != nil {
		return flow{}, err
	}
	now := o.now()
	if now.Unix() > f.Expires {
		return flow{}, errors.New("the sign-in flow expired")
	}
	if state == "" || subtle.ConstantTimeCompare([]byte(state), []byte(f.State)) != 1 {
		return flow{}, errors.New("state does not match the flow cookie")
	}
	if !o.used.take(f.State, time.Unix(f.Expires, 0), now) {
		return flow{}, errors.New("the sign-in flow was already used")
	}
	return f, nil
}

// tokenError describes a failed code redemption without the IdP's
// free-text description or body, which may echo the code.
func tokenError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		return fmt.Sprintf("token endpoint answered %d %s", status, re.ErrorCode)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Sprintf("token endpoint unreachable: %v", ue.Err)
	}
	return "token endpoint: unexpected answer"
}

// LocalPath reports whether s is a path on this server, safe to redirect
// to: it starts with one "/", names no other host, and has no backslash or
// control character (browsers read "/\host" and "//host" as other hosts).
func LocalPath(s string) bool {
	if len(s) > 1024 || !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\") {
		return false
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return false
	}
	// Control characters, raw or percent-encoded, have no place in a page
	// address and could split a header where the path is reflected.
	return !strings.ContainsFunc(s+u.Path, func(c rune) bool { return c < 0x20 || c == 0x7f })
}
