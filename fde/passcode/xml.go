package passcode

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// checkXML reports the first XML error with its line, and bounds nesting
// before the recursive plist decoder sees the document.
func checkXML(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	depth, elems := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return fmt.Errorf("%w: line %d: %s", ErrMalformed, se.Line, se.Msg)
			}
			return fmt.Errorf("%w: not well-formed XML: %v", ErrMalformed, err)
		}
		switch tok.(type) {
		case xml.StartElement:
			elems++
			if depth++; depth > maxPlistDepth {
				return fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxPlistDepth)
			}
		case xml.EndElement:
			depth--
		}
	}
	if elems == 0 {
		return fmt.Errorf("%w: no XML elements", ErrMalformed)
	}
	return nil
}
