package main

import (
	"bytes"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/spf13/cobra"
)

// withServeFlags sets the helpdesk and web settings from a serve command
// line, parsed by serve's own flag definitions, as `fvescrow serve` does: the
// reveal chain and the web UI then read the same values.
func withServeFlags(t *testing.T, args ...string) func(*serveConfig) {
	return func(c *serveConfig) {
		parsed := new(serveConfig)
		cmd := &cobra.Command{}
		parsed.register(cmd)
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatalf("serve %v: %v", args, err)
		}
		c.helpdesk, c.web = parsed.helpdesk, parsed.web
	}
}

const (
	customMinReason = 40
	customTicket    = `^INC[0-9]{6}$`
)

// reasonOf is a reason of exactly n characters (n <= 68), as counted
// after trimming white space.
func reasonOf(n int) string {
	const base = "the user is locked out at the FileVault login window after an update"
	r := []byte(base[:n])
	if r[n-1] == ' ' {
		r[n-1] = '.'
	}
	return string(r)
}

// TestRevealFlagsCustomRules: --reveal-reason-min and
// --reveal-ticket-pattern, set away from their defaults, are what the REST
// API and the web UI enforce: a reason or ticket the defaults would accept
// is refused with 400 naming the rule and no key; a conforming one reveals.
func TestRevealFlagsCustomRules(t *testing.T) {
	s := startServer(t, modeEmbedded, withServeFlags(t, "--reveal-reason-min", "40", "--reveal-ticket-pattern", customTicket))
	m := escrowedMac(t, s)
	key := m.PRK()
	if key == "" {
		t.Fatal("the fake Mac has no key")
	}
	noKey := func(what, body string) {
		t.Helper()
		if strings.Contains(body, key) || strings.Contains(body, strings.ReplaceAll(key, "-", "")) {
			t.Fatalf("%s carries the key", what)
		}
	}
	revealed := func() int {
		t.Helper()
		n, err := s.srv.stores.meta.CountAudit(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed, Device: escrow.DeviceID(m.UDID)})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	good := reasonOf(customMinReason)
	if len(strings.TrimSpace(good)) != customMinReason || len(strings.TrimSpace(reasonOf(20))) != 20 || len(strings.TrimSpace(reasonOf(39))) != 39 {
		t.Fatal("reasonOf miscounts")
	}
	refusals := []struct {
		name, reason, ticket, want string
	}{
		// Each of these passes the default rules (10 characters, PROJ-123).
		{"20-character reason", reasonOf(20), "INC123456", "reason must be at least 40 characters"},
		{"39-character reason", reasonOf(39), "INC123456", "reason must be at least 40 characters"},
		{"ticket IT-1", good, "IT-1", "ticket ID must match " + customTicket},
		{"ticket INC1234567", good, "INC1234567", "ticket ID must match " + customTicket},
		{"ticket with a prefix", good, "x INC123456", "ticket ID must match " + customTicket},
	}

	t.Run("api", func(t *testing.T) {
		for _, tc := range refusals {
			body, _ := json.Marshal(wire.RevealRequest{Reason: tc.reason, Ticket: tc.ticket})
			status, out := s.api(http.MethodPost, "/api/v1/devices/"+m.UDID+"/reveal", body)
			noKey(tc.name, string(out))
			var e wire.Error
			if err := json.Unmarshal(out, &e); err != nil {
				t.Fatalf("%s: %d %s", tc.name, status, out)
			}
			if status != http.StatusBadRequest || e.Error.Code != "invalid" || e.Error.Message != tc.want {
				t.Errorf("%s: %d %q %q, want 400 invalid %q", tc.name, status, e.Error.Code, e.Error.Message, tc.want)
			}
		}
		if n := revealed(); n != 0 {
			t.Fatalf("refused requests disclosed the key %d times", n)
		}
		body, _ := json.Marshal(wire.RevealRequest{Reason: good, Ticket: "INC123456"})
		status, out := s.api(http.MethodPost, "/api/v1/devices/"+m.UDID+"/reveal", body)
		var rv wire.RevealResponse
		if err := json.Unmarshal(out, &rv); err != nil || status != http.StatusOK || rv.Key != key {
			t.Fatalf("conforming reveal: %d (%v)", status, err)
		}
		if n := revealed(); n != 1 {
			t.Fatalf("%d key.revealed records after one reveal", n)
		}
	})

	t.Run("ui", func(t *testing.T) {
		b := signIn(t, s, "hilda", "helpdesk")
		path := "/ui/devices/" + m.UDID + "/reveal"
		form := b.get(path)
		if form.status != http.StatusOK {
			t.Fatalf("reveal form: %d\n%s", form.status, form.body)
		}
		// The form states the configured rules, not the defaults.
		if !strings.Contains(form.body, `minlength="40"`) || !strings.Contains(form.body, "at least 40 characters") ||
			!strings.Contains(html.UnescapeString(form.body), "<code>"+customTicket+"</code>") {
			t.Errorf("the reveal form does not state the configured rules:\n%s", form.body)
		}
		// Nor does it suggest examples that the configured pattern refuses.
		for _, ex := range []string{"PROJ-123", "INC0012345"} {
			if strings.Contains(form.body, ex) {
				t.Errorf("the reveal form suggests the ticket %s, which %s refuses", ex, customTicket)
			}
		}
		csrf := field(t, csrfRE, form.body)
		for _, tc := range refusals {
			p := b.post(path, url.Values{"csrf_token": {csrf}, "reason": {tc.reason}, "ticket": {tc.ticket}})
			noKey(tc.name, p.body)
			if p.status != http.StatusBadRequest || !strings.Contains(html.UnescapeString(p.body), tc.want) {
				t.Errorf("%s: %d, want 400 with %q\n%s", tc.name, p.status, tc.want, p.body)
			}
		}
		if n := revealed(); n != 1 {
			t.Fatalf("refused form posts disclosed the key (%d key.revealed records)", n)
		}
		p := b.post(path, url.Values{"csrf_token": {csrf}, "reason": {good}, "ticket": {"INC654321"}})
		if p.status != http.StatusOK {
			t.Fatalf("conforming form post: %d\n%s", p.status, p.body)
		}
		for _, g := range strings.Split(key, "-") {
			if !strings.Contains(p.body, "data-group>"+g+"<") {
				t.Fatalf("the revealed page lacks key group %s", g)
			}
		}
		recs, err := s.srv.stores.meta.AuditRecords(ctx, escrow.AuditQuery{Action: escrow.ActionKeyRevealed, Device: escrow.DeviceID(m.UDID)})
		if err != nil || len(recs) != 2 || recs[1].Ticket != "INC654321" || recs[1].Actor.ID != "local:hilda" {
			t.Fatalf("audit after the form reveal: %v %+v", err, recs)
		}
	})
}

// TestRevealFlagsRefusedAtStart: a ticket pattern that is not a regular
// expression, or a reason minimum below 1, stops serve with exit 2 and an
// error naming the flag, before anything is created — from the command line
// or the FVESCROW_* variable.
func TestRevealFlagsRefusedAtStart(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unparsable pattern", []string{"--reveal-ticket-pattern", "INC-([0-9]+"}, nil,
			[]string{"--reveal-ticket-pattern", "missing closing )"}},
		{"unparsable pattern from the environment", nil, map[string]string{"FVESCROW_REVEAL_TICKET_PATTERN": "INC-[0-9"},
			[]string{"--reveal-ticket-pattern", "missing closing ]"}},
		{"reason minimum 0", []string{"--reveal-reason-min", "0"}, nil, []string{"--reveal-reason-min must be at least 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			data := filepath.Join(t.TempDir(), "data")
			var out, errb bytes.Buffer
			done := make(chan int, 1)
			go func() {
				done <- run(append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, tc.args...), strings.NewReader(""), &out, &errb)
			}()
			var code int
			select {
			case code = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatalf("serve started with %v %v", tc.args, tc.env)
			}
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %q", code, exitUsage, errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q lacks %q", errb.String(), w)
				}
			}
			if strings.Contains(out.String(), "listening on") {
				t.Errorf("serve listened: %s", out.String())
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("serve created %s before refusing its configuration", data)
			}
		})
	}
	// The same refusal when the server is built from a configuration.
	c := defaultServeConfig()
	withServeFlags(t, "--reveal-ticket-pattern", "(")(&c)
	c.stores.dataDir = filepath.Join(t.TempDir(), "data")
	if _, _, err := buildServer(ctx, &c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--reveal-ticket-pattern") {
		t.Errorf("buildServer with an unparsable ticket pattern: %v", err)
	}
}

// webClient is a browser for the web UI: cookies kept, redirects not
// followed.
type webClient struct {
	t *testing.T
	s *testServer
	c *http.Client
}

type webPage struct {
	status   int
	location string
	body     string
}

func (b *webClient) do(req *http.Request) webPage {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return webPage{status: resp.StatusCode, location: resp.Header.Get("Location"), body: string(body)}
}

func (b *webClient) get(path string) webPage {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.s.URL()+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *webClient) post(path string, form url.Values) webPage {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.s.URL()+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var (
	csrfRE      = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
	loginCSRFRE = regexp.MustCompile(`name="login_csrf" value="([^"]+)"`)
)

func field(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in page:\n%s", re, body)
	}
	return m[1]
}

// signIn creates a local user through the admin API and signs a browser in
// as them through the web UI's sign-in form (changing the one-time
// password).
func signIn(t *testing.T, s *testServer, name, role string) *webClient {
	t.Helper()
	body, _ := json.Marshal(wire.UserRequest{Username: name, DisplayName: name, Email: name + "@example.com", Roles: []string{role}})
	status, out := s.api(http.MethodPost, "/api/v1/users", body)
	var nu wire.UserCreated
	if err := json.Unmarshal(out, &nu); err != nil || status != http.StatusCreated || nu.OneTimePassword == "" {
		t.Fatalf("create user %s: %d %v", name, status, err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &webClient{t: t, s: s, c: &http.Client{Transport: s.Client().Transport, Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	p := b.get("/ui/login")
	const password = "correct horse battery staple"
	form := url.Values{"login_csrf": {field(t, loginCSRFRE, p.body)}, "username": {name}, "password": {strings.TrimSpace(nu.OneTimePassword)}}
	p = b.post("/ui/login", form)
	if p.status == http.StatusOK && strings.Contains(p.body, `name="new_password"`) {
		form.Set("login_csrf", field(t, loginCSRFRE, p.body))
		form.Set("change", "1")
		form.Set("new_password", password)
		form.Set("new_password2", password)
		p = b.post("/ui/login", form)
	}
	if p.status != http.StatusSeeOther || p.location != "/ui/home" {
		t.Fatalf("sign-in of %s: %d %q\n%s", name, p.status, p.location, p.body)
	}
	return b
}
