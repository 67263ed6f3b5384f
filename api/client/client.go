// Package client is a small typed Go client for fvescrow's REST API
// (/api/v1), with the JSON types of api/wire. The fvescrow CLI is built on
// it; docs/openapi.yaml describes the same API.
//
// A Client holds one API token (a personal token from Login, or an
// automation token) and sends it as a bearer token. The token is never part
// of a URL, an error or a String method. Every failure the server answers
// comes back as an *Error with the HTTP status and the stable error code of
// the one error format.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
)

// MaxResponse bounds the JSON answers the client reads.
const MaxResponse = 16 << 20

// Client talks to one fvescrow server. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	hc    *http.Client
	token string
	ua    string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (TLS roots, proxies, timeouts).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithToken sets the API token sent with every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.ua = ua } }

// New returns a client for the server at baseURL (https, or http to a
// loopback address only: a bearer token never crosses a network in clear).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := ParseServer(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{base: u, hc: &http.Client{Timeout: time.Minute}, ua: "fvescrow-client"}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ParseServer checks and normalizes a server URL: an absolute https URL
// (or http to localhost, 127.0.0.0/8 or ::1), without credentials, query
// or fragment.
func ParseServer(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Host == "" {
		return nil, errors.New("server URL: want https://HOST[:PORT]")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("server URL: no user, query or fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			return nil, errors.New("server URL: http is allowed only to a loopback address; use https")
		}
	default:
		return nil, errors.New("server URL: want https://HOST[:PORT]")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is the base URL the client talks to.
func (c *Client) Server() string { return c.base.String() }

// UseToken returns a copy of c that sends token.
func (c *Client) UseToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// Error is an error answer of the server, in its one error format.
type Error struct {
	Status    int    // HTTP status
	Code      string // stable code, one of the Code constants
	Message   string // safe to show to a person
	RequestID string // to quote to an admin
}

// Stable error codes (docs/openapi.yaml, Error).
const (
	CodeUnauthenticated  = "unauthenticated"
	CodeForbidden        = "forbidden"
	CodeApprovalRequired = "approval_required"
	CodeNotFound         = "not_found"
	CodeInvalid          = "invalid"
	CodeConflict         = "conflict"
	CodeRateLimited      = "rate_limited"
	CodeTooLarge         = "too_large"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
)

func (e *Error) Error() string {
	s := fmt.Sprintf("%s (HTTP %d %s", e.Message, e.Status, e.Code)
	if e.RequestID != "" {
		s += ", request " + e.RequestID
	}
	return s + ")"
}

// IsCode reports whether err is an *Error with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// decodeError reads an error answer. A body that is not the error format (a
// proxy's page) is not echoed: only its status is reported.
func decodeError(resp *http.Response) error {
	var body wire.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(b, &body); err != nil || body.Error.Code == "" {
		return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: strings.ToLower(http.StatusText(resp.StatusCode)),
			RequestID: resp.Header.Get("X-Request-ID")}
	}
	return &Error{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message, RequestID: body.Error.RequestID}
}

// path joins escaped segments under /api/v1.
func path(segments ...string) string {
	var b strings.Builder
	b.WriteString("/api/v1")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// send makes a request and returns the response of a 2xx answer; other
// answers become *Error.
func (c *Client) send(ctx context.Context, method, p string, q url.Values, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	target := c.base.String() + p // p is escaped already
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// do sends a request and decodes a JSON answer into out (unless nil).
func (c *Client) do(ctx context.Context, method, p string, q url.Values, in, out any) error {
	resp, err := c.send(ctx, method, p, q, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponse))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxResponse)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, p, err)
	}
	return nil
}

// Login signs a local user in and returns a personal API token. With a
// one-time password the server answers 403 until NewPassword is given
// (see PasswordChangeRequired).
func (c *Client) Login(ctx context.Context, r wire.LoginRequest) (wire.LoginResponse, error) {
	var out wire.LoginResponse
	err := c.do(ctx, http.MethodPost, path("login"), nil, r, &out)
	return out, err
}

// PasswordChangeRequired reports whether a Login failed because the
// account's one-time password must be replaced first (the only refusal
// /login answers with 403).
func PasswordChangeRequired(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusForbidden
}

// Me returns the signed-in principal and its permissions.
func (c *Client) Me(ctx context.Context) (wire.Me, error) {
	var out wire.Me
	err := c.do(ctx, http.MethodGet, path("me"), nil, nil, &out)
	return out, err
}

// DeviceQuery searches devices.
type DeviceQuery struct {
	Text  string // serial, UDID, hostname, owner or e-mail
	All   bool   // include retired devices
	Limit int    // page size (server default 100, at most 500)
	After string // DeviceList.Next of the previous page
}

// SearchDevices returns one page of devices matching q.
func (c *Client) SearchDevices(ctx context.Context, q DeviceQuery) (wire.DeviceList, error) {
	v := url.Values{}
	if q.Text != "" {
		v.Set("q", q.Text)
	}
	if q.All {
		v.Set("all", "true")
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.After != "" {
		v.Set("after", q.After)
	}
	var out wire.DeviceList
	err := c.do(ctx, http.MethodGet, path("devices"), v, nil, &out)
	return out, err
}

// Device returns a device page by device ID, UDID or serial number.
func (c *Client) Device(ctx context.Context, ref string) (wire.DeviceDetail, error) {
	var out wire.DeviceDetail
	err := c.do(ctx, http.MethodGet, path("devices", ref), nil, nil, &out)
	return out, err
}

// Reveal asks for a device's current recovery key. The answer carries the
// key: show it to the person who asked, and nowhere else.
func (c *Client) Reveal(ctx context.Context, ref string, r wire.RevealRequest) (wire.RevealResponse, error) {
	var out wire.RevealResponse
	err := c.do(ctx, http.MethodPost, path("devices", ref, "reveal"), nil, r, &out)
	return out, err
}

// RequestApproval asks a second person to approve a reveal.
func (c *Client) RequestApproval(ctx context.Context, ref string, r wire.ApprovalRequest) (wire.Approval, error) {
	var out wire.Approval
	err := c.do(ctx, http.MethodPost, path("devices", ref, "approvals"), nil, r, &out)
	return out, err
}

// Approvals lists the approvals the principal may see, optionally in one
// stored state (pending, approved, denied, used).
func (c *Client) Approvals(ctx context.Context, state string) ([]wire.Approval, error) {
	v := url.Values{}
	if state != "" {
		v.Set("state", state)
	}
	var out struct {
		Approvals []wire.Approval `json:"approvals"`
	}
	err := c.do(ctx, http.MethodGet, path("approvals"), v, nil, &out)
	return out.Approvals, err
}

// Approval returns one approval.
func (c *Client) Approval(ctx context.Context, id string) (wire.Approval, error) {
	var out wire.Approval
	err := c.do(ctx, http.MethodGet, path("approvals", id), nil, nil, &out)
	return out, err
}

// Approve approves someone else's request.
func (c *Client) Approve(ctx context.Context, id, note string) (wire.Approval, error) {
	var out wire.Approval
	err := c.do(ctx, http.MethodPost, path("approvals", id, "approve"), nil, wire.Decision{Note: note}, &out)
	return out, err
}

// Deny denies someone else's request.
func (c *Client) Deny(ctx context.Context, id, note string) (wire.Approval, error) {
	var out wire.Approval
	err := c.do(ctx, http.MethodPost, path("approvals", id, "deny"), nil, wire.Decision{Note: note}, &out)
	return out, err
}

// AuditQuery filters audit records.
type AuditQuery struct {
	Device string
	Actor  string // actor ID, e.g. local:ada
	Action string // e.g. key.revealed
	Since  time.Time
	Until  time.Time
	After  int64 // AuditList.Next of the previous page
	Limit  int   // page size (server default 200, at most 1000)
}

func (q AuditQuery) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"device": q.Device, "actor": q.Actor, "action": q.Action} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339))
	}
	if q.After > 0 {
		v.Set("after", strconv.FormatInt(q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Audit returns one page of audit records, oldest first.
func (c *Client) Audit(ctx context.Context, q AuditQuery) (wire.AuditList, error) {
	var out wire.AuditList
	err := c.do(ctx, http.MethodGet, path("audit"), q.values(), nil, &out)
	return out, err
}

// ExportAudit streams every record matching q (Limit and After aside) to w
// as "jsonl" or "csv", and returns the bytes written.
func (c *Client) ExportAudit(ctx context.Context, q AuditQuery, format string, w io.Writer) (int64, error) {
	v := q.values()
	v.Del("limit")
	if format != "" {
		v.Set("format", format)
	}
	resp, err := c.send(ctx, http.MethodGet, path("audit", "export"), v, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}

// Notifications lists queued and sent notifications, optionally in one
// state (pending, sent, failed).
func (c *Client) Notifications(ctx context.Context, state string) ([]wire.Notification, error) {
	v := url.Values{}
	if state != "" {
		v.Set("state", state)
	}
	var out struct {
		Notifications []wire.Notification `json:"notifications"`
	}
	err := c.do(ctx, http.MethodGet, path("notifications"), v, nil, &out)
	return out.Notifications, err
}

// Tokens lists the principal's API tokens (everyone's with all, for a
// principal allowed to manage every token).
func (c *Client) Tokens(ctx context.Context, all bool) ([]wire.Token, error) {
	v := url.Values{}
	if all {
		v.Set("all", "true")
	}
	var out struct {
		Tokens []wire.Token `json:"tokens"`
	}
	err := c.do(ctx, http.MethodGet, path("tokens"), v, nil, &out)
	return out.Tokens, err
}

// CreateToken creates an API token. The answer carries the token itself,
// shown only this once.
func (c *Client) CreateToken(ctx context.Context, r wire.TokenRequest) (wire.TokenCreated, error) {
	var out wire.TokenCreated
	err := c.do(ctx, http.MethodPost, path("tokens"), nil, r, &out)
	return out, err
}

// RevokeToken revokes an API token by ID.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, path("tokens", id), nil, nil, nil)
}

// Users lists every user.
func (c *Client) Users(ctx context.Context) ([]wire.User, error) {
	var out struct {
		Users []wire.User `json:"users"`
	}
	err := c.do(ctx, http.MethodGet, path("users"), nil, nil, &out)
	return out.Users, err
}

// CreateUser creates a local account. The answer carries its one-time
// password (and TOTP provisioning URI), shown only this once.
func (c *Client) CreateUser(ctx context.Context, r wire.UserRequest) (wire.UserCreated, error) {
	var out wire.UserCreated
	err := c.do(ctx, http.MethodPost, path("users"), nil, r, &out)
	return out, err
}

// UpdateUser changes a user's roles or disables or enables them.
func (c *Client) UpdateUser(ctx context.Context, id string, u wire.UserUpdate) (wire.User, error) {
	var out wire.User
	err := c.do(ctx, http.MethodPatch, path("users", id), nil, u, &out)
	return out, err
}

// LiftBlock lifts every active reveal block of an operator (a user ID).
func (c *Client) LiftBlock(ctx context.Context, actor string) error {
	return c.do(ctx, http.MethodDelete, path("blocks", actor), nil, nil, nil)
}
