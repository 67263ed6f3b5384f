package siem_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
)

var ctx = context.Background()

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, both issued by it.
type testPKI struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "siem test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{pool: pool, server: issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth), client: issue(3, "fvescrow.example.com", x509.ExtKeyUsageClientAuth)}
}

// receiver is a syslog receiver on a real TCP (or TLS) listener. It reads
// octet-counted frames, parses each strictly, and keeps them per
// connection. It can be told to die in the middle of a connection, the way
// a SIEM restart looks to a sender, and be restarted on the same address.
type receiver struct {
	t       *testing.T
	tlsConf *tls.Config
	addr    string
	wg      sync.WaitGroup

	mu       sync.Mutex
	ln       net.Listener
	sessions [][]syslogMsg
	peers    []string // client certificate CNs
	cutAfter int      // >0: the next connection stops reading after this many frames, and the listener closes
	frames   chan struct{}
}

func startReceiver(t *testing.T, tlsConf *tls.Config) *receiver {
	t.Helper()
	r := &receiver{t: t, tlsConf: tlsConf, addr: "127.0.0.1:0", frames: make(chan struct{}, 1<<16)}
	r.listen()
	t.Cleanup(func() {
		r.stop()
		r.wg.Wait()
	})
	return r
}

func (r *receiver) listen() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for range 100 { // the old socket may linger a moment after a restart
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.ln, r.addr = ln, ln.Addr().String()
	r.mu.Unlock()
	r.wg.Go(func() { r.serve(ln) })
}

func (r *receiver) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
}

func (r *receiver) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		idx := len(r.sessions)
		r.sessions = append(r.sessions, nil)
		cut := r.cutAfter
		r.cutAfter = 0
		r.mu.Unlock()
		r.wg.Go(func() { r.handle(c, idx, cut) })
	}
}

func (r *receiver) handle(c net.Conn, idx, cut int) {
	defer c.Close()
	if r.tlsConf != nil {
		tc := tls.Server(c, r.tlsConf)
		if err := tc.Handshake(); err != nil {
			return
		}
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			r.mu.Lock()
			r.peers = append(r.peers, certs[0].Subject.CommonName)
			r.mu.Unlock()
		}
		c = tc
		defer c.Close() // close_notify, then the TCP close
	}
	br := bufio.NewReader(c)
	for n := 1; ; n++ {
		frame, err := readFrame(br)
		if errors.Is(err, io.EOF) {
			return // the sender closed: closing now confirms
		}
		if err != nil {
			r.t.Errorf("receiver: %v", err)
			return
		}
		m, err := parseRFC5424(frame)
		if err != nil {
			r.t.Errorf("receiver: not RFC 5424: %v\n%q", err, frame)
			return
		}
		r.mu.Lock()
		r.sessions[idx] = append(r.sessions[idx], m)
		r.mu.Unlock()
		r.frames <- struct{}{}
		if n == cut {
			r.stop() // the SIEM goes down with data unread
			return
		}
	}
}

// seqs lists the record numbers each connection delivered.
func (r *receiver) seqs() [][]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]int64
	for _, s := range r.sessions {
		var seqs []int64
		for _, m := range s {
			var n int64
			fmt.Sscan(m.sd["fvescrow@32473"]["seq"], &n)
			seqs = append(seqs, n)
		}
		out = append(out, seqs)
	}
	return out
}

func (r *receiver) messages() []syslogMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []syslogMsg
	for _, s := range r.sessions {
		out = append(out, s...)
	}
	return out
}

// checkNoGap checks what a SIEM needs: each connection carries consecutive
// records, and together they cover 1..last.
func checkNoGap(t *testing.T, sessions [][]int64, last int64) {
	t.Helper()
	seen := map[int64]bool{}
	for i, s := range sessions {
		for j, seq := range s {
			if j > 0 && seq != s[j-1]+1 {
				t.Errorf("connection %d: record %d follows %d", i, seq, s[j-1])
			}
			seen[seq] = true
		}
	}
	for seq := int64(1); seq <= last; seq++ {
		if !seen[seq] {
			t.Errorf("record %d never arrived", seq)
		}
	}
	if int64(len(seen)) != last {
		t.Errorf("%d distinct records arrived, want %d", len(seen), last)
	}
}

func openSQLite(t *testing.T) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "fvescrow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t *testing.T) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.OpenPostgres(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var actions = []string{escrow.ActionKeyEscrowed, escrow.ActionKeyRevealed, escrow.ActionRevealRefused, "login.succeeded", escrow.ActionExportCreated}

// appendRecords appends n audit records; padding makes each one longer.
func appendRecords(t *testing.T, s *sqlstore.Store, n, padding int) []escrow.AuditRecord {
	t.Helper()
	var out []escrow.AuditRecord
	for i := range n {
		r, err := s.AppendAudit(ctx, escrow.Event{Time: time.Now(), Actor: escrow.Actor{Kind: escrow.ActorUser, ID: "helpdesk@example.com", Name: "Zoë \"Help\" Desk"},
			Action: actions[i%len(actions)], Device: escrow.DeviceID(fmt.Sprint("D-", i)),
			Reason: "user locked out ] \\ \" 🔑 " + strings.Repeat("x", padding), Ticket: fmt.Sprint("IT-", i), Detail: map[string]string{"n": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// testRecord is the JSON the tests encode records as; the server uses the
// API's format instead (see cmd/fvescrow).
type testRecord struct {
	Seq    int64             `json:"seq"`
	Time   time.Time         `json:"time"`
	Actor  string            `json:"actor"`
	Name   string            `json:"actor_name"`
	Action string            `json:"action"`
	Reason string            `json:"reason"`
	Detail map[string]string `json:"detail"`
	Hash   string            `json:"hash"`
}

func encode(r escrow.AuditRecord) ([]byte, error) {
	return json.Marshal(testRecord{Seq: r.Seq, Time: r.Time, Actor: r.Actor.ID, Name: r.Actor.Name, Action: r.Action, Reason: r.Reason, Detail: r.Detail, Hash: r.Hash})
}
