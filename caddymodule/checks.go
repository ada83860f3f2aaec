package caddymodule

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

// checkAgainstSites finds mistakes that only show once the whole config is
// provisioned: group scopes or a client's resources entry for a resource
// nothing declares (they would surface only as invalid_scope at login, or
// as tokens refused), and an issuer URL that its site does not serve.
func (a *App) checkAgainstSites(httpApp *caddyhttp.App) error {
	if err := a.checkGroupResources(); err != nil {
		return err
	}
	if err := a.checkClientResources(); err != nil {
		return err
	}
	if err := a.checkGatewayResources(); err != nil {
		return err
	}
	if httpApp == nil {
		return nil
	}
	return checkIssuerSite(a.url, httpApp)
}

// checkGroupResources refuses group scopes for a resource that no
// mcp_gateway with the local issuer and no `resource` declares, suggesting
// the declared resource it most likely means.
func (a *App) checkGroupResources() error {
	declared := a.declaredResources()
	for _, g := range a.Groups {
		names := make([]string, 0, len(g.Scopes))
		for res := range g.Scopes {
			names = append(names, res)
		}
		sort.Strings(names)
		for _, res := range names {
			if res == "*" {
				continue
			}
			if err := undeclaredResource(fmt.Sprintf("group %q has scopes for %s", g.Name, res), res, declared); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkClientResources refuses a configured client's resources entry
// that no mcp_gateway with the local issuer and no `resource` declares:
// the issuer issues tokens for declared resources only, so the entry
// would allow nothing, silently (the scheme or the host got wrong, the
// client then refused every token, or refused the one it was meant for
// beside others). An entry is compared as the issuer compares it with a
// token request's resource (issuer.CanonicalResource: a trailing slash,
// the case of the scheme and host, a default port are one resource), so
// an entry that allowed tokens keeps loading.
func (a *App) checkClientResources() error {
	declared := a.declaredResources()
	for _, c := range a.Clients {
		for _, res := range c.Resources {
			if slices.ContainsFunc(declared, func(d string) bool { return issuer.CanonicalResource(d) == issuer.CanonicalResource(res) }) {
				continue
			}
			if err := undeclaredResource(fmt.Sprintf("client %q: resources names %s", c.ID, res), res, declared); err != nil {
				return err
			}
		}
	}
	return nil
}

// declaredResources are the resources the issuer issues tokens for: the
// `resource`s and the URLs of the mcp_gateways with the local issuer.
func (a *App) declaredResources() []string {
	var declared []string
	for _, r := range a.cfg.Resources {
		declared = append(declared, r.URL)
	}
	for _, h := range a.gateways {
		if h.local {
			declared = append(declared, h.Resource)
		}
	}
	return declared
}

// undeclaredResource is nil when res is one of declared, else an error
// that starts with what and suggests the declared resource res most
// likely means.
func undeclaredResource(what, res string, declared []string) error {
	if slices.ContainsFunc(declared, func(d string) bool { return sameResource(d, res) }) {
		return nil
	}
	msg := what + ", which no mcp_gateway or resource declares"
	for _, d := range declared {
		if nearResource(d, res) {
			return fmt.Errorf("%s; did you mean %s?", msg, d)
		}
	}
	if len(declared) == 0 {
		return fmt.Errorf("%s (none is declared): add `resource %s` to mcp_auth if another Caddy serves it", msg, res)
	}
	return fmt.Errorf("%s (declared: %s): add `resource %s` to mcp_auth if another Caddy serves it", msg, strings.Join(declared, ", "), res)
}

// checkGatewayResources refuses two mcp_gateway handlers for one
// resource URL that are configured differently. A token names the
// resource, not the site, so either gateway takes it: the rules a call
// met would depend on which site it reached, and the issuer, which keeps
// one set of scopes per resource, would advertise whichever registered
// last. The same gateway under several sites (one snippet imported
// twice, say) is one policy and loads. A `resource` for a local
// gateway's URL is refused too: the gateway's registration replaces it.
func (a *App) checkGatewayResources() error {
	first := map[string]*GatewayHandler{}
	for _, h := range a.gateways {
		res := issuer.CanonicalResource(h.Resource)
		for _, r := range a.cfg.Resources {
			// The gateway's registration replaces the resource, whose
			// scopes would be ignored unseen.
			if h.local && issuer.CanonicalResource(r.URL) == res {
				return fmt.Errorf("resource %s is the resource of an mcp_gateway of this config (%s), which registers it with the scopes its rules name: the resource's own scopes would be ignored; remove the resource block (it is for resources other servers serve)", r.URL, h.Resource)
			}
		}
		prev, ok := first[res]
		if !ok {
			first[res] = h
			continue
		}
		if err := sameGateway(prev, h); err != nil {
			return err
		}
	}
	return nil
}

// sameGateway refuses h, a gateway for the resource of prev, an earlier
// gateway of the configuration, unless the two are configured alike (see
// checkGatewayResources).
func sameGateway(prev, h *GatewayHandler) error {
	pj, err1 := prev.settings()
	hj, err2 := h.settings()
	if err := cmp.Or(err1, err2); err != nil {
		return fmt.Errorf("mcp_gateway %s: %w", h.Resource, err)
	}
	if !bytes.Equal(pj, hj) {
		return fmt.Errorf("mcp_gateway %s is configured twice, differently (as %s before): a token for the resource is taken by both, so each must enforce the same rules; give each server its own resource URL, or import one snippet in both sites", h.Resource, prev.Resource)
	}
	return nil
}

// settings is the gateway's configuration as checkGatewayResources
// compares it: in JSON, with the defaults written out, so that a setting
// written and the same left to its default (issuer local or this
// config's issuer URL, pin_tools first_use, audit all, the body size,
// in-flight and introspection cache bounds) compare equal.
func (h *GatewayHandler) settings() ([]byte, error) {
	c := *h
	if h.local {
		c.Issuer = "local"
	}
	c.PinTools = cmp.Or(c.PinTools, gateway.PinFirstUse.String())
	c.Audit = cmp.Or(c.Audit, "all")
	c.MaxBodySize = cmp.Or(c.MaxBodySize, gateway.DefaultMaxBodySize)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, gateway.DefaultMaxInFlight)
	c.MaxInFlightPerClient = cmp.Or(c.MaxInFlightPerClient, gateway.DefaultMaxInFlightPerClient(c.MaxInFlight))
	if h.Introspection != nil {
		in := *h.Introspection
		in.Cache = cmp.Or(in.Cache, caddy.Duration(gateway.DefaultIntrospectionCache))
		c.Introspection = &in
	}
	return json.Marshal(&c)
}

// sameResource reports whether a group's scopes for b grant at the
// declared resource a: the issuer must take them for one resource
// (issuer.CanonicalResource, which keeps an escaped "/" apart from a
// separator), and they must be spelled alike but for the case of scheme
// and host (a trailing slash, which the issuer ignores, is refused as a
// near miss all the same).
func sameResource(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return issuer.CanonicalResource(a) == issuer.CanonicalResource(b) &&
		strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host) && ua.Path == ub.Path
}

// nearResource reports whether two resource URLs differ only in what is
// easy to get wrong: the scheme, a trailing slash, the case of the path,
// a "/" escaped or not.
func nearResource(a, b string) bool {
	norm := func(s string) string {
		_, rest, ok := strings.Cut(s, "://")
		if !ok {
			rest = s
		}
		if d, err := url.PathUnescape(rest); err == nil {
			rest = d
		}
		return strings.ToLower(strings.TrimRight(rest, "/"))
	}
	return norm(a) == norm(b)
}

// checkIssuerSite finds the route that would serve the issuer URL: in
// every server listening on its port, the first route for its host (a
// site for it, or one for any host). That route must contain mcp_issuer,
// and the server must speak the issuer URL's scheme.
func checkIssuerSite(issuerURL string, httpApp *caddyhttp.App) error {
	u, err := url.Parse(issuerURL)
	if err != nil {
		return nil // Provision reported it
	}
	for _, name := range serverNames(httpApp) {
		srv := httpApp.Servers[name]
		if !listensOn(srv, urlPort(u)) {
			continue
		}
		i := slices.IndexFunc(srv.Routes, func(r caddyhttp.Route) bool { return routeForHost(r, u.Hostname()) })
		if i < 0 {
			continue
		}
		site := "the site for " + u.Host
		if !slices.ContainsFunc(siteRoutes(srv.Routes, i), func(r caddyhttp.Route) bool { return hasIssuerHandler(r.Handlers) }) {
			return fmt.Errorf("%s (server %s) serves the issuer URL %s but has no mcp_issuer: add `mcp_issuer` to that site block", site, name, issuerURL)
		}
		tls := len(srv.TLSConnPolicies) > 0
		switch {
		case u.Scheme == "https" && !tls:
			return fmt.Errorf("the issuer %s is https, but %s (server %s) is served over plain http: serve the site over https (e.g. site address https://%s), or use an http issuer for a loopback host", issuerURL, site, name, u.Host)
		case u.Scheme == "http" && tls:
			return fmt.Errorf("the issuer %s is http, but %s (server %s) is served over https: make the issuer an https URL, or the site address http://%s", issuerURL, site, name, u.Host)
		}
	}
	return nil
}

// warnIssuerOffSite warns about mcp_issuer in a site other than the one
// that serves the issuer URL (checkIssuerSite's: on the issuer URL's
// port, the first route for its host), for another host or port: it
// answers there all the same, with metadata naming the issuer URL, which
// a client that found it there must refuse (RFC 8414 section 3.3), and
// sign-in pages whose sign-in is refused, the session and its form being
// the issuer URL's. Whoever put it there meant the issuer to be served
// there, which it is not. Only when the issuer's own site is found: a
// Caddy behind a proxy that listens on another port than the issuer
// URL's serves it in a site of that port. A warning, not a refusal: an
// extra mcp_issuer issues nothing the issuer's site would not, and a
// config that loaded before must not keep Caddy from starting after an
// upgrade.
func warnIssuerOffSite(issuerURL string, httpApp *caddyhttp.App, log *zap.Logger) {
	u, err := url.Parse(issuerURL)
	if err != nil {
		return
	}
	type site struct {
		server string
		route  int
	}
	own := map[site]bool{}
	var others []site
	for _, name := range serverNames(httpApp) {
		srv := httpApp.Servers[name]
		first := -1
		if listensOn(srv, urlPort(u)) {
			first = slices.IndexFunc(srv.Routes, func(r caddyhttp.Route) bool { return routeForHost(r, u.Hostname()) })
		}
		for n, r := range srv.Routes {
			switch {
			case !hasIssuerHandler(r.Handlers):
			case n == first:
				own[site{name, n}] = true
			default:
				others = append(others, site{name, n})
			}
		}
	}
	if len(own) == 0 {
		return
	}
	for _, o := range others {
		srv := httpApp.Servers[o.server]
		hosts := routeHosts(srv.Routes[o.route])
		log.Warn("mcp_issuer is in a site that does not serve the issuer URL: sign-in there is refused, and clients must not use the metadata it answers there; keep mcp_issuer in the issuer's site only",
			zap.String("server", o.server), zap.Strings("hosts", hosts), zap.Strings("listen", srv.Listen), zap.String("issuer", issuerURL))
	}
}

// routeHosts are the hosts of a route's host matchers.
func routeHosts(r caddyhttp.Route) []string {
	var hosts []string
	for _, set := range r.MatcherSets {
		for _, m := range set {
			if h, ok := m.(*caddyhttp.MatchHost); ok {
				hosts = append(hosts, *h...)
			}
		}
	}
	return hosts
}

// serverNames are the http app's servers' names, sorted.
func serverNames(httpApp *caddyhttp.App) []string {
	names := make([]string, 0, len(httpApp.Servers))
	for name := range httpApp.Servers {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// urlPort is u's port, the scheme's when it names none.
func urlPort(u *url.URL) uint {
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	p, _ := strconv.ParseUint(port, 10, 32)
	return uint(p)
}

func listensOn(srv *caddyhttp.Server, port uint) bool {
	for _, l := range srv.Listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err == nil && na.StartPort <= port && port <= na.EndPort {
			return true
		}
	}
	return false
}

// siteRoutes are the routes of the site whose first route is routes[i]:
// that route, when it is a site block's (terminal: the Caddyfile wraps
// each site of a host in one), or else the routes from it to the first
// terminal one. A site without a host (`http://:8080`, `https://`) alone
// in its server is not wrapped: its directives' routes are the server's
// own, and one with a matcher (`redir /old /new`, `header @static ...`)
// splits them, so mcp_issuer, ordered after such directives, is in a
// later route than the first.
func siteRoutes(routes caddyhttp.RouteList, i int) caddyhttp.RouteList {
	if routes[i].Terminal {
		return routes[i : i+1]
	}
	for j := i; j < len(routes); j++ {
		if routes[j].Terminal {
			return routes[i : j+1]
		}
	}
	return routes[i:]
}

// routeForHost reports whether a route takes every request for host: it
// has no matcher, or a matcher set of only a host matcher naming host.
func routeForHost(r caddyhttp.Route, host string) bool {
	if len(r.MatcherSets) == 0 {
		return true
	}
	for _, set := range r.MatcherSets {
		if len(set) != 1 {
			continue
		}
		if hosts, ok := set[0].(*caddyhttp.MatchHost); ok && slices.ContainsFunc(*hosts, func(h string) bool { return hostMatches(h, host) }) {
			return true
		}
	}
	return false
}

// hostMatches matches a host matcher's pattern (exact or one "*" label).
func hostMatches(pattern, host string) bool {
	if strings.EqualFold(pattern, host) {
		return true
	}
	rest, ok := strings.CutPrefix(pattern, "*.")
	_, tail, found := strings.Cut(host, ".")
	return ok && found && strings.EqualFold(rest, tail)
}

func hasIssuerHandler(handlers []caddyhttp.MiddlewareHandler) bool {
	for _, h := range handlers {
		switch h := h.(type) {
		case *IssuerHandler:
			return true
		case *caddyhttp.Subroute:
			for _, r := range h.Routes {
				if hasIssuerHandler(r.Handlers) {
					return true
				}
			}
		}
	}
	return false
}

// warnSharedAudiences warns about gateways for different resources that
// take tokens of one remote issuer by the same audience: each takes the
// other's tokens, since the resource (RFC 8707), which would tell them
// apart, is not what their tokens name, and only their scopes still
// differ, if they do. The audience is what the tokens must name
// (tokenAudience): one gateway's audience may be the other's resource.
func warnSharedAudiences(gateways []*GatewayHandler, log *zap.Logger) {
	type key struct{ issuer, audience string }
	first := map[key]string{}
	warned := map[key]bool{}
	for _, h := range gateways {
		k := key{h.Issuer, h.tokenAudience()}
		prev, ok := first[k]
		switch {
		case !ok:
			first[k] = h.Resource
		case !warned[k] && issuer.CanonicalResource(prev) != issuer.CanonicalResource(h.Resource):
			warned[k] = true
			log.Warn("mcp_gateways for different resources take tokens of one issuer by the same audience, so each takes the other's tokens: give each resource an audience (API identifier) of its own at the authorization server",
				zap.Strings("resources", []string{prev, h.Resource}), zap.String("issuer", h.Issuer), zap.String("audience", k.audience))
		}
	}
}

// warnPlainHTTPListeners warns about each server that serves one of urls
// (the issuer's, the gateways' resources) over plain http while it
// listens beyond loopback. http is allowed for loopback hosts only, so
// that passwords, codes and tokens stay on the machine; but Caddy binds a
// site address of localhost to every interface unless `bind` says
// otherwise, and anyone who reaches the port then signs in, gets and
// uses tokens over plain http from the network, naming the loopback host
// in Host. A warning, not a refusal: Caddy in a container listens on
// its own interface for a port the host publishes on loopback only.
func warnPlainHTTPListeners(urls []string, httpApp *caddyhttp.App, log *zap.Logger) {
	for _, name := range serverNames(httpApp) {
		srv := httpApp.Servers[name]
		var served, open []string
		for _, s := range urls {
			u, err := url.Parse(s)
			if err != nil || u.Scheme != "http" || !listensOn(srv, urlPort(u)) ||
				!slices.ContainsFunc(srv.Routes, func(r caddyhttp.Route) bool { return routeForHost(r, u.Hostname()) }) {
				continue
			}
			if l := beyondLoopback(srv, urlPort(u)); len(l) > 0 {
				served = append(served, s)
				open = append(open, l...)
			}
		}
		if len(served) > 0 {
			slices.Sort(open)
			log.Warn("plain http is allowed for loopback URLs only, so that passwords, codes and tokens stay on this machine, but this server listens beyond loopback: anyone who reaches its port uses these URLs over plain http from the network, naming their host in Host; add `bind 127.0.0.1` (or ::1) to the site, or serve https",
				zap.String("server", name), zap.Strings("listen", slices.Compact(open)), zap.Strings("urls", served))
		}
	}
}

// beyondLoopback are srv's network listeners on port that are not
// bound to a loopback address (all interfaces, or another address).
func beyondLoopback(srv *caddyhttp.Server, port uint) []string {
	var open []string
	for _, l := range srv.Listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil || na.IsUnixNetwork() || na.IsFdNetwork() || port < na.StartPort || na.EndPort < port {
			continue
		}
		if ip, err := netip.ParseAddr(na.Host); !strings.EqualFold(na.Host, "localhost") && (err != nil || !ip.IsLoopback()) {
			open = append(open, l)
		}
	}
	return open
}

// tokenAudience is the value h's tokens must name in aud: its audience,
// else its resource (gateway.Config.Audience).
func (h *GatewayHandler) tokenAudience() string { return cmp.Or(h.Audience, h.Resource) }
