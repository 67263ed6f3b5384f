package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/api/mdm"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/micromdm/nanomdm/service/certauth"
	"github.com/micromdm/nanomdm/storage/diskv"
)

// mdmbVersion is the mdmb release scripts/prereqs.sh builds.
const mdmbVersion = "v0.1.0"

// mdmbBinary returns mdmb: $FVESCROW_MDMB_BIN, else
// $FVESCROW_CACHE (default ~/.cache/fvescrow)/mdmb-<mdmbVersion>. When it is
// missing the test skips, or fails under FVESCROW_INTEGRATION=1.
func mdmbBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("FVESCROW_MDMB_BIN")
	if p == "" {
		cache := os.Getenv("FVESCROW_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				testutil.Need(t, "mdmb", err)
			}
			cache = filepath.Join(home, ".cache", "fvescrow")
		}
		p = filepath.Join(cache, "mdmb-"+mdmbVersion)
	}
	fi, err := os.Stat(p)
	if err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
		err = fmt.Errorf("%s is not an executable file", p)
	}
	if err != nil {
		err = fmt.Errorf("%w (build it with ./scripts/prereqs.sh, or set FVESCROW_MDMB_BIN)", err)
	}
	testutil.Need(t, "mdmb", err)
	return p
}

// mdmbRunner runs mdmb against one database, trusting the test server's TLS
// certificate through SSL_CERT_FILE (mdmb uses the system roots).
type mdmbRunner struct {
	t          *testing.T
	bin, db    string
	env        []string
	transcript bytes.Buffer
}

// run runs mdmb with args and returns stdout and stderr. mdmb exits 0 on
// per-device failures, so callers check the output and the server; a
// non-zero exit (bad arguments, database errors) fails the test here.
func (m *mdmbRunner) run(args ...string) (stdout, stderr string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.bin, append([]string{"-db", m.db}, args...)...)
	cmd.Dir = filepath.Dir(m.db)
	cmd.Env = m.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	fmt.Fprintf(&m.transcript, "$ mdmb %s (%s, %v)\n--- stdout\n%s--- stderr\n%s\n", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, out.String(), errb.String())
	if err != nil {
		m.t.Fatalf("mdmb %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String()
}

// preallocate works around a use-after-unmap in mdmb v0.1.0 that crashes
// devices-connect with SIGSEGV in most runs ("unexpected fault address" in
// pkcs7.marshalCertificates from MDMClient.mdmP7Sign). mdmb keeps the
// identity certificate parsed from bbolt's memory map (BucketGet returns
// the mapped bytes, x509.ParseCertificate does not copy them); when
// handling InstallProfile writes enough to grow the file, bbolt remaps and
// the next signature reads unmapped memory. bbolt maps at least the file
// size when it opens the database, so a file grown in advance (sparse) is
// never remapped while mdmb runs. mdmb uses about 18 KiB per device.
func (m *mdmbRunner) preallocate(devices int) {
	m.t.Helper()
	size := max(int64(8<<20), int64(devices)*64<<10)
	if err := os.Truncate(m.db, size); err != nil {
		m.t.Fatal(err)
	}
}

var (
	mdmbUDIDRE      = regexp.MustCompile(`(?m)^([0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})$`)
	mdmbStartRE     = regexp.MustCompile(`(?m)^starting (\d+) workers for (\d+) iterations of (\d+) devices \((\d+) connects\)$`)
	mdmbTotalRE     = regexp.MustCompile(`(?m)^Total MDM connects\s+(\d+) `)
	mdmbErrorsRE    = regexp.MustCompile(`(?m)^Errors\s+(\d+) `)
	mdmbUnhandledRE = regexp.MustCompile(`(?m)^MDM command not handled: (\S+) UUID (\S+)$`)
	accessLogRE     = regexp.MustCompile(`(?m)msg="http request".* method=(\S+) path=(\S+) status=(\d+) `)
)

// mdmbConnectSummary is what one devices-connect round reports.
type mdmbConnectSummary struct {
	devices, connects, errors int
	unhandled                 map[string]string // CommandUUID → RequestType answered "Unknown command"
}

func parseConnect(t *testing.T, stdout string) mdmbConnectSummary {
	t.Helper()
	start, total, errs := mdmbStartRE.FindStringSubmatch(stdout), mdmbTotalRE.FindStringSubmatch(stdout), mdmbErrorsRE.FindStringSubmatch(stdout)
	if start == nil || total == nil || errs == nil {
		t.Fatalf("devices-connect printed no summary")
	}
	s := mdmbConnectSummary{unhandled: map[string]string{}}
	s.devices, _ = strconv.Atoi(start[3])
	s.connects, _ = strconv.Atoi(total[1])
	s.errors, _ = strconv.Atoi(errs[1])
	for _, m := range mdmbUnhandledRE.FindAllStringSubmatch(stdout, -1) {
		s.unhandled[m[2]] = m[1]
	}
	return s
}

// parseProfilesList maps each device UDID to its installed profile
// identifiers (devices-profiles-list).
func parseProfilesList(stdout string) map[string][]string {
	out := map[string][]string{}
	var cur string
	for line := range strings.Lines(stdout) {
		line = strings.TrimSpace(line)
		if u, ok := strings.CutPrefix(line, "profiles for UUID: "); ok {
			cur = u
			out[cur] = []string{}
			continue
		}
		if cur != "" && line != "" {
			out[cur] = append(out[cur], line)
		}
	}
	return out
}

// deviceRequests counts the server's device-endpoint requests by path and
// status, from its access log.
func deviceRequests(log string) map[string]map[int]int {
	out := map[string]map[int]int{}
	for _, m := range accessLogRE.FindAllStringSubmatch(log, -1) {
		path := m[2]
		if path != "/mdm" && path != "/checkin" && path != "/scep" {
			continue
		}
		st, _ := strconv.Atoi(m[3])
		if out[path] == nil {
			out[path] = map[int]int{}
		}
		out[path][st]++
	}
	return out
}

// certsInFile returns the distinct X.509 certificates stored as raw DER in
// a file. mdmb keeps keychain certificates as DER values in its bbolt
// database; bbolt stores values unencoded and copy-on-write may leave stale
// copies, hence the de-duplication.
func certsInFile(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []*x509.Certificate
	for i := 0; i+4 <= len(b); i++ {
		if b[i] != 0x30 || b[i+1] != 0x82 {
			continue
		}
		n := 4 + (int(b[i+2])<<8 | int(b[i+3]))
		if i+n > len(b) {
			continue
		}
		c, err := x509.ParseCertificate(b[i : i+n])
		if err != nil || seen[string(c.Raw)] {
			continue
		}
		seen[string(c.Raw)] = true
		out = append(out, c)
	}
	return out
}

// TestMDMBFleet drives the embedded MDM with mdmb, an independent device
// simulator: a fleet enrolls through the enrollment profile (SCEP, then
// Authenticate and TokenUpdate at the CheckInURL), gets the escrow profile,
// SecurityInfo and UserList, and answers the latter two "Unknown command"
// (error 12021), which fvescrow must tolerate. mdmb exits 0 on errors, so the
// proof is on the server side. It runs on both storage modes: the embedded
// default (nanomdm's file storage, SQLite, age) and production (nanomdm's
// tables and fvescrow's metadata in PostgreSQL, secrets in Vault).
// FVESCROW_MDMB_DEVICES sets the fleet size.
func TestMDMBFleet(t *testing.T) {
	bin := mdmbBinary(t)
	n := 5
	if v := os.Getenv("FVESCROW_MDMB_DEVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("FVESCROW_MDMB_DEVICES=%q: want a positive number", v)
		}
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { testMDMBFleet(t, bin, mode, n) })
	}
}

func testMDMBFleet(t *testing.T, bin, mode string, n int) {
	began := time.Now()
	s := startServer(t, mode)
	dir := t.TempDir()
	profileFile := filepath.Join(dir, "enroll.mobileconfig")
	writeFile(t, profileFile, string(s.enrollmentProfile()))
	caFile := filepath.Join(dir, "server-ca.pem")
	writeFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})))
	m := &mdmbRunner{t: t, bin: bin, db: filepath.Join(dir, "mdmb.db"),
		env: append(os.Environ(), "SSL_CERT_FILE="+caFile, "SSL_CERT_DIR=/nonexistent")}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- mdmb transcript\n%s", m.transcript.String())
			t.Logf("--- server log\n%s", s.logs.String())
		}
	})

	// Create and enroll the fleet.
	out, _ := m.run("devices-create", "-n", strconv.Itoa(n))
	m.preallocate(n)
	created := mdmbUDIDRE.FindAllString(out, -1)
	out, _ = m.run("devices-list")
	udids := mdmbUDIDRE.FindAllString(out, -1)
	slices.Sort(udids)
	if len(udids) != n || !sameSet(udids, created) {
		t.Fatalf("mdmb lists %d devices %v, created %v", len(udids), udids, created)
	}
	m.run("-uuids", "all", "devices-profiles-install", "-f", profileFile)
	enrolled := time.Now()
	out, _ = m.run("-uuids", "all", "devices-profiles-list")
	for u, ids := range parseProfilesList(out) {
		if !slices.Contains(udids, u) || !slices.Contains(ids, fde.DefaultEnrollmentIdentifier) {
			t.Errorf("device %s: installed profiles %v, want %s (enrollment failed)", u, ids, fde.DefaultEnrollmentIdentifier)
		}
	}
	if len(parseProfilesList(out)) != n {
		t.Fatalf("profiles listed for %d devices, want %d", len(parseProfilesList(out)), n)
	}

	// Server side: every device authenticated and got the enrollment
	// commands, recorded before they were queued.
	devs, err := s.srv.svc.FindDevices(ctx, escrow.DeviceQuery{Limit: n + 10})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range devs {
		ids = append(ids, string(d.ID))
	}
	if !sameSet(ids, udids) {
		t.Fatalf("server devices %v, mdmb devices %v", ids, udids)
	}
	for _, d := range devs {
		if d.UDID != string(d.ID) || d.Serial == "" || d.Hostname != d.Serial+"'s Computer" || d.Platform != "macOS" ||
			d.Attrs[escrow.AttrEnrollmentState] != "enrolled" || d.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowProfilePending) {
			t.Errorf("device after enrollment: %+v", d)
		}
		cmds := commandsOf(t, s, d.ID)
		if got := requestTypes(cmds); got != "InstallProfile,SecurityInfo,UserList" {
			t.Errorf("device %s: enrollment commands %s", d.ID, got)
		}
		for _, c := range cmds {
			if c.Purpose != mdm.PurposeEnrollment || c.Status != "" {
				t.Errorf("device %s: command %+v before connecting", d.ID, c)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every device has its own identity: the certificates mdmb holds chain
	// to fvescrow's SCEP CA, name the device, and are the ones nanomdm's
	// certauth tied to each enrollment.
	caPEM, err := s.srv.stores.meta.Setting(ctx, mdm.SettingSCEPCACert)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := fde.ParseCertificatesPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	// nanomdm's own storage as the server opened it: its files in the data
	// folder, or its schema in PostgreSQL.
	nano, _, closeNano, err := openNanoStorage(ctx, &s.cfg.stores, s.srv.stores, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeNano()
	if _, isFiles := nano.(*diskv.Diskv); isFiles != (mode == modeEmbedded) {
		t.Fatalf("%s: nanomdm storage is %T", mode, nano)
	}
	subjects := map[string]bool{}
	for _, c := range certsInFile(t, m.db) {
		if c.CheckSignatureFrom(cas[0]) != nil {
			continue
		}
		subjects[c.Subject.String()] = true
		enr, err := nano.EnrollmentFromHash(ctx, certauth.HashCert(c))
		if err != nil || c.Subject.CommonName != "fvescrow "+enr || !slices.Contains(udids, enr) {
			t.Errorf("device certificate %q (serial %x) is associated with enrollment %q (%v)", c.Subject, c.SerialNumber, enr, err)
		}
		if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || c.IsCA {
			t.Errorf("device certificate %q: ext key usage %v, CA %v", c.Subject, c.ExtKeyUsage, c.IsCA)
		}
	}
	if len(subjects) != n {
		t.Errorf("%d distinct device certificate subjects in mdmb's keychain, want %d: %v", len(subjects), n, subjects)
	}

	// First connect: each device takes InstallProfile (installed and
	// acknowledged), then SecurityInfo and UserList, which mdmb does not
	// know and answers Error 12021.
	out, _ = m.run("-uuids", "all", "devices-connect", "-w", "1")
	connected := time.Now()
	sum := parseConnect(t, out)
	if sum.devices != n || sum.connects != n || sum.errors != 0 {
		t.Fatalf("devices-connect: %d devices, %d connects, %d errors; want %d, %d, 0", sum.devices, sum.connects, sum.errors, n, n)
	}
	wantUnhandled := map[string]string{}
	for _, d := range devs {
		cmds := commandsOf(t, s, d.ID)
		for _, c := range cmds {
			if c.RequestType != fde.RequestInstallProfile {
				wantUnhandled[c.UUID] = c.RequestType
			}
			if c.AnsweredAt.IsZero() || c.AnsweredAt.Before(enrolled) {
				t.Errorf("device %s: %s answered at %v", d.ID, c.RequestType, c.AnsweredAt)
			}
			switch c.RequestType {
			case fde.RequestInstallProfile:
				if c.Status != fde.StatusAcknowledged || c.Error != "" {
					t.Errorf("device %s: InstallProfile %q %q", d.ID, c.Status, c.Error)
				}
			default:
				if c.Status != fde.StatusError || !strings.Contains(c.Error, "MCMDMErrorDomain 12021") || !strings.Contains(c.Error, "Unknown command: "+c.RequestType) {
					t.Errorf("device %s: %s %q %q, want Error 12021", d.ID, c.RequestType, c.Status, c.Error)
				}
			}
		}
		got, err := s.srv.svc.Device(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attrs[escrow.AttrProfileInstalled] == "" || got.Attrs[escrow.AttrProfileError] != "" ||
			got.Attrs[escrow.AttrEscrowStatus] != string(escrow.EscrowAwaitingKey) {
			t.Errorf("device %s after the escrow profile: %v", d.ID, got.Attrs)
		}
		if e := got.Attrs[escrow.AttrSecurityInfoError]; !strings.Contains(e, "12021") || !strings.Contains(e, "Unknown command: SecurityInfo") {
			t.Errorf("device %s: %s = %q", d.ID, escrow.AttrSecurityInfoError, e)
		}
		if got.Attrs[escrow.AttrSecurityInfoAt] != "" || got.Attrs[escrow.AttrUserListAt] != "" || got.Attrs[escrow.AttrFDEEnabled] != "" {
			t.Errorf("device %s: an error answer was taken for data: %v", d.ID, got.Attrs)
		}
		// The escrow check stays open, retried after the first backoff step.
		j, err := s.srv.stores.meta.OpenJob(ctx, mdm.JobEscrowCheck, d.ID)
		if err != nil || j.State != escrow.JobPending || j.Step != "answered" || j.Attempts != 1 ||
			j.RunAt.Before(enrolled.Add(time.Minute)) || j.RunAt.After(connected.Add(time.Hour)) {
			t.Errorf("device %s: escrow check %+v %v, want pending with backoff", d.ID, j, err)
		}
	}
	if !maps.Equal(sum.unhandled, wantUnhandled) {
		t.Errorf("mdmb answered Unknown command to %v, server sent %v", sum.unhandled, wantUnhandled)
	}
	// mdmb installed the escrow profile.
	out, _ = m.run("-uuids", "all", "devices-profiles-list")
	for u, ids := range parseProfilesList(out) {
		if !slices.Contains(ids, fde.DefaultFileVaultIdentifier) {
			t.Errorf("device %s: installed profiles %v, want %s", u, ids, fde.DefaultFileVaultIdentifier)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Second connect: the queue is empty and nothing is due, so nothing is
	// sent again.
	if ran, err := s.srv.capture.RunDue(ctx); err != nil || ran != 0 {
		t.Fatalf("RunDue right after the answers: %d %v", ran, err)
	}
	out, _ = m.run("-uuids", "all", "devices-connect", "-w", "1")
	sum = parseConnect(t, out)
	if sum.devices != n || sum.connects != n || sum.errors != 0 || len(sum.unhandled) != 0 {
		t.Fatalf("second devices-connect: %d devices, %d connects, %d errors, commands %v", sum.devices, sum.connects, sum.errors, sum.unhandled)
	}
	for _, d := range devs {
		if cmds := commandsOf(t, s, d.ID); len(cmds) != 3 {
			t.Errorf("device %s: %d commands after an idle connect, want 3", d.ID, len(cmds))
		}
	}

	// The server answered every device request 200: two check-ins per
	// device, an Idle plus three results, then one Idle; SCEP never failed.
	serverLog := s.logs.String()
	reqs := deviceRequests(serverLog)
	want := map[string]map[int]int{"/checkin": {200: 2 * n}, "/mdm": {200: 5 * n}}
	for path, byStatus := range want {
		if !maps.Equal(reqs[path], byStatus) {
			t.Errorf("%s requests by status %v, want %v", path, reqs[path], byStatus)
		}
	}
	if len(reqs["/scep"]) != 1 || reqs["/scep"][200] < 2*n {
		t.Errorf("/scep requests by status %v, want only 200s, at least 2 per device", reqs["/scep"])
	}
	for _, bad := range []string{"level=ERROR", "panic", "ignored a result for a command fvescrow did not send"} {
		if strings.Contains(serverLog, bad) {
			t.Errorf("server log has %q", bad)
		}
	}
	if s.apns.count() < n {
		t.Errorf("%d pushes for %d enrollments", s.apns.count(), n)
	}
	t.Logf("%d mdmb devices: enrolled in %s, first connect %s, total %s", n,
		enrolled.Sub(began).Round(time.Millisecond), connected.Sub(enrolled).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

func commandsOf(t *testing.T, s *testServer, id escrow.DeviceID) []escrow.Command {
	t.Helper()
	cmds, err := s.srv.stores.meta.Commands(ctx, id, 50)
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

// requestTypes lists the commands' request types, sorted.
func requestTypes(cmds []escrow.Command) string {
	var rt []string
	for _, c := range cmds {
		rt = append(rt, c.RequestType)
	}
	slices.Sort(rt)
	return strings.Join(rt, ",")
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
