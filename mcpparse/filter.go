package mcpparse

import (
	"bytes"
	"fmt"

	"github.com/go-json-experiment/json/jsontext"
)

// responseMaxDepth bounds responses, which come from the upstream: tool
// input schemas nest deeper than requests usually do.
const responseMaxDepth = 2 * DefaultMaxDepth

// toolsList is where result.tools sits in a response.
type toolsList struct {
	sawResult  bool
	found      bool
	start, end int // the array, brackets included
	items      []toolItem
}

type toolItem struct {
	start, end int
	name       string
}

// FilterToolsList takes one JSON-RPC response message (a tools/list result)
// and returns it with result.tools reduced to those for which allow(name)
// is true, every other member byte-for-byte unchanged where possible. It
// returns the input unchanged if the message is an error response.
//
// The message is read as strictly as Parse reads requests (duplicate and
// case-variant names anywhere, depth, UTF-8, trailing data). A result
// without a tools array, or a tool without a string name, is an error: the
// caller cannot know what it would forward. allow is called once per tool.
// When every tool is allowed, msg itself is returned.
func FilterToolsList(msg []byte, allow func(name string) bool) ([]byte, error) {
	p := newParser(msg, responseMaxDepth)
	p.tools = &toolsList{}
	if _, err := p.response(); err != nil {
		return nil, err
	}
	t := p.tools
	if !t.sawResult {
		return msg, nil // an error response
	}
	if !t.found {
		return nil, fmt.Errorf("%w: result has no tools array", ErrNotJSONRPC)
	}
	keep := make([]bool, len(t.items))
	kept := 0
	for i, it := range t.items {
		if allow(it.name) {
			keep[i] = true
			kept++
		}
	}
	if kept == len(t.items) {
		return msg, nil
	}
	out := make([]byte, 0, len(msg))
	out = append(out, msg[:t.start]...)
	out = append(out, '[')
	for i, it := range t.items {
		if !keep[i] {
			continue
		}
		if out[len(out)-1] != '[' {
			out = append(out, ',')
		}
		out = append(out, msg[it.start:it.end]...)
	}
	out = append(out, ']')
	out = append(out, msg[t.end:]...)
	return out, nil
}

// ResponseID returns the raw id of a response message (to match it with the
// request that asked for tools/list). The id of an error response may be
// the literal null. Compare ids with SameID.
func ResponseID(msg []byte) ([]byte, error) {
	m, err := newParser(msg, responseMaxDepth).response()
	if err != nil {
		return nil, err
	}
	return m.ID, nil
}

// response reads a text that must be exactly one response message.
func (p *parser) response() (Message, error) {
	tok, err := p.read()
	if err != nil {
		return Message{}, err
	}
	if tok.Kind() != '{' {
		return Message{}, fmt.Errorf("%w: not a single JSON-RPC object", ErrNotJSONRPC)
	}
	m, err := p.message()
	if err != nil {
		return Message{}, err
	}
	if err := p.end(); err != nil {
		return Message{}, err
	}
	if m.Kind != KindResponse {
		return Message{}, fmt.Errorf("%w: a %s, not a response", ErrNotJSONRPC, m.Kind)
	}
	return m, nil
}

// toolsResult reads the result member of a response, recording where
// result.tools and each tool are.
func (p *parser) toolsResult() error {
	p.tools.sawResult = true
	tok, err := p.read()
	if err != nil {
		return err
	}
	if tok.Kind() != '{' {
		return fmt.Errorf("%w: result is not an object", ErrNotJSONRPC)
	}
	f, err := p.enter()
	if err != nil {
		return err
	}
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil || !ok {
			return err
		}
		if string(name) != "tools" {
			if _, ok := variant(folded, resultNames); ok {
				return fmt.Errorf("%w: result member is a case variant of \"tools\"", ErrNotJSONRPC)
			}
			if err := p.skip(); err != nil {
				return err
			}
			continue
		}
		if err := p.toolsArray(); err != nil {
			return err
		}
	}
}

// toolsArray reads result.tools.
func (p *parser) toolsArray() error {
	tok, err := p.read()
	if err != nil {
		return err
	}
	if tok.Kind() != '[' {
		return fmt.Errorf("%w: result.tools is not an array", ErrNotJSONRPC)
	}
	if err := p.checkDepth(); err != nil {
		return err
	}
	t := p.tools
	t.found = true
	t.start = int(p.dec.InputOffset()) - 1
	for {
		tok, err := p.read()
		if err != nil {
			return err
		}
		if tok.Kind() == ']' {
			t.end = int(p.dec.InputOffset())
			return nil
		}
		if tok.Kind() != '{' {
			return fmt.Errorf("%w: tool %d is not an object", ErrNotJSONRPC, len(t.items))
		}
		it, err := p.tool()
		if err != nil {
			return fmt.Errorf("tool %d: %w", len(t.items), err)
		}
		t.items = append(t.items, it)
	}
}

// tool reads one tool definition whose '{' was just read.
func (p *parser) tool() (toolItem, error) {
	it := toolItem{start: int(p.dec.InputOffset()) - 1}
	f, err := p.enter()
	if err != nil {
		return it, err
	}
	hasName := false
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil {
			return it, err
		}
		if !ok {
			break
		}
		if string(name) == "name" {
			tok, err := p.read()
			if err != nil {
				return it, err
			}
			if tok.Kind() != '"' {
				return it, fmt.Errorf("%w: tool name is not a string", ErrNotJSONRPC)
			}
			it.name, hasName = tok.String(), true
			continue
		}
		if _, ok := variant(folded, toolNames); ok {
			return it, fmt.Errorf("%w: tool member is a case variant of \"name\"", ErrNotJSONRPC)
		}
		if err := p.skip(); err != nil {
			return it, err
		}
	}
	if !hasName {
		return it, fmt.Errorf("%w: tool without a name", ErrNotJSONRPC)
	}
	it.end = int(p.dec.InputOffset())
	return it, nil
}

// SameID reports whether two raw ids (as in Message.ID and ResponseID)
// denote the same JSON-RPC id: equal strings however escaped, or equal
// integers. Added after the contract: the upstream may re-encode an id.
func SameID(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	if a[0] != '"' || b[0] != '"' {
		// Parse admits only canonical integers, so equal numbers have
		// equal bytes; a string never equals a number, null matches nothing.
		return a[0] != '"' && b[0] != '"' && a[0] != 'n' && bytes.Equal(a, b)
	}
	if bytes.IndexByte(a, '\\') < 0 && bytes.IndexByte(b, '\\') < 0 {
		return bytes.Equal(a, b)
	}
	ua, err1 := jsontext.AppendUnquote(nil, a)
	ub, err2 := jsontext.AppendUnquote(nil, b)
	return err1 == nil && err2 == nil && bytes.Equal(ua, ub)
}
