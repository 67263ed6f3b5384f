// Package cmstest makes FDE_PersonalRecoveryKeyCMS blobs for tests, with
// OpenSSL (an independent implementation, the shape real Macs produce) or in
// Go, and decrypts with OpenSSL to check fvescrow's own output.
package cmstest

import (
	"bytes"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil"
	"github.com/smallstep/pkcs7"
)

// Cipher names accepted by `openssl cms -encrypt`.
var Ciphers = []string{"des3", "aes128", "aes256"}

// OpenSSLOptions choose how OpenSSL encrypts.
type OpenSSLOptions struct {
	Cipher string // "des3" (what Macs use), "aes128" or "aes256"
	OAEP   bool   // RSA-OAEP key transport instead of PKCS#1 v1.5
}

// OpenSSLEncrypt encrypts plaintext to cert with `openssl cms -encrypt
// -stream`, which yields BER with indefinite lengths like a Mac does.
func OpenSSLEncrypt(t testing.TB, cert *x509.Certificate, plaintext []byte, o OpenSSLOptions) []byte {
	t.Helper()
	bin := testutil.LookPath(t, "openssl")
	dir := t.TempDir()
	certPath := WriteFile(t, dir, "recip.pem", fde.EncodeCertificatePEM(cert))
	in := WriteFile(t, dir, "in.txt", plaintext)
	out := filepath.Join(dir, "out.der")
	if o.Cipher == "" {
		o.Cipher = "des3"
	}
	args := []string{"cms", "-encrypt", "-binary", "-stream", "-in", in, "-outform", "DER", "-" + o.Cipher, "-recip", certPath}
	if o.OAEP {
		args = append(args, "-keyopt", "rsa_padding_mode:oaep")
	}
	args = append(args, "-out", out)
	Run(t, bin, args...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// OpenSSLDecrypt decrypts a DER CMS blob with `openssl cms -decrypt`.
func OpenSSLDecrypt(t testing.TB, blob []byte, id *fde.Identity) []byte {
	t.Helper()
	bin := testutil.LookPath(t, "openssl")
	dir := t.TempDir()
	keyPEM, err := fde.EncodePrivateKeyPEM(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	return Run(t, bin, "cms", "-decrypt", "-binary", "-inform", "DER",
		"-in", WriteFile(t, dir, "blob.der", blob),
		"-recip", WriteFile(t, dir, "cert.pem", fde.EncodeCertificatePEM(id.Certificate)),
		"-inkey", WriteFile(t, dir, "key.pem", keyPEM))
}

var encryptMu sync.Mutex // pkcs7 selects the cipher through a package variable

// Encrypt makes a blob in Go (AES-256-CBC, RSA PKCS#1 v1.5), for tests that
// need many blobs quickly.
func Encrypt(t testing.TB, cert *x509.Certificate, plaintext []byte) []byte {
	t.Helper()
	encryptMu.Lock()
	defer encryptMu.Unlock()
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
	b, err := pkcs7.Encrypt(plaintext, []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// WriteFile writes b to dir/name and returns the path.
func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Run runs a command and returns its stdout, failing the test on error.
func Run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.Bytes())
	}
	return stdout.Bytes()
}
