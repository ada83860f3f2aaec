package mcpparse

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// ErrNotContainer reports a JSON pointer that goes through a value that
// is neither object nor array, or names an array element by something
// other than an index.
var ErrNotContainer = errors.New("mcpparse: pointer goes through a value that has no such member")

// ErrNameVariant reports a member on a pointer's path that is not named
// as the pointer says but that a lenient decoder reads as that name: a
// case variant ("CC" for "cc", as encoding/json v1 matches names), one
// with '-' or '_' added or left out ("c_c", "userId" for "user_id", as
// Go's json/v2 matches names when it ignores case) or the name followed
// by NUL ("cc\u0000x", as C-string decoders read it). The member is
// neither found nor absent: the upstream may read it.
var ErrNameVariant = errors.New("mcpparse: a member's name is a case, separator or NUL variant of the pointer's")

// Pointer is a JSON pointer (RFC 6901), split into its reference tokens.
type Pointer struct {
	text   string
	tokens []string
	folded []string // appendLooseFolded of each token
}

// ParsePointer reads an RFC 6901 pointer: "" (the whole document) or
// "/"-separated tokens in which "~1" stands for "/" and "~0" for "~".
// A "~" followed by anything else, and the token "-" (the element after
// an array's last, which never exists), are refused.
func ParsePointer(s string) (Pointer, error) {
	if s == "" {
		return Pointer{}, nil
	}
	if s[0] != '/' {
		return Pointer{}, errors.New("a JSON pointer is empty or starts with '/'")
	}
	var tokens []string
	for _, raw := range strings.Split(s[1:], "/") {
		for i := 0; i < len(raw); i++ {
			if raw[i] == '~' && (i+1 == len(raw) || (raw[i+1] != '0' && raw[i+1] != '1')) {
				return Pointer{}, errors.New(`'~' in a JSON pointer is not followed by '0' or '1'`)
			}
		}
		if raw == "-" {
			return Pointer{}, errors.New(`the JSON pointer token "-" names no existing element`)
		}
		// "~1" first, then "~0", as RFC 6901 section 4 has it (every '~'
		// begins one of the two, as checked above). A strings.Replacer
		// built per token cost some 900 bytes each: a schema's $ref of a
		// megabyte of tokens, 450 MB.
		tokens = append(tokens, strings.ReplaceAll(strings.ReplaceAll(raw, "~1", "/"), "~0", "~"))
	}
	folded := make([]string, len(tokens))
	for i, t := range tokens {
		folded[i] = string(appendLooseFolded(nil, []byte(t)))
	}
	return Pointer{text: s, tokens: tokens, folded: folded}, nil
}

// String returns the pointer as written.
func (ptr Pointer) String() string { return ptr.text }

// Len is the number of the pointer's reference tokens.
func (ptr Pointer) Len() int { return len(ptr.tokens) }

// Tokens returns the pointer's reference tokens, unescaped.
func (ptr Pointer) Tokens() []string { return slices.Clone(ptr.tokens) }

// Cut returns the pointer of the first k reference tokens, and the
// pointer of the rest, relative to the value the first names
// (0 <= k <= Len()).
func (ptr Pointer) Cut(k int) (head, rest Pointer) {
	// The text of the first k tokens ends at the (k+1)th '/', if any.
	end := 0
	for range k {
		if i := strings.IndexByte(ptr.text[end+1:], '/'); i >= 0 {
			end += i + 1
		} else {
			end = len(ptr.text)
		}
	}
	head = Pointer{text: ptr.text[:end], tokens: ptr.tokens[:k:k], folded: ptr.folded[:k:k]}
	rest = Pointer{text: ptr.text[end:], tokens: ptr.tokens[k:], folded: ptr.folded[k:]}
	return head, rest
}

// CheckValue checks doc as Parse checks the values in a message: one
// JSON value of valid UTF-8, no object with two members of one name or of
// names that fold alike (case or NUL variants), nesting no deeper than
// maxDepth (DefaultMaxDepth when 0 or less), only whitespace around it.
// A document that passes may be given to Pointer.Lookup.
func CheckValue(doc []byte, maxDepth int) error {
	p := newParser(doc, maxDepth)
	defer p.free()
	if err := p.skip(); err != nil {
		return err
	}
	return p.end()
}

// Value is one JSON value inside a document that passed Parse.
type Value struct{ raw []byte }

// Type names the value's JSON type: "string", "number", "boolean",
// "null", "object" or "array".
func (v Value) Type() string {
	switch jsontext.Value(v.raw).Kind() {
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return ""
}

// Raw is the value's bytes as written in the document.
func (v Value) Raw() []byte { return v.raw }

// Text returns a string value's text, unescaped: a slice of the
// document when the literal has no escapes, a copy otherwise.
func (v Value) Text() ([]byte, error) {
	if len(v.raw) >= 2 && v.raw[0] == '"' && bytes.IndexByte(v.raw, '\\') < 0 {
		return v.raw[1 : len(v.raw)-1], nil
	}
	out, err := jsontext.AppendUnquote(nil, v.raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	return out, nil
}

// Elements calls yield with each element of an array value, in order,
// until yield returns false.
func (v Value) Elements(yield func(Value) bool) error {
	p := newParser(v.raw, maxTokenizerDepth)
	defer p.free()
	if _, err := p.expect('[', ErrNotContainer, "not an array"); err != nil {
		return err
	}
	for p.dec.PeekKind() != ']' {
		e, err := p.value()
		if err != nil {
			return err
		}
		if !yield(e) {
			return nil
		}
	}
	return nil
}

// value reads the next value as a slice of the input.
func (p *parser) value() (Value, error) {
	v, err := p.dec.ReadValue()
	if err != nil {
		return Value{}, p.jsonErr(err)
	}
	end := int(p.dec.InputOffset())
	return Value{p.body[end-len(v) : end : end]}, nil
}

// Lookup finds the value ptr refers to in doc, which must have passed
// Parse (or be a part of a message that did, such as Message.Arguments):
// Parse refused duplicate and case-variant names, so a member of the
// token's exact name is the only one of it; an object on the path is read
// to its end all the same, for variants of the name beside it (pathMember).
// It reads only along the pointer's path, skipping other values whole.
// Member names are compared after JSON unescaping, exactly; a member
// whose name folds as the token's (a case, separator or NUL variant, see
// ErrNameVariant) is an error, never "absent". found is false when a
// member or element on the path is absent; a path through a scalar, or
// an element named by a token that is not an index (RFC 6901: digits
// without leading zeros), is ErrNotContainer.
func (ptr Pointer) Lookup(doc []byte) (v Value, found bool, err error) {
	p := newParser(doc, maxTokenizerDepth)
	defer func() { p.free() }()
	for i, tok := range ptr.tokens {
		switch p.dec.PeekKind() {
		case '{':
			var m Value
			if m, found, err = p.pathMember(tok, ptr.folded[i]); err == nil && found {
				// Its object is read to the end: read on in the value.
				p.free()
				p = newParser(m.raw, maxTokenizerDepth)
			}
		case '[':
			found, err = p.toElement(tok)
		default:
			return Value{}, false, fmt.Errorf("%w: %q", ErrNotContainer, tok)
		}
		if err != nil || !found {
			return Value{}, false, err
		}
	}
	v, err = p.value()
	return v, err == nil, err
}

// pathMember reads the object whose '{' comes next to its end and returns the
// value of its member name (folded: its appendLooseFolded form). Parse
// refused two members of one folded name, so a case or NUL variant is
// the only member besides name an upstream may read as name; one that
// differs in '-' or '_' too may stand beside name ("cc" and "c_c"), and
// a decoder that allows duplicate names (json/v2 with
// AllowDuplicateNames: the last) or reads aliases (pydantic with
// camel-case aliases: "userId" over "user_id") may read it instead. Such
// a member is ErrNameVariant wherever it stands.
func (p *parser) pathMember(name, folded string) (Value, bool, error) {
	if _, err := p.read(); err != nil {
		return Value{}, false, err
	}
	var v Value
	found := false
	for p.dec.PeekKind() != '}' {
		raw, err := p.dec.ReadValue()
		if err != nil {
			return Value{}, false, p.jsonErr(err)
		}
		text := raw[1 : len(raw)-1]
		if bytes.IndexByte(text, '\\') >= 0 {
			if p.unq, err = jsontext.AppendUnquote(p.unq[:0], raw); err != nil {
				return Value{}, false, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
			}
			text = p.unq
		}
		if string(text) == name {
			if v, err = p.value(); err != nil {
				return Value{}, false, err
			}
			found = true
			continue
		}
		if p.fold = appendLooseFolded(p.fold[:0], text); string(p.fold) == folded {
			return Value{}, false, fmt.Errorf("%w: %q", ErrNameVariant, text)
		}
		if err := p.dec.SkipValue(); err != nil {
			return Value{}, false, p.jsonErr(err)
		}
	}
	return v, found, nil
}

// toElement moves to the array element at index tok, whose '[' comes next.
func (p *parser) toElement(tok string) (bool, error) {
	n, ok := arrayIndex(tok)
	if !ok {
		return false, fmt.Errorf("%w: array index %q", ErrNotContainer, tok)
	}
	if _, err := p.read(); err != nil {
		return false, err
	}
	for i := 0; p.dec.PeekKind() != ']'; i++ {
		if i == n {
			return true, nil
		}
		if err := p.dec.SkipValue(); err != nil {
			return false, p.jsonErr(err)
		}
	}
	return false, nil
}

// arrayIndex reads an RFC 6901 array index: "0" or digits without a
// leading zero.
func arrayIndex(tok string) (int, bool) {
	if tok == "" || len(tok) > 9 || (tok[0] == '0' && len(tok) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return 0, false
		}
		n = n*10 + int(tok[i]-'0')
	}
	return n, true
}
