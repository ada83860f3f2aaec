package gateway

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/unicode/norm"
)

// clientMethods lists, per method, the revisions whose schema defines it
// as a client request or notification (schema/<revision>/schema.ts,
// ClientRequest and ClientNotification, in
// modelcontextprotocol/modelcontextprotocol; for 2026-07-28 also the Tasks
// extension's tasks/get, tasks/update and tasks/cancel). Any other method
// is refused unless a method rule names it: an upstream that matches
// methods loosely ("Tools/Call", "tools/call ") would otherwise run an
// operation the gateway decided as something else.
var clientMethods = func() map[string]revision {
	const (
		r2025 = rev20241105 | rev20250326 | rev20250618 | rev20251125
		all   = r2025 | rev20260728
	)
	return map[string]revision{
		"initialize":                       r2025,
		"ping":                             r2025,
		"logging/setLevel":                 r2025,
		"resources/subscribe":              r2025,
		"resources/unsubscribe":            r2025,
		"notifications/initialized":        r2025,
		"notifications/progress":           r2025,
		"notifications/roots/list_changed": r2025,
		"completion/complete":              all,
		"prompts/get":                      all,
		"prompts/list":                     all,
		"resources/list":                   all,
		"resources/templates/list":         all,
		"resources/read":                   all,
		"tools/call":                       all,
		"tools/list":                       all,
		"notifications/cancelled":          all,
		"tasks/get":                        rev20251125 | rev20260728,
		"tasks/cancel":                     rev20251125 | rev20260728,
		"tasks/result":                     rev20251125,
		"tasks/list":                       rev20251125,
		"notifications/tasks/status":       rev20251125,
		"tasks/update":                     rev20260728,
		"server/discover":                  rev20260728,
		"subscriptions/listen":             rev20260728,
	}
}()

// errMethodNotFound marks a method that the request's revision does not
// define and no method rule passes.
var errMethodNotFound = errors.New("method not found")

// compileMethodPattern checks a method rule's glob: visible ASCII, and
// matching no method any revision defines, compared without case, so no
// rule can take a method from its dedicated handling (tools/call,
// prompts/get, resources/*, tasks/*), nor pass a spelling of it to an
// upstream that ignores case.
func compileMethodPattern(p string) (string, int, error) {
	if err := validGlob(p); err != nil {
		return "", 0, err
	}
	if !visibleASCII(p) {
		return "", 0, errors.New("method pattern must be visible ASCII")
	}
	lower := strings.ToLower(p)
	for m := range clientMethods {
		if globMatch(lower, strings.ToLower(m)) {
			return "", 0, errors.New("pattern matches MCP method " + m + ", which has its own handling")
		}
	}
	return p, 0, nil
}

// visibleASCII: 0x21-0x7e only, so no whitespace, controls or anything a
// server could trim, fold or normalise away.
func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}

// maxToolName is the longest tool name SEP-986 allows.
const maxToolName = 128

// validToolName is SEP-986: 1 to 128 characters of A-Z a-z 0-9 _ - . /
// (case-sensitive), and pathSafeName. A name outside it is refused on
// tools/call and left out of tools/list, since a server could trim, fold,
// normalise or resolve it into a name another rule decides.
func validToolName(name string) bool {
	if name == "" || len(name) > maxToolName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == '/') {
			return false
		}
	}
	return pathSafeName(name)
}

// pathSafeName refuses a name with a segment, split at '/' or '\', that is
// empty or made of dots only: a server that maps names to paths (a prompt
// per file, a tool per URL) resolves it to another name, so
// "read_/../delete_all" is delete_all there and "/admin_x" is admin_x to
// Node's path.join. It refuses a percent-encoded octet ("%2e", "%2F",
// "%252e") too: a server that puts the name in a URL reads
// "summary/%2e%2e/admin_x" as admin_x (WHATWG URL parsers resolve "%2e"
// segments as dots), and one that decodes it first sees the slashes.
// And it refuses a segment that begins with a Windows drive, an ASCII
// letter and ':' (prompt names only: tool names hold no ':'): a server on
// Windows that joins the name, or each of its segments, to its directory
// (os.path.join and pathlib, Node's path.win32.resolve, Java's
// Path.resolve) reads "C:admin_x" as admin_x there, on drive C, as a
// file in another directory on another drive, and "C:/x" as the absolute
// path, as "/x" is one.
func pathSafeName(name string) bool {
	for i := 0; i+2 < len(name); i++ {
		if name[i] == '%' && unhex(name[i+1]) >= 0 && unhex(name[i+2]) >= 0 {
			return false
		}
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' && name[i] != '\\' {
			continue
		}
		if seg := name[start:i]; strings.Trim(seg, ".") == "" || driveValue(seg) {
			return false
		}
		start = i + 1
	}
	return true
}

// validPromptName refuses prompt names with controls, whitespace, invisible
// or unassigned characters, characters NFKC changes ("ｄelete" is "delete"
// to a normalising server), or characters a full case mapping takes out
// of their simple case-fold class (see foldStable), and names pathSafeName
// refuses: MCP does not restrict prompt names, but none of those names one
// prompt for every server.
func validPromptName(name string) bool {
	if !pathSafeName(name) {
		return false
	}
	if visibleASCII(name) {
		return true
	}
	if name == "" || !norm.NFKC.IsNormalString(name) {
		return false
	}
	for _, r := range name {
		if r == utf8.RuneError || !visibleRune(r) {
			return false
		}
	}
	return foldStable(name)
}

// visibleRune refuses controls, separators and characters that are
// invisible or that normalisers drop (format characters, variation
// selectors, other default-ignorable code points).
func visibleRune(r rune) bool {
	return unicode.IsGraphic(r) && !unicode.Is(unicode.Zs, r) && r != 0x034F &&
		!unicode.Is(unicode.Variation_Selector, r) && !unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r)
}

// foldStable reports whether every full Unicode case mapping (upper,
// lower and fold; Turkish and Azeri upper and lower; Lithuanian upper)
// maps each non-ASCII character of s to one non-ASCII character of its
// simple case-fold class, the class the gateway's case-insensitive
// comparisons use. Otherwise an upstream that compares names with
// toUpperCase, upper() or equalsIgnoreCase, or a file system that
// upper-cases names, reads another name than the gateway: "admın" (dotless
// ı) is "ADMIN", "ß" is "SS". U+0307 COMBINING DOT ABOVE is refused: the
// mappings that depend on context remove it ("I\u0307" is "i" in Turkish
// lower case, "i\u0307" is "I" in Lithuanian upper case); every other
// mapping is one character's, so each cased character is mapped once,
// which bounds the cost by the number of cased characters Unicode has.
// ASCII is not looked at (Turkish "i" to "İ" maps the rules the same way),
// so only non-ASCII text pays.
func foldStable(s string) bool {
	var casers []cases.Caser
	var seen map[rune]bool
	for _, r := range s {
		if r < utf8.RuneSelf || !casedRune(r) || seen[r] {
			if r == 0x0307 {
				return false
			}
			continue
		}
		if casers == nil {
			casers = []cases.Caser{
				cases.Upper(language.Und), cases.Lower(language.Und), cases.Fold(),
				cases.Upper(language.Turkish), cases.Lower(language.Turkish), // Azeri casing is Turkish
				cases.Upper(language.Lithuanian),
			}
			seen = make(map[rune]bool)
		}
		for _, c := range casers {
			m := c.String(string(r))
			if n, size := utf8.DecodeRuneInString(m); size != len(m) || n < utf8.RuneSelf || !equalFoldRune(r, n) {
				return false
			}
		}
		seen[r] = true
	}
	return true
}

// casedRune: the characters Unicode gives case mappings (Cased, and
// those with a simple case-fold class).
func casedRune(r rune) bool {
	return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt, unicode.Other_Lowercase, unicode.Other_Uppercase) || unicode.SimpleFold(r) != r
}
