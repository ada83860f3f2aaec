package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" = ok
	}{
		{"valid", func(*Config) {}, ""},
		{"loopback http resource", func(c *Config) { c.Resource = "http://127.0.0.1:8080/mcp" }, ""},
		{"localhost http resource", func(c *Config) { c.Resource = "http://localhost/mcp" }, ""},
		{"http resource", func(c *Config) { c.Resource = "http://mcp.example.com/mcp" }, "loopback"},
		{"relative resource", func(c *Config) { c.Resource = "/mcp" }, "absolute"},
		{"resource with fragment", func(c *Config) { c.Resource = testResource + "#x" }, "fragment"},
		{"resource with query", func(c *Config) { c.Resource = testResource + "?a=b" }, "query"},
		// An empty fragment parses as none, but the URL is what tokens
		// carry as aud, which RFC 8707 says has no fragment (the
		// issuer's own resource check refuses the "#").
		{"resource with empty fragment", func(c *Config) { c.Resource = testResource + "#" }, "fragment"},
		{"resource with port 0", func(c *Config) { c.Resource = "https://mcp.example.com:0/mcp" }, "port"},
		{"resource with port out of range", func(c *Config) { c.Resource = "https://mcp.example.com:99999/mcp" }, "port"},
		{"resource with port written with a leading zero", func(c *Config) { c.Resource = "https://mcp.example.com:0443/mcp" }, "port"},
		{"issuer with port written with a leading zero", func(c *Config) { c.Issuer = "https://auth.example.com:08443" }, "port"},
		{"resource path with %25", func(c *Config) { c.Resource = "https://mcp.example.com/a%252E/mcp" }, "%25"},
		{"resource path with ;", func(c *Config) { c.Resource = "https://mcp.example.com/mcp;x" }, "';'"},
		{"resource path with dot segment", func(c *Config) { c.Resource = "https://mcp.example.com/a/../mcp" }, "dot segments"},
		{"resource path with encoded dot segment", func(c *Config) { c.Resource = "https://mcp.example.com/%2E/mcp" }, "dot segments"},
		{"resource path with empty segment", func(c *Config) { c.Resource = "https://mcp.example.com//mcp" }, "empty"},
		{"resource path with trailing slash", func(c *Config) { c.Resource = "https://mcp.example.com/mcp/" }, ""},
		{"resource path percent-encoded", func(c *Config) { c.Resource = "https://mcp.example.com/caf%C3%A9/mcp" }, ""},
		// A character to escape written raw: read as Go sends it upstream
		// (EscapedPath) it must be the path the issuer reads as spelled
		// (dpop.SpelledPath, CanonicalResource), or the gateway serves
		// another resource's path (/a/b/m%7Ccp, /m%21%7C).
		{"resource path raw | and %2F", func(c *Config) { c.Resource = "https://mcp.example.com/a%2Fb/m|cp" }, "write it escaped, /a%2Fb/m%7Ccp"},
		{"resource path raw | and !", func(c *Config) { c.Resource = "https://mcp.example.com/m!|" }, "write it escaped, /m!%7C"},
		{"resource path raw | and %40", func(c *Config) { c.Resource = "https://mcp.example.com/a%40b|" }, "write it escaped, /a%40b%7C"},
		{"resource path raw |", func(c *Config) { c.Resource = "https://mcp.example.com/m|cp" }, ""},
		{"resource path raw non-ASCII", func(c *Config) { c.Resource = "https://mcp.example.com/café/mcp" }, ""},
		{"resource path escaped | and %2F", func(c *Config) { c.Resource = "https://mcp.example.com/a%2Fb/m%7Ccp" }, ""},
		// Metadata is served under /.well-known/oauth-protected-resource
		// (RFC 9728 section 3): an endpoint there would be answered as this
		// or another gateway's metadata, or take the requests for it.
		{"resource at the root metadata path", func(c *Config) {
			c.Resource, c.RootMetadata = "https://mcp.example.com/.well-known/oauth-protected-resource", true
		}, "under /.well-known/oauth-protected-resource"},
		{"resource under the metadata path", func(c *Config) { c.Resource = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp" }, "under /.well-known/oauth-protected-resource"},
		{"resource beside the metadata path", func(c *Config) { c.Resource = "https://mcp.example.com/.well-known/oauth-protected-resources" }, ""},
		{"no issuer", func(c *Config) { c.Issuer = "" }, "issuer is required"},
		{"ftp issuer", func(c *Config) { c.Issuer = "ftp://auth.example.com" }, "https"},
		{"no keys", func(c *Config) { c.Keys = nil }, "keys"},
		{"short session key", func(c *Config) { c.SessionKey = make([]byte, 31) }, "session key"},
		{"no session key", func(c *Config) { c.SessionKey = nil }, "session key"},
		{"HS256 pinned", func(c *Config) { c.Algorithms = []string{"HS256"} }, "not supported"},
		{"none pinned", func(c *Config) { c.Algorithms = []string{"none"} }, "not supported"},
		{"negative body size", func(c *Config) { c.MaxBodySize = -1 }, "negative"},
		{"empty tool pattern", func(c *Config) { c.Tools = []Rule{{Pattern: "", Scopes: []string{"a"}}} }, "empty pattern"},
		{"lone backslash", func(c *Config) { c.Tools = []Rule{{Pattern: `a\`, Scopes: []string{"a"}}} }, "lone"},
		{"invalid UTF-8 pattern", func(c *Config) { c.Prompts = []Rule{{Pattern: "a\xff"}} }, "UTF-8"},
		{"empty resource prefix", func(c *Config) { c.ResourceRules = []Rule{{Pattern: ""}} }, "empty URI prefix"},
		{"scope with quote", func(c *Config) { c.Tools = []Rule{{Pattern: "x", Scopes: []string{`a"b`}}} }, "invalid scope"},
		{"scope with space", func(c *Config) { c.BaseScopes = []string{"a b"} }, "invalid scope"},
		{"implies bad scope", func(c *Config) { c.Implies = map[string][]string{"a": {""}} }, "invalid scope"},
		// A refresh token's scope is no resource scope (README, Refresh tokens).
		{"base scope offline_access", func(c *Config) { c.BaseScopes = []string{"mcp", "offline_access"} }, "offline_access"},
		{"tool rule offline_access", func(c *Config) { c.Tools = []Rule{{Pattern: "x", Scopes: []string{"offline_access"}}} }, "offline_access"},
		{"implies offline_access", func(c *Config) { c.Implies = map[string][]string{"offline_access": {"mcp"}} }, "offline_access"},
		{"implied offline_access", func(c *Config) { c.Implies = map[string][]string{"admin": {"offline_access"}} }, "offline_access"},
		// Neither are the OpenID Connect scopes every user gets.
		{"base scope openid", func(c *Config) { c.BaseScopes = []string{"openid"} }, `"openid" is an OpenID Connect scope`},
		{"tool rule profile", func(c *Config) { c.Tools = []Rule{{Pattern: "x", Scopes: []string{"profile"}}} }, `"profile" is an OpenID Connect scope`},
		{"resource rule email", func(c *Config) { c.ResourceRules = []Rule{{Pattern: "file:///", Scopes: []string{"email"}}} }, `"email" is an OpenID Connect scope`},
		{"implied email", func(c *Config) { c.Implies = map[string][]string{"admin": {"email"}} }, `"email" is an OpenID Connect scope`},
		{"contradictory actor", func(c *Config) {
			c.Tools = []Rule{{Pattern: "x", Actor: ActorRule{RequireAgent: true, UserOnly: true}}}
		}, "refuses agents"},
		{"negative depth", func(c *Config) { c.Tools = []Rule{{Pattern: "x", Actor: ActorRule{MaxDepth: -1}}} }, "negative"},
		{"bad origin", func(c *Config) { c.AllowedOrigins = []string{"https://a.example.com/path"} }, "scheme://host"},
		// No browser sends them: each would match nothing.
		{"wildcard origin", func(c *Config) { c.AllowedOrigins = []string{"https://*.example.com"} }, "a wildcard matches no Origin"},
		{"unicode origin", func(c *Config) { c.AllowedOrigins = []string{"https://bücher.example"} }, "xn--"},
		{"origin port out of range", func(c *Config) { c.AllowedOrigins = []string{"https://a.example.com:65536"} }, "port"},
		{"origin port 0", func(c *Config) { c.AllowedOrigins = []string{"http://a.example.com:0"} }, "port out of range"},
		{"origin port 0 with leading zeros", func(c *Config) { c.AllowedOrigins = []string{"http://a.example.com:000"} }, "port out of range"},
		{"origin without a host", func(c *Config) { c.AllowedOrigins = []string{"https://:443"} }, "scheme://host"},
		{"origin IPv4 shorthand", func(c *Config) { c.AllowedOrigins = []string{"http://127.1:8080"} }, "dotted decimal"},
		{"origin IPv4 in hex", func(c *Config) { c.AllowedOrigins = []string{"http://0x7f.0.0.1"} }, "dotted decimal"},
		{"origin IPv4 octal", func(c *Config) { c.AllowedOrigins = []string{"http://0177.0.0.1"} }, "dotted decimal"},
		{"origin IPv4 trailing dot", func(c *Config) { c.AllowedOrigins = []string{"http://127.0.0.1."} }, "dotted decimal"},
		{"origin with a zone", func(c *Config) { c.AllowedOrigins = []string{"http://[fe80::1%25eth0]:8080"} }, "zone"},
		// First-match rules an earlier rule makes unreachable.
		{"tool after *", func(c *Config) { c.Tools = rules("*", "delete_all") }, `tool rule "delete_all" is never reached: the rule "*"`},
		{"tool after **", func(c *Config) { c.Tools = rules("**", "a*") }, "never reached"},
		{"tool after a glob matching it", func(c *Config) { c.Tools = rules("delete_*", "delete_all") }, "never reached"},
		// A '*' no tool name holds (SEP-986): a prompt's may.
		{"prompt after a glob matching it, escaped", func(c *Config) { c.Prompts = rules("a?c", `a\*c`) }, "never reached"},
		{"tool twice", func(c *Config) { c.Tools = rules("read_*", "x", "read_*") }, `tool rule "read_*" is never reached`},
		{"prompt after *", func(c *Config) { c.Prompts = rules("*", "p") }, "prompt rule"},
		{"method after a glob", func(c *Config) { c.Methods = rules("acme/*", "acme/run") }, "method rule"},
		// One glob inside another, and loose names (review s11-fresh F1).
		{"glob inside a glob", func(c *Config) { c.Tools = rules("delete*", "delete_*") }, `tool rule "delete_*" is never reached: the rule "delete*"`},
		{"glob inside *_*", func(c *Config) { c.Tools = rules("*_*", "delete_*") }, "never reached"},
		{"after ?*", func(c *Config) { c.Tools = rules("?*", "delete_*") }, "never reached"},
		{"after a*b*", func(c *Config) { c.Tools = rules("a*b*", "a?b") }, "never reached"},
		{"loose separators", func(c *Config) { c.Tools = rules("fs_*", "fs.delete") }, "when case and the separators"},
		{"loose case", func(c *Config) { c.Tools = rules("get*", "GetSecret") }, "when case and the separators"},
		{"loose prompt", func(c *Config) { c.Prompts = rules("Summary*", "summary_all") }, "prompt rule"},
		{"method glob inside a glob", func(c *Config) { c.Methods = rules("acme/*", "acme/x*") }, "method rule"},
		{"method case is exact", func(c *Config) { c.Methods = rules("acme/run", "Acme/Run") }, ""},
		{"a?b does not cover a*b", func(c *Config) { c.Tools = rules("a?b", "a*b") }, ""},
		{"*x does not cover *", func(c *Config) { c.Tools = rules("*x", "*") }, ""},
		{"a* does not cover ?a", func(c *Config) { c.Tools = rules("a*", "?a") }, ""},
		{"non-ASCII literal", func(c *Config) { c.Prompts = rules("café_*", "caf?_x") }, ""},
		{"too many wildcards to check", func(c *Config) { c.Tools = rules("*"+strings.Repeat("?", 24), "*_"+strings.Repeat("?", 24)) }, "too many wildcards"},
		{"decided by a plain name, however many wildcards", func(c *Config) { c.Tools = rules("read_*", "*_"+strings.Repeat("?", 24)) }, ""},
		// Several earlier rules together.
		{"covered by two globs", func(c *Config) { c.Tools = rules("ab", "ab?*", "ab*") }, `tool rule "ab*" is never reached: the rules "ab", "ab?*" before it together`},
		{"catch-all covered by ? and ??*", func(c *Config) { c.Tools = rules("x", "?", "??*", "*") }, `the rules "x", "?", "??*" before it together`},
		{"covered together loosely", func(c *Config) { c.Tools = rules("fs_?*", "fs.", "fs_*") }, `rules "fs_?*", "fs." before it together match every name it does when case and the separators`},
		{"prompts covered together", func(c *Config) { c.Prompts = rules("p", "p?*", "p*") }, "prompt rule"},
		{"methods covered together", func(c *Config) { c.Methods = rules("acme/a*", "acme/", "acme/?*", "acme/*") }, "method rule"},
		{"two globs leaving a name out", func(c *Config) { c.Tools = rules("a*", "b*", "?*") }, ""},
		{"two globs leaving the short name out", func(c *Config) { c.Tools = rules("ab?", "ab??*", "ab*") }, ""},
		{"catch-all after contains-rules", func(c *Config) {
			c.Tools = rules("*delete*", "*drop*", "*write*", "*create*", "*update*", "*remove*", "*admin*", "*exec*", "*", "never")
		}, `tool rule "never" is never reached: the rule "*"`},
		{"tool before *", func(c *Config) { c.Tools = rules("delete_all", "*") }, ""},
		{"literal before its glob", func(c *Config) { c.Tools = rules("delete_all", "delete_*", "*") }, ""},
		{"glob not sure to cover a glob", func(c *Config) { c.Tools = rules("a?c", "a*c") }, ""},
		{"glob not matching", func(c *Config) { c.Tools = rules("read_*", "write") }, ""},
		{"escaped star is a name", func(c *Config) { c.Prompts = rules(`\*`, "x") }, ""},
		// A tool rule no tool name the gateway lets through can match
		// (SEP-986) decides nothing; a prompt rule with a character no
		// prompt name may hold, likewise.
		{"tool pattern outside SEP-986", func(c *Config) { c.Tools = rules("fs:delete") }, `pattern holds ':', which no tool name may`},
		{"tool pattern with a space", func(c *Config) { c.Tools = rules("delete file") }, `pattern holds ' ', which no tool name may`},
		{"tool pattern non-ASCII", func(c *Config) { c.Tools = rules("café_*") }, `pattern holds 'é', which no tool name may`},
		{"tool pattern escaped star", func(c *Config) { c.Tools = rules(`\*`) }, `pattern holds '*', which no tool name may`},
		{"tool pattern longer than a tool name", func(c *Config) { c.Tools = rules(strings.Repeat("a", 129) + "*") }, "longer than 128"},
		{"tool pattern as long as a tool name", func(c *Config) { c.Tools = rules(strings.Repeat("a", 127) + "?*") }, ""},
		{"tool pattern of every SEP-986 character", func(c *Config) { c.Tools = rules("aZ09_-./*?") }, ""},
		{"prompt pattern with a space", func(c *Config) { c.Prompts = rules("summarize *") }, `pattern holds ' ', which no prompt name may`},
		{"prompt pattern with a zero-width space", func(c *Config) { c.Prompts = rules("sum\u200bmarize") }, "which no prompt name may"},
		{"resources: longest prefix, no order", func(c *Config) {
			c.ResourceRules = []Rule{{Pattern: "file:///"}, {Pattern: "file:///srv/"}}
		}, ""},
		// The longest prefix decides, the first of equal ones: a second
		// rule for one prefix, stricter say, would never apply.
		{"resource prefix twice", func(c *Config) {
			c.ResourceRules = []Rule{{Pattern: "file:///srv/secret/", Scopes: []string{"read"}}, {Pattern: "file:///srv/"}, {Pattern: "file:///srv/secret/", Scopes: []string{"admin"}}}
		}, `resource rule "file:///srv/secret/" is never reached: the rule "file:///srv/secret/" before it has the same prefix`},
		{"resource prefix twice but for the case of scheme and host", func(c *Config) {
			c.ResourceRules = []Rule{{Pattern: "notes://all/", Scopes: []string{"read"}}, {Pattern: "Notes://ALL/", Scopes: []string{"admin"}}}
		}, `resource rule "notes://all/" is never reached`},
		{"resource prefixes but for the case of the path", func(c *Config) {
			c.ResourceRules = []Rule{{Pattern: "file:///srv/a/"}, {Pattern: "file:///srv/A/"}}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.mutate(&cfg)
			_, err := New(cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("New() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// rules are first-match rules with these patterns and a scope each.
func rules(patterns ...string) []Rule {
	out := make([]Rule, len(patterns))
	for i, p := range patterns {
		out[i] = Rule{Pattern: p, Scopes: []string{"s"}}
	}
	return out
}

func TestNewDefaults(t *testing.T) {
	g := newGateway(t, testConfig(t))
	if g.cfg.MaxBodySize != 1<<20 {
		t.Errorf("MaxBodySize = %d, want %d", g.cfg.MaxBodySize, 1<<20)
	}
	if diff := cmp.Diff([]string{"ES256", "RS256", "EdDSA"}, g.cfg.Algorithms); diff != "" {
		t.Errorf("Algorithms (-want +got):\n%s", diff)
	}
}

func TestMetadata(t *testing.T) {
	tests := []struct {
		name      string
		resource  string
		root      bool
		wantPaths []string
	}{
		{"path resource", testResource, false, []string{"/.well-known/oauth-protected-resource/mcp"}},
		{"path resource, root designated", testResource, true, []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"}},
		{"nested path", "https://mcp.example.com/a/mcp", false, []string{"/.well-known/oauth-protected-resource/a/mcp"}},
		{"root resource", "https://mcp.example.com/", false, []string{"/.well-known/oauth-protected-resource"}},
		{"bare host resource", "https://mcp.example.com", false, []string{"/.well-known/oauth-protected-resource"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Resource = tt.resource
			cfg.RootMetadata = tt.root
			cfg.ResourceName = "Example MCP"
			h := newHarness(t, cfg, nil)
			if diff := cmp.Diff(tt.wantPaths, h.g.MetadataPaths()); diff != "" {
				t.Fatalf("MetadataPaths() (-want +got):\n%s", diff)
			}
			for _, p := range tt.wantPaths {
				resp := h.do(t, call{method: http.MethodGet, path: p})
				body := readBody(t, resp)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s = %d, want 200", p, resp.StatusCode)
				}
				if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
					t.Errorf("GET %s Access-Control-Allow-Origin = %q, want *", p, got)
				}
				var md map[string]any
				if err := json.Unmarshal([]byte(body), &md); err != nil {
					t.Fatal(err)
				}
				want := map[string]any{
					"resource":                          tt.resource,
					"authorization_servers":             []any{testIssuer},
					"scopes_supported":                  []any{"admin", "files:read", "files:secret", "mcp", "prompts:read", "tools:read", "tools:write"},
					"bearer_methods_supported":          []any{"header"},
					"resource_name":                     "Example MCP",
					"dpop_signing_alg_values_supported": []any{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA", "Ed25519"},
					"dpop_bound_access_tokens_required": false,
				}
				if diff := cmp.Diff(want, md); diff != "" {
					t.Errorf("GET %s metadata (-want +got):\n%s", p, diff)
				}
			}
			if !tt.root && tt.wantPaths[0] != wellKnownPRM {
				// The root form belongs to another gateway: here it is
				// neither metadata nor the MCP endpoint.
				resp := h.do(t, call{method: http.MethodGet, path: wellKnownPRM})
				readBody(t, resp)
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET %s = %d, want 404", wellKnownPRM, resp.StatusCode)
				}
			}
			if n := len(h.up.requests()); n != 0 {
				t.Errorf("upstream saw %d requests, want 0", n)
			}
		})
	}
}

func TestMetadataPreflight(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	resp := h.do(t, call{method: http.MethodOptions, path: "/.well-known/oauth-protected-resource/mcp",
		headers: map[string]string{"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "mcp-protocol-version"}})
	readBody(t, resp)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "MCP-Protocol-Version") {
		t.Fatalf("preflight = %d %v, want 204 with CORS headers", resp.StatusCode, resp.Header)
	}
}

func TestScopes(t *testing.T) {
	cfg := testConfig(t)
	cfg.BaseScopes = []string{"mcp"}
	g := newGateway(t, cfg)
	want := []string{"admin", "files:read", "files:secret", "mcp", "prompts:read", "tools:read", "tools:write"}
	if diff := cmp.Diff(want, g.Scopes()); diff != "" {
		t.Errorf("Scopes() (-want +got):\n%s", diff)
	}
}

func TestChallenges(t *testing.T) {
	expired := claims()
	expired["exp"] = testNow.Add(-time.Hour).Unix()
	expired["iat"] = testNow.Add(-2 * time.Hour).Unix()
	writer := claims()
	writer["scope"] = "mcp tools:read"
	tests := []struct {
		name       string
		c          call
		wantStatus int
		wantAuth   string
		wantCode   int
	}{
		{"no token", call{body: toolCall("read_x")}, 401,
			`Bearer resource_metadata="` + testPRM + `", scope="mcp"`, codeRefused},
		{"other scheme", call{body: toolCall("read_x"), headers: map[string]string{"Authorization": "Basic YTpi"}}, 401,
			`Bearer resource_metadata="` + testPRM + `", scope="mcp"`, codeRefused},
		{"garbage token", call{body: toolCall("read_x"), token: "abc.def.ghi"}, 401,
			`Bearer error="invalid_token", error_description="the access token is invalid", resource_metadata="` + testPRM + `", scope="mcp"`, codeRefused},
		// Not a three-part JWT, and no introspection block (README:
		// In front of another authorization server).
		{"opaque token", call{body: toolCall("read_x"), token: "opaque-token-value"}, 401,
			`Bearer error="invalid_token", error_description="the access token is invalid", resource_metadata="` + testPRM + `", scope="mcp"`, codeRefused},
		{"expired", call{body: toolCall("read_x"), token: mint(t, expired)}, 401,
			`Bearer error="invalid_token", error_description="the access token expired", resource_metadata="` + testPRM + `", scope="mcp"`, codeRefused},
		{"insufficient scope", call{body: toolCall("write_x"), token: mint(t, writer)}, 403,
			`Bearer error="insufficient_scope", scope="mcp tools:write", resource_metadata="` + testPRM + `"`, codeRefused},
		{"insufficient scope, admin", call{body: toolCall("delete_x"), token: mint(t, writer)}, 403,
			`Bearer error="insufficient_scope", scope="admin mcp", resource_metadata="` + testPRM + `"`, codeRefused},
		{"token in query", call{path: "/mcp?access_token=" + mint(t, claims()), body: toolCall("read_x")}, 400,
			`Bearer error="invalid_request", error_description="access tokens are accepted in the Authorization header only", resource_metadata="` + testPRM + `"`, codeRefused},
	}
	h := newHarness(t, testConfig(t), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.do(t, tt.c)
			body := readBody(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tt.wantAuth {
				t.Errorf("WWW-Authenticate = %s\nwant %s", got, tt.wantAuth)
			}
			if code, _, _ := rpcErr(t, body); code != tt.wantCode {
				t.Errorf("JSON-RPC error code = %d, want %d", code, tt.wantCode)
			}
		})
	}
	t.Run("two Authorization headers", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", strings.NewReader(toolCall("read_x")))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("Authorization", "Bearer "+mint(t, claims()))
		req.Header.Add("Authorization", "Bearer "+mint(t, claims()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status = %d, want 400", resp.StatusCode)
		}
	})
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
	// An insufficient_scope body carries the request id, so clients match it.
	resp := h.do(t, call{body: toolCall("write_x"), token: mint(t, writer)})
	if _, id, _ := rpcErr(t, readBody(t, resp)); string(id) != "1" {
		t.Errorf("403 body id = %s, want 1", id)
	}
}

// token variants for the decision table.
func tok(t *testing.T, mutate func(jwt.MapClaims)) string {
	c := claims()
	mutate(c)
	return mint(t, c)
}

func TestDecisions(t *testing.T) {
	scope := func(s string) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c["scope"] = s } }
	withAct := func(s string, act any) func(jwt.MapClaims) {
		return func(c jwt.MapClaims) { c["scope"] = s; c["act"] = act }
	}
	agentOnly := func(c jwt.MapClaims) {
		c["sub"] = "agent-a"
		c["principal_type"] = "agent"
		c["scope"] = "mcp tools:read"
	}
	// A client's own token (client credentials): no agent acts in it.
	clientOwn := func(c jwt.MapClaims) {
		c["sub"] = "client-1"
		c["principal_type"] = "client"
		c["scope"] = "mcp tools:read"
	}
	readDeleg := map[string]any{"sub": "agent-a"}
	deep := map[string]any{"sub": "agent-a", "act": map[string]any{"sub": "agent-b"}}
	resRead := func(uri string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":` + quote(uri) + `}}`
	}
	prompt := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":` + quote(name) + `}}`
	}
	tests := []struct {
		name   string
		token  func(jwt.MapClaims)
		body   string
		status int // 200 = forwarded
	}{
		// Tools: glob, first match wins.
		{"tool read allowed", scope("mcp tools:read"), toolCall("read_file"), 200},
		{"tool ? glob", scope("mcp tools:read"), toolCall("get_x"), 200},
		{"tool ? glob is one character", scope("mcp tools:read"), toolCall("get_xy"), 403},
		{"tool no rule", scope("mcp tools:read admin"), toolCall("unknown"), 403},
		{"tool write needs write", scope("mcp tools:read"), toolCall("write_file"), 403},
		{"tool write allowed", scope("mcp tools:write"), toolCall("write_file"), 200},
		{"implies transitively", scope("mcp admin"), toolCall("read_file"), 200},
		{"implies admin to write", scope("mcp admin"), toolCall("write_file"), 200},
		{"implies not upward", scope("mcp tools:write"), toolCall("delete_all"), 403},
		{"base scope required", scope("tools:read"), toolCall("read_file"), 403},
		{"case variant of read_* is refused as unclassifiable", scope("mcp tools:read"), toolCall("READ_file"), 400},
		// Not folded to "read_Key" (which read_* would pass too): outside
		// SEP-986, so refused before any rule.
		{"Kelvin sign is not k", scope("mcp tools:read"), toolCall("read_\u212Aey"), 400},
		// Base-scope methods.
		{"tools/list base", scope("mcp"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, 200},
		{"ping without base", scope("tools:read"), `{"jsonrpc":"2.0","id":1,"method":"ping"}`, 403},
		{"notification base", scope("mcp"), `{"jsonrpc":"2.0","method":"notifications/initialized"}`, 200},
		// A client's answer to a server's request needs its session
		// (TestSessionlessRefused).
		{"client response without a session", scope("mcp"), `{"jsonrpc":"2.0","id":"s1","result":{"content":{"type":"text","text":"hi"}}}`, 400},
		// 2025 tasks are bound through the session; none here.
		{"tasks/get without a session", scope("mcp"), `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t1"}}`, 400},
		// Prompts.
		{"prompt allowed", scope("mcp prompts:read"), prompt("summary-long"), 200},
		{"prompt scope", scope("mcp"), prompt("summary"), 403},
		{"prompt no rule", scope("mcp prompts:read"), prompt("other"), 403},
		// Resources: longest prefix wins.
		{"resource prefix", scope("mcp files:read"), resRead("file:///etc/motd"), 200},
		{"resource longest prefix", scope("mcp files:read"), resRead("file:///secret/key"), 403},
		{"resource longest allowed", scope("mcp files:secret"), resRead("file:///secret/key"), 200},
		{"resource no rule", scope("mcp files:read files:secret"), resRead("https://x/"), 403},
		{"resource subscribe", scope("mcp"), `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///a"}}`, 403},
		// Actor rules.
		{"require agent, user token", scope("mcp tools:read"), toolCall("agent_only"), 403},
		{"require agent, delegated", withAct("mcp tools:read", readDeleg), toolCall("agent_only"), 200},
		{"require agent, agent-only", agentOnly, toolCall("agent_only"), 200},
		{"user only, delegated", withAct("mcp tools:read", readDeleg), toolCall("user_only"), 403},
		{"user only, agent-only", agentOnly, toolCall("user_only"), 403},
		{"user only, user", scope("mcp tools:read"), toolCall("user_only"), 200},
		{"require user, agent-only", agentOnly, toolCall("human"), 403},
		{"require user, delegated", withAct("mcp tools:read", readDeleg), toolCall("human"), 200},
		{"allowed agent", withAct("mcp tools:read", readDeleg), toolCall("bot_tool"), 200},
		{"other agent", withAct("mcp tools:read", map[string]any{"sub": "agent-z"}), toolCall("bot_tool"), 403},
		// act.iss puts the actor's sub in another issuer's namespace (RFC
		// 8693 §4.1): agent-a there is not this issuer's agent-a, and no
		// rule can tell them apart, so the token is refused.
		{"allowed agent of another issuer", withAct("mcp tools:read", map[string]any{"sub": "agent-a", "iss": "https://elsewhere.example"}), toolCall("bot_tool"), 401},
		{"inner actor of another issuer", withAct("mcp tools:read", map[string]any{"sub": "agent-a", "act": map[string]any{"sub": "agent-b", "iss": "https://elsewhere.example"}}), toolCall("read_x"), 401},
		{"act.iss not a string", withAct("mcp tools:read", map[string]any{"sub": "agent-a", "iss": 7}), toolCall("read_x"), 401},
		{"allowed agent, act.iss the token's", withAct("mcp tools:read", map[string]any{"sub": "agent-a", "iss": testIssuer}), toolCall("bot_tool"), 200},
		{"allowed agents: outermost act only", withAct("mcp tools:read", map[string]any{"sub": "agent-z", "act": map[string]any{"sub": "agent-a"}}), toolCall("bot_tool"), 403},
		{"allowed agents, no agent", scope("mcp tools:read"), toolCall("bot_tool"), 200},
		// agents restricts the agent that acts, and no agent acts in a
		// client's own token; require_agent or require_user refuse it.
		{"allowed agents, a client's own token", clientOwn, toolCall("bot_tool"), 200},
		{"require agent, a client's own token", clientOwn, toolCall("agent_only"), 403},
		{"require user, a client's own token", clientOwn, toolCall("human"), 403},
		{"user only, a client's own token", clientOwn, toolCall("user_only"), 403},
		{"max depth ok", withAct("mcp tools:read", readDeleg), toolCall("shallow"), 200},
		{"max depth exceeded", withAct("mcp tools:read", deep), toolCall("shallow"), 403},
		{"malformed act", withAct("mcp tools:read", "agent-a"), toolCall("read_x"), 401},
		{"act without sub", withAct("mcp tools:read", map[string]any{"iss": "x"}), toolCall("read_x"), 401},
		// Unclassifiable.
		{"tools/call without name", scope("mcp tools:read"), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, 400},
	}
	h := newHarness(t, testConfig(t), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: tt.body, token: tok(t, tt.token)})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.status, body)
			}
			forwarded := len(h.up.requests()) > before
			if forwarded != (tt.status == 200) {
				t.Fatalf("forwarded = %v, want %v", forwarded, tt.status == 200)
			}
		})
	}
}

func TestActorRefusalBody(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	resp := h.do(t, call{body: toolCall("agent_only"), token: mint(t, claims())})
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status = %d, want 403", resp.StatusCode)
	}
	if got := resp.Header.Get("WWW-Authenticate"); got != "" {
		t.Errorf("WWW-Authenticate = %q, want none (more scope cannot help)", got)
	}
	code, id, msg := rpcErr(t, body)
	if code != codeRefused || string(id) != "1" || !strings.Contains(msg, `"agent_only"`) || !strings.Contains(msg, "an agent is required") {
		t.Errorf("body = %s, want a JSON-RPC error with id 1 naming the rule", body)
	}
}

func TestForwarding(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, nil)
	c := claims()
	c["act"] = map[string]any{"sub": "agent-a", "act": map[string]any{"sub": "agent-b"}}
	token := mint(t, c)
	// Odd but valid JSON: the upstream must get these very bytes.
	body := "{ \"jsonrpc\" : \"2.0\",\n\t\"id\": 7, \"method\":\"tools/call\", \"params\": {\"name\":\"read_\\u0078\", \"arguments\": {\"a\": [1, 2.50, \"\\ud83d\\ude00\"]}} }\n"
	resp := h.do(t, call{body: body, token: token, headers: map[string]string{
		"X-MCP-Subject":                      "mallory",
		"x-mcp-client":                       "evil",
		"X-Mcp-Actor":                        "root",
		"X-MCP-Scope":                        "admin",
		"Cookie":                             "session=secret",
		"Content-Type":                       "application/json; charset=UTF-8",
		"Mcp-Method":                         "tools/call",
		"X-HTTP-Method-Override":             "DELETE",
		"Content-Length":                     "",
		"X-Original-URL":                     "/admin",
		"x-rewrite-url":                      "/admin",
		"X-Forwarded-User":                   "root",
		"X-Remote-User":                      "root",
		"Remote-User":                        "root",
		"X-Auth-Request-Email":               "root@example.com",
		"x-auth-request-tenant":              "other",
		"Remote-Name":                        "root",
		"X-WEBAUTH-USER":                     "root",
		"X-Original-URI":                     "/admin",
		"X-Amzn-Oidc-Identity":               "root",
		"X-MS-CLIENT-PRINCIPAL":              "e30=",
		"Cf-Access-Authenticated-User-Email": "root@example.com",
		"X-Goog-Authenticated-User-Email":    "accounts.google.com:root@example.com",
		"Tailscale-User-Login":               "root@example.com",
		"X-Authentik-Username":               "root",
		"X-Pomerium-Claim-Email":             "root@example.com",
		"X-Token-User-Email":                 "root@example.com",
		"X-Vouch-User":                       "root",
		"X-Webauth-Login":                    "root",
		"X-Ms-Token-Aad-Id-Token":            "x",
		"X-Auth-Username":                    "root",
		"X-Auth-Token":                       "an-api-key", // a credential many APIs take: forwarded
		"X":                                  "short",
		"Forwarded":                          "for=10.0.0.1;host=admin.internal;proto=https",
		"X-Real-IP":                          "10.0.0.1",
		"True-Client-IP":                     "10.0.0.1",
		"X-Consumer-Username":                "root",
		"X-Credential-Identifier":            "root",
		"X-Authenticated-Userid":             "root",
		"X-Userinfo":                         "eyJzdWIiOiJyb290In0=",
		"X-Forwarded-Client-Cert":            "Hash=x;Subject=\"CN=root\"",
		"x-ssl-client-s-dn":                  "CN=root",
		"X-Client-Cert":                      "x",
		"X-Forwarded-Method":                 "GET",
		"X-Forwarded-Uri":                    "/admin",
		"X-MCP-Actor-Chain":                  "root",
		"X-MCP-Toolsets":                     "repos,issues", // GitHub's MCP server's option: forwarded
		"X-MCP-Readonly":                     "true",
	}})
	readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	got := h.up.requests()
	if len(got) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(got))
	}
	r := got[0]
	if !bytes.Equal(r.Body, []byte(body)) {
		t.Errorf("upstream body = %q, want %q", r.Body, body)
	}
	for _, k := range []string{"Authorization", "Cookie", "Mcp-Method", "X-Http-Method-Override",
		"X-Original-Url", "X-Rewrite-Url", "X-Forwarded-User", "X-Remote-User", "Remote-User", "X-Auth-Request-Email", "X-Auth-Request-Tenant",
		"Remote-Name", "X-Webauth-User", "X-Original-Uri", "X-Amzn-Oidc-Identity", "X-Ms-Client-Principal",
		"Cf-Access-Authenticated-User-Email", "X-Goog-Authenticated-User-Email", "Tailscale-User-Login",
		"X-Authentik-Username", "X-Pomerium-Claim-Email", "X-Token-User-Email", "X-Vouch-User", "X-Webauth-Login",
		"X-Ms-Token-Aad-Id-Token", "X-Auth-Username", "Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Consumer-Username",
		"X-Credential-Identifier", "X-Authenticated-Userid", "X-Userinfo", "X-Forwarded-Client-Cert", "X-Ssl-Client-S-Dn",
		"X-Client-Cert", "X-Forwarded-Method", "X-Forwarded-Uri", "X-Mcp-Actor-Chain"} {
		if v := r.Header.Values(k); len(v) != 0 {
			t.Errorf("upstream header %s = %q, want none", k, v)
		}
	}
	want := map[string]string{"X-Mcp-Subject": "alice", "X-Mcp-Client": "client-1", "X-Mcp-Actor": "agent-a", "X-Mcp-Scope": "mcp tools:read", "X-Mcp-Principal-Type": "user"}
	for k, v := range want {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("upstream header %s = %q, want [%q]", k, got, v)
		}
	}
	for k, v := range map[string]string{"X-Auth-Token": "an-api-key", "X-Mcp-Toolsets": "repos,issues", "X-Mcp-Readonly": "true"} {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("upstream header %s = %q, want the client's [%q] (a credential or an option, not an identity assertion)", k, got, v)
		}
	}
	if strings.Contains(strings.Join(r.Header.Values("X-Mcp-Subject"), ""), "mallory") {
		t.Error("spoofed identity header reached the upstream")
	}

	// The principal's type: an agent's or a client's own token does not
	// reach the upstream looking like a user of that name (review
	// s13-agents); a spoofed type is replaced.
	for _, tt := range []struct{ claim, want string }{{"agent", "agent"}, {"client", "client"}, {"", "user"}, {"robot", "robot"}} {
		c := claims()
		if tt.claim != "" {
			c["principal_type"] = tt.claim
		}
		before := len(h.up.requests())
		resp := h.do(t, call{body: toolCall("read_x"), token: mint(t, c), headers: map[string]string{"X-MCP-Principal-Type": "user"}})
		readBody(t, resp)
		got := h.up.requests()[before:]
		if tt.claim == "robot" {
			// Neither a user nor an agent: refused or forwarded, never as a user.
			if len(got) == 1 && got[0].Header.Get("X-Mcp-Principal-Type") != "robot" {
				t.Errorf("principal_type robot forwarded as %q", got[0].Header.Get("X-Mcp-Principal-Type"))
			}
			continue
		}
		if v := headerOf(got, "X-Mcp-Principal-Type"); len(got) != 1 || len(v) != 1 || v[0] != tt.want {
			t.Errorf("principal_type %q: upstream requests %d, X-Mcp-Principal-Type %v, want [%s]", tt.claim, len(got), v, tt.want)
		}
	}

	// Without ForwardIdentity the client's copies are still removed,
	// every one of the five (README: "client-sent copies are always
	// removed"): an upstream that reads X-MCP-Principal-Type would
	// otherwise take an agent's own token for a user's.
	h2 := newHarness(t, testConfig(t), nil)
	spoofed := map[string]string{"X-MCP-Subject": "mallory", "X-MCP-Client": "evil", "X-MCP-Actor": "root", "X-MCP-Scope": "admin", "X-MCP-Principal-Type": "user"}
	agentOwn := claims()
	agentOwn["principal_type"] = "agent"
	resp = h2.do(t, call{body: toolCall("read_x"), token: mint(t, agentOwn), headers: spoofed})
	readBody(t, resp)
	if got := h2.up.requests(); len(got) != 1 {
		t.Fatalf("without ForwardIdentity: upstream saw %d requests, want 1", len(got))
	}
	for k := range spoofed {
		if v := h2.up.requests()[0].Header.Values(k); len(v) != 0 {
			t.Errorf("without ForwardIdentity: upstream %s = %q, want none", k, v)
		}
	}
}

func TestHeaderSafe(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{"a b", "a b"},
		{"évé", "=?base64?w6l2w6k=?="},
		{"x\r\nX-Evil: 1", "=?base64?eA0KWC1FdmlsOiAx?="},
		{" pad", "=?base64?IHBhZA==?="},
		{"=?base64?abc?=", "=?base64?PT9iYXNlNjQ/YWJjPz0=?="},
	}
	for _, tt := range tests {
		if got := headerSafe(tt.in); got != tt.want {
			t.Errorf("headerSafe(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOriginAndMethods(t *testing.T) {
	h := newHarness(t, unreadConfig(t), nil)
	token := mint(t, claims())
	sid := sessionFor(t, h.g, token)
	narrow := tok(t, func(c jwt.MapClaims) { c["scope"] = "tools:read" })
	tests := []struct {
		name   string
		c      call
		status int
	}{
		{"allowed origin", call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": "https://app.example.com"}}, 200},
		{"allowed origin, case", call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": "https://APP.example.com"}}, 200},
		{"no origin", call{body: toolCall("read_x"), token: token}, 200},
		{"foreign origin", call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": "https://evil.example"}}, 403},
		{"null origin", call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": "null"}}, 403},
		{"PUT", call{method: http.MethodPut, token: token}, 405},
		{"PATCH", call{method: http.MethodPatch, token: token}, 405},
		{"HEAD", call{method: http.MethodHead, token: token}, 405},
		{"OPTIONS without preflight", call{method: http.MethodOptions, token: token}, 405},
		{"GET 2025", call{method: http.MethodGet, token: token, headers: map[string]string{"MCP-Protocol-Version": "2025-06-18", "Mcp-Session-Id": sid}}, 200},
		{"DELETE 2025", call{method: http.MethodDelete, token: token, headers: map[string]string{"MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sid}}, 200},
		{"GET 2026", call{method: http.MethodGet, token: token, headers: map[string]string{"MCP-Protocol-Version": "2026-07-28"}}, 405},
		{"DELETE 2026", call{method: http.MethodDelete, token: token, headers: map[string]string{"MCP-Protocol-Version": "2026-07-28"}}, 405},
		{"GET without token", call{method: http.MethodGet}, 401},
		{"GET without base scope", call{method: http.MethodGet, token: narrow, headers: map[string]string{"Mcp-Session-Id": sessionFor(t, h.g, narrow)}}, 403},
		{"upgrade", call{method: http.MethodGet, token: token, headers: map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, tt.c)
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.status, body)
			}
			if forwarded := len(h.up.requests()) > before; forwarded != (tt.status == 200) {
				t.Fatalf("forwarded = %v, want %v", forwarded, tt.status == 200)
			}
			if tt.status == 405 && tt.c.method != http.MethodHead {
				if resp.Header.Get("Allow") == "" {
					t.Error("405 without Allow header")
				}
				rpcErr(t, body)
			}
		})
	}
	t.Run("preflight", func(t *testing.T) {
		resp := h.do(t, call{method: http.MethodOptions, headers: map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}})
		readBody(t, resp)
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Fatalf("preflight = %d %v", resp.StatusCode, resp.Header)
		}
	})
	// An allowed origin is matched as browsers send Origin: without the
	// scheme's default port, which an allowed origin may name, and the
	// host in its xn-- form.
	t.Run("as browsers send it", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.AllowedOrigins = []string{"https://app.example.com:443", "HTTP://LOCALHOST:80/", "http://127.0.0.1:"}
		h := newHarness(t, cfg, nil)
		for _, origin := range []string{"https://app.example.com", "http://localhost", "http://127.0.0.1"} {
			resp := h.do(t, call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": origin}})
			readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("Origin %q, allowed as %q = %d, want 200", origin, cfg.AllowedOrigins, resp.StatusCode)
			}
		}
	})
	// A port and an IPv6 address as browsers serialize them (the WHATWG
	// URL standard): the port a number, without leading zeros (so 0443 is
	// https's default), the address in its shortest form (RFC 5952).
	t.Run("port and address as browsers write them", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.AllowedOrigins = []string{"https://app.example.com:0443", "http://localhost:08080", "http://[0:0:0:0:0:0:0:1]:80", "http://[FE80:0::A]:3000", "http://[::ffff:127.0.0.1]:8000"}
		h := newHarness(t, cfg, nil)
		for _, origin := range []string{"https://app.example.com", "http://localhost:8080", "http://[::1]", "http://[fe80::a]:3000", "http://[::ffff:7f00:1]:8000"} {
			resp := h.do(t, call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": origin}})
			readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("Origin %q, allowed as %q = %d, want 200", origin, cfg.AllowedOrigins, resp.StatusCode)
			}
		}
	})
	// With no allowed_origins, any Origin is refused: browser pages are
	// let in only by name (README, allowed_origins).
	t.Run("none allowed", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.AllowedOrigins = nil
		h := newHarness(t, cfg, nil)
		for _, origin := range []string{"https://app.example.com", "null"} {
			before := len(h.up.requests())
			resp := h.do(t, call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": origin}})
			readBody(t, resp)
			if resp.StatusCode != http.StatusForbidden || len(h.up.requests()) != before {
				t.Errorf("Origin %q with no allowed origins = %d, forwarded %v; want 403, not forwarded", origin, resp.StatusCode, len(h.up.requests()) != before)
			}
		}
	})
	t.Run("CORS on answers", func(t *testing.T) {
		resp := h.do(t, call{body: toolCall("read_x"), token: token, headers: map[string]string{"Origin": "https://app.example.com"}})
		readBody(t, resp)
		if got := resp.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Mcp-Session-Id") {
			t.Errorf("Access-Control-Expose-Headers = %q, want Mcp-Session-Id listed", got)
		}
		// A refusal a page's script may retry or step up from: the
		// headers that say how are not CORS-safelisted, so they must be
		// exposed, Retry-After (429, 503) as the issuer exposes it.
		resp = h.do(t, call{body: toolCall("read_x"), token: "not a token", headers: map[string]string{"Origin": "https://app.example.com"}})
		readBody(t, resp)
		exposed := strings.Split(resp.Header.Get("Access-Control-Expose-Headers"), ", ")
		for _, name := range []string{"Mcp-Session-Id", "WWW-Authenticate", "DPoP-Nonce", "Retry-After"} {
			if resp.StatusCode != http.StatusUnauthorized || !slices.Contains(exposed, name) {
				t.Errorf("refused with Origin: %d, Access-Control-Expose-Headers %q; want 401, %s listed", resp.StatusCode, exposed, name)
			}
		}
	})
}

// revocationSet is a Revocations over revoked jtis and grant ids; with
// *unknown set it cannot tell.
type revocationSet struct {
	jtis, grants map[string]bool
	unknown      *bool
}

func (s revocationSet) Revoked(_ context.Context, jti, grantID string) (bool, error) {
	if s.unknown != nil && *s.unknown {
		return true, errors.New("stale")
	}
	return s.jtis[jti] || (grantID != "" && s.grants[grantID]), nil
}

func TestRevokedAndCache(t *testing.T) {
	cfg := testConfig(t)
	keys := cfg.Keys.(*testKeys)
	revoked := revocationSet{jtis: map[string]bool{}, grants: map[string]bool{}}
	cfg.Revocations = revoked
	h := newHarness(t, cfg, nil)
	token := mint(t, claims())
	for i := 0; i < 3; i++ {
		resp := h.do(t, call{body: toolCall("read_x"), token: token})
		readBody(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("call %d: status = %d, want 200", i, resp.StatusCode)
		}
	}
	if keys.calls != 1 {
		t.Errorf("key lookups = %d, want 1 (claims cached)", keys.calls)
	}
	c := claims()
	c["jti"], c["gid"] = "jti-2", "grant-1"
	ofGrant := mint(t, c)
	revoked.jtis["jti-1"] = true
	revoked.grants["grant-1"] = true
	for name, token := range map[string]string{"revoked jti": token, "revoked grant": ofGrant} {
		resp := h.do(t, call{body: toolCall("read_x"), token: token})
		readBody(t, resp)
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "revoked") {
			t.Errorf("%s: status = %d %q, want 401 invalid_token", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestRevocationsUnknown: when the revocation state cannot be trusted
// (the issuer's store unread for too long), every request is refused with
// 503 and a JSON-RPC error, without a Bearer challenge (the token is not
// at fault) and without reaching the upstream; it passes again once the
// state is current.
func TestRevocationsUnknown(t *testing.T) {
	cfg := testConfig(t)
	unknown := true
	cfg.Revocations = revocationSet{jtis: map[string]bool{}, grants: map[string]bool{}, unknown: &unknown}
	upstream := 0
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		upstream++
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	})
	token := mint(t, claims())
	resp := h.do(t, call{body: toolCall("read_x"), token: token})
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("WWW-Authenticate") != "" || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(body, `"code":-32000`) || !strings.Contains(body, "revocations cannot be checked") {
		t.Errorf("stale revocations: %d %q Retry-After %q %s, want 503, no challenge, Retry-After 1, a JSON-RPC error", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), resp.Header.Get("Retry-After"), body)
	}
	if upstream != 0 {
		t.Errorf("upstream called %d times with revocations unknown", upstream)
	}
	unknown = false
	resp = h.do(t, call{body: toolCall("read_x"), token: token})
	readBody(t, resp)
	if resp.StatusCode != 200 || upstream != 1 {
		t.Errorf("current revocations: status %d, upstream calls %d, want 200 and 1", resp.StatusCode, upstream)
	}
}

// outageKeys is a KeySource whose store cannot be read while down.
type outageKeys struct {
	KeySource
	down *bool
}

func (k outageKeys) PublicKey(ctx context.Context, kid string) (any, error) {
	if *k.down {
		return nil, fmt.Errorf("signing key %q: %w: store unreachable", kid, ErrKeysUnavailable)
	}
	return k.KeySource.PublicKey(ctx, kid)
}

// TestKeysUnavailable: a key source that cannot read its keys
// (ErrKeysUnavailable: the local issuer's store unreachable) refuses the
// request with 503 and a JSON-RPC error, without a Bearer challenge
// (a client takes 401 invalid_token as its token's fault and throws a
// good one away) and without reaching the upstream; the token passes
// once the keys can be read. An unknown kid is still 401.
func TestKeysUnavailable(t *testing.T) {
	cfg := testConfig(t)
	down := true
	cfg.Keys = outageKeys{KeySource: cfg.Keys, down: &down}
	upstream := 0
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		upstream++
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	})
	token := mint(t, claims())
	resp := h.do(t, call{body: toolCall("read_x"), token: token})
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("WWW-Authenticate") != "" || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(body, `"code":-32000`) || !strings.Contains(body, "signing key cannot be read") {
		t.Errorf("keys unreadable: %d %q Retry-After %q %s, want 503, no challenge, Retry-After 1, a JSON-RPC error", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), resp.Header.Get("Retry-After"), body)
	}
	if upstream != 0 {
		t.Errorf("upstream called %d times with the keys unreadable", upstream)
	}
	down = false
	resp = h.do(t, call{body: toolCall("read_x"), token: token})
	readBody(t, resp)
	if resp.StatusCode != 200 || upstream != 1 {
		t.Errorf("keys readable: status %d, upstream calls %d, want 200 and 1", resp.StatusCode, upstream)
	}
	resp = h.do(t, call{body: toolCall("read_x"), token: mintWith(t, jwt.SigningMethodES256, theKeys(t).ec, "unknown", claims(), nil)})
	readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("unknown kid: %d %q, want 401 invalid_token", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestConcurrentPrincipals: many principals at once through one gateway (the
// claims cache, session binding and the SSE pump shared): each gets its
// own session and filtered lists, and nobody's session works for another.
func TestConcurrentPrincipals(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Mcp-Session-Id", "up-"+r.Header.Get("X-Mcp-Subject"))
		if strings.Contains(r.Header.Get("X-Mcp-Subject"), "odd") {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: "+list+"\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, list)
	})
	const n = 12
	tokens := make([]string, n)
	for i := range tokens {
		c := claims()
		c["sub"] = fmt.Sprintf("user-%d-%s", i, map[bool]string{true: "odd", false: "even"}[i%2 == 1])
		tokens[i] = mint(t, c)
	}
	sids := make([]string, n)
	errs := make(chan error, n*10)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: tokens[i]})
				body := readBody(t, resp)
				if resp.StatusCode != 200 || strings.Contains(body, "delete_all") || !strings.Contains(body, "read_a") {
					errs <- fmt.Errorf("principal %d: tools/list = %d %q", i, resp.StatusCode, body)
				}
				sids[i] = resp.Header.Get("Mcp-Session-Id")
			}
		}()
	}
	wg.Wait()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := (i + 1) % n
			for k, want := range map[string]int{sids[i]: 200, sids[j]: 404} {
				resp := h.do(t, call{body: toolCall("read_a"), token: tokens[i], headers: map[string]string{"Mcp-Session-Id": k}})
				readBody(t, resp)
				if resp.StatusCode != want {
					errs <- fmt.Errorf("principal %d with session of %d: status %d, want %d", i, map[bool]int{true: i, false: j}[want == 200], resp.StatusCode, want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, r := range h.up.requests() {
		if sid := r.Header.Get("Mcp-Session-Id"); sid != "" && sid != "up-"+r.Header.Get("X-Mcp-Subject") {
			t.Errorf("upstream got session %q for %q", sid, r.Header.Get("X-Mcp-Subject"))
		}
	}
}

// TestGlobCoversAgreesWithGlobMatch: globCovers, which reads globs on its
// own, agrees with globMatch, the matcher requests are decided by, over
// random globs of the characters that matter and every non-empty name of
// up to four of them.
func TestGlobCoversAgreesWithGlobMatch(t *testing.T) {
	const letters = "ab\\*?é"
	names := []string{}
	var grow func(prefix string, n int)
	grow = func(prefix string, n int) {
		if prefix != "" {
			names = append(names, prefix)
		}
		if n == 0 {
			return
		}
		for _, r := range "ab?*é\\" {
			grow(prefix+string(r), n-1)
		}
	}
	grow("", 4)
	rng := rand.New(rand.NewPCG(3, 4))
	globOf := func(tokens int) string {
		var b strings.Builder
		for range 1 + rng.IntN(tokens) {
			c := []rune(letters)[rng.IntN(len([]rune(letters)))]
			if c == '\\' {
				b.WriteRune('\\')
				c = []rune("ab*?")[rng.IntN(4)]
			}
			b.WriteRune(c)
		}
		return b.String()
	}
	randGlob := func() string { return globOf(4) }
	for range 3000 {
		earlier, later := randGlob(), randGlob()
		covers, ok := globCovers(earlier, later)
		if !ok {
			t.Fatalf("globCovers(%q, %q) gave up", earlier, later)
		}
		want := true
		for _, n := range names {
			if globMatch(later, n) && !globMatch(earlier, n) {
				want = false
				break
			}
		}
		if covers != want {
			t.Fatalf("globCovers(%q, %q) = %v, but globMatch over names up to 4 runes says %v", earlier, later, covers, want)
		}
	}
	// Several earlier globs together, and whether two globs meet: of up
	// to three tokens, so that a name of up to four runes shows what
	// they decide.
	for range 2000 {
		earlier, later := []string{globOf(3), globOf(3), globOf(3)}[:2+rng.IntN(2)], globOf(3)
		var globs []glob
		for _, e := range earlier {
			globs = append(globs, parseGlob(e))
		}
		covers, ok := coverGlobs(globs, parseGlob(later))
		meet, meetOK := meetGlobs(globs[0], parseGlob(later))
		if !ok || !meetOK {
			t.Fatalf("coverGlobs(%q, %q) or meetGlobs gave up", earlier, later)
		}
		want, wantMeet := true, false
		for _, n := range names {
			if !globMatch(later, n) {
				continue
			}
			wantMeet = wantMeet || globMatch(earlier[0], n)
			if !slices.ContainsFunc(earlier, func(e string) bool { return globMatch(e, n) }) {
				want = false
			}
		}
		if covers != want {
			t.Fatalf("coverGlobs(%q, %q) = %v, but globMatch over names up to 4 runes says %v", earlier, later, covers, want)
		}
		if meet != wantMeet {
			t.Fatalf("meetGlobs(%q, %q) = %v, but globMatch over names up to 4 runes says %v", earlier[0], later, meet, wantMeet)
		}
	}
}

// headerOf is the values of header name in the first of reqs, for messages.
func headerOf(reqs []received, name string) []string {
	if len(reqs) == 0 {
		return nil
	}
	return reqs[0].Header.Values(name)
}

// TestIdentityHeadersDropped: every header the README names under "What
// the upstream receives" as dropped is dropped, in any case, also with
// the prefix families' members; others pass (X-Auth-Token, the options
// of GitHub's MCP server in the X-Mcp- family, the X-Forwarded- fields
// Caddy replaces).
func TestIdentityHeadersDropped(t *testing.T) {
	x := &exchange{}
	for _, name := range []string{
		"X-Original-Url", "X-Original-Uri", "X-Rewrite-Url",
		"Remote-User", "Remote-Name", "Remote-Email", "Remote-Groups", "X-Remote-User",
		"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username", "X-Forwarded-Access-Token",
		"X-Auth-Userid", "X-Auth-Username", "X-Auth-Email", "X-Auth-Subject", "X-Auth-Groups", "X-Auth-Roles",
		"X-Auth-Request-User", "X-Amzn-Oidc-Data", "X-Ms-Client-Principal", "X-Ms-Client-Principal-Name", "X-Ms-Token-Aad-Access-Token",
		"Cf-Access-Authenticated-User-Email", "X-Goog-Authenticated-User-Id", "Tailscale-User-Login",
		"X-Authentik-Username", "X-Pomerium-Claim-Email", "X-Token-User-Email", "X-Vouch-User", "X-Webauth-User",
		"X-Mcp-Subject", "X-Mcp-Client", "X-Mcp-Actor", "X-Mcp-Scope", "X-Mcp-Principal-Type", "Mcp-Session-Id",
		"X-Mcp-Actor-Chain", "X-Mcp-Tenant", "X-Mcp-User", "X-Mcp-",
		"Forwarded", "X-Real-Ip", "True-Client-Ip",
		"X-Consumer-Id", "X-Consumer-Custom-Id", "X-Consumer-Username", "X-Consumer-Groups",
		"X-Credential-Identifier", "X-Credential-Username", "X-Anonymous-Consumer",
		"X-Authenticated-Userid", "X-Authenticated-Scope", "X-Authenticated-Groups", "X-Userinfo",
		"X-Forwarded-Client-Cert", "X-Ssl-Client-Cert", "X-Ssl-Client-Verify", "X-Ssl-Client-S-Dn",
		"X-Client-Cert", "Ssl-Client-Cert", "X-Client-Dn", "X-Client-Verify",
		"X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info", "X-Amzn-Mtls-Clientcert", "X-Amzn-Mtls-Clientcert-Leaf",
		"X-Forwarded-Method", "X-Forwarded-Uri",
		// Review s15-fresh2 F4.
		"X-Remote-Group", "X-Remote-Extra-Scopes", "Gap-Auth", "X-Arr-Clientcert",
		"X-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Cluster-Client-Ip", "X-Original-Forwarded-For",
		"X-Forwarded-Prefix", "X-Forwarded-Port", "X-Forwarded-Ssl", "X-Forwarded-Server",
		"X-Forwarded-Host", // Caddy sets the resource's host
	} {
		for _, spelled := range []string{name, strings.ToLower(name), strings.ToUpper(name)} {
			if x.forwardsHeader(spelled) {
				t.Errorf("forwardsHeader(%q) = true, want dropped", spelled)
			}
		}
	}
	for _, name := range []string{"X-Auth-Token", "Accept", "User-Agent", "Content-Type", "Traceparent", "Cache-Control", "X",
		"X-Mcp-Toolsets", "x-mcp-tools", "X-MCP-EXCLUDE-TOOLS", "X-Mcp-Readonly", "X-Mcp-Lockdown", "X-Mcp-Insiders", "X-Mcp-Features",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Consumer", "Forwarded-For"} {
		if !x.forwardsHeader(name) {
			t.Errorf("forwardsHeader(%q) = false, want forwarded", name)
		}
	}
}

// TestMetadataEscapedPath: a resource whose path escapes a reserved
// character keeps it escaped where RFC 9728 §3.1 inserts the well-known
// path (clients build the URL from the resource as it is spelled), in
// the challenge's resource_metadata too; the unescaped form is another
// resource's metadata URL, not this one's.
func TestMetadataEscapedPath(t *testing.T) {
	cfg := testConfig(t)
	cfg.Resource = "https://mcp.example.com/a%2Fb/mcp"
	h := newHarness(t, cfg, nil)
	const want = "/.well-known/oauth-protected-resource/a%2Fb/mcp"
	resp := h.do(t, call{path: "/a%2Fb/mcp", body: toolCall("read_x")})
	readBody(t, resp)
	if got, wantAuth := resp.Header.Get("WWW-Authenticate"), `resource_metadata="https://mcp.example.com`+want+`"`; !strings.Contains(got, wantAuth) {
		t.Errorf("401 WWW-Authenticate = %q, want %s", got, wantAuth)
	}
	resp = h.do(t, call{method: http.MethodGet, path: want})
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"resource":"https://mcp.example.com/a%2Fb/mcp"`) {
		t.Errorf("GET %s = %d %s, want 200 with the resource", want, resp.StatusCode, body)
	}
	for _, same := range []string{"/.well-known/oauth-protected-resource/a%2fb/mcp", "/.well-known/oauth-protected-resource/a%2F%62/mcp"} {
		// Equivalent spellings (RFC 3986 §6.2.2.1, §6.2.2.2).
		resp = h.do(t, call{method: http.MethodGet, path: same})
		readBody(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", same, resp.StatusCode)
		}
	}
	other := "/.well-known/oauth-protected-resource/a/b/mcp"
	resp = h.do(t, call{method: http.MethodGet, path: other})
	readBody(t, resp)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s = %d, want 404 (the metadata URL of https://mcp.example.com/a/b/mcp)", other, resp.StatusCode)
	}
}

// TestMetadataSpelledPath: a metadata path spelled with a character a URI
// must escape ("|") is read as spelled, that character escaped where it
// stands (RFC 3987 §3.1), its "%2F" kept: Go's URL.EscapedPath escapes the
// decoded path again for such a spelling, which would make ".../a%2Fb/m|cp",
// the metadata URL of https://mcp.example.com/a%2Fb/m%7Ccp, that of
// https://mcp.example.com/a/b/m%7Ccp.
func TestMetadataSpelledPath(t *testing.T) {
	get := func(h *harness, path string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, h.front.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = path // sent as it stands
		resp, err := h.front.Client().Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		readBody(t, resp)
		return resp.StatusCode
	}
	const spelled = "/.well-known/oauth-protected-resource/a%2Fb/m|cp"
	cfg := testConfig(t)
	cfg.Resource = "https://mcp.example.com/a/b/m%7Ccp"
	if got := get(newHarness(t, cfg, nil), spelled); got != http.StatusNotFound {
		t.Errorf("resource .../a/b/m%%7Ccp: GET %s = %d, want 404 (the metadata URL of .../a%%2Fb/m%%7Ccp)", spelled, got)
	}
	cfg = testConfig(t)
	cfg.Resource = "https://mcp.example.com/a%2Fb/m%7Ccp"
	if got := get(newHarness(t, cfg, nil), spelled); got != http.StatusOK {
		t.Errorf("resource .../a%%2Fb/m%%7Ccp: GET %s = %d, want 200", spelled, got)
	}
}
