// Package storetest holds the conformance suites every escrow backend
// passes: RunSecretStore for SecretStore implementations (agestore,
// vaultstore) and RunMetaStore for MetaStore implementations (sqlstore on
// SQLite and PostgreSQL).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/escrow"
)

// RunSecretStore runs the SecretStore suite. newStore returns an empty store
// for each subtest.
func RunSecretStore(t *testing.T, newStore func(t *testing.T) escrow.SecretStore) {
	ctx := context.Background()
	ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: "564D9E39-1A2B-4C3D-8E9F-0A1B2C3D4E5F"}

	t.Run("missing", func(t *testing.T) {
		s := newStore(t)
		if _, _, err := s.Get(ctx, ref, 0); !errors.Is(err, escrow.ErrNotFound) {
			t.Fatalf("Get missing: %v, want ErrNotFound", err)
		}
		if _, _, err := s.Get(ctx, ref, 3); !errors.Is(err, escrow.ErrNotFound) {
			t.Fatalf("Get missing version: %v, want ErrNotFound", err)
		}
	})

	t.Run("versions are kept", func(t *testing.T) {
		s := newStore(t)
		v1, err := s.Put(ctx, ref, []byte("AAAA-AAAA-AAAA-AAAA-AAAA-AAAA"), 0, escrow.SecretMeta{"serial": "C02X"})
		if err != nil || v1 != 1 {
			t.Fatalf("first Put: v%d %v", v1, err)
		}
		v2, err := s.Put(ctx, ref, []byte("BBBB-BBBB-BBBB-BBBB-BBBB-BBBB"), 1, nil)
		if err != nil || v2 != 2 {
			t.Fatalf("second Put: v%d %v", v2, err)
		}
		got, v, err := s.Get(ctx, ref, 0)
		if err != nil || v != 2 || string(got) != "BBBB-BBBB-BBBB-BBBB-BBBB-BBBB" {
			t.Fatalf("Get latest: v%d %v", v, err)
		}
		got, v, err = s.Get(ctx, ref, 1)
		if err != nil || v != 1 || string(got) != "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA" {
			t.Fatalf("Get v1 after v2 was written: v%d %v", v, err)
		}
		if _, _, err := s.Get(ctx, ref, 3); !errors.Is(err, escrow.ErrNotFound) {
			t.Fatalf("Get v3: %v, want ErrNotFound", err)
		}
	})

	t.Run("old versions are never pruned", func(t *testing.T) {
		s := newStore(t)
		for v := 1; v <= 12; v++ { // Vault KV v2 keeps 10 by default
			if _, err := s.Put(ctx, ref, []byte(fmt.Sprint("key-", v)), v-1, nil); err != nil {
				t.Fatal(err)
			}
		}
		got, v, err := s.Get(ctx, ref, 1)
		if err != nil || v != 1 || string(got) != "key-1" {
			t.Fatalf("v1 after 12 versions: %q v%d %v", got, v, err)
		}
	})

	t.Run("check and set", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Put(ctx, ref, []byte("one"), 0, nil); err != nil {
			t.Fatal(err)
		}
		for _, cas := range []int{0, 2, 7} {
			if v, err := s.Put(ctx, ref, []byte("x"), cas, nil); !errors.Is(err, escrow.ErrConflict) || v != 0 {
				t.Errorf("Put with stale cas %d: v%d %v, want v0 and ErrConflict", cas, v, err)
			}
		}
		got, v, err := s.Get(ctx, ref, 0)
		if err != nil || v != 1 || string(got) != "one" {
			t.Fatalf("a failed check-and-set wrote something: v%d %q %v", v, got, err)
		}
		if _, err := s.Put(ctx, escrow.SecretRef{Kind: escrow.KindPRK, Owner: "other"}, []byte("x"), 1, nil); !errors.Is(err, escrow.ErrConflict) {
			t.Errorf("Put cas 1 on a new secret: %v, want ErrConflict", err)
		}
	})

	t.Run("concurrent writers: one wins", func(t *testing.T) {
		s := newStore(t)
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Put(ctx, ref, []byte(fmt.Sprint("writer", i)), 0, nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, escrow.ErrConflict):
					conflicts++
				default:
					t.Errorf("Put: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || conflicts != n-1 {
			t.Fatalf("%d wins and %d conflicts, want 1 and %d", wins, conflicts, n-1)
		}
		if _, v, err := s.Get(ctx, ref, 0); err != nil || v != 1 {
			t.Fatalf("latest v%d %v, want v1", v, err)
		}
	})

	t.Run("refs are separate", func(t *testing.T) {
		s := newStore(t)
		refs := []escrow.SecretRef{
			{Kind: escrow.KindPRK, Owner: "dev-a"},
			{Kind: escrow.KindBootstrapToken, Owner: "dev-a"},
			{Kind: escrow.KindPRK, Owner: "dev-b"},
			{Kind: escrow.KindEscrowKey, Owner: "3f0c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccddeeff0011223344"},
			{Kind: escrow.KindUnlockToken, Owner: "00008030-001A2B3C4D5E802E"},
		}
		for i, r := range refs {
			if _, err := s.Put(ctx, r, []byte{byte(i)}, 0, nil); err != nil {
				t.Fatalf("%v: %v", r, err)
			}
		}
		for i, r := range refs {
			got, v, err := s.Get(ctx, r, 0)
			if err != nil || v != 1 || !bytes.Equal(got, []byte{byte(i)}) {
				t.Errorf("%v: %v v%d %v", r, got, v, err)
			}
		}
	})

	t.Run("binary and large secrets", func(t *testing.T) {
		s := newStore(t)
		all := make([]byte, 256)
		for i := range all {
			all[i] = byte(i)
		}
		big := bytes.Repeat([]byte{0xA5, 0x00, 0xFF}, 20000)
		for i, secret := range [][]byte{all, big} {
			r := escrow.SecretRef{Kind: escrow.KindBootstrapToken, Owner: fmt.Sprint("bin", i)}
			if _, err := s.Put(ctx, r, secret, 0, nil); err != nil {
				t.Fatal(err)
			}
			got, _, err := s.Get(ctx, r, 0)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("round trip of %d bytes: %v", len(secret), err)
			}
			clear(got) // the caller may wipe what it got; the store must not care
			again, _, err := s.Get(ctx, r, 0)
			if err != nil || !bytes.Equal(again, secret) {
				t.Fatalf("store shares memory with a returned secret")
			}
		}
	})

	t.Run("invalid refs", func(t *testing.T) {
		s := newStore(t)
		for _, r := range []escrow.SecretRef{
			{Kind: escrow.KindPRK, Owner: "../etc"},
			{Kind: escrow.KindPRK, Owner: "a/b"},
			{Kind: escrow.KindPRK, Owner: ""},
			{Kind: "nonsense", Owner: "dev"},
		} {
			if _, err := s.Put(ctx, r, []byte("x"), 0, nil); !errors.Is(err, escrow.ErrInvalid) {
				t.Errorf("Put %q: %v, want ErrInvalid", r, err)
			}
			if _, _, err := s.Get(ctx, r, 0); !errors.Is(err, escrow.ErrInvalid) {
				t.Errorf("Get %q: %v, want ErrInvalid", r, err)
			}
		}
	})

	t.Run("errors never carry the secret", func(t *testing.T) {
		s := newStore(t)
		secret := []byte("SECR-ETSE-CRET-SECR-ETSE-CRET")
		if _, err := s.Put(ctx, ref, secret, 0, nil); err != nil {
			t.Fatal(err)
		}
		_, err := s.Put(ctx, ref, secret, 0, nil)
		if err == nil || bytes.Contains([]byte(err.Error()), secret) {
			t.Fatalf("conflict error %v", err)
		}
	})
}
