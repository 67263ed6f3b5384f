package auth_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// idp is a real OIDC provider (mockoidc) running in process. A middleware
// records what fvescrow sends to it, can tamper with the PKCE verifier on
// the way, and can advertise an end_session_endpoint. It also serializes
// requests: mockoidc's session map has no lock of its own.
type idp struct {
	*mockoidc.MockOIDC

	mu             sync.Mutex
	authorize      []url.Values // query of every authorization request
	token          []url.Values // form of every token request
	tokenStatus    []int
	tokenReplies   []map[string]any // successful token responses
	tamperVerifier bool
	endSession     bool
}

func startIdP(t *testing.T) *idp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startIdPOn(t, ln)
}

func startIdPOn(t *testing.T, ln net.Listener) *idp {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	i := &idp{MockOIDC: m}
	if err := m.AddMiddleware(i.middleware); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return i
}

// flakyListener drops every connection while down is set: an IdP that is
// unreachable, on an address it will later answer on.
type flakyListener struct {
	net.Listener
	down atomic.Bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.down.Load() {
			return c, err
		}
		c.Close()
	}
}

// endSessionURL is the end-session endpoint the IdP advertises when
// endSession is set.
func (i *idp) endSessionURL() string { return i.Addr() + "/oidc/logout" }

func (i *idp) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i.mu.Lock()
		defer i.mu.Unlock()
		switch r.URL.Path {
		case mockoidc.AuthorizationEndpoint:
			_ = r.ParseForm()
			i.authorize = append(i.authorize, cloneValues(r.Form))
		case mockoidc.TokenEndpoint:
			_ = r.ParseForm()
			if v := r.PostForm.Get("code_verifier"); v != "" && i.tamperVerifier {
				// A verifier other than the one the challenge was made from.
				bad := []byte(v)
				bad[0] ^= 1
				r.PostForm.Set("code_verifier", string(bad))
				r.Form.Set("code_verifier", string(bad))
			}
			i.token = append(i.token, cloneValues(r.PostForm))
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			i.tokenStatus = append(i.tokenStatus, rec.Code)
			if rec.Code == http.StatusOK {
				var reply map[string]any
				_ = json.Unmarshal(rec.Body.Bytes(), &reply)
				i.tokenReplies = append(i.tokenReplies, reply)
			}
			copyResponse(w, rec)
			return
		case mockoidc.DiscoveryEndpoint:
			if i.endSession {
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				var doc map[string]any
				_ = json.Unmarshal(rec.Body.Bytes(), &doc)
				doc["end_session_endpoint"] = i.endSessionURL()
				b, _ := json.Marshal(doc)
				rec.Body = bytes.NewBuffer(b)
				copyResponse(w, rec)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// redemptions counts token requests that carried a code (auto-detection
// of the client authentication style may make two per sign-in; only one
// can succeed).
func (i *idp) redemptions() (tries, ok int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for n, f := range i.token {
		if f.Get("code") != "" {
			tries++
			if i.tokenStatus[n] == http.StatusOK {
				ok++
			}
		}
	}
	return tries, ok
}

// secrets lists every secret value the IdP saw or issued, by what it is.
func (i *idp) secrets() map[string][]string {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := map[string][]string{"client secret": {i.ClientSecret}}
	for _, a := range i.authorize {
		for _, k := range []string{"state", "nonce", "code_challenge"} {
			out[k] = append(out[k], a.Get(k))
		}
	}
	for _, f := range i.token {
		for _, k := range []string{"code", "code_verifier"} {
			out[k] = append(out[k], f.Get(k))
		}
	}
	for _, rep := range i.tokenReplies {
		for _, k := range []string{"access_token", "id_token", "refresh_token"} {
			if s, ok := rep[k].(string); ok {
				out[k] = append(out[k], s)
			}
		}
	}
	return out
}

// locked runs f holding the IdP's lock, for changes to the IdP while it
// serves.
func (i *idp) locked(f func()) {
	i.mu.Lock()
	defer i.mu.Unlock()
	f()
}

func (i *idp) tokenRequests() []url.Values {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]url.Values(nil), i.token...)
}

func (i *idp) lastAuthorize() url.Values {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.authorize[len(i.authorize)-1]
}

// idpUser is a person at the IdP whose claims the test controls.
type idpUser struct {
	Sub                  string
	Email                string
	EmailVerified        *bool
	Name                 string
	Username             string
	Groups               []string
	GroupsInUserinfoOnly bool // the ID token carries no groups claim
	AMR                  []string
	ACR                  string
	Nonce                string         // when set, the ID token carries this nonce instead
	Extra                map[string]any // more ID token claims
}

var _ mockoidc.User = (*idpUser)(nil)

func (u *idpUser) ID() string { return u.Sub }

func (u *idpUser) Userinfo([]string) ([]byte, error) {
	return json.Marshal(map[string]any{"sub": u.Sub, "email": u.Email, "groups": u.Groups})
}

type idClaims struct {
	*mockoidc.IDTokenClaims
	Email             string   `json:"email,omitempty"`
	EmailVerified     *bool    `json:"email_verified,omitempty"`
	Name              string   `json:"name,omitempty"`
	PreferredUsername string   `json:"preferred_username,omitempty"`
	Groups            []string `json:"groups,omitempty"`
	AMR               []string `json:"amr,omitempty"`
	ACR               string   `json:"acr,omitempty"`
	extra             map[string]any
}

func (c *idClaims) MarshalJSON() ([]byte, error) {
	type plain idClaims // the fields without this method
	b, err := json.Marshal((*plain)(c))
	if err != nil || len(c.extra) == 0 {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range c.extra {
		m[k] = v
	}
	return json.Marshal(m)
}

func (u *idpUser) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	c := &idClaims{IDTokenClaims: base, Email: u.Email, EmailVerified: u.EmailVerified, Name: u.Name,
		PreferredUsername: u.Username, AMR: u.AMR, ACR: u.ACR, extra: u.Extra}
	if !u.GroupsInUserinfoOnly {
		c.Groups = u.Groups
	}
	if u.Nonce != "" {
		base.Nonce = u.Nonce
	}
	return c, nil
}

func ptr[T any](v T) *T { return &v }
