package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// uriConfig guards /secret/ and two hosts behind their own scopes, under a
// broad rule, so a URI that a server resolves differently from its text
// could reach them with the broad scope only.
func uriConfig(t testing.TB) Config {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "file:", Scopes: []string{"files:read"}},
		{Pattern: "file:///secret/", Scopes: []string{"files:secret"}},
		{Pattern: "https://", Scopes: []string{"files:read"}},
		{Pattern: "HTTPS://Internal.Example/", Scopes: []string{"files:secret"}},
		{Pattern: "https://127.0.0.1/", Scopes: []string{"files:secret"}},
		{Pattern: "https://[::1]/", Scopes: []string{"files:secret"}},
		{Pattern: "Demo://X/", Scopes: []string{"files:secret"}},
		{Pattern: "demo:", Scopes: []string{"files:read"}},
		{Pattern: "file:///%C3%A9t%C3%A9/", Scopes: []string{"files:secret"}},
		{Pattern: "https://public.example/secret/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///private/", Scopes: []string{"files:secret"}},
	}
	return cfg
}

// uriVariants: URIs that some parser reads as another resource than the
// text names, and their neighbours that every parser reads as written.
var uriVariants = []struct {
	uri   string
	allow bool // with files:read only; false: refused before the upstream
}{
	// Plain.
	{"file:///public/a.txt", true},
	{"file:///public/a%20b.txt", true},
	{"file:///public/%C3%A9.txt", true},
	{"file:///public/a.b/..c/d..e", true},
	{"file:///public/a~b/c~", true},
	{"file:///public/Other", true},
	{"file:///Public/a", true},
	{"https://public.example/Secret2/a", true},
	{"https://public.example/ab:c/d", true}, // a colon in the path (a drive is one letter and ':')
	{"https://public.example/a/1:b", true},
	// A segment that begins with a drive: to a server on Windows that
	// joins the path, or each segment, to its directory "/C:secret/a" is
	// secret/a, "/C:/x" an absolute path.
	{"https://public.example/a:b/c", false},
	{"https://public.example/public/C:secret", false},
	{"https://public.example/c:/secret/a", false},
	{"demo://y/a/Z:", false},
	{"https://public.example/a?x=1;y=2.", true},
	{"demo:a;b", true},
	{"file:///public/x?q=a//b", true},
	{"file:///public/x%3Fy%23z%25", true},
	{"https://public.example/a", true},
	{"https://public.example:8443/a", true},
	{"demo://y/a", true},
	{"demo:opaque", true},
	{"mem:", false}, // no rule
	// Guarded: the narrower rule applies whatever the case of scheme and host.
	{"file:///secret/key", false},
	{"FILE:///secret/key", false},
	{"https://INTERNAL.example/k", false},
	{"https://internal.example/k", false},
	{"demo://x/k", false},
	{"DEMO://x/k", false},
	{"file:///%C3%A9t%C3%A9/k", false},
	// Tab, newline and carriage return, which WHATWG removes.
	{"file:///public/.\t./secret/key", false},
	{"file:///public/.\n./secret/key", false},
	{"file:///public/.\r./secret/key", false},
	{"file:///public/\t../secret/key", false},
	{"file:///secr\tet/key", false},
	{"fi\tle:///secret/key", false},
	{"ht\ntps://internal.example/k", false},
	// Leading and trailing C0 and space, which WHATWG and urllib strip.
	{" file:///secret/key", false},
	{"\x00file:///secret/key", false},
	{"\x1ffile:///public/a", false},
	{"file:///public/a ", false},
	{"file:///public/a\x7f", false},
	{"file:///public/a b", false},
	// Dot segments in any spelling.
	{"file:///public/../secret/key", false},
	{"file:///public/./a", false},
	{"file:///public/...", false},
	{"file:///public/%2e%2e/secret/key", false},
	{"file:///public/%2E%2e/secret/key", false},
	{"file:///public/.%2e/secret/key", false},
	{"file:///public/%2e./secret/key", false},
	{"file:///public/%2e/a", false},
	{"file:///public/..%20/secret/key", false},
	{"file:///public/%20../secret/key", false},
	{"file:///public/..;/secret/key", false},
	{"file:///public/x?/../../secret", false},
	{"file:///public/x#/../../secret", false},
	{"file:///public/..", false},
	// Unicode that NFKC or IDNA turns into '.' or '/', or into nothing.
	{"file:///public/%EF%BC%8E%EF%BC%8E/secret/key", false}, // U+FF0E
	{"file:///public/\uff0e\uff0e/secret/key", false},
	{"file:///public/%E2%80%A5/secret/key", false},  // U+2025 two dot leader
	{"file:///public/%EF%B9%92./secret/key", false}, // U+FE52 small full stop
	{"file:///public%EF%BC%8Fsecret", false},        // U+FF0F fullwidth solidus
	{"file:///secr%C2%ADet/key", false},             // soft hyphen
	{"file:///secr%E2%80%8Bet/key", false},          // zero-width space
	{"file:///secret%EF%B8%8F/key", false},          // variation selector
	{"file:///%EF%BD%93ecret/key", false},           // fullwidth s
	{"https://internal%E3%80%82example/k", false},   // ideographic full stop
	{"https://internal\u3002example/k", false},
	{"https://\uff49nternal.example/k", false},
	{"file:///public/%C3", false},
	{"file:///public/%C3%28", false},
	{"file:///public/%FF", false},
	{"file:///public/%ED%A0%80", false}, // surrogate
	// Backslashes, which WHATWG reads as '/' in special schemes.
	{`file:///public\..\secret\key`, false},
	{`file:///public/..\secret`, false},
	{`https:\\internal.example\k`, false},
	{"file:///public%5C..%5Csecret", false},
	// Percent-encodings that decoding servers read as the raw character.
	{"file:///%73ecret/key", false},
	{"file:///public%2f..%2fsecret", false},
	{"file:///%2fsecret/key", false},
	{"file:///public/%c3%a9.txt", false}, // lower-case hex
	{"file:///%C3%A9t%C3%A9/k", false},
	{"file:///public/%21", false},
	{"file:///public/%zz", false},
	{"file:///public/%", false},
	{"file:///public/%0a", false},
	{"file:///public/%00", false},
	// Raw characters that WHATWG encodes, and raw non-ASCII.
	{"file:///public/a{b}", false},
	{"file:///public/a|b", false},
	{"file:///public/a\"b", false},
	{"file:///public/\u00e9.txt", false},
	{"https://public.example/a?it's", false},
	// Empty path segments.
	{"file:////secret/key", false},
	{"file:///public//../secret", false},
	// Authorities WHATWG rewrites.
	{"file://localhost/secret/key", false},
	{"file://LOCALHOST/secret/key", false},
	{"https://internal.example:443/k", false},
	{"https://internal.example:0443/k", false},
	{"https://internal.example:/k", false},
	{"https://internal.example./k", false},
	{"https://internal..example/k", false},
	{"https://user@internal.example/k", false},
	{"https://public.example@internal.example/k", false},
	{"https://%69nternal.example/k", false},
	{"https://0x7f.1/k", false},
	{"https://2130706433/k", false},
	{"https://127.1/k", false},
	{"https://127.0.0.01/k", false},
	{"https://[0:0::1]/k", false},
	{"https://[::ffff:127.0.0.1]/k", false},
	{"https://[::1%25eth0]/k", false},
	{"https://internal.example", false},
	{"https://internal.example?x", false},
	{"https:/internal.example/k", false},
	{"https:internal.example/k", false},
	{"https:///internal.example/k", false},
	{"file:/secret/key", false},
	{"file:secret/key", false},
	{"file://../secret/key", false},
	{"file://C:/secret", false},
	// Names that Windows, servlet containers or case-insensitive file
	// systems read as the guarded /secret/.
	{"file:///secret./key", false},
	{"file:///secret../key", false},
	{"file:///secret.%20./key", false},
	{"file:///secret%20/key", false},
	{"file:///public/a.", false},
	{"file:///public/a%20", false},
	{"file:///public/x.?q", false},
	{"file:///public/x%20#f", false},
	{"https://public.example/secret./a", false},
	{"https://public.example/secret%20/a", false},
	{"file:///secret;x/key", false},
	{"file:///public/a;b", false},
	{"https://public.example/secret;jsessionid=1/a", false},
	{"https://public.example/secret/;/a", false},
	{"demo://y/a;b", false},
	{"demo:/a;b", false},
	{"file:///Secret/key", false},
	{"file:///SECRET/key", false},
	{"FILE:///sEcReT/key", false},
	{"https://public.example/Secret/a", false},
	{"https://PUBLIC.example/SECRET/a", false},
	{"file:///%C3%89t%C3%A9/k", false}, // Été for été
	{"file:///%C3%89T%C3%89/k", false},
	{"file:///e%CC%81t%C3%A9/k", false}, // été decomposed, which macOS file systems compose
	{"file:///public/e%CC%81", false},
	{"file:///public/%E0%A4%B9%E0%A4%BF", true}, // हि: a spacing mark that NFC keeps
	// Percent-encoded characters whose full case mapping (NTFS upper-cases
	// names; Python and JS upper-case and fold fully) is ASCII, several
	// characters or of another case class: "pr%C4%B1vate" is "PRIVATE".
	{"file:///pr%C4%B1vate/key", false},      // dotless ı
	{"file:///PR%C4%B0VATE/key", false},      // İ
	{"file:///pri%CC%87vate/key", false},     // i and a combining dot above (Lithuanian upper case: I)
	{"file:///public/stra%C3%9Fe", false},    // ß: SS
	{"file:///public/STRA%E1%BA%9EE", false}, // ẞ: ss folded
	{"file:///%C5%BFecret/key", false},       // ſ: S
	{"file:///public/%E2%84%AAey", false},    // Kelvin sign: k
	{"file:///public/%EF%AC%81le", false},    // ﬁ: FI
	{"https://public.example/pr%C4%B1vate", false},
	{"file:///public/x?q=stra%C3%9Fe", false},
	{"file:///public/%C3%BCber%C3%9CBER", true},             // üÜ
	{"file:///public/%D1%81%D0%B2%D0%BE%D0%B4", true},       // Cyrillic
	{"file:///public/%E8%A6%81%E7%B4%84", true},             // CJK
	{"file:///public/%CE%BB%CF%8C%CE%B3%CE%BF%CF%82", true}, // λόγος, final sigma
	{"file:///SECRET~1/key", false},
	{"file:///secre~1/key", false},
	{"file:///public/a~9", false},
	{"https://public.example/SECRE~1/a", false},
	{"file:///secret::$DATA", false},
	{"file:///secret::$INDEX_ALLOCATION/key", false},
	{"file:///secret:$I30:$INDEX_ALLOCATION/key", false},
	{"file:///public/a:b", false},
	{"file:///C:secret/key", false},
	{"file:///C:/a:b", false},
	// Drive letters: on Windows "file:///C:/secret" is "file:///secret".
	{"file:///C:/secret/key", false},
	{"file:///C:/public/a", false},
	{"file:///c:", false},
	{"file:///C%7C/secret/key", false},
	{"file:///c|/secret/key", false},
	{"file:///C%3A/secret/key", false},
	{"file:///public/a%7Cb", false},
	// Hosts in file URIs, which file servers ignore: "file://h/secret" is
	// "/secret" to Python's urlparse, url2pathname and pydantic.
	{"file://h/secret/key", false},
	{"file://H/public/a", false},
	{"file://127.0.0.1/secret/key", false},
	{"file://[::1]/secret/key", false},
	{"file://h:8080/secret/key", false},
	{"file://public.example/public/a", false},
	{"file:///CC:/a", false},
	{"file:///1:/a", false},
	{"https://public.example/secret::$INDEX_ALLOCATION/a", false},
	{"demo://y/a:$DATA", false},
	// Not absolute.
	{"/secret/key", false},
	{"secret/key", false},
	{"", false},
	{":x", false},
	{"1file:///public/a", false},
}

// TestResourceURIVariants: every variant is refused before the upstream
// (which sees nothing), and the accepted ones reach it byte for byte.
func TestResourceURIVariants(t *testing.T) {
	h := newHarness(t, uriConfig(t), nil)
	token := mint(t, func() jwt.MapClaims { c := claims(); c["scope"] = "mcp files:read"; return c }())
	for _, method := range []string{"resources/read", "resources/subscribe", "resources/unsubscribe"} {
		for _, tt := range uriVariants {
			t.Run(method+" "+tt.uri, func(t *testing.T) {
				body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{"uri":` + quote(tt.uri) + `}}`
				before := len(h.up.requests())
				resp := h.do(t, call{body: body, token: token})
				got := readBody(t, resp)
				reqs := h.up.requests()[before:]
				if !tt.allow {
					if resp.StatusCode != 400 && resp.StatusCode != 403 {
						t.Errorf("status = %d, want 400 or 403 (%s)", resp.StatusCode, got)
					}
					rpcErr(t, got)
					if len(reqs) != 0 {
						t.Fatalf("upstream saw %s", reqs[0].Body)
					}
					return
				}
				if resp.StatusCode != 200 || len(reqs) != 1 || string(reqs[0].Body) != body {
					t.Fatalf("status = %d (%s), upstream saw %d requests, want the exact body", resp.StatusCode, got, len(reqs))
				}
			})
		}
	}
}

func TestCompilePrefix(t *testing.T) {
	// A file prefix with a host could match nothing; say why.
	if _, _, err := compilePrefix("file://h/data/"); err == nil || !strings.Contains(err.Error(), "file URI with a host") {
		t.Errorf("compilePrefix(file://h/data/) error = %v, want one naming the host", err)
	}
	good := []struct{ in, want string }{
		{"file:", "file:"},
		{"file://", "file://"},
		{"file:///", "file:///"},
		{"FILE:///Public/", "file:///Public/"},
		{"Demo://X/", "demo://x/"},
		{"HTTPS://Internal.Example:8443/A", "https://internal.example:8443/A"},
		{"https://[::1]/", "https://[::1]/"},
		{"file:///a/.", "file:///a/."},
		{"file:///a%20", "file:///a%20"},
		{"file:///a~", "file:///a~"},
		{"https://h/ab:c/", "https://h/ab:c/"},
		{"urn:isbn:", "urn:isbn:"},
		{"Notes://All", "notes://all"},
		{"https://Internal.Example", "https://internal.example"},
		{"https://internal.example:8443", "https://internal.example:8443"},
	}
	for _, tt := range good {
		got, _, err := compilePrefix(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("compilePrefix(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{
		"", "/secret/", "secret", "file:///a/../", "file:///a/./", "file:///a\t/", "file:///a b/",
		"file:///a%2e/", "file:///a%c3%a9/", "file:///\u00e9/", `file:///a\`, "file:////", "file:/a/",
		"https://a@b/", "https://internal.example:443/",
		"https://0x7f.1/", "file://localhost/", "https:internal.example/", "file:///%EF%BC%8E/",
		"file:///a./", "file:///a%20/", "file:///a;b/", "https://h/a;", "file:///a~1/", "file:///a:b/", "file:///ab:",
		"https://h/a:$DATA/", "https://h/a:b/", "notes://all/x/C:",
		"file:///C:/", "file:///c:", "file:///C%7C/", "file://h/", "file://h", "file://127.0.0.1/data/", "file://[::1]/",
		"file:///pr%C4%B1vate/", "file:///stra%C3%9Fe/",
	} {
		if got, _, err := compilePrefix(in); err == nil {
			t.Errorf("compilePrefix(%q) = %q, want an error", in, got)
		}
		if _, err := New(Config{Resource: testResource, Issuer: testIssuer, Keys: newTestKeys(theKeys(t)), ResourceRules: []Rule{{Pattern: in}}}); err == nil {
			t.Errorf("New accepted resource rule %q", in)
		}
	}
}

// whatwgNormalize is a small reference of what a WHATWG URL parser does to
// the text of a URL: strip leading and trailing C0 and space, remove tab,
// LF and CR, read '\' as '/' in special schemes, lower-case scheme and
// host, decode %2e and resolve dot segments in the path.
func whatwgNormalize(s string) string {
	s = strings.TrimFunc(s, func(r rune) bool { return r <= 0x20 })
	s = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(s)
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return s
	}
	scheme, rest := strings.ToLower(s[:i]), s[i+1:]
	if _, special := specialPorts[scheme]; special {
		rest = strings.ReplaceAll(rest, `\`, "/")
	}
	auth := ""
	if strings.HasPrefix(rest, "//") {
		rest = rest[2:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		auth, rest = "//"+strings.ToLower(rest[:end]), rest[end:]
	}
	p, tail := rest, ""
	if j := strings.IndexAny(rest, "?#"); j >= 0 {
		p, tail = rest[:j], rest[j:]
	}
	segs := strings.Split(p, "/")
	var out []string
	for k, seg := range segs {
		switch strings.ToLower(seg) {
		case ".", "%2e":
			seg = ""
			if k != len(segs)-1 {
				continue
			}
		case "..", ".%2e", "%2e.", "%2e%2e":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			seg = ""
			if k != len(segs)-1 {
				continue
			}
		}
		out = append(out, seg)
	}
	return scheme + ":" + auth + strings.Join(out, "/") + tail
}

// goResolved is what a Go server that resolves the decoded path reads.
func goResolved(u *url.URL) string {
	p := u.Path
	if p == "" {
		return ""
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// FuzzResourceURI: a URI the gateway accepts is a fixed point of a WHATWG
// parser's normalisation (up to the case of scheme and host, which the
// match ignores) and of Go's, so it stays under every prefix it matched
// (or, for a prefix naming a directory, is that directory: dirPrefix).
func FuzzResourceURI(f *testing.F) {
	for _, v := range uriVariants {
		f.Add(v.uri, "file:///public/")
	}
	for _, s := range []string{
		"file:///public/.\t./secret", "file:///public/.\n./secret", "file:///public/%2E%2e/secret",
		"HTTPS://Internal.Example/a/b", "demo://X/a/./b", "file:///public/%EF%BC%8E%EF%BC%8E/x",
	} {
		f.Add(s, "file:///public/")
		f.Add(s, "https://internal.example/a/")
		f.Add(s, "demo://x/a/")
	}
	f.Add("file:///public", "file:///public/")
	f.Add("file:///public?x", "file:///public/")
	f.Fuzz(func(t *testing.T, uri, prefix string) {
		p, foldLen, err := compilePrefix(prefix)
		if err != nil || checkURI(uri) != nil {
			return
		}
		norm := whatwgNormalize(uri)
		scheme, as, ae, _ := splitURI(uri)
		head := len(scheme) + 1
		if as >= 0 {
			head = ae
		}
		canon := strings.ToLower(uri[:head]) + uri[head:]
		if norm != canon {
			t.Fatalf("accepted %q, which WHATWG normalizes to %q", uri, norm)
		}
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatalf("accepted %q, which net/url refuses: %v", uri, err)
		}
		if r := goResolved(u); r != u.Path {
			t.Fatalf("accepted %q, whose path %q resolves to %q", uri, u.Path, r)
		}
		r := compiledRule{Rule: Rule{Pattern: p}, foldLen: foldLen}
		dir := p[:len(p)-1]
		isDir := dirPrefix(&r) && (norm == dir || strings.HasPrefix(norm, dir+"?") || strings.HasPrefix(norm, dir+"#"))
		if hasURIPrefix(uri, &r) && !strings.HasPrefix(norm, p) && !isDir {
			t.Fatalf("%q matched prefix %q but normalizes to %q", uri, p, norm)
		}
	})
}

// A prefix that ends with its authority matches that authority only.
func TestWholeAuthorityPrefix(t *testing.T) {
	for _, tt := range []struct {
		prefix, uri string
		want        bool
	}{
		{"notes://all", "notes://all", true},
		{"notes://all", "NOTES://ALL", true},
		{"notes://all", "notes://all/x", true},
		{"notes://all", "notes://all?x", true},
		{"notes://all", "notes://all#x", true},
		{"notes://all", "notes://allsecret", false},
		{"notes://all", "notes://all.evil.example/", false},
		{"notes://all", "notes://all:80/", false},
		{"https://internal.example", "https://internal.example/a", true},
		{"https://internal.example", "https://internal.example.evil/a", false},
		{"notes://", "notes://anything", true},
		{"notes:", "notes:x", true},
	} {
		p, foldLen, err := compilePrefix(tt.prefix)
		if err != nil {
			t.Fatalf("compilePrefix(%q): %v", tt.prefix, err)
		}
		r := compiledRule{Rule: Rule{Pattern: p}, foldLen: foldLen}
		if got := hasURIPrefix(tt.uri, &r); got != tt.want {
			t.Errorf("hasURIPrefix(%q, %q) = %v, want %v", tt.uri, tt.prefix, got, tt.want)
		}
	}
}

// TestDirectoryPrefix: a prefix that ends with "/" after its authority
// names a directory (or collection), which servers also name without the
// "/" (file servers read "file:///srv/secret" and "file:///srv/secret/"
// as one directory, pathlib and path.resolve drop the slash): the prefix
// matches that spelling too, with or without a query or fragment, and
// nothing else that lacks the "/".
func TestDirectoryPrefix(t *testing.T) {
	for _, tt := range []struct {
		prefix, uri string
		want        bool
	}{
		{"file:///srv/secret/", "file:///srv/secret/a", true},
		{"file:///srv/secret/", "file:///srv/secret/", true},
		{"file:///srv/secret/", "file:///srv/secret", true},
		{"file:///srv/secret/", "file:///srv/secret?x", true},
		{"file:///srv/secret/", "file:///srv/secret#x", true},
		{"file:///srv/secret/", "file:///srv/secretive", false},
		{"file:///srv/secret/", "file:///srv/secre", false},
		{"file:///srv/secret/", "file:///srv/", false},
		{"db://main/salaries/", "DB://MAIN/salaries", true},
		{"db://main/salaries/", "db://main/salaries_public", false},
		{"file:///", "file:///a", true},
		// A "/" in the query: "?" there is the name's own ("pub?x" is a
		// file in /srv, not the directory pub); "#" still ends it
		// (review s17-fresh F4).
		{"https://files.example/get?path=/srv/pub/", "https://files.example/get?path=/srv/pub", true},
		{"https://files.example/get?path=/srv/pub/", "https://files.example/get?path=/srv/pub#x", true},
		{"https://files.example/get?path=/srv/pub/", "https://files.example/get?path=/srv/pub?x", false},
		{"notes://n/a#sec/", "notes://n/a#sec", true},
		{"notes://n/a#sec/", "notes://n/a#sec#x", false},
		{"notes://n/a#sec/", "notes://n/a#sec?x", false},
	} {
		p, foldLen, err := compilePrefix(tt.prefix)
		if err != nil {
			t.Fatalf("compilePrefix(%q): %v", tt.prefix, err)
		}
		r := compiledRule{Rule: Rule{Pattern: p}, foldLen: foldLen}
		if got := hasURIPrefix(tt.uri, &r); got != tt.want {
			t.Errorf("hasURIPrefix(%q, %q) = %v, want %v", tt.uri, tt.prefix, got, tt.want)
		}
		if got := hasURIPrefixFold(tt.uri, &r); got != tt.want {
			t.Errorf("hasURIPrefixFold(%q, %q) = %v, want %v", tt.uri, tt.prefix, got, tt.want)
		}
	}
}

// TestDirectoryPrefixYields: the directory a prefix names, matched
// without its "/", is matched by one character less than the prefix: a
// rule of the same length that matches the URI as written ("the table's
// queries", db://main/salaries? beside its rows db://main/salaries/)
// decides it, whichever comes first. The longest-prefix rule let the
// rows' rule, listed first, take the queries from the rule written for
// them (review s17-fresh F5).
func TestDirectoryPrefixYields(t *testing.T) {
	rows := Rule{Pattern: "db://main/salaries/"}
	for _, tt := range []struct {
		rules []Rule
		uri   string // the other rule's, which needs admin
	}{
		{[]Rule{rows, {Pattern: "db://main/salaries?", Scopes: []string{"admin"}}}, "db://main/salaries?x"},
		{[]Rule{{Pattern: "db://main/salaries?", Scopes: []string{"admin"}}, rows}, "db://main/salaries?x"},
		{[]Rule{rows, {Pattern: "db://main/salaries#", Scopes: []string{"admin"}}}, "db://main/salaries#x"},
	} {
		cfg := testConfig(t)
		cfg.ResourceRules = tt.rules
		h := newHarness(t, cfg, nil)
		token := mint(t, claims())
		for uri, status := range map[string]int{"db://main/salaries/1": 200, "db://main/salaries": 200, tt.uri: 403} {
			body := `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":` + quote(uri) + `}}`
			resp := h.do(t, call{body: body, token: token})
			got := readBody(t, resp)
			if resp.StatusCode != status {
				t.Errorf("rules %v: %s = %d (%s), want %d", tt.rules, uri, resp.StatusCode, got, status)
			}
		}
	}
}

// TestFileSystemReadings: with the README's rules, names that a Windows,
// servlet or case-insensitive file system server reads as the admin
// directory are refused (400) before the upstream on a base-only token.
func TestFileSystemReadings(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "file:///srv/secret/", Scopes: []string{"admin"}},
		{Pattern: "file:///srv/private/", Scopes: []string{"admin"}},
		{Pattern: "file:///srv/"},
		{Pattern: "http://files.example/secret/", Scopes: []string{"admin"}},
		{Pattern: "http://files.example/"},
	}
	h := newHarness(t, cfg, nil)
	token := mint(t, claims())
	for _, tt := range []struct {
		uri    string
		status int
	}{
		{"file:///srv/public/a", 200},
		{"http://files.example/public/a", 200},
		{"file:///srv/secret/a", 403},
		{"http://files.example/secret/a", 403},
		{"file:///srv/secret", 403},
		{"file:///srv/secret?x", 403},
		{"file:///srv/secret#x", 403},
		{"http://files.example/secret", 403},
		{"file:///srv/SECRET", 400},
		{"file:///srv/secretive", 200},
		{"file:///srv/secret./a", 400},
		{"file:///srv/secret%20/a", 400},
		{"file:///srv/secret;x/a", 400},
		{"file:///srv/Secret/a", 400},
		{"file:///srv/SECRET~1/a", 400},
		{"file:///srv/secret::$DATA", 400},
		{"file:///srv/secret::$INDEX_ALLOCATION/a", 400},
		{"http://files.example/secret;jsessionid=1/a", 400},
		{"http://files.example/secret./a", 400},
		{"http://files.example/SECRET/a", 400},
		{"file://h/srv/secret/a", 400},
		{"file://127.0.0.1/srv/secret/a", 400},
		{"file:///C:/srv/secret/a", 400},
		{"file:///c%7C/srv/secret/a", 400},
		{"file:///srv/pr%C4%B1vate/a", 400},
		{"file:///srv/PR%C4%B0VATE/a", 400},
		{"file:///srv/%C3%A9t%C3%A9/a", 200},
		// A drive: "C:secret/a" joined to the server's directory on
		// Windows is secret/a there.
		{"http://files.example/C:secret/a", 400},
		{"http://files.example/c:secret", 400},
		{"http://files.example/public/C:/secret/a", 400},
		{"http://files.example/public/ab:c", 200},
	} {
		t.Run(tt.uri, func(t *testing.T) {
			body := `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":` + quote(tt.uri) + `}}`
			before := len(h.up.requests())
			resp := h.do(t, call{body: body, token: token})
			got := readBody(t, resp)
			reqs := h.up.requests()[before:]
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, got, tt.status)
			}
			if tt.status != 200 {
				if code, _, _ := rpcErr(t, got); tt.status == 400 && code != codeInvalidParams {
					t.Errorf("code = %d, want %d", code, codeInvalidParams)
				}
				if len(reqs) != 0 {
					t.Fatalf("upstream saw %s", reqs[0].Body)
				}
			} else if len(reqs) != 1 {
				t.Fatalf("upstream saw %d requests", len(reqs))
			}
		})
	}
}

// TestResourceURIsResolvingElsewhere: a resource URI that a server resolves to another
// resource than its text names (dot segments, empty segments, encoded
// characters, backslashes) is refused, so a broad prefix rule cannot
// reach what a narrower one guards.
func TestResourceURIsResolvingElsewhere(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	token := mint(t, func() jwt.MapClaims { c := claims(); c["scope"] = "mcp files:read"; return c }())
	read := func(uri string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":` + quote(uri) + `}}`
	}
	tests := []struct {
		uri    string
		status int
	}{
		{"file:///public/a.txt", 200},
		{"file:///public/a%20b.txt", 200},
		{"file:///public/", 200},
		{"file:///secret/key", 403},
		{"file:///public/../secret/key", 400},
		{"file:///./secret/key", 400},
		{"file:///public/..", 400},
		{"file:////secret/key", 400},
		{"file:///public//../secret/key", 400},
		{"file:///%73ecret/key", 400},
		{"file:///public/%2e%2e/secret/key", 400},
		{"file:///public/.%2E/secret/key", 400},
		{"file:///public%2f..%2fsecret/key", 400},
		{`file:///public\..\secret\key`, 400},
		{"file:///public/%zz", 400},
		{"file:///public/?/../../secret/key", 400},
		{"file:///public/..?x", 400},
		{"file:///public/..;/secret/key", 400},
		{"file://../secret/key", 400},
		{"file:///public/a.b/..c/d..", 400}, // Windows trims the trailing dots
		{"file:///public/a.b/..c/d..e", 200},
		{"file:///public/?q=a//b", 200},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: read(tt.uri), token: token})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("resources/read %q: status = %d, want %d (%s)", tt.uri, resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 && len(h.up.requests()) != before {
				t.Fatalf("resources/read %q reached the upstream", tt.uri)
			}
		})
	}
	t.Run("subscribe", func(t *testing.T) {
		body := `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///public/../secret/key"}}`
		resp := h.do(t, call{body: body, token: token})
		readBody(t, resp)
		if resp.StatusCode != 400 {
			t.Errorf("resources/subscribe with dot segments: status = %d, want 400", resp.StatusCode)
		}
	})
}

// TestTemplateContinuingItsLiteral: a resource template whose text before
// the first '{' is matched by a rule only as a whole name (a prefix that
// ends with its authority, or a directory without its "/") has
// expansions that continue that name and fall under a broader rule:
// notes://all{x} expands to notes://allsecret, under notes://, and
// file:///srv/secret{x} to file:///srv/secretive, under file:///srv/.
// A completion for it, and its place in a resources/templates/list
// answer, need that rule too, as a resources/read of such an expansion
// does; before, the literal's rule alone decided it.
func TestTemplateContinuingItsLiteral(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "notes://all", Scopes: []string{"notes:all"}},
		{Pattern: "notes://", Scopes: []string{"notes:any"}},
		{Pattern: "file:///srv/secret/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///srv/", Scopes: []string{"files:read"}},
	}
	templates := []string{"notes://all{x}", "notes://all/{x}", "file:///srv/secret{x}", "file:///srv/secret/{x}"}
	for _, tt := range []struct {
		scope string
		want  []string // the templates listed, and completed
	}{
		{"mcp notes:all files:secret", []string{"notes://all/{x}", "file:///srv/secret/{x}"}},
		{"mcp notes:all notes:any", []string{"notes://all{x}", "notes://all/{x}"}},
		{"mcp files:secret files:read", []string{"file:///srv/secret{x}", "file:///srv/secret/{x}"}},
	} {
		t.Run(tt.scope, func(t *testing.T) {
			h, token := templatesHarness(t, cfg, tt.scope, templates, tt.want)
			for _, resource := range []struct{ uri, want string }{
				{"notes://allsecret", "notes:any"}, {"file:///srv/secretive", "files:read"},
			} {
				body := `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":` + quote(resource.uri) + `}}`
				resp := h.do(t, call{body: body, token: token})
				readBody(t, resp)
				if want := strings.Contains(tt.scope, resource.want); (resp.StatusCode == 200) != want {
					t.Errorf("resources/read %s = %d, want allowed %v", resource.uri, resp.StatusCode, want)
				}
			}
		})
	}
}

// TestTemplateOperatorEndingItsLiteral: an expression with the operator
// '/', '?' or '#' (RFC 6570) expands to nothing or to text beginning
// with it, which ends the literal's last name: notes://all{?q} expands
// to notes://all or notes://all?q=x, file:///srv/secret{/name} to
// file:///srv/secret/x, both under the literal's own rule. Such templates
// need that rule only; before, they were decided as if the expansion
// continued the name, and a token with the narrower rule's scope had
// them left out of resources/templates/list and their completions
// refused. An expression of another operator, or text after one that
// can be empty ("notes://all{/id}x": notes://allx), still continues it.
func TestTemplateOperatorEndingItsLiteral(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "notes://all", Scopes: []string{"notes:all"}},
		{Pattern: "notes://", Scopes: []string{"notes:any"}},
		{Pattern: "file:///srv/secret/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///srv/", Scopes: []string{"files:read"}},
	}
	ending := []string{"notes://all{?q}", "notes://all{/id}", "notes://all{#f}", "notes://all{/id}{?q}", "notes://all{/id}/x", "file:///srv/secret{/name}", "file:///srv/secret{/a}{/b}"}
	continuing := []string{"notes://all{/id}x", "notes://all{?q}{x}", "notes://all{.x}", "notes://all{+x}", "file:///srv/secret{/a}{;b}", "file:///srv/secret{/a"}
	templates := append(slices.Clone(ending), continuing...)
	for _, tt := range []struct {
		scope string
		want  []string // the templates listed, and completed
	}{
		{"mcp notes:all files:secret", ending},
		{"mcp notes:all notes:any files:secret files:read", templates},
	} {
		t.Run(tt.scope, func(t *testing.T) {
			templatesHarness(t, cfg, tt.scope, templates, tt.want)
		})
	}
}

// TestTemplateTextAfterItsFirstExpression: a resource template is
// decided by the rules of its text before the first '{' and those that
// extend it, so its text after an expression may not take an expansion
// out of them: file:///srv/secret/{name}/../../etc/{x} expands to a URI
// under file:///srv/ (files:read), whatever the values, and a server
// completing it lists what a caller holding files:secret alone may not
// read. Such a template is refused in a completion (400, whatever the
// caller's scopes) and left out of resources/templates/list for every
// caller: a dot segment in any spelling, or one that expressions expanding
// to nothing (or a '.' expression to its '.') leave. Before, the text
// after the first '{' was not read at all.
func TestTemplateTextAfterItsFirstExpression(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "file:///srv/secret/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///srv/", Scopes: []string{"files:read"}},
	}
	fine := []string{"file:///srv/secret/{dir}/{name}", "file:///srv/secret/{name}.{ext}", "file:///srv/secret/{name}{.ext}",
		"file:///srv/secret/{a}.{b}/x", "file:///srv/secret/{+path}", "file:///srv/secret/{name}/.hidden", "file:///srv/secret/{a}..b",
		"file:///srv/secret/{name}.{v}/{x}", "file:///srv/secret/{base}...{head}"}
	// Under a rule of their own, which the caller's scopes do not reach.
	others := []string{"postgres://{host}:{port}/{db}"}
	leaving := []string{"file:///srv/secret/{name}/../../x", "file:///srv/secret/{name}/..", "file:///srv/secret/{name}/%2e%2e/x",
		"file:///srv/secret/{name}/.%2E/x", "file:///srv/secret/{name}/./x", "file:///srv/secret/{a}..{b}/x",
		"file:///srv/secret/{a}.{b}./x", "file:///srv/secret/{a}{.b}{.c}/x", "file:///srv/secret/{a};/../x"}
	cfg.ResourceRules = append(cfg.ResourceRules, Rule{Pattern: "postgres://", Scopes: []string{"db:read"}})
	templates := append(append(slices.Clone(fine), leaving...), others...)
	for _, tt := range []struct {
		scope string
		want  []string
	}{
		{"mcp files:secret", fine},
		{"mcp files:secret files:read", fine},
		{"mcp files:secret db:read", append(slices.Clone(fine), others...)},
	} {
		t.Run(tt.scope, func(t *testing.T) {
			templatesHarness(t, cfg, tt.scope, templates, tt.want)
		})
	}
}

// TestTemplateTextDotsOfEmptyValues: a '.' expression of several
// variables expands to a '.' for each that is an empty string, and an
// exploded one to a '.' for each empty item (RFC 6570 3.2.5), and an
// undefined variable adds nothing: file:///srv/secret/{.a,b}/x with a
// and b empty, or {.list*} with two empty items, or ..{.a} with a
// undefined, expands to file:///srv/secret/../x, under file:///srv/.
// 6673d93 read each '.' expression as a single '.', so these passed
// under files:secret alone; they are refused as {a}{.b}{.c} is.
func TestTemplateTextDotsOfEmptyValues(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "file:///srv/secret/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///srv/", Scopes: []string{"files:read"}},
	}
	fine := []string{"file:///srv/secret/x{.list*}/y", "file:///srv/secret/{.a}/y", "file:///srv/secret/{name}{.a,b}.gz",
		"file:///srv/secret/{name}.{.a,b}{.c}x"}
	leaving := []string{"file:///srv/secret/{.a,b}/x", "file:///srv/secret/{.list*}/x", "file:///srv/secret/..{.a}/x",
		"file:///srv/secret/{/d}{.a,b,c}/x", "file:///srv/secret/{x}{.a}{.list*}/x", "file:///srv/secret/{.a,b}", "file:///srv/secret/{name}{.a,b}"}
	for _, tpl := range leaving {
		if err := checkTemplateText(tpl); err == nil {
			t.Errorf("checkTemplateText(%q) passed", tpl)
		}
	}
	templates := append(slices.Clone(fine), leaving...)
	for _, scope := range []string{"mcp files:secret", "mcp files:secret files:read"} {
		t.Run(scope, func(t *testing.T) {
			templatesHarness(t, cfg, scope, templates, fine)
		})
	}
}

// TestTemplateTextSegmentsOfSlashExpressions: a '/', '?' or '#'
// expression (RFC 6570 3.2.6 to 3.2.9) expands to nothing when its
// variables are undefined and to its operator first when one is an empty
// string ("{/a}" is "/"), so it may end a segment and begin another:
// file:///srv/secret/d{/a}..{/b}..{/c}x with a, b and c empty expands
// to file:///srv/secret/d/../../x, under file:///srv/, and
// .{/a}.{/b}.{/c}x with a undefined and b and c empty to .././x.
// 1018d6c read segments between the text's own '/', '?', '#' and ';'
// only ("d{/a}..{/b}..{/c}x" one segment, not dots alone), so these
// were listed and completed for a caller holding the secret rule's
// scope alone.
func TestTemplateTextSegmentsOfSlashExpressions(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "file:///srv/secret/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///srv/", Scopes: []string{"files:read"}},
	}
	fine := []string{"file:///srv/secret/d{/a}.{/b}x", "file:///srv/secret/{name}{/v}...{/w}", "file:///srv/secret/v{/a}.b{?q}",
		"file:///srv/secret/x{/a}{/b}{?q}{#f}", "file:///srv/secret/x{.a}{/b}y"}
	leaving := []string{"file:///srv/secret/d{/a}..{/b}..{/c}x", "file:///srv/secret/d{/a}..{/b}..{?q}", "file:///srv/secret/d{/a}..{/b}..{#f}",
		"file:///srv/secret/{/list*}..{/c}x", "file:///srv/secret/.{/a}.{/b}.{/c}x", "file:///srv/secret/d{/a}{.b,c}{/e}x",
		"file:///srv/secret/d{/a}.{.b}{/c}x"}
	for _, tpl := range leaving {
		if err := checkTemplateText(tpl); err == nil {
			t.Errorf("checkTemplateText(%q) passed", tpl)
		}
	}
	templates := append(slices.Clone(fine), leaving...)
	for _, scope := range []string{"mcp files:secret", "mcp files:secret files:read"} {
		t.Run(scope, func(t *testing.T) {
			templatesHarness(t, cfg, scope, templates, fine)
		})
	}
}

// TestTemplateBeforeACaseVariantOfARule: a resource template whose text
// before the first '{' a rule's prefix extends when case is ignored
// needs that rule too, for non-ASCII characters as for ASCII letters: a
// case-insensitive server expands file:///srv/%C3%89{x} ("É") to
// file:///srv/%C3%89t%C3%A9/key, which it reads as été/key, under the
// rule file:///srv/%C3%A9t%C3%A9/ (which a resources/read of that name
// is refused for). Before, only ASCII letters were compared without
// case, so with the broader rule's scope the template was listed and
// completed.
func TestTemplateBeforeACaseVariantOfARule(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "file:///srv/%C3%A9t%C3%A9/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///srv/secret/", Scopes: []string{"files:secret"}},
		{Pattern: "file:///srv/", Scopes: []string{"files:read"}},
	}
	templates := []string{"file:///srv/%C3%89{x}", "file:///srv/%C3%A9{x}", "file:///srv/S{x}", "file:///srv/pub/{x}"}
	for _, tt := range []struct {
		scope string
		want  []string // the templates listed, and completed
	}{
		{"mcp files:read", []string{"file:///srv/pub/{x}"}},
		{"mcp files:read files:secret", templates},
	} {
		t.Run(tt.scope, func(t *testing.T) {
			templatesHarness(t, cfg, tt.scope, templates, tt.want)
		})
	}
}

// templatesHarness starts a gateway of cfg in front of a server offering
// templates, and checks that a token of scope sees want of them listed
// and has only those completed; it returns the gateway and the token.
func templatesHarness(t *testing.T, cfg Config, scope string, templates, want []string) (*harness, string) {
	t.Helper()
	answer := `{"jsonrpc":"2.0","id":1,"result":` + listResult(t, "resources/templates/list", templates) + `}`
	var upstream bool
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		upstream = true
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	c := claims()
	c["scope"] = scope
	token := mint(t, c)
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"resources/templates/list"}`, token: token})
	got := readBody(t, resp)
	var m struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Fatalf("answer %d %q: %v", resp.StatusCode, got, err)
	}
	if keys := listedKeys(t, "resources/templates/list", m.Result); !slices.Equal(keys, want) {
		t.Errorf("listed %v, want %v", keys, want)
	}
	for _, tpl := range templates {
		upstream = false
		body := `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":` + quote(tpl) + `},"argument":{"name":"x","value":""}}}`
		resp := h.do(t, call{body: body, token: token})
		readBody(t, resp)
		if allowed := slices.Contains(want, tpl); upstream != allowed || (resp.StatusCode == 200) != allowed {
			t.Errorf("completion of %s = %d (forwarded %v), want allowed %v", tpl, resp.StatusCode, upstream, allowed)
		}
	}
	return h, token
}

// TestResourceURIRefusalHidesUserInfo: a resource URI with user
// information is refused, and the refusal, which is the client's answer
// and the audit event's reason, names the URI without it: it may hold a
// password ("postgres://bob:pw@db/x"), which the audit log would keep.
func TestResourceURIRefusalHidesUserInfo(t *testing.T) {
	const pw = "pw-Qx7Lm2Vb9Rt4Kz8"
	for _, tt := range []struct{ name, body, shown string }{
		{"read", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"postgres://bob:` + pw + `@db.example/x"}}`, "postgres://…@db.example/x"},
		{"file URI", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file://bob:` + pw + `@host/secret/a"}}`, "file://…@host/secret/a"},
		{"encoded '@'", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"https://bob:` + pw + `%40db.example/x"}}`, "https://…%40db.example/x"},
		{"two '@'", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"https://bob:` + pw + `@x@db.example/x"}}`, "https://…@db.example/x"},
		{"template", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"notes://bob:` + pw + `@{x}/a"},"argument":{"name":"x","value":""}}}`, "notes://…@{x}/a"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), nil)
			c := claims()
			c["scope"] = "mcp files:secret"
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tt.shown) {
				t.Fatalf("answer %d %s; want 400 naming %s", resp.StatusCode, body, tt.shown)
			}
			if strings.Contains(body, pw) {
				t.Errorf("the answer holds the password: %s", body)
			}
			entries := h.logs.All()
			if len(entries) == 0 {
				t.Fatal("no audit event")
			}
			for _, e := range entries {
				if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, pw) {
					t.Errorf("the log holds the password: %s", line)
				}
			}
		})
	}
}

// TestTemplateManyExpressionsCostLinear: checkTemplateText costs a
// template's length, whatever its number of expressions. It read the
// whole text before each expression again to tell a port from a name, so
// a completion/complete of a 1 MiB template (any caller, whatever its
// scopes) cost seconds to minutes of CPU, and a server's
// resources/templates/list as much per template: "x:{}{}…" 7 s,
// "x:/{a}/{a}/…" 25 s, "x://a:{}:{}…" about 6 minutes. Each takes well
// under a second now (up to 500 ms under the race detector); one still
// running after 5 s fails the test.
func TestTemplateManyExpressionsCostLinear(t *testing.T) {
	const size = 1 << 20
	for _, tmpl := range []string{
		"x:" + strings.Repeat("{}", size/2),      // no "//": each expression looked for one
		"x://a" + strings.Repeat(":{}", size/12), // the authority read to its end before each port (21 s at 256 KiB)
		"x:/" + strings.Repeat("{a}/", size/4),   // no "//" either
		"x://a" + strings.Repeat("{}", size/2),
	} {
		done := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			checkTemplateText(tmpl)
			done <- time.Since(start)
		}()
		select {
		case took := <-done:
			t.Logf("checkTemplateText of %q… (%d bytes): %v", tmpl[:12], len(tmpl), took)
		case <-time.After(5 * time.Second):
			t.Fatalf("checkTemplateText of %q… (%d bytes) still running after 5 s", tmpl[:12], len(tmpl))
		}
	}
}

// BenchmarkTemplateManyExpressions: a 1 MiB template of empty
// expressions, the most a completion/complete may carry (7 s when each
// expression read the text before it again).
func BenchmarkTemplateManyExpressions(b *testing.B) {
	tmpl := "x:" + strings.Repeat("{}", 1<<19-1)
	for b.Loop() {
		checkTemplateText(tmpl)
	}
}
