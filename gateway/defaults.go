package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// schemaDefaults is what a tool definition's input schema says of the
// values a server may fill in for arguments a call leaves out: the Go
// SDK applies the schema's defaults (into the defaults it fills in, too),
// and the Python and TypeScript SDKs declare their parameters' own
// defaults there. Optional argument rules are checked against them
// (defaultRefusal).
type schemaDefaults struct {
	// values: propertyPath of a property → its default's JSON.
	values map[string][]byte
	// opaque: propertyPath of the schemas (the input schema itself: "")
	// whose members may get a default that is not read here: one behind
	// a $ref (Python's nested models), in a combination (anyOf, oneOf,
	// allOf, if/then/else), or in a schema of members not named in
	// properties, or of array items.
	opaque map[string]bool
	// beneath: propertyPath of the properties without a default of their
	// own that have one among their properties, at any depth: the Go SDK
	// creates such an object when the call leaves it out, to fill those
	// in.
	beneath map[string]bool
	// unreadable: properties nest deeper than maxSchemaDepth.
	unreadable bool
}

// opaqueKeywords are the schema keywords through which a member may get a
// default that readDefaults does not follow.
var opaqueKeywords = []string{"$ref", "$dynamicRef", "anyOf", "oneOf", "allOf", "if", "then", "else",
	"dependentSchemas", "patternProperties", "additionalProperties", "unevaluatedProperties", "items", "prefixItems"}

// readDefaults reads a tool definition's schemaDefaults. The definition
// is in canonical form (canonicalJSON), so a member named default is
// spelled "default".
func readDefaults(def []byte) *schemaDefaults {
	d := &schemaDefaults{values: map[string][]byte{}, opaque: map[string]bool{}, beneath: map[string]bool{}}
	var tool struct {
		InputSchema json.RawMessage `json:"inputSchema"`
	}
	_ = json.Unmarshal(def, &tool) // no input schema: no defaults
	// A $ref may lead to defaults only where the schema holds some: in
	// its definitions, or in a property another one refers to (zod 3's
	// "#/properties/a" for a reused schema).
	refDefaults := hasDefault(tool.InputSchema)
	if opaqueSchema(tool.InputSchema, refDefaults) {
		d.opaque[""] = true
	}
	err := eachProperty(def, func(path []string, prop json.RawMessage) error {
		var p struct {
			Default json.RawMessage `json:"default"`
		}
		if json.Unmarshal(prop, &p) == nil && p.Default != nil {
			d.values[propertyPath(path)] = p.Default
			for i := 1; i < len(path); i++ {
				d.beneath[propertyPath(path[:i])] = true
			}
		}
		if opaqueSchema(prop, refDefaults) {
			d.opaque[propertyPath(path)] = true
		}
		return nil
	})
	d.unreadable = err != nil
	return d
}

// hasDefault reports whether a schema (canonical JSON) has a member named
// default anywhere, or may be "default" as a string, which counts too.
func hasDefault(schema []byte) bool { return bytes.Contains(schema, []byte(`"default"`)) }

// opaqueSchema reports whether a schema has one of the opaqueKeywords
// through which a default may come: a $ref when refDefaults (the
// definitions hold defaults) or when it is not local, and the others
// when their schemas have a default or a $ref to defaults.
func opaqueSchema(schema json.RawMessage, refDefaults bool) bool {
	var members map[string]json.RawMessage
	if json.Unmarshal(schema, &members) != nil {
		return false
	}
	for _, k := range opaqueKeywords {
		v, ok := members[k]
		switch {
		case !ok:
		case k == "$ref" || k == "$dynamicRef":
			var ref string
			if refDefaults || json.Unmarshal(v, &ref) != nil || !strings.HasPrefix(ref, "#") {
				return true
			}
		case hasDefault(v) || (refDefaults && bytes.Contains(v, []byte(`"$ref"`))) || bytes.Contains(v, []byte(`"$dynamicRef"`)):
			return true
		}
	}
	return false
}

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

// opaqueAbove reports whether a schema on the way to the member at path
// (the input schema's, or a property's above it) may give its members a
// default that is not read here. A path through an array element or a
// member not named in properties names no property: the schema above
// that holds its defaults (items, additionalProperties) decides.
func (d *schemaDefaults) opaqueAbove(path []string) bool {
	for i := range path {
		if d.opaque[propertyPath(path[:i])] {
			return true
		}
	}
	return false
}

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

// refusal follows c's pointer through the arguments as the server
// completes them, member by member: a member the call (or a default
// filled in above it) leaves out takes its property's default, and
// within a default the defaults of its own properties, as the Go SDK
// applies them. When any default was filled in on the way, c must hold
// for the value found; a sent value was judged by refusal already.
func (d *schemaDefaults) refusal(c *argCheck, pr *principal, args []byte) string {
	cur, filled := args, false
	tokens := c.ptr.Tokens()
	for k := 1; k <= len(tokens); k++ {
		found := false
		if cur != nil {
			_, rest := c.ptr.Cut(k - 1)
			member, _ := rest.Cut(1)
			v, ok, err := member.Lookup(cur)
			switch {
			case err != nil:
				// Through a value that is no object or array: the sent
				// one was refused already, and a default of that kind
				// gets nothing filled in beneath it.
				return ""
			case ok:
				cur, found = v.Raw(), true
			}
		}
		if found {
			continue
		}
		if len(cur) > 0 && cur[0] == '[' {
			return "" // no such element, and no server adds one
		}
		if d.unreadable || d.opaqueAbove(tokens[:k]) {
			return "is left out, and the tool's input schema may give it a default that is not read here (a $ref, a combination, array items, other members, or properties nested too deep)"
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
