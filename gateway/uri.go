package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Resource URIs are matched by text prefix, so a URI is accepted only when
// every common parser (WHATWG URL as in Node and the Rust url crate under
// pydantic, Python's urllib, Go's net/url) reads it as the same resource
// the text names: it is a fixed point of their normalisations, up to the
// case of scheme and host, which the match ignores. Anything a parser
// would strip, decode, resolve or rewrite is refused instead of being
// normalised here, since normalising like one parser is still unlike the
// others.
//
// Accepted, byte by byte: the unreserved characters, the RFC 3986
// delimiters : / ? # [ ] @ ! $ & ' ( ) * + , ; = and percent-encodings
// with upper-case hex digits. A percent-encoding may encode only a byte
// that cannot appear raw: an ASCII character outside that set (space, '"',
// '<', '>', '^', '`', '{', '|', '}', controls excluded), '%', '?', '#', or
// UTF-8 of a character that no Unicode normalisation or IDNA mapping turns
// into ASCII or into nothing, and that full case mappings keep in its
// simple case-fold class (see checkDecoded). Raw non-ASCII is refused: WHATWG
// percent-encodes it in paths but maps it through IDNA in hosts.
//
// Structure: a scheme; for http, https, ws, wss and ftp an authority with
// a host and a path; for file an empty authority and a path without a
// drive letter (file servers ignore the host, and on Windows
// "file:///C:/x" is "file:///x"). An authority has no user information and no
// percent-encoding; its host is an IPv6 literal in RFC 5952 form, a
// dotted-decimal IPv4 address, or dot-separated non-empty labels of
// letters, digits, '-' and '_' whose last is not a number; its port is
// decimal without leading zeros and not the scheme's default. No segment
// of the path, query or fragment (split at / ? # ;) is made of dots only,
// nor of dots and encoded spaces; the path has no empty segment.

// specialPorts maps WHATWG's special schemes to their default port ("" for
// file, which has none).
var specialPorts = map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21", "file": ""}

// splitURI returns the scheme (as written) and the authority's end; auth
// is -1 when the URI has no authority.
func splitURI(uri string) (scheme string, authStart, authEnd int, err error) {
	i := strings.IndexByte(uri, ':')
	if i <= 0 || !validScheme(uri[:i]) {
		return "", 0, 0, errors.New("no scheme: not an absolute URI")
	}
	scheme = uri[:i]
	if !strings.HasPrefix(uri[i+1:], "//") {
		return scheme, -1, -1, nil
	}
	authStart = i + 3
	authEnd = len(uri)
	if j := strings.IndexAny(uri[authStart:], "/?#"); j >= 0 {
		authEnd = authStart + j
	}
	return scheme, authStart, authEnd, nil
}

func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !('a' <= c && c <= 'z' || i > 0 && ('0' <= s[i] && s[i] <= '9' || s[i] == '+' || s[i] == '-' || s[i] == '.')) {
			return false
		}
	}
	return s != ""
}

// checkURI refuses a resource URI that some parser reads differently from
// its text (see above).
func checkURI(uri string) error {
	if err := checkURIText(uri); err != nil {
		return fmt.Errorf("resource URI %q: %w", shownURI(uri), err)
	}
	return nil
}

// shownURI is uri as a refusal, and so the audit event's reason, names
// it: with the user information of its authority, up to the last '@' or
// "%40" there, left out ("postgres://…@db/x"), since it may hold a
// password (which checkURI refuses it for).
func shownURI(uri string) string {
	_, start, end, err := splitURI(uri)
	if err != nil || start < 0 {
		return uri
	}
	auth := uri[start:end]
	at := max(strings.LastIndexByte(auth, '@'), strings.LastIndex(strings.ToLower(auth), "%40"))
	if at < 0 {
		return uri
	}
	return uri[:start] + "…" + uri[start+at:]
}

func checkURIText(uri string) error {
	if err := checkURIBytes(uri); err != nil {
		return err
	}
	if err := checkDecoded(uri); err != nil {
		return err
	}
	scheme, as, ae, err := splitURI(uri)
	if err != nil {
		return err
	}
	lower := strings.ToLower(scheme)
	defPort, special := specialPorts[lower]
	path := uri[len(scheme)+1:]
	if as >= 0 {
		if err := checkAuthority(uri[as:ae], lower, defPort, special); err != nil {
			return err
		}
		path = uri[ae:]
	} else if special {
		return errors.New(scheme + " URI without \"//\" and authority")
	}
	if err := checkSegments(path); err != nil {
		return err
	}
	if _, query, ok := strings.Cut(path, "?"); ok && special && strings.ContainsRune(strings.SplitN(query, "#", 2)[0], '\'') {
		return errors.New("\"'\" in the query (WHATWG percent-encodes it)")
	}
	path, _, _ = strings.Cut(path, "?")
	path, _, _ = strings.Cut(path, "#")
	if special && !strings.HasPrefix(path, "/") {
		return errors.New("no path (WHATWG adds \"/\")")
	}
	if strings.Contains(path, "//") {
		return errors.New("empty path segment")
	}
	return checkFilePath(path, lower, as >= 0 || strings.HasPrefix(path, "/"))
}

// checkFilePath refuses a path (without query and fragment) that a Windows
// file system or a servlet container reads as another name: a segment
// ending in '.' or an encoded space (Windows trims them: "secret." is
// "secret"), an 8.3 short name ("SECRE~1" is "secret"), an NTFS stream
// (":$DATA", and in file URIs any ':': "secret::$DATA" and
// "secret::$INDEX_ALLOCATION" are "secret"), a drive letter in a file URI
// ("file:///C:/x" is "file:///x" on Windows: no ':', and no "%7C", '|',
// which WHATWG and Python read as ':' there), and in hierarchical URIs
// any ';' (servlet path parameters: "/secret;x/a" is "/secret/a") and a
// segment that begins with a drive (driveSegment). Case is
// handled by the rule match (see decideURI).
func checkFilePath(path, scheme string, hierarchical bool) error {
	if hierarchical && strings.IndexByte(path, ';') >= 0 {
		return errors.New("';' in the path (servlet containers drop path parameters)")
	}
	for i := 0; i < len(path); i++ {
		if path[i] == '~' && i+1 < len(path) && '0' <= path[i+1] && path[i+1] <= '9' {
			return errors.New("'~' and a digit in the path (a Windows 8.3 short name)")
		}
		if (i+1 == len(path) || path[i+1] == '/') && (path[i] == '.' || strings.HasSuffix(path[:i+1], "%20")) {
			return errors.New("path segment ending in '.' or space (Windows trims them)")
		}
	}
	if scheme == "file" {
		if strings.IndexByte(path, ':') >= 0 || strings.Contains(path, "%7C") {
			return errors.New("':' or '|' in a file path (a drive letter or an NTFS stream)")
		}
	} else if strings.Contains(path, ":$") {
		return errors.New("\":$\" in the path (an NTFS stream)")
	} else if hierarchical && driveSegment(path) {
		return errors.New("a path segment beginning with a letter and ':' (a Windows drive)")
	}
	return nil
}

// driveSegment reports whether a segment of path begins with a Windows
// drive, an ASCII letter and ':': a server on Windows that joins the path,
// or each of its segments, to its directory (os.path.join and pathlib,
// Node's path.win32.resolve, Java's Path.resolve) reads "/C:secret/a" as
// secret/a there, and "/C:/x" as an absolute path (file URIs refuse every
// ':').
func driveSegment(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if driveValue(seg) {
			return true
		}
	}
	return false
}

// checkURIBytes checks the characters and percent-encodings.
func checkURIBytes(uri string) error {
	for i := 0; i < len(uri); i++ {
		c := uri[i]
		switch {
		case c >= 0x80:
			return errors.New("non-ASCII character (percent-encode it)")
		case c <= 0x20 || c == 0x7f:
			return errors.New("control character or space")
		case c == '%':
			n, err := checkEscape(uri[i:])
			if err != nil {
				return err
			}
			i += n - 1
		case !rawURIByte(c):
			return fmt.Errorf("character %q must be percent-encoded", c)
		}
	}
	return nil
}

// checkDecoded checks checked URI text, percent-decoded, as a file
// system reads it: in NFC, since macOS file systems compare names up to
// canonical equivalence ("e%CC%81", e and a combining acute accent, names
// the same file as "%C3%A9"), and stable under full case mappings (see
// foldStable), since NTFS upper-cases names ("pr%C4%B1vate", with a
// dotless ı, is "PRIVATE") and the gateway compares case by simple
// folding. Only a URI with encoded non-ASCII is decoded.
func checkDecoded(uri string) error {
	// Encoded non-ASCII starts with a lead byte, %C2 to %F4 (hex digits
	// are upper case in checked text).
	if !strings.Contains(uri, "%C") && !strings.Contains(uri, "%D") && !strings.Contains(uri, "%E") && !strings.Contains(uri, "%F") {
		return nil
	}
	b := make([]byte, 0, len(uri))
	for j := 0; j < len(uri); j++ {
		if c, ok := escapedByte(uri[j:]); ok {
			b = append(b, c)
			j += 2
		} else {
			b = append(b, uri[j])
		}
	}
	if !norm.NFC.IsNormal(b) {
		return errors.New("percent-encoded text not in Unicode NFC (a normalising file system reads it composed)")
	}
	if !foldStable(string(b)) {
		return errors.New("percent-encoded character that a full case mapping reads beyond simple case folding (\"%C4%B1\", a dotless i, is \"I\" in upper case)")
	}
	return nil
}

// rawURIByte: unreserved characters and RFC 3986 delimiters.
func rawURIByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-._~:/?#[]@!$&'()*+,;=", c) >= 0
}

// checkEscape checks the percent-encoding at the start of s (one character:
// a UTF-8 sequence is taken whole) and returns its length in bytes.
func checkEscape(s string) (int, error) {
	var buf [utf8.UTFMax]byte
	n := 0
	for n == 0 || buf[0] >= 0x80 && n < len(buf) && !utf8.FullRune(buf[:n]) {
		b, ok := escapedByte(s[3*n:])
		if !ok {
			if n == 0 {
				return 0, errors.New("malformed percent-encoding (two upper-case hex digits)")
			}
			return 0, errors.New("percent-encoding is not UTF-8")
		}
		buf[n] = b
		n++
	}
	if c := buf[0]; c < 0x80 {
		if c != '%' && c != '?' && c != '#' && strings.IndexByte(" \"<>^`{|}", c) < 0 {
			return 0, fmt.Errorf("percent-encoded %q (write it raw, or not at all)", c)
		}
		return 3, nil
	}
	if r, size := utf8.DecodeRune(buf[:n]); r == utf8.RuneError || size != n {
		return 0, errors.New("percent-encoding is not UTF-8")
	} else if !safeURIRune(r) {
		return 0, fmt.Errorf("percent-encoded %U, which normalisation or IDNA turns into ASCII or nothing", r)
	}
	return 3 * n, nil
}

// escapedByte decodes the "%HH" at the start of s.
func escapedByte(s string) (byte, bool) {
	if len(s) < 3 || s[0] != '%' || upperHex(s[1]) < 0 || upperHex(s[2]) < 0 {
		return 0, false
	}
	return byte(upperHex(s[1])<<4 | upperHex(s[2])), true
}

// safeURIRune refuses characters that a decoding server may turn into
// ASCII (NFKC: U+FF0E FULLWIDTH FULL STOP is '.', U+FF0F is '/'), into a
// label separator (IDNA: U+3002 IDEOGRAPHIC FULL STOP) or into nothing
// (IDNA and many normalisers drop default-ignorable characters), and
// invisible characters and separators of any kind.
func safeURIRune(r rune) bool {
	if r == 0x3002 || r == 0xFF61 || !visibleRune(r) {
		return false
	}
	var b [utf8.UTFMax]byte
	for _, c := range norm.NFKC.Bytes(b[:utf8.EncodeRune(b[:], r)]) {
		if c < 0x80 {
			return false
		}
	}
	return true
}

func upperHex(c byte) int {
	if 'a' <= c && c <= 'f' {
		return -1
	}
	return unhex(c)
}

// checkAuthority checks an authority (between "//" and the path); scheme
// is lower case.
func checkAuthority(auth, scheme, defPort string, special bool) error {
	if scheme == "file" {
		if auth != "" {
			return errors.New("file URI with a host (file servers ignore it and read the path: write file:///path)")
		}
		return nil
	}
	if strings.ContainsAny(auth, "@%") {
		return errors.New("user information or percent-encoding in the authority")
	}
	host, port := auth, ""
	if strings.HasPrefix(auth, "[") {
		end := strings.IndexByte(auth, ']')
		if end < 0 {
			return errors.New("unterminated IPv6 literal")
		}
		host, port = auth[:end+1], auth[end+1:]
		if port != "" && port[0] != ':' {
			return errors.New("junk after the IPv6 literal")
		}
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" || strings.Contains(host, ".") || a.String() != strings.ToLower(host[1:len(host)-1]) {
			return errors.New("IPv6 literal not in canonical (RFC 5952) form")
		}
	} else {
		if i := strings.IndexByte(auth, ':'); i >= 0 {
			host, port = auth[:i], auth[i:]
		}
		if err := checkHost(host, special); err != nil {
			return err
		}
	}
	if port != "" {
		p := port[1:]
		n, err := strconv.Atoi(p)
		switch {
		case p == "" || err != nil || n > 65535 || strings.IndexFunc(p, func(r rune) bool { return r < '0' || r > '9' }) >= 0:
			return errors.New("invalid port")
		case len(p) > 1 && p[0] == '0':
			return errors.New("port with a leading zero")
		case special && p == defPort:
			return errors.New("default port written out")
		}
	}
	return nil
}

func checkHost(host string, special bool) error {
	if host == "" {
		if special {
			return errors.New("no host")
		}
		return nil
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty host label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host character %q", c)
			}
		}
	}
	last := labels[len(labels)-1]
	if !numericLabel(last) {
		return nil
	}
	// WHATWG reads a host ending in a number as IPv4 ("0x7f.1" is
	// 127.0.0.1): only the canonical dotted quad reads the same everywhere.
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() || a.String() != host {
		return errors.New("host ending in a number is not a dotted-decimal IPv4 address")
	}
	return nil
}

// numericLabel reports whether WHATWG's "ends in a number" reads l as a
// number: decimal digits, or 0x followed by hex digits.
func numericLabel(l string) bool {
	if len(l) >= 2 && l[0] == '0' && l[1]|0x20 == 'x' {
		l = l[2:]
		for i := 0; i < len(l); i++ {
			if unhex(l[i]) < 0 {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

// checkSegments refuses dot segments anywhere after the authority: split
// where any server might end a segment ("/", query and fragment marks,
// ";" for "..;/"), a segment of dots only, or of dots and encoded spaces
// (which Windows trims), resolves to another resource on some server.
func checkSegments(s string) error {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && strings.IndexByte("/?#;", s[i]) < 0 {
			continue
		}
		seg := s[start:i]
		start = i + 1
		if seg == "" || seg[0] != '.' && !strings.HasPrefix(seg, "%20") {
			continue
		}
		if strings.Trim(strings.ReplaceAll(seg, "%20", ""), ".") == "" {
			return errors.New("dot segment")
		}
	}
	return nil
}

// compilePrefix checks a resource rule prefix and returns it in canonical
// form (scheme and host lower case) with the length of its case-insensitive
// head (scheme and authority). A prefix is a URI checkURI accepts, cut
// anywhere after its authority, or just "scheme:" or "scheme://". A prefix
// that ends with its authority ("notes://all") names that whole authority:
// it matches the URI itself and URIs that go on with "/", "?" or "#", never
// "notes://allsecret" (see hasURIPrefix).
func compilePrefix(p string) (string, int, error) {
	if p == "" {
		return "", 0, errors.New("empty URI prefix")
	}
	if err := checkURIBytes(p); err != nil {
		return "", 0, err
	}
	scheme, as, ae, err := splitURI(p)
	if err != nil {
		return "", 0, err
	}
	head := len(scheme) + 1
	switch {
	case as < 0 && head == len(p), as == len(p):
		// "scheme:" or "scheme://": every URI of the scheme.
		return strings.ToLower(p), len(p), nil
	case as < 0:
		if _, special := specialPorts[strings.ToLower(scheme)]; special {
			return "", 0, errors.New(scheme + " prefix without \"//\" and authority")
		}
	default:
		head = ae
	}
	// The prefix must be a URI's beginning: checked as a URI, with an "x"
	// after a trailing "." or "%20" ("file:///a/." is the start of
	// "file:///a/.x").
	// A whole-authority prefix is checked with the "/" a special scheme's
	// URI needs after it.
	probe := p
	if strings.HasSuffix(p, ".") || strings.HasSuffix(p, "%20") {
		probe += "x"
	} else if head == len(p) {
		probe += "/"
	}
	if err := checkURIText(probe); err != nil {
		return "", 0, err
	}
	return strings.ToLower(p[:head]) + p[head:], head, nil
}

// hasURIPrefix matches a checked URI against a compiled prefix: scheme
// and authority case-insensitively, the rest exactly. A prefix that
// names a directory also matches the directory itself (dirPrefix).
func hasURIPrefix(uri string, r *compiledRule) bool { return uriPrefixRank(uri, r) >= 0 }

// uriPrefixRank is hasURIPrefix ranked for longestRule: -1 for no match,
// twice the prefix's length for a match as written, one less for the
// directory matched without its "/". That match is one character
// shorter: a rule of the prefix's length that matches the URI as written
// ("db://main/salaries?" beside "db://main/salaries/") decides the URI,
// not whichever of the two comes first (review s17-fresh F5).
func uriPrefixRank(uri string, r *compiledRule) int {
	p := r.Pattern
	if n := len(p) - 1; dirPrefix(r) && startsWith(uri, p[:n], r.foldLen) && (len(uri) == n || dirEnds(r, uri[n])) {
		return 2*len(p) - 1
	}
	if startsWith(uri, p, r.foldLen) && prefixEnds(uri, len(p), r) {
		return 2 * len(p)
	}
	return -1
}

// startsWith reports whether uri begins with the prefix text p, its first
// foldLen bytes (scheme and authority) compared without ASCII case.
func startsWith(uri, p string, foldLen int) bool {
	return len(uri) >= len(p) && strings.EqualFold(uri[:foldLen], p[:foldLen]) && uri[foldLen:len(p)] == p[foldLen:]
}

// dirPrefix reports whether a prefix names a directory: it ends with "/"
// after its authority ("file:///srv/secret/"). Servers name the directory
// without the "/" too ("file:///srv/secret", with or without a query or
// fragment: file servers, pathlib and path.resolve read one directory),
// so that spelling is the prefix's as well; otherwise a rule guarding the
// directory's contents would leave the directory itself (its listing, a
// database table's rows) to a broader rule.
func dirPrefix(r *compiledRule) bool {
	return len(r.Pattern) > r.foldLen && r.Pattern[len(r.Pattern)-1] == '/'
}

// dirEnds reports whether c, after the name of a directory prefix r
// names, ends that name: a query or a fragment begins where the prefix's
// "/" is in the path, a fragment where it is in the query. In the query
// or fragment the "/" is in, "?" belongs to the name ("get?path=/srv/pub?x"
// names a file "pub?x" in /srv, not the directory pub), and in a
// fragment "#" does too (review s17-fresh F4).
func dirEnds(r *compiledRule, c byte) bool {
	rest := r.Pattern[r.foldLen:]
	switch {
	case strings.IndexByte(rest, '#') >= 0:
		return false
	case strings.IndexByte(rest, '?') >= 0:
		return c == '#'
	}
	return c == '?' || c == '#'
}

// hasURIPrefixFold is hasURIPrefix with the whole URI compared as a
// case-insensitive file system would: ASCII letters and percent-encoded
// UTF-8 characters without regard to case.
func hasURIPrefixFold(uri string, r *compiledRule) bool { return uriPrefixFoldRank(uri, r) >= 0 }

// uriPrefixFoldRank is hasURIPrefixFold ranked as uriPrefixRank ranks.
func uriPrefixFoldRank(uri string, r *compiledRule) int {
	p := r.Pattern
	i, j := 0, 0
	for j < len(p) {
		if j == len(p)-1 && dirPrefix(r) && (i == len(uri) || dirEnds(r, uri[i])) {
			return 2*len(p) - 1 // the directory itself
		}
		var ok bool
		if i, j, ok = foldStep(uri, p, i, j); !ok {
			return -1
		}
	}
	if !prefixEnds(uri, i, r) {
		return -1
	}
	return 2 * len(p)
}

// hasTextPrefixFold reports whether checked URI text s begins with
// prefix when compared as hasURIPrefixFold compares: ASCII letters and
// percent-encoded UTF-8 characters without regard to case.
func hasTextPrefixFold(s, prefix string) bool {
	i, j := 0, 0
	for j < len(prefix) {
		var ok bool
		if i, j, ok = foldStep(s, prefix, i, j); !ok {
			return false
		}
	}
	return true
}

// foldStep compares the character of uri at i with the one of p at j
// without regard to case, and returns the offsets after them and
// whether they are alike (false at the end of uri).
func foldStep(uri, p string, i, j int) (int, int, bool) {
	if i == len(uri) {
		return i, j, false
	}
	if c, d := uri[i], p[j]; c != '%' && d != '%' {
		if c != d && (c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z') {
			return i, j, false
		}
		return i + 1, j + 1, true
	}
	a, m := uriRune(uri[i:])
	b, n := uriRune(p[j:])
	return i + m, j + n, equalFoldRune(a, b)
}

// prefixEnds checks where a matched prefix ends in uri (at n): the URI's
// authority ends where the prefix's does. A prefix that goes past its
// authority has there a character an authority cannot contain, and one
// that ends with its authority (not with ":" or "//") needs the URI's to
// end there.
func prefixEnds(uri string, n int, r *compiledRule) bool {
	p := r.Pattern
	if r.foldLen == len(p) && len(uri) > n && p[len(p)-1] != ':' && p[len(p)-1] != '/' {
		return strings.IndexByte("/?#", uri[n]) >= 0
	}
	return true
}

// uriRune returns the first character of checked URI text and its length:
// a percent-encoded non-ASCII character decoded, anything else one byte
// ("%20" is '%', '2', '0').
func uriRune(s string) (rune, int) {
	b, ok := escapedByte(s)
	if !ok || b < 0xc0 {
		return rune(s[0]), 1
	}
	var buf [utf8.UTFMax]byte
	n := 0
	for ; n < len(buf); n++ {
		c, ok := escapedByte(s[3*n:])
		if !ok || n > 0 && c&0xc0 != 0x80 {
			break
		}
		buf[n] = c
	}
	r, size := utf8.DecodeRune(buf[:n])
	return r, 3 * size
}

func equalFoldRune(a, b rune) bool {
	if a == b {
		return true
	}
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		return a|0x20 == b|0x20 && 'a' <= a|0x20 && a|0x20 <= 'z'
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}
