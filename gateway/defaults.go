package gateway

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// schemaDefaults is what a tool definition's input schema says of the
// values a server may fill in for arguments a call leaves out: the Go
// SDK applies the schema's defaults (into the defaults it fills in, too,
// and into objects it creates for them), and the Python and TypeScript
// SDKs declare their parameters' own defaults there. Optional argument
// rules are checked against them (defaultRefusal). Keys are
// propertyPaths; the input schema itself is "".
type schemaDefaults struct {
	// values: a declared property → its default's JSON.
	values map[string][]byte
	// declared: the input schema and every property reached through
	// properties (eachProperty).
	declared map[string]bool
	// beneath: declared properties without a default of their own that
	// have one among their properties, at any depth: the Go SDK creates
	// such an object when the call leaves it out, to fill those in.
	beneath map[string]bool
	// opaque: schemas whose members, at any depth, may get a default
	// that is not read here: the schema has one, or a $ref to one,
	// outside its properties, its own default and its map keywords (in
	// anyOf, oneOf, allOf, if/then/else, items, contentSchema, a $ref'd
	// definition: Python's nested models, zod 3's reused schemas, ...).
	opaque map[string]bool
	// mapLike: schemas whose undeclared members are values of a map
	// (additionalProperties or patternProperties as a schema): no server
	// adds a key, but a value present may get defaults, which mapValues
	// says.
	mapLike, mapValues map[string]bool
	// composite: schemas that may declare members elsewhere than in
	// properties (a $ref, anyOf, allOf, ...); those members get no
	// default unless opaque says they may.
	composite map[string]bool
	// unreadable: properties nest deeper than maxSchemaDepth.
	unreadable bool
}

// mapKeywords are the schema keywords of an object's undeclared members.
var mapKeywords = []string{"additionalProperties", "patternProperties", "unevaluatedProperties"}

// readDefaults reads a tool definition's schemaDefaults. The definition
// is in canonical form (canonicalJSON), so a member named default is
// spelled "default".
func readDefaults(def []byte) *schemaDefaults {
	d := &schemaDefaults{values: map[string][]byte{}, declared: map[string]bool{}, beneath: map[string]bool{},
		opaque: map[string]bool{}, mapLike: map[string]bool{}, mapValues: map[string]bool{}, composite: map[string]bool{}}
	var tool struct {
		InputSchema json.RawMessage `json:"inputSchema"`
	}
	_ = json.Unmarshal(def, &tool) // no input schema: no defaults
	r := refReader{root: tool.InputSchema}
	d.read("", tool.InputSchema, &r)
	err := eachProperty(def, func(path []string, prop json.RawMessage) error {
		key := propertyPath(path)
		d.read(key, prop, &r)
		var p struct {
			Default json.RawMessage `json:"default"`
		}
		if json.Unmarshal(prop, &p) == nil && p.Default != nil {
			d.values[key] = p.Default
			for i := 1; i < len(path); i++ {
				d.beneath[propertyPath(path[:i])] = true
			}
		}
		return nil
	})
	d.unreadable = err != nil
	return d
}

// read records what the schema at key says of its members' defaults.
func (d *schemaDefaults) read(key string, schema json.RawMessage, r *refReader) {
	d.declared[key] = true
	var members map[string]json.RawMessage
	if json.Unmarshal(schema, &members) != nil {
		return
	}
	for _, k := range mapKeywords {
		v, ok := members[k]
		if !ok || string(v) == "true" || string(v) == "false" || string(v) == `{"not":{}}` {
			continue
		}
		d.mapLike[key] = true
		if r.mayDefault(v) {
			d.mapValues[key] = true
		}
		delete(members, k)
	}
	// Definitions count where a $ref uses them; properties are read one
	// by one, and the schema's own default is its value, not a member's.
	for _, k := range []string{"properties", "default", "$defs", "definitions"} {
		delete(members, k)
	}
	for k, v := range members {
		if compositeKeywords[k] {
			d.composite[key] = true
		}
		name, _ := json.Marshal(k)
		if r.mayDefault(json.RawMessage(`{` + string(name) + `:` + string(v) + `}`)) {
			d.opaque[key] = true
		}
	}
}

// compositeKeywords are the schema keywords that may declare an object's
// members elsewhere than in its properties.
var compositeKeywords = map[string]bool{"$ref": true, "$dynamicRef": true, "$recursiveRef": true,
	"anyOf": true, "oneOf": true, "allOf": true, "if": true, "then": true, "else": true, "dependentSchemas": true}

// refReader tells whether a part of an input schema may hold a default,
// following $refs into the schema.
type refReader struct {
	root json.RawMessage
}

// maxRefDepth bounds the chain of $refs followed.
const maxRefDepth = 16

// mayDefault reports whether schema (canonical JSON) has a default, or a
// $ref that may lead to one: a local JSON pointer is followed, and
// anything else counts as one when the input schema has any default.
func (r *refReader) mayDefault(schema []byte) bool {
	return r.follow(schema, 0)
}

func (r *refReader) follow(schema []byte, depth int) bool {
	if hasDefault(schema) {
		return true
	}
	for rest := schema; ; {
		i := bytes.Index(rest, []byte(`"$ref":`))
		j := bytes.Index(rest, []byte(`"$dynamicRef":`))
		k := bytes.Index(rest, []byte(`"$recursiveRef":`))
		if i < 0 && (j >= 0 || k >= 0) {
			return hasDefault(r.root) // not followed
		}
		if i < 0 {
			return false
		}
		var ref string
		dec := json.NewDecoder(bytes.NewReader(rest[i+len(`"$ref":`):]))
		if dec.Decode(&ref) != nil || depth >= maxRefDepth {
			return hasDefault(r.root)
		}
		target, ok := r.resolve(ref)
		if !ok {
			return hasDefault(r.root)
		}
		if r.follow(target, depth+1) {
			return true
		}
		rest = rest[i+len(`"$ref":`):]
	}
}

// resolve finds the schema a local JSON pointer reference names
// ("#/$defs/Filter", "#/properties/a").
func (r *refReader) resolve(ref string) ([]byte, bool) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, false
	}
	frag, err := url.PathUnescape(frag)
	if err != nil {
		return nil, false
	}
	ptr, err := mcpparse.ParsePointer(frag)
	if err != nil {
		return nil, false
	}
	v, found, err := ptr.Lookup(r.root)
	if err != nil || !found {
		return nil, false
	}
	return v.Raw(), true
}

// hasDefault reports whether a schema (canonical JSON) has a member named
// default anywhere, or may be "default" as a string, which counts too.
func hasDefault(schema []byte) bool { return bytes.Contains(schema, []byte(`"default"`)) }

// propertyPath is the key of a path of property names: the JSON pointer
// (RFC 6901) of the argument, unambiguous whatever the names hold.
func propertyPath(names []string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteByte('/')
		pointerEscaper.WriteString(&b, n)
	}
	return b.String()
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// defaultRefusal checks the optional argument rules of a call against
// what the server runs the tool with when the call leaves their argument
// out (d; nil when the tool's schema is not known): it returns the
// pointer of the first rule that fails and why, or reason "".
func defaultRefusal(checks []argCheck, pr *principal, args []byte, d *schemaDefaults) (ptr, reason string) {
	if d == nil {
		return "", ""
	}
	for i := range checks {
		c := &checks[i]
		if !c.optional {
			continue
		}
		if reason := d.refusal(c, pr, args); reason != "" {
			return c.ptr.String(), "argument " + strconv.Quote(c.ptr.String()) + " " + reason
		}
	}
	return "", ""
}

// notRead is the refusal of a member left out that may get a default
// this reading of the schema cannot know.
const notRead = "is left out, and the tool's input schema may give it a default that is not read here"

// refusal follows c's pointer through the arguments as the server
// completes them, member by member: a member the call (or a default
// filled in above it) leaves out takes its property's default, and
// within a default the defaults of its own properties. When any default
// was filled in on the way, c must hold for the value found; a sent
// value was judged by refusal already.
func (d *schemaDefaults) refusal(c *argCheck, pr *principal, args []byte) string {
	cur, filled := args, false
	tokens := c.ptr.Tokens()
	for k := 1; k <= len(tokens); k++ {
		if cur != nil {
			_, rest := c.ptr.Cut(k - 1)
			member, _ := rest.Cut(1)
			v, ok, err := member.Lookup(cur)
			switch {
			case err != nil && filled && cur[0] == '"':
				// A default that is a string, which a server may decode
				// (pydantic's Json) into what the pointer goes through.
				return notRead + " (a string default, which may be decoded)"
			case err != nil:
				// Through a value that is no object or array: the sent
				// one was refused already, and a default of that kind
				// gets nothing filled in beneath it.
				return ""
			case ok:
				cur = v.Raw()
				continue
			}
			if cur[0] == '[' {
				return "" // no such element, and no server adds one
			}
		}
		if reason := d.leftOut(tokens[:k]); reason != "" {
			return reason
		}
		here := propertyPath(tokens[:k])
		switch def, ok := d.values[here]; {
		case ok:
			cur = def
		case d.beneath[here]:
			cur = []byte("{}") // created, to fill in what is beneath
		default:
			return "" // left out, and nothing fills it in: optional holds
		}
		filled = true
	}
	if !filled {
		return ""
	}
	if reason := c.refusal(pr, cur, mcpparse.Pointer{}); reason != "" {
		return "is left out, and the default the tool's input schema gives it " + reason
	}
	return ""
}

// leftOut is the refusal of the member at path being left out when what
// may fill it in is not known, or "" when the declared defaults (values,
// beneath) tell.
func (d *schemaDefaults) leftOut(path []string) string {
	if d.unreadable {
		return notRead + " (properties nested too deep)"
	}
	for i := range path {
		a := propertyPath(path[:i])
		if d.opaque[a] {
			return notRead
		}
		// Inside a value of a map whose values get defaults.
		if i+1 < len(path) && d.mapValues[a] && !d.declared[propertyPath(path[:i+1])] {
			return notRead
		}
	}
	parent, here := propertyPath(path[:len(path)-1]), propertyPath(path)
	if d.declared[parent] && !d.declared[here] {
		if d.mapLike[parent] || d.composite[parent] {
			// A key of a map, which no server adds; or a member declared
			// by a $ref or combination that holds no default.
			return ""
		}
		// A member of an object the listed schema does not declare: the
		// server may check the call with a schema of its own (the
		// TypeScript SDK lists refined, piped or union zod schemas as an
		// empty object and applies their defaults all the same).
		return notRead + " (the schema does not declare it)"
	}
	return ""
}
