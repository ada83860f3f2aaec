package caddymodule

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(IssuerHandler{})
	httpcaddyfile.RegisterHandlerDirective("mcp_issuer", parseIssuerHandler)
	// OAuth endpoints must stay reachable without other credentials, so the
	// issuer answers before any authentication directive: before
	// basicauth, the deprecated spelling of basic_auth, which Caddy still
	// reads and orders first (before basic_auth alone, a site writing it
	// put every OAuth endpoint behind its password).
	httpcaddyfile.RegisterDirectiveOrder("mcp_issuer", httpcaddyfile.Before, "basicauth")
}

// IssuerHandler serves the mcp_auth app's authorization server endpoints
// (metadata, authorize, login, consent, token, ...) and passes every other
// request on.
type IssuerHandler struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (IssuerHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_issuer",
		New: func() caddy.Module { return new(IssuerHandler) },
	}
}

// Provision finds the mcp_auth app.
func (h *IssuerHandler) Provision(ctx caddy.Context) error {
	app, err := authApp(ctx, "mcp_issuer")
	if err != nil {
		return err
	}
	h.app = app
	return nil
}

// errNotRunning answers requests that arrive when the mcp_auth app did not
// start: the config failed to load and is being taken down.
var errNotRunning = errors.New("the mcp_auth app is not running")

// notRunning answers such a request 503 with Retry-After, as the issuer's
// and the gateway's other 503s: Caddy keeps the running configuration,
// which answers a retry.
func notRunning(w http.ResponseWriter) error {
	w.Header().Set("Retry-After", "1")
	return caddyhttp.Error(http.StatusServiceUnavailable, errNotRunning)
}

// authApp returns the config's mcp_auth app, explaining how to add it when
// it is missing.
func authApp(ctx caddy.Context, who string) (*App, error) {
	v, err := ctx.AppIfConfigured("mcp_auth")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("%s needs the mcp_auth app: add a global option block `{ mcp_auth { issuer <url> } }` to the Caddyfile", who)
	}
	if err != nil {
		return nil, err
	}
	return v.(*App), nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *IssuerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Caddy starts apps in no particular order: wait for the issuer.
	if !h.app.started(r.Context()) {
		return notRunning(w)
	}
	if h.app.iss.Match(r) {
		h.app.iss.ServeHTTP(w, clientAddress(r))
		return nil
	}
	passed := h.app.iss.PassedOn(r)
	err := next.ServeHTTP(w, passed)
	if passed != r {
		// Caddy runs the site's error routes (handle_errors) on r, not
		// on the copy next got without the session cookie, and so do
		// the handlers before this one once it returns, whatever the
		// answer (an intercept written before mcp_issuer in a route): a
		// route that proxies to an error-page service would get the
		// cookie, and the credentials a gateway after this one took out
		// of the copy's header for the same reason (the access token,
		// its DPoP proof). They see the header next left
		// (TestErrorRoutesGetNoCredentials,
		// TestInterceptBeforeIssuerGetsNoCredentials).
		clear(r.Header)
		maps.Copy(r.Header, passed.Header)
	}
	return err
}

// clientAddress returns r, or a shallow copy whose RemoteAddr is
// clientAddr's: the issuer limits attempts per address, and behind a
// proxy every client would share the proxy's.
func clientAddress(r *http.Request) *http.Request {
	addr := clientAddr(r)
	if addr == r.RemoteAddr {
		return r
	}
	c := *r
	c.RemoteAddr = addr
	return &c
}

// clientAddr is the client address Caddy determined (its client_ip, which
// honours X-Forwarded-For only from trusted_proxies) with the peer's
// port, or r.RemoteAddr when it is the peer's.
func clientAddr(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	host, port, err := net.SplitHostPort(r.RemoteAddr)
	if ip == "" || err == nil && host == ip {
		return r.RemoteAddr
	}
	return net.JoinHostPort(ip, port)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mcp_issuer
//
// The issuer is configured in the global mcp_auth option; the directive
// only chooses the site and routes that serve it.
func (h *IssuerHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		return d.Errf("unrecognized subdirective %q", d.Val())
	}
	return nil
}

func parseIssuerHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(IssuerHandler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*IssuerHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*IssuerHandler)(nil)
	_ caddyfile.Unmarshaler       = (*IssuerHandler)(nil)
)
