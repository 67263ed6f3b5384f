package siem_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"
)

// This file is a strict reader of what a SIEM receives: RFC 6587 octet
// counting framing and the RFC 5424 message syntax, written from the RFCs'
// ABNF independently of the sender.

// syslogMsg is a parsed RFC 5424 message.
type syslogMsg struct {
	pri       int
	version   int
	timestamp time.Time
	hostname  string
	appName   string
	procID    string
	msgID     string
	sd        map[string]map[string]string // SD-ID → PARAM-NAME → value
	msg       []byte
}

const maxFrame = 64 << 10

// readFrame reads one octet-counted frame: MSG-LEN SP SYSLOG-MSG, where
// MSG-LEN = NONZERO-DIGIT *DIGIT. It returns io.EOF only at a frame
// boundary.
func readFrame(r *bufio.Reader) ([]byte, error) {
	var n int
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			if i == 0 && errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("frame length: %w", io.ErrUnexpectedEOF)
		}
		switch {
		case c == ' ' && i > 0:
			if n > maxFrame {
				return nil, fmt.Errorf("frame of %d octets", n)
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, fmt.Errorf("frame body: %w", err)
			}
			return b, nil
		case c >= '1' && c <= '9', c == '0' && i > 0:
			n = n*10 + int(c-'0')
			if i > 6 {
				return nil, errors.New("frame length too long")
			}
		default:
			return nil, fmt.Errorf("frame length: unexpected byte %q", c)
		}
	}
}

var timestampRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$`)

// parseRFC5424 parses SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG].
func parseRFC5424(b []byte) (syslogMsg, error) {
	var m syslogMsg
	p := &parser{b: b}
	if !p.take('<') {
		return m, errors.New("no PRI")
	}
	digits := p.while(func(c byte) bool { return c >= '0' && c <= '9' })
	if len(digits) == 0 || len(digits) > 3 || (len(digits) > 1 && digits[0] == '0') || !p.take('>') {
		return m, fmt.Errorf("bad PRI %q", digits)
	}
	m.pri, _ = strconv.Atoi(digits)
	if m.pri > 191 {
		return m, fmt.Errorf("PRI %d out of range", m.pri)
	}
	v := p.while(func(c byte) bool { return c >= '0' && c <= '9' })
	if v == "" || v[0] == '0' || len(v) > 3 {
		return m, fmt.Errorf("bad VERSION %q", v)
	}
	m.version, _ = strconv.Atoi(v)
	fields := make([]string, 5)
	limits := []int{0, 255, 48, 128, 32} // TIMESTAMP, HOSTNAME, APP-NAME, PROCID, MSGID
	for i := range fields {
		if !p.take(' ') {
			return m, fmt.Errorf("header field %d: no SP", i)
		}
		fields[i] = p.while(func(c byte) bool { return c >= 33 && c <= 126 })
		if fields[i] == "" || (limits[i] > 0 && len(fields[i]) > limits[i]) {
			return m, fmt.Errorf("header field %d: %q", i, fields[i])
		}
	}
	if fields[0] != "-" {
		if !timestampRE.MatchString(fields[0]) {
			return m, fmt.Errorf("TIMESTAMP %q", fields[0])
		}
		t, err := time.Parse(time.RFC3339Nano, fields[0])
		if err != nil {
			return m, fmt.Errorf("TIMESTAMP %q: %v", fields[0], err)
		}
		m.timestamp = t
	}
	m.hostname, m.appName, m.procID, m.msgID = fields[1], fields[2], fields[3], fields[4]
	if !p.take(' ') {
		return m, errors.New("no SP before STRUCTURED-DATA")
	}
	m.sd = map[string]map[string]string{}
	if !p.take('-') {
		if p.peek() != '[' {
			return m, errors.New("STRUCTURED-DATA is neither - nor [")
		}
		for p.take('[') {
			id := p.while(sdName)
			if id == "" || len(id) > 32 {
				return m, fmt.Errorf("SD-ID %q", id)
			}
			if _, dup := m.sd[id]; dup {
				return m, fmt.Errorf("SD-ID %s twice", id)
			}
			params := map[string]string{}
			for p.take(' ') {
				name := p.while(sdName)
				if name == "" || len(name) > 32 || !p.take('=') || !p.take('"') {
					return m, fmt.Errorf("SD-PARAM %q", name)
				}
				var val bytes.Buffer
				for {
					c, ok := p.next()
					if !ok {
						return m, errors.New("unterminated PARAM-VALUE")
					}
					if c == '"' {
						break
					}
					if c == ']' {
						return m, errors.New("unescaped ] in PARAM-VALUE")
					}
					if c == '\\' {
						if n := p.peek(); n == '"' || n == '\\' || n == ']' {
							c, _ = p.next()
						}
					}
					val.WriteByte(c)
				}
				params[name] = val.String()
			}
			if !p.take(']') {
				return m, errors.New("SD-ELEMENT not closed")
			}
			m.sd[id] = params
		}
	}
	if p.i == len(b) {
		return m, nil
	}
	if !p.take(' ') {
		return m, errors.New("no SP before MSG")
	}
	m.msg = b[p.i:]
	if bytes.HasPrefix(m.msg, []byte("\xEF\xBB\xBF")) {
		return m, errors.New("MSG has a BOM but the sender promises ASCII")
	}
	for _, c := range m.msg {
		if c >= 0x80 {
			return m, errors.New("MSG is not ASCII")
		}
	}
	return m, nil
}

func sdName(c byte) bool { return c >= 33 && c <= 126 && c != '=' && c != ']' && c != '"' }

type parser struct {
	b []byte
	i int
}

func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *parser) next() (byte, bool) {
	if p.i < len(p.b) {
		p.i++
		return p.b[p.i-1], true
	}
	return 0, false
}

func (p *parser) take(c byte) bool {
	if p.peek() == c && p.i < len(p.b) {
		p.i++
		return true
	}
	return false
}

func (p *parser) while(ok func(byte) bool) string {
	start := p.i
	for p.i < len(p.b) && ok(p.b[p.i]) {
		p.i++
	}
	return string(p.b[start:p.i])
}
