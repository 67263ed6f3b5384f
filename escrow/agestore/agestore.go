// Package agestore is the embedded default SecretStore: every secret version
// is one file encrypted with age (filippo.io/age) to an X25519 identity the
// server creates on first start.
//
// Layout: <dir>/<kind>/<owner>/<version>.age, e.g. prk/<UDID>/3.age. A
// version file is created with a hard link that fails if the name exists, so
// check-and-set holds even between processes, and a version is never
// overwritten or deleted.
//
// The identity file sits on the same machine as the data, so this protects
// keys from backups and stray copies of the data folder, not from someone who
// can read the server's disk. Production deployments should keep secrets in
// Vault (escrow/vaultstore).
package agestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"filippo.io/age"
	"github.com/fvescrow/fvescrow/escrow"
)

// Store is an age-encrypted SecretStore in a directory.
type Store struct {
	dir   string
	id    *age.X25519Identity
	recip age.Recipient
	log   *slog.Logger
	locks sync.Map // ref path → *sync.Mutex: serialises writers in this process
}

var _ escrow.SecretStore = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) { s.log = l.With("component", "agestore") }
}

// New returns a store of secrets in dir, encrypted to id.
func New(dir string, id *age.X25519Identity, opts ...Option) (*Store, error) {
	if id == nil {
		return nil, errors.New("agestore: no identity")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agestore: %w", err)
	}
	s := &Store{dir: dir, id: id, recip: id.Recipient(), log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// LoadIdentity reads an existing age identity file, refusing one that other
// users can read.
func LoadIdentity(path string) (*age.X25519Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agestore: read identity: %w", err)
	}
	return parseIdentity(path, b)
}

// LoadOrCreateIdentity reads the age identity at path, or creates it (mode
// 0600, in a 0700 folder) when it does not exist. It refuses an identity file
// other users can read.
func LoadOrCreateIdentity(path string) (id *age.X25519Identity, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, false, fmt.Errorf("agestore: generate identity: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("agestore: %w", err)
		}
		content := "# fvescrow secret-store identity: decrypts every escrowed key. Keep it secret, back it up offline.\n" +
			"# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("agestore: create identity: %w", err)
		}
		if _, err := f.WriteString(content); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("agestore: write identity: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, false, err
		}
		return id, true, f.Close()
	}
	if err != nil {
		return nil, false, fmt.Errorf("agestore: read identity: %w", err)
	}
	id, err = parseIdentity(path, b)
	return id, false, err
}

func parseIdentity(path string, b []byte) (*age.X25519Identity, error) {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("agestore: identity %s has mode %v; it must not be readable by others (chmod 600)", path, st.Mode().Perm())
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("agestore: parse identity %s: invalid identity file", path)
	}
	for _, i := range ids {
		if x, ok := i.(*age.X25519Identity); ok {
			return x, nil
		}
	}
	return nil, fmt.Errorf("agestore: %s holds no X25519 identity", path)
}

func (s *Store) refDir(ref escrow.SecretRef) (string, error) {
	if err := ref.Validate(); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, string(ref.Kind), ref.Owner), nil
}

func (s *Store) lock(dir string) func() {
	m, _ := s.locks.LoadOrStore(dir, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// latest returns the highest version number in dir (0 when none).
func latest(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".age")
		if !ok {
			continue
		}
		if v, err := strconv.Atoi(name); err == nil && v > n {
			n = v
		}
	}
	return n, nil
}

// Put writes a new version if cas is the latest version.
func (s *Store) Put(ctx context.Context, ref escrow.SecretRef, secret []byte, cas int, _ escrow.SecretMeta) (int, error) {
	dir, err := s.refDir(ref)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	defer s.lock(dir)()
	cur, err := latest(dir)
	if err != nil {
		return 0, fmt.Errorf("agestore: put %s: %w", ref, err)
	}
	if cur != cas {
		return 0, fmt.Errorf("agestore: put %s: %w: latest version is %d, not %d", ref, escrow.ErrConflict, cur, cas)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("agestore: put %s: %w", ref, err)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, s.recip)
	if err != nil {
		return 0, fmt.Errorf("agestore: put %s: %w", ref, err)
	}
	if _, err := w.Write(secret); err != nil {
		return 0, fmt.Errorf("agestore: put %s: encrypt: %w", ref, err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("agestore: put %s: encrypt: %w", ref, err)
	}
	v := cur + 1
	if err := writeExclusive(dir, strconv.Itoa(v)+".age", buf.Bytes()); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("agestore: put %s: %w: version %d was written concurrently", ref, escrow.ErrConflict, v)
		}
		return 0, fmt.Errorf("agestore: put %s: %w", ref, err)
	}
	return v, nil
}

// writeExclusive makes dir/name appear complete or not at all, and never
// replaces an existing file: write a temp file, sync, then hard-link it.
func writeExclusive(dir, name string, b []byte) error {
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Get reads version v (0: latest).
func (s *Store) Get(ctx context.Context, ref escrow.SecretRef, v int) ([]byte, int, error) {
	dir, err := s.refDir(ref)
	if err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if v == 0 {
		if v, err = latest(dir); err != nil {
			return nil, 0, fmt.Errorf("agestore: get %s: %w", ref, err)
		}
		if v == 0 {
			return nil, 0, fmt.Errorf("agestore: get %s: %w", ref, escrow.ErrNotFound)
		}
	}
	f, err := os.Open(filepath.Join(dir, strconv.Itoa(v)+".age"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("agestore: get %s v%d: %w", ref, v, escrow.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("agestore: get %s v%d: %w", ref, v, err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, s.id)
	if err != nil {
		return nil, 0, fmt.Errorf("agestore: get %s v%d: decrypt: %w", ref, v, err)
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("agestore: get %s v%d: decrypt: %w", ref, v, err)
	}
	return b, v, nil
}
