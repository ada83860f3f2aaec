package mcpparse

// The fast path. Almost every request body is one small object of ASCII
// text without escapes: {"jsonrpc":"2.0","id":7,"method":"tools/call",
// "params":{"name":"echo","arguments":{...}}}. For such a body the general
// reader's tokenizer and folding cost more than the reading itself, so
// Parse first tries parseSimple, a scanner for exactly that subset.
//
// parseSimple never decides anything on its own: it answers only when the
// full reading (parseFull) would return the same single message and no
// error, and leaves everything else to it: escapes, non-ASCII bytes,
// batches, responses, null ids, case variants, duplicate names, __proto__, deep
// nesting, objects of many names, every syntax error. FuzzParseSimple checks that property
// against parseFull.

// Bounds of the fast path; bodies beyond them take the full reading.
const (
	simpleDepth       = 32          // nesting
	simpleNames       = 64          // names of all open objects together
	simpleObjectNames = linearNames // names of one object: pairwise checks stay cheap
)

// simple scans one body.
type simple struct {
	b        []byte
	i        int // next byte
	depth    int
	maxDepth int
	names    [simpleNames]span // names of the open objects, innermost last
	n        int               // in use
}

// parseSimple reads body as Parse does when it is one request or
// notification in the fast path's subset; ok is false for anything else.
// maxDepth is Parse's effective limit.
func parseSimple(body []byte, maxDepth int) (m Message, ok bool) {
	s := simple{b: body, maxDepth: min(maxDepth, simpleDepth)}
	var (
		pf                        params
		jsonrpc, hasMethod, hasID bool
	)
	s.ws()
	start := s.i
	first, ok := s.enter()
	if !ok {
		return m, false
	}
	for {
		name, done, ok := s.next(first)
		if !ok {
			return m, false
		}
		if done {
			break
		}
		switch string(name) {
		case "jsonrpc":
			v, ok := s.str()
			if !ok || string(v) != "2.0" {
				return m, false
			}
			jsonrpc = true
		case "method":
			v, ok := s.str()
			if !ok {
				return m, false
			}
			m.Method, hasMethod = method(v), true
		case "id":
			if m.ID, ok = s.id(); !ok {
				return m, false
			}
			hasID = true
		case "params":
			switch s.peek() {
			case '{':
				ok = s.params(&pf)
			case '[':
				ok = s.array()
			default:
				ok = false
			}
			if !ok {
				return m, false
			}
		default:
			// result and error (a response) and case or separator
			// variants of the envelope's names are the full reading's to
			// answer.
			if _, loose := looseVariant(name, envelopeNames); loose || foldedIn(name, envelopeNames) || !s.value() {
				return m, false
			}
		}
	}
	m.Raw = body[start:s.i:s.i]
	s.ws()
	if s.i != len(body) || !jsonrpc || !hasMethod {
		return m, false
	}
	m.Kind = KindNotification
	if hasID {
		m.Kind = KindRequest
	}
	if m.target(&pf) != nil {
		return m, false
	}
	return m, true
}

// ws skips whitespace.
func (s *simple) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte, 0 at the end.
func (s *simple) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// enter opens the object at s.i; first marks where its names start.
func (s *simple) enter() (first int, ok bool) {
	if s.peek() != '{' {
		return 0, false
	}
	s.i++
	s.depth++
	return s.n, s.depth <= s.maxDepth
}

// next reads the next member name of the object whose names start at
// first, and the colon after it, leaving s.i at the value; done reports
// the object's end (consumed). A name that equals an earlier one of the
// object but for ASCII case is not ok (Parse refuses it).
func (s *simple) next(first int) (name []byte, done, ok bool) {
	s.ws()
	switch c := s.peek(); {
	case c == '}':
		s.i++
		s.depth--
		s.n = first
		return nil, true, true
	case s.n > first: // a member was read: a comma first
		if c != ',' {
			return nil, false, false
		}
		s.i++
		s.ws()
	}
	start := s.i + 1
	if name, ok = s.str(); !ok || s.n == len(s.names) || s.n-first == simpleObjectNames || string(name) == "__proto__" {
		return nil, false, false
	}
	for _, sp := range s.names[first:s.n] {
		if asciiEqualFold(s.b[sp.start:sp.end], name) {
			return nil, false, false
		}
	}
	s.names[s.n] = span{start, start + len(name)}
	s.n++
	s.ws()
	if s.peek() != ':' {
		return nil, false, false
	}
	s.i++
	s.ws()
	return name, false, true
}

// str reads a string and returns its contents: only strings of printable
// ASCII without escapes (what Parse reads as the same bytes).
func (s *simple) str() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[s.i+1 : j]
			s.i = j + 1
			return v, true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// value reads any value.
func (s *simple) value() bool {
	switch c := s.peek(); {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

// object reads an object.
func (s *simple) object() bool {
	first, ok := s.enter()
	for ok {
		var done bool
		if _, done, ok = s.next(first); done {
			return ok
		}
		ok = ok && s.value()
	}
	return false
}

// array reads an array.
func (s *simple) array() bool {
	s.i++ // '['
	s.depth++
	if s.depth > s.maxDepth {
		return false
	}
	s.ws()
	if s.peek() == ']' {
		s.i++
		s.depth--
		return true
	}
	for {
		if !s.value() {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case ']':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// number reads a number as RFC 8259 writes it.
func (s *simple) number() bool {
	b, i := s.b, s.i
	digits := func() bool {
		j := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if !digits() {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	s.i = i
	return true
}

// literal reads true, false or null.
func (s *simple) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// id reads the id member's value: a string or a canonical integer (null
// is left to the full reading).
func (s *simple) id() ([]byte, bool) {
	start := s.i
	var ok bool
	switch c := s.peek(); {
	case c == '"':
		_, ok = s.str()
	case c == '-' || '0' <= c && c <= '9':
		ok = s.number() && canonicalInt(s.b[start:s.i])
	}
	return s.b[start:s.i:s.i], ok
}

// params reads a params object.
func (s *simple) params(pf *params) bool {
	first, ok := s.enter()
	for ok {
		var name []byte
		var done bool
		if name, done, ok = s.next(first); done || !ok {
			return ok
		}
		switch string(name) {
		case "name":
			ok = s.member(&pf.name)
		case "uri":
			ok = s.member(&pf.uri)
		case "taskId":
			ok = s.member(&pf.taskID)
		case "_meta":
			ok = s.meta(pf)
		case "arguments":
			start := s.i
			ok = s.value()
			pf.arguments = s.b[start:s.i:s.i]
		default:
			_, loose := looseVariant(name, looseParamNames)
			ok = !loose && !foldedIn(name, paramNames) && !foldedIn(name, snakeParamNames) && s.value()
		}
	}
	return false
}

// member reads a params member that names a target.
func (s *simple) member(mb *member) bool {
	mb.present = true
	if s.peek() != '"' {
		return s.value()
	}
	v, ok := s.str()
	mb.s, mb.isString = string(v), true
	return ok
}

// meta reads params._meta: an object whose protocol version, if any, is
// a string.
func (s *simple) meta(pf *params) bool {
	first, ok := s.enter()
	for ok {
		var name []byte
		var done bool
		if name, done, ok = s.next(first); done || !ok {
			return ok
		}
		switch {
		case string(name) == metaProtocolVersion:
			var v []byte
			v, ok = s.str()
			pf.version = version(v)
		default:
			ok = !foldedIn(name, metaNames) && s.value()
		}
	}
	return false
}

// foldedIn reports whether the ASCII name folds to one of folded (upper
// case forms).
func foldedIn(name []byte, folded []string) bool {
	for _, f := range folded {
		if asciiEqualFold(name, f) {
			return true
		}
	}
	return false
}

// asciiEqualFold reports whether a and b, ASCII, are equal but for case.
func asciiEqualFold[T string | []byte](a []byte, b T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x != y {
			if 'a' <= x && x <= 'z' {
				x -= 'a' - 'A'
			}
			if 'a' <= y && y <= 'z' {
				y -= 'a' - 'A'
			}
			if x != y {
				return false
			}
		}
	}
	return true
}
