package issuer

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// AddResource registers a protected resource at runtime (every mcp_gateway
// in the same Caddy config registers itself while Caddy provisions).
// Safe for concurrent use; re-adding a URL replaces its scopes.
func (i *Issuer) AddResource(r Resource) { i.policy.add(r) }

// policy decides what a token may grant: which protected resources exist
// (configured and registered at runtime), and which of their scopes a
// client, and a user through their groups, may get.
type policy struct {
	cfg     *Config
	mu      sync.RWMutex
	runtime map[string]Resource // by canonical URL, from AddResource
}

func newPolicy(cfg *Config) *policy {
	return &policy{cfg: cfg, runtime: make(map[string]Resource)}
}

func (p *policy) add(r Resource) {
	r.Scopes = slices.Clone(r.Scopes)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runtime[CanonicalResource(r.URL)] = r
}

// resources lists the configured resources, then the registered ones; a
// registered resource replaces a configured one with the same URL.
func (p *policy) resources() []Resource {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]Resource, 0, len(p.cfg.Resources)+len(p.runtime))
	for _, r := range p.cfg.Resources {
		if _, ok := p.runtime[CanonicalResource(r.URL)]; !ok {
			out = append(out, r)
		}
	}
	keys := make([]string, 0, len(p.runtime))
	for k := range p.runtime {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, p.runtime[k])
	}
	return out
}

// CheckConfiguredScopes refuses a configured client's or agent's scope
// that no resource offers (nor OpenID Connect), as the admin API refuses
// one (checkScopes): "notes:raed" for notes:read, or "*" written for
// every scope, loaded and allowed nothing. The gateways of the
// configuration register their resources after New, so the caller
// checks once they have (App.Start), before anything is applied.
func (i *Issuer) CheckConfiguredScopes() error {
	for _, c := range i.cfg.Clients {
		if err := i.policy.checkScopes(c.Scopes); err != nil {
			return fmt.Errorf("client %q: %w", c.ID, err)
		}
	}
	for _, a := range i.cfg.Agents {
		if err := i.policy.checkScopes(a.Scopes); err != nil {
			return fmt.Errorf("agent %q: %w", a.ID, err)
		}
	}
	for _, g := range i.cfg.Groups {
		if err := i.policy.checkGroupScopes(g); err != nil {
			return fmt.Errorf("group %q: %w", g.Name, err)
		}
	}
	return nil
}

// checkGroupScopes refuses a group's scope that the resource it is
// listed for does not offer (for "*", that no resource offers): the
// group grants a member only what the resource offers
// (groupScopes), so "notes:raed", or a scope of another resource,
// granted nothing, and the members were refused at sign-in with no
// word to the operator. "*" (every scope of the resource) and the
// OpenID Connect scopes, which groups do not grant, are left to load.
// A target no resource declares is the caller's to refuse
// (checkGroupResources in caddymodule names the near miss).
func (p *policy) checkGroupScopes(g Group) error {
	targets := make([]string, 0, len(g.Scopes))
	for target := range g.Scopes {
		targets = append(targets, target)
	}
	slices.Sort(targets)
	for _, target := range targets {
		scopes := slices.DeleteFunc(slices.Clone(g.Scopes[target]), func(s string) bool { return s == "*" || slices.Contains(oidcScopes, s) })
		if target == "*" {
			if err := p.checkScopes(scopes); err != nil {
				return fmt.Errorf("scopes for *: %w", err)
			}
			continue
		}
		for _, r := range p.resources() {
			if !sameResource(r.URL, target) {
				continue
			}
			for _, s := range scopes {
				if slices.Contains(r.Scopes, s) {
					continue
				}
				if len(r.Scopes) == 0 {
					return fmt.Errorf("scope %q for %s: the resource offers no scope", s, target)
				}
				offered := slices.Clone(r.Scopes)
				slices.Sort(offered)
				return fmt.Errorf("scope %q for %s: the resource does not offer it (offered: %s)", s, target, strings.Join(slices.Compact(offered), " "))
			}
		}
	}
	return nil
}

// checkScopes refuses a scope in scopes that no resource offers (nor
// OpenID Connect): a client or agent allowed it would hold nothing by
// it, and the operator who wrote it meant another (a typo, a resource's
// scope under another name).
func (p *policy) checkScopes(scopes []string) error {
	var offered []string
	for _, r := range p.resources() {
		offered = append(offered, r.Scopes...)
	}
	for _, s := range scopes {
		if !slices.Contains(offered, s) && !slices.Contains(oidcScopes, s) {
			if len(offered) == 0 {
				return fmt.Errorf("scope %q is offered by no resource (none offers any: an mcp_gateway's rules, or a resource's scopes, name them)", s)
			}
			slices.Sort(offered)
			return fmt.Errorf("scope %q is offered by no resource (offered: %s)", s, strings.Join(slices.Compact(offered), " "))
		}
	}
	return nil
}

// checkResource refuses res unless it is a resource this issuer issues
// tokens for (configured, or an mcp_gateway's), compared as a token
// request's resource is (sameResource): a client restricted to it would
// get no token for it, and the operator who wrote it meant another (the
// scheme, host or path got wrong), as a configured client's resources
// are checked when the configuration starts.
func (p *policy) checkResource(res string) error {
	var declared []string
	for _, r := range p.resources() {
		if sameResource(r.URL, res) {
			return nil
		}
		declared = append(declared, r.URL)
	}
	slices.Sort(declared)
	return fmt.Errorf("resource %q is no resource of this issuer (resources: %s)", res, strings.Join(slices.Compact(declared), " "))
}

// CanonicalResource is the form resource and issuer URLs are compared in:
// scheme and host in ASCII lower case, without the scheme's default port
// (RFC 3986 section 6.2.3), no trailing slash, the path's escapes
// normalized but not decoded (section 6.2.2). Tokens carry the configured
// URL. A host with other characters is left as it is: Unicode lowering
// would make U+0130 an "i", while on the wire that host is another name.
func CanonicalResource(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if h, ascii := asciiLower(u.Host); ascii {
		u.Host = h
	}
	if p := u.Port(); p == "" || defaultPort(u.Scheme, p) {
		u.Host = strings.TrimSuffix(strings.TrimSuffix(u.Host, p), ":")
	}
	// The path as it was sent, its escapes normalized (RFC 3986 section
	// 6.2.2): decoding it whole would make a%2Fb, one segment, the path
	// a/b of another resource (as u.EscapedPath does when the spelling
	// holds a character to escape: dpop.SpelledPath escapes it in place).
	u.RawPath = strings.TrimSuffix(dpop.NormalPercent(dpop.SpelledPath(u)), "/")
	if u.Path, err = url.PathUnescape(u.RawPath); err != nil {
		return s
	}
	return u.String()
}

func sameResource(a, b string) bool { return CanonicalResource(a) == CanonicalResource(b) }

// validateResourceURL: RFC 8707 section 2, an absolute URI without a
// fragment; with a port, one a client can reach.
func validateResourceURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("resource %q: must be an absolute URL without a fragment", s)
	}
	if !accesstoken.ValidPort(u.Port()) {
		return fmt.Errorf("resource %q: the port must be 1 to 65535, without leading zeros", s)
	}
	return nil
}

// resolveResource finds the resource a request targets and checks the
// client may use it.
func (p *policy) resolveResource(c *Client, resource string) (Resource, error) {
	list := p.resources()
	var res Resource
	found := false
	if resource == "" {
		if len(list) != 1 {
			return res, ErrInvalidTarget.WithDescription("resource is required")
		}
		res, found = list[0], true
	} else {
		if err := validateResourceURL(resource); err != nil {
			return res, ErrInvalidTarget.WithDescription("resource must be an absolute URL without a fragment")
		}
		for _, r := range list {
			if sameResource(r.URL, resource) {
				res, found = r, true
				break
			}
		}
	}
	if !found {
		return res, ErrInvalidTarget.WithDescription("unknown resource")
	}
	if len(c.Resources) > 0 && !slices.ContainsFunc(c.Resources, func(s string) bool { return sameResource(s, res.URL) }) {
		return res, ErrInvalidTarget.WithDescription("client may not get tokens for this resource")
	}
	return res, nil
}

// grantScopes resolves a request's target and scopes: resource "" means the
// single configured resource (or invalid_target if there are several);
// an unknown resource or one the client may not use -> ErrInvalidTarget; the
// result is requested ∩ client's scopes ∩ (for user != nil) the user's group
// scopes for that resource; requested empty means all of the resource's
// scopes the others allow; an empty result when scopes were requested ->
// ErrInvalidScope. OIDC scopes (openid, profile, email, offline_access) pass
// through for user tokens when requested and are not resource scopes.
//
// A group's scope list may hold "*": every scope of the resource.
func (p *policy) grantScopes(ctx context.Context, c *Client, u *User, resource string, requested []string) (string, []string, error) {
	return p.scopesFor(ctx, c, u, resource, requested, u == nil)
}

// authorizationScopes is the authorization request's check of the
// client's own limits (no user yet). Its invalid_scope does not list the
// client's scopes: anyone may send a client's authorization request (a
// public client's push to /par is answered to the sender, the redirect
// with the error passes through the sender's browser).
func (p *policy) authorizationScopes(ctx context.Context, c *Client, resource string, requested []string) error {
	_, _, err := p.scopesFor(ctx, c, nil, resource, requested, false)
	return err
}

// scopesFor is grantScopes; tell lists in invalid_scope the scopes the
// client may get, for a client that authenticated asking for itself.
func (p *policy) scopesFor(ctx context.Context, c *Client, u *User, resource string, requested []string, tell bool) (string, []string, error) {
	res, err := p.resolveResource(c, resource)
	if err != nil {
		return "", nil, err
	}
	allowed := slices.Clone(res.Scopes)
	if len(c.Scopes) > 0 {
		allowed = slices.DeleteFunc(allowed, func(s string) bool { return !slices.Contains(c.Scopes, s) })
	}
	if u != nil {
		userScopes := p.groupScopes(u, res)
		allowed = slices.DeleteFunc(allowed, func(s string) bool { return !slices.Contains(userScopes, s) })
	}
	if len(requested) == 0 {
		return res.URL, allowed, nil
	}
	var out []string
	for _, s := range requested {
		if (u != nil && slices.Contains(oidcScopes, s)) || slices.Contains(allowed, s) {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return "", nil, ErrInvalidScope.WithDescription(noScopeGranted(res.URL, allowed, tell))
	}
	return res.URL, out, nil
}

// noScopeGranted tells the caller, when tell, what it may ask for
// instead. A client's own scopes are its registration's; a user's are not
// told the client.
func noScopeGranted(resource string, allowed []string, tell bool) string {
	msg := "none of the requested scopes may be granted for " + resource
	switch {
	case !tell:
		return msg
	case len(allowed) == 0:
		return msg + "; this client may get none of its scopes"
	}
	return msg + "; this client may get: " + strings.Join(allowed, " ")
}

// clientGrantScopes is grantScopes for a client acting on its own account
// (no user: client_credentials, exchanging a client's own token). A
// self-registered client's empty Resources and Scopes mean none here, not
// every: anyone can register one, and no user's groups or consent bound
// what it would get.
func (p *policy) clientGrantScopes(ctx context.Context, c *Client, resource string, requested []string) (string, []string, error) {
	if c.selfRegistered() && (len(c.Resources) == 0 || len(c.Scopes) == 0) {
		return "", nil, ErrUnauthorizedClient.WithDescription("a self-registered client gets no tokens of its own")
	}
	return p.grantScopes(ctx, c, nil, resource, requested)
}

// groupScopes is the union of what the user's groups allow for res.
func (p *policy) groupScopes(u *User, res Resource) []string {
	return groupScopes(p.cfg.Groups, u.Groups, res)
}

// groupScopes is the union of what those of groups whose names member
// lists allow for res.
func groupScopes(groups []Group, member []string, res Resource) []string {
	var out []string
	for _, g := range groups {
		if !slices.Contains(member, g.Name) {
			continue
		}
		for target, scopes := range g.Scopes {
			if target != "*" && !sameResource(target, res.URL) {
				continue
			}
			if slices.Contains(scopes, "*") {
				return slices.Clone(res.Scopes)
			}
			out = append(out, scopes...)
		}
	}
	return out
}
