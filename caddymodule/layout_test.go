package caddymodule

import (
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func TestUnguardedProxies(t *testing.T) {
	path := func(p ...string) caddyhttp.MatcherSets {
		return caddyhttp.MatcherSets{{caddyhttp.MatchPath(p)}}
	}
	host := func(h string) caddyhttp.MatcherSets {
		return caddyhttp.MatcherSets{{caddyhttp.MatchHost{h}}}
	}
	gw := func(m caddyhttp.MatcherSets) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: []caddyhttp.MiddlewareHandler{&GatewayHandler{}}}
	}
	proxy := func(m caddyhttp.MatcherSets) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: []caddyhttp.MiddlewareHandler{
			&reverseproxy.Handler{Upstreams: reverseproxy.UpstreamPool{{Dial: "127.0.0.1:3001"}}},
		}}
	}
	sub := func(m caddyhttp.MatcherSets, terminal bool, routes ...caddyhttp.Route) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Terminal: terminal, Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.Subroute{Routes: routes}}}
	}
	notes := path("/notes/mcp", "/.well-known/oauth-protected-resource/notes/mcp")
	tests := []struct {
		name   string
		routes caddyhttp.RouteList
		want   []string // match descriptions of the unguarded proxies
	}{
		{"gateway without matcher", caddyhttp.RouteList{gw(nil), proxy(nil)}, nil},
		{"gateway and proxy in one route", caddyhttp.RouteList{{MatcherSets: notes, Handlers: []caddyhttp.MiddlewareHandler{&GatewayHandler{}, &reverseproxy.Handler{}}}}, nil},
		{"proxy on the gateway's matcher", caddyhttp.RouteList{gw(notes), proxy(notes)}, nil},
		{"proxy without matcher", caddyhttp.RouteList{gw(notes), proxy(nil)}, []string{""}},
		{"proxy on a prefix", caddyhttp.RouteList{gw(notes), proxy(path("/notes/*"))}, []string{`path ["/notes/*"]`}},
		{"proxy on a wider matcher", caddyhttp.RouteList{gw(path("/notes/mcp")), proxy(append(path("/notes/mcp"), caddyhttp.MatcherSet{caddyhttp.MatchPath{"/x"}}))}, []string{`path ["/notes/mcp"] or path ["/x"]`}},
		{"proxy before the gateway", caddyhttp.RouteList{proxy(nil), gw(nil)}, []string{""}},
		{"handle with gateway and proxy", caddyhttp.RouteList{sub(notes, false, gw(nil), proxy(nil)), sub(nil, false, proxy(nil))}, []string{""}},
		{"handle blocks and 404", caddyhttp.RouteList{sub(notes, false, gw(nil), proxy(nil)), sub(path("/files/mcp"), false, gw(nil), proxy(nil))}, nil},
		{"gateway's matcher inside a handle", caddyhttp.RouteList{gw(notes), sub(notes, false, proxy(nil))}, nil},
		{"other site without gateway", caddyhttp.RouteList{
			sub(host("mcp.example.com"), true, gw(nil), proxy(nil)),
			sub(host("app.example.com"), true, proxy(nil)),
		}, nil},
		{"site with a bypass", caddyhttp.RouteList{
			sub(host("app.example.com"), true, proxy(nil)),
			sub(host("mcp.example.com"), true, gw(notes), proxy(nil)),
		}, []string{`host ["mcp.example.com"]`}},
		{"no gateway at all", caddyhttp.RouteList{proxy(nil)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := &caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": {Routes: tt.routes}}}
			var got []string
			for _, p := range unguardedProxies(app) {
				got = append(got, p.match)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("unguardedProxies() matches = %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("unguardedProxies()[%d].match = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}
