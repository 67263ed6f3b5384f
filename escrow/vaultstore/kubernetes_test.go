package vaultstore_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/vaultstore"
	"github.com/fvescrow/fvescrow/internal/testutil/vaulttest"
)

// TestKubernetesLogin runs Vault's real Kubernetes auth method against a
// stand-in for the one part of Kubernetes it calls: the TokenReview API,
// which here accepts exactly the service-account tokens the test issued and
// has not revoked. No kubelet, no real service-account token: the test shows
// that the store's login request is what Vault's Kubernetes auth accepts and
// that a rotated projected token file is read at the next login.
func TestKubernetesLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.StartDev(t)
	k8s := newTokenReviewer(t)

	root := srv.Client()
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vault.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "fvescrow", policy(t)); err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string]map[string]any{
		"auth/kubernetes/config": {"kubernetes_host": k8s.URL, "disable_local_ca_jwt": true},
		"auth/kubernetes/role/fvescrow": {
			"bound_service_account_names":      "fvescrow",
			"bound_service_account_namespaces": "fvescrow",
			"token_policies":                   "fvescrow",
			"token_no_default_policy":          true,
			"token_ttl":                        3600,
		},
	} {
		if _, err := root.Logical().WriteWithContext(ctx, path, data); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}

	jwtFile := writeFile(t, k8s.issue())
	client := srv.Client()
	client.ClearToken()
	s := open(t, vaultstore.Config{
		Prefix: testPrefix(),
		Auth:   vaultstore.Auth{Kubernetes: &vaultstore.Kubernetes{Role: "fvescrow", ServiceAccountTokenFile: jwtFile}},
	}, vaultstore.WithClient(client))
	if _, err := s.Put(ctx, prk, []byte("x"), 0, nil); err != nil {
		t.Fatalf("Put: %v", err)
	}

	// The kubelet rotates the projected token; the old one stops working.
	k8s.revokeAll()
	replaceFile(t, jwtFile, k8s.issue())
	// Force a new login: Vault forgets fvescrow's token.
	if err := root.Auth().Token().RevokeTreeWithContext(ctx, client.Token()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, prk, []byte("y"), 1, nil); err != nil {
		t.Fatalf("Put after the token rotated: %v", err)
	}
	if got, v, err := s.Get(ctx, prk, 0); err != nil || v != 2 || string(got) != "y" {
		t.Fatalf("Get: %q v%d %v", got, v, err)
	}
	if n := k8s.reviews(); n != 2 {
		t.Errorf("%d token reviews, want 2 (one per login)", n)
	}

	// A role the token is not bound to is refused at New.
	_, err := vaultstore.New(ctx, vaultstore.Config{
		Address: srv.Addr,
		Auth:    vaultstore.Auth{Kubernetes: &vaultstore.Kubernetes{Role: "nope", ServiceAccountTokenFile: jwtFile}},
	})
	if !errors.Is(err, escrow.ErrInvalid) {
		t.Fatalf("New with an unknown role: %v, want ErrInvalid", err)
	}
}

// tokenReviewer is a stand-in for the Kubernetes API's TokenReview endpoint.
type tokenReviewer struct {
	*httptest.Server
	key *rsa.PrivateKey

	mu    sync.Mutex
	valid map[string]bool
	n     int
}

func newTokenReviewer(t *testing.T) *tokenReviewer {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k := &tokenReviewer{key: key, valid: map[string]bool{}}
	k.Server = httptest.NewServer(http.HandlerFunc(k.review))
	t.Cleanup(k.Close)
	return k
}

// issue returns a new service-account JWT for fvescrow/fvescrow.
func (k *tokenReviewer) issue() string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:fvescrow:fvescrow",
		"kubernetes.io/serviceaccount/namespace": "fvescrow",
		"kubernetes.io/serviceaccount/service-account.name": "fvescrow",
		"kubernetes.io/serviceaccount/service-account.uid":  "uid-fvescrow",
		"jti": randHex(8),
	})
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	jwt := signing + "." + base64.RawURLEncoding.EncodeToString(sig)
	k.mu.Lock()
	k.valid[jwt] = true
	k.mu.Unlock()
	return jwt
}

func (k *tokenReviewer) revokeAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.valid)
}

func (k *tokenReviewer) reviews() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}

func (k *tokenReviewer) review(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Spec struct {
			Token string `json:"token"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	k.mu.Lock()
	k.n++
	ok := k.valid[req.Spec.Token] && r.Header.Get("Authorization") == "Bearer "+req.Spec.Token
	k.mu.Unlock()
	status := map[string]any{"authenticated": false}
	if ok {
		status = map[string]any{"authenticated": true, "user": map[string]any{
			"username": "system:serviceaccount:fvescrow:fvescrow", "uid": "uid-fvescrow",
		}}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, mustJSON(map[string]any{
		"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status,
	}))
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
