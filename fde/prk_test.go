package fde_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/fde"
)

func TestParseRecoveryKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, want string
		canonical      bool
		err            error
	}{
		{"canonical", testPRK, testPRK, true, nil},
		{"trailing newline", testPRK + "\n", testPRK, true, nil},
		{"lower case", strings.ToLower(testPRK), testPRK, true, nil},
		{"no hyphens", strings.ReplaceAll(testPRK, "-", ""), testPRK, true, nil},
		{"spaces", strings.ReplaceAll(testPRK, "-", " "), testPRK, true, nil},
		{"short", "ABCD-EFGH", "ABCD-EFGH", false, nil},
		{"punctuation", "ABCD_EFGH-JKLM-NPQR-STUV-WXY2", "ABCD_EFGH-JKLM-NPQR-STUV-WXY2", false, nil},
		{"plist by mistake", "<string>" + testPRK + "</string>", "<string>" + testPRK + "</string>", false, nil},
		{"empty", "  \n", "", false, fde.ErrEmptyRecoveryKey},
		{"binary", "ABCD\x00EFGH", "", false, fde.ErrRecoveryKeyBinary},
		{"too long", strings.Repeat("A", fde.MaxRecoveryKeySize+1), "", false, fde.ErrRecoveryKeyTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := fde.ParseRecoveryKey([]byte(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if got.Expose() != tc.want || got.Canonical() != tc.canonical {
				t.Errorf("got %q canonical=%v, want %q canonical=%v", got.Expose(), got.Canonical(), tc.want, tc.canonical)
			}
			if !tc.canonical && tc.err == nil {
				if got.Warning() == "" {
					t.Error("odd key without a warning")
				}
				if strings.Contains(got.Warning(), tc.in) {
					t.Error("warning contains the key")
				}
			}
		})
	}
}

// TestSecretsRedact: secret types never print themselves.
func TestSecretsRedact(t *testing.T) {
	t.Parallel()
	k, err := fde.ParseRecoveryKey([]byte(testPRK))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := testIdentities(t)
	type holder struct {
		Key  fde.RecoveryKey
		Priv fde.PrivateKey
	}
	h := holder{Key: k, Priv: id.Key}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	logger.Info("x", "key", k, "priv", id.Key, "holder", h)
	logger.Info("y", slog.Any("key", k))
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Join([]string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x", k, k, k, k, k, k),
		fmt.Sprintf("%v %+v %#v", h, h, h), fmt.Sprint(id.Key), fmt.Sprintf("%#v %+v", id.Key, id.Key),
		string(js), logs.String(),
	}, "\n")
	if strings.Contains(out, testPRK) || strings.Contains(out, "ABCD") {
		t.Errorf("recovery key leaked:\n%s", out)
	}
	d := id.Key.RSA().D.String()
	if strings.Contains(out, d[:20]) {
		t.Errorf("private key leaked")
	}
	if !strings.Contains(out, fde.Redacted) {
		t.Errorf("no redaction marker in output")
	}
}

func TestRecoveryKeyEqual(t *testing.T) {
	t.Parallel()
	a, _ := fde.ParseRecoveryKey([]byte(testPRK))
	b, _ := fde.ParseRecoveryKey([]byte(strings.ToLower(testPRK)))
	c, _ := fde.ParseRecoveryKey([]byte("ZZZZ-EFGH-JKLM-NPQR-STUV-WXY2"))
	if !a.Equal(b) || a.Equal(c) {
		t.Error("Equal is wrong")
	}
}
