package vaultstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow/vaultstore"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// policyFile is the policy shipped for operators; the tests run under it.
const policyFile = "../../deploy/vault/fvescrow-policy.hcl"

func policy(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testPrefix is a fresh prefix under fvescrow/, which the policy covers
// (secret/data/fvescrow/*), so tests sharing a server never see each
// other's secrets.
func testPrefix() string { return "fvescrow/t-" + randHex(6) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeFile writes a credential file readable by its owner only.
func writeFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "credential")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// replaceFile swaps a credential file atomically, as Vault Agent does.
func replaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// open returns a store closed when the test ends.
func open(t testing.TB, cfg vaultstore.Config, opts ...vaultstore.Option) *vaultstore.Store {
	t.Helper()
	s, err := vaultstore.New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// policyStore is a store on srv under a fresh prefix, logged in with a
// token file holding a token with exactly the shipped policy.
func policyStore(t testing.TB, srv *vaulttest.Server, opts ...vaultstore.Option) *vaultstore.Store {
	t.Helper()
	return open(t, vaultstore.Config{
		Address: srv.Addr,
		Prefix:  testPrefix(),
		Auth:    vaultstore.Auth{TokenFile: writeFile(t, srv.PolicyToken(t, policy(t)))},
	}, opts...)
}

// logBuffer collects JSON log lines from the store.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rootKV is KV v2 at secret/ with the root token, to look behind the store.
func rootKV(srv *vaulttest.Server) *vault.KVv2 { return srv.Client().KVv2("secret") }
