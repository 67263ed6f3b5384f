package fde

import (
	"errors"
	"fmt"
)

// maxBERDepth bounds nesting; EnvelopedData needs well under ten levels.
const maxBERDepth = 32

var errBER = errors.New("invalid BER encoding")

// berToDER re-encodes BER as definite-length encoding so encoding/asn1 can read
// it. Macs send FDE_PersonalRecoveryKeyCMS with indefinite lengths (openssl
// -stream makes the same shape). Universal constructed OCTET STRINGs are joined
// into one primitive string, as DER requires. Other constructed strings keep
// their structure; CMS readers accept that for encryptedContent.
//
// smallstep/pkcs7 has a converter too, but does not export it, and fde must
// read the recipient list itself to name the certificate a blob wants.
func berToDER(in []byte) ([]byte, error) {
	n, rest, err := parseBER(in, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBER, len(rest))
	}
	return n.encode(nil), nil
}

type berNode struct {
	id       []byte // identifier octets as received
	content  []byte // primitive content
	children []berNode
	prim     bool
}

func parseBER(b []byte, depth int) (berNode, []byte, error) {
	if depth > maxBERDepth {
		return berNode{}, nil, fmt.Errorf("%w: nested deeper than %d", errBER, maxBERDepth)
	}
	if len(b) < 2 {
		return berNode{}, nil, fmt.Errorf("%w: truncated element", errBER)
	}
	// Identifier octets: low-tag form, or high-tag form of up to 4 more bytes.
	idLen := 1
	if b[0]&0x1f == 0x1f {
		for {
			if idLen >= len(b) || idLen > 4 {
				return berNode{}, nil, fmt.Errorf("%w: bad tag", errBER)
			}
			c := b[idLen]
			idLen++
			if c&0x80 == 0 {
				break
			}
		}
	}
	n := berNode{id: b[:idLen], prim: b[0]&0x20 == 0}
	b = b[idLen:]
	if len(b) == 0 {
		return berNode{}, nil, fmt.Errorf("%w: missing length", errBER)
	}
	l := int(b[0])
	b = b[1:]
	if l == 0x80 {
		if n.prim {
			return berNode{}, nil, fmt.Errorf("%w: indefinite length on a primitive", errBER)
		}
		for {
			if len(b) >= 2 && b[0] == 0 && b[1] == 0 {
				b = b[2:]
				break
			}
			c, rest, err := parseBER(b, depth+1)
			if err != nil {
				return berNode{}, nil, err
			}
			n.children = append(n.children, c)
			b = rest
		}
		return n.flatten(), b, nil
	}
	if l > 0x80 {
		nb := l & 0x7f
		if nb > 4 || nb > len(b) {
			return berNode{}, nil, fmt.Errorf("%w: bad length", errBER)
		}
		l = 0
		for _, c := range b[:nb] {
			l = l<<8 | int(c)
		}
		b = b[nb:]
	}
	if l < 0 || l > len(b) {
		return berNode{}, nil, fmt.Errorf("%w: length %d exceeds input", errBER, l)
	}
	body, rest := b[:l], b[l:]
	if n.prim {
		n.content = body
		return n, rest, nil
	}
	for len(body) > 0 {
		c, r, err := parseBER(body, depth+1)
		if err != nil {
			return berNode{}, nil, err
		}
		n.children = append(n.children, c)
		body = r
	}
	return n.flatten(), rest, nil
}

// flatten turns a universal constructed OCTET STRING into a primitive one.
func (n berNode) flatten() berNode {
	if len(n.id) != 1 || n.id[0] != 0x24 {
		return n
	}
	var buf []byte
	for _, c := range n.children {
		if !c.prim || len(c.id) != 1 || c.id[0] != 0x04 {
			return n // not a plain chunked string; leave it for asn1 to reject
		}
		buf = append(buf, c.content...)
	}
	return berNode{id: []byte{0x04}, content: buf, prim: true}
}

func (n berNode) encode(dst []byte) []byte {
	body := n.content
	if !n.prim {
		body = nil
		for _, c := range n.children {
			body = c.encode(body)
		}
	}
	dst = append(dst, n.id...)
	dst = appendLength(dst, len(body))
	return append(dst, body...)
}

func appendLength(dst []byte, l int) []byte {
	if l < 0x80 {
		return append(dst, byte(l))
	}
	var tmp [4]byte
	i := len(tmp)
	for l > 0 {
		i--
		tmp[i] = byte(l)
		l >>= 8
	}
	dst = append(dst, 0x80|byte(len(tmp)-i))
	return append(dst, tmp[i:]...)
}
