package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/fvescrow/fvescrow/api/wire"
	"github.com/fvescrow/fvescrow/internal/testutil/apitest"
)

// cred is how a test request authenticates: nothing, a bearer token, or a
// session cookie with (or without) its CSRF token.
type cred struct {
	name   string
	token  string
	cookie *http.Cookie
	csrf   string
}

func bearer(name, token string) cred { return cred{name: name, token: token} }

// answer is a response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errorCode is the code of the one error format, if the body is one.
func (a answer) errorCode() string {
	var e wire.Error
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

// call sends one request to the real server.
func call(t testing.TB, s *apitest.Server, c cred, method, path string, body any) answer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// decode reads a JSON answer, failing t on a status other than want.
func decode[T any](t testing.TB, a answer, want int) T {
	t.Helper()
	var v T
	if a.status != want {
		t.Fatalf("HTTP %d (%s), want %d", a.status, a.errorCode(), want)
	}
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return v
}
