package dpop

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// SameURI reports whether a proof's htu names the request URI (RFC 9449
// §4.3): both absolute http(s) URIs, compared without query and fragment
// after RFC 3986 syntax- and scheme-based normalization (ASCII case of
// scheme and host, a host with other characters matching nothing; default
// port, empty path as "/", percent-encoding case and
// unreserved characters decoded, then dot segments removed).
func SameURI(htu, uri string) bool {
	a, ok := normalURI(htu)
	if !ok {
		return false
	}
	b, ok := normalURI(uri)
	return ok && a == b
}

func normalURI(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.User != nil || u.Host == "" {
		return "", false
	}
	// ASCII case only: Unicode lowering would make U+0130 an "i", while
	// on the wire that host is another name. Clients send the A-label.
	for i := 0; i < len(u.Host); i++ {
		if u.Host[i] >= utf8.RuneSelf {
			return "", false
		}
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Host)
	switch scheme {
	case "https":
		host = strings.TrimSuffix(host, ":443")
	case "http":
		host = strings.TrimSuffix(host, ":80")
	default:
		return "", false
	}
	host = strings.TrimSuffix(host, ":") // an empty port is the default
	path := removeDotSegments(NormalPercent(SpelledPath(u)))
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

// SpelledPath is u's path as spelled, its escapes kept, and a character a
// URI must escape (a space, "|", a non-ASCII byte) escaped where it stands,
// as RFC 3987 §3.1 maps an IRI. u.EscapedPath alone would not do: for
// such a spelling it escapes the decoded path again, so "/x|/..%2Fmcp"
// would become "/x%7C/../mcp", its "%2F" a separator. The gateway reads
// metadata paths with it too.
func SpelledPath(u *url.URL) string {
	p := u.EscapedPath()
	if u.RawPath == "" || p == u.RawPath {
		return p
	}
	if d, err := url.PathUnescape(u.RawPath); err != nil || d != u.Path {
		return p // RawPath spells no longer Path (a handler changed Path): as EscapedPath
	}
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(u.RawPath); i++ {
		c := u.RawPath[i]
		if c == '%' || unreserved(c) || strings.IndexByte("!$&'()*+,;=:@/[]", c) >= 0 {
			b.WriteByte(c)
		} else {
			b.Write([]byte{'%', hexDigits[c>>4], hexDigits[c&15]})
		}
	}
	return b.String()
}

// removeDotSegments is RFC 3986 §5.2.4 for a path that is empty or
// absolute (an absolute URI's), applied after NormalPercent as §6.2.2
// orders it: "%2E" is a dot, "%2F" no separator.
func removeDotSegments(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	segs := strings.Split(p, "/")[1:]
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
			continue
		}
		if last {
			out = append(out, "") // "/a/." and "/a/b/.." end in "/"
		}
	}
	return "/" + strings.Join(out, "/")
}

// NormalPercent upper-cases percent-encodings and decodes those of
// unreserved characters (RFC 3986 §6.2.2.1, §6.2.2.2): the escapes that
// spell the same URI. An escaped reserved character ("%2F") stays: it is
// another URI than the character itself. The issuer compares resource
// indicators with it too.
func NormalPercent(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			b.WriteByte(p[i])
			continue
		}
		hi, lo := unhex(p[i+1]), unhex(p[i+2])
		if hi < 0 || lo < 0 {
			b.WriteByte(p[i])
			continue
		}
		c := byte(hi<<4 | lo)
		if unreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(p[i+1:i+3]))
		}
		i += 2
	}
	return b.String()
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
