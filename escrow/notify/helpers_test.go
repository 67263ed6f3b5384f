package notify_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/sqlstore"
	"github.com/fvescrow/fvescrow/internal/testutil/pgtest"
)

var ctx = context.Background()

// testPKI is a CA and a server certificate for 127.0.0.1 it issued.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "notify test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{pool: pool, server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// clock is a fake clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock starts a little ahead of the store's real clock, so what the
// store just queued is due.
func newClock() *clock { return &clock{t: time.Now().Add(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// backends are the real stores the dispatcher runs on.
var backends = []struct {
	name string
	open func(t *testing.T) *sqlstore.Store
}{
	{"sqlite", func(t *testing.T) *sqlstore.Store {
		s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "fvescrow.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"postgres", func(t *testing.T) *sqlstore.Store {
		s, err := sqlstore.OpenPostgres(ctx, pgtest.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

func sqlite(t *testing.T) *sqlstore.Store { return backends[0].open(t) }

func enqueue(t *testing.T, s escrow.Notifier, n escrow.Notification) escrow.Notification {
	t.Helper()
	got, err := s.EnqueueNotification(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// only returns the one notification in the store.
func only(t *testing.T, s escrow.NotificationStore) escrow.Notification {
	t.Helper()
	ns, err := s.Notifications(ctx, escrow.NotificationQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 1 {
		t.Fatalf("%d notifications, want 1", len(ns))
	}
	return ns[0]
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
