package fde_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/testutil/cmstest"
)

// TestOpenSSLInterop decrypts blobs OpenSSL makes at test time, in the shape
// Macs send (BER, indefinite lengths), over every content cipher and both RSA
// key transports.
func TestOpenSSLInterop(t *testing.T) {
	t.Parallel()
	id, _ := testIdentities(t)
	kr := keyringOf(t, id)
	for _, cipher := range cmstest.Ciphers {
		for _, oaep := range []bool{false, true} {
			name := fmt.Sprintf("%s/oaep=%v", cipher, oaep)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				blob := cmstest.OpenSSLEncrypt(t, id.Certificate, []byte(testPRK), cmstest.OpenSSLOptions{Cipher: cipher, OAEP: oaep})
				if !isIndefiniteBER(blob) {
					t.Fatalf("openssl -stream did not produce indefinite-length BER; the test would not cover Apple's format")
				}
				got, d, err := kr.DecryptRecoveryKey(blob)
				if err != nil {
					t.Fatalf("decrypt: %v", err)
				}
				if got.Expose() != testPRK || !got.Canonical() {
					t.Errorf("got key canonical=%v, want %s", got.Canonical(), "the PRK")
				}
				if fde.Fingerprint(d.Certificate) != fde.Fingerprint(id.Certificate) {
					t.Errorf("matched the wrong certificate")
				}
				wantTransport := "rsaEncryption"
				if oaep {
					wantTransport = "rsaesOaep"
				}
				if tr := d.Envelope.Recipients[0].KeyTransport; tr != wantTransport {
					t.Errorf("key transport %s, want %s", tr, wantTransport)
				}
			})
		}
	}
}

func isIndefiniteBER(b []byte) bool { return len(b) > 2 && b[0] == 0x30 && b[1] == 0x80 }

// TestDecryptsWithOpenSSL checks the other direction: a blob fvescrow's Go
// helper makes opens with `openssl cms -decrypt`.
func TestDecryptsWithOpenSSL(t *testing.T) {
	t.Parallel()
	id, _ := testIdentities(t)
	blob := cmstest.Encrypt(t, id.Certificate, []byte(testPRK))
	if got := cmstest.OpenSSLDecrypt(t, blob, id); string(got) != testPRK {
		t.Errorf("openssl decrypted %d bytes that differ from the PRK", len(got))
	}
	got, _, err := keyringOf(t, id).DecryptRecoveryKey(blob)
	if err != nil || got.Expose() != testPRK {
		t.Errorf("fvescrow decrypt of its own helper blob: %v", err)
	}
}

// TestRenewedCertificate: a renewed certificate shares the key but has a new
// serial. Blobs for either certificate must open while both are in the
// keyring; with only the new one, an old blob names the old serial.
func TestRenewedCertificate(t *testing.T) {
	t.Parallel()
	id, _ := testIdentities(t)
	renewed, err := fde.RenewCertificate(id.Certificate, id.Key, fde.IdentityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if renewed.SerialNumber.Cmp(id.Certificate.SerialNumber) == 0 {
		t.Fatal("renewal kept the serial")
	}
	oldBlob := cmstest.OpenSSLEncrypt(t, id.Certificate, []byte(testPRK), cmstest.OpenSSLOptions{})
	newBlob := cmstest.OpenSSLEncrypt(t, renewed, []byte(testPRK), cmstest.OpenSSLOptions{})

	both := keyringOf(t, id)
	if err := both.Add(renewed, id.Key); err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string][]byte{"old": oldBlob, "new": newBlob} {
		got, _, err := both.DecryptRecoveryKey(blob)
		if err != nil || got.Expose() != testPRK {
			t.Errorf("%s blob with both certificates: %v", name, err)
		}
	}

	onlyNew := keyringOf(t)
	if err := onlyNew.Add(renewed, id.Key); err != nil {
		t.Fatal(err)
	}
	_, _, err = onlyNew.DecryptRecoveryKey(oldBlob)
	var nre *fde.NoRecipientError
	if !errors.As(err, &nre) {
		t.Fatalf("old blob with only the renewed cert: got %v, want NoRecipientError", err)
	}
	if !strings.Contains(err.Error(), fde.SerialString(id.Certificate.SerialNumber)) {
		t.Errorf("error %q does not name the old serial", err)
	}
}

// TestStrangerRecipient: a blob for a certificate the keyring never had is
// reported with the issuer DN and serial it wants.
func TestStrangerRecipient(t *testing.T) {
	t.Parallel()
	id, stranger := testIdentities(t)
	blob := cmstest.OpenSSLEncrypt(t, stranger.Certificate, []byte(testPRK), cmstest.OpenSSLOptions{})
	_, _, err := keyringOf(t, id).DecryptRecoveryKey(blob)
	if !errors.Is(err, fde.ErrNoRecipient) {
		t.Fatalf("got %v, want ErrNoRecipient", err)
	}
	var nre *fde.NoRecipientError
	if !errors.As(err, &nre) || len(nre.Recipients) != 1 {
		t.Fatalf("got %#v", err)
	}
	r := nre.Recipients[0]
	if r.Issuer != stranger.Certificate.Issuer.String() || r.Serial.Cmp(stranger.Certificate.SerialNumber) != 0 {
		t.Errorf("recipient %v, want issuer %s serial %s", r, stranger.Certificate.Issuer, fde.SerialString(stranger.Certificate.SerialNumber))
	}
	for _, want := range []string{"CN=fvescrow test escrow", fde.SerialString(stranger.Certificate.SerialNumber)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestKeyringRejectsMismatchedKey(t *testing.T) {
	t.Parallel()
	a, b := testIdentities(t)
	if err := keyringOf(t).Add(a.Certificate, b.Key); err == nil {
		t.Fatal("keyring accepted a key that does not belong to the certificate")
	}
}

func TestKeyringCurrentAndList(t *testing.T) {
	t.Parallel()
	a, _ := testIdentities(t)
	renewed, err := fde.RenewCertificate(a.Certificate, a.Key, fde.IdentityOptions{Now: a.Certificate.NotBefore.Add(48 * 3600e9)})
	if err != nil {
		t.Fatal(err)
	}
	kr := keyringOf(t, a)
	if err := kr.Add(renewed, a.Key); err != nil {
		t.Fatal(err)
	}
	if err := kr.Add(renewed, a.Key); err != nil { // duplicate is a no-op
		t.Fatal(err)
	}
	if kr.Len() != 2 {
		t.Fatalf("len %d, want 2", kr.Len())
	}
	now := renewed.NotBefore.Add(3600e9)
	if got := kr.Current(now); got == nil || !got.Equal(renewed) {
		t.Errorf("current is not the newest valid certificate")
	}
	list := kr.List()
	if list[0].Fingerprint != fde.Fingerprint(renewed) || list[0].KeyBits != 2048 || len(list[0].Fingerprint) != 64 {
		t.Errorf("list %+v", list[0])
	}
	if kr.Current(renewed.NotAfter.Add(3600e9)) != nil {
		t.Errorf("an expired certificate is current")
	}
}

// TestMalformedBlobs: every bad input gives a classified error, never a panic.
func TestMalformedBlobs(t *testing.T) {
	t.Parallel()
	kr := fixtureKeyring(t)
	good, err := os.ReadFile("testdata/cms/seed-des3-pkcs1.der")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		blob []byte
		want error
	}{
		{"empty", nil, fde.ErrMalformedCMS},
		{"garbage", []byte("not a cms blob at all"), fde.ErrMalformedCMS},
		{"truncated", good[:len(good)/2], fde.ErrMalformedCMS},
		{"trailing", append(append([]byte{}, good...), 0x01, 0x02), fde.ErrMalformedCMS},
		{"oversized", bytes.Repeat([]byte{0x30}, fde.MaxCMSSize+1), fde.ErrMalformedCMS},
		{"deep nesting", deepBER(100), fde.ErrMalformedCMS},
		{"short ciphertext", truncateCiphertext(t, good), fde.ErrMalformedCMS},
		{"signed data", signedData(t), fde.ErrMalformedCMS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := kr.DecryptRecoveryKey(tc.blob)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestBadPaddingNoPanic: anyone holding the public escrow certificate can
// make a blob whose content padding is invalid; smallstep/pkcs7 would panic on
// it. It must be an error.
func TestBadPaddingNoPanic(t *testing.T) {
	t.Parallel()
	id, _ := testIdentities(t)
	for _, pad := range []byte{0x00, 0x11, 0xff} {
		blob := cmstest.EnvelopeWithRawContent(t, id.Certificate, bytes.Repeat([]byte{pad}, 32))
		_, _, err := keyringOf(t, id).DecryptRecoveryKey(blob)
		if err == nil {
			t.Errorf("padding byte %#x: no error", pad)
		}
	}
}

func deepBER(n int) []byte {
	b := []byte{}
	for i := 0; i < n; i++ {
		b = append(b, 0x30, 0x80)
	}
	for i := 0; i < n; i++ {
		b = append(b, 0, 0)
	}
	return b
}

// truncateCiphertext drops the last byte of the (chunked) encrypted content,
// which makes it no longer whole cipher blocks. The content is the last
// OCTET STRING chunk before the end-of-contents markers.
func truncateCiphertext(t *testing.T, blob []byte) []byte {
	t.Helper()
	b := append([]byte{}, blob...)
	// Find the final primitive OCTET STRING chunk: 0x04 <len> <bytes> then EOCs.
	end := len(b)
	for end >= 2 && b[end-1] == 0 && b[end-2] == 0 {
		end -= 2
	}
	for i := end - 2; i > 0; i-- {
		if b[i] == 0x04 && int(b[i+1]) == end-i-2 {
			out := append([]byte{}, b[:i]...)
			out = append(out, 0x04, b[i+1]-1)
			out = append(out, b[i+2:end-1]...)
			return append(out, b[end:]...)
		}
	}
	t.Fatal("could not locate the ciphertext chunk")
	return nil
}

func signedData(t *testing.T) []byte {
	t.Helper()
	id, _ := testIdentities(t)
	der, err := fde.SignProfile([]byte("<plist/>"), id.Certificate, id.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestFixtureSeedsDecrypt keeps the committed fuzz seeds honest.
func TestFixtureSeedsDecrypt(t *testing.T) {
	t.Parallel()
	kr := fixtureKeyring(t)
	files, _ := filepath.Glob("testdata/cms/*.der")
	if len(files) != 6 {
		t.Fatalf("found %d seed blobs, want 6", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := kr.DecryptRecoveryKey(b)
		if err != nil || got.Expose() != testPRK {
			t.Errorf("%s: %v", f, err)
		}
	}
}
