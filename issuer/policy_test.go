package issuer

import "testing"

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
	}
	for _, tt := range tests {
		if got := sameResource(tt.a, tt.b); got != tt.want {
			t.Errorf("sameResource(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
