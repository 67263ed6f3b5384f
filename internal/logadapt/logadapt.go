// Package logadapt lets nanomdm and other micromdm libraries log through
// slog, so their lines land in fvescrow's stream with the same format and
// level. It also keeps device payloads out of the log: nanomdm logs the raw
// body of a request it cannot parse ("content", and inside *mdm.ParseError),
// which could hold a token.
package logadapt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/micromdm/nanolib/log"
	"github.com/micromdm/nanomdm/mdm"
)

// Logger implements nanolib's log.Logger over slog.
type Logger struct {
	l *slog.Logger
}

var _ log.Logger = Logger{}

// New adapts l.
func New(l *slog.Logger) Logger { return Logger{l: l} }

// Info logs at info level. nanolib passes key/value pairs, the message
// under the key "msg".
func (a Logger) Info(kv ...interface{}) { a.log(slog.LevelInfo, kv) }

// Debug logs at debug level.
func (a Logger) Debug(kv ...interface{}) { a.log(slog.LevelDebug, kv) }

// With returns a logger carrying kv on every line.
func (a Logger) With(kv ...interface{}) log.Logger {
	_, attrs := split(kv)
	args := make([]any, len(attrs))
	for i, at := range attrs {
		args[i] = at
	}
	return Logger{l: a.l.With(args...)}
}

func (a Logger) log(level slog.Level, kv []interface{}) {
	if !a.l.Enabled(context.Background(), level) {
		return
	}
	msg, attrs := split(kv)
	a.l.LogAttrs(context.Background(), level, msg, attrs...)
}

func split(kv []interface{}) (string, []slog.Attr) {
	msg := ""
	var attrs []slog.Attr
	for i := 0; i < len(kv); i += 2 {
		key := fmt.Sprint(kv[i])
		var v any = "(missing)"
		if i+1 < len(kv) {
			v = kv[i+1]
		}
		switch key {
		case "msg":
			msg = fmt.Sprint(v)
			continue
		case "content", "body", "raw":
			v = fmt.Sprintf("[%d bytes withheld]", size(v))
		}
		if err, ok := v.(error); ok {
			v = scrub(err)
		}
		attrs = append(attrs, slog.Any(key, v))
	}
	return msg, attrs
}

func size(v any) int {
	switch x := v.(type) {
	case string:
		return len(x)
	case []byte:
		return len(x)
	}
	return 0
}

// scrub drops the payload a *mdm.ParseError carries.
func scrub(err error) string {
	var pe *mdm.ParseError
	if errors.As(err, &pe) {
		return "parse error: " + fmt.Sprint(pe.Err)
	}
	return err.Error()
}

// Kit adapts slog to go-kit's log.Logger (Log(keyvals...) error), which the
// SCEP server uses. Its lines are debug-level: they are per request.
type Kit struct{ l *slog.Logger }

// NewKit adapts l for go-kit.
func NewKit(l *slog.Logger) Kit { return Kit{l: l} }

// Log logs key/value pairs at debug level.
func (k Kit) Log(kv ...interface{}) error {
	if !k.l.Enabled(context.Background(), slog.LevelDebug) {
		return nil
	}
	msg, attrs := split(kv)
	if msg == "" {
		msg = "scep"
	}
	k.l.LogAttrs(context.Background(), slog.LevelDebug, msg, attrs...)
	return nil
}
