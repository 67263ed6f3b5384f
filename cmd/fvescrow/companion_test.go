package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/logadapt"
	"github.com/fvescrow/fvescrow/internal/testutil/fakemac"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
	nlhttp "github.com/micromdm/nanolib/http"
	"github.com/micromdm/nanomdm/cryptoutil"
	httpapi "github.com/micromdm/nanomdm/http/api"
	httpmdm "github.com/micromdm/nanomdm/http/mdm"
	"github.com/micromdm/nanomdm/push"
	"github.com/micromdm/nanomdm/service/certauth"
	"github.com/micromdm/nanomdm/service/multi"
	"github.com/micromdm/nanomdm/service/nanomdm"
	"github.com/micromdm/nanomdm/service/webhook"
	"github.com/micromdm/nanomdm/storage/inmem"
	"github.com/micromdm/plist"
)

// Companion mode end to end: a real nanomdm (v0.9.0, run in process with
// in-memory storage, certauth, its webhook service inside multi, and its
// enqueue API behind basic auth) serves the fake Mac; fvescrow only sees
// nanomdm's HMAC-signed webhook events and answers through nanomdm's API.

// testNano is the nanomdm fvescrow runs beside.
type testNano struct {
	t         *testing.T
	devices   *httptest.Server // https: /checkin, /mdm, /scep (what the Mac uses)
	api       *httptest.Server // http: /v1/... (what fvescrow's APIEnqueuer uses)
	apiKey    string
	hmacKey   []byte
	topic     string
	challenge string
	ca        *mdm.SCEPCA
	logs      *syncBuffer
	pusher    *nanoPusher

	mu       sync.Mutex
	enqueued []nanoEnqueue // what reached PUT /v1/enqueue/, in order
	apiDown  atomic.Bool   // when set, the API answers 503 (an outage)
}

type nanoEnqueue struct {
	ID          string
	RequestType string
	CommandUUID string
	Status      int
}

// nanoPusher is the test nanomdm's APNs: every push succeeds. (nanomdm's
// enqueue API answers 500 after enqueueing when it has no pusher, and
// fvescrow's APIEnqueuer does not ask for ?nopush.)
type nanoPusher struct {
	mu   sync.Mutex
	ids  []string
	down atomic.Bool // when set, every push fails as with no push certificate
}

func (p *nanoPusher) Push(_ context.Context, ids []string) (map[string]*push.Response, error) {
	if p.down.Load() {
		return nil, errors.New("retrieving push cert for topic: not found")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]*push.Response, len(ids))
	for _, id := range ids {
		p.ids = append(p.ids, id)
		out[id] = &push.Response{Id: randHex(16)}
	}
	return out, nil
}

func (p *nanoPusher) count(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, x := range p.ids {
		if x == id {
			n++
		}
	}
	return n
}

// companionTap records every webhook delivery fvescrow's server receives:
// the exact bytes and signature (to replay them) and the status it answered.
type companionTap struct {
	mu     sync.Mutex
	events []tappedEvent
}

type tappedEvent struct {
	Topic  string
	Body   []byte
	Sig    string
	Status int
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (tap *companionTap) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/webhook/nanomdm" || r.Method != http.MethodPost || r.ContentLength > mdm.MaxWebhookBody {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "tap: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		var ev struct {
			Topic string `json:"topic"`
		}
		_ = json.Unmarshal(body, &ev)
		tap.mu.Lock()
		tap.events = append(tap.events, tappedEvent{Topic: ev.Topic, Body: body, Sig: r.Header.Get(mdm.HMACHeader), Status: sw.status})
		tap.mu.Unlock()
	})
}

func (tap *companionTap) all() []tappedEvent {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return append([]tappedEvent(nil), tap.events...)
}

// startCompanion starts a test nanomdm and fvescrow in companion mode beside
// it (the real buildServer behind TLS, as startServer does for the
// embedded MDM, without the push certificate upload companion mode has no
// endpoint for).
//
// nanomdm's webhook events arrive as nanomdm sends them: from concurrent
// goroutines, in any order.
func startCompanion(t *testing.T, mode string) (*testServer, *testNano, *companionTap) {
	t.Helper()
	dir := t.TempDir()
	n := &testNano{t: t, apiKey: "nanomdm-api-key-" + randHex(16), hmacKey: []byte(randHex(32)),
		topic: "com.apple.mgmt.External." + randHex(8), logs: &syncBuffer{}, pusher: &nanoPusher{}}

	// nanomdm's API address is fixed first: fvescrow is configured with it.
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { apiLn.Close() }) // if nanomdm never starts

	s := &testServer{t: t, mode: mode, logs: &syncBuffer{}}
	s.apiToken = "test-api-token-" + randHex(8)
	tokenFile, keyFile, hmacFile := filepath.Join(dir, "api-token"), filepath.Join(dir, "nanomdm-api-key"), filepath.Join(dir, "webhook-hmac-key")
	writeFile(t, tokenFile, s.apiToken)
	writeFile(t, keyFile, n.apiKey+"\n")
	writeFile(t, hmacFile, string(n.hmacKey)+"\n")
	// Every flag at its default, then what `fvescrow serve --companion
	// --nanomdm-url ... --nanomdm-api-key-file ... --webhook-hmac-key-file
	// ...` would set.
	s.cfg = defaultServeConfig()
	s.cfg.stores.dataDir = filepath.Join(dir, "data")
	s.cfg.apiTokenFile = tokenFile
	s.cfg.fvLocation = "Example Corp IT"
	s.cfg.checkInterval, s.cfg.outboxInterval, s.cfg.checkpointEvery = time.Hour, time.Hour, time.Hour
	s.cfg.companion = true
	s.cfg.nanomdmURL = "http://" + apiLn.Addr().String()
	s.cfg.nanomdmKeyFile, s.cfg.webhookKeyFile = keyFile, hmacFile
	if mode == modeProduction {
		s.cfg.stores.databaseURL = pgtest.NewDatabase(t)
		v := vaulttest.StartDev(t)
		policy, err := os.ReadFile("../../deploy/vault/fvescrow-policy.hcl")
		if err != nil {
			t.Fatal(err)
		}
		vt := filepath.Join(dir, "vault-token")
		writeFile(t, vt, v.PolicyToken(t, string(policy)))
		s.cfg.stores.vaultAddr, s.cfg.stores.vaultTokenFile = v.Addr, vt
	}
	if err := s.cfg.Validate(); err != nil {
		t.Fatalf("companion config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, _, err := buildServer(context.Background(), &s.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	tap := &companionTap{}
	s.ts = httptest.NewUnstartedServer(tap.wrap(srv.handler))
	s.ts.StartTLS()
	s.addr = s.ts.Listener.Addr().String()
	t.Cleanup(s.stop)

	n.start(t, apiLn, s.URL()+"/webhook/nanomdm", s.Client())
	return s, n, tap
}

// start wires nanomdm as its own cmd/nanomdm does: Mdm-Signature extraction
// and certificate verification (chain to the SCEP CA, ClientAuth) in front
// of certauth(multi(nanomdm, webhook)), and the API behind HTTP Basic auth
// "nanomdm" + API key.
func (n *testNano) start(t *testing.T, apiLn net.Listener, webhookURL string, webhookClient webhook.Doer) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	logger := logadapt.New(log)

	// The SCEP CA is fvescrow's own CA code on a store of the nanomdm's: the
	// nanomdm operator's CA, unrelated to fvescrow's.
	caStores, err := (&storeConfig{dataDir: t.TempDir()}).open(context.Background(), true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(caStores.Close)
	n.ca, _, err = mdm.LoadOrCreateSCEPCA(context.Background(), caStores.secrets, caStores.meta, "Test nanomdm")
	if err != nil {
		t.Fatal(err)
	}
	if n.challenge, err = mdm.LoadOrCreateChallenge(context.Background(), caStores.secrets); err != nil {
		t.Fatal(err)
	}
	verifier, err := n.ca.Verifier()
	if err != nil {
		t.Fatal(err)
	}
	scepHandler, err := n.ca.Handler(n.challenge, log)
	if err != nil {
		t.Fatal(err)
	}

	store := inmem.New()
	nano := nanomdm.New(store, nanomdm.WithLogger(logger.With("service", "nanomdm")))
	// WithClient must come before WithHMACSecret: the HMAC option wraps the
	// client set so far, and a later WithClient would drop the signature.
	hook := webhook.New(webhookURL, webhook.WithClient(webhookClient), webhook.WithHMACSecret(n.hmacKey))
	svc := certauth.New(multi.New(logger.With("service", "multi"), nano, hook), store, certauth.WithLogger(logger.With("service", "certauth")))

	mux := http.NewServeMux()
	mux.Handle("/scep", scepHandler)
	devMux := nlhttp.NewMWMux(mux)
	devMux.Use(func(h http.Handler) http.Handler {
		return httpmdm.CertExtractMdmSignatureMiddleware(h, httpmdm.MdmSignatureVerifierFunc(cryptoutil.VerifyMdmSignature),
			httpmdm.SigLogWithLogger(logger.With("handler", "cert-extract")), httpmdm.SigLogWithLogErrors(true))
	})
	devMux.Use(func(h http.Handler) http.Handler {
		return httpmdm.CertVerifyMiddleware(h, verifier, logger.With("handler", "cert-verify"))
	})
	devMux.Handle("/checkin", httpmdm.CheckinHandler(svc, logger.With("handler", "checkin")))
	devMux.Handle("/mdm", httpmdm.CommandAndReportResultsHandler(svc, logger.With("handler", "mdm")))

	apiMux := nlhttp.NewMWMux(mux)
	apiMux.Use(n.recordEnqueues, func(h http.Handler) http.Handler {
		return nlhttp.NewSimpleBasicAuthHandler(h, "nanomdm", n.apiKey, "nanomdm")
	})
	httpapi.HandleAPIv1("/v1", apiMux, logger.With("service", "api"), store, n.pusher)

	n.devices = httptest.NewUnstartedServer(mux)
	n.devices.StartTLS()
	t.Cleanup(n.devices.Close)
	n.api = httptest.NewUnstartedServer(mux)
	n.api.Listener.Close()
	n.api.Listener = apiLn
	n.api.Start()
	t.Cleanup(n.api.Close)
}

// recordEnqueues notes each enqueue API call and its answer; with apiDown
// set it answers 503 as a nanomdm that is down (or behind a failing proxy).
func (n *testNano) recordEnqueues(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.apiDown.Load() {
			http.Error(w, "nanomdm is down", http.StatusServiceUnavailable)
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/v1/enqueue/") {
			next.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var cmd struct {
			CommandUUID string
			Command     struct{ RequestType string }
		}
		_ = plist.Unmarshal(body, &cmd)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		n.mu.Lock()
		n.enqueued = append(n.enqueued, nanoEnqueue{ID: strings.TrimPrefix(r.URL.Path, "/v1/enqueue/"), RequestType: cmd.Command.RequestType, CommandUUID: cmd.CommandUUID, Status: sw.status})
		n.mu.Unlock()
	})
}

// enqueuedFor lists the request types enqueued for id that nanomdm accepted.
func (n *testNano) enqueuedFor(id string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, e := range n.enqueued {
		if e.ID == id && e.Status == http.StatusOK {
			out = append(out, e.RequestType)
		}
	}
	return out
}

// enrollmentProfile is the nanomdm's enrollment profile (its https URL,
// SCEP CA and challenge, its APNs topic).
func (n *testNano) enrollmentProfile() []byte {
	n.t.Helper()
	p, err := fde.NewEnrollmentProfile(fde.EnrollmentOptions{BaseURL: n.devices.URL, Topic: n.topic, Challenge: n.challenge, SCEPCA: n.ca.Cert, Organization: "Example Corp"})
	if err != nil {
		n.t.Fatal(err)
	}
	xml, err := p.XML()
	if err != nil {
		n.t.Fatal(err)
	}
	return xml
}

// apiEnqueue enqueues a raw command through nanomdm's API, as another tool
// beside fvescrow would.
func (n *testNano) apiEnqueue(id string, cmd []byte) {
	n.t.Helper()
	req, err := http.NewRequest(http.MethodPut, n.api.URL+"/v1/enqueue/"+id, bytes.NewReader(cmd))
	if err != nil {
		n.t.Fatal(err)
	}
	req.SetBasicAuth("nanomdm", n.apiKey)
	resp, err := n.api.Client().Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		n.t.Fatalf("nanomdm enqueue: %d %s", resp.StatusCode, b)
	}
}

// companionWait polls cond for up to 20s (nanomdm sends webhooks from
// goroutines, so fvescrow catches up a little after the Mac's request),
// then fails with both logs and what cond last reported.
func companionWait(t *testing.T, s *testServer, n *testNano, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last: %s)\n--- fvescrow log\n%s\n--- nanomdm log\n%s", what, last, s.logs.String(), n.logs.String())
}

func companionConnect(t *testing.T, s *testServer, n *testNano, m *fakemac.Mac) []string {
	t.Helper()
	done, err := m.Connect(ctx)
	if err != nil {
		t.Fatalf("connect to nanomdm: %v\n--- nanomdm log\n%s\n--- fvescrow log\n%s", err, n.logs.String(), s.logs.String())
	}
	return done
}

// commandsByType counts fvescrow's command log for a device by request type
// and reports whether every command has been answered with want.
func commandsByType(t *testing.T, s *testServer, id escrow.DeviceID, want string) (map[string]int, bool) {
	t.Helper()
	cmds, err := s.srv.stores.meta.Commands(ctx, id, 100)
	if err != nil {
		t.Fatal(err)
	}
	byType := map[string]int{}
	all := true
	for _, c := range cmds {
		byType[c.RequestType]++
		if c.Status != want {
			all = false
		}
	}
	return byType, all
}

func deviceState(s *testServer, id escrow.DeviceID) (escrow.Device, string) {
	d, err := s.srv.svc.Device(ctx, id)
	if err != nil {
		return d, err.Error()
	}
	return d, fmt.Sprintf("serial=%q device_key=%q attrs=%v", d.Serial, d.DeviceKey, d.Attrs)
}

// TestCompanionMode: a Mac enrolls in a real nanomdm; fvescrow, told only
// by nanomdm's signed webhooks, installs the escrow profile and asks for
// SecurityInfo and UserList through nanomdm's API; FileVault is turned on;
// the next scheduled check brings the key, which is escrowed and revealed.
// Unlock and bootstrap tokens sent at nanomdm reach fvescrow's store, a
// command another tool sent is ignored, replays of every event nanomdm sent
// change nothing, and CheckOut stops the checks.
func TestCompanionMode(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s, n, tap := startCompanion(t, mode)
			users := []fakemac.User{
				{UserName: "ada", FullName: "Ada Lovelace", UID: 501, GUID: "A-GUID", HasSecureToken: true, IsLoggedIn: true},
				{UserName: "itadmin", UID: 502, GUID: "B-GUID"},
			}
			m, err := fakemac.Enroll(ctx, n.enrollmentProfile(), fakemac.Options{Client: n.devices.Client(), Users: users})
			if err != nil {
				t.Fatalf("enroll at nanomdm: %v\n--- nanomdm log\n%s", err, n.logs.String())
			}
			id := escrow.DeviceID(m.UDID)

			// Authenticate and TokenUpdate reached fvescrow only as webhook
			// events; it answered with its enrollment workflow through
			// nanomdm's enqueue API, and nanomdm pushed.
			wantFirst := []string{fde.RequestInstallProfile, fde.RequestSecurityInfo, fde.RequestUserList}
			companionWait(t, s, n, "the enrollment workflow at nanomdm", func() (bool, string) {
				got := n.enqueuedFor(m.UDID)
				return strings.Join(got, ",") == strings.Join(wantFirst, ",") && n.pusher.count(m.UDID) >= 3, fmt.Sprint(got)
			})
			companionWait(t, s, n, "the device record from Authenticate", func() (bool, string) {
				d, st := deviceState(s, id)
				return d.Serial == m.Serial && d.Attrs[escrow.AttrEnrollmentState] == "enrolled", st
			})

			// The Mac fetches the commands from nanomdm; the results come
			// back to fvescrow as mdm.Connect events.
			if got := companionConnect(t, s, n, m); strings.Join(got, ",") != strings.Join(wantFirst, ",") {
				t.Fatalf("commands from nanomdm %v, want %v", got, wantFirst)
			}
			if m.EscrowCert() == nil || !m.EscrowCert().Equal(s.srv.svc.Keyring().Current(time.Now())) {
				t.Fatal("the Mac did not get fvescrow's escrow certificate in the profile")
			}
			// All answered and processed; with FileVault off the next check
			// is a day away.
			var j escrow.Job
			companionWait(t, s, n, "the answers to the enrollment commands", func() (bool, string) {
				d, st := deviceState(s, id)
				byType, answered := commandsByType(t, s, id, fde.StatusAcknowledged)
				var err error
				j, err = s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, id)
				return answered && len(byType) == 3 && d.Attrs[escrow.AttrEscrowStatus] == string(escrow.EscrowFileVaultOff) &&
						d.Attrs[escrow.AttrProfileInstalled] != "" && d.Attrs[escrow.AttrTokenHolders] == "ada" &&
						err == nil && j.State == escrow.JobPending && time.Until(j.RunAt) > 12*time.Hour,
					fmt.Sprintf("%s commands=%v job=%+v %v", st, byType, j, err)
			})
			if accounts, _, err := s.srv.stores.meta.Accounts(ctx, id); err != nil || len(accounts) != 2 {
				t.Fatalf("accounts %+v %v", accounts, err)
			}

			// FileVault turns on at logout. In companion mode fvescrow's
			// scheduler is the only sender of checks: make the device's
			// check due (a day early) and run the scheduler once.
			if err := m.EnableFileVault(); err != nil {
				t.Fatal(err)
			}
			j.RunAt = time.Now().Add(-time.Second)
			if err := s.srv.stores.meta.UpdateJob(ctx, j); err != nil {
				t.Fatal(err)
			}
			if ran, err := s.srv.capture.RunDue(ctx); err != nil || ran != 1 {
				t.Fatalf("RunDue: %d %v\n%s", ran, err, s.logs.String())
			}
			wantAll := append(wantFirst, fde.RequestSecurityInfo, fde.RequestUserList)
			if got := n.enqueuedFor(m.UDID); strings.Join(got, ",") != strings.Join(wantAll, ",") {
				t.Fatalf("enqueued at nanomdm %v, want %v", got, wantAll)
			}
			if got := companionConnect(t, s, n, m); strings.Join(got, ",") != fde.RequestSecurityInfo+","+fde.RequestUserList {
				t.Fatalf("second connect: %v", got)
			}
			companionWait(t, s, n, "the escrowed key", func() (bool, string) {
				d, st := deviceState(s, id)
				byType, answered := commandsByType(t, s, id, fde.StatusAcknowledged)
				j, err := s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, id)
				return d.Attrs[escrow.AttrEscrowStatus] == string(escrow.EscrowEscrowed) && d.DeviceKey == m.Serial && answered &&
						err == nil && j.State == escrow.JobPending && time.Until(j.RunAt) > 12*time.Hour,
					fmt.Sprintf("%s commands=%v job=%+v %v", st, byType, j, err)
			})
			if got := revealKey(t, s, m); got != m.PRK() {
				t.Fatal("escrowed key differs from the Mac's")
			}

			// A command someone else sent through nanomdm: its result
			// reaches fvescrow too, which acknowledges and ignores it.
			other := randHex(4) + "-OTHER-TOOL"
			n.apiEnqueue(m.UDID, []byte(`<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>`+
				`<key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict>`+
				`<key>CommandUUID</key><string>`+other+`</string></dict></plist>`))
			if got := companionConnect(t, s, n, m); strings.Join(got, ",") != fde.RequestProfileList {
				t.Fatalf("third connect: %v", got)
			}
			companionWait(t, s, n, "the ProfileList result event", func() (bool, string) {
				for _, ev := range tap.all() {
					if ev.Topic == "mdm.Connect" && ackUUID(ev.Body) == other {
						return ev.Status == http.StatusOK, fmt.Sprint(ev.Status)
					}
				}
				return false, "no event"
			})

			// An iPhone-style TokenUpdate carries an UnlockToken: fvescrow
			// escrows it from the webhook (nanomdm keeps its own copy).
			unlock := []byte("UNLOCK-TOKEN-" + randHex(16))
			phone, err := fakemac.Enroll(ctx, n.enrollmentProfile(), fakemac.Options{Client: n.devices.Client(), UnlockToken: unlock})
			if err != nil {
				t.Fatalf("enroll the second device: %v\n--- nanomdm log\n%s", err, n.logs.String())
			}
			companionWait(t, s, n, "the unlock token", func() (bool, string) {
				u, err := s.srv.svc.Token(ctx, escrow.System, escrow.DeviceID(phone.UDID), escrow.KindUnlockToken)
				return err == nil && bytes.Equal(u, unlock), fmt.Sprint(err)
			})

			// The bootstrap token, sent to nanomdm, is escrowed by fvescrow.
			boot := []byte("BOOTSTRAP-TOKEN-" + randHex(16))
			if err := m.SetBootstrapToken(ctx, boot); err != nil {
				t.Fatal(err)
			}
			companionWait(t, s, n, "the bootstrap token", func() (bool, string) {
				b, err := s.srv.svc.Token(ctx, escrow.System, id, escrow.KindBootstrapToken)
				return err == nil && bytes.Equal(b, boot), fmt.Sprint(err)
			})

			// Every event nanomdm sent was accepted. Replaying all of them,
			// byte for byte with their signatures, changes nothing: no second
			// workflow at nanomdm, no new commands, no second key version.
			events := tap.all()
			topics := map[string]int{}
			for _, ev := range events {
				topics[ev.Topic]++
				if ev.Status != http.StatusOK {
					t.Errorf("fvescrow answered %d to nanomdm's %s event", ev.Status, ev.Topic)
				}
			}
			for _, topic := range []string{"mdm.Authenticate", "mdm.TokenUpdate", "mdm.Connect", "mdm.SetBootstrapToken"} {
				if topics[topic] == 0 {
					t.Errorf("no %s event from nanomdm (got %v)", topic, topics)
				}
			}
			before, _ := commandsByType(t, s, id, fde.StatusAcknowledged)
			if before[fde.RequestProfileList] != 0 {
				t.Errorf("fvescrow recorded another tool's command: %v", before)
			}
			enqBefore := n.enqueuedFor(m.UDID)
			for _, ev := range events {
				if status, body := postWebhook(t, s, ev.Body, ev.Sig); status != http.StatusOK {
					t.Errorf("replayed %s: %d %s", ev.Topic, status, body)
				}
			}
			if got := n.enqueuedFor(m.UDID); len(got) != len(enqBefore) {
				t.Errorf("replays enqueued more commands: %v", got)
			}
			if after, answered := commandsByType(t, s, id, fde.StatusAcknowledged); fmt.Sprint(after) != fmt.Sprint(before) || !answered {
				t.Errorf("commands after replay %v, before %v", after, before)
			}
			if vs, _ := s.srv.svc.KeyVersions(ctx, id, escrow.KindPRK); len(vs) != 1 {
				t.Errorf("%d key versions after replays", len(vs))
			}

			// CheckOut at nanomdm ends fvescrow's checks of the device.
			if err := m.CheckOut(ctx); err != nil {
				t.Fatal(err)
			}
			companionWait(t, s, n, "the check-out", func() (bool, string) {
				d, st := deviceState(s, id)
				_, err := s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, id)
				return d.Attrs[escrow.AttrEnrollmentState] == "checked-out" && errors.Is(err, escrow.ErrNotFound), st
			})

			logs := s.logs.String()
			for _, secret := range []string{m.PRK(), string(boot), string(unlock), string(n.hmacKey), n.apiKey} {
				if strings.Contains(logs, secret) {
					t.Errorf("a secret reached fvescrow's log: %.12s…", secret)
				}
			}
		})
	}
}

// ackUUID is the command_uuid of an mdm.Connect event.
func ackUUID(body []byte) string {
	var ev struct {
		Ack struct {
			CommandUUID string `json:"command_uuid"`
		} `json:"acknowledge_event"`
	}
	_ = json.Unmarshal(body, &ev)
	return ev.Ack.CommandUUID
}

// postWebhook POSTs body to fvescrow's webhook with the X-Hmac-Signature
// value sig ("" leaves the header out).
func postWebhook(t *testing.T, s *testServer, body []byte, sig string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/webhook/nanomdm", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", webhook.ContentType)
	if sig != "" {
		req.Header.Set(mdm.HMACHeader, sig)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func hmacSig(key, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// companionUDID is a random UDID in Apple's format.
func companionUDID() string {
	h := strings.ToUpper(randHex(16))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// checkinEvent is a nanomdm webhook event for a check-in message (the
// shape of service/webhook's EventJson).
func checkinEvent(t *testing.T, topic, udid string, msg map[string]any, at time.Time) []byte {
	t.Helper()
	msg["MessageType"], msg["UDID"] = strings.TrimPrefix(topic, "mdm."), udid
	raw, err := plist.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{"topic": topic, "event_id": randHex(8), "created_at": at.UTC(),
		"checkin_event": map[string]any{"udid": udid, "raw_payload": raw, "ids": map[string]any{"id": udid, "type": "Device"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// connectEvent is a nanomdm mdm.Connect event for a command result.
func connectEvent(t *testing.T, udid, uuid string, result map[string]any) []byte {
	t.Helper()
	result["UDID"], result["CommandUUID"] = udid, uuid
	status, _ := result["Status"].(string)
	raw, err := plist.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{"topic": "mdm.Connect", "event_id": randHex(8), "created_at": time.Now().UTC(),
		"acknowledge_event": map[string]any{"udid": udid, "status": status, "command_uuid": uuid, "raw_payload": raw, "ids": map[string]any{"id": udid, "type": "Device"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func authenticateMsg(n *testNano, serial string) map[string]any {
	return map[string]any{"Topic": n.topic, "SerialNumber": serial, "DeviceName": serial + "'s Mac", "Model": "Mac14,2",
		"ModelName": "MacBook Air", "ProductName": "Mac14,2", "OSVersion": "15.1", "BuildVersion": "24B83"}
}

func tokenUpdateMsg(n *testNano, udid string) map[string]any {
	return map[string]any{"Topic": n.topic, "PushMagic": "push-magic-" + udid, "Token": []byte("apns-token-" + udid)}
}

func countWebhookEvents(t *testing.T, s *testServer) int {
	t.Helper()
	var count int
	if err := s.srv.stores.meta.DB().QueryRowContext(ctx, `SELECT count(*) FROM webhook_events`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	return count
}

// TestWebhookSecurity: fvescrow's webhook receiver against hand-made
// events. Only events signed with the shared HMAC key are processed; a
// rejected event leaves no trace (no device, no key, no commands at
// nanomdm, no replay-guard entry); oversize and malformed events are
// refused; replays of accepted events, including one carrying a recovery
// key, change nothing.
func TestWebhookSecurity(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s, n, _ := startCompanion(t, mode)
			good := func(body []byte) string { return hmacSig(n.hmacKey, body) }
			marked := countWebhookEvents(t, s)

			// Rejected: each is an Authenticate for a device of its own.
			type rejected struct {
				name   string
				udid   string
				body   []byte
				sig    string
				status int
			}
			var cases []rejected
			add := func(name string, sig func(body []byte) string, status int) {
				udid := "EVIL-" + companionUDID()
				body := checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, "EVIL"+randHex(4)), time.Now())
				cases = append(cases, rejected{name: name, udid: udid, body: body, sig: sig(body), status: status})
			}
			add("no signature", func([]byte) string { return "" }, http.StatusUnauthorized)
			add("not base64", func([]byte) string { return "%%% not base64 %%%" }, http.StatusUnauthorized)
			add("empty MAC", func([]byte) string { return base64.StdEncoding.EncodeToString(nil) + "=" }, http.StatusUnauthorized)
			add("wrong key", func(b []byte) string { return hmacSig([]byte(randHex(32)), b) }, http.StatusUnauthorized)
			add("key with a trailing newline", func(b []byte) string { return hmacSig(append(append([]byte(nil), n.hmacKey...), '\n'), b) }, http.StatusUnauthorized)
			add("MAC of other bytes", func(b []byte) string { return good(append(append([]byte(nil), b...), ' ')) }, http.StatusUnauthorized)
			add("MAC truncated", func(b []byte) string {
				mac, _ := base64.StdEncoding.DecodeString(good(b))
				return base64.StdEncoding.EncodeToString(mac[:16])
			}, http.StatusUnauthorized)
			add("MAC hex-encoded", func(b []byte) string {
				mac, _ := base64.StdEncoding.DecodeString(good(b))
				return fmt.Sprintf("%x", mac)
			}, http.StatusUnauthorized)
			add("plain SHA-256, no key", func(b []byte) string {
				sum := sha256.Sum256(b)
				return base64.StdEncoding.EncodeToString(sum[:])
			}, http.StatusUnauthorized)
			for _, c := range cases {
				if status, body := postWebhook(t, s, c.body, c.sig); status != c.status {
					t.Errorf("%s: %d %s, want %d", c.name, status, body, c.status)
				}
			}
			// Tampering with a correctly signed event: a different device.
			udid := "EVIL-" + companionUDID()
			signed := checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, "EVILSERIAL"), time.Now())
			tampered := bytes.Replace(signed, []byte(udid), []byte("EVIL-"+companionUDID()), 1)
			if status, _ := postWebhook(t, s, tampered, good(signed)); status != http.StatusUnauthorized {
				t.Errorf("tampered event: %d", status)
			}
			// Not a POST.
			req, _ := http.NewRequest(http.MethodGet, s.URL()+"/webhook/nanomdm", nil)
			if resp, err := s.Client().Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("GET: %v %v", resp.StatusCode, err)
			} else {
				resp.Body.Close()
			}
			// Oversize, with a valid signature so that only the size is at
			// fault: with a Content-Length and chunked.
			huge := bytes.Repeat([]byte(" "), mdm.MaxWebhookBody+1)
			if status, _ := postWebhook(t, s, huge, good(huge)); status != http.StatusRequestEntityTooLarge {
				t.Errorf("oversize: %d", status)
			}
			req, _ = http.NewRequest(http.MethodPost, s.URL()+"/webhook/nanomdm", io.MultiReader(bytes.NewReader(huge)))
			req.Header.Set(mdm.HMACHeader, good(huge))
			if resp, err := s.Client().Do(req); err != nil {
				t.Errorf("oversize chunked: %v", err)
			} else {
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Errorf("oversize chunked: %d", resp.StatusCode)
				}
			}

			// Nothing of any of that was processed or remembered.
			for _, c := range cases {
				if _, err := s.srv.svc.Device(ctx, escrow.DeviceID(c.udid)); err == nil {
					t.Errorf("%s: the rejected event created device %s", c.name, c.udid)
				}
			}
			if devs, err := s.srv.svc.FindDevices(ctx, escrow.DeviceQuery{Text: "EVIL"}); err != nil || len(devs) != 0 {
				t.Errorf("rejected events created devices: %v %v", devs, err)
			}
			if got := countWebhookEvents(t, s); got != marked {
				t.Errorf("rejected events were recorded: %d webhook_events rows, want %d", got, marked)
			}
			// A rejected event is not remembered as seen: correctly signed,
			// the same bytes are processed.
			if status, body := postWebhook(t, s, cases[0].body, good(cases[0].body)); status != http.StatusOK {
				t.Fatalf("the first rejected event, now signed: %d %s", status, body)
			}
			if _, err := s.srv.svc.Device(ctx, escrow.DeviceID(cases[0].udid)); err != nil {
				t.Errorf("a correctly signed Authenticate did not record the device: %v", err)
			}
			if got := countWebhookEvents(t, s); got != marked+1 {
				t.Errorf("%d webhook_events rows after one accepted event, want %d", got, marked+1)
			}

			// Correctly signed but malformed: 400.
			for name, body := range map[string][]byte{
				"not JSON":                     []byte(`{"topic": "mdm.Authenticate", `),
				"check-in without its event":   []byte(`{"topic": "mdm.TokenUpdate"}`),
				"Connect without its event":    []byte(`{"topic": "mdm.Connect", "event_id": "` + randHex(4) + `"}`),
				"check-in payload not a plist": []byte(`{"topic": "mdm.Authenticate", "checkin_event": {"udid": "X", "raw_payload": "` + base64.StdEncoding.EncodeToString([]byte("not a plist")) + `"}}`),
				"raw_payload not base64":       []byte(`{"topic": "mdm.Authenticate", "checkin_event": {"udid": "X", "raw_payload": "%%%"}}`),
			} {
				if status, resp := postWebhook(t, s, body, good(body)); status != http.StatusBadRequest {
					t.Errorf("%s: %d %s, want 400", name, status, resp)
				}
			}
			// A topic fvescrow does not act on: acknowledged.
			other := checkinEvent(t, "mdm.DeclarativeManagement", companionUDID(), map[string]any{"Endpoint": "status"}, time.Now())
			if status, _ := postWebhook(t, s, other, good(other)); status != http.StatusOK {
				t.Errorf("unhandled topic: %d", status)
			}

			// (Signed events that fail later than the JSON parse, and topics
			// fvescrow ignores, are remembered like any processed event.)
			marked = countWebhookEvents(t, s)

			// An enrollment, by webhook: one workflow, however often the
			// events are replayed, and not again for a later TokenUpdate.
			udid = companionUDID()
			id := escrow.DeviceID(udid)
			serial := "C02" + strings.ToUpper(randHex(4))
			auth := checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, serial), time.Now())
			tu := checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), time.Now())
			for i := 0; i < 3; i++ {
				for _, ev := range [][]byte{auth, tu} {
					if status, body := postWebhook(t, s, ev, good(ev)); status != http.StatusOK {
						t.Fatalf("enrollment event (round %d): %d %s\n%s", i, status, body, s.logs.String())
					}
				}
			}
			later := checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), time.Now())
			if status, _ := postWebhook(t, s, later, good(later)); status != http.StatusOK {
				t.Fatalf("later TokenUpdate: %d", status)
			}
			want := fde.RequestInstallProfile + "," + fde.RequestSecurityInfo + "," + fde.RequestUserList
			if got := strings.Join(n.enqueuedFor(udid), ","); got != want {
				t.Fatalf("enqueued at nanomdm: %s, want %s", got, want)
			}
			cmds, err := s.srv.stores.meta.Commands(ctx, id, 100)
			if err != nil || len(cmds) != 3 {
				t.Fatalf("fvescrow's commands: %+v %v", cmds, err)
			}
			jobs, err := s.srv.stores.meta.Jobs(ctx, escrow.JobQuery{Kind: mdm.JobEscrowCheck, Device: id})
			if err != nil || len(jobs) != 1 {
				t.Fatalf("escrow-check jobs: %+v %v", jobs, err)
			}
			marked += 3 // auth, tu, later
			if got := countWebhookEvents(t, s); got != marked {
				t.Errorf("%d webhook_events rows, want %d", got, marked)
			}

			// A SecurityInfo answer carrying a recovery key encrypted to
			// fvescrow's escrow certificate: forged (unsigned or signed
			// with another key), it plants nothing.
			var siUUID string
			for _, c := range cmds {
				if c.RequestType == fde.RequestSecurityInfo {
					siUUID = c.UUID
				}
			}
			prk := fakemac.RandomPRK()
			cms, err := fakemac.EncryptCMS(s.srv.svc.Keyring().Current(time.Now()), prk)
			if err != nil {
				t.Fatal(err)
			}
			si := connectEvent(t, udid, siUUID, map[string]any{"Status": "Acknowledged", "SecurityInfo": map[string]any{
				"FDE_Enabled": true, "FDE_HasPersonalRecoveryKey": true, "FDE_HasInstitutionalRecoveryKey": false,
				"FDE_PersonalRecoveryKeyCMS": cms, "FDE_PersonalRecoveryKeyDeviceKey": serial,
			}})
			for name, sig := range map[string]string{"unsigned": "", "wrong key": hmacSig([]byte(randHex(32)), si)} {
				if status, _ := postWebhook(t, s, si, sig); status != http.StatusUnauthorized {
					t.Errorf("forged key (%s): %d", name, status)
				}
			}
			if vs, err := s.srv.svc.KeyVersions(ctx, id, escrow.KindPRK); err != nil || len(vs) != 0 {
				t.Fatalf("a forged event planted a key: %+v %v", vs, err)
			}
			if st, _ := s.srv.svc.OutboxStats(ctx); st.Pending != 0 {
				t.Fatalf("a forged event reached the outbox: %+v", st)
			}
			// Signed, it is escrowed; replayed, it changes nothing.
			for i := 0; i < 3; i++ {
				if status, body := postWebhook(t, s, si, good(si)); status != http.StatusOK {
					t.Fatalf("SecurityInfo event (round %d): %d %s\n%s", i, status, body, s.logs.String())
				}
			}
			vs, err := s.srv.svc.KeyVersions(ctx, id, escrow.KindPRK)
			if err != nil || len(vs) != 1 {
				t.Fatalf("key versions after the SecurityInfo event and 2 replays: %+v %v", vs, err)
			}
			r, err := s.srv.svc.Reveal(ctx, escrow.RevealRequest{Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "helpdesk@example.com"},
				Device: id, Reason: "user locked out at FileVault login", Ticket: "IT-1002"})
			if err != nil || r.Key.Expose() != prk {
				t.Fatalf("reveal: %v", err)
			}
			if d, _ := deviceState(s, id); d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowEscrowed) {
				t.Errorf("escrow status %q", d.Attrs[escrow.AttrEscrowStatus])
			}
			logs := s.logs.String()
			if !strings.Contains(logs, "webhook with a missing or bad signature rejected") {
				t.Error("rejections are not logged")
			}
			for _, secret := range []string{prk, string(n.hmacKey)} {
				if strings.Contains(logs, secret) {
					t.Errorf("a secret reached the log: %.8s…", secret)
				}
			}
		})
	}
}

// TestCompanionEventOrder: nanomdm gives no order or delivery guarantee
// for its webhook events (each is sent from its own goroutine, once, with
// no retry), so fvescrow must reach the same state whatever the order of a
// device's events and however they interleave, and must not lose an
// enrollment when nanomdm's API or its push fails for a moment.
func TestCompanionEventOrder(t *testing.T) {
	s, n, _ := startCompanion(t, modeEmbedded)
	post := func(body []byte) int {
		t.Helper()
		status, _ := postWebhook(t, s, body, hmacSig(n.hmacKey, body))
		return status
	}
	workflow := fde.RequestInstallProfile + "," + fde.RequestSecurityInfo + "," + fde.RequestUserList
	state := func(id string) string {
		d, _ := deviceState(s, escrow.DeviceID(id))
		return d.Attrs[escrow.AttrEnrollmentState]
	}

	t.Run("TokenUpdate with an UnlockToken before Authenticate", func(t *testing.T) {
		udid := companionUDID()
		at := time.Now()
		unlock := []byte("UNLOCK-" + randHex(8))
		tu := tokenUpdateMsg(n, udid)
		tu["UnlockToken"] = unlock
		authEv := checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, "C02"+randHex(4)), at)
		tuEv := checkinEvent(t, "mdm.TokenUpdate", udid, tu, at.Add(5*time.Millisecond))
		if post(tuEv) != http.StatusOK || post(authEv) != http.StatusOK {
			t.Fatalf("events refused\n%s", s.logs.String())
		}
		if u, err := s.srv.svc.Token(ctx, escrow.System, escrow.DeviceID(udid), escrow.KindUnlockToken); err != nil || !bytes.Equal(u, unlock) {
			t.Fatalf("unlock token: %v", err)
		}
		if got := strings.Join(n.enqueuedFor(udid), ","); got != workflow {
			t.Fatalf("the enrollment workflow was never sent (enqueued %q, state %q): escrowing the UnlockToken created the device record, so Capture.TokenUpdate no longer saw a new device", got, state(udid))
		}
	})

	t.Run("Authenticate after its TokenUpdate", func(t *testing.T) {
		udid := companionUDID()
		at := time.Now()
		authEv := checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, "C02"+randHex(4)), at)
		tuEv := checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), at.Add(5*time.Millisecond))
		if post(tuEv) != http.StatusOK || post(authEv) != http.StatusOK {
			t.Fatalf("events refused\n%s", s.logs.String())
		}
		if got := strings.Join(n.enqueuedFor(udid), ","); got != workflow {
			t.Fatalf("enqueued %q, want %q", got, workflow)
		}
		st := state(udid)
		// The Mac later sends a TokenUpdate (a new push token).
		later := checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), time.Now())
		if post(later) != http.StatusOK {
			t.Fatal("later TokenUpdate refused")
		}
		if got := strings.Join(n.enqueuedFor(udid), ","); got != workflow || st != "enrolled" {
			t.Fatalf("the late Authenticate set enrollment_state back to %q, so a later TokenUpdate ran the enrollment workflow again: enqueued %q", st, got)
		}
	})

	t.Run("results of one Connect processed concurrently", func(t *testing.T) {
		// The Mac answers InstallProfile, then SecurityInfo (FileVault
		// off); nanomdm sends both events at once. Whatever the
		// interleaving, the device must end "FileVault off".
		const devices = 16
		udids := make([]string, devices)
		for i := range udids {
			udids[i] = companionUDID()
			at := time.Now()
			if post(checkinEvent(t, "mdm.Authenticate", udids[i], authenticateMsg(n, "C02"+randHex(4)), at)) != http.StatusOK ||
				post(checkinEvent(t, "mdm.TokenUpdate", udids[i], tokenUpdateMsg(n, udids[i]), at.Add(time.Millisecond))) != http.StatusOK {
				t.Fatalf("enrollment events refused\n%s", s.logs.String())
			}
		}
		var wg sync.WaitGroup
		for _, udid := range udids {
			cmds, err := s.srv.stores.meta.Commands(ctx, escrow.DeviceID(udid), 10)
			if err != nil || len(cmds) != 3 {
				t.Fatalf("commands of %s: %v %v", udid, cmds, err)
			}
			for _, c := range cmds {
				var ev []byte
				switch c.RequestType {
				case fde.RequestInstallProfile:
					ev = connectEvent(t, udid, c.UUID, map[string]any{"Status": "Acknowledged"})
				case fde.RequestSecurityInfo:
					ev = connectEvent(t, udid, c.UUID, map[string]any{"Status": "Acknowledged", "SecurityInfo": map[string]any{
						"FDE_Enabled": false, "FDE_HasPersonalRecoveryKey": false, "FDE_HasInstitutionalRecoveryKey": false}})
				default:
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					status, body := postWebhook(t, s, ev, hmacSig(n.hmacKey, ev))
					if status != http.StatusOK {
						t.Errorf("result event: %d %s", status, body)
					}
				}()
			}
		}
		wg.Wait()
		var wrong []string
		for _, udid := range udids {
			d, _ := deviceState(s, escrow.DeviceID(udid))
			if st := d.Attrs[escrow.AttrEscrowStatus]; st != string(escrow.EscrowFileVaultOff) {
				wrong = append(wrong, st)
			}
		}
		if len(wrong) > 0 {
			t.Fatalf("%d of %d devices ended with escrow status %v, not %q: Capture.installProfile read \"profile-pending\" before the concurrent SecurityInfo wrote \"filevault-off\", then wrote \"awaiting-key\" over it",
				len(wrong), devices, wrong, escrow.EscrowFileVaultOff)
		}
	})

	t.Run("push failure after the enqueue", func(t *testing.T) {
		// nanomdm enqueues, then fails to push (no push certificate for
		// the topic, APNs unreachable): it answers 500 with the command
		// queued. The device gets it at its next check-in anyway.
		udid := companionUDID()
		at := time.Now()
		if post(checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, "C02"+randHex(4)), at)) != http.StatusOK {
			t.Fatal("Authenticate refused")
		}
		n.pusher.down.Store(true)
		status := post(checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), at.Add(time.Millisecond)))
		n.pusher.down.Store(false)
		var sent []string
		n.mu.Lock()
		for _, e := range n.enqueued {
			if e.ID == udid {
				sent = append(sent, e.RequestType)
			}
		}
		n.mu.Unlock()
		if status != http.StatusOK || strings.Join(sent, ",") != workflow {
			t.Fatalf("a push failure was taken for an enqueue failure: the webhook answered %d and only %v reached nanomdm (APIEnqueuer ignores command_uuid in nanomdm's 500 answer)", status, sent)
		}
	})

	t.Run("lost SecurityInfo result", func(t *testing.T) {
		// The Mac answered SecurityInfo at nanomdm, but the event never
		// reached fvescrow (it was restarting; nanomdm sends once, with no
		// retry). fvescrow's scheduler must ask again at some point, not
		// only push forever for an answer that already went by.
		udid := companionUDID()
		id := escrow.DeviceID(udid)
		at := time.Now()
		if post(checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, "C02"+randHex(4)), at)) != http.StatusOK ||
			post(checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), at.Add(time.Millisecond))) != http.StatusOK {
			t.Fatalf("enrollment events refused\n%s", s.logs.String())
		}
		var j escrow.Job
		for round := 0; round < 6; round++ {
			var err error
			if j, err = s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, id); err != nil {
				t.Fatal(err)
			}
			j.RunAt = time.Now().Add(-time.Second)
			if err := s.srv.stores.meta.UpdateJob(ctx, j); err != nil {
				t.Fatal(err)
			}
			if _, err := s.srv.capture.RunDue(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got := n.enqueuedFor(udid)
		if strings.Count(strings.Join(got, ","), fde.RequestSecurityInfo) < 2 {
			j, _ = s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, id)
			t.Fatalf("6 due checks later fvescrow has only pushed (%d pushes, job step %q, attempts %d) and never sent SecurityInfo again: runCheck waits for an answer to the last command forever, and in companion mode that answer can be lost; enqueued: %v",
				n.pusher.count(udid), j.Step, j.Attempts, got)
		}
	})

	t.Run("nanomdm API outage during enrollment", func(t *testing.T) {
		udid := companionUDID()
		id := escrow.DeviceID(udid)
		at := time.Now()
		if post(checkinEvent(t, "mdm.Authenticate", udid, authenticateMsg(n, "C02"+randHex(4)), at)) != http.StatusOK {
			t.Fatal("Authenticate refused")
		}
		tuEv := checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), at.Add(time.Millisecond))
		n.apiDown.Store(true)
		status := post(tuEv)
		n.apiDown.Store(false)
		if status < 500 {
			t.Fatalf("TokenUpdate while nanomdm's API is down: %d, want a 5xx", status)
		}
		// nanomdm is back. Whatever comes next (the same event again, a
		// new TokenUpdate, or fvescrow's own scheduler) must get the
		// escrow profile to the device.
		redelivered := post(tuEv)
		post(checkinEvent(t, "mdm.TokenUpdate", udid, tokenUpdateMsg(n, udid), time.Now()))
		if j, err := s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, id); err == nil {
			j.RunAt = time.Now().Add(-time.Second)
			if err := s.srv.stores.meta.UpdateJob(ctx, j); err != nil {
				t.Fatal(err)
			}
			if _, err := s.srv.capture.RunDue(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got := n.enqueuedFor(udid)
		if !strings.Contains(strings.Join(got, ","), fde.RequestInstallProfile) {
			_, jobErr := s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, id)
			t.Fatalf("after a failed enqueue the enrollment is lost: redelivery answered %d (the event was marked seen before it failed), enrollment_state is %q (set before the commands were sent), no escrow-check job (%v); enqueued since: %v",
				redelivered, state(udid), jobErr, got)
		}
	})
}
