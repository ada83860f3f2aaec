package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/intercept"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/logging"
	maphandler "github.com/caddyserver/caddy/v2/modules/caddyhttp/map"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/push"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/requestbody"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/templates"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/timeouts"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/tracing"
	"github.com/caddyserver/caddy/v2/modules/metrics"
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
	invoke := func(m caddyhttp.MatcherSets, handlers ...caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: append(handlers, &caddyhttp.Invoke{Name: "up"})}
	}
	intercepting := func(m caddyhttp.MatcherSets, routes ...caddyhttp.Route) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: []caddyhttp.MiddlewareHandler{
			&intercept.Intercept{HandleResponse: []caddyhttp.ResponseHandler{{Routes: routes}}},
		}}
	}
	proxyResponding := func(m caddyhttp.MatcherSets, routes ...caddyhttp.Route) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: []caddyhttp.MiddlewareHandler{
			&reverseproxy.Handler{HandleResponse: []caddyhttp.ResponseHandler{{Routes: routes}}},
		}}
	}
	errs := func(routes ...caddyhttp.Route) *caddyhttp.HTTPErrorConfig {
		return &caddyhttp.HTTPErrorConfig{Routes: routes}
	}
	does := func(h caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{Handlers: []caddyhttp.MiddlewareHandler{h}}
	}
	grouped := func(group string, m caddyhttp.MatcherSets, r caddyhttp.Route) caddyhttp.Route {
		r.Group, r.MatcherSets = group, m
		return r
	}
	strip := &rewrite.Rewrite{StripPathPrefix: "/v1"}
	notes := path("/notes/mcp", "/.well-known/oauth-protected-resource/notes/mcp")
	up := proxy(nil)
	named := map[string]*caddyhttp.Route{"up": &up}
	tests := []struct {
		name   string
		routes caddyhttp.RouteList
		want   []string // match descriptions of the unguarded proxies
		named  map[string]*caddyhttp.Route
		errors *caddyhttp.HTTPErrorConfig
	}{
		{"gateway without matcher", caddyhttp.RouteList{gw(nil), proxy(nil)}, nil, nil, nil},
		{"gateway and proxy in one route", caddyhttp.RouteList{{MatcherSets: notes, Handlers: []caddyhttp.MiddlewareHandler{&GatewayHandler{}, &reverseproxy.Handler{}}}}, nil, nil, nil},
		{"proxy on the gateway's matcher", caddyhttp.RouteList{gw(notes), proxy(notes)}, nil, nil, nil},
		{"proxy without matcher", caddyhttp.RouteList{gw(notes), proxy(nil)}, []string{""}, nil, nil},
		{"proxy on a prefix", caddyhttp.RouteList{gw(notes), proxy(path("/notes/*"))}, []string{`path ["/notes/*"]`}, nil, nil},
		{"proxy on a wider matcher", caddyhttp.RouteList{gw(path("/notes/mcp")), proxy(append(path("/notes/mcp"), caddyhttp.MatcherSet{caddyhttp.MatchPath{"/x"}}))}, []string{`path ["/notes/mcp"] or path ["/x"]`}, nil, nil},
		{"proxy before the gateway", caddyhttp.RouteList{proxy(nil), gw(nil)}, []string{""}, nil, nil},
		{"handle with gateway and proxy", caddyhttp.RouteList{sub(notes, false, gw(nil), proxy(nil)), sub(nil, false, proxy(nil))}, []string{""}, nil, nil},
		{"handle blocks and 404", caddyhttp.RouteList{sub(notes, false, gw(nil), proxy(nil)), sub(path("/files/mcp"), false, gw(nil), proxy(nil))}, nil, nil, nil},
		{"gateway's matcher inside a handle", caddyhttp.RouteList{gw(notes), sub(notes, false, proxy(nil))}, nil, nil, nil},
		{"other site without gateway", caddyhttp.RouteList{
			sub(host("mcp.example.com"), true, gw(nil), proxy(nil)),
			sub(host("app.example.com"), true, proxy(nil)),
		}, nil, nil, nil},
		{"site with a bypass", caddyhttp.RouteList{
			sub(host("app.example.com"), true, proxy(nil)),
			sub(host("mcp.example.com"), true, gw(notes), proxy(nil)),
		}, []string{`host ["mcp.example.com"]`}, nil, nil},
		{"no gateway at all", caddyhttp.RouteList{proxy(nil)}, nil, nil, nil},
		{name: "invoke after the gateway", routes: caddyhttp.RouteList{invoke(notes, &GatewayHandler{}), sub(nil, false)}, named: named},
		{name: "invoke without the gateway", routes: caddyhttp.RouteList{invoke(notes, &GatewayHandler{}), sub(nil, false, invoke(nil))},
			want: []string{"invoke up"}, named: named},
		{name: "invoke in a handle of its own", routes: caddyhttp.RouteList{sub(notes, false, gw(nil), invoke(nil)), sub(nil, false, invoke(nil))},
			want: []string{"invoke up"}, named: named},
		{name: "invoke of a route with a subroute", routes: caddyhttp.RouteList{gw(notes), invoke(nil)}, want: []string{`invoke up > path ["/x"]`},
			named: map[string]*caddyhttp.Route{"up": {Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.Subroute{Routes: caddyhttp.RouteList{proxy(path("/x"))}}}}}},
		{name: "invoke of itself", routes: caddyhttp.RouteList{gw(notes), invoke(nil)},
			named: map[string]*caddyhttp.Route{"up": {Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.Invoke{Name: "up"}}}}},
		{name: "invoke of a missing route", routes: caddyhttp.RouteList{gw(notes), invoke(nil)}},
		{name: "proxy in handle_errors", routes: caddyhttp.RouteList{sub(notes, false, gw(nil), proxy(nil))},
			want: []string{"handle_errors"}, errors: errs(proxy(nil))},
		{name: "gateway in handle_errors", routes: caddyhttp.RouteList{sub(notes, false, gw(nil), proxy(nil))}, errors: errs(gw(nil), proxy(nil))},
		{name: "invoke in handle_errors", routes: caddyhttp.RouteList{sub(notes, false, gw(nil), invoke(nil))},
			want: []string{"handle_errors > invoke up"}, named: named, errors: errs(invoke(nil))},
		{name: "handle_errors of a site with a gateway", routes: caddyhttp.RouteList{sub(host("mcp.example.com"), true, gw(notes), proxy(notes))},
			want: []string{`handle_errors > host ["mcp.example.com"]`}, errors: errs(sub(host("mcp.example.com"), true, proxy(nil)))},
		{name: "handle_errors of a site without a gateway", routes: caddyhttp.RouteList{
			sub(host("mcp.example.com"), true, gw(notes), proxy(notes)),
			sub(host("app.example.com"), true, proxy(nil)),
		}, errors: errs(sub(host("app.example.com"), true, proxy(nil)))},
		{name: "handle_errors without any gateway", routes: caddyhttp.RouteList{proxy(nil)}, errors: errs(proxy(nil))},
		// handle_response routes (review s11-config F5): an intercept
		// before the gateway handles its refusals, a proxy there gets
		// the refused request.
		{name: "intercept before the gateway", routes: caddyhttp.RouteList{intercepting(nil, proxy(nil)), gw(notes), proxy(notes)},
			want: []string{"intercept handle_response"}},
		{name: "intercept after the gateway", routes: caddyhttp.RouteList{gw(nil), intercepting(nil, proxy(nil)), proxy(nil)}},
		{name: "intercept before the gateway, gateway in its routes", routes: caddyhttp.RouteList{intercepting(nil, gw(nil), proxy(nil)), gw(notes), proxy(notes)}},
		{name: "reverse_proxy handle_response, unguarded", routes: caddyhttp.RouteList{gw(notes), proxyResponding(nil, proxy(nil))},
			want: []string{"", "reverse_proxy handle_response"}},
		{name: "reverse_proxy handle_response, guarded", routes: caddyhttp.RouteList{gw(notes), proxyResponding(notes, proxy(nil))}},
		// A subroute's own error routes (review s11-fresh F5).
		{name: "proxy in a subroute's errors", routes: caddyhttp.RouteList{{MatcherSets: notes, Handlers: []caddyhttp.MiddlewareHandler{
			&caddyhttp.Subroute{Routes: caddyhttp.RouteList{gw(nil), proxy(nil)}, Errors: errs(proxy(nil))},
		}}}, want: []string{`path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"] > errors`}},
		{name: "gateway in a subroute's errors", routes: caddyhttp.RouteList{{MatcherSets: notes, Handlers: []caddyhttp.MiddlewareHandler{
			&caddyhttp.Subroute{Routes: caddyhttp.RouteList{gw(nil), proxy(nil)}, Errors: errs(gw(nil), proxy(nil))},
		}}}},
		// A handler that may change the request between a gateway and a
		// proxy on its matcher (review s13-ops F1): a request that missed
		// the gateway's matcher may match the proxy's once rewritten
		// (POST /v1/notes/mcp, then handle_path /v1/* strips /v1).
		{name: "handle_path strips a prefix", routes: caddyhttp.RouteList{gw(notes), proxy(notes), sub(path("/v1/*"), false, does(strip), proxy(notes))},
			want: []string{`path ["/v1/*"] > path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"]`}},
		{name: "route: gateway, uri strip_prefix, proxy", routes: caddyhttp.RouteList{sub(nil, false, gw(notes), does(strip), proxy(notes))},
			want: []string{`path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"]`}},
		{name: "rewrite in a route block before the proxy", routes: caddyhttp.RouteList{gw(notes), sub(nil, false, does(strip)), proxy(notes)},
			want: []string{`path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"]`}},
		{name: "request_header between them", routes: caddyhttp.RouteList{gw(notes), does(&headers.Handler{Request: &headers.HeaderOps{Delete: []string{"X-A"}}}), proxy(notes)},
			want: []string{`path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"]`}},
		{name: "vars between them", routes: caddyhttp.RouteList{gw(notes), does(&caddyhttp.VarsMiddleware{"a": "b"}), proxy(notes)},
			want: []string{`path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"]`}},
		{name: "rewrite before the gateway", routes: caddyhttp.RouteList{does(strip), gw(notes), proxy(notes)}},
		{name: "rewrite after a gateway without matcher", routes: caddyhttp.RouteList{gw(nil), does(strip), proxy(notes)}},
		{name: "rewrite in the proxy's own route", routes: caddyhttp.RouteList{gw(notes), {MatcherSets: notes, Handlers: []caddyhttp.MiddlewareHandler{strip, &reverseproxy.Handler{}}}}},
		// Route groups (JSON "group"): a route runs only if no route of
		// its group matched before it, in any route list of the request:
		// a grouped gateway's route may be skipped, so it guards nothing
		// after it.
		{name: "gateway in a group after a route of the group", routes: caddyhttp.RouteList{
			grouped("g", path("/health"), does(&caddyhttp.VarsMiddleware{"a": "b"})), grouped("g", nil, gw(nil)), proxy(nil)},
			want: []string{""}},
		{name: "gateway on a matcher in a group", routes: caddyhttp.RouteList{
			grouped("g", path("/health"), does(&caddyhttp.VarsMiddleware{"a": "b"})), grouped("g", nil, gw(notes)), proxy(notes)},
			want: []string{`path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"]`}},
		{name: "gateway and proxy in one grouped route", routes: caddyhttp.RouteList{
			grouped("g", path("/health"), does(&caddyhttp.VarsMiddleware{"a": "b"})),
			{Group: "g", Handlers: []caddyhttp.MiddlewareHandler{&GatewayHandler{}, &reverseproxy.Handler{}}}}},
		// A terminal route inside a site (JSON "terminal" on a nested
		// route) ends its route list; it is no site of its own.
		{name: "terminal route inside a site", routes: caddyhttp.RouteList{
			sub(host("mcp.example.com"), true, gw(notes), proxy(notes), sub(path("/api/*"), true, proxy(nil)))},
			want: []string{`host ["mcp.example.com"] > path ["/api/*"]`}},
		{name: "terminal route after a gateway of the server's own routes", routes: caddyhttp.RouteList{
			gw(notes), proxy(notes), sub(path("/api/*"), true, proxy(nil))},
			want: []string{`path ["/api/*"]`}},
		{name: "terminal route inside a site, guarded", routes: caddyhttp.RouteList{
			sub(host("mcp.example.com"), true, gw(nil), sub(path("/api/*"), true, proxy(nil)))}},
		{name: "encode and response headers between them", routes: caddyhttp.RouteList{gw(notes), does(&encode.Encode{}), does(&headers.Handler{Response: &headers.RespHeaderOps{HeaderOps: &headers.HeaderOps{Delete: []string{"Server"}}}}), proxy(notes)}},
	}
	// README's list of the handlers known to leave the request as it
	// was, each between the gateway and the proxy: no warning; a handler
	// outside it (map, one of a plugin) counts as one that may change
	// the request.
	for name, h := range map[string]caddyhttp.MiddlewareHandler{
		"request_body": &requestbody.RequestBody{MaxSize: 1 << 20},
		"file_server":  &fileserver.FileServer{},
		"respond":      &caddyhttp.StaticResponse{},
		"error":        &caddyhttp.StaticError{},
		"templates":    &templates.Templates{},
		"push":         &push.Handler{},
		"tracing":      &tracing.Tracing{},
		"log_append":   &logging.LogAppend{},
		"metrics":      &metrics.Metrics{},
		"timeouts":     &timeouts.Timeouts{},
	} {
		tests = append(tests, struct {
			name   string
			routes caddyhttp.RouteList
			want   []string
			named  map[string]*caddyhttp.Route
			errors *caddyhttp.HTTPErrorConfig
		}{name: name + " between them", routes: caddyhttp.RouteList{gw(notes), does(h), proxy(notes)}})
	}
	for name, h := range map[string]caddyhttp.MiddlewareHandler{
		"map":              &maphandler.Handler{Source: "{http.request.uri.path}", Destinations: []string{"{x}"}},
		"a plugin handler": pluginHandler{},
	} {
		tests = append(tests, struct {
			name   string
			routes caddyhttp.RouteList
			want   []string
			named  map[string]*caddyhttp.Route
			errors *caddyhttp.HTTPErrorConfig
		}{name: name + " between them", routes: caddyhttp.RouteList{gw(notes), does(h), proxy(notes)},
			want: []string{`path ["/notes/mcp","/.well-known/oauth-protected-resource/notes/mcp"]`}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := &caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": {Routes: tt.routes, NamedRoutes: tt.named, Errors: tt.errors}}}
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

// pluginHandler stands for a handler the layout check does not know.
type pluginHandler struct{}

func (pluginHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

// TestCookieProxies: mcp_issuer takes its session cookie out of the
// requests it passes on, and a gateway out of those it forwards, but a
// request an mcp_issuer's matcher (or the handle block it is in) keeps
// from it reaches the handlers after it with the cookie, which the
// browser sends to every path of the issuer's host: a reverse_proxy there
// gets the signed-in user's session. Caddy warns of each such proxy in a
// site with an issuer, leaving out those it warns of as bypassing a
// gateway; the layouts README shows (the issuer without a matcher, first
// in its site) get no warning.
func TestCookieProxies(t *testing.T) {
	path := func(p ...string) caddyhttp.MatcherSets {
		return caddyhttp.MatcherSets{{caddyhttp.MatchPath(p)}}
	}
	host := func(h string) caddyhttp.MatcherSets {
		return caddyhttp.MatcherSets{{caddyhttp.MatchHost{h}}}
	}
	route := func(m caddyhttp.MatcherSets, h ...caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: h}
	}
	sub := func(m caddyhttp.MatcherSets, terminal bool, routes ...caddyhttp.Route) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Terminal: terminal, Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.Subroute{Routes: routes}}}
	}
	iss := func() caddyhttp.MiddlewareHandler { return &IssuerHandler{} }
	gw := func() caddyhttp.MiddlewareHandler { return &GatewayHandler{} }
	proxy := func() caddyhttp.MiddlewareHandler {
		return &reverseproxy.Handler{Upstreams: reverseproxy.UpstreamPool{{Dial: "127.0.0.1:3001"}}}
	}
	auth, mcp := path("/auth/*"), path("/mcp")
	for _, tt := range []struct {
		name   string
		routes caddyhttp.RouteList
		want   []string // match descriptions of the proxies warned of
	}{
		{"issuer without a matcher, then the application", caddyhttp.RouteList{route(nil, iss()), route(nil, proxy())}, nil},
		{"issuer and proxy in one route", caddyhttp.RouteList{route(nil, iss(), proxy())}, nil},
		{"issuer on a matcher, the application without", caddyhttp.RouteList{route(auth, iss()), route(nil, proxy())}, []string{""}},
		{"issuer in a handle block, the application in another", caddyhttp.RouteList{sub(auth, false, route(nil, iss())), sub(nil, false, route(nil, proxy()))}, []string{""}},
		{"issuer on a matcher, the application after a gateway", caddyhttp.RouteList{sub(auth, false, route(nil, iss())), sub(nil, false, route(nil, gw()), route(nil, proxy()))}, nil},
		// Warned of as a gateway bypass already (unguardedProxies).
		{"issuer on a matcher, a proxy bypassing a gateway", caddyhttp.RouteList{route(auth, iss()), route(mcp, gw()), route(nil, proxy())}, nil},
		{"issuer on a matcher, the application on the same one", caddyhttp.RouteList{route(auth, iss()), route(auth, proxy())}, nil},
		{"site of the issuer's host", caddyhttp.RouteList{
			sub(host("app.example.com"), true, route(nil, proxy())),
			sub(host("as.example.com"), true, route(path("/authorize", "/token"), iss()), route(nil, proxy())),
		}, []string{`host ["as.example.com"]`}},
		{"another site", caddyhttp.RouteList{
			sub(host("as.example.com"), true, route(auth, iss())),
			sub(host("app.example.com"), true, route(nil, proxy())),
		}, nil},
		{"no issuer", caddyhttp.RouteList{route(nil, proxy())}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			app := &caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": {Routes: tt.routes}}}
			var got []string
			for _, p := range cookieProxies(app) {
				got = append(got, p.match)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("cookieProxies() matches = %q, want %q", got, tt.want)
			}
			core, logs := observer.New(zap.WarnLevel)
			warnCookieProxies(app, zap.New(core))
			if n := logs.FilterMessageSnippet("reverse_proxy reachable without mcp_issuer").Len(); n != len(tt.want) {
				t.Errorf("warnings = %d, want %d", n, len(tt.want))
			}
		})
	}
}

// TestHostCopies: vars and request_header, which Caddy orders before
// mcp_gateway, copy the Host the client sent when their values hold a
// host placeholder ({host}, {labels.N}, {hostport}, {port}, the TLS
// server name): the gateway sets the resource's host for the handlers
// after it only (TestHostCopiedBeforeGateway runs it), so in a site
// answering more than one host an upstream routing on the copy acts for
// the host the client named. Caddy warns of each such handler in a site
// with a gateway that runs before one; one after the gateway, one
// copying something else, one in a site without a gateway, and one in
// a site of one host copying the host (not the TLS server name), which
// every request of the site names, are not warned of.
func TestHostCopies(t *testing.T) {
	host := func(h string) caddyhttp.MatcherSets {
		return caddyhttp.MatcherSets{{caddyhttp.MatchHost{h}}}
	}
	route := func(h ...caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{Handlers: h}
	}
	sub := func(m caddyhttp.MatcherSets, routes ...caddyhttp.Route) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Terminal: true, Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.Subroute{Routes: routes}}}
	}
	matched := func(m caddyhttp.MatcherSets, h ...caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: h}
	}
	vars := func(v string) caddyhttp.MiddlewareHandler { return &caddyhttp.VarsMiddleware{"tenant": v} }
	reqHeader := func(v string) caddyhttp.MiddlewareHandler {
		return &headers.Handler{Request: &headers.HeaderOps{Set: map[string][]string{"X-Tenant": {v}}}}
	}
	replaced := &headers.Handler{Request: &headers.HeaderOps{Replace: map[string][]headers.Replacement{"X-Tenant": {{Search: "x", Replace: "{http.request.hostport}"}}}}}
	gw, proxy := &GatewayHandler{}, &reverseproxy.Handler{}
	for _, tt := range []struct {
		name   string
		routes caddyhttp.RouteList
		want   []string // the handlers warned of
	}{
		{"vars of a host label", caddyhttp.RouteList{route(vars("{http.request.host.labels.2}")), route(gw), route(proxy)}, []string{"vars"}},
		{"request_header of the host", caddyhttp.RouteList{route(reqHeader("{http.request.host}")), route(gw), route(proxy)}, []string{"request_header"}},
		{"request_header replacing with the hostport", caddyhttp.RouteList{route(replaced), route(gw), route(proxy)}, []string{"request_header"}},
		{"vars of the TLS server name", caddyhttp.RouteList{route(vars("{http.request.tls.server_name}")), route(gw), route(proxy)}, []string{"vars"}},
		{"vars of the port", caddyhttp.RouteList{route(vars("{http.request.port}")), route(gw), route(proxy)}, []string{"vars"}},
		{"vars of something else", caddyhttp.RouteList{route(vars("{http.request.uri.path}")), route(reqHeader("static")), route(gw), route(proxy)}, nil},
		{"after the gateway", caddyhttp.RouteList{route(gw, vars("{http.request.host}"), reqHeader("{http.request.host}"), proxy)}, nil},
		{"response header of the host", caddyhttp.RouteList{route(&headers.Handler{Response: &headers.RespHeaderOps{HeaderOps: &headers.HeaderOps{Set: map[string][]string{"X-Host": {"{http.request.host}"}}}}}), route(gw), route(proxy)}, nil},
		{"another site without a gateway", caddyhttp.RouteList{
			sub(host("mcp.example.com"), route(gw), route(proxy)),
			sub(host("app.example.com"), route(vars("{http.request.host}")), route(proxy)),
		}, nil},
		// A site of one host: every request names it, so a copy of the
		// host is the resource's; the TLS server name may differ.
		{"a site of one host", caddyhttp.RouteList{sub(host("mcp.example.com"), route(vars("{http.request.host.labels.2}")), route(gw), route(proxy))}, nil},
		{"a site of one host, the server name", caddyhttp.RouteList{sub(host("mcp.example.com"), route(reqHeader("{http.request.tls.server_name}")), route(gw), route(proxy))}, []string{"request_header"}},
		{"a site of two hosts", caddyhttp.RouteList{sub(caddyhttp.MatcherSets{{caddyhttp.MatchHost{"a.example.com", "b.example.com"}}}, route(vars("{http.request.host}")), route(gw), route(proxy))}, []string{"vars"}},
		{"a wildcard site", caddyhttp.RouteList{sub(host("*.example.com"), route(vars("{http.request.host.labels.2}")), route(gw), route(proxy))}, []string{"vars"}},
		// A route's matchers run before its handlers: a regexp capture
		// of the host ({re.tenant.1}) in the gateway's own route holds
		// the client's.
		{"header_regexp of Host", caddyhttp.RouteList{matched(caddyhttp.MatcherSets{{&caddyhttp.MatchHeaderRE{"host": {Name: "tenant", Pattern: "^(.+)$"}}}}, gw, proxy)}, []string{"header_regexp"}},
		{"vars_regexp of a host label", caddyhttp.RouteList{matched(caddyhttp.MatcherSets{{caddyhttp.MatchVarsRE{"{http.request.host.labels.2}": {Name: "tenant", Pattern: "^(.+)$"}}}}, gw, proxy)}, []string{"vars_regexp"}},
		{"vars_regexp of the TLS server name, a site of one host", caddyhttp.RouteList{sub(host("mcp.example.com"), matched(caddyhttp.MatcherSets{{&caddyhttp.MatchVarsRE{"{http.request.tls.server_name}": {Pattern: "^(.+)$"}}}}, gw, proxy))}, []string{"vars_regexp"}},
		{"header_regexp of Host, a site of one host", caddyhttp.RouteList{sub(host("mcp.example.com"), matched(caddyhttp.MatcherSets{{&caddyhttp.MatchHeaderRE{"Host": {Pattern: "^(.+)$"}}}}, gw, proxy))}, nil},
		{"header_regexp of another field", caddyhttp.RouteList{matched(caddyhttp.MatcherSets{{&caddyhttp.MatchHeaderRE{"X-Tenant": {Pattern: "^(.+)$"}}}}, gw, proxy)}, nil},
		{"header_regexp of Host after the gateway", caddyhttp.RouteList{route(gw), matched(caddyhttp.MatcherSets{{&caddyhttp.MatchHeaderRE{"Host": {Pattern: "^(.+)$"}}}}, proxy)}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			app := &caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": {Routes: tt.routes}}}
			var got []string
			for _, c := range hostCopies(app) {
				got = append(got, c.copies)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("hostCopies() = %q, want %q", got, tt.want)
			}
			if p := unguardedProxies(app); len(p) != 0 {
				t.Errorf("unguardedProxies() = %v, want none", p)
			}
			core, logs := observer.New(zap.WarnLevel)
			warnHostCopies(app, zap.New(core))
			if n := logs.FilterMessageSnippet("copies the client's host before mcp_gateway").Len(); n != len(tt.want) {
				t.Errorf("warnings = %d, want %d", n, len(tt.want))
			}
		})
	}
}

// TestWarnLenientProxies: a server that trusts proxies without
// trusted_proxies_strict takes the client's address from the leftmost
// X-Forwarded-For entry, which the client writes, so the brute-force
// limits and audit events would count whatever address it names: Caddy
// warns, naming the server; a strict server, or one trusting no proxy,
// gets no warning.
func TestWarnLenientProxies(t *testing.T) {
	ranges := json.RawMessage(`{"source":"static","ranges":["10.0.0.0/8"]}`)
	app := &caddyhttp.App{Servers: map[string]*caddyhttp.Server{
		"srv0": {TrustedProxiesRaw: ranges},
		"srv1": {TrustedProxiesRaw: ranges, TrustedProxiesStrict: 1},
		"srv2": {},
		"srv3": {TrustedProxiesRaw: ranges},
	}}
	core, logs := observer.New(zap.WarnLevel)
	warnLenientProxies(app, zap.New(core))
	var servers []string
	for _, e := range logs.All() {
		if !strings.Contains(e.Message, "trusted_proxies_strict") {
			t.Errorf("warning %q does not name trusted_proxies_strict", e.Message)
		}
		servers = append(servers, e.ContextMap()["server"].(string))
	}
	if want := []string{"srv0", "srv3"}; !slices.Equal(servers, want) {
		t.Errorf("warned for servers %v, want %v", servers, want)
	}
}

// TestWarnSharedAudience: two gateways for different resources that take
// tokens of one remote issuer by the same audience take each other's
// tokens (the resource is no longer what tells them apart, RFC 8707), so
// Caddy warns, naming both; so does a gateway whose audience is another
// one's resource, which is what that one's tokens name; one resource in
// two sites (one snippet), or distinct audiences or issuers, get no
// warning.
func TestWarnSharedAudience(t *testing.T) {
	gw := func(res, iss, aud string) *GatewayHandler {
		return &GatewayHandler{Resource: res, Issuer: iss, Audience: aud}
	}
	const idp, other = "https://idp.example.com", "https://idp2.example.com"
	core, logs := observer.New(zap.WarnLevel)
	warnSharedAudiences([]*GatewayHandler{
		gw("https://a.example.com/one/mcp", idp, "api://shared"),
		gw("https://a.example.com/two/mcp", idp, "api://shared"),
		gw("https://a.example.com/one/mcp", idp, "api://shared"), // the same resource again
		gw("https://a.example.com/three/mcp", idp, "api://three"),
		gw("https://a.example.com/four/mcp", other, "api://shared"),
		gw("https://a.example.com/five/mcp", idp, ""),
		gw("https://a.example.com/six/mcp", idp, ""),
		gw("https://a.example.com/seven/mcp", idp, "https://a.example.com/five/mcp"),
		gw("https://a.example.com/eight/mcp", other, "https://a.example.com/six/mcp"),
	}, zap.New(core))
	var got []string
	for _, e := range logs.All() {
		got = append(got, fmt.Sprint(e.ContextMap()["resources"]))
	}
	if want := []string{"[https://a.example.com/one/mcp https://a.example.com/two/mcp]",
		"[https://a.example.com/five/mcp https://a.example.com/seven/mcp]"}; !slices.Equal(got, want) {
		t.Errorf("warned for %q, want %q", got, want)
	}
}
