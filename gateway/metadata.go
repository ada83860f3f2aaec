package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

const wellKnownPRM = "/.well-known/oauth-protected-resource"

// protectedResourceMetadata is the RFC 9728 document.
type protectedResourceMetadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ResourceName           string   `json:"resource_name,omitempty"`
	// RFC 9449 §7.1 (published through RFC 9728): the proof algorithms
	// accepted, and whether bearer tokens are refused.
	DPoPSigningAlgValuesSupported []string `json:"dpop_signing_alg_values_supported"`
	DPoPBoundAccessTokensRequired bool     `json:"dpop_bound_access_tokens_required"`
}

// metadataLocation returns the path-inserted well-known path for a resource
// URL (RFC 9728 §3.1: /.well-known/oauth-protected-resource between host
// and path; a lone "/" path is dropped), decoded and as spelled (a
// client inserts into the resource as spelled, so an escaped "/" stays
// escaped: unescaped it names another resource's metadata), and the full
// metadata URL.
func metadataLocation(u *url.URL) (path, escaped, full string) {
	path, escaped = wellKnownPRM, wellKnownPRM
	if u.Path != "" && u.Path != "/" {
		path += u.Path
		escaped += u.EscapedPath()
	}
	loc := url.URL{Scheme: u.Scheme, Host: u.Host, Path: path, RawPath: escaped}
	return path, escaped, loc.String()
}

// MetadataPaths returns the request paths at which Serve answers with the
// protected resource metadata instead of treating the request as MCP
// traffic: the path-inserted well-known path of the resource and, for a
// resource at the root path or with Config.RootMetadata, the root one. The
// Caddy adapter routes these paths to the gateway.
func (g *Gateway) MetadataPaths() []string {
	return slices.Clone(g.metadataPaths)
}

// Host is the resource URL's host (and port), lowercased: the Host of
// every request the gateway forwards.
func (g *Gateway) Host() string { return g.host }

// Scopes returns every scope the gateway's rules mention, sorted: base
// scopes, rule scopes and both sides of Implies (never offline_access,
// which newPolicy refuses). This is scopes_supported.
func (g *Gateway) Scopes() []string {
	return slices.Clone(g.scopes)
}

func collectScopes(cfg *Config) []string {
	var all []string
	all = append(all, cfg.BaseScopes...)
	for _, rules := range [][]Rule{cfg.Tools, cfg.Prompts, cfg.ResourceRules, cfg.Methods} {
		for _, r := range rules {
			all = append(all, r.Scopes...)
		}
	}
	for broad, narrow := range cfg.Implies {
		all = append(all, broad)
		all = append(all, narrow...)
	}
	return sortedSet(all)
}

// isMetadataPath reports whether u is at a metadata path, decoded and as
// spelled (dpop.SpelledPath: a raw "|" beside "%2F" does not unescape
// it) up to RFC 3986 equivalence of escapes (metadataEscaped is
// normalized; the spelling is read only when the decoded path matches: no
// cost to MCP requests).
func (g *Gateway) isMetadataPath(u *url.URL) bool {
	for i, p := range g.metadataPaths {
		if u.Path == p && u.Opaque == "" && dpop.NormalPercent(dpop.SpelledPath(u)) == g.metadataEscaped[i] {
			return true
		}
	}
	return false
}

// serveMetadata answers the public metadata document, with CORS so that
// browser-based clients can discover the authorization server.
func (g *Gateway) serveMetadata(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "MCP-Protocol-Version")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		h.Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(g.metadataJSON)))
	h.Set("Cache-Control", "public, max-age=3600")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(g.metadataJSON)
	}
}

func buildMetadata(cfg *Config, scopes []string) ([]byte, error) {
	return json.Marshal(protectedResourceMetadata{
		Resource:                      cfg.Resource,
		AuthorizationServers:          []string{cfg.Issuer},
		ScopesSupported:               scopes,
		BearerMethodsSupported:        []string{"header"},
		ResourceName:                  cfg.ResourceName,
		DPoPSigningAlgValuesSupported: dpop.Algorithms(),
		DPoPBoundAccessTokensRequired: cfg.RequireDPoP,
	})
}
