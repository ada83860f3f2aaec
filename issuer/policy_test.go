package issuer

import (
	"net/url"
	"testing"
)

// TestSameResource: resource URLs compare with scheme and host in ASCII
// lower case, without the scheme's default port, and no trailing slash. Unicode case folding is not ASCII
// case: Go lowers U+0130 to "i", while on the wire (UTS 46) that host is
// "i" with a combining dot, another name, which a client connecting to it
// sends as its resource; it must not be taken for the registered one
// (RFC 8707), nor the Kelvin sign for "k".
func TestSameResource(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"https://api.example.com/mcp", "https://api.example.com/mcp", true},
		{"https://API.Example.COM/mcp/", "https://api.example.com/mcp", true},
		{"HTTPS://api.example.com/mcp", "https://api.example.com/mcp", true},
		{"https://api.example.com:443/mcp", "https://api.example.com/mcp", true},
		{"https://api.example.com:/mcp", "https://api.example.com/mcp", true},
		{"http://127.0.0.1:80/mcp", "http://127.0.0.1/mcp", true},
		{"https://[::1]:443/mcp", "https://[::1]/mcp", true},
		{"https://api.example.com:80/mcp", "https://api.example.com/mcp", false},
		{"http://api.example.com:443/mcp", "http://api.example.com/mcp", false},
		{"https://api.example.com:8443/mcp", "https://api.example.com/mcp", false},
		{"https://api.example.com:4430/mcp", "https://api.example.com:443/mcp", false},
		{"https://api.example.com/MCP", "https://api.example.com/mcp", false},
		{"https://ap\u0130.example.com/mcp", "https://api.example.com/mcp", false},
		{"https://ap%C4%B0.example.com/mcp", "https://api.example.com/mcp", false},
		{"https://mcp.\u212Aey.example/mcp", "https://mcp.key.example/mcp", false},
		// RFC 3986 section 6.2.2: escapes of unreserved characters and the
		// case of hex digits do not matter; an escaped "/" is no "/".
		{"https://api.example.com/a%2Fb", "https://api.example.com/a/b", false},
		{"https://api.example.com/a%2fb", "https://api.example.com/a%2Fb", true},
		{"https://api.example.com/a%2F", "https://api.example.com/a", false},
		{"https://api.example.com/%6Dcp", "https://api.example.com/mcp", true},
		{"https://api.example.com/m%7Ecp", "https://api.example.com/m~cp", true},
		{"https://api.example.com/m%20cp", "https://api.example.com/m cp", true},
		{"https://api.example.com/m%3Fcp", "https://api.example.com/m?cp", false},
		// A character a URI must escape, spelled raw, is escaped where it
		// stands: the escaped "/" beside it stays one segment.
		{"https://api.example.com/a%2Fb|", "https://api.example.com/a/b%7C", false},
		{"https://api.example.com/a%2Fb|", "https://api.example.com/a%2Fb%7C", true},
		{"https://api.example.com/a%2Fb c", "https://api.example.com/a/b%20c", false},
	}
	for _, tt := range tests {
		if got := sameResource(tt.a, tt.b); got != tt.want {
			t.Errorf("sameResource(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestEscapedSlashResourceSpelled: a resource indicator spelling a
// character a URI must escape raw beside an escaped "/" names the resource
// with that "/" escaped, not the one where it is a separator.
func TestEscapedSlashResourceSpelled(t *testing.T) {
	const slash = "https://files.example.com/a/b%7C"
	e := newTokEnv(t, func(c *Config) {
		c.Resources = append(c.Resources, Resource{URL: slash, Scopes: []string{"read"}})
	})
	a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {"https://files.example.com/a%2Fb|"}, "scope": {"read"}}, tConf+":"+tSecret)
	if a.status != 400 || a.str("error") != "invalid_target" {
		t.Errorf("token for https://files.example.com/a%%2Fb| = %d %s, want 400 invalid_target (not %s)", a.status, a.raw, slash)
	}
}

// TestEscapedSlashResource: https://h/a%2Fb (one segment) and https://h/a/b
// (two) are two resources: both may be declared, and a token asked for
// either is for that one, not the other.
func TestEscapedSlashResource(t *testing.T) {
	const slash, escaped = "https://files.example.com/a/b", "https://files.example.com/a%2Fb"
	e := newTokEnv(t, func(c *Config) {
		c.Resources = append(c.Resources, Resource{URL: slash, Scopes: []string{"read"}}, Resource{URL: escaped, Scopes: []string{"read"}})
	})
	for _, res := range []string{slash, escaped, "https://files.example.com/a%2fb"} {
		a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {res}, "scope": {"read"}}, tConf+":"+tSecret)
		if a.status != 200 {
			t.Errorf("token for %s = %d %s, want 200", res, a.status, a.raw)
			continue
		}
		if _, c := claimsOf(t, a.str("access_token")); c["aud"] != CanonicalResource(res) {
			t.Errorf("token for %s: aud %v, want that resource", res, c["aud"])
		}
	}
}
