package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokenAccepted(t *testing.T) {
	k := theKeys(t)
	tests := []struct {
		name  string
		token func() string
		auth  string // Authorization header format, %s = token
	}{
		{"ES256", func() string { return mint(t, claims()) }, "Bearer "},
		{"RS256", func() string { return mintWith(t, jwt.SigningMethodRS256, k.rsa, "rsa1", claims(), nil) }, "Bearer "},
		{"EdDSA", func() string { return mintWith(t, jwt.SigningMethodEdDSA, k.ed, "ed1", claims(), nil) }, "Bearer "},
		{"scheme case-insensitive", func() string { return mint(t, claims()) }, "bEaReR "},
		{"typ application/at+jwt", func() string {
			return mintWith(t, jwt.SigningMethodES256, k.ec, "ec1", claims(), func(h map[string]any) { h["typ"] = "application/AT+JWT" })
		}, "Bearer "},
		{"aud array", func() string {
			c := claims()
			c["aud"] = []string{"https://other.example.com", testResource}
			return mint(t, c)
		}, "Bearer "},
		{"within leeway", func() string {
			c := claims()
			c["exp"] = testNow.Add(-3 * time.Second).Unix()
			return mint(t, c)
		}, "Bearer "},
	}
	h := newHarness(t, testConfig(t), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.do(t, call{body: toolCall("read_a"), headers: map[string]string{"Authorization": tt.auth + tt.token()}})
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status = %d, want 200 (%s, %s)", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "anything/at/all", true},
		{"*", "", true},
		{"read_*", "read_", true},
		{"read_*", "read_file", true},
		{"read_*", "Read_file", false},
		{"read_*", "xread_file", false},
		{"*_file", "read_file", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"get_?", "get_é", true},
		{"get_?", "get_éé", false},
		{"get_??", "get_é", false},
		{`lit\*`, "lit*", true},
		{`lit\*`, "litx", false},
		{`a\?`, "a?", true},
		{"exact", "exact", true},
		{"exact", "exact2", false},
		{"kill", "\u212Aill", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestClaimsCacheBounded(t *testing.T) {
	c := newClaimsCache(100)
	for i := 0; i < 1000; i++ {
		var key [32]byte
		key[0], key[1] = byte(i), byte(i>>8)
		c.put(key, &principal{expiry: testNow.Add(time.Hour)}, testNow)
	}
	if n := len(c.entries); n > 100 {
		t.Errorf("cache size = %d, want at most 100", n)
	}
	var key [32]byte
	c.put(key, &principal{expiry: testNow.Add(time.Second)}, testNow)
	if c.get(key, testNow.Add(2*time.Second)) != nil {
		t.Error("expired entry returned")
	}
}

// TestPrincipalTypes: principal_type decides who the top-level principal
// is. A client's own token (principal_type "client", as the issuer sends
// for client credentials) is neither a user nor an agent; absent stays a
// user (foreign issuers do not send the claim).
func TestPrincipalTypes(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	tests := []struct {
		principalType string // "-" leaves the claim out
		tool          string
		status        int
	}{
		{"-", "human", http.StatusOK},
		{"user", "human", http.StatusOK},
		{"client", "human", http.StatusForbidden},
		{"agent", "human", http.StatusForbidden},
		{"robot", "human", http.StatusForbidden},
		{"client", "agent_only", http.StatusForbidden},
		{"client", "read_file", http.StatusOK},
		{"client", "user_only", http.StatusForbidden},
		{"-", "user_only", http.StatusOK},
		{"-", "agent_only", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.principalType+" "+tt.tool, func(t *testing.T) {
			c := claims()
			c["sub"], c["client_id"] = "svc", "svc"
			if tt.principalType != "-" {
				c["principal_type"] = tt.principalType
			}
			resp := h.do(t, call{body: toolCall(tt.tool), token: mint(t, c)})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Errorf("tools/call %s with principal_type %s: status %d, want %d (%s)", tt.tool, tt.principalType, resp.StatusCode, tt.status, body)
			}
		})
	}
}
