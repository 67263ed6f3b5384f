package client_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/api/client"
	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
)

func TestParseServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string // "" for an error
	}{
		{"https://escrow.example.com", "https://escrow.example.com"},
		{"https://escrow.example.com/fvescrow/", "https://escrow.example.com/fvescrow"},
		{"http://127.0.0.1:9000", "http://127.0.0.1:9000"},
		{"http://localhost:9000/", "http://localhost:9000"},
		{"http://[::1]:9000", "http://[::1]:9000"},
		{"http://escrow.example.com", ""}, // a token would cross the network in clear
		{"http://10.0.0.5:9000", ""},
		{"https://user:pw@escrow.example.com", ""},
		{"https://escrow.example.com/?token=x", ""},
		{"escrow.example.com", ""},
		{"ftp://escrow.example.com", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			u, err := client.ParseServer(tc.in)
			switch {
			case tc.want == "" && err == nil:
				t.Fatalf("accepted, got %s", u)
			case tc.want != "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && u.String() != tc.want:
				t.Fatalf("got %s, want %s", u, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "pw") {
				t.Fatalf("the error repeats the credentials: %v", err)
			}
		})
	}
}

// TestErrorsFromTheServer: each refusal of the real server decodes to its
// status and stable code, with the request ID.
func TestErrorsFromTheServer(t *testing.T) {
	ctx := context.Background()
	c, err := client.New(srv.URL, client.WithHTTPClient(srv.Client()), client.WithToken(helpdesk.Token))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"not found", func() error { _, err := c.Device(ctx, "C02NOSUCH999"); return err }, 404, client.CodeNotFound},
		{"invalid", func() error {
			_, err := c.Reveal(ctx, mac.Serial, wire.RevealRequest{Reason: "short", Ticket: "IT-1"})
			return err
		}, 400, client.CodeInvalid},
		{"forbidden", func() error { _, err := c.Users(ctx); return err }, 403, client.CodeForbidden},
		{"bad token", func() error { _, err := c.UseToken("fve_not-a-token").Me(ctx); return err }, 401, client.CodeUnauthenticated},
		{"wrong password", func() error {
			_, err := c.Login(ctx, wire.LoginRequest{Username: "ada", Password: "not the password"})
			return err
		}, 401, client.CodeUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want *client.Error", err)
			}
			if e.Status != tc.status || e.Code != tc.code || e.RequestID == "" || e.Message == "" {
				t.Fatalf("got %+v, want %d %s with a message and request ID", e, tc.status, tc.code)
			}
		})
	}
}

// TestPasswordChange: a one-time password is refused with 403 until a new
// password is given, and the client says so.
func TestPasswordChange(t *testing.T) {
	ctx := context.Background()
	nu, err := srv.Local.CreateUser(ctx, escrow.System, "newbie", "", "", []escrow.Role{escrow.RoleViewer}, false)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	_, err = c.Login(ctx, wire.LoginRequest{Username: "newbie", Password: nu.OneTimePassword})
	if !client.PasswordChangeRequired(err) {
		t.Fatalf("first login with a one-time password: %v", err)
	}
	res, err := c.Login(ctx, wire.LoginRequest{Username: "newbie", Password: nu.OneTimePassword, NewPassword: "a new password, long enough"})
	if err != nil || res.Token == "" || res.Me.ID != "local:newbie" {
		t.Fatalf("login with a new password: %+v %v", res.Me, err)
	}
	if _, err := c.Login(ctx, wire.LoginRequest{Username: "newbie", Password: nu.OneTimePassword}); !client.IsCode(err, client.CodeUnauthenticated) {
		t.Fatalf("the one-time password still works: %v", err)
	}
}

// TestForeignErrorPage: an answer that is not the error format (a reverse
// proxy whose upstream is down) is reported by status only.
func TestForeignErrorPage(t *testing.T) {
	t.Parallel()
	dead := httptest.NewServer(http.NotFoundHandler())
	upstream, _ := url.Parse(dead.URL)
	dead.Close()
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	proxy := httptest.NewServer(rp)
	defer proxy.Close()
	c, _ := client.New(proxy.URL, client.WithToken("fve_secret-token-value"))
	_, err := c.Me(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || e.Code != "http_502" || e.Message != "bad gateway" {
		t.Fatalf("got %#v", err)
	}
	if strings.Contains(err.Error(), "fve_secret") {
		t.Fatalf("the error carries the token: %v", err)
	}
}

// TestTokenNeverInURL: through a reverse proxy in front of the real server,
// the token travels in the Authorization header only, and query values are
// escaped.
func TestTokenNeverInURL(t *testing.T) {
	upstream, _ := url.Parse(srv.URL)
	var mu sync.Mutex
	var seen []*http.Request
	rp := httputil.NewSingleHostReverseProxy(upstream)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Clone(context.Background()))
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	c, _ := client.New(proxy.URL, client.WithToken(helpdesk.Token))
	list, err := c.SearchDevices(context.Background(), client.DeviceQuery{Text: "C02EXAMPLE01 ", All: true, Limit: 5})
	if err != nil || len(list.Devices) != 1 {
		t.Fatalf("search through the proxy: %+v %v", list, err)
	}
	if _, err := c.Device(context.Background(), "C02 X/Y"); !client.IsCode(err, client.CodeNotFound) {
		t.Fatalf("an odd reference: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("%d requests", len(seen))
	}
	for _, r := range seen {
		if r.Header.Get("Authorization") != "Bearer "+helpdesk.Token {
			t.Error("no bearer token sent")
		}
		if strings.Contains(r.URL.String(), helpdesk.Token) || strings.Contains(r.URL.String(), "fve_") {
			t.Error("the token is in the URL")
		}
	}
	if q := seen[0].URL.Query(); q.Get("q") != "C02EXAMPLE01 " || q.Get("limit") != "5" || q.Get("all") != "true" {
		t.Errorf("query %v", q)
	}
	if seen[1].URL.EscapedPath() != "/api/v1/devices/C02%20X%2FY" {
		t.Errorf("path %s", seen[1].URL.EscapedPath())
	}
}
