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
	// (additionalProperties or patternProperties as a schema). A value
	// present may get defaults, which mapValues says; mapKeys says a key
	// left out may be added with a default value (zod 4 fills in every
	// key of a record over an enum or literal with its value's default).
	mapLike, mapValues, mapKeys map[string]bool
	// tupleDefaults: array schemas with positional item schemas
	// (prefixItems, or items as an array, here or through a $ref) that
	// hold a default: zod 4 and pydantic (NamedTuple) fill in a trailing
	// element the call leaves out.
	tupleDefaults map[string]bool
	// selfDefault: properties whose own value may get a default from a
	// $ref or a combination (zod's .default().nullable() lists anyOf
	// [{default, ...}, {null}]; zod 3 lists a reused schema as a $ref).
	selfDefault map[string]bool
	// placeholder: schemas that declare no member at all (properties
	// {}): the TypeScript SDK lists a refined, piped or union zod schema
	// so, and applies its defaults all the same.
	placeholder map[string]bool
	// unreadable: properties nest deeper than maxSchemaDepth, or their
	// paths pass pathBudget.
	unreadable bool
}

// mapKeywords are the schema keywords of an object's undeclared members.
var mapKeywords = []string{"additionalProperties", "patternProperties", "unevaluatedProperties"}

// readDefaults reads a tool definition's schemaDefaults. The definition
// is in canonical form (canonicalJSON), so a member named default is
// spelled "default".
func readDefaults(def []byte) *schemaDefaults {
	d := &schemaDefaults{values: map[string][]byte{}, declared: map[string]bool{}, beneath: map[string]bool{},
		opaque: map[string]bool{}, mapLike: map[string]bool{}, mapValues: map[string]bool{}, mapKeys: map[string]bool{}, tupleDefaults: map[string]bool{}, selfDefault: map[string]bool{}, placeholder: map[string]bool{}}
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
		// zod 4 fills in the keys of a record over a finite set of them.
		if names := members["propertyNames"]; r.valueDefault(v) &&
			(bytes.Contains(names, []byte(`"enum"`)) || bytes.Contains(names, []byte(`"const"`)) || bytes.Contains(names, []byte(`"$ref"`))) {
			d.mapKeys[key] = true
		}
		delete(members, k)
	}
	if r.tupleDefault(schema, 0) {
		d.tupleDefaults[key] = true
	}
	if p, ok := members["properties"]; ok && string(p) == "{}" {
		d.placeholder[key] = true
	}
	if key != "" && r.branchDefault(members, 0) {
		d.selfDefault[key] = true
	}
	// Definitions count where a $ref uses them; properties are read one
	// by one, and the schema's own default is its value, not a member's.
	for _, k := range []string{"properties", "default", "$defs", "definitions"} {
		delete(members, k)
	}
	for k, v := range members {
		name, _ := json.Marshal(k)
		if r.mayDefault(json.RawMessage(`{` + string(name) + `:` + string(v) + `}`)) {
			d.opaque[key] = true
		}
	}
}

// tupleDefault reports whether a schema, or one it refers to or
// combines (eachBranch), has positional item schemas (prefixItems, or
// items as an array) with a default among them.
func (r *refReader) tupleDefault(schema []byte, depth int) bool {
	var m map[string]json.RawMessage
	if depth > maxRefDepth {
		return true
	}
	if !r.spend(len(schema)) {
		return r.anyDefault()
	}
	if json.Unmarshal(schema, &m) != nil {
		return false
	}
	if hasDefault(m["prefixItems"]) || (bytes.HasPrefix(m["items"], []byte("[")) && hasDefault(m["items"])) {
		return true
	}
	return r.eachBranch(m, readTuple, depth, func(b []byte) bool { return r.tupleDefault(b, depth+1) })
}

// valueDefault reports whether a schema, or a schema of schemas
// (patternProperties), has a default of its own for its value
// (ownDefault).
func (r *refReader) valueDefault(schema []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(schema, &m) != nil {
		return false
	}
	if r.ownDefault(m, 0) {
		return true
	}
	for _, v := range m {
		// patternProperties: pattern → schema.
		var inner map[string]json.RawMessage
		if json.Unmarshal(v, &inner) == nil && r.ownDefault(inner, 0) {
			return true
		}
	}
	return false
}

// ownDefault reports whether a schema (its members given) gives its value
// a default: its own, or one of a branch or referenced schema, at any
// depth of $refs and combinations (not in their properties, which are
// members' defaults).
func (r *refReader) ownDefault(members map[string]json.RawMessage, depth int) bool {
	_, has := members["default"]
	return has || r.branchDefault(members, depth)
}

// branchDefault is ownDefault without the schema's own default.
func (r *refReader) branchDefault(members map[string]json.RawMessage, depth int) bool {
	if depth > maxRefDepth {
		return true
	}
	return r.eachBranch(members, readOwn, depth, func(b []byte) bool {
		if !r.spend(len(b)) {
			return r.anyDefault()
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return false // true, false: no default
		}
		return r.ownDefault(m, depth+1)
	})
}

// eachBranch calls test with each schema a schema (its members given)
// refers to or combines: the target of a $ref, each of anyOf, oneOf and
// allOf, if, then, else, and each of dependentSchemas, until test holds.
// It holds, too, for a branch it cannot read: a $ref it cannot follow
// while the input schema has a default somewhere, a malformed list.
// kind and depth name test's reading for refTo's answers.
func (r *refReader) eachBranch(members map[string]json.RawMessage, kind refReading, depth int, test func(branch []byte) bool) bool {
	for k, v := range members {
		switch k {
		case "$ref", "$dynamicRef", "$recursiveRef":
			if found, unknown := r.refTo(v, kind, depth, test); found || unknown {
				return true
			}
		case "anyOf", "oneOf", "allOf":
			var branches []json.RawMessage
			if json.Unmarshal(v, &branches) != nil {
				return true
			}
			for _, b := range branches {
				if test(b) {
					return true
				}
			}
		case "if", "then", "else":
			if test(v) {
				return true
			}
		case "dependentSchemas":
			var schemas map[string]json.RawMessage
			if json.Unmarshal(v, &schemas) != nil {
				return true
			}
			for _, b := range schemas {
				if test(b) {
					return true
				}
			}
		}
	}
	return false
}

// refReader tells whether a part of an input schema may hold a default,
// following $refs into the schema.
type refReader struct {
	root json.RawMessage
	// read counts the bytes of schemas read following $refs and
	// branches, bounded by maxRefReading (spend).
	read int
	// rootDefault caches hasDefault(root): 0 not read yet, 1 no, 2 yes.
	rootDefault int8
	// answers are refTo's, by reference, reading and depth.
	answers map[refAnswer]bool
	// targets are the schemas resolve found, by reference (nil: not
	// found). Finding one reads the whole input schema (Lookup reads
	// each object on its path to its end), so each reference is looked
	// up once and spends the input schema's length.
	targets map[string][]byte
}

// maxRefDepth bounds the chain of $refs followed.
const maxRefDepth = 16

// maxRefReading bounds the bytes of schemas a definition's refReader
// reads following $refs and branches. A reference's answer is kept per
// depth (refTo), so a schema whose definitions each name the next one
// three times over ("d0": {"anyOf": [{"$ref": "#/$defs/d1"}, …×3]}, …)
// is no longer read 3^16 times at depth 16, but inline branches are
// read along each path still. The bound allows some 16,000 small
// schemas. Finding a
// $ref's target reads the whole input schema, so each lookup counts its
// length too (resolve: once per reference). Past the bound a schema may
// hold a default if the input schema has one anywhere (anyDefault), as a
// $ref not followed.
const maxRefReading = 64 << 20

// spend counts a schema of n bytes read, at least 4 KiB each (what
// decoding a small one costs), reporting whether the reading is still
// within maxRefReading.
func (r *refReader) spend(n int) bool {
	r.read += max(n, 4<<10)
	return r.read <= maxRefReading
}

// anyDefault is hasDefault of the input schema, read once.
func (r *refReader) anyDefault() bool {
	if r.rootDefault == 0 {
		r.rootDefault = 1
		if hasDefault(r.root) {
			r.rootDefault = 2
		}
	}
	return r.rootDefault == 2
}

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
	if !r.spend(len(schema)) {
		return r.anyDefault()
	}
	for rest := schema; ; {
		i := bytes.Index(rest, []byte(`"$ref":`))
		j := bytes.Index(rest, []byte(`"$dynamicRef":`))
		k := bytes.Index(rest, []byte(`"$recursiveRef":`))
		if i < 0 && (j >= 0 || k >= 0) {
			return r.anyDefault() // not followed
		}
		if i < 0 {
			return false
		}
		rest = rest[i+len(`"$ref":`):]
		var ref json.RawMessage
		if json.NewDecoder(bytes.NewReader(rest)).Decode(&ref) != nil || depth >= maxRefDepth {
			return r.anyDefault()
		}
		if found, unknown := r.refTo(ref, readFollow, depth, func(t []byte) bool { return r.follow(t, depth+1) }); found || unknown {
			return true
		}
	}
}

// refTo applies test to the schema a $ref member's value names; unknown
// is set when that schema cannot be found and the input schema holds a
// default somewhere (so the reference may lead to one). test's answer
// for a reference is kept by the reading it is (kind) and the depth it
// was reached at: definitions that name each other several times over
// are then read once per depth, not once per path (3^16 paths at depth
// 16 for three names of the next each). An answer given past
// maxRefReading is kept too: true where the input schema has a default
// anywhere, and false where it has none, which is then the answer.
func (r *refReader) refTo(v json.RawMessage, kind refReading, depth int, test func(target []byte) bool) (found, unknown bool) {
	var ref string
	if json.Unmarshal(v, &ref) != nil {
		return false, true
	}
	key := refAnswer{ref: ref, kind: kind, depth: depth}
	if found, ok := r.answers[key]; ok {
		return found, false
	}
	target, ok := r.resolve(ref)
	if !ok {
		return false, r.anyDefault()
	}
	found = test(target)
	if r.answers == nil {
		r.answers = map[refAnswer]bool{}
	}
	r.answers[key] = found
	return found, false
}

// refReading names what refTo's test reads of a reference's target:
// positional items with a default (tupleDefault), a default of the
// target's own value (branchDefault), or a default anywhere in it
// (follow).
type refReading uint8

const (
	readTuple refReading = iota
	readOwn
	readFollow
)

// refAnswer is the key of an answer refTo keeps.
type refAnswer struct {
	ref   string
	kind  refReading
	depth int
}

// resolve finds the schema a local JSON pointer reference names
// ("#/$defs/Filter", "#/properties/a"). Past maxRefReading it finds
// none, which refTo reads as a reference that may lead to a default.
func (r *refReader) resolve(ref string) ([]byte, bool) {
	if target, ok := r.targets[ref]; ok {
		return target, target != nil
	}
	target, ok := r.lookup(ref)
	if r.read > maxRefReading {
		return nil, false // nothing more is looked up, or kept
	}
	if r.targets == nil {
		r.targets = map[string][]byte{}
	}
	r.targets[ref] = target
	return target, ok
}

// lookup is resolve without its cache.
func (r *refReader) lookup(ref string) ([]byte, bool) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, false
	}
	frag, err := url.PathUnescape(frag)
	if err != nil {
		return nil, false
	}
	ptr, err := mcpparse.ParsePointer(frag)
	if err != nil || !r.spend(len(r.root)) {
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
				switch array := propertyPath(tokens[:k-1]); {
				case d.tupleDefaults[array]:
					return notRead + " (a tuple element with a default, which a server may add)"
				case !d.declared[array]:
					// An array reached through items, a map value or a
					// $ref, whose own schema is not read: it may be a
					// tuple with defaults where one above may hide them.
					return d.leftOut(tokens[:k])
				}
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
		return notRead + " (properties nested too deep, or their names too long)"
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
	if d.selfDefault[propertyPath(path)] {
		return notRead + " (through a $ref or a combination)"
	}
	if parent := propertyPath(path[:len(path)-1]); d.mapKeys[parent] && !d.declared[propertyPath(path)] {
		return notRead + " (a map whose values have a default, which a server may add the key with)"
	}
	// The nearest schema on the path that is read: one that declares no
	// member at all may stand for a schema the server does not list.
	for i := len(path) - 1; i >= 0; i-- {
		if a := propertyPath(path[:i]); d.declared[a] {
			if d.placeholder[a] {
				return notRead + " (the schema lists no members: the server may check the call against one it does not list)"
			}
			break
		}
	}
	return ""
}
