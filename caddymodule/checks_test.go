package caddymodule

import (
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestWarnPlainHTTPListeners: plain http is allowed for loopback URLs
// only (the issuer's, a gateway's resource), so that passwords, codes and
// tokens stay on the machine; but Caddy binds a site address of localhost
// to every interface unless `bind` says otherwise, and anyone who reaches
// the port then uses the issuer and the gateway over plain http from the
// network, naming the loopback host in Host. Such a server is warned
// about, naming it, its listeners and the URLs; one bound to loopback
// (Caddyfile.example's bind 127.0.0.1) or a unix socket, and https URLs,
// are not.
func TestWarnPlainHTTPListeners(t *testing.T) {
	site := func(host string) caddyhttp.RouteList {
		return caddyhttp.RouteList{{MatcherSets: caddyhttp.MatcherSets{{&caddyhttp.MatchHost{host}}}, Terminal: true}}
	}
	app := &caddyhttp.App{Servers: map[string]*caddyhttp.Server{
		"everywhere":  {Listen: []string{":8080"}, Routes: site("localhost")},
		"bound":       {Listen: []string{"127.0.0.1:8081", "[::1]:8081"}, Routes: site("localhost")},
		"half":        {Listen: []string{"127.0.0.1:8082", "192.0.2.2:8082"}, Routes: site("127.0.0.1")},
		"unix":        {Listen: []string{"unix//run/caddy.sock"}, Routes: site("localhost")},
		"tls":         {Listen: []string{":8443"}, Routes: site("localhost")},
		"other host":  {Listen: []string{":8084"}, Routes: site("app.example.com")},
		"no matchers": {Listen: []string{":8085"}, Routes: caddyhttp.RouteList{{}}},
	}}
	urls := []string{
		"http://localhost:8080", "http://localhost:8080/mcp", "http://localhost:8081/mcp", "http://127.0.0.1:8082/mcp",
		"https://localhost:8443/mcp", "http://localhost:8084/mcp", "http://[::1]:8085/mcp",
	}
	core, logs := observer.New(zap.WarnLevel)
	warnPlainHTTPListeners(urls, app, zap.New(core))
	type warned struct {
		server string
		urls   string
	}
	var got []warned
	for _, e := range logs.All() {
		if !strings.Contains(e.Message, "bind 127.0.0.1") {
			t.Errorf("warning %q does not say to bind to loopback", e.Message)
		}
		var us []string
		for _, u := range e.ContextMap()["urls"].([]any) {
			us = append(us, u.(string))
		}
		got = append(got, warned{e.ContextMap()["server"].(string), strings.Join(us, " ")})
	}
	want := []warned{
		{"everywhere", "http://localhost:8080 http://localhost:8080/mcp"},
		{"half", "http://127.0.0.1:8082/mcp"},
		{"no matchers", "http://[::1]:8085/mcp"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("warned %q, want %q", got, want)
	}
}

// TestIssuerSiteWithoutHost: a site without a host (`http://:8080`,
// `https://`) alone in its server is laid out unwrapped, its directives'
// routes the server's own, and a directive with a matcher (`redir /old
// /new`) splits them, so mcp_issuer is in a later route than the first
// (a matcherless `header` before it). That site serves the issuer and
// loads; a site of the issuer's host without mcp_issuer, or with it only
// past the issuer's site, is still refused.
func TestIssuerSiteWithoutHost(t *testing.T) {
	const issuerURL = "http://127.0.0.1:29999"
	plain := func(m caddyhttp.MatcherSets, h ...caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Handlers: h}
	}
	site := func(m caddyhttp.MatcherSets, routes ...caddyhttp.Route) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: m, Terminal: true, Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.Subroute{Routes: routes}}}
	}
	header, redir := &headers.Handler{}, &caddyhttp.StaticResponse{}
	old := caddyhttp.MatcherSets{{caddyhttp.MatchPath{"/old"}}}
	host := caddyhttp.MatcherSets{{&caddyhttp.MatchHost{"127.0.0.1"}}}
	for _, tt := range []struct {
		name   string
		routes caddyhttp.RouteList
		ok     bool
	}{
		{"without a host, split by a matcher", caddyhttp.RouteList{plain(nil, header), plain(old, redir), plain(nil, &IssuerHandler{})}, true},
		{"without a host, no mcp_issuer", caddyhttp.RouteList{plain(nil, header), plain(old, redir), plain(nil, redir)}, false},
		{"a site of the host", caddyhttp.RouteList{site(host, plain(nil, header), plain(old, redir), plain(nil, &IssuerHandler{}))}, true},
		{"a site of the host without mcp_issuer", caddyhttp.RouteList{site(host, plain(nil, header)), plain(nil, &IssuerHandler{})}, false},
		{"past the site of the host", caddyhttp.RouteList{plain(nil, header), site(nil, plain(nil, redir)), plain(nil, &IssuerHandler{})}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			app := &caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": {Listen: []string{"127.0.0.1:29999"}, Routes: tt.routes}}}
			err := checkIssuerSite(issuerURL, app)
			if (err == nil) != tt.ok {
				t.Errorf("checkIssuerSite() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
