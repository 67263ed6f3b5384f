package vaultstore_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/storetest"
	"github.com/fvescrow/fvescrow/escrow/vaultstore"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// customMount is a second KV v2 mount, as an operator who keeps fvescrow
// apart from the shared "secret" mount would enable it.
const customMount = "fvescrow-kv"

// mountPolicy is the shipped policy edited as its header tells an operator
// who changes the mount and prefix: every secret/<data|metadata>/fvescrow/
// path rewritten to <mount>/<data|metadata>/<prefix>/. The policy is not
// templated on the mount; the test fails if the shipped file stops having
// exactly one data and one metadata path to rewrite.
func mountPolicy(t *testing.T, mount, prefix string) string {
	t.Helper()
	p := policy(t)
	for _, part := range []string{"data", "metadata"} {
		old := `"secret/` + part + `/fvescrow/*"`
		if n := strings.Count(p, old); n != 1 {
			t.Fatalf("%s names %s %d times, want once", policyFile, old, n)
		}
		p = strings.ReplaceAll(p, old, `"`+mount+"/"+part+"/"+prefix+`/*"`)
	}
	if strings.Contains(p, "secret/") {
		t.Fatalf("the rewritten policy still names the default mount:\n%s", p)
	}
	return p
}

// enableKV2 mounts KV v2 at path and waits until it serves requests (a new
// KV v2 mount answers "upgrading" for a moment).
func enableKV2(t *testing.T, srv *vaulttest.Server, path string) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client()
	if err := c.Sys().MountWithContext(ctx, path, &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatalf("mount KV v2 at %s: %v", path, err)
	}
	c.SetMaxRetries(0)
	var err error
	for i := 0; i < 600; i++ {
		if _, err = c.Logical().ReadWithContext(ctx, path+"/config"); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("KV v2 at %s never became ready: %v", path, err)
}

// TestCustomMountAndPrefix: with Config.Mount and Config.Prefix set, every
// secret is one path per kind and owner under <mount>/data/<prefix>/, its
// versions are KV versions there, and nothing is written to the default
// "secret" mount. The store runs under the shipped policy rewritten for that
// mount and prefix; the shipped policy as is does not cover them.
func TestCustomMountAndPrefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	enableKV2(t, srv, customMount)
	const prefix = "escrow/fv"
	token := srv.PolicyToken(t, mountPolicy(t, customMount, prefix))
	s := open(t, vaultstore.Config{Address: srv.Addr, Mount: customMount, Prefix: prefix,
		Auth: vaultstore.Auth{TokenFile: writeFile(t, token)}})

	escrowKey := escrow.SecretRef{Kind: escrow.KindEscrowKey, Owner: "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}
	for _, w := range []struct {
		ref    escrow.SecretRef
		secret string
		cas    int
	}{
		{prk, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF", 0},
		{prk, "GGGG-HHHH-JJJJ-KKKK-LLLL-MMMM", 1},
		{escrowKey, "-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n", 0},
	} {
		v, err := s.Put(ctx, w.ref, []byte(w.secret), w.cas, escrow.SecretMeta{"serial": "C02CUSTOM"})
		if err != nil || v != w.cas+1 {
			t.Fatalf("Put %s cas %d: v%d %v", w.ref, w.cas, v, err)
		}
	}
	if got, v, err := s.Get(ctx, prk, 1); err != nil || v != 1 || string(got) != "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF" {
		t.Fatalf("Get %s v1: %q v%d %v", prk, got, v, err)
	}
	if got, v, err := s.Get(ctx, prk, 0); err != nil || v != 2 || string(got) != "GGGG-HHHH-JJJJ-KKKK-LLLL-MMMM" {
		t.Fatalf("Get %s latest: %q v%d %v", prk, got, v, err)
	}

	// Behind the store, with the root token and raw paths.
	root := srv.Client()
	for _, want := range []struct {
		path    string
		version int
		secret  string
	}{
		{customMount + "/data/" + prefix + "/prk/" + prk.Owner, 1, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"},
		{customMount + "/data/" + prefix + "/prk/" + prk.Owner, 2, "GGGG-HHHH-JJJJ-KKKK-LLLL-MMMM"},
		{customMount + "/data/" + prefix + "/escrow-key/" + escrowKey.Owner, 1, "-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n"},
	} {
		sec, err := root.Logical().ReadWithDataWithContext(ctx, want.path, map[string][]string{"version": {fmt.Sprint(want.version)}})
		if err != nil || sec == nil {
			t.Fatalf("root read %s v%d: %v %v", want.path, want.version, sec, err)
		}
		data, _ := sec.Data["data"].(map[string]any)
		b64, _ := data["value"].(string)
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || string(got) != want.secret {
			t.Errorf("%s v%d holds %q (%v), want the secret written", want.path, want.version, got, err)
		}
	}
	md, err := root.KVv2(customMount).GetMetadata(ctx, prefix+"/prk/"+prk.Owner)
	if err != nil || md.CurrentVersion != 2 || md.MaxVersions != vaultstore.DefaultMaxVersions || md.CustomMetadata["fvescrow-kind"] != "prk" {
		t.Fatalf("metadata of the PRK under %s: %+v %v", customMount, md, err)
	}
	list, err := root.Logical().ListWithContext(ctx, customMount+"/metadata/"+prefix)
	if err != nil || list == nil || fmt.Sprint(list.Data["keys"]) != "[escrow-key/ prk/]" {
		t.Fatalf("kinds under %s/%s: %v %v", customMount, prefix, list, err)
	}
	// Nothing under the default mount, at its default prefix or anywhere.
	if def, err := root.Logical().ListWithContext(ctx, vaultstore.DefaultMount+"/metadata/"); err != nil || def != nil {
		t.Fatalf("the default mount %q holds something: %v %v", vaultstore.DefaultMount, def, err)
	}

	// The shipped policy as is covers secret/data/fvescrow/* only: the same
	// store under it is refused on the custom mount.
	shipped := open(t, vaultstore.Config{Address: srv.Addr, Mount: customMount, Prefix: prefix,
		Auth: vaultstore.Auth{TokenFile: writeFile(t, srv.PolicyToken(t, policy(t)))}})
	if _, _, err := shipped.Get(ctx, prk, 0); !errors.Is(err, escrow.ErrForbidden) {
		t.Errorf("Get on %s under the unedited policy: %v, want ErrForbidden", customMount, err)
	}

	// The conformance suite, on the custom mount under the edited policy.
	t.Run("conformance", func(t *testing.T) {
		storetest.RunSecretStore(t, func(t *testing.T) escrow.SecretStore {
			p := prefix + "/t-" + randHex(6)
			return open(t, vaultstore.Config{Address: srv.Addr, Mount: customMount, Prefix: p,
				Auth: vaultstore.Auth{TokenFile: writeFile(t, srv.PolicyToken(t, mountPolicy(t, customMount, p)))}})
		})
	})
	if def, err := root.Logical().ListWithContext(ctx, vaultstore.DefaultMount+"/metadata/"); err != nil || def != nil {
		t.Fatalf("after the conformance suite, the default mount %q holds something: %v %v", vaultstore.DefaultMount, def, err)
	}
}
