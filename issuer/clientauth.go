package issuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Client authentication methods.
const (
	authNone              = "none"
	authClientSecretBasic = "client_secret_basic"
	authClientSecretPost  = "client_secret_post"
	authPrivateKeyJWT     = "private_key_jwt"
)

const jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

const (
	// maxAssertionLifetime bounds exp of a client assertion, and so how
	// long its jti must be remembered.
	maxAssertionLifetime = time.Hour
)

// authenticateClient authenticates the client of a back-channel request
// (token, PAR, revocation, introspection): none (public client, client_id
// form field), client_secret_basic, client_secret_post, private_key_jwt.
// Exactly one method per request. Slowed on failure (ratelimit.go). Errors are *Error (invalid_client, or invalid_request for a
// malformed request).
func (i *Issuer) authenticateClient(r *http.Request, f url.Values) (*Client, error) {
	ctx := r.Context()
	id, secret, basic, err := basicCredentials(r)
	if err != nil {
		return nil, err
	}
	_, post := f["client_secret"]
	_, assertion := f["client_assertion"]
	_, assertionType := f["client_assertion_type"]
	n := 0
	for _, used := range []bool{basic, post, assertion || assertionType} {
		if used {
			n++
		}
	}
	if n > 1 {
		return nil, ErrInvalidRequest.WithDescription("use exactly one client authentication method")
	}
	formID := f.Get("client_id")
	addr := clientAddr(r)
	switch {
	case basic:
		if formID != "" && formID != id {
			return nil, ErrInvalidClient.WithDescription("client_id does not match the credentials")
		}
		return i.authSecret(ctx, id, secret, addr)
	case post:
		if formID == "" {
			return nil, ErrInvalidClient.WithDescription("client_id is required")
		}
		return i.authSecret(ctx, formID, f.Get("client_secret"), addr)
	case assertion || assertionType:
		return i.authAssertion(ctx, r, f, formID, addr)
	}
	if formID == "" {
		return nil, ErrInvalidClient.WithDescription("client authentication is required")
	}
	c, err := i.dir.lookupClient(ctx, formID)
	if err != nil {
		i.clientAuthFailed(formID, addr, "unknown_client")
		return nil, asInvalidClient(err)
	}
	if !c.Public() {
		i.clientAuthFailed(formID, addr, "no_credentials")
		return nil, ErrInvalidClient.WithDescription("client authentication is required")
	}
	return c, nil
}

// clientRequest is a back-channel request (token, PAR, revocation,
// introspection) read once: its form and the client it authenticated.
type clientRequest struct {
	client *Client
	form   url.Values
	// basis is when the request began, before its client authenticated: a
	// revocation after it refuses what the request would issue.
	basis time.Time
	// jkt is the thumbprint of the request's DPoP proof key, "" when it
	// carries no proof.
	jkt string
}

// authenticatedPost starts a back-channel endpoint: POST only, the form
// read (readForm), then client authentication. It has answered when ok is
// false.
func (i *Issuer) authenticatedPost(w http.ResponseWriter, r *http.Request) (req *clientRequest, ok bool) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return nil, false
	}
	basis := i.now()
	f, err := readForm(r)
	if err != nil {
		i.writeErr(w, err)
		return nil, false
	}
	c, err := i.authenticateClient(r, f)
	if err != nil {
		i.writeErr(w, err)
		return nil, false
	}
	return &clientRequest{client: c, form: f, basis: basis}, true
}

// basicCredentials decodes HTTP Basic client credentials. RFC 6749
// section 2.3.1: id and secret are form-urlencoded before Basic encoding.
func basicCredentials(r *http.Request) (id, secret string, ok bool, err error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", "", false, nil
	}
	if len(vals) > 1 {
		return "", "", false, ErrInvalidRequest.WithDescription("repeated Authorization header")
	}
	scheme, payload, _ := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", false, nil // other schemes (DPoP, Bearer) are not client authentication
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	if err != nil {
		return "", "", false, ErrInvalidClient.WithDescription("malformed Basic credentials")
	}
	u, p, found := strings.Cut(string(raw), ":")
	if !found {
		return "", "", false, ErrInvalidClient.WithDescription("malformed Basic credentials")
	}
	if id, err = url.QueryUnescape(u); err == nil {
		secret, err = url.QueryUnescape(p)
	}
	if err != nil || id == "" {
		return "", "", false, ErrInvalidClient.WithDescription("malformed Basic credentials")
	}
	return id, secret, true, nil
}

// tooManyAttempts is the answer while a client or address is slowed down.
func tooManyAttempts(d time.Duration) *Error {
	return &Error{Code: "invalid_client", Description: "too many failed attempts; retry later",
		Status: http.StatusTooManyRequests, RetryAfter: d}
}

// authSecret checks client_secret_basic / client_secret_post. A client
// registered for either may use either: both send the same secret.
func (i *Issuer) authSecret(ctx context.Context, id, secret, addr string) (*Client, error) {
	account := "client:" + id
	switch d, err := i.limiter.attemptDelay(ctx, account, addr); {
	case err != nil:
		return nil, err
	case d > 0:
		i.clientAuthFailed(id, addr, "throttled")
		return nil, tooManyAttempts(d)
	}
	if err := i.limiter.slowAttempt(ctx, account); err != nil {
		// The caller went away, or the store is unreachable.
		return nil, ErrTemporarilyUnavailable.Wrap(err)
	}
	c, err := i.dir.lookupClient(ctx, id)
	if err != nil {
		i.limiter.recordFailure(ctx, "", addr) // unknown ids count against the address only
		i.clientAuthFailed(id, addr, "unknown_client")
		return nil, asInvalidClient(err)
	}
	switch d, err := i.limiter.reserveAttempt(ctx, account, addr); {
	case errors.Is(err, errHashBusy):
		return nil, hashBusyError(err)
	case err != nil:
		return nil, ErrTemporarilyUnavailable.Wrap(err)
	case d > 0:
		i.clientAuthFailed(id, addr, "throttled")
		return nil, tooManyAttempts(d)
	}
	m := c.TokenEndpointAuthMethod
	ok := false
	if m == authClientSecretBasic || m == authClientSecretPost {
		if ok, err = i.dir.checkSecret(ctx, c.SecretHash, secret); err != nil {
			i.limiter.attemptNotRun(ctx, account, addr)
			return nil, hashBusyError(err)
		}
	}
	if !ok {
		i.limiter.attemptFailed(ctx, account, addr)
		i.clientAuthFailed(id, addr, "invalid_secret")
		return nil, ErrInvalidClient.WithDescription("client authentication failed")
	}
	i.limiter.attemptSucceeded(ctx, account, addr)
	return c, nil
}

// authAssertion checks private_key_jwt (RFC 7523 sections 2.2 and 3):
// iss = sub = client_id, exp required, jti used once, signed by one of the
// client's keys with a pinned alg. aud must be one value: the issuer
// identifier (what draft-ietf-oauth-rfc7523bis requires), or, for clients
// written to RFC 7523 and RFC 9126, the token endpoint URL or the URL of
// the endpoint the request went to (PAR, revocation, introspection). A
// list with any other value is refused: an assertion addressed to several
// servers could have been replayed from one of them.
func (i *Issuer) authAssertion(ctx context.Context, r *http.Request, f url.Values, formID, addr string) (*Client, error) {
	if f.Get("client_assertion_type") != jwtBearerAssertion {
		return nil, ErrInvalidClient.WithDescription("client_assertion_type must be " + jwtBearerAssertion)
	}
	raw := f.Get("client_assertion")
	if raw == "" {
		return nil, ErrInvalidClient.WithDescription("client_assertion is required")
	}
	var peek jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &peek); err != nil || peek.Subject == "" {
		return nil, ErrInvalidClient.WithDescription("malformed client assertion")
	}
	id := peek.Subject
	if formID != "" && formID != id {
		return nil, ErrInvalidClient.WithDescription("client_id does not match the assertion")
	}
	// A signature cannot be guessed: failures count against the address
	// only, so forged assertions cannot slow the client down.
	switch d, err := i.limiter.attemptDelay(ctx, "", addr); {
	case err != nil:
		return nil, err
	case d > 0:
		i.clientAuthFailed(id, addr, "throttled")
		return nil, tooManyAttempts(d)
	}
	c, err := i.dir.lookupClient(ctx, id)
	if err != nil {
		i.limiter.recordFailure(ctx, "", addr)
		i.clientAuthFailed(id, addr, "unknown_client")
		return nil, asInvalidClient(err)
	}
	reason := "invalid_assertion"
	fail := func(desc string) (*Client, error) {
		i.limiter.recordFailure(ctx, "", addr)
		i.clientAuthFailed(id, addr, reason)
		return nil, ErrInvalidClient.WithDescription(desc)
	}
	if c.TokenEndpointAuthMethod != authPrivateKeyJWT {
		return fail("client is not registered for private_key_jwt")
	}
	endpoint := *i.issuer
	endpoint.Path = r.URL.Path
	var claims jwt.RegisteredClaims
	_, err = jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		if err := accesstoken.RefuseCritical(t); err != nil {
			return nil, err
		}
		return i.assertionKeys(ctx, c, t)
	}, jwt.WithValidMethods(accesstoken.Algorithms()), jwt.WithIssuer(id), jwt.WithSubject(id),
		jwt.WithAudience(i.URL(), i.endpoint(pathToken), endpoint.String()),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(i.now), jwt.WithLeeway(30*time.Second))
	if err != nil {
		return fail("client assertion is not valid")
	}
	if len(claims.Audience) != 1 {
		return fail("client assertion aud must be a single value")
	}
	now := i.now()
	exp := claims.ExpiresAt.Time
	if claims.ID == "" {
		return fail("client assertion needs a jti")
	}
	if exp.Sub(now) > maxAssertionLifetime {
		return fail("client assertion lives too long")
	}
	err = i.store.Update(ctx, func(tx store.Tx) error {
		return assertionsIn(tx).use(id, claims.ID, exp.Add(time.Minute))
	})
	if errors.Is(err, store.ErrAlreadyExists) {
		reason = "assertion_reused"
		return fail("client assertion was already used")
	}
	if err != nil {
		return nil, fmt.Errorf("record assertion jti: %w", err)
	}
	return c, nil
}

// assertionKeys returns the client's keys that fit the assertion's kid and
// alg, refetching a jwks_uri once when none fits (the client rotated).
func (i *Issuer) assertionKeys(ctx context.Context, c *Client, t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	alg := t.Method.Alg()
	for _, refresh := range []bool{false, true} {
		if refresh && c.JWKSURI == "" {
			break
		}
		set, err := i.cimd.clientKeys(ctx, c, refresh)
		if err != nil {
			return nil, err
		}
		if ks := keysFor(set, kid, alg); len(ks.Keys) > 0 {
			return ks, nil
		}
	}
	return nil, errors.New("no client key fits the assertion")
}

// keysFor are the signature keys of set that fit a JWS's kid (when it
// names one) and alg.
func keysFor(set []accesstoken.JWK, kid, alg string) jwt.VerificationKeySet {
	var ks jwt.VerificationKeySet
	for _, j := range set {
		if (kid != "" && j.Kid != kid) || (j.Alg != "" && j.Alg != alg) || !j.ForSignatures() {
			continue
		}
		pub, err := j.PublicKey()
		if err != nil || accesstoken.KeyFitsAlg(alg, pub) != nil {
			continue
		}
		ks.Keys = append(ks.Keys, pub)
	}
	return ks
}

func decodeJWKS(b []byte) ([]accesstoken.JWK, error) {
	var set struct {
		Keys []accesstoken.JWK `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	return set.Keys, nil
}

// asInvalidClient turns a lookup failure into invalid_client, keeping the
// cause for logs only.
func asInvalidClient(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Code == ErrInvalidClient.Code {
		return e
	}
	if errors.Is(err, store.ErrNotFound) || errors.As(err, &e) {
		return ErrInvalidClient.WithDescription("unknown client").Wrap(err)
	}
	return err
}

// clientAddr is the rate-limiting key of the request's source: the IP, or
// its /64 for IPv6 (one host usually owns the whole prefix).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
