package siem_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/siem"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
)

func tlsReceiver(t *testing.T, pki testPKI) *receiver {
	return startReceiver(t, &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
}

func syslogSink(t *testing.T, pki testPKI, addr string) *siem.Syslog {
	t.Helper()
	s, err := siem.NewSyslog(siem.SyslogConfig{Addr: addr, Facility: 10, Hostname: "escrow-1.example.com",
		TLS: &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stepAll runs Step until the log is forwarded, failing on any error.
func stepAll(t *testing.T, f *siem.Forwarder) {
	t.Helper()
	for range 1000 {
		n, err := f.Step(ctx)
		if err != nil {
			t.Fatalf("Step: %v", err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("Step never caught up")
}

// TestSyslogTLS forwards records over mutual TLS and checks every field a
// SIEM parses.
func TestSyslogTLS(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	rcv := tlsReceiver(t, pki)
	st := openSQLite(t)
	recs := appendRecords(t, st, 12, 0)
	f := siem.NewForwarder("syslog", st, st, syslogSink(t, pki, rcv.addr), encode, siem.WithBatch(5))
	stepAll(t, f)
	if cur, err := f.Cursor(ctx); err != nil || cur != 12 {
		t.Fatalf("cursor %d, %v", cur, err)
	}
	msgs := rcv.messages()
	if len(msgs) != len(recs) {
		t.Fatalf("%d messages, want %d", len(msgs), len(recs))
	}
	for i, m := range msgs {
		r := recs[i]
		wantPRI := 10*8 + map[string]int{escrow.ActionKeyEscrowed: 6, escrow.ActionKeyRevealed: 5, escrow.ActionRevealRefused: 4, "login.succeeded": 6, escrow.ActionExportCreated: 4}[r.Action]
		if m.pri != wantPRI || m.version != 1 || !m.timestamp.Equal(r.Time) || m.hostname != "escrow-1.example.com" ||
			m.appName != "fvescrow" || m.procID != "-" || m.msgID != r.Action {
			t.Errorf("record %d: header pri=%d version=%d time=%v host=%q app=%q proc=%q msgid=%q", r.Seq, m.pri, m.version, m.timestamp, m.hostname, m.appName, m.procID, m.msgID)
		}
		sd := m.sd["fvescrow@32473"]
		if len(m.sd) != 1 || sd["seq"] != fmt.Sprint(r.Seq) || sd["hash"] != r.Hash || sd["prev"] != r.PrevHash {
			t.Errorf("record %d: structured data %v", r.Seq, m.sd)
		}
		var got testRecord
		if err := json.Unmarshal(m.msg, &got); err != nil {
			t.Fatalf("record %d: MSG is not JSON: %v\n%s", r.Seq, err, m.msg)
		}
		if got.Seq != r.Seq || got.Reason != r.Reason || got.Name != "Zoë \"Help\" Desk" || got.Hash != r.Hash || !got.Time.Equal(r.Time) {
			t.Errorf("record %d: MSG %+v", r.Seq, got)
		}
	}
	checkNoGap(t, rcv.seqs(), 12)
	if len(rcv.peers) == 0 || rcv.peers[0] != "fvescrow.example.com" {
		t.Errorf("client certificates seen: %v", rcv.peers)
	}
}

// TestSyslogReceiverRestart: the SIEM dies in the middle of a batch and
// comes back. The batch is not confirmed, the cursor stays, and a new
// forwarder (a restarted server) resends from the cursor: every record
// arrives, in order, none missing; some twice.
func TestSyslogReceiverRestart(t *testing.T) {
	for _, mode := range []string{"tls", "tcp"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			pki := newPKI(t)
			var rcv *receiver
			var sink *siem.Syslog
			if mode == "tls" {
				rcv = tlsReceiver(t, pki)
				sink = syslogSink(t, pki, rcv.addr)
			} else {
				rcv = startReceiver(t, nil)
				var err error
				if sink, err = siem.NewSyslog(siem.SyslogConfig{Addr: rcv.addr, Facility: 13, Hostname: "h"}); err != nil {
					t.Fatal(err)
				}
			}
			st := openSQLite(t)
			appendRecords(t, st, 300, 1500) // a batch is far more than any buffer on the way
			f := siem.NewForwarder("syslog", st, st, sink, encode, siem.WithBatch(100))
			if n, err := f.Step(ctx); n != 100 || err != nil {
				t.Fatalf("first batch: %d, %v", n, err)
			}
			rcv.mu.Lock()
			rcv.cutAfter = 30
			rcv.mu.Unlock()
			if n, err := f.Step(ctx); err == nil || n != 0 {
				t.Fatalf("a batch the receiver died in the middle of was confirmed: %d, %v", n, err)
			} else if !strings.Contains(err.Error(), "records 101-200") { // whichever step noticed
				t.Errorf("error %v", err)
			}
			if cur, _ := f.Cursor(ctx); cur != 100 {
				t.Fatalf("cursor %d after the failed batch, want 100", cur)
			}
			if _, err := f.Step(ctx); err == nil {
				t.Fatal("a send to a receiver that is down succeeded")
			}
			rcv.listen()
			f2 := siem.NewForwarder("syslog", st, st, sink, encode, siem.WithBatch(100))
			stepAll(t, f2)
			sessions := rcv.seqs()
			checkNoGap(t, sessions, 300)
			if len(sessions) != 4 || len(sessions[1]) != 30 || sessions[1][0] != 101 || sessions[2][0] != 101 {
				t.Errorf("connections: %v; want the second cut after 30 records from 101 and the third to resume at 101", sessions)
			}
			appendRecords(t, st, 3, 0)
			stepAll(t, f2)
			if s := rcv.seqs(); len(s) != 5 || fmt.Sprint(s[4]) != "[301 302 303]" {
				t.Errorf("new records after catching up: %v", s[len(s)-1])
			}
		})
	}
}

// TestForwarderRun: the loop forwards records as they are appended, rides
// out a receiver outage with backoff, logs the lag, and stops on cancel.
func TestForwarderRun(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	rcv := tlsReceiver(t, pki)
	st := openSQLite(t)
	appendRecords(t, st, 150, 1500)
	var logs syncBuffer
	f := siem.NewForwarder("syslog", st, st, syslogSink(t, pki, rcv.addr), encode, siem.WithBatch(100),
		siem.WithInterval(10*time.Millisecond), siem.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		siem.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	rcv.mu.Lock()
	rcv.cutAfter = 40
	rcv.mu.Unlock()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.Run(runCtx); close(done) }()
	waitFrames(t, rcv, 40)
	appendRecords(t, st, 50, 0) // written while the SIEM is down
	rcv.listen()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(logs.String(), "lag.records=0") { // caught up, and said so
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("not caught up; log:\n%s", logs.String())
		}
	}
	cancel()
	<-done
	checkNoGap(t, rcv.seqs(), 200)
	log := logs.String()
	for _, want := range []string{"level=WARN msg=\"SIEM forwarding failed; retrying from the cursor\"", "lag.records=", "msg=\"SIEM forwarding resumed\"", "lag.records=0"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func waitFrames(t *testing.T, rcv *receiver, n int) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for range n {
		select {
		case <-rcv.frames:
		case <-timeout:
			t.Fatal("frames did not arrive")
		}
	}
}

// TestSyslogUntrusted: a receiver whose certificate is not trusted gets
// nothing, and a receiver requiring a client certificate refuses a sender
// without one.
func TestSyslogUntrusted(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	rcv := tlsReceiver(t, pki)
	st := openSQLite(t)
	appendRecords(t, st, 2, 0)
	other := newPKI(t)
	for name, conf := range map[string]*tls.Config{
		"untrusted server":      {RootCAs: other.pool, Certificates: []tls.Certificate{pki.client}},
		"no client certificate": {RootCAs: pki.pool},
	} {
		sink, err := siem.NewSyslog(siem.SyslogConfig{Addr: rcv.addr, Facility: 4, Hostname: "h", TLS: conf})
		if err != nil {
			t.Fatal(err)
		}
		f := siem.NewForwarder("syslog", st, st, sink, encode)
		if _, err := f.Step(ctx); err == nil {
			t.Errorf("%s: sent", name)
		}
	}
	if cur, _ := siem.NewForwarder("syslog", st, st, syslogSink(t, pki, rcv.addr), encode).Cursor(ctx); cur != 0 {
		t.Errorf("cursor moved to %d", cur)
	}
	if n := len(rcv.messages()); n != 0 {
		t.Errorf("%d messages got through", n)
	}
}

// TestCursorPersists on both stores: the cursor is a setting that survives
// a new forwarder, and each sink has its own.
func TestCursorPersists(t *testing.T) {
	for name, open := range map[string]func(*testing.T) *sqlstore.Store{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rcv := startReceiver(t, nil)
			st := open(t)
			appendRecords(t, st, 7, 0)
			sink, _ := siem.NewSyslog(siem.SyslogConfig{Addr: rcv.addr, Facility: 4, Hostname: "h"})
			stepAll(t, siem.NewForwarder("a", st, st, sink, encode, siem.WithBatch(3)))
			if cur, _ := siem.NewForwarder("a", st, st, sink, encode).Cursor(ctx); cur != 7 {
				t.Errorf("cursor a = %d", cur)
			}
			if cur, _ := siem.NewForwarder("b", st, st, sink, encode).Cursor(ctx); cur != 0 {
				t.Errorf("cursor b = %d", cur)
			}
			checkNoGap(t, rcv.seqs(), 7)
		})
	}
}

func TestMessageFields(t *testing.T) {
	t.Parallel()
	s, err := siem.NewSyslog(siem.SyslogConfig{Addr: "h:6514", Facility: 23, Hostname: "bad host\nname"})
	if err != nil {
		t.Fatal(err)
	}
	r := escrow.AuditRecord{Seq: 9, Event: escrow.Event{Time: time.Date(2026, 3, 4, 5, 6, 7, 120000000, time.UTC), Action: "a very long action name that exceeds thirty-two"},
		Hash: `h"a]sh\`, PrevHash: "p"}
	msg := s.Message(siem.Entry{Record: r, JSON: []byte(`{"reason":"é 🔑"}`)})
	m, err := parseRFC5424(msg)
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if m.pri != 23*8+6 || m.hostname != "badhostname" || len(m.msgID) != 32 || m.sd[siem.SDID]["hash"] != `h"a]sh\` ||
		!bytes.HasPrefix(msg, []byte("<190>1 2026-03-04T05:06:07.12Z ")) {
		t.Errorf("%s", msg)
	}
	var v map[string]string
	if err := json.Unmarshal(m.msg, &v); err != nil || v["reason"] != "é 🔑" {
		t.Errorf("MSG %s: %v %v", m.msg, v, err)
	}
}

func TestParseFacility(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]siem.Facility{"auth": 4, "AUTHPRIV": 10, "local7": 23, "13": 13, "0": 0} {
		if got, err := siem.ParseFacility(in); err != nil || got != want {
			t.Errorf("ParseFacility(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "24", "-1", "security"} {
		if _, err := siem.ParseFacility(in); err == nil {
			t.Errorf("ParseFacility(%q) accepted", in)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
