package logadapt_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/fvescrow/fvescrow/internal/logadapt"
	"github.com/micromdm/nanomdm/mdm"
)

func TestAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := logadapt.New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	secret := "UNLOCK-TOKEN-BYTES"
	l.With("handler", "checkin").Info("msg", "decoding", "content", secret, "err", fmt.Errorf("wrap: %w", &mdm.ParseError{Err: errors.New("bad plist"), Content: []byte(secret)}))
	l.Debug("msg", "debug line", "id", "UDID-1")
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Fatalf("payload reached the log:\n%s", out)
	}
	for _, want := range []string{"msg=decoding", "handler=checkin", "content=\"[18 bytes withheld]\"", "parse error: bad plist", "level=DEBUG", "id=UDID-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	buf.Reset()
	logadapt.New(slog.New(slog.NewTextHandler(&buf, nil))).Debug("msg", "hidden")
	if buf.Len() != 0 {
		t.Error("debug logged at info level")
	}
}
