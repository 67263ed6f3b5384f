package vaulttest_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

const readOnly = `path "secret/data/ro/*" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`

func TestStartDev(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := vaulttest.StartDev(t)
	kv := s.Client().KVv2("secret")
	if _, err := kv.Put(ctx, "ro/x", map[string]any{"v": "1"}); err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(ctx, "ro/x")
	if err != nil || got.Data["v"] != "1" {
		t.Fatalf("Get: %v %v", got, err)
	}
}

func TestPolicyToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := vaulttest.StartDev(t)
	if _, err := s.Client().KVv2("secret").Put(ctx, "ro/x", map[string]any{"v": "1"}); err != nil {
		t.Fatal(err)
	}
	c := s.Client()
	c.SetToken(s.PolicyToken(t, readOnly, vaulttest.WithTTL(time.Minute, 2*time.Minute)))
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	policies, _ := self.TokenPolicies()
	if len(policies) != 1 || slices.Contains(policies, "default") {
		t.Errorf("token policies %v, want exactly the one written", policies)
	}
	if ttl, _ := self.TokenTTL(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("token TTL %v, want (0, 1m]", ttl)
	}
	if ok, _ := self.TokenIsRenewable(); !ok {
		t.Error("token is not renewable")
	}
	if _, err := c.KVv2("secret").Get(ctx, "ro/x"); err != nil {
		t.Errorf("read allowed by the policy: %v", err)
	}
	_, err = c.KVv2("secret").Put(ctx, "ro/x", map[string]any{"v": "2"})
	if re := (*vault.ResponseError)(nil); !errors.As(err, &re) || re.StatusCode != 403 {
		t.Errorf("write denied by the policy: %v, want 403", err)
	}
}

func TestAppRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := vaulttest.StartDev(t)
	for range 2 { // the second call finds AppRole enabled
		roleID, secretID := s.AppRole(t, readOnly, vaulttest.WithTTL(30*time.Second, time.Minute))
		auth, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID})
		if err != nil {
			t.Fatal(err)
		}
		c := s.Client()
		c.ClearToken()
		sec, err := c.Auth().Login(ctx, auth)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(sec.Auth.Policies, "default") || len(sec.Auth.Policies) != 1 {
			t.Errorf("policies %v, want exactly the role's", sec.Auth.Policies)
		}
		if sec.Auth.LeaseDuration != 30 {
			t.Errorf("token TTL %ds, want 30", sec.Auth.LeaseDuration)
		}
	}
}

// TestPersistentStopStart takes the server away and brings it back: data,
// tokens and the address survive.
func TestPersistentStopStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := vaulttest.StartPersistent(t)
	token := s.PolicyToken(t, `path "secret/data/*" { capabilities = ["create", "read", "update"] }`)
	c := s.Client()
	c.SetToken(token)
	c.SetMaxRetries(0)
	if _, err := c.KVv2("secret").Put(ctx, "p/x", map[string]any{"v": "before"}); err != nil {
		t.Fatal(err)
	}

	s.Stop()
	_, err := c.KVv2("secret").Get(ctx, "p/x")
	var oe *net.OpError
	var ue *url.Error
	if !errors.As(err, &oe) && !errors.As(err, &ue) {
		t.Fatalf("Get with the server stopped: %v, want a connection error", err)
	}

	s.Start()
	got, err := c.KVv2("secret").Get(ctx, "p/x")
	if err != nil || got.Data["v"] != "before" {
		t.Fatalf("after restart: %v %v, want the value written before", got, err)
	}
	if _, err := c.KVv2("secret").Put(ctx, "p/x", map[string]any{"v": "after"}); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
}
