package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Argument predicates (ArgRule.Predicate).
const (
	argEquals    = "equals"
	argOneOf     = "one_of"
	argGlob      = "glob"
	argPrefix    = "prefix"
	argRegex     = "regex"
	argMaxLength = "max_length"
	argMin       = "min"
	argMax       = "max"
	argPresent   = "present"
	argAbsent    = "absent"
	argType      = "type"
)

// argTypes are the names the type predicate takes: the JSON types, and
// integer (a number without fractional part, 1.0 and 1e2 included).
var argTypes = []string{"string", "number", "integer", "boolean", "null", "object", "array"}

// argCheck is an ArgRule compiled at load.
type argCheck struct {
	ptr       mcpparse.Pointer
	predicate string
	desc      string // the predicate and values as configured, for refusal reasons
	optional  bool

	values []template // equals, one_of, glob, prefix
	nums   []decimal  // min, max; the values of equals and one_of that are numbers
	re     *regexp.Regexp
	maxLen int
	types  []string
}

// template is a configured string with token placeholders.
type template struct {
	parts []templatePart
}

// templatePart is literal text, or a claim ({token.<path>}) when claim is
// set.
type templatePart struct {
	text  string
	claim string // dotted claim path, "" for literal text
}

// compileArgs checks a rule's argument rules.
func compileArgs(args []ArgRule) ([]argCheck, error) {
	out := make([]argCheck, 0, len(args))
	for _, a := range args {
		c, err := compileArg(a)
		if err != nil {
			return nil, fmt.Errorf("arg %q %s: %w", a.Pointer, a.Predicate, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func compileArg(a ArgRule) (argCheck, error) {
	ptr, err := mcpparse.ParsePointer(a.Pointer)
	if err != nil {
		return argCheck{}, err
	}
	c := argCheck{ptr: ptr, predicate: a.Predicate, optional: a.Optional, desc: a.Predicate}
	if len(a.Values) > 0 {
		c.desc += " " + strings.Join(a.Values, " ")
	}
	count := func(lo, hi int) error {
		switch n := len(a.Values); {
		case n < lo && lo == hi:
			return fmt.Errorf("takes %d value(s)", lo)
		case n < lo:
			return fmt.Errorf("takes at least %d value(s)", lo)
		case hi >= 0 && n > hi:
			return fmt.Errorf("takes at most %d value(s)", hi)
		}
		return nil
	}
	switch a.Predicate {
	case argEquals, argOneOf, argGlob, argPrefix:
		hi := -1
		if a.Predicate == argEquals {
			hi = 1
		}
		if err := count(1, hi); err != nil {
			return c, err
		}
		for _, v := range a.Values {
			t, err := parseTemplate(v)
			if err != nil {
				return c, err
			}
			if a.Predicate == argPrefix && len(t.parts) == 0 {
				return c, errors.New("an empty prefix holds for every string")
			}
			if a.Predicate == argGlob {
				if err := validGlob(t.resolveWith(func(string) string { return "x" })); err != nil {
					return c, err
				}
				if err := t.checkPlaceholderEscapes(); err != nil {
					return c, err
				}
			}
			c.values = append(c.values, t)
			if a.Predicate == argEquals || a.Predicate == argOneOf {
				if d, err := parseConfigNumber(v); err == nil {
					c.nums = append(c.nums, d)
				}
			}
		}
	case argRegex:
		if err := count(1, 1); err != nil {
			return c, err
		}
		if strings.Contains(a.Values[0], "{token.") {
			return c, errors.New("placeholders are not replaced in a regex")
		}
		// A complete expression on its own, so that none of it can close
		// the anchoring group below ("a)|(.*" would match every string).
		if _, err := regexp.Compile(a.Values[0]); err != nil {
			return c, err
		}
		// Anchored: the whole string must match, as with every other
		// string predicate.
		if c.re, err = regexp.Compile(`^(?:` + a.Values[0] + `)$`); err != nil {
			return c, err
		}
	case argMaxLength:
		if err := count(1, 1); err != nil {
			return c, err
		}
		if c.maxLen, err = strconv.Atoi(a.Values[0]); err != nil || c.maxLen < 0 {
			return c, errors.New("takes a non-negative integer")
		}
	case argMin, argMax:
		if err := count(1, 1); err != nil {
			return c, err
		}
		d, err := parseConfigNumber(a.Values[0])
		if err != nil {
			return c, fmt.Errorf("%q: %w", a.Values[0], err)
		}
		c.nums = []decimal{d}
	case argPresent, argAbsent:
		if err := count(0, 0); err != nil {
			return c, err
		}
		if a.Optional {
			return c, errors.New("optional contradicts " + a.Predicate)
		}
	case argType:
		if err := count(1, -1); err != nil {
			return c, err
		}
		for _, v := range a.Values {
			if !slices.Contains(argTypes, v) {
				return c, fmt.Errorf("unknown type %q: want one of %s", v, strings.Join(argTypes, ", "))
			}
		}
		c.types = a.Values
	default:
		return c, errors.New("unknown predicate: want equals, one_of, glob, prefix, regex, max_length, min, max, present, absent or type")
	}
	return c, nil
}

// parseTemplate reads a value with {token.<claim path>} placeholders; any
// other brace is an error, so that no placeholder is left unreplaced.
func parseTemplate(s string) (template, error) {
	if !norm.NFC.IsNormalString(s) {
		return template{}, fmt.Errorf("value %q is not in Unicode NFC, so no argument could equal it", s)
	}
	var t template
	for s != "" {
		i := strings.IndexAny(s, "{}")
		if i < 0 {
			t.parts = append(t.parts, templatePart{text: s})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, templatePart{text: s[:i]})
		}
		end := strings.IndexByte(s[i:], '}')
		if s[i] == '}' || end < 0 {
			return template{}, fmt.Errorf("unbalanced brace in %q", s)
		}
		ph := s[i+1 : i+end]
		path, ok := strings.CutPrefix(ph, "token.")
		if !ok || !validClaimPath(path) {
			return template{}, fmt.Errorf("unknown placeholder {%s}: want {token.<claim>} such as {token.sub}, {token.email} or {token.client_id}", ph)
		}
		t.parts = append(t.parts, templatePart{claim: path})
		s = s[i+end+1:]
	}
	return t, nil
}

// checkPlaceholderEscapes refuses a glob whose text escapes the first
// character of a placeholder's value ("C:\Users\{token.email}"): the
// value is quoted (quoteGlob), and an odd run of backslashes before it
// would escape the quoting backslash, so a value starting with "*" would
// match as a wildcard.
func (t template) checkPlaceholderEscapes() error {
	for i, p := range t.parts {
		if p.claim != "" || i+1 == len(t.parts) {
			continue
		}
		n := len(p.text) - len(strings.TrimRight(p.text, `\`))
		if n%2 == 1 {
			return fmt.Errorf("glob %q: the backslash before {token.%s} would escape its value's first character; write \\\\ for a backslash", p.text, t.parts[i+1].claim)
		}
	}
	return nil
}

// validClaimPath checks a dotted claim path: non-empty names without
// braces.
func validClaimPath(p string) bool {
	for _, name := range strings.Split(p, ".") {
		if name == "" || strings.ContainsAny(name, "{}") {
			return false
		}
	}
	return true
}

// claims lists the claim paths a template reads.
func (t template) claims() []string {
	var out []string
	for _, p := range t.parts {
		if p.claim != "" {
			out = append(out, p.claim)
		}
	}
	return out
}

// resolve fills in the principal's claims, with quote applied to each;
// ok is false when a claim is absent, empty or not a string (fail closed).
func (t template) resolve(pr *principal, quote func(string) string) (string, bool) {
	if len(t.parts) == 1 && t.parts[0].claim == "" {
		return t.parts[0].text, true
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.claim == "" {
			b.WriteString(p.text)
			continue
		}
		v := pr.claim(p.claim)
		if v == "" {
			return "", false
		}
		b.WriteString(quote(v))
	}
	return b.String(), true
}

// jsonLiteral reports whether the template is the text true, false or
// null, or a JSON number, which equals and one_of read as that JSON
// value, never as a string.
func (t template) jsonLiteral() bool {
	if len(t.parts) != 1 || t.parts[0].claim != "" {
		return false
	}
	switch t.parts[0].text {
	case "true", "false", "null":
		return true
	}
	_, err := parseDecimal(t.parts[0].text)
	return err == nil
}

// resolveWith fills in every claim with fill.
func (t template) resolveWith(fill func(string) string) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.claim == "" {
			b.WriteString(p.text)
		} else {
			b.WriteString(fill(p.claim))
		}
	}
	return b.String()
}

func noQuote(s string) string { return s }

// quoteGlob escapes the glob metacharacters of a claim value, which
// matches only itself.
func quoteGlob(s string) string {
	if !strings.ContainsAny(s, `*?\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '*' || r == '?' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// argRefusal checks the arguments of a tools/call (nil when absent)
// against a rule's argument rules; it returns the pointer of the first
// that fails and why, or reason "".
func argRefusal(checks []argCheck, pr *principal, args []byte) (ptr, reason string) {
	if args != nil && args[0] != '{' {
		return "", "arguments is not an object"
	}
	for i := range checks {
		c := &checks[i]
		reason := c.refusal(pr, args, c.ptr)
		if reason == "" {
			reason = c.decodedRefusal(pr, args)
		}
		if reason != "" {
			return c.ptr.String(), "argument " + strconv.Quote(c.ptr.String()) + " " + reason
		}
	}
	return "", ""
}

// decodedRefusal checks c against the second reading of the argument its
// pointer starts at, when that argument is a string of JSON text for an
// array, an object or null: servers on the Python SDK decode such a
// string into the value it spells before the tool runs (pre_parse_json,
// for every parameter not declared a plain str), so c must hold for that
// value too. Text that such a decoder may read but that cannot be checked
// here (NaN, duplicate names, lone surrogates, deep nesting) is refused.
func (c *argCheck) decodedRefusal(pr *principal, args []byte) string {
	switch {
	case c.ptr.Len() == 0 || args == nil:
		return ""
	case c.predicate == argPresent, c.predicate == argAbsent:
		// Decoding changes no presence. max_length is checked: decoding
		// makes no string longer, but "null" and "{}" decode to what is
		// no string, which max_length refuses as null and {} are.
		return ""
	}
	first, rest := c.ptr.Cut(1)
	v, found, err := first.Lookup(args)
	if err != nil || !found || v.Type() != "string" {
		return "" // as refusal read it
	}
	text, err := v.Text()
	if err != nil {
		return "cannot be read"
	}
	if !mayDecode(text) {
		return ""
	}
	if err := mcpparse.CheckValue(text, 0); err != nil {
		if errors.Is(err, mcpparse.ErrInvalidJSON) && !pythonJSONOnly(text) {
			return "" // no JSON decoder reads it: a string to every server
		}
		return "is a string that a server may decode as JSON, and its JSON cannot be checked"
	}
	if reason := c.refusal(pr, text, rest); reason != "" {
		return "is a string of JSON that a server may decode, and decoded it " + reason
	}
	return ""
}

// mayDecode reports whether a string's text may decode to an array, an
// object or null: what it starts with after JSON whitespace.
func mayDecode(text []byte) bool {
	t := bytes.TrimLeft(text, " \t\n\r")
	return len(t) > 0 && (t[0] == '[' || t[0] == '{' || bytes.HasPrefix(t, []byte("null")))
}

// pythonJSONOnly reports whether invalid JSON text may still be what
// Python's json module reads: it has NaN, Infinity or a \u escape (a lone
// surrogate, which Python takes).
func pythonJSONOnly(text []byte) bool {
	return bytes.Contains(text, []byte("NaN")) || bytes.Contains(text, []byte("Infinity")) || bytes.Contains(text, []byte(`\u`))
}

// refusal is why the value at ptr in args (nil: no arguments) fails c,
// or "".
func (c *argCheck) refusal(pr *principal, args []byte, ptr mcpparse.Pointer) string {
	var (
		v     mcpparse.Value
		found bool
		err   error
	)
	if args != nil {
		v, found, err = ptr.Lookup(args)
	}
	switch {
	case err != nil:
		return "cannot be reached: " + strings.TrimPrefix(err.Error(), "mcpparse: ")
	case c.predicate == argAbsent:
		if found {
			return "must be absent"
		}
		return ""
	case !found && c.optional:
		return ""
	case !found:
		return "is missing (" + c.desc + ")"
	case c.predicate == argPresent:
		return ""
	case c.predicate == argType:
		if !c.hasType(v) {
			return "is not of " + c.desc
		}
		return ""
	}
	if v.Type() != "array" {
		return c.scalarRefusal(pr, v)
	}
	// A predicate on an array holds for every element, and an empty array
	// fails it: "no owner given" must not read as "every owner is you".
	reason, n := "", 0
	if err := v.Elements(func(e mcpparse.Value) bool {
		n++
		if e.Type() == "array" {
			reason = "has an array element where " + c.desc + " expects a value"
		} else {
			reason = c.scalarRefusal(pr, e)
		}
		return reason == ""
	}); err != nil {
		return "cannot be read"
	}
	if n == 0 {
		return "is an empty array (" + c.desc + " holds for each element of a non-empty one)"
	}
	if reason != "" {
		return "has an element that " + reason
	}
	return ""
}

func (c *argCheck) hasType(v mcpparse.Value) bool {
	t := v.Type()
	if slices.Contains(c.types, t) {
		return true
	}
	if t == "number" && slices.Contains(c.types, "integer") {
		d, err := parseDecimal(string(v.Raw()))
		return err == nil && d.isInteger()
	}
	return false
}

// scalarRefusal checks one value that is not an array.
func (c *argCheck) scalarRefusal(pr *principal, v mcpparse.Value) string {
	switch v.Type() {
	case "string":
		return c.stringRefusal(pr, v)
	case "number":
		return c.numberRefusal(v)
	case "boolean", "null":
		if c.predicate == argEquals || c.predicate == argOneOf {
			for _, t := range c.values {
				if len(t.parts) == 1 && t.parts[0].text == string(v.Raw()) {
					return ""
				}
			}
			return "is not " + c.desc
		}
	}
	return "is a " + v.Type() + ", not what " + c.predicate + " compares"
}

func (c *argCheck) numberRefusal(v mcpparse.Value) string {
	d, err := parseDecimal(string(v.Raw()))
	if err != nil {
		return "is not a number"
	}
	switch c.predicate {
	case argMin:
		if d.cmp(c.nums[0]) < 0 {
			return "is below " + c.desc
		}
		return ""
	case argMax:
		if d.cmp(c.nums[0]) > 0 {
			return "is above " + c.desc
		}
		return ""
	case argEquals, argOneOf:
		for _, n := range c.nums {
			if d.cmp(n) == 0 {
				return ""
			}
		}
		return "is not " + c.desc
	}
	return "is a number, not what " + c.predicate + " compares"
}

// controlOrLineBreak: a control character (C0, DEL, C1: NUL, CR, LF,
// VT, FF, NEL, ...) or U+2028 LINE SEPARATOR or U+2029 PARAGRAPH
// SEPARATOR, the line ends besides controls that readers split lines on.
func controlOrLineBreak(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

func (c *argCheck) stringRefusal(pr *principal, v mcpparse.Value) string {
	b, err := v.Text()
	if err != nil {
		return "cannot be read"
	}
	if c.predicate == argMaxLength {
		if utf8.RuneCount(b) > c.maxLen {
			return "exceeds " + c.desc + " characters"
		}
		return ""
	}
	if c.predicate == argMin || c.predicate == argMax {
		return "is a string, not what " + c.predicate + " compares"
	}
	// An upstream may normalise text (a file system, a database
	// collation) or stop at NUL or a line break (C strings, mail
	// headers): a value that could read as another is refused, as
	// resource URIs are. A line break is also U+2028 and U+2029, which
	// are no control characters but end a line to Python's
	// str.splitlines, to YAML 1.1 (PyYAML) and to JavaScript's regular
	// expressions (^ and $ with the m flag; . does not match them).
	if bytes.IndexFunc(b, controlOrLineBreak) >= 0 {
		return "has a control character or line break"
	}
	if !norm.NFC.IsNormal(b) {
		return "is not in Unicode NFC"
	}
	if c.predicate == argRegex {
		if !c.re.Match(b) {
			return "does not match " + c.desc
		}
		return ""
	}
	for _, t := range c.values {
		if t.jsonLiteral() && (c.predicate == argEquals || c.predicate == argOneOf) {
			// The JSON value only (scalarRefusal, numberRefusal):
			// JavaScript and Python read the strings "false", "null" and
			// "0" as true (if (args.force), zod's z.coerce.boolean()),
			// where false, null and 0 are false.
			continue
		}
		quote := noQuote
		if c.predicate == argGlob {
			quote = quoteGlob
		}
		want, ok := t.resolve(pr, quote)
		if !ok {
			continue
		}
		switch c.predicate {
		case argEquals, argOneOf:
			ok = string(b) == want
		case argPrefix:
			ok = len(b) >= len(want) && string(b[:len(want)]) == want
		case argGlob:
			ok = globMatch(want, string(b))
		}
		if ok {
			return ""
		}
	}
	return "does not match " + c.desc
}
