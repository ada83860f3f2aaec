package mcpparse

import (
	"bytes"
	"fmt"

	"github.com/go-json-experiment/json/jsontext"
)

// responseMaxDepth bounds responses, which come from the upstream: tool
// input schemas nest deeper than requests usually do.
const responseMaxDepth = 2 * DefaultMaxDepth

// resultInfo is where the parts of a response's result that the
// rewriting functions change sit.
type resultInfo struct {
	list      *listSpec // the list to read (FilterList), nil for none
	sawResult bool      // the response has a result (not an error)
	open      int       // offset just after the result's '{'
	members   int

	scope    span // the cacheScope value, quotes included
	hasScope bool

	found      bool // the list's array is there
	start, end int  // the array, brackets included
	items      []listItem
}

type listItem struct {
	start, end int
	key        string
}

// List is a kind of list result: the result member holding its items,
// and the member of each item that names it.
type List uint8

// The list results of MCP.
const (
	ListTools             List = iota // tools/list: result.tools, by name
	ListPrompts                       // prompts/list: result.prompts, by name
	ListResources                     // resources/list: result.resources, by uri
	ListResourceTemplates             // resources/templates/list: result.resourceTemplates, by uriTemplate
)

// listSpec says how a List is read. The folded names are those a
// case-insensitive decoder reads as the list's member and key
// (looseVariant): variants of them are refused.
type listSpec struct {
	member, key, item string
	resultNames       []string // folded: the member, and cacheScope
	keyNames          []string // folded: the key
}

// Member is the result member holding the list's items ("tools").
func (l List) Member() string { return listSpecs[l].member }

var listSpecs = [...]listSpec{
	ListTools:             {"tools", "name", "tool", resultNames, toolNames},
	ListPrompts:           {"prompts", "name", "prompt", []string{"PROMPTS", "CACHESCOPE"}, toolNames},
	ListResources:         {"resources", "uri", "resource", []string{"RESOURCES", "CACHESCOPE"}, []string{"URI"}},
	ListResourceTemplates: {"resourceTemplates", "uriTemplate", "resource template", []string{"RESOURCETEMPLATES", "CACHESCOPE"}, []string{"URITEMPLATE"}},
}

// FilterToolsList takes one JSON-RPC response message (a tools/list result)
// and returns it with result.tools reduced to those for which allow(name)
// is true, every other member byte-for-byte unchanged where possible. It
// returns the input unchanged if the message is an error response.
//
// The message is read as strictly as Parse reads requests (duplicate and
// case-variant names anywhere, depth, UTF-8, trailing data). A result
// without a tools array, or a tool without a string name, is an error: the
// caller cannot know what it would forward. allow is called once per tool,
// in order.
// When every tool is allowed, msg itself is returned.
func FilterToolsList(msg []byte, allow func(name string) bool) ([]byte, error) {
	return FilterTools(msg, func(name string, _ []byte) bool { return allow(name) })
}

// FilterTools is FilterToolsList with allow also given each tool's
// definition: the tool object's bytes exactly as the message has them.
func FilterTools(msg []byte, allow func(name string, def []byte) bool) ([]byte, error) {
	return FilterList(msg, ListTools, allow)
}

// FilterList is FilterTools for any list result: it keeps the items of
// the list's member (result.tools, prompts, resources or
// resourceTemplates) for which allow(key, item) is true, key being the
// item's name, uri or uriTemplate and item its bytes as the message has
// them. A result without the member (ErrNoList), a member that is not
// an array, an item that is not an object or has no string key, and a
// member or key spelt but for case, '-' or '_' (which Go's decoders read
// as it) are errors, as for tools.
func FilterList(msg []byte, list List, allow func(key string, item []byte) bool) ([]byte, error) {
	if int(list) >= len(listSpecs) {
		return nil, fmt.Errorf("mcpparse: unknown list %d", list)
	}
	p := newParser(msg, responseMaxDepth)
	defer p.free()
	p.result = &resultInfo{list: &listSpecs[list]}
	if _, err := p.response(); err != nil {
		return nil, err
	}
	t := p.result
	if !t.sawResult {
		return msg, nil // an error response
	}
	if !t.found {
		return nil, fmt.Errorf("%w: %w", ErrNotJSONRPC, ErrNoList)
	}
	keep := make([]bool, len(t.items))
	kept := 0
	for i, it := range t.items {
		if allow(it.key, msg[it.start:it.end]) {
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
	p := newParser(msg, responseMaxDepth)
	defer p.free()
	m, err := p.response()
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

// MarkPrivate returns a response whose result.cacheScope is "private",
// for a result that varies with the caller's authorization (2026-07-28
// CacheableResult: tools/list and the other list results). It replaces
// the member's value, or inserts the member first in a result without
// one (earlier revisions ignore it); every other byte is unchanged. It
// returns msg itself when the scope is already "private" and for an error
// response. The message is read as strictly as FilterToolsList reads it.
func MarkPrivate(msg []byte) ([]byte, error) {
	p := newParser(msg, responseMaxDepth)
	defer p.free()
	p.result = &resultInfo{}
	if _, err := p.response(); err != nil {
		return nil, err
	}
	r := p.result
	const private = `"private"`
	switch {
	case !r.sawResult:
		return msg, nil
	case r.hasScope && string(msg[r.scope.start:r.scope.end]) == private:
		return msg, nil
	case r.hasScope:
		out := make([]byte, 0, len(msg)+len(private))
		out = append(out, msg[:r.scope.start]...)
		out = append(out, private...)
		return append(out, msg[r.scope.end:]...), nil
	}
	member := `"cacheScope":` + private
	if r.members > 0 {
		member += ","
	}
	out := make([]byte, 0, len(msg)+len(member))
	out = append(out, msg[:r.open]...)
	out = append(out, member...)
	return append(out, msg[r.open:]...), nil
}

// resultObject reads the result member of a response, recording where
// result.cacheScope and (if wanted) the list and each of its items are.
func (p *parser) resultObject() error {
	r := p.result
	r.sawResult = true
	if _, err := p.expect('{', ErrNotJSONRPC, "result is not an object"); err != nil {
		return err
	}
	r.open = int(p.dec.InputOffset())
	f, err := p.enter()
	if err != nil {
		return err
	}
	names := resultNames
	if r.list != nil {
		names = r.list.resultNames
	}
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil || !ok {
			return err
		}
		r.members++
		switch {
		case r.list != nil && string(name) == r.list.member:
			err = p.listArray()
		case string(name) == "cacheScope":
			err = p.cacheScope()
		case r.list == nil && string(name) == "tools":
			err = p.skip()
		default:
			// A separator variant too ("t_ools"): Go's json/v2, matching
			// names case-insensitively, reads it as tools.
			if v, ok := looseVariant(folded, names); ok {
				return fmt.Errorf("%w: result member is a case or separator variant of %q", ErrNotJSONRPC, v)
			}
			err = p.skip()
		}
		if err != nil {
			return err
		}
	}
}

// cacheScope reads result.cacheScope, which must be a string.
func (p *parser) cacheScope() error {
	if p.dec.PeekKind() != '"' {
		if _, err := p.read(); err != nil {
			return err
		}
		return fmt.Errorf("%w: result.cacheScope is not a string", ErrNotJSONRPC)
	}
	v, err := p.dec.ReadValue()
	if err != nil {
		return p.jsonErr(err)
	}
	end := int(p.dec.InputOffset())
	p.result.scope = span{end - len(v), end}
	p.result.hasScope = true
	return nil
}

// listArray reads the list's member of the result.
func (p *parser) listArray() error {
	t := p.result
	l := t.list
	if _, err := p.expect('[', ErrNotJSONRPC, "result."+l.member+" is not an array"); err != nil {
		return err
	}
	if err := p.checkDepth(); err != nil {
		return err
	}
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
			return fmt.Errorf("%w: %s %d is not an object", ErrNotJSONRPC, l.item, len(t.items))
		}
		it, err := p.listItem(l)
		if err != nil {
			return fmt.Errorf("%s %d: %w", l.item, len(t.items), err)
		}
		t.items = append(t.items, it)
	}
}

// listItem reads one item of a list whose '{' was just read.
func (p *parser) listItem(l *listSpec) (listItem, error) {
	it := listItem{start: int(p.dec.InputOffset()) - 1}
	f, err := p.enter()
	if err != nil {
		return it, err
	}
	hasKey := false
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil {
			return it, err
		}
		if !ok {
			break
		}
		if string(name) == l.key {
			tok, err := p.expect('"', ErrNotJSONRPC, l.item+" "+l.key+" is not a string")
			if err != nil {
				return it, err
			}
			it.key, hasKey = tok.String(), true
			continue
		}
		if _, ok := looseVariant(folded, l.keyNames); ok {
			return it, fmt.Errorf("%w: %s member is a case or separator variant of %q", ErrNotJSONRPC, l.item, l.key)
		}
		if err := p.skip(); err != nil {
			return it, err
		}
	}
	if !hasKey {
		return it, fmt.Errorf("%w: %s without a %s", ErrNotJSONRPC, l.item, l.key)
	}
	it.end = int(p.dec.InputOffset())
	return it, nil
}

// SameID reports whether two raw ids (as in Message.ID and ResponseID)
// denote the same JSON-RPC id: equal strings however escaped, or equal
// integers. The upstream may re-encode an id.
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
