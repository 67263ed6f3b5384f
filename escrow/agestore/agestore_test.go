package agestore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/escrow/agestore"
	"github.com/fvescrow/fvescrow/escrow/storetest"
)

func newStore(t *testing.T) (*agestore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	id, created, err := agestore.LoadOrCreateIdentity(filepath.Join(dir, "identity", "age.key"))
	if err != nil || !created {
		t.Fatalf("identity: created=%v %v", created, err)
	}
	s, err := agestore.New(filepath.Join(dir, "secrets"), id)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestConformance(t *testing.T) {
	storetest.RunSecretStore(t, func(t *testing.T) escrow.SecretStore {
		s, _ := newStore(t)
		return s
	})
}

// TestEncryptedAtRest: no version file holds the secret in clear, and the
// identity file is private.
func TestEncryptedAtRest(t *testing.T) {
	s, dir := newStore(t)
	secret := []byte("ABCD-EFGH-JKLM-NPQR-STUV-WXY2")
	ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: "UDID-1"}
	if _, err := s.Put(context.Background(), ref, secret, 0, nil); err != nil {
		t.Fatal(err)
	}
	files := 0
	err := filepath.WalkDir(filepath.Join(dir, "secrets"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, secret) || !bytes.HasPrefix(b, []byte("age-encryption.org/v1")) {
			t.Errorf("%s is not an age file or holds the secret", p)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", p, st.Mode().Perm())
		}
		return nil
	})
	if err != nil || files != 1 {
		t.Fatalf("walk: %d files, %v", files, err)
	}
	st, err := os.Stat(filepath.Join(dir, "identity", "age.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %v %v", st.Mode().Perm(), err)
	}
}

// TestIdentityReload: a restarted server reads what it wrote, a different
// identity cannot, and a world-readable identity is refused.
func TestIdentityReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "age.key")
	id, _, err := agestore.LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := agestore.New(filepath.Join(dir, "s"), id)
	ref := escrow.SecretRef{Kind: escrow.KindBootstrapToken, Owner: "D"}
	if _, err := s.Put(context.Background(), ref, []byte("token"), 0, nil); err != nil {
		t.Fatal(err)
	}
	again, created, err := agestore.LoadOrCreateIdentity(path)
	if err != nil || created || again.String() != id.String() {
		t.Fatalf("reload: created=%v %v", created, err)
	}
	s2, _ := agestore.New(filepath.Join(dir, "s"), again)
	if got, _, err := s2.Get(context.Background(), ref, 0); err != nil || string(got) != "token" {
		t.Fatalf("after reload: %v", err)
	}
	other, _ := age.GenerateX25519Identity()
	s3, _ := agestore.New(filepath.Join(dir, "s"), other)
	if _, _, err := s3.Get(context.Background(), ref, 0); err == nil {
		t.Fatal("another identity decrypted the store")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := agestore.LoadOrCreateIdentity(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable identity accepted: %v", err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "# public key: age1") {
		t.Error("identity file lacks its public key comment")
	}
}

func BenchmarkPut(b *testing.B) {
	id, _ := age.GenerateX25519Identity()
	s, _ := agestore.New(b.TempDir(), id)
	secret := []byte("ABCD-EFGH-JKLM-NPQR-STUV-WXY2")
	for i := 0; b.Loop(); i++ {
		ref := escrow.SecretRef{Kind: escrow.KindPRK, Owner: "bench-" + strconv.Itoa(i)}
		if _, err := s.Put(context.Background(), ref, secret, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}
