package interop

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// sdkReport is the JSON line test/node/client.mjs prints.
type sdkReport struct {
	OK             bool   `json:"ok"`
	Error          string `json:"error"`
	Issuer         string `json:"issuer"`
	Registrations  int    `json:"registrations"`
	Authorizations []struct {
		Scope        string `json:"scope"`
		Resource     string `json:"resource"`
		PKCE         string `json:"pkce"`
		ISSMatches   bool   `json:"iss_matches"`
		StateMatches bool   `json:"state_matches"`
		Error        string `json:"error"`
	} `json:"authorizations"`
	Tokens []struct {
		Iss             string `json:"iss"`
		Aud             any    `json:"aud"` // string or array (RFC 7519)
		Sub             string `json:"sub"`
		Scope           string `json:"scope"`
		ClientID        string `json:"client_id"`
		HasRefreshToken bool   `json:"has_refresh_token"`
	} `json:"tokens"`
	Tools []string `json:"tools"`
	Calls []struct {
		Phase        string `json:"phase"`
		Tool         string `json:"tool"`
		OK           bool   `json:"ok"`
		Reauthorized bool   `json:"reauthorized"`
		Text         string `json:"text"`
		Error        string `json:"error"`
	} `json:"calls"`
	ToolsAfter []string `json:"tools_after"`
	HTTP       []struct {
		Method          string `json:"method"`
		Path            string `json:"path"`
		Status          int    `json:"status"`
		MCPMethod       any    `json:"mcp_method"`
		Tool            string `json:"tool"`
		WWWAuthenticate string `json:"www_authenticate"`
		GrantType       string `json:"grant_type"`
		Resource        string `json:"resource"`
	} `json:"http"`
}

func audiences(aud any) []string {
	switch a := aud.(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func scopeSet(s string) map[string]bool {
	m := make(map[string]bool)
	for _, f := range strings.Fields(s) {
		m[f] = true
	}
	return m
}

// TestSDKClientStepUp points the official TypeScript SDK's OAuth client at
// the gateway URL and nothing else: it must discover the issuer, register
// with DCR, log in and consent (robot), get a token for exactly the
// gateway's resource, list tools and call a permitted one; a tool outside
// its scopes must get 403 insufficient_scope, and the SDK's step-up
// (re-authorization with the challenged scope) must make the call succeed.
func TestSDKClientStepUp(t *testing.T) {
	nt := requireNode(t)
	s := startStack(t, startDemo(t))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := nt.run(ctx, t, []string{"MCP_USERNAME=" + userName, "MCP_PASSWORD=" + userPassword},
		"client.mjs", "--url", s.Resource,
		"--tool", permitTool, "--tool-args", `{"text":"hello"}`,
		"--step-up-tool", stepUpTool, "--step-up-args", `{"text":"note"}`)
	t.Logf("client.mjs: %s", out)
	var r sdkReport
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("client.mjs output is not one JSON report (exit: %v): %v", err, jerr)
	}
	if !r.OK || err != nil {
		t.Fatalf("client.mjs ok = %v (exit: %v), error %q", r.OK, err, r.Error)
	}

	if r.Issuer != s.Issuer && r.Issuer != s.Issuer+"/" {
		t.Errorf("discovered issuer = %q, want %q", r.Issuer, s.Issuer)
	}
	if r.Registrations != 1 {
		t.Errorf("DCR registrations = %d, want 1", r.Registrations)
	}
	if len(r.Authorizations) != 2 {
		t.Fatalf("authorization requests = %d, want 2 (initial, step-up)", len(r.Authorizations))
	}
	for i, a := range r.Authorizations {
		if a.Resource != s.Resource {
			t.Errorf("authorization %d resource = %q, want %q", i, a.Resource, s.Resource)
		}
		if a.PKCE != "S256" {
			t.Errorf("authorization %d code_challenge_method = %q, want S256", i, a.PKCE)
		}
		if !a.ISSMatches {
			t.Errorf("authorization %d: RFC 9207 iss missing or not the issuer", i)
		}
		if !a.StateMatches {
			t.Errorf("authorization %d: state not echoed", i)
		}
	}
	if got := scopeSet(r.Authorizations[1].Scope); !got[writeScope] {
		t.Errorf("step-up authorization scope = %q, want it to include the challenged %q", r.Authorizations[1].Scope, writeScope)
	}

	if len(r.Tokens) != 2 {
		t.Fatalf("tokens received = %d, want 2 (initial, step-up)", len(r.Tokens))
	}
	for i, tok := range r.Tokens {
		if aud := audiences(tok.Aud); len(aud) != 1 || aud[0] != s.Resource {
			t.Errorf("token %d aud = %v, want exactly [%q]", i, tok.Aud, s.Resource)
		}
		if tok.Iss != s.Issuer {
			t.Errorf("token %d iss = %q, want %q", i, tok.Iss, s.Issuer)
		}
		if tok.Sub != userName {
			t.Errorf("token %d sub = %q, want %q", i, tok.Sub, userName)
		}
	}
	first, second := scopeSet(r.Tokens[0].Scope), scopeSet(r.Tokens[1].Scope)
	if !first[baseScope] || first[writeScope] {
		t.Errorf("first token scope = %q, want %q without %q (the 401 challenge's scope)", r.Tokens[0].Scope, baseScope, writeScope)
	}
	if !second[writeScope] {
		t.Errorf("step-up token scope = %q, want it to include %q", r.Tokens[1].Scope, writeScope)
	}

	if !contains(r.Tools, permitTool) {
		t.Errorf("tools/list = %v, want it to include %q", r.Tools, permitTool)
	}
	// A list holds what its token may call: the first token's hides the
	// step-up tool, the stepped-up token's shows it (README, Try it).
	if contains(r.Tools, stepUpTool) {
		t.Errorf("tools/list with the first token = %v, want it without %q", r.Tools, stepUpTool)
	}
	if !contains(r.ToolsAfter, stepUpTool) {
		t.Errorf("tools/list after the step-up = %v, want it to include %q", r.ToolsAfter, stepUpTool)
	}
	if len(r.Calls) != 2 {
		t.Fatalf("tool calls = %d, want 2", len(r.Calls))
	}
	if c := r.Calls[0]; !c.OK || c.Reauthorized {
		t.Errorf("permitted call %s: ok = %v, reauthorized = %v, error %q; want ok without re-authorization", c.Tool, c.OK, c.Reauthorized, c.Error)
	}
	if c := r.Calls[1]; !c.OK || !c.Reauthorized {
		t.Errorf("step-up call %s: ok = %v, reauthorized = %v, error %q; want ok after re-authorization", c.Tool, c.OK, c.Reauthorized, c.Error)
	}

	// The wire: a 401 with resource_metadata first, then exactly one 403
	// insufficient_scope for the step-up tool naming its scope.
	var saw401, saw403 int
	for _, h := range r.HTTP {
		switch {
		case h.Status == 401 && h.Path == "/mcp":
			saw401++
			if !strings.Contains(h.WWWAuthenticate, `resource_metadata="`) {
				t.Errorf("401 WWW-Authenticate = %q, want resource_metadata", h.WWWAuthenticate)
			}
		case h.Status == 403:
			saw403++
			if h.Tool != stepUpTool || !strings.Contains(h.WWWAuthenticate, `error="insufficient_scope"`) ||
				!strings.Contains(h.WWWAuthenticate, writeScope) {
				t.Errorf("403 for tool %q: WWW-Authenticate = %q, want insufficient_scope naming %q for %q",
					h.Tool, h.WWWAuthenticate, writeScope, stepUpTool)
			}
		case h.GrantType != "" && h.Resource != s.Resource:
			t.Errorf("token request (%s) resource = %q, want %q", h.GrantType, h.Resource, s.Resource)
		}
	}
	if saw401 == 0 {
		t.Errorf("no 401 challenge seen before authorization")
	}
	if saw403 != 1 {
		t.Errorf("403 insufficient_scope responses = %d, want 1", saw403)
	}
}
