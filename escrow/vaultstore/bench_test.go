package vaultstore_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

var benchSecret = []byte("123456-123456-123456-123456-123456-123456-123456-123456")

// versionsPerSecret bounds the versions a benchmark writes to one secret.
// KV v2 keeps a secret's version metadata in one storage entry and rewrites
// it on each write, so with max_versions 10000 a write costs more as a
// secret accumulates versions (about 1 ms at 200 versions, 3 ms on average
// up to 2000 on a 2-core machine). Real secrets get a handful of versions;
// benchmarks that piled b.N versions onto one secret would measure that
// growth instead of the store.
const versionsPerSecret = 16

// BenchmarkPut measures the store's Put against a real dev server, under the
// shipped policy. "version" adds a version to an existing secret (one
// request); "first" creates a secret (max_versions, data, custom metadata:
// three requests).
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	srv := vaulttest.StartDev(b)
	b.Run("version", func(b *testing.B) {
		s := policyStore(b, srv)
		var ref escrow.SecretRef
		for i := range b.N {
			cas := i % versionsPerSecret
			if cas == 0 { // a fresh secret, its first version not timed
				b.StopTimer()
				ref = escrow.SecretRef{Kind: escrow.KindPRK, Owner: fmt.Sprint("dev-", i)}
				if _, err := s.Put(ctx, ref, benchSecret, 0, nil); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			if _, err := s.Put(ctx, ref, benchSecret, cas+1, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first", func(b *testing.B) {
		s := policyStore(b, srv)
		meta := escrow.SecretMeta{"serial": "C02X1234", "source": "securityinfo"}
		for i := range b.N {
			ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: fmt.Sprint("dev-", i)}
			if _, err := s.Put(ctx, ref, benchSecret, 0, meta); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRawKVPut is the bare vault/api KV v2 Put with check-and-set (no
// store), under the same conditions as BenchmarkPut/version: same token
// policy, same max_versions, at most versionsPerSecret versions a secret.
func BenchmarkRawKVPut(b *testing.B) {
	ctx := context.Background()
	srv := vaulttest.StartDev(b)
	c := srv.Client()
	c.SetToken(srv.PolicyToken(b, policy(b)))
	kv := c.KVv2("secret")
	prefix := testPrefix()
	data := map[string]any{"value": base64.StdEncoding.EncodeToString(benchSecret)}
	var path string
	for i := range b.N {
		cas := i % versionsPerSecret
		if cas == 0 {
			b.StopTimer()
			path = fmt.Sprint(prefix, "/prk/dev-", i)
			if _, err := c.Logical().WriteWithContext(ctx, "secret/metadata/"+path, map[string]any{"max_versions": 10000}); err != nil {
				b.Fatal(err)
			}
			if _, err := kv.Put(ctx, path, data, vault.WithCheckAndSet(0)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := kv.Put(ctx, path, data, vault.WithCheckAndSet(cas+1)); err != nil {
			b.Fatal(err)
		}
	}
}
