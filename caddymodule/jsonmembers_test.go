package caddymodule

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestJSONMemberTwiceRefused: a JSON configuration that names a member
// of one object twice, in any case, is refused, as the Caddyfile refuses
// a subdirective given twice: encoding/json kept the last, and matches
// field names without case, so {"pin_tools": "approved", "PIN_TOOLS":
// "off"} loaded with pinning off. A map's keys (scopes, provider
// groups) are compared exactly.
func TestJSONMemberTwiceRefused(t *testing.T) {
	gateway := []struct {
		json string
		err  string // "" to load
	}{
		{`{"resource":"https://m.example/mcp","pin_tools":"approved","PIN_TOOLS":"off"}`, `member "PIN_TOOLS" given twice (as "pin_tools" before)`},
		{`{"resource":"https://m.example/mcp","pin_tools":"approved","pin_tools":"off"}`, `member "pin_tools" given twice`},
		{`{"resource":"https://m.example/mcp","require_dpop":true,"Require_DPoP":false}`, `member "Require_DPoP" given twice`},
		{`{"resource":"https://m.example/mcp","ſcopes":["a"],"scopes":["read"]}`, `member "scopes" given twice (as "ſcopes" before)`},
		{`{"resource":"https://m.example/mcp","tools":[{"match":"x","scopes":["admin"],"Scopes":[]}]}`, `/tools/0: member "Scopes" given twice`},
		{`{"resource":"https://m.example/mcp","tools":[{"match":"x","args":[{"pointer":"/a","predicate":"equals","values":["a"],"values":["b"]}]}]}`, `/tools/0/args/0: member "values" given twice`},
		{`{"resource":"https://m.example/mcp","issuer":"https://a.example","introspection":{"client_id":"g","cache":"1m","cache":"1h"}}`, `/introspection: member "cache" given twice`},
		{`{"resource":"https://m.example/mcp","scope_implies":{"admin":["read"],"admin":[]}}`, `/scope_implies: member "admin" given twice`},
		// Keys of a map differing in case are two keys.
		{`{"resource":"https://m.example/mcp","scope_implies":{"admin":["read"],"Admin":["write"]}}`, ""},
		{`{"resource":"https://m.example/mcp","pin_tools":"approved","tools":[{"match":"x","max_depth":2}]}`, ""},
		{`{"resource":"https://m.example/mcp","pin_toolz":"off"}`, "unknown field"},
	}
	for _, tt := range gateway {
		var h GatewayHandler
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &h)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("gateway %s: %v, want %q", tt.json, err, tt.err)
		}
	}
	var h GatewayHandler
	if err := caddy.StrictUnmarshalJSON([]byte(gateway[len(gateway)-2].json), &h); err != nil || h.PinTools != "approved" || h.Tools[0].MaxDepth != 2 {
		t.Errorf("gateway decoded as %+v, %v", h, err)
	}
	app := []struct {
		json string
		err  string
	}{
		{`{"issuer":"https://a.example","disable_registration":true,"Disable_Registration":false}`, `member "Disable_Registration" given twice`},
		{`{"issuer":"https://a.example","users":[{"username":"alice","password_hash":"x","groups":["staff"],"groups":["admins"]}]}`, `/users/0: member "groups" given twice`},
		{`{"issuer":"https://a.example","identity_providers":[{"name":"corp","allowed_email_domains":["example.com"],"allowed_email_domains":[]}]}`, `/identity_providers/0: member "allowed_email_domains" given twice`},
		{`{"issuer":"https://a.example","identity_providers":[{"name":"corp","recheck":"1h","RECHECK":"1000h"}]}`, `member "RECHECK" given twice`},
		{`{"issuer":"https://a.example","storage":{"module":"memory"},"Storage":{"module":"bolt"}}`, `member "Storage" given twice`},
		{`{"issuer":"https://a.example","identity_providers":[{"name":"corp","group_map":{"Admins":["a"],"admins":["b"]}}]}`, ""},
	}
	for _, tt := range app {
		var a App
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &a)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("app %s: %v, want %q", tt.json, err, tt.err)
		}
	}

	// As Caddy loads a whole configuration (caddy validate, /load). It
	// reads a handler's configuration into a map first (to find its
	// module name), which keeps the last of two members of one name: only
	// names differing in case arrive here. An app's arrives as written.
	for _, tt := range []struct{ app, gateway, err string }{
		{``, `,"pin_tools":"approved","PIN_TOOLS":"off"`, `member "pin_tools" given twice (as "PIN_TOOLS" before)`},
		{`,"disable_registration":true,"disable_registration":false`, ``, `member "disable_registration" given twice`},
		{`,"disable_registration":true`, `,"pin_tools":"approved"`, ""},
	} {
		cfg := fmt.Sprintf(`{"admin":{"disabled":true},"apps":{
			"mcp_auth":{"issuer":%q,"storage":{"module":"memory"}%s},
			"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[
				{"handler":"mcp_issuer"},
				{"handler":"mcp_gateway","resource":%q%s},
				{"handler":"static_response","body":"upstream"}]}]}}}}}`, testIssuer, tt.app, gatewayResource, tt.gateway)
		var c caddy.Config
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			t.Fatal(err)
		}
		t.Setenv("XDG_DATA_HOME", t.TempDir())
		t.Setenv("XDG_CONFIG_HOME", t.TempDir())
		err := caddy.Validate(&c)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Validate(%s %s) = %v, want %q", tt.app, tt.gateway, err, tt.err)
		}
	}
}
