package mcpparse

import (
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json/jsontext"
)

// ErrNotString reports a member on a LocateString path that is present
// but not an object (on the way) or not a string (at the end).
var ErrNotString = errors.New("mcpparse: member is not of the expected type")

// Span is where a JSON string value lies in a message: msg[Start:End] is
// the quoted literal as written (escapes included), Value its decoded
// text.
type Span struct {
	Start, End int
	Value      string
}

// LocateString finds the string member at path (object member names from
// the top level, e.g. "params", "taskId") in msg, one JSON object, so that
// a caller can replace exactly that value and nothing else. Names match
// exactly, and the first match is taken without reading further: msg
// must have passed Parse, which refuses duplicate and case-variant names,
// so the member found is the only one any decoder reads. found is false when a member on the path is absent; a member
// present but of another type is ErrNotString.
// Used for task id binding in the gateway.
func LocateString(msg []byte, path ...string) (s Span, found bool, err error) {
	if len(path) == 0 {
		return Span{}, false, errors.New("mcpparse: empty path")
	}
	p := newLocator(msg)
	defer p.free()
	dec := &p.dec
	if err := enterObject(dec, "message"); err != nil {
		return Span{}, false, err
	}
	for depth, name := range path {
		for {
			if dec.PeekKind() == '}' {
				return Span{}, false, nil
			}
			tok, err := dec.ReadToken()
			if err != nil {
				return Span{}, false, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
			}
			if tok.String() != name {
				if err := dec.SkipValue(); err != nil {
					return Span{}, false, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
				}
				continue
			}
			if depth < len(path)-1 {
				if err := enterObject(dec, name); err != nil {
					return Span{}, false, err
				}
				break
			}
			v, err := dec.ReadValue()
			if err != nil {
				return Span{}, false, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
			}
			if v.Kind() != '"' {
				return Span{}, false, fmt.Errorf("%w: %s is not a string", ErrNotString, name)
			}
			if p.unq, err = jsontext.AppendUnquote(p.unq[:0], v); err != nil {
				return Span{}, false, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
			}
			end := int(dec.InputOffset())
			return Span{Start: end - len(v), End: end, Value: string(p.unq)}, true, nil
		}
	}
	panic("unreachable")
}

// newLocator is newParser for LocateString, which reads with the
// tokenizer alone: a pooled one, since a fresh one allocates its input
// buffer and stacks anew (a dozen objects for a small answer, on every
// answer read for a task id or request state). It refuses duplicate
// names itself, as LocateString's reading always has.
func newLocator(msg []byte) *parser {
	p := newParser(msg, 0)
	p.dec.Reset(&p.src, jsontext.AllowDuplicateNames(false), jsontext.AllowInvalidUTF8(false))
	return p
}

// enterObject reads the '{' that must come next.
func enterObject(dec *jsontext.Decoder, what string) error {
	tok, err := dec.ReadToken()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	if tok.Kind() != '{' {
		return fmt.Errorf("%w: %s is not an object", ErrNotString, what)
	}
	return nil
}

// ReplaceString returns msg with the string literal at s replaced by value,
// quoted; every other byte is kept.
func ReplaceString(msg []byte, s Span, value string) ([]byte, error) {
	if s.Start < 0 || s.End > len(msg) || s.Start >= s.End || msg[s.Start] != '"' || msg[s.End-1] != '"' {
		return nil, errors.New("mcpparse: span is not a string literal of msg")
	}
	out := make([]byte, 0, len(msg)-(s.End-s.Start)+len(value)+2)
	out = append(out, msg[:s.Start]...)
	out, err := jsontext.AppendQuote(out, value)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	return append(out, msg[s.End:]...), nil
}
