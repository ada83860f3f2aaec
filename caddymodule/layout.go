package caddymodule

import (
	"cmp"
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/intercept"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// unguardedProxy is a reverse_proxy that a request can reach without
// passing an mcp_gateway, in a site that has one.
type unguardedProxy struct {
	server    string
	upstreams []string
	match     string // the matchers on the way to it, outermost first
	// copies names a handler or matcher that copies the client's host
	// before a gateway ("vars", "request_header": hostCopy;
	// "header_regexp", "vars_regexp": hostCapture), "" for a proxy; sni,
	// that it copies the TLS server name.
	copies string
	sni    bool
}

// unguardedProxies finds, in every server of the http app, the
// reverse_proxy handlers that some request reaches without passing an
// mcp_gateway, in sites that contain a gateway. A gateway with a path
// matcher followed by a reverse_proxy with none (or another one) is the
// classic mistake: Caddy's path matcher is exact, so /mcp/, /mcp;x or
// /mcp%2F skip the gateway and reach the upstream without a token.
//
// The check is conservative: a proxy counts as guarded only when a
// gateway ran earlier in its own route, or in an earlier route (of its
// list or an enclosing one) with no matcher or with exactly its matcher
// sets and no handler between them that may change the request (a
// rewrite such as handle_path's: a request that missed the gateway's
// matcher may match the proxy's once rewritten), its route in no group
// (another route of the group may have matched, skipping it). A
// terminal route of a server's route list (a site block's host route)
// is its own site.
// Named routes are walked where they are invoked. Error routes
// (handle_errors) run for any request that fails, a 404 for an unknown
// path included, so a proxy there is unguarded unless a gateway runs
// before it in the error routes themselves.
func unguardedProxies(app *caddyhttp.App) []unguardedProxy {
	return slices.DeleteFunc(proxiesPast(app, isGateway), func(p unguardedProxy) bool { return p.copies != "" })
}

// hostCopies finds, in the sites with a gateway, the vars and
// request_header handlers that copy the client's host (hostCopy), and
// the header_regexp and vars_regexp matchers that capture it
// (hostCapture), before a gateway runs: the gateway sets the resource's host for the handlers
// after it, and the host placeholders read it then, but a copy made
// before holds whatever Host the client sent, in a site answering more
// than one host, and an upstream address, a header_up or the upstream
// itself routing on it (request_header X-Tenant {labels.2}) goes where
// the client named, with a token for this resource.
func hostCopies(app *caddyhttp.App) []unguardedProxy {
	return slices.DeleteFunc(proxiesPast(app, isGateway), func(p unguardedProxy) bool { return p.copies == "" })
}

func isGateway(h caddyhttp.MiddlewareHandler) bool {
	_, ok := h.(*GatewayHandler)
	return ok
}

// cookieProxies finds the reverse_proxy handlers that a request reaches,
// in a site with an mcp_issuer, without passing the issuer or a gateway
// first, leaving out those unguardedProxies finds (warned of already).
// Both take the issuer's session cookie out of what the handlers after
// them get (IssuerHandler.ServeHTTP, the gateway's upstreamRequest), and
// the browser sends it to every path of the issuer's host: an mcp_issuer
// with a matcher, or in a handle block of its paths, leaves it in the
// requests it does not see, and an application proxied to there gets
// the signed-in user's session with them. The check shares
// unguardedProxies' walk and its limits: a site is a terminal route, so
// an application in another site block of the issuer's host (with a
// path in its address) is not found.
func cookieProxies(app *caddyhttp.App) []unguardedProxy {
	gatewayOpen := unguardedProxies(app)
	return slices.DeleteFunc(proxiesPast(app, func(h caddyhttp.MiddlewareHandler) bool {
		_, iss := h.(*IssuerHandler)
		return iss || isGateway(h)
	}), func(p unguardedProxy) bool {
		return p.copies != "" || slices.ContainsFunc(gatewayOpen, func(g unguardedProxy) bool { return reflect.DeepEqual(g, p) })
	})
}

// proxiesPast finds, in every server of the http app, the reverse_proxy
// handlers that some request reaches without passing a handler guard
// accepts, in sites that contain one (unguardedProxies).
func proxiesPast(app *caddyhttp.App, guard func(caddyhttp.MiddlewareHandler) bool) []unguardedProxy {
	var found []unguardedProxy
	names := make([]string, 0, len(app.Servers))
	for name := range app.Servers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		srv := app.Servers[name]
		w := layoutWalk{server: name, named: srv.NamedRoutes, guard: guard}
		gw, open, _ := w.routes(srv.Routes, coverage{}, nil)
		if gw {
			w.found = append(w.found, open...)
		}
		if srv.Errors != nil {
			// A site's error routes belong to the site of the same matchers.
			w.gatewaySite = func(site caddyhttp.MatcherSets) bool {
				return gw || slices.ContainsFunc(w.sites, func(s caddyhttp.MatcherSets) bool { return reflect.DeepEqual(s, site) })
			}
			egw, open, _ := w.routes(srv.Errors.Routes, coverage{}, []string{"handle_errors"})
			if gw || egw {
				w.found = append(w.found, open...)
			}
		}
		found = append(found, w.found...)
	}
	return found
}

// coverage is what earlier gateways guard: every request (all), or the
// requests matching one of the matcher sets.
type coverage struct {
	all  bool
	sets []caddyhttp.MatcherSet
}

// changed is the coverage after a handler that may change the request:
// what its matchers see is no longer what the gateways' saw.
func (c coverage) changed() coverage {
	if c.all {
		return c
	}
	return coverage{}
}

func (c coverage) covers(sets caddyhttp.MatcherSets) bool {
	if c.all {
		return true
	}
	if len(sets) == 0 {
		return false
	}
	for _, s := range sets {
		if !slices.ContainsFunc(c.sets, func(g caddyhttp.MatcherSet) bool { return reflect.DeepEqual(g, s) }) {
			return false
		}
	}
	return true
}

type layoutWalk struct {
	server   string
	guard    func(caddyhttp.MiddlewareHandler) bool // the handlers that guard what follows them: gateways
	named    map[string]*caddyhttp.Route
	invoking []string // named routes being walked (a route may invoke itself)
	// sites are the matchers of the sites (terminal routes) that have a
	// gateway in their primary routes.
	sites []caddyhttp.MatcherSets
	// gatewaySite, set while walking error routes, reports whether the
	// site with these matchers has a gateway.
	gatewaySite func(caddyhttp.MatcherSets) bool
	found       []unguardedProxy
	depth       int // of the route list being walked: 1 for a server's own routes
}

// routes walks one route list with the coverage of the gateways before
// it. It reports whether the list contains a gateway, the unguarded
// proxies not yet attributed to a site, and whether a handler in it may
// change the request for the routes after it.
func (w *layoutWalk) routes(routes caddyhttp.RouteList, cov coverage, path []string) (bool, []unguardedProxy, bool) {
	w.depth++
	defer func() { w.depth-- }()
	var hasGateway, changes bool
	var open []unguardedProxy
	for _, r := range routes {
		rpath := path
		if d := describeMatchers(r.MatcherSets); d != "" {
			rpath = append(append([]string(nil), path...), d)
		}
		guarded := cov.covers(r.MatcherSets)
		if c, sni := hostCapture(r.MatcherSets); c != "" && !guarded {
			// Its matchers run before its handlers, a gateway among them.
			open = append(open, unguardedProxy{server: w.server, match: strings.Join(rpath, " > "), copies: c, sni: sni})
		}
		for _, h := range r.Handlers {
			if w.guard(h) {
				hasGateway = true
				guarded = true
				// A grouped route (JSON "group") runs only if no route
				// of its group matched before it, in any route list of
				// the request: its gateway guards nothing after its
				// route.
				switch {
				case r.Group != "":
				case len(r.MatcherSets) == 0:
					cov = coverage{all: true}
				case !cov.all:
					cov.sets = append(cov.sets[:len(cov.sets):len(cov.sets)], r.MatcherSets...)
				}
				continue
			}
			switch h := h.(type) {
			case *reverseproxy.Handler:
				if !guarded {
					open = append(open, unguardedProxy{server: w.server, upstreams: upstreams(h), match: strings.Join(rpath, " > ")})
				}
				// Its handle_response routes run for the requests it got.
				gw, sub := w.responseRoutes(h.HandleResponse, cov, guarded, append(rpath[:len(rpath):len(rpath)], "reverse_proxy handle_response"))
				hasGateway = hasGateway || gw
				open = append(open, sub...)
			case *intercept.Intercept:
				// Its handle_response routes run on the answer of what
				// follows it, a gateway's refusal included: a proxy there
				// gets the refused request unless a gateway ran before
				// the intercept.
				gw, sub := w.responseRoutes(h.HandleResponse, cov, guarded, append(rpath[:len(rpath):len(rpath)], "intercept handle_response"))
				hasGateway = hasGateway || gw
				open = append(open, sub...)
			case *caddyhttp.Subroute:
				inner := cov
				if guarded {
					inner = coverage{all: true}
				}
				gw, sub, changed := w.routes(h.Routes, inner, rpath)
				if h.Errors != nil {
					// A subroute's own error routes (JSON only) run for
					// any request a handler of it failed, the gateway's
					// refusals before it started included: guarded only
					// by a gateway in them.
					egw, esub, echanged := w.routes(h.Errors.Routes, coverage{}, append(rpath[:len(rpath):len(rpath)], "errors"))
					gw, sub, changed = gw || egw, append(sub, esub...), changed || echanged
				}
				if changed {
					cov, changes = cov.changed(), true
				}
				if r.Terminal && w.depth == 1 && !hasGateway {
					// A site of its own: its proxies matter only if it
					// has a gateway. (A terminal route inside a site,
					// or after a gateway of the server's own routes,
					// which JSON can write, only ends its route list.)
					if gw && w.gatewaySite == nil {
						w.sites = append(w.sites, r.MatcherSets)
					}
					if gw || w.gatewaySite != nil && w.gatewaySite(r.MatcherSets) {
						if oneHost(r.MatcherSets) {
							// Its requests all name that host: a copy of
							// the host is the resource's, but for the
							// TLS server name, which Caddy lets differ.
							sub = slices.DeleteFunc(sub, func(p unguardedProxy) bool { return p.copies != "" && !p.sni })
						}
						w.found = append(w.found, sub...)
					}
					continue
				}
				hasGateway = hasGateway || gw
				open = append(open, sub...)
			case *caddyhttp.Invoke:
				named := w.named[h.Name]
				if named == nil || slices.Contains(w.invoking, h.Name) {
					continue
				}
				inner := cov
				if guarded {
					inner = coverage{all: true}
				}
				nr := *named
				nr.Terminal = false // ends the invoking route, not a site
				w.invoking = append(w.invoking, h.Name)
				gw, sub, changed := w.routes(caddyhttp.RouteList{nr}, inner, append(rpath[:len(rpath):len(rpath)], "invoke "+h.Name))
				w.invoking = w.invoking[:len(w.invoking)-1]
				if changed {
					cov, changes = cov.changed(), true
				}
				hasGateway = hasGateway || gw
				open = append(open, sub...)
			default:
				if c, sni := hostCopy(h); c != "" && !guarded {
					open = append(open, unguardedProxy{server: w.server, match: strings.Join(rpath, " > "), copies: c, sni: sni})
				}
				if mayChangeRequest(h) {
					cov, changes = cov.changed(), true
				}
			}
		}
	}
	return hasGateway, open, changes
}

// hostCopy names h, "vars" or "request_header", when it copies the
// client's host into a variable or a request header field: a value
// holding a placeholder of the host, its labels or port, or the TLS
// server name (then sni), which the gateway sets to the resource's for
// the handlers after it only (in a Caddyfile, {host}, {hostport}, {port}
// and {labels.N} are these).
func hostCopy(h caddyhttp.MiddlewareHandler) (name string, sni bool) {
	var values []string
	switch h := h.(type) {
	case *caddyhttp.VarsMiddleware:
		name = "vars"
		for k, v := range *h {
			values = append(values, k)
			if s, ok := v.(string); ok {
				values = append(values, s)
			}
		}
	case *headers.Handler:
		if h.Request == nil {
			return "", false
		}
		name = "request_header"
		for _, vv := range []http.Header{h.Request.Add, h.Request.Set} {
			for _, v := range vv {
				values = append(values, v...)
			}
		}
		for _, rs := range h.Request.Replace {
			for _, r := range rs {
				values = append(values, r.Replace)
			}
		}
	default:
		return "", false
	}
	copies := false
	for _, v := range values {
		sni = sni || strings.Contains(v, "{http.request.tls.server_name}")
		copies = copies || sni || strings.Contains(v, "{http.request.host") || strings.Contains(v, "{http.request.port}")
	}
	if !copies {
		return "", false
	}
	return name, sni
}

// hostCapture names a matcher of sets, "header_regexp" or
// "vars_regexp", that copies the client's host into Caddy's regexp
// placeholders ({re.NAME.N}): a header_regexp of the Host field, which
// Caddy matches against the request's host, or a vars_regexp of a
// placeholder of the host, its labels or port, or the TLS server name
// (then sni). A route's matchers run before its handlers, so a capture
// there, in the route of the gateway too, holds the Host the client sent
// (hostCopy).
func hostCapture(sets caddyhttp.MatcherSets) (name string, sni bool) {
	for _, set := range sets {
		for _, m := range set {
			switch m := m.(type) {
			case *caddyhttp.MatchHeaderRE:
				name = cmp.Or(headerCapture(*m), name)
			case caddyhttp.MatchHeaderRE:
				name = cmp.Or(headerCapture(m), name)
			case *caddyhttp.MatchVarsRE:
				n, s := varsCapture(*m)
				name, sni = cmp.Or(n, name), sni || s
			case caddyhttp.MatchVarsRE:
				n, s := varsCapture(m)
				name, sni = cmp.Or(n, name), sni || s
			}
		}
	}
	return name, sni
}

func headerCapture(m caddyhttp.MatchHeaderRE) string {
	for field := range m {
		if strings.EqualFold(field, "Host") {
			return "header_regexp"
		}
	}
	return ""
}

func varsCapture(m caddyhttp.MatchVarsRE) (name string, sni bool) {
	for key := range m {
		s := strings.Contains(key, "{http.request.tls.server_name}")
		if s || strings.Contains(key, "{http.request.host") || strings.Contains(key, "{http.request.port}") {
			name, sni = "vars_regexp", sni || s
		}
	}
	return name, sni
}

// oneHost reports whether sets, a site's matchers, admit one host only:
// one host matcher naming one host, no wildcard or placeholder.
func oneHost(sets caddyhttp.MatcherSets) bool {
	if len(sets) != 1 {
		return false
	}
	n := 0
	for _, m := range sets[0] {
		var hosts caddyhttp.MatchHost
		switch h := m.(type) {
		case *caddyhttp.MatchHost:
			hosts = *h
		case caddyhttp.MatchHost:
			hosts = h
		default:
			continue
		}
		if len(hosts) != 1 || strings.ContainsAny(hosts[0], "*{") {
			return false
		}
		n++
	}
	return n == 1
}

// requestKept are the handlers known to leave what matchers read of a
// request as it was; any other (rewrite, uri, handle_path's prefix
// strip, method, request_header, vars, map, a plugin's handler) may
// change it.
var requestKept = map[caddy.ModuleID]bool{
	"http.handlers.mcp_issuer":      true,
	"http.handlers.encode":          true,
	"http.handlers.static_response": true,
	"http.handlers.error":           true,
	"http.handlers.file_server":     true,
	"http.handlers.templates":       true,
	"http.handlers.push":            true,
	"http.handlers.request_body":    true,
	"http.handlers.tracing":         true,
	"http.handlers.log_append":      true,
	"http.handlers.metrics":         true,
	"http.handlers.timeouts":        true,
	// handle_response only
	"http.handlers.copy_response":         true,
	"http.handlers.copy_response_headers": true,
}

// mayChangeRequest reports whether handler h may change the request for
// the handlers and routes after it (see requestKept); a headers handler
// only when it edits the request's header.
func mayChangeRequest(h caddyhttp.MiddlewareHandler) bool {
	if hh, ok := h.(*headers.Handler); ok {
		return hh.Request != nil
	}
	mod, ok := h.(caddy.Module)
	return !ok || !requestKept[mod.CaddyModule().ID]
}

// responseRoutes walks the routes of handle_response blocks, reached
// with the coverage at their handler (guarded: a gateway ran before it).
func (w *layoutWalk) responseRoutes(handlers []caddyhttp.ResponseHandler, cov coverage, guarded bool, path []string) (bool, []unguardedProxy) {
	if guarded {
		cov = coverage{all: true}
	}
	var hasGateway bool
	var open []unguardedProxy
	for _, rh := range handlers {
		gw, sub, _ := w.routes(rh.Routes, cov, path)
		hasGateway = hasGateway || gw
		open = append(open, sub...)
	}
	return hasGateway, open
}

func upstreams(h *reverseproxy.Handler) []string {
	var dials []string
	for _, u := range h.Upstreams {
		dials = append(dials, u.Dial)
	}
	if h.DynamicUpstreams != nil {
		dials = append(dials, "(dynamic)")
	}
	return dials
}

// describeMatchers renders matcher sets as `path ["/a"]`, sets joined
// by " or ".
func describeMatchers(sets caddyhttp.MatcherSets) string {
	var alts []string
	for _, set := range sets {
		var parts []string
		for _, m := range set {
			name := "matcher"
			if mod, ok := m.(caddy.Module); ok {
				name = mod.CaddyModule().ID.Name()
			}
			b, err := json.Marshal(m)
			if err != nil {
				b = []byte("?")
			}
			parts = append(parts, name+" "+string(b))
		}
		alts = append(alts, strings.Join(parts, " "))
	}
	return strings.Join(alts, " or ")
}

// warnCookieProxies logs a warning for each reverse_proxy of the http
// app that gets the issuer's session cookie (cookieProxies).
func warnCookieProxies(app *caddyhttp.App, log *zap.Logger) {
	for _, p := range cookieProxies(app) {
		log.Warn("reverse_proxy reachable without mcp_issuer: mcp_issuer takes its session cookie out of the requests it passes on, but not out of those its matcher or handle block keeps from it, and the browser sends that cookie to every path of the issuer's host, so the upstream gets the signed-in user's session and could sign in as the user and approve its own client; give mcp_issuer no matcher and put it first in the site, or serve the application on another host",
			zap.String("server", p.server),
			zap.Strings("upstreams", p.upstreams),
			zap.String("match", p.match))
	}
}

// warnHostCopies logs a warning for each handler of the http app that
// copies the client's host before a gateway (hostCopies).
func warnHostCopies(app *caddyhttp.App, log *zap.Logger) {
	for _, c := range hostCopies(app) {
		log.Warn(c.copies+" copies the client's host before mcp_gateway: the gateway sends each request to the resource's host, and the host placeholders read it after the gateway, but what was copied before holds whatever Host the client sent, so an upstream address, a header_up, or an upstream routing on a header made of it acts for the host the client named, with a token for this resource; route by host with map, or with a host matcher and a gateway per host",
			zap.String("server", c.server),
			zap.String("match", c.match))
	}
}

// warnLenientProxies logs a warning for each server of the http app that
// trusts proxies without trusted_proxies_strict: Caddy then takes the
// client's address from the leftmost X-Forwarded-For entry, which the
// client writes where a balancer appends to it, so a client would name the
// address its brute-force limits and audit events count.
func warnLenientProxies(app *caddyhttp.App, log *zap.Logger) {
	for _, name := range slices.Sorted(maps.Keys(app.Servers)) {
		if s := app.Servers[name]; trustsProxies(s) && s.TrustedProxiesStrict == 0 {
			log.Warn("trusted_proxies without trusted_proxies_strict: the client address is the leftmost X-Forwarded-For entry, which a client writes itself when the proxy appends to that header (most load balancers do), so brute-force limits and audit events would count whatever address a client names; add trusted_proxies_strict unless the proxy replaces X-Forwarded-For",
				zap.String("server", name))
		}
	}
}

// trustsProxies says whether s trusts proxies: its trusted_proxies JSON
// before the http app provisions it, the source it loaded after, when
// Caddy has cleared the JSON (LoadModule does) and keeps the source in an
// unexported field, which only reflection reads.
func trustsProxies(s *caddyhttp.Server) bool {
	if len(s.TrustedProxiesRaw) != 0 {
		return true
	}
	f := reflect.ValueOf(s).Elem().FieldByName("trustedProxies")
	return f.IsValid() && f.Kind() == reflect.Interface && !f.IsNil()
}

// warnUnguardedProxies logs a warning for each reverse_proxy of the http
// app that bypasses every mcp_gateway of its site.
func warnUnguardedProxies(app *caddyhttp.App, log *zap.Logger) {
	for _, p := range unguardedProxies(app) {
		log.Warn("reverse_proxy reachable without mcp_gateway: requests that its matchers accept but the gateway's do not (such as /mcp/, /mcp;x or /mcp%2F for a gateway on path /mcp) reach the upstream without a token; put the reverse_proxy (or the invoke of a named route holding it) in the same handle block as the mcp_gateway, answer other paths with 404, and keep reverse_proxy out of handle_errors unless an mcp_gateway runs before it there",
			zap.String("server", p.server),
			zap.Strings("upstreams", p.upstreams),
			zap.String("match", p.match))
	}
}
