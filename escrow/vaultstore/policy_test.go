package vaultstore_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/vaultstore"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// TestPolicyDenies: a token holding exactly the shipped policy cannot
// delete, destroy, list, patch or read metadata of fvescrow's secrets, nor
// touch anything outside the prefix.
func TestPolicyDenies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	prefix := testPrefix()
	token := srv.PolicyToken(t, policy(t))
	s := open(t, vaultstore.Config{Address: srv.Addr, Prefix: prefix, Auth: vaultstore.Auth{TokenFile: writeFile(t, token)}})
	if _, err := s.Put(ctx, prk, []byte("kept"), 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rootKV(srv).Put(ctx, "other/x", map[string]any{"v": "1"}); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	c.SetToken(token)
	c.SetMaxRetries(0)
	l := c.Logical()
	p := prefix + "/prk/" + prk.Owner
	versions := map[string]any{"versions": []int{1}}
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"DELETE data (soft-delete latest)", func() error { _, err := l.DeleteWithContext(ctx, "secret/data/"+p); return err }},
		{"delete versions", func() error { _, err := l.WriteWithContext(ctx, "secret/delete/"+p, versions); return err }},
		{"destroy versions", func() error { _, err := l.WriteWithContext(ctx, "secret/destroy/"+p, versions); return err }},
		{"undelete versions", func() error { _, err := l.WriteWithContext(ctx, "secret/undelete/"+p, versions); return err }},
		{"DELETE metadata (all versions)", func() error { _, err := l.DeleteWithContext(ctx, "secret/metadata/"+p); return err }},
		{"read metadata", func() error { _, err := l.ReadWithContext(ctx, "secret/metadata/"+p); return err }},
		{"list metadata", func() error { _, err := l.ListWithContext(ctx, "secret/metadata/fvescrow"); return err }},
		{"list metadata under the prefix", func() error { _, err := l.ListWithContext(ctx, "secret/metadata/"+prefix); return err }},
		{"patch data", func() error {
			_, err := l.JSONMergePatch(ctx, "secret/data/"+p, map[string]any{"data": map[string]any{"value": "x"}})
			return err
		}},
		{"read subkeys", func() error { _, err := l.ReadWithContext(ctx, "secret/subkeys/"+p); return err }},
		{"read outside the prefix", func() error { _, err := l.ReadWithContext(ctx, "secret/data/other/x"); return err }},
		{"read a look-alike prefix", func() error { _, err := l.ReadWithContext(ctx, "secret/data/fvescrow-other/x"); return err }},
		{"write outside the prefix", func() error {
			_, err := l.WriteWithContext(ctx, "secret/data/other/y", map[string]any{"data": map[string]any{"v": "1"}})
			return err
		}},
		{"read the mount config", func() error { _, err := l.ReadWithContext(ctx, "secret/config"); return err }},
		{"write the mount config", func() error {
			_, err := l.WriteWithContext(ctx, "secret/config", map[string]any{"max_versions": 1})
			return err
		}},
		{"write a policy", func() error {
			return c.Sys().PutPolicyWithContext(ctx, "mine", `path "*" { capabilities = ["sudo"] }`)
		}},
		{"create a token", func() error {
			_, err := c.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{})
			return err
		}},
	} {
		err := tc.do()
		var re *vault.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("%s: %v, want 403", tc.name, err)
		}
	}
	md, err := rootKV(srv).GetMetadata(ctx, p)
	if err != nil || md.CurrentVersion != 1 || !md.Versions["1"].DeletionTime.IsZero() || md.Versions["1"].Destroyed {
		t.Fatalf("the secret changed: %+v %v", md, err)
	}
}

// TestPolicyIsMinimal: the shipped policy passes the scenario below, and
// removing any single capability from it makes the scenario fail, so every
// capability in deploy/vault/fvescrow-policy.hcl is needed.
func TestPolicyIsMinimal(t *testing.T) {
	t.Parallel()
	srv := vaulttest.StartDev(t)
	full := policy(t)
	t.Run("full policy", func(t *testing.T) {
		t.Parallel()
		if err := exercise(t, srv, full); err != nil {
			t.Fatal(err)
		}
	})
	block := regexp.MustCompile(`(?s)path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}`)
	n := 0
	for _, m := range block.FindAllStringSubmatchIndex(full, -1) {
		path := full[m[2]:m[3]]
		caps := strings.Split(full[m[4]:m[5]], ",")
		for i, c := range caps {
			c = strings.Trim(strings.TrimSpace(c), `"`)
			rest := append(append([]string{}, caps[:i]...), caps[i+1:]...)
			reduced := full[:m[4]] + strings.Join(rest, ",") + full[m[5]:]
			n++
			t.Run("without "+c+" on "+path, func(t *testing.T) {
				t.Parallel()
				if err := exercise(t, srv, reduced); err == nil {
					t.Errorf("the scenario passes without %q on %s: the capability is not needed", c, path)
				} else {
					t.Logf("fails as expected: %v", err)
				}
			})
		}
	}
	if n < 5 {
		t.Fatalf("found %d capabilities in %s; the parser is broken", n, policyFile)
	}
}

// exercise runs what the fvescrow server does with Vault, under a token file
// holding a renewable 2s token with exactly policyHCL, and returns the first
// thing that did not work. t fails only on harness errors.
func exercise(t *testing.T, srv *vaulttest.Server, policyHCL string) error {
	ctx := context.Background()
	file := writeFile(t, srv.PolicyToken(t, policyHCL, vaulttest.WithTTL(2*time.Second, 0)))
	prefix := testPrefix()
	s, err := vaultstore.New(ctx, vaultstore.Config{Address: srv.Addr, Prefix: prefix, Auth: vaultstore.Auth{TokenFile: file}})
	if err != nil {
		return fmt.Errorf("New: %w", err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		return fmt.Errorf("Ping: %w", err)
	}
	if _, err := s.Put(ctx, prk, []byte("one"), 0, escrow.SecretMeta{"serial": "C02X"}); err != nil {
		return fmt.Errorf("first Put: %w", err)
	}
	md, err := rootKV(srv).GetMetadata(ctx, prefix+"/prk/"+prk.Owner)
	if err != nil {
		return fmt.Errorf("root reads metadata: %w", err)
	}
	if md.MaxVersions != vaultstore.DefaultMaxVersions || md.CustomMetadata["serial"] != "C02X" {
		return fmt.Errorf("metadata not set: max_versions %d, custom %v", md.MaxVersions, md.CustomMetadata)
	}
	if _, err := s.Put(ctx, prk, []byte("two"), 1, nil); err != nil {
		return fmt.Errorf("second Put: %w", err)
	}
	if _, err := s.Put(ctx, prk, []byte("stale"), 0, nil); !errors.Is(err, escrow.ErrConflict) {
		return fmt.Errorf("stale first Put: %v, want ErrConflict", err)
	}
	other := escrow.SecretRef{Kind: escrow.KindPRK, Owner: "other"}
	if _, err := s.Put(ctx, other, []byte("x"), 1, nil); !errors.Is(err, escrow.ErrConflict) {
		return fmt.Errorf("Put cas 1 on a new secret: %v, want ErrConflict", err)
	}
	if got, _, err := s.Get(ctx, prk, 1); err != nil || string(got) != "one" {
		return fmt.Errorf("Get v1: %q %w", got, err)
	}
	// The token lives 2s unless renewed.
	time.Sleep(3500 * time.Millisecond)
	if _, _, err := s.Get(ctx, prk, 0); err != nil {
		return fmt.Errorf("Get after the token TTL: %w", err)
	}
	return nil
}
