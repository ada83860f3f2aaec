package issuer

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

func TestMetadataAtEveryWellKnownURL(t *testing.T) {
	for _, tt := range []struct {
		name, path string
		urls       []string
	}{
		{"root issuer", "", []string{
			"/.well-known/oauth-authorization-server",
			"/.well-known/openid-configuration",
		}},
		{"path issuer", "/t1", []string{
			"/.well-known/oauth-authorization-server/t1",
			"/.well-known/openid-configuration/t1",
			"/t1/.well-known/openid-configuration",
			"/t1/.well-known/oauth-authorization-server",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokEnv(t, withPath(tt.path))
			for _, u := range tt.urls {
				resp, err := e.srv.Client().Get(e.srv.URL + u)
				if err != nil {
					t.Fatal(err)
				}
				var m map[string]any
				err = json.NewDecoder(resp.Body).Decode(&m)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("GET %s = %d, %v", u, resp.StatusCode, err)
				}
				if m["issuer"] != e.srv.URL+tt.path {
					t.Errorf("GET %s: issuer = %v, want %s", u, m["issuer"], e.srv.URL+tt.path)
				}
				if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
					t.Errorf("GET %s: Cache-Control = %q", u, cc)
				}
				if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
					t.Errorf("GET %s: no CORS header", u)
				}
				checkMetadata(t, e, m)
			}
		})
	}
}

func checkMetadata(t *testing.T, e *testEnv, m map[string]any) {
	t.Helper()
	base := e.iss.URL()
	wantStr := map[string]string{
		"authorization_endpoint":                base + "/authorize",
		"token_endpoint":                        base + "/token",
		"registration_endpoint":                 base + "/register",
		"jwks_uri":                              base + "/jwks",
		"revocation_endpoint":                   base + "/revoke",
		"introspection_endpoint":                base + "/introspect",
		"userinfo_endpoint":                     base + "/userinfo",
		"end_session_endpoint":                  base + "/logout",
		"pushed_authorization_request_endpoint": base + "/par",
	}
	for k, v := range wantStr {
		if m[k] != v {
			t.Errorf("%s = %v, want %s", k, m[k], v)
		}
	}
	wantBool := map[string]bool{
		"require_pushed_authorization_requests":          false,
		"client_id_metadata_document_supported":          true,
		"authorization_response_iss_parameter_supported": true,
		// Only a pushed request's: OpenID Connect Discovery reads an
		// absent member as true (TestAuthorizeRequestURIFetchesNothing).
		"request_uri_parameter_supported": false,
	}
	for k, v := range wantBool {
		if got, ok := m[k].(bool); !ok || got != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	wantList := map[string][]string{
		"response_types_supported":                         {"code"},
		"response_modes_supported":                         {"query"},
		"grant_types_supported":                            {"authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"},
		"code_challenge_methods_supported":                 {"S256"},
		"token_endpoint_auth_methods_supported":            {"none", "client_secret_basic", "client_secret_post", "private_key_jwt"},
		"revocation_endpoint_auth_methods_supported":       {"none", "client_secret_basic", "client_secret_post", "private_key_jwt"},
		"introspection_endpoint_auth_methods_supported":    {"client_secret_basic", "client_secret_post", "private_key_jwt"},
		"subject_types_supported":                          {"public"},
		"id_token_signing_alg_values_supported":            {"RS256", "ES256"},
		"scopes_supported":                                 {"openid", "profile", "email", "offline_access", "read", "write", "admin"},
		"token_endpoint_auth_signing_alg_values_supported": accesstoken.Algorithms(),
	}
	for k, v := range wantList {
		if got := strList(m[k]); !slices.Equal(got, v) {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	for _, c := range []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email", "name"} {
		if !slices.Contains(strList(m["claims_supported"]), c) {
			t.Errorf("claims_supported lacks %s", c)
		}
	}
}

func strList(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestMetadataOptions(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.DisableRegistration = true; c.RequirePAR = true })
	e.iss.AddResource(Resource{URL: "https://gw.example.com/mcp", Scopes: []string{"tools:call", "read"}})
	resp, err := e.srv.Client().Get(e.srv.URL + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	if _, ok := m["registration_endpoint"]; ok {
		t.Error("registration_endpoint present with registration disabled")
	}
	if m["require_pushed_authorization_requests"] != true {
		t.Error("require_pushed_authorization_requests = false with RequirePAR")
	}
	if s := strList(m["scopes_supported"]); !slices.Contains(s, "tools:call") || len(slices.Compact(slices.Sorted(slices.Values(s)))) != len(s) {
		t.Errorf("scopes_supported = %v, want the runtime resource's scopes once each", s)
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/.well-known/openid-configuration", nil)
	if a := e.do(t, req); a.status != http.StatusMethodNotAllowed {
		t.Errorf("POST metadata = %d, want 405", a.status)
	}
}

func TestCORSPreflight(t *testing.T) {
	e := newTokEnv(t, withPath("/t1"))
	for _, p := range []string{"/.well-known/oauth-authorization-server/t1", "/t1/token", "/t1/register", "/t1/revoke", "/t1/jwks", "/t1/par", "/t1/introspect", "/t1/userinfo"} {
		req, _ := http.NewRequest(http.MethodOptions, e.srv.URL+p, nil)
		req.Header.Set("Origin", "https://app.example.com")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version, content-type")
		a := e.do(t, req)
		h := a.header
		if a.status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
			h.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type, MCP-Protocol-Version, DPoP" ||
			h.Get("Access-Control-Allow-Methods") != "GET, POST, OPTIONS" {
			t.Errorf("OPTIONS %s = %d %v, want 204 with CORS headers", p, a.status, h)
		}
	}
	// Pages that use cookies are not opened to other origins.
	req, _ := http.NewRequest(http.MethodOptions, e.srv.URL+"/t1/authorize", nil)
	req.Header.Set("Origin", "https://app.example.com")
	if a := e.do(t, req); a.header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("authorize answers CORS")
	}
}

// TestCORSPreflightAllow: a preflight's Allow lists what the endpoint
// serves (the Allow of its own 405) and OPTIONS; it said GET, POST,
// OPTIONS everywhere, POST where metadata and JWKS refuse it, GET where
// the token endpoint refuses it, and not HEAD, which they serve.
func TestCORSPreflightAllow(t *testing.T) {
	e := newTokEnv(t, withPath("/t1"))
	for p, want := range map[string]string{
		"/.well-known/oauth-authorization-server/t1": "GET, HEAD",
		"/.well-known/openid-configuration/t1":       "GET, HEAD",
		"/t1/jwks":                                   "GET, HEAD",
		"/t1/token":                                  "POST",
		"/t1/par":                                    "POST",
		"/t1/register":                               "POST",
		"/t1/revoke":                                 "POST",
		"/t1/introspect":                             "POST",
		"/t1/userinfo":                               "GET, POST",
	} {
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+p, nil)
		a := e.do(t, req)
		if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != want {
			t.Errorf("PUT %s = %d, Allow %q; want 405, %q", p, a.status, a.header.Get("Allow"), want)
		}
		req, _ = http.NewRequest(http.MethodOptions, e.srv.URL+p, nil)
		req.Header.Set("Origin", "https://app.example.com")
		req.Header.Set("Access-Control-Request-Method", "POST")
		a = e.do(t, req)
		if got := a.header.Get("Allow"); a.status != http.StatusNoContent || got != want+", OPTIONS" {
			t.Errorf("OPTIONS %s = %d, Allow %q; want 204, %q", p, a.status, got, want+", OPTIONS")
		}
	}
}
