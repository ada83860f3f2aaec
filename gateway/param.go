package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Mcp-Param-* headers (2026-07-28, "Custom Headers from Tool
// Parameters"): a tool's inputSchema may mark an argument with
// x-mcp-header, and clients mirror its value into Mcp-Param-{name}. "Any
// server that processes the message body MUST validate that encoded
// header values, after decoding if Base64-encoded, match the
// corresponding values in the request body" (400, -32020): the gateway
// decides on the body, and an upstream, or a router before it, may act on
// the header. Which argument a header mirrors is known only from the
// tool's definition, which the gateway holds for the pinned tools it
// forwards calls to (pin.go); a header it cannot check against the body
// (no pinning, a tool without that annotation, a method other than
// tools/call) is refused. Before 2026-07-28 the headers mean nothing and
// are not forwarded (forwardsHeader).

const paramHeaderPrefix = "Mcp-Param-"

func isParamHeader(name string) bool {
	return len(name) > len(paramHeaderPrefix) && strings.EqualFold(name[:len(paramHeaderPrefix)], paramHeaderPrefix)
}

// maxSchemaDepth bounds the walk of nested properties.
const maxSchemaDepth = 32

// paramHeaders reads a tool definition's x-mcp-header annotations:
// header name in lower case → the path of properties keys to the
// argument. Only annotations reachable through properties count (the
// spec's "statically reachable"); a definition that names one header
// twice, ignoring case, nests properties deeper than maxSchemaDepth, or
// whose property paths pass pathBudget, is invalid and yields an empty map, so that no header of its calls
// passes.
func paramHeaders(def []byte) map[string][]string {
	out := map[string][]string{}
	err := eachProperty(def, func(path []string, prop json.RawMessage) error {
		var ann struct {
			Header *string `json:"x-mcp-header"`
		}
		if json.Unmarshal(prop, &ann) != nil || ann.Header == nil {
			return nil
		}
		k := strings.ToLower(*ann.Header)
		if _, dup := out[k]; dup {
			return fmt.Errorf("x-mcp-header %q twice", *ann.Header)
		}
		out[k] = path
		return nil
	})
	if err != nil {
		return map[string][]string{}
	}
	return out
}

// eachProperty calls visit with the path of properties keys to each
// property schema of a tool definition's input schema, and the schema,
// outer before inner, until visit fails; it fails when the properties
// nest deeper than maxSchemaDepth.
func eachProperty(def []byte, visit func(path []string, prop json.RawMessage) error) error {
	var tool struct {
		InputSchema json.RawMessage `json:"inputSchema"`
	}
	if json.Unmarshal(def, &tool) != nil {
		return nil
	}
	budget, parse := pathBudget(len(def)), parseBudget(len(def))
	var walk func(schema json.RawMessage, path []string, pathLen int) error
	walk = func(schema json.RawMessage, path []string, pathLen int) error {
		if len(path) > maxSchemaDepth {
			return errors.New("schema too deep")
		}
		var s struct {
			Properties map[string]json.RawMessage `json:"properties"`
		}
		if json.Unmarshal(schema, &s) != nil {
			return nil // not an object schema: nothing reachable
		}
		for name, prop := range s.Properties {
			p := append(path[:len(path):len(path)], name)
			n := pathLen + 1 + len(name)
			if budget -= n; budget < 0 {
				return errors.New("schema property paths too long")
			}
			if parse -= len(prop); parse < 0 {
				return errors.New("schema properties nested too deep under large ones")
			}
			if err := visit(p, prop); err != nil {
				return err
			}
			if err := walk(prop, p, n); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(tool.InputSchema, nil, 0)
}

// pathBudget bounds the bytes of the property paths (propertyPath) a
// walk of a definition of n bytes visits, together: a path repeats the
// names of its ancestors, so a definition nesting long names
// maxSchemaDepth deep made paths of thirty times its size, and as much
// memory in each gateway's defaults of it (readDefaults keys its maps by
// path). Real schemas' paths come to about their size or less.
func pathBudget(n int) int { return 4*n + 4<<10 }

// parseBudget bounds the bytes of property schemas a walk of a definition
// of n bytes reads, together: each property's schema is read again by
// each walk of its ancestors' (and by readDefaults' reading of it), so a
// megabyte nested 31 properties deep cost seconds of the gateway's time
// to learn, and a listing of sixteen of them a minute. Real schemas,
// most of whose bytes lie a few properties deep, read a few times their
// size.
func parseBudget(n int) int { return 8*n + 64<<10 }

// checkParams refuses a request whose Mcp-Param-* headers do not each
// carry, exactly, the argument the called tool's definition mirrors into
// them, and one that leaves out the header of an argument it sends
// (missingParam).
func (g *Gateway) checkParams(x *exchange) *refusal {
	if !x.headerChecked {
		return nil
	}
	mismatch := func(name string, err error) *refusal {
		return &refusal{status: http.StatusBadRequest, code: codeHeaderMismatch, id: singleID(x),
			message: "Header mismatch: " + name + ": " + err.Error()}
	}
	var args argObject // the arguments, read once for every header
	if len(x.msgs) == 1 {
		args.raw = x.msgs[0].Arguments
	}
	for name, values := range x.r.Header {
		if !isParamHeader(name) {
			continue
		}
		if err := g.checkParam(x, &args, name, values); err != nil {
			return mismatch(name, err)
		}
	}
	if name, err := g.missingParam(x, &args); err != nil {
		return mismatch(name, err)
	}
	return nil
}

// missingParam finds an argument of a tools/call that the called tool's
// definition mirrors into a header the request does not carry, although
// the body gives it a value other than null: the transport's "client
// omits header but value is in body: server MUST reject". A router before
// the upstream that acts on the header would otherwise act on its
// absence (a default region or tenant) while the gateway and the server
// read the body's value. Without pinning the gateway knows no
// definitions, so nothing is required there. args holds the call's
// arguments (x.msgs[0].Arguments).
func (g *Gateway) missingParam(x *exchange, args *argObject) (string, error) {
	if g.pins == nil || len(x.msgs) != 1 || !isToolCall(&x.msgs[0]) {
		return "", nil
	}
	m := &x.msgs[0]
	declared := g.pins.view.Load().params.at(m.Name)
	if len(declared) == 0 {
		return "", nil
	}
	sent := sentParams(x.r.Header)
	for header, path := range declared {
		if err := jsonTextParam(args, path); err != nil {
			return http.CanonicalHeaderKey(paramHeaderPrefix + header), err
		}
		if sent[header] {
			continue // checked by checkParam
		}
		arg, err := args.at(path)
		if err == nil && len(arg) != 0 && string(arg) != "null" {
			err = fmt.Errorf("missing: the body has a value at /%s, which tool %q mirrors into it", strings.Join(path, "/"), m.Name)
		}
		if err != nil {
			// The name is made only for the refusal: an optional argument
			// left out costs an allowed call nothing.
			return http.CanonicalHeaderKey(paramHeaderPrefix + header), err
		}
	}
	return "", nil
}

// jsonTextParam refuses a call whose argument at the top of a declared
// header's path is a string of JSON text for an array, an object or
// null: servers on the Python SDK decode such a string into the value it
// spells before the tool runs (pre_parse_json, as the argument rules
// read it: decodedRefusal), others keep the string. So the header is the
// string's to one and the decoded value's, or absent, to the other
// ("scope": "{\"tenant\":\"acme\"}" sends tenant acme to a Python
// server, while a header-less request passes as having none), and no
// header can agree with both. Where the decoded value leaves the
// argument out or null, both readings send no header, and that passes.
func jsonTextParam(args *argObject, path []string) error {
	text, decodes := args.jsonText(path[0])
	if !decodes {
		return nil
	}
	if text != nil && len(path) > 1 {
		if v, err := text.at(path[1:]); err == nil && (len(v) == 0 || string(v) == "null") {
			return nil
		}
	}
	return fmt.Errorf("the body has at /%s a string of JSON text, which some servers decode: its header cannot agree with both readings", path[0])
}

// sentParams is the set of the Mcp-Param-* names h carries, in lower
// case, read once per call: looking each declared header up in all of
// the request's made a hostile server's thousands of declared headers,
// times a caller's thousands of headers, cost millions of comparisons
// per call (BenchmarkMissingParamManyHeaders).
func sentParams(h http.Header) map[string]bool {
	sent := map[string]bool{}
	for name := range h {
		if isParamHeader(name) {
			sent[strings.ToLower(name[len(paramHeaderPrefix):])] = true
		}
	}
	return sent
}

func (g *Gateway) checkParam(x *exchange, args *argObject, name string, values []string) error {
	if len(x.msgs) != 1 || !isToolCall(&x.msgs[0]) {
		return errors.New("Mcp-Param headers belong to tools/call only")
	}
	m := &x.msgs[0]
	if g.pins == nil {
		return errors.New("cannot be checked against the body: the gateway knows tool definitions only with pin_tools")
	}
	path, ok := g.pins.view.Load().params.at(m.Name)[strings.ToLower(name[len(paramHeaderPrefix):])]
	if !ok {
		return fmt.Errorf("tool %q declares no such parameter header", m.Name)
	}
	if len(values) != 1 {
		return errors.New("sent more than once")
	}
	v, err := mcpparse.DecodeHeaderValue(values[0])
	if err != nil {
		return err
	}
	arg, err := args.at(path)
	if err != nil {
		return err
	}
	if !paramMatches(v, arg) {
		return fmt.Errorf("does not match the body value at /%s", strings.Join(path, "/"))
	}
	return nil
}

// argObject is a tools/call's arguments, or an object in them, read at
// the paths of the called tool's parameter headers: each object on the
// way is decoded, and its member names folded, once for all the paths
// that pass it. Reading the whole arguments again for each path, and
// comparing each key with every member name, made a hostile server's
// definition declaring thousands of headers cost seconds of the
// gateway's time per ordinary call (BenchmarkParamsManyDeclared).
type argObject struct {
	raw     json.RawMessage
	decoded bool
	members map[string]json.RawMessage // nil: not an object
	loose   map[string]int             // members per mcpparse.LooseFold form
	inner   map[string]*argObject
	texts   map[string]jsonTextArg // members read by jsonText
}

// jsonTextArg is what jsonText found in a member.
type jsonTextArg struct {
	text    *argObject // the JSON text, nil if only Python's decoder reads it
	decodes bool
}

// jsonText reports whether the member key is a string of text that a
// server may decode into an array, an object or null (jsonTextParam),
// and that text as an argObject when it is JSON; read once per call for
// all the headers under key.
func (o *argObject) jsonText(key string) (*argObject, bool) {
	if a, ok := o.texts[key]; ok {
		return a.text, a.decodes
	}
	o.decode()
	var a jsonTextArg
	var s string
	if arg := o.members[key]; len(arg) != 0 && arg[0] == '"' && json.Unmarshal(arg, &s) == nil && mayDecode([]byte(s)) {
		if err := mcpparse.CheckValue([]byte(s), 0); err == nil {
			a = jsonTextArg{text: &argObject{raw: json.RawMessage(s)}, decodes: true}
		} else {
			// Text no JSON decoder reads is a string to every server.
			a.decodes = !errors.Is(err, mcpparse.ErrInvalidJSON) || pythonJSONOnly([]byte(s))
		}
	}
	if o.texts == nil {
		o.texts = map[string]jsonTextArg{}
	}
	o.texts[key] = a
	return a.text, a.decodes
}

// at returns the value at path (properties keys), nil when absent. A key
// present in another case or with '-' or '_' added or left out (which
// an upstream may read as it), or present twice so, is an error: the
// header cannot be checked against a value the upstream may read
// otherwise.
func (o *argObject) at(path []string) (json.RawMessage, error) {
	cur := o
	for _, key := range path {
		cur.decode()
		if cur.members == nil {
			return nil, nil
		}
		v, ok := cur.members[key]
		switch n := cur.loose[mcpparse.LooseFold(key)]; {
		case n > 1:
			return nil, fmt.Errorf("member %q is spelled twice, in case or with '-' or '_'", key)
		case !ok && n > 0:
			return nil, fmt.Errorf("the body has %q only in another spelling", key)
		case !ok:
			return nil, nil
		}
		next := cur.inner[key]
		if next == nil {
			if cur.inner == nil {
				cur.inner = map[string]*argObject{}
			}
			next = &argObject{raw: v}
			cur.inner[key] = next
		}
		cur = next
	}
	return cur.raw, nil
}

func (o *argObject) decode() {
	if o.decoded {
		return
	}
	o.decoded = true
	var m map[string]json.RawMessage
	if len(o.raw) == 0 || json.Unmarshal(o.raw, &m) != nil || m == nil {
		return
	}
	o.members = m
	o.loose = make(map[string]int, len(o.members))
	for k := range o.members {
		o.loose[mcpparse.LooseFold(k)]++
	}
}

// paramMatches compares a decoded header value with the body value it
// mirrors: a string exactly, a boolean as "true" or "false", an integer
// numerically (header in decimal digits). Absent, null and other values
// match nothing: a client omits the header for them.
func paramMatches(header string, body json.RawMessage) bool {
	switch {
	case len(body) == 0:
		return false
	case body[0] == '"':
		var s string
		return json.Unmarshal(body, &s) == nil && s == header
	case string(body) == "true" || string(body) == "false":
		return string(body) == header
	case body[0] == '-' || isDigit(body[0]):
		h := strings.TrimPrefix(header, "-")
		if h == "" || strings.TrimLeft(h, "0123456789") != "" {
			return false
		}
		hd, err1 := parseDecimal(header)
		bd, err2 := parseDecimal(string(body))
		return err1 == nil && err2 == nil && bd.isInteger() && hd.cmp(bd) == 0
	}
	return false
}
