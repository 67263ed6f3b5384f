package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/micromdm/nanomdm/cryptoutil"
	"github.com/micromdm/plist"
)

// certProxy stands in for a proxy that terminates mutual TLS in front of
// `fvescrow serve --mdm-cert-header`: it passes the client's certificate
// to fvescrow in a header, URL-escaped PEM as nginx's
// $ssl_client_escaped_cert, and strips any copy of that header a client
// sent. The fake Mac cannot present its identity in a TLS handshake (its
// key stays inside fakemac), so the proxy takes the certificate from the
// Mac's Mdm-Signature after verifying it over the body, which proves
// possession of the key as a handshake would, and then removes the
// signature: fvescrow sees the header alone.
type certProxy struct {
	header string
	ts     *httptest.Server
	mu     sync.Mutex
	certs  []*x509.Certificate // passed on, in order
}

func newCertProxy(t *testing.T, s *testServer, header string) *certProxy {
	t.Helper()
	target, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	p := &certProxy{header: header}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: s.Client().Transport,
	}
	p.ts = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(header) // a client never sets it
		if sig := r.Header.Get("Mdm-Signature"); sig != "" {
			r.Header.Del("Mdm-Signature")
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, "reading body", http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			// No verified client certificate: the request goes on without
			// the header, as from a proxy with optional client auth.
			if cert, err := cryptoutil.VerifyMdmSignature(sig, body); err == nil {
				r.Header.Set(header, escapedPEM(cert))
				p.mu.Lock()
				p.certs = append(p.certs, cert)
				p.mu.Unlock()
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.ts.Close)
	return p
}

func (p *certProxy) passed() []*x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*x509.Certificate(nil), p.certs...)
}

// escapedPEM is nginx's $ssl_client_escaped_cert: the PEM certificate,
// URL-escaped (spaces as %20).
func escapedPEM(c *x509.Certificate) string {
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	return strings.ReplaceAll(url.QueryEscape(string(p)), "+", "%20")
}

// TestMDMCertHeader: with --mdm-cert-header a Mac behind a mutual-TLS proxy
// is identified by the certificate in the header alone. It enrolls (SCEP,
// Authenticate, TokenUpdate) and has its key escrowed through the proxy.
// A certificate from another CA in the header is refused, and so is a
// request without the header: the flag replaces Mdm-Signature (README,
// docs/operations.md), so even the enrolled Mac's own valid signature no
// longer identifies it.
func TestMDMCertHeader(t *testing.T) {
	const header = "X-Ssl-Client-Escaped-Cert"
	s := startServer(t, modeEmbedded, func(c *serveConfig) { c.mdmCertHeader = header })
	p := newCertProxy(t, s, header)
	profile := []byte(s.cli(append([]string{"profile", "enroll", "--url", p.ts.URL}, s.storeArgs()...)...))

	m, err := fakemac.Enroll(ctx, profile, fakemac.Options{Client: p.ts.Client()})
	if err != nil {
		t.Fatalf("enroll through the proxy: %v\n--- server log\n%s", err, s.logs.String())
	}
	// Authenticate and TokenUpdate were stored: the device record has the
	// serial from Authenticate, and TokenUpdate started the enrollment.
	if d := device(t, s, m); d.Serial != m.Serial || d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowProfilePending) {
		t.Fatalf("after enrollment through the proxy: %+v", d)
	}
	eventually(t, "a push after enrollment", func() bool { return s.apns.count() > 0 })
	if got := connect(t, s, m); strings.Join(got, ",") != strings.Join([]string{fde.RequestInstallProfile, fde.RequestSecurityInfo, fde.RequestUserList}, ",") {
		t.Fatalf("enrollment commands %v", got)
	}
	if err := m.EnableFileVault(); err != nil {
		t.Fatal(err)
	}
	s.enqueue("securityinfo", m.UDID)
	if got := connect(t, s, m); strings.Join(got, ",") != fde.RequestSecurityInfo {
		t.Fatalf("answered %v", got)
	}
	d := device(t, s, m)
	if d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) || d.Attrs[escrow.AttrFDEEnabled] != "true" {
		t.Fatalf("after SecurityInfo through the proxy: %v", d.Attrs)
	}
	if got := revealKey(t, s, m); got != m.PRK() {
		t.Fatal("escrowed key differs from the Mac's")
	}
	// Every device request carried the Mac's certificate in the header:
	// Authenticate, TokenUpdate, and the reports of two connects (Idle and
	// three answers, then Idle and one answer).
	certs := p.passed()
	if len(certs) != 2+4+2 {
		t.Errorf("%d device requests through the proxy, want 8", len(certs))
	}
	for i, c := range certs {
		if !c.Equal(m.Identity()) {
			t.Errorf("request %d: the proxy passed %q, not the Mac's identity", i, c.Subject)
		}
	}
	cmdsBefore, err := s.srv.stores.meta.Commands(ctx, d.ID, 50)
	if err != nil {
		t.Fatal(err)
	}

	// Refused requests.
	stranger := strangerIdentity(t)
	strangerID := "5EEDF00D-" + strings.ToUpper(randHex(4)) + "-4000-8000-" + strings.ToUpper(randHex(6))
	auth, _ := plist.Marshal(map[string]any{"MessageType": "Authenticate", "UDID": strangerID, "Topic": "x", "SerialNumber": "STRANGER1"})
	idle, _ := plist.Marshal(map[string]any{"UDID": m.UDID, "Status": "Idle"})
	result, _ := plist.Marshal(map[string]any{"UDID": m.UDID, "Status": "Acknowledged", "CommandUUID": cmdsBefore[0].UUID})
	put := func(base, path string, client *http.Client, body []byte, headers map[string]string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if path == "/checkin" {
			req.Header.Set("Content-Type", "application/x-apple-aspen-mdm-checkin")
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	direct, proxied := s.Client(), p.ts.Client()
	cases := []struct {
		name    string
		base    string
		client  *http.Client
		path    string
		body    []byte
		headers map[string]string
	}{
		{"another CA's certificate in the header", s.URL(), direct, "/checkin", auth,
			map[string]string{header: escapedPEM(stranger.cert)}},
		{"another CA's certificate in the header, claiming the enrolled Mac", s.URL(), direct, "/mdm", result,
			map[string]string{header: escapedPEM(stranger.cert)}},
		{"another CA's certificate presented to the proxy", p.ts.URL, proxied, "/checkin", auth,
			map[string]string{"Mdm-Signature": sign(t, stranger, auth)}},
		{"no header: the Mac's own valid Mdm-Signature", s.URL(), direct, "/mdm", idle,
			map[string]string{"Mdm-Signature": macSign(t, m, idle)}},
		{"no header: the Mac's own valid Mdm-Signature on a result", s.URL(), direct, "/mdm", result,
			map[string]string{"Mdm-Signature": macSign(t, m, result)}},
		{"no header: nothing at all", s.URL(), direct, "/checkin", auth, nil},
		{"a header that is not a certificate", s.URL(), direct, "/mdm", idle,
			map[string]string{header: "not%20a%20certificate"}},
		{"the Mac's certificate set by the client, stripped by the proxy", p.ts.URL, proxied, "/mdm", idle,
			map[string]string{header: escapedPEM(m.Identity())}},
	}
	for _, tc := range cases {
		if got := put(tc.base, tc.path, tc.client, tc.body, tc.headers); got < 400 || got > 499 {
			t.Errorf("%s: HTTP %d, want 4xx", tc.name, got)
		}
	}
	// A new Mac that talks to fvescrow directly, signing as the profile
	// says, gets its identity from SCEP and is refused at Authenticate.
	directID := "D1EC7000-" + strings.ToUpper(randHex(4)) + "-4000-8000-" + strings.ToUpper(randHex(6))
	_, err = fakemac.Enroll(ctx, s.enrollmentProfile(), fakemac.Options{Client: direct, UDID: directID})
	var he *fakemac.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusBadRequest || he.URL != "check-in" {
		t.Errorf("a Mac enrolling without the proxy: %v, want HTTP 400 from check-in", err)
	}

	// Nothing was stored.
	for _, id := range []string{strangerID, directID} {
		if _, err := s.srv.svc.Device(ctx, escrow.DeviceID(id)); !errors.Is(err, escrow.ErrNotFound) {
			t.Errorf("device %s after refused requests: %v", id, err)
		}
	}
	if devs, _ := s.srv.svc.FindDevices(ctx, escrow.DeviceQuery{Text: "STRANGER1"}); len(devs) != 0 {
		t.Error("a refused Authenticate created a device")
	}
	cmdsAfter, err := s.srv.stores.meta.Commands(ctx, d.ID, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmdsAfter) != len(cmdsBefore) {
		t.Fatalf("commands changed: %d, had %d", len(cmdsAfter), len(cmdsBefore))
	}
	for i := range cmdsAfter {
		if cmdsAfter[i].UUID != cmdsBefore[i].UUID || cmdsAfter[i].Status != cmdsBefore[i].Status || !cmdsAfter[i].AnsweredAt.Equal(cmdsBefore[i].AnsweredAt) {
			t.Errorf("command %s changed by a refused request: %+v, was %+v", cmdsAfter[i].UUID, cmdsAfter[i], cmdsBefore[i])
		}
	}
	if after := device(t, s, m); after.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) {
		t.Errorf("escrow status after refused requests: %q", after.Attrs[escrow.AttrEscrowStatus])
	}
	// The enrolled Mac still works through the proxy.
	if _, err := m.Connect(ctx); err != nil {
		t.Fatalf("the Mac through the proxy after the refusals: %v", err)
	}
}

// mdmExchange is one report the Mac sent to /mdm and what came back.
type mdmExchange struct {
	sentUUID, sentStatus string
	code                 int
	gotUUID, gotType     string // the next command, if any
}

// mdmRecorder is the Mac's HTTP transport, noting each report and answer.
type mdmRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	log  []mdmExchange
}

func (r *mdmRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/mdm" || strings.HasPrefix(req.Header.Get("Content-Type"), "application/x-apple-aspen-mdm-checkin") || req.Body == nil {
		return r.base.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	var sent struct{ CommandUUID, Status string }
	_ = plist.Unmarshal(body, &sent)
	resp, err := r.base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	x := mdmExchange{sentUUID: sent.CommandUUID, sentStatus: sent.Status, code: resp.StatusCode}
	if resp.StatusCode == http.StatusOK && len(bytes.TrimSpace(rb)) > 0 {
		var next struct {
			CommandUUID string
			Command     struct{ RequestType string }
		}
		_ = plist.Unmarshal(rb, &next)
		x.gotUUID, x.gotType = next.CommandUUID, next.Command.RequestType
	}
	r.mu.Lock()
	r.log = append(r.log, x)
	r.mu.Unlock()
	return resp, nil
}

// take returns the exchanges since the last take.
func (r *mdmRecorder) take() []mdmExchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.log
	r.log = nil
	return out
}

var queuedUUID = regexp.MustCompile(`queued SecurityInfo (\S+) for`)

// TestOutboxWriteFails: when the blob of a SecurityInfo answer cannot be
// written to the outbox (a trigger makes every INSERT fail, as a full disk
// would), the report is refused with an HTTP error, so the Mac sends it
// again: no key version is recorded, nanomdm keeps the command queued and
// hands the same SecurityInfo out at the next check-in. Once the database
// accepts writes again, the next check-in escrows the key.
func TestOutboxWriteFails(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode)
			rec := &mdmRecorder{base: s.Client().Transport}
			m, err := fakemac.Enroll(ctx, s.enrollmentProfile(), fakemac.Options{Client: &http.Client{Transport: rec}})
			if err != nil {
				t.Fatalf("enroll: %v\n--- server log\n%s", err, s.logs.String())
			}
			connect(t, s, m) // profile installed
			if err := m.EnableFileVault(); err != nil {
				t.Fatal(err)
			}
			s.enqueue("securityinfo", m.UDID)
			connect(t, s, m)
			id := escrow.DeviceID(m.UDID)
			oldKey := m.PRK()
			if got := revealKey(t, s, m); got != oldKey {
				t.Fatal("first key not escrowed")
			}
			before := device(t, s, m)
			rec.take()

			db := s.srv.stores.meta.DB()
			install, drop := []string{`CREATE TRIGGER outbox_disk_full BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END`},
				[]string{`DROP TRIGGER outbox_disk_full`}
			if mode == modeProduction {
				install = []string{
					`CREATE FUNCTION outbox_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$`,
					`CREATE TRIGGER outbox_disk_full BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION outbox_disk_full()`,
				}
				drop = []string{`DROP TRIGGER outbox_disk_full ON outbox`, `DROP FUNCTION outbox_disk_full()`}
			}
			for _, q := range install {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}

			// FileVault makes a new key; the Mac answers SecurityInfo with it.
			if err := m.NewPRK(); err != nil {
				t.Fatal(err)
			}
			newKey := m.PRK()
			sum := sha256.Sum256(m.CMS())
			newCMS := hex.EncodeToString(sum[:])
			out := s.enqueue("securityinfo", m.UDID)
			mt := queuedUUID.FindStringSubmatch(out)
			if mt == nil {
				t.Fatalf("enqueue: %s", out)
			}
			uuid := mt[1]

			refused := func(what string) {
				t.Helper()
				done, err := m.Connect(ctx)
				var he *fakemac.HTTPError
				if !errors.As(err, &he) || he.Status != http.StatusInternalServerError {
					t.Fatalf("%s: connect %v (answered %v), want HTTP 500\n--- server log\n%s", what, err, done, s.logs.String())
				}
				if strings.Join(done, ",") != fde.RequestSecurityInfo {
					t.Fatalf("%s: answered %v", what, done)
				}
				// Idle → the queued SecurityInfo; its answer → refused.
				x := rec.take()
				if len(x) != 2 || x[0].code != http.StatusOK || x[0].gotUUID != uuid || x[0].gotType != fde.RequestSecurityInfo ||
					x[1].sentUUID != uuid || x[1].sentStatus != fde.StatusAcknowledged || x[1].code != http.StatusInternalServerError {
					t.Fatalf("%s: exchanges %+v, want SecurityInfo %s handed out and its answer refused", what, x, uuid)
				}
				vs, err := s.srv.svc.KeyVersions(ctx, id, escrow.KindPRK)
				if err != nil || len(vs) != 1 || !vs[0].Current() || vs[0].CMSSHA256 == newCMS {
					t.Fatalf("%s: key versions %+v %v, want only the first key", what, vs, err)
				}
				if got := revealKey(t, s, m); got != oldKey {
					t.Fatalf("%s: reveal shows another key than the first", what)
				}
				if st, err := s.srv.svc.OutboxStats(ctx); err != nil || st.Pending != 0 {
					t.Fatalf("%s: outbox %+v %v", what, st, err)
				}
				// Not answered in fvescrow's command log either: the escrow
				// checks would otherwise send another SecurityInfo.
				if c, err := s.srv.stores.meta.Command(ctx, id, uuid); err != nil || c.Status != "" || !c.AnsweredAt.IsZero() {
					t.Fatalf("%s: the refused answer was recorded: %+v %v", what, c, err)
				}
				d := device(t, s, m)
				if d.Attrs[escrow.AttrSecurityInfoAt] != before.Attrs[escrow.AttrSecurityInfoAt] {
					t.Errorf("%s: the refused answer updated the device record: %s %q, was %q", what,
						escrow.AttrSecurityInfoAt, d.Attrs[escrow.AttrSecurityInfoAt], before.Attrs[escrow.AttrSecurityInfoAt])
				}
			}
			refused("first answer")
			if !strings.Contains(s.logs.String(), "disk full") {
				t.Fatalf("the refusal was not the trigger's error\n--- server log\n%s", s.logs.String())
			}
			// The Mac tries again later; the command is still queued, the
			// database still refuses.
			refused("answer sent again")

			for _, q := range drop {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if got := connect(t, s, m); strings.Join(got, ",") != fde.RequestSecurityInfo {
				t.Fatalf("after the database recovered: answered %v", got)
			}
			x := rec.take()
			if len(x) != 2 || x[0].gotUUID != uuid || x[1].sentUUID != uuid || x[1].code != http.StatusOK || x[1].gotUUID != "" {
				t.Fatalf("after the database recovered: exchanges %+v, want SecurityInfo %s answered and the queue empty", x, uuid)
			}
			d := device(t, s, m)
			if d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) {
				t.Fatalf("escrow status %q (attrs %v)", d.Attrs[escrow.AttrEscrowStatus], d.Attrs)
			}
			if got := revealKey(t, s, m); got != newKey {
				t.Fatal("reveal does not show the new key")
			}
			vs, err := s.srv.svc.KeyVersions(ctx, id, escrow.KindPRK)
			if err != nil || len(vs) != 2 {
				t.Fatalf("key versions %+v %v", vs, err)
			}
			for _, v := range vs {
				if v.Current() != (v.CMSSHA256 == newCMS) {
					t.Errorf("version %d (CMS %s…): current %v", v.Seq, v.CMSSHA256[:8], v.Current())
				}
			}
			cmds, err := s.srv.stores.meta.Commands(ctx, id, 50)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, c := range cmds {
				if c.RequestType == fde.RequestSecurityInfo && c.UUID == uuid {
					n++
					if c.Status != fde.StatusAcknowledged {
						t.Errorf("command %s: %q", uuid, c.Status)
					}
				}
			}
			if n != 1 {
				t.Errorf("command %s appears %d times in the command log", uuid, n)
			}
			if st, _ := s.srv.svc.OutboxStats(ctx); st.Pending != 0 {
				t.Errorf("outbox pending %d", st.Pending)
			}
		})
	}
}
