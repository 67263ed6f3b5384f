package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
)

// cliEnv runs the CLI in process as different people, each with their own
// configuration folder (so their own saved sign-in), and keeps everything
// the CLI wrote to standard error.
type cliEnv struct {
	t      *testing.T
	dir    string
	stderr bytes.Buffer
}

// run runs fvescrow as persona with stdin and returns stdout and the exit
// code. Debug logging is on for every command.
func (c *cliEnv) run(persona, stdin string, args ...string) (string, int) {
	c.t.Helper()
	c.t.Setenv("XDG_CONFIG_HOME", filepath.Join(c.dir, persona))
	var out, errb bytes.Buffer
	code := run(append([]string{"--log-level", "debug"}, args...), strings.NewReader(stdin), &out, &errb)
	c.stderr.Write(errb.Bytes())
	return out.String(), code
}

// must runs a command that must succeed; a failure shows its stderr (which
// the scan checks holds no secret).
func (c *cliEnv) must(persona, stdin string, args ...string) string {
	c.t.Helper()
	before := c.stderr.Len()
	out, code := c.run(persona, stdin, args...)
	if code != 0 {
		c.t.Fatalf("fvescrow %s: exit %d\n%s", strings.Join(args, " "), code, c.stderr.String()[before:])
	}
	return out
}

// savedToken reads a persona's saved sign-in.
func (c *cliEnv) savedToken(persona string) credentials {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, persona, "fvescrow", "credentials.json"))
	if err != nil {
		c.t.Fatal(err)
	}
	var cr credentials
	if err := json.Unmarshal(b, &cr); err != nil {
		c.t.Fatal(err)
	}
	return cr
}

var otpLine = regexp.MustCompile(`(?m)^one-time password \(shown only now, to be changed at first sign-in\): (\S+)$`)

// secretSet names each secret of a flow and finds them in text without
// ever printing them.
type secretSet map[string]string

func (s secretSet) add(name, v string) {
	if len(v) < 8 {
		panic("a secret too short to scan for: " + name)
	}
	s[name] = v
}

// mask replaces every secret in line with its name.
func (s secretSet) mask(line string) string {
	for name, v := range s {
		line = strings.ReplaceAll(line, v, "<"+name+">")
	}
	return line
}

// check reports each secret found in text, showing its line with the
// secret masked.
func (s secretSet) check(t *testing.T, where, text string) {
	t.Helper()
	for name, v := range s {
		if i := strings.Index(text, v); i >= 0 {
			start := strings.LastIndexByte(text[:i], '\n') + 1
			end := strings.IndexByte(text[i:], '\n')
			if end < 0 {
				end = len(text) - i
			}
			t.Errorf("%s holds %s: %s", where, name, s.mask(text[start:i+end]))
		}
	}
}

// TestLogScan runs the whole flow with debug logging, the server's and the
// CLI's, and checks that no secret reaches either: a Mac enrolls through
// SCEP and escrows its key and a bootstrap token; an admin creates
// accounts; people sign in (one-time passwords replaced, one wrong
// password), create an automation token, ask for and grant an approval,
// reveal the key through the CLI, hit the rate limit, are unblocked; a
// browser session reveals too; everyone signs out.
func TestLogScan(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { logScan(t, mode) })
	}
}

func logScan(t *testing.T, mode string) {
	s := startServer(t, mode, func(c *serveConfig) {
		c.helpdesk.approvalGroups = []string{"role:helpdesk"}
		c.helpdesk.limitOperator, c.helpdesk.limitDevice = 3, 0
		c.helpdesk.securityEmails = []string{"security@example.com"}
	})
	secrets := secretSet{}
	secrets.add("the API token file", s.apiToken)

	// A Mac enrolls through SCEP, escrows its key and a bootstrap token.
	challenge, err := mdm.LoadOrCreateChallenge(ctx, s.srv.stores.secrets)
	if err != nil {
		t.Fatal(err)
	}
	secrets.add("the SCEP challenge", challenge)
	m := s.enroll(fakemac.Options{Users: []fakemac.User{{UserName: "ann", UID: 501, GUID: "A-GUID", HasSecureToken: true, IsLoggedIn: true}}})
	connect(t, s, m)
	if err := m.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)
	connect(t, s, m)
	if st := device(t, s, m).Attrs[escrow.AttrEscrowStatus]; st != string(escrow.EscrowEscrowed) {
		t.Fatalf("escrow status %q", st)
	}
	prk := m.PRK()
	secrets.add("the PRK", prk)
	secrets.add("the PRK without dashes", strings.ReplaceAll(prk, "-", ""))
	boot := make([]byte, 32)
	if _, err := rand.Read(boot); err != nil {
		t.Fatal(err)
	}
	if err := m.SetBootstrapToken(ctx, boot); err != nil {
		t.Fatal(err)
	}
	if got, err := m.GetBootstrapToken(ctx); err != nil || !bytes.Equal(got, boot) {
		t.Fatalf("bootstrap token not served back: %v", err)
	}
	secrets.add("the bootstrap token (base64)", base64.StdEncoding.EncodeToString(boot))
	secrets.add("the bootstrap token (raw base64)", base64.RawStdEncoding.EncodeToString(boot))
	secrets.add("the bootstrap token (base64url)", base64.RawURLEncoding.EncodeToString(boot))
	secrets.add("the bootstrap token (hex)", hex.EncodeToString(boot))
	secrets.add("the bootstrap token (HEX)", strings.ToUpper(hex.EncodeToString(boot)))

	// The CLI trusts the test server's certificate.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})))
	t.Setenv("FVESCROW_SERVER", s.URL())
	t.Setenv("FVESCROW_CA_CERT", ca)
	cli := &cliEnv{t: t, dir: t.TempDir()}

	// The admin token from the server's file creates the accounts.
	passwords := map[string]string{}
	for _, u := range []struct{ name, role string }{{"ann", "helpdesk"}, {"al", "approver"}, {"boss", "admin"}, {"aude", "auditor"}} {
		out := cli.must("automation", "", "user", "add", u.name, "--role", u.role, "--email", u.name+"@example.com", "--token-file", s.cfg.apiTokenFile)
		mt := otpLine.FindStringSubmatch(out)
		if mt == nil {
			t.Fatalf("user add %s printed no one-time password", u.name)
		}
		secrets.add("the one-time password of "+u.name, mt[1])
		passwords[u.name] = "correct horse " + u.name + " " + randHex(6)
		secrets.add("the password of "+u.name, passwords[u.name])
		// First sign-in replaces the one-time password.
		cli.must(u.name, mt[1]+"\n\n"+passwords[u.name]+"\n", "login", "--username", u.name, "--password-stdin")
		secrets.add("the personal token of "+u.name, cli.savedToken(u.name).Token)
	}
	wrong := "wrong password " + randHex(6)
	secrets.add("a wrong password", wrong)
	if _, code := cli.run("intruder", wrong+"\n", "login", "--username", "ann", "--password-stdin"); code != exitUsage {
		t.Fatalf("a wrong password: exit %d", code)
	}

	// An automation token, scoped to the help desk role, used from the env.
	auto := strings.TrimSpace(cli.must("ann", "", "token", "create", "--name", "inventory sync", "--role", "helpdesk", "--expires", "1d"))
	if !strings.HasPrefix(auto, "fve_") || strings.Contains(auto, "\n") {
		t.Fatal("token create printed more than the token")
	}
	secrets.add("the automation token", auto)
	t.Setenv(envToken, auto)
	if out := cli.must("bot", "", "device", "search", m.Serial, "--json"); !strings.Contains(out, m.UDID) {
		t.Fatal("device search with the automation token found nothing")
	}
	t.Setenv(envToken, "")

	// The saved sign-in remembers the CA it was made with.
	t.Setenv("FVESCROW_CA_CERT", "")
	if out := cli.must("al", "", "device", "show", m.Serial); !strings.Contains(out, "escrowed") {
		t.Fatalf("device show with the saved CA:\n%s", out)
	}
	t.Setenv("FVESCROW_CA_CERT", ca)

	// The help desk needs an approval; the approver grants it; the key is
	// revealed through the CLI, alone on stdout.
	reveal := []string{"key", "reveal", m.Serial, "--reason", "user forgot the FileVault password", "--ticket", "IT-5001"}
	if out, code := cli.run("ann", "", reveal...); code != exitNo || out != "" {
		t.Fatalf("reveal without approval: exit %d, stdout %d bytes", code, len(out))
	}
	id := strings.TrimSpace(cli.must("ann", "", "approval", "request", m.Serial, "--reason", "user forgot the FileVault password", "--ticket", "IT-5001"))
	if !strings.HasPrefix(id, "apr_") {
		t.Fatalf("approval request printed %q", id)
	}
	if out := cli.must("al", "", "approval", "list", "--state", "pending"); !strings.Contains(out, id) {
		t.Fatalf("the approver does not see the request:\n%s", out)
	}
	if _, code := cli.run("ann", "", "approval", "approve", id); code != exitNo {
		t.Fatalf("self-approval: exit %d", code)
	}
	cli.must("al", "", "approval", "approve", id, "--note", "called the user back")
	before := cli.stderr.Len()
	if out := cli.must("ann", "", append(reveal, "--approval", id)...); out != prk+"\n" {
		t.Fatal("key reveal did not print exactly the key")
	}
	if warn := cli.stderr.String()[before:]; !strings.Contains(warn, "is now marked disclosed") || !strings.Contains(warn, "will be rotated") {
		t.Fatalf("no rotation warning on stderr: %q", warn)
	}
	if out, code := cli.run("ann", "", append(reveal, "--approval", id)...); code != exitNo || out != "" {
		t.Fatalf("approval reused: exit %d", code)
	}

	// The admin needs no approval; the fourth reveal crosses the limit.
	for i := 0; i < 3; i++ {
		if out := cli.must("boss", "", "key", "reveal", m.UDID, "--reason", "verifying the escrowed key", "--ticket", "IT-5002"); out != prk+"\n" {
			t.Fatal("admin reveal did not print exactly the key")
		}
	}
	before = cli.stderr.Len()
	if out, code := cli.run("boss", "", "key", "reveal", m.UDID, "--reason", "verifying the escrowed key", "--ticket", "IT-5002"); code != exitNo || out != "" {
		t.Fatalf("over the limit: exit %d", code)
	}
	if msg := cli.stderr.String()[before:]; !strings.Contains(msg, "rate_limited") || !strings.Contains(msg, "fvescrow user unblock") {
		t.Fatalf("over the limit: %q", msg)
	}
	status, body := s.api(http.MethodGet, "/api/v1/notifications", nil)
	if status != http.StatusOK || !strings.Contains(string(body), "operator blocked") {
		t.Fatalf("no alert queued: %d", status)
	}
	cli.must("automation", "", "user", "unblock", "boss", "--token-file", s.cfg.apiTokenFile)
	if _, err := s.srv.stores.meta.ActiveBlock(ctx, "local:boss", time.Now()); err == nil {
		t.Fatal("still blocked")
	}

	// A browser session reveals too (cookie and CSRF token).
	sid, csrf := auth.NewSecret(""), auth.NewSecret("")
	secrets.add("the session ID", sid)
	secrets.add("the CSRF token", csrf)
	now := time.Now()
	if err := s.srv.stores.meta.CreateSession(ctx, escrow.Session{IDHash: auth.HashSecret(sid), UserID: "local:aude", Roles: []escrow.Role{escrow.RoleAuditor},
		Source: "local", CSRF: csrf, CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/api/v1/audit?action=key.revealed", nil)
	req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: sid})
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("session request: %d", resp.StatusCode)
	}
	// The auditor reads and downloads the audit log through the CLI.
	if out := cli.must("aude", "", "audit", "list", "--action", "key.revealed"); strings.Count(out, "key.revealed") != 4 {
		t.Fatalf("audit list:\n%s", out)
	}
	export := cli.must("aude", "", "audit", "download")
	secrets.check(t, "the audit export", export)

	// Everyone signs out; the tokens die on the server.
	for _, p := range []string{"ann", "al", "boss", "aude"} {
		old := cli.savedToken(p)
		cli.must(p, "", "logout")
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/api/v1/me", nil)
		req.Header.Set("Authorization", "Bearer "+old.Token)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s's token after logout: %d", p, resp.StatusCode)
		}
	}

	// The scan. The logs must be the real thing: debug level, the reveals.
	logs := s.logs.String()
	for _, want := range []string{"level=DEBUG", "recovery key revealed", "component=http", "path=/api/v1/devices/" + m.Serial + "/reveal"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("the server log lacks %q: is it captured?", want)
		}
	}
	if len(secrets) < 20 {
		t.Fatalf("only %d secrets scanned for", len(secrets))
	}
	secrets.check(t, "the server log", logs)
	secrets.check(t, "the CLI's standard error", cli.stderr.String())
	t.Logf("%s: scanned %d KiB of server log and %d bytes of CLI standard error for %d secrets", mode, len(logs)/1024, cli.stderr.Len(), len(secrets))
}
