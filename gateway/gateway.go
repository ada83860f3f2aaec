package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// Gateway is the policy-enforcing front of one MCP endpoint. It is safe for
// concurrent use.
//
// Serve checks every request it is given: the Caddy adapter decides which
// requests reach it (the matched path, or the whole site), and the gateway
// never trusts r.URL.Path for policy. Only the exact metadata paths are
// answered differently (with public metadata); everything else is treated
// as MCP traffic and must carry a valid token, so "//mcp", "/mcp/", "/./mcp"
// or "%2fmcp" gain nothing.
type Gateway struct {
	cfg    Config
	now    func() time.Time
	log    *zap.Logger
	audit  *zap.Logger
	policy *policy
	parser *jwt.Parser
	cache  *claimsCache

	metadataURL   string
	metadataPaths []string
	metadataJSON  []byte
	scopes        []string
	origins       map[string]bool
}

// Defaults.
const (
	DefaultMaxBodySize = 1 << 20
	minSessionKey      = 32
)

// DefaultAlgorithms are pinned when Config.Algorithms is empty.
var supportedAlgorithms = []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}

// New validates cfg and builds a Gateway.
func New(cfg Config) (*Gateway, error) {
	res, err := parseHTTPSURL(cfg.Resource)
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	if res.RawQuery != "" || res.Fragment != "" || res.ForceQuery {
		return nil, errors.New("resource: must not have a query or fragment")
	}
	if cfg.Issuer == "" {
		return nil, errors.New("issuer is required")
	}
	if _, err := parseHTTPSURL(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if cfg.Keys == nil {
		return nil, errors.New("keys are required")
	}
	if len(cfg.SessionKey) < minSessionKey {
		return nil, fmt.Errorf("session key must be at least %d bytes", minSessionKey)
	}
	if cfg.MaxBodySize < 0 {
		return nil, errors.New("max body size is negative")
	}
	if cfg.MaxBodySize == 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{"ES256", "RS256", "EdDSA"}
	}
	for _, a := range cfg.Algorithms {
		if !slices.Contains(supportedAlgorithms, a) {
			return nil, fmt.Errorf("algorithm %q is not supported (asymmetric JWS algorithms only)", a)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.AuditLogger == nil {
		cfg.AuditLogger = zap.NewNop()
	}
	pol, err := newPolicy(&cfg)
	if err != nil {
		return nil, err
	}
	origins := make(map[string]bool, len(cfg.AllowedOrigins))
	for _, o := range cfg.AllowedOrigins {
		n, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("allowed origin %q: %w", o, err)
		}
		origins[n] = true
	}

	g := &Gateway{
		cfg:     cfg,
		now:     cfg.Now,
		log:     cfg.Logger,
		audit:   cfg.AuditLogger,
		policy:  pol,
		cache:   newClaimsCache(claimsCacheSize),
		origins: origins,
		scopes:  collectScopes(&cfg),
	}
	g.parser = jwt.NewParser(
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Resource),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	)
	var path string
	path, g.metadataURL = metadataLocation(res)
	g.metadataPaths = []string{path}
	if cfg.RootMetadata && path != wellKnownPRM {
		g.metadataPaths = append(g.metadataPaths, wellKnownPRM)
	}
	if g.metadataJSON, err = buildMetadata(&cfg, g.scopes); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return g, nil
}

// parseHTTPSURL accepts an absolute https URL, or http for loopback hosts
// (local development and tests).
func parseHTTPSURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.User != nil {
		return nil, errors.New("must be an absolute URL with a host and no user info")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, errors.New("http is allowed for loopback hosts only")
		}
	default:
		return nil, errors.New("scheme must be https")
	}
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// normalizeOrigin returns scheme://host[:port] in lower case, refusing
// anything with a path, query or user info.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	if u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("must be scheme://host[:port]")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}
