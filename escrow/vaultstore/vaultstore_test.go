package vaultstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/storetest"
	"github.com/fvescrow/fvescrow/escrow/vaultstore"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

var prk = escrow.SecretRef{Kind: escrow.KindPRK, Owner: "564D9E39-1A2B-4C3D-8E9F-0A1B2C3D4E5F"}

// TestSecretStore runs the conformance suite against a real Vault, as the
// fvescrow server runs: a token holding exactly the shipped policy, read
// from a file.
func TestSecretStore(t *testing.T) {
	t.Parallel()
	srv := vaulttest.StartDev(t)
	tokenFile := writeFile(t, srv.PolicyToken(t, policy(t)))
	storetest.RunSecretStore(t, func(t *testing.T) escrow.SecretStore {
		return open(t, vaultstore.Config{
			Address: srv.Addr,
			Prefix:  testPrefix(),
			Auth:    vaultstore.Auth{TokenFile: tokenFile},
		})
	})
}

func TestAppRoleLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	roleID, secretID := srv.AppRole(t, policy(t))
	s := open(t, vaultstore.Config{
		Address: srv.Addr,
		Prefix:  testPrefix(),
		Auth:    vaultstore.Auth{AppRole: &vaultstore.AppRole{RoleID: roleID, SecretIDFile: writeFile(t, secretID)}},
	})
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	v, err := s.Put(ctx, prk, []byte("AAAA-BBBB"), 0, nil)
	if err != nil || v != 1 {
		t.Fatalf("Put: v%d %v", v, err)
	}
	got, v, err := s.Get(ctx, prk, 0)
	if err != nil || v != 1 || string(got) != "AAAA-BBBB" {
		t.Fatalf("Get: %q v%d %v", got, v, err)
	}

	// A wrong secret ID fails New, and the error holds no credential.
	bad := writeFile(t, "not-"+secretID)
	_, err = vaultstore.New(ctx, vaultstore.Config{
		Address: srv.Addr,
		Auth:    vaultstore.Auth{AppRole: &vaultstore.AppRole{RoleID: roleID, SecretIDFile: bad}},
	})
	if err == nil || strings.Contains(err.Error(), secretID) {
		t.Fatalf("New with a wrong secret ID: %v", err)
	}
}

// TestRelogin: AppRole tokens live 3s, renewable up to 8s. The store keeps
// working for 11s: it renews the token, then logs in again when the token
// reaches its max TTL. Nothing it logs holds a token or the secret ID.
//
// The new login is usually made by the token keeper shortly before the max
// TTL ("at the end of its life"). Vault reports TTLs in whole seconds, and
// with TTLs this short that rounding can exceed the keeper's margin (10-20%
// of the TTL), so the token may expire first; then the next request is
// refused as "invalid token", the store logs in and retries it. Either way
// no request fails, which is what this test checks. (With real TTLs, hours,
// the rounding does not matter; TestTokenFileRotation/not_renewable shows
// the keeper's own re-login.)
func TestRelogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	roleID, secretID := srv.AppRole(t, policy(t), vaulttest.WithTTL(3*time.Second, 8*time.Second))
	client := srv.Client()
	client.ClearToken()
	var logs logBuffer
	s := open(t, vaultstore.Config{
		Prefix: testPrefix(),
		Auth:   vaultstore.Auth{AppRole: &vaultstore.AppRole{RoleID: roleID, SecretIDFile: writeFile(t, secretID)}},
	}, vaultstore.WithClient(client), vaultstore.WithLogger(logs.logger()))

	tokens := map[string]bool{}
	start := time.Now()
	for v := 1; time.Since(start) < 11*time.Second; v++ {
		tokens[client.Token()] = true
		if _, err := s.Put(ctx, prk, fmt.Appendf(nil, "key %d", v), v-1, nil); err != nil {
			t.Fatalf("Put v%d after %v: %v", v, time.Since(start).Round(time.Millisecond), err)
		}
		if got, _, err := s.Get(ctx, prk, v); err != nil || string(got) != fmt.Sprintf("key %d", v) {
			t.Fatalf("Get v%d after %v: %q %v", v, time.Since(start).Round(time.Millisecond), got, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	out := logs.String()
	if len(tokens) < 2 {
		t.Errorf("the store used %d token(s) in 11s; want a new login after the 8s max TTL\n%s", len(tokens), out)
	}
	if !strings.Contains(out, "Vault token renewed") {
		t.Errorf("no renewal logged:\n%s", out)
	}
	if n := strings.Count(out, "logged in to Vault"); n < 2 {
		t.Errorf("%d logins logged, want at least 2:\n%s", n, out)
	}
	for tok := range tokens {
		if strings.Contains(out, tok) {
			t.Errorf("a token appears in the log")
		}
	}
	if strings.Contains(out, secretID) {
		t.Errorf("the secret ID appears in the log")
	}
}

// TestTokenFileRotation: a token-file store reads the file again when its
// token ends (renewable up to its max TTL, or not renewable), as with a Vault
// Agent sink that writes a new token. For the non-renewable token the keeper
// does it before the token expires; for the renewable one Vault's rounding of
// TTLs to whole seconds may let the token expire first (see TestRelogin), and
// the next request logs in again.
func TestTokenFileRotation(t *testing.T) {
	t.Parallel()
	srv := vaulttest.StartDev(t)
	for _, tc := range []struct {
		name      string
		opts      []vaulttest.TokenOption
		proactive bool
	}{
		{"renewable up to its max TTL", []vaulttest.TokenOption{vaulttest.WithTTL(3*time.Second, 6*time.Second)}, false},
		{"not renewable", []vaulttest.TokenOption{vaulttest.WithTTL(4*time.Second, 0), vaulttest.NotRenewable()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			first := srv.PolicyToken(t, policy(t), tc.opts...)
			second := srv.PolicyToken(t, policy(t))
			file := writeFile(t, first)
			client := srv.Client()
			var logs logBuffer
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("store log:\n%s", logs.String())
				}
			})
			s := open(t, vaultstore.Config{Prefix: testPrefix(), Auth: vaultstore.Auth{TokenFile: file}},
				vaultstore.WithClient(client), vaultstore.WithLogger(logs.logger()))
			if client.Token() != first {
				t.Fatal("the store does not use the token from the file")
			}
			replaceFile(t, file, second)
			start := time.Now()
			for v := 1; time.Since(start) < 8*time.Second; v++ {
				if _, err := s.Put(ctx, prk, []byte("x"), v-1, nil); err != nil {
					t.Fatalf("Put after %v: %v", time.Since(start).Round(time.Millisecond), err)
				}
				time.Sleep(250 * time.Millisecond)
			}
			if client.Token() != second {
				t.Error("the store did not switch to the token now in the file")
			}
			if tc.proactive && !strings.Contains(logs.String(), "Vault token at the end of its life") {
				t.Error("the file was not read again before the token expired")
			}
		})
	}
}

// TestRevokedToken: when Vault no longer knows the token (revoked by an
// operator), the store logs in again and retries the request.
func TestRevokedToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	roleID, secretID := srv.AppRole(t, policy(t))
	client := srv.Client()
	client.ClearToken()
	s := open(t, vaultstore.Config{
		Prefix: testPrefix(),
		Auth:   vaultstore.Auth{AppRole: &vaultstore.AppRole{RoleID: roleID, SecretIDFile: writeFile(t, secretID)}},
	}, vaultstore.WithClient(client))
	if _, err := s.Put(ctx, prk, []byte("x"), 0, nil); err != nil {
		t.Fatal(err)
	}
	revoked := client.Token()
	if err := srv.Client().Auth().Token().RevokeTreeWithContext(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, prk, []byte("y"), 1, nil); err != nil {
		t.Fatalf("Put after the token was revoked: %v", err)
	}
	if got, v, err := s.Get(ctx, prk, 0); err != nil || v != 2 || string(got) != "y" {
		t.Fatalf("Get: %q v%d %v", got, v, err)
	}
	if client.Token() == revoked {
		t.Fatal("still the revoked token")
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	token := srv.PolicyToken(t, policy(t))
	prefix := testPrefix()
	s := open(t, vaultstore.Config{Address: srv.Addr, Prefix: prefix, Auth: vaultstore.Auth{TokenFile: writeFile(t, token)}})
	secret := []byte("SECR-ETSE-CRET-SECR-ETSE-CRET")
	if _, err := s.Put(ctx, prk, secret, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, prk, []byte("two"), 1, nil); err != nil {
		t.Fatal(err)
	}

	t.Run("not found", func(t *testing.T) {
		missing := escrow.SecretRef{Kind: escrow.KindPRK, Owner: "missing"}
		for _, v := range []int{0, 1} {
			if _, _, err := s.Get(ctx, missing, v); !errors.Is(err, escrow.ErrNotFound) {
				t.Errorf("Get missing v%d: %v, want ErrNotFound", v, err)
			}
		}
		if _, _, err := s.Get(ctx, prk, 3); !errors.Is(err, escrow.ErrNotFound) {
			t.Errorf("Get v3 of 2: %v, want ErrNotFound", err)
		}
	})

	t.Run("deleted and destroyed versions", func(t *testing.T) {
		// fvescrow never deletes; an operator might. Such versions are gone.
		ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: "deleted"}
		for v := 1; v <= 3; v++ {
			if _, err := s.Put(ctx, ref, []byte("x"), v-1, nil); err != nil {
				t.Fatal(err)
			}
		}
		kv := rootKV(srv)
		path := prefix + "/prk/deleted"
		if err := kv.DeleteVersions(ctx, path, []int{1}); err != nil {
			t.Fatal(err)
		}
		if err := kv.Destroy(ctx, path, []int{2}); err != nil {
			t.Fatal(err)
		}
		if err := kv.Delete(ctx, path); err != nil { // latest (3)
			t.Fatal(err)
		}
		for _, v := range []int{0, 1, 2, 3} {
			if _, _, err := s.Get(ctx, ref, v); !errors.Is(err, escrow.ErrNotFound) {
				t.Errorf("Get v%d: %v, want ErrNotFound", v, err)
			}
		}
	})

	t.Run("conflict", func(t *testing.T) {
		for _, cas := range []int{0, 1, 3} {
			_, err := s.Put(ctx, prk, secret, cas, nil)
			if !errors.Is(err, escrow.ErrConflict) {
				t.Errorf("Put cas %d: %v, want ErrConflict", cas, err)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "vaultstore: put prk/"+prk.Owner+": conflict") {
				t.Errorf("error text %q", err)
			}
		}
	})

	t.Run("forbidden", func(t *testing.T) {
		// The same token, a prefix outside the policy.
		other := open(t, vaultstore.Config{Address: srv.Addr, Prefix: "elsewhere", Auth: vaultstore.Auth{TokenFile: writeFile(t, token)}})
		if _, err := other.Put(ctx, prk, secret, 0, nil); !errors.Is(err, escrow.ErrForbidden) {
			t.Errorf("Put outside the policy: %v, want ErrForbidden", err)
		}
		if _, _, err := other.Get(ctx, prk, 0); !errors.Is(err, escrow.ErrForbidden) {
			t.Errorf("Get outside the policy: %v, want ErrForbidden", err)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, meta := range []escrow.SecretMeta{
			{strings.Repeat("k", 129): "v"},
			{"k": strings.Repeat("v", 513)},
			{"k": "line\nbreak"},
		} {
			ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: "invalid-meta"}
			if _, err := s.Put(ctx, ref, secret, 0, meta); !errors.Is(err, escrow.ErrInvalid) {
				t.Errorf("Put with bad metadata: %v, want ErrInvalid", err)
			}
			if _, _, err := s.Get(ctx, ref, 0); !errors.Is(err, escrow.ErrNotFound) {
				t.Errorf("a Put with bad metadata wrote something: %v", err)
			}
		}
		if _, err := s.Put(ctx, prk, secret, -1, nil); !errors.Is(err, escrow.ErrInvalid) {
			t.Errorf("Put cas -1: %v, want ErrInvalid", err)
		}
		if _, _, err := s.Get(ctx, prk, -1); !errors.Is(err, escrow.ErrInvalid) {
			t.Errorf("Get v-1: %v, want ErrInvalid", err)
		}
	})
}

// TestUnavailable: a stopped or sealed Vault is ErrUnavailable (the caller
// keeps the work in its outbox and retries).
func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	token := ""
	check := func(t *testing.T, s *vaultstore.Store) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, 3)
		wg.Add(3) // each call retries for ~2s before giving up: in parallel
		go func() { defer wg.Done(); _, errs[0] = s.Put(ctx, prk, []byte("SECRET-BYTES"), 1, nil) }()
		go func() { defer wg.Done(); _, _, errs[1] = s.Get(ctx, prk, 0) }()
		go func() { defer wg.Done(); errs[2] = s.Ping(ctx) }()
		wg.Wait()
		for i, err := range errs {
			if !errors.Is(err, escrow.ErrUnavailable) {
				t.Errorf("call %d: %v, want ErrUnavailable", i, err)
			}
			if err != nil && (strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "SECRET-BYTES")) {
				t.Errorf("error holds the token or the secret: %v", err)
			}
		}
	}
	t.Run("stopped", func(t *testing.T) {
		t.Parallel()
		srv := vaulttest.StartDev(t)
		token = srv.PolicyToken(t, policy(t))
		s := open(t, vaultstore.Config{Address: srv.Addr, Prefix: testPrefix(), Auth: vaultstore.Auth{TokenFile: writeFile(t, token)}})
		if _, err := s.Put(ctx, prk, []byte("x"), 0, nil); err != nil {
			t.Fatal(err)
		}
		srv.Stop()
		check(t, s)
	})
	t.Run("sealed", func(t *testing.T) {
		t.Parallel()
		srv := vaulttest.StartDev(t)
		s := policyStore(t, srv)
		if _, err := s.Put(ctx, prk, []byte("x"), 0, nil); err != nil {
			t.Fatal(err)
		}
		if err := srv.Client().Sys().SealWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		check(t, s)
	})
}

// TestMetadata: the first Put sets max_versions and the custom metadata,
// which never holds the secret; more than 10 versions are all kept.
func TestMetadata(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	token := srv.PolicyToken(t, policy(t))
	for _, tc := range []struct {
		name        string
		maxVersions int
		want        int
	}{
		{"default", 0, vaultstore.DefaultMaxVersions},
		{"configured", 12345, 12345},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := testPrefix()
			s := open(t, vaultstore.Config{
				Address: srv.Addr, Prefix: prefix, MaxVersions: tc.maxVersions,
				Auth: vaultstore.Auth{TokenFile: writeFile(t, token)},
			})
			secret := []byte("SECR-ETSE-CRET-SECR-ETSE-CRET")
			meta := escrow.SecretMeta{"serial": "C02X1234", "source": "securityinfo", "empty": ""}
			if _, err := s.Put(ctx, prk, secret, 0, meta); err != nil {
				t.Fatal(err)
			}
			// Later versions leave the secret's custom metadata alone.
			if _, err := s.Put(ctx, prk, secret, 1, escrow.SecretMeta{"source": "rotation"}); err != nil {
				t.Fatal(err)
			}
			md, err := rootKV(srv).GetMetadata(ctx, prefix+"/prk/"+prk.Owner)
			if err != nil {
				t.Fatal(err)
			}
			if md.MaxVersions != tc.want {
				t.Errorf("max_versions %d, want %d", md.MaxVersions, tc.want)
			}
			want := map[string]any{"serial": "C02X1234", "source": "securityinfo", "fvescrow-kind": "prk"}
			if fmt.Sprint(md.CustomMetadata) != fmt.Sprint(want) {
				t.Errorf("custom metadata %v, want %v", md.CustomMetadata, want)
			}
			if strings.Contains(fmt.Sprintf("%+v", *md), string(secret)) {
				t.Error("the metadata holds the secret")
			}
		})
	}

	t.Run("more than 10 versions are kept", func(t *testing.T) {
		s := open(t, vaultstore.Config{Address: srv.Addr, Prefix: testPrefix(), Auth: vaultstore.Auth{TokenFile: writeFile(t, token)}})
		for v := 1; v <= 12; v++ {
			if _, err := s.Put(ctx, prk, fmt.Appendf(nil, "v%d", v), v-1, nil); err != nil {
				t.Fatal(err)
			}
		}
		for v := 1; v <= 12; v++ {
			if got, _, err := s.Get(ctx, prk, v); err != nil || string(got) != fmt.Sprintf("v%d", v) {
				t.Errorf("Get v%d: %q %v", v, got, err)
			}
		}
	})
}

// TestPersistentRestart: Vault goes away mid-run and comes back with its
// data; while it is away the store says ErrUnavailable.
func TestPersistentRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartPersistent(t)
	s := policyStore(t, srv)
	if _, err := s.Put(ctx, prk, []byte("kept"), 0, nil); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, _, err := s.Get(ctx, prk, 0); !errors.Is(err, escrow.ErrUnavailable) {
		t.Fatalf("Get with Vault stopped: %v, want ErrUnavailable", err)
	}
	srv.Start()
	got, v, err := s.Get(ctx, prk, 0)
	if err != nil || v != 1 || string(got) != "kept" {
		t.Fatalf("Get after restart: %q v%d %v", got, v, err)
	}
	if _, err := s.Put(ctx, prk, []byte("after"), 1, nil); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDevTLS(t)
	token := srv.PolicyToken(t, policy(t))
	for _, tc := range []struct {
		name string
		tls  vaultstore.TLS
		ok   bool
	}{
		{"CA", vaultstore.TLS{CACert: srv.CACert}, true},
		{"CA and server name", vaultstore.TLS{CACert: srv.CACert, ServerName: "localhost"}, true},
		{"wrong server name", vaultstore.TLS{CACert: srv.CACert, ServerName: "vault.example.com"}, false},
		{"system roots", vaultstore.TLS{}, false},
		{"insecure", vaultstore.TLS{InsecureSkipVerify: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := vaultstore.New(ctx, vaultstore.Config{
				Address: srv.Addr, TLS: tc.tls, Prefix: testPrefix(),
				Auth: vaultstore.Auth{TokenFile: writeFile(t, token)},
			})
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "certificate") || !errors.Is(err, escrow.ErrUnavailable) {
					t.Fatalf("New: %v, want a certificate error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Put(ctx, prk, []byte("x"), 0, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNewErrors: configuration and credential problems fail New.
func TestNewErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	for _, tc := range []struct {
		name string
		cfg  vaultstore.Config
		want error
	}{
		{"token file missing", vaultstore.Config{Address: srv.Addr, Auth: vaultstore.Auth{TokenFile: "/nonexistent/token"}}, nil},
		{"token unknown", vaultstore.Config{Address: srv.Addr, Auth: vaultstore.Auth{TokenFile: writeFile(t, "hvs.nosuchtoken")}}, escrow.ErrForbidden},
		{"Vault not there", vaultstore.Config{Address: "http://127.0.0.1:1", Auth: vaultstore.Auth{TokenFile: writeFile(t, "x")}}, escrow.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := vaultstore.New(ctx, tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("New: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRootClient: WithClient and no auth uses the client's token as is.
func TestRootClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	s := open(t, vaultstore.Config{Prefix: testPrefix()}, vaultstore.WithClient(srv.Client()))
	if _, err := s.Put(ctx, prk, []byte{0, 1, 2}, 0, nil); err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.Get(ctx, prk, 0); err != nil || !bytes.Equal(got, []byte{0, 1, 2}) {
		t.Fatalf("Get: %v %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestConfigBeatsEnvironment: vault/api's DefaultConfig reads VAULT_*
// variables; the store's own config must win over them.
func TestConfigBeatsEnvironment(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_AGENT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", srv.RootToken)
	t.Setenv("VAULT_NAMESPACE", "elsewhere")
	s := open(t, vaultstore.Config{
		Address: srv.Addr,
		Prefix:  "not-in-the-policy",
		Auth:    vaultstore.Auth{TokenFile: writeFile(t, srv.PolicyToken(t, policy(t)))},
	})
	// With the root token from VAULT_TOKEN this would succeed.
	if _, err := s.Put(ctx, prk, []byte("x"), 0, nil); !errors.Is(err, escrow.ErrForbidden) {
		t.Fatalf("Put outside the policy: %v, want ErrForbidden (the file's token, at Address)", err)
	}
}

// TestTLSBeatsEnvironment: VAULT_SKIP_VERIFY and VAULT_CACERT, which
// vault/api's DefaultConfig applies, do not loosen the store's TLS config.
func TestTLSBeatsEnvironment(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.StartDevTLS(t)
	token := srv.PolicyToken(t, policy(t))
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_CACERT", srv.CACert)
	s, err := vaultstore.New(ctx, vaultstore.Config{
		Address: srv.Addr,
		Auth:    vaultstore.Auth{TokenFile: writeFile(t, token)},
	})
	if err == nil {
		s.Close()
		t.Fatal("New trusted a server the config does not trust")
	}
	if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("New: %v, want a certificate error", err)
	}
}
