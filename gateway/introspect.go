package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// Introspector asks an authorization server about an opaque access token
// (RFC 7662). Introspect returns the body of a 200 answer; an error means
// the server could not say (unreachable, an error status, an answer too
// large), and the request is refused with 503.
type Introspector interface {
	Introspect(ctx context.Context, token string) ([]byte, error)
}

// Introspection defaults.
const (
	DefaultIntrospectionCache = time.Minute
	DefaultInactiveCache      = 10 * time.Second
	inactiveCacheSize         = 10000
)

var (
	// errIntrospectionUnavailable: the token could not be checked; not
	// the token's fault, so no challenge, and the client may retry.
	errIntrospectionUnavailable = &authError{status: http.StatusServiceUnavailable,
		desc: "the access token cannot be checked at the moment; retry later"}
	errInactive = invalidToken("the access token is not active")
)

// introspect checks an opaque token with the introspection endpoint and
// returns its principal and how long it may be cached. The answer must
// say active true, and carry what a JWT access token must: iss equal to
// the issuer, the audience in aud, exp in the future, sub and client_id
// (or azp); token_type, when given, must be Bearer or DPoP (then with
// cnf.jkt), as must typ, and token_use access_token (accessTokenAnswer).
// An answer
// that is not RFC 7662 JSON fails closed like an unreachable endpoint.
func (g *Gateway) introspect(ctx context.Context, token string) (*principal, time.Time, *authError) {
	body, err := g.cfg.Introspector.Introspect(ctx, token)
	if err != nil {
		g.log.Warn("token introspection failed", zap.String("issuer", g.cfg.Issuer), zap.Error(err))
		return nil, time.Time{}, errIntrospectionUnavailable
	}
	var head map[string]json.RawMessage
	if err := json.Unmarshal(body, &head); err != nil || head == nil {
		g.log.Warn("token introspection: the answer is not a JSON object", zap.String("issuer", g.cfg.Issuer))
		return nil, time.Time{}, errIntrospectionUnavailable
	}
	switch string(head["active"]) {
	case "true":
	case "false":
		return nil, time.Time{}, errInactive
	default:
		g.log.Warn("token introspection: the answer has no boolean active", zap.String("issuer", g.cfg.Issuer))
		return nil, time.Time{}, errIntrospectionUnavailable
	}
	var tt string
	if raw, ok := head["token_type"]; ok {
		if json.Unmarshal(raw, &tt) != nil || !strings.EqualFold(tt, schemeBearer) && !strings.EqualFold(tt, schemeDPoP) {
			return nil, time.Time{}, invalidToken("the token is not an access token")
		}
	}
	if !accessTokenAnswer(head) {
		return nil, time.Time{}, invalidToken("the token is not an access token")
	}
	c := new(accesstoken.Claims)
	if err := json.Unmarshal(body, c); err != nil {
		return nil, time.Time{}, invalidToken(describeTokenError(err))
	}
	if strings.EqualFold(tt, schemeDPoP) && c.BoundKey() == "" {
		// RFC 9449 §6.2: a bound token's answer carries cnf.jkt. Without
		// it the binding could not be checked, and must not be read as
		// none.
		return nil, time.Time{}, invalidToken("the introspection answer says DPoP but names no key (cnf.jkt)")
	}
	if err := g.validator.Validate(c); err != nil {
		return nil, time.Time{}, invalidToken(describeTokenError(err))
	}
	if err := c.CheckRequired(); err != nil {
		return nil, time.Time{}, invalidToken(describeTokenError(err))
	}
	return g.principalOf(c, body), g.now().Add(g.cfg.IntrospectionCache), nil
}

// accessTokenAnswer reports whether the answer's own words for what the
// token is, besides token_type, leave it an access token: Ory Hydra's
// token_use ("access_token" or "refresh_token") and Keycloak's typ
// ("Bearer", "Refresh", "ID", "Offline", ...). A refresh or ID token that
// introspects as active must not pass for an access token (review
// s13-remote F1).
func accessTokenAnswer(head map[string]json.RawMessage) bool {
	var use, typ string
	if raw, ok := head["token_use"]; ok && (json.Unmarshal(raw, &use) != nil || use != "access_token") {
		return false
	}
	if raw, ok := head["typ"]; ok && (json.Unmarshal(raw, &typ) != nil || !strings.EqualFold(typ, schemeBearer) && !strings.EqualFold(typ, schemeDPoP)) {
		return false
	}
	return true
}

// RemoteIntrospection is an Introspector for a remote authorization
// server's introspection endpoint, which it calls with the gateway's own
// client credentials (HTTP Basic, RFC 6749 §2.3.1). The endpoint is
// given, or read from the issuer's metadata (introspection_endpoint) at
// the first use. Calls are time- and size-limited.
type RemoteIntrospection struct {
	issuer       string
	clientID     string
	clientSecret string
	client       *http.Client
	timeout      time.Duration
	maxBytes     int64

	mu       sync.Mutex
	endpoint string
}

// NewRemoteIntrospection returns a RemoteIntrospection. endpoint may be
// "" (discovered from issuer's metadata); client may be nil (a client
// with a 10 s timeout is used); redirects are followed within one origin
// only (sameOriginClient).
func NewRemoteIntrospection(issuer, endpoint, clientID, clientSecret string, client *http.Client) (*RemoteIntrospection, error) {
	if clientID == "" {
		return nil, errors.New("introspection needs a client_id")
	}
	if endpoint != "" {
		if _, err := parseHTTPSURL(endpoint); err != nil {
			return nil, fmt.Errorf("introspection endpoint: %w", err)
		}
	}
	client = sameOriginClient(client)
	return &RemoteIntrospection{
		issuer: issuer, endpoint: endpoint, clientID: clientID, clientSecret: clientSecret,
		client: client, timeout: 5 * time.Second, maxBytes: 64 << 10,
	}, nil
}

// Introspect posts token to the introspection endpoint.
func (ri *RemoteIntrospection) Introspect(ctx context.Context, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ri.timeout)
	defer cancel()
	endpoint, err := ri.introspectionEndpoint(ctx)
	if err != nil {
		return nil, err
	}
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(ri.clientID), url.QueryEscape(ri.clientSecret))
	resp, err := ri.client.Do(req)
	if err != nil {
		// The URL is in the error; the token is in the body, never in it.
		return nil, err
	}
	defer resp.Body.Close()
	body, err := readLimited(resp, ri.maxBytes)
	if err != nil {
		return nil, fmt.Errorf("introspection: %w", err)
	}
	return body, nil
}

// introspectionEndpoint is the configured endpoint, or the one the
// issuer's metadata names (fetched until it succeeds once).
func (ri *RemoteIntrospection) introspectionEndpoint(ctx context.Context) (string, error) {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if ri.endpoint != "" {
		return ri.endpoint, nil
	}
	md, err := discover(ctx, ri.client, ri.issuer, ri.maxBytes)
	if err != nil {
		return "", err
	}
	if md.IntrospectionEndpoint == "" {
		return "", errors.New("the issuer's metadata names no introspection_endpoint")
	}
	u, err := parseHTTPSURL(md.IntrospectionEndpoint)
	if err != nil {
		return "", fmt.Errorf("introspection_endpoint: %w", err)
	}
	ri.endpoint = u.String()
	return ri.endpoint, nil
}

// readLimited reads a 200 answer's body of at most max bytes.
func readLimited(resp *http.Response, max int64) ([]byte, error) {
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", resp.Request.URL.Redacted(), resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", resp.Request.URL.Redacted(), err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("%s: response larger than %d bytes", resp.Request.URL.Redacted(), max)
	}
	return bytes.TrimSpace(body), nil
}

var _ Introspector = (*RemoteIntrospection)(nil)
