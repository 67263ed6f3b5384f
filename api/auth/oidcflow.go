package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// flowCookie holds one browser's sign-in in progress, sealed. The __Host-
// prefix keeps it Secure, host-only and on path /.
const flowCookie = "__Host-fvescrow-oidc"

// flowLifetime bounds how long a sign-in may take at the IdP.
const flowLifetime = 10 * time.Minute

// flow is a sign-in in progress: what the callback must check and the PKCE
// verifier it must send. It lives only in the browser, sealed, so any
// replica can finish it.
type flow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ReturnTo string `json:"r"`
	Expires  int64  `json:"e"` // unix seconds
}

// flowSealer encrypts flows with AES-256-GCM under a key derived from the
// client secret: every replica shares it without another secret to
// distribute, and only someone who could already act as the client could
// forge a flow.
type flowSealer struct {
	aead cipher.AEAD
	aad  []byte
}

func newFlowSealer(secret ClientSecret, issuer, clientID string) *flowSealer {
	key, err := hkdf.Key(sha256.New, []byte(secret.Reveal()), []byte(issuer+"\x00"+clientID), "fvescrow oidc flow cookie v1", 32)
	if err != nil {
		panic(err) // only for lengths HKDF cannot produce
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &flowSealer{aead: aead, aad: []byte(flowCookie)}
}

func (s *flowSealer) seal(f flow) (string, error) {
	plain, err := json.Marshal(f)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, s.aad)), nil
}

// maxFlowCookie bounds what open decodes (a flow is a few hundred bytes).
const maxFlowCookie = 4096

func (s *flowSealer) open(v string) (flow, error) {
	if len(v) > maxFlowCookie {
		return flow{}, errors.New("flow cookie too large")
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) < s.aead.NonceSize() {
		return flow{}, errors.New("flow cookie malformed")
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], s.aad)
	if err != nil {
		return flow{}, errors.New("flow cookie not sealed by this server")
	}
	var f flow
	if err := json.Unmarshal(plain, &f); err != nil || f.State == "" || f.Nonce == "" || f.Verifier == "" {
		return flow{}, fmt.Errorf("flow cookie malformed")
	}
	return f, nil
}

// replayCache remembers the states of finished flows until they expire, so
// a flow is used once even if its cookie was copied. Across replicas, the
// IdP's own rule that a code is redeemed once is what stops a replay.
type replayCache struct {
	mu   sync.Mutex
	seen map[[32]byte]time.Time // SHA-256 of the state -> flow expiry
}

// maxReplayEntries bounds the memory the cache may take; beyond it the
// oldest protection gives way (the IdP still refuses a code twice).
const maxReplayEntries = 100_000

func newReplayCache() *replayCache { return &replayCache{seen: map[[32]byte]time.Time{}} }

// take marks state as used and reports whether it was unused.
func (c *replayCache) take(state string, expires, now time.Time) bool {
	k := sha256.Sum256([]byte(state))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[k]; ok {
		return false
	}
	if len(c.seen) >= maxReplayEntries {
		for key, exp := range c.seen {
			if now.After(exp) || len(c.seen) >= maxReplayEntries {
				delete(c.seen, key)
			}
		}
	}
	c.seen[k] = expires
	return true
}

// limitedClient is client with IdP response bodies bounded (discovery,
// keys, tokens and user info are all small).
func limitedClient(client *http.Client) *http.Client {
	c := *client
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = limitTransport{base: base}
	return &c
}

const maxIdPResponse = 1 << 20

type limitTransport struct{ base http.RoundTripper }

func (t limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxIdPResponse}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("identity provider response too large")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
