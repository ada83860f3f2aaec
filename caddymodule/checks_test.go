package caddymodule

import (
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
