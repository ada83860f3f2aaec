package issuer

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Client authentication methods.
const (
	authNone              = "none"
	authClientSecretBasic = "client_secret_basic"
	authClientSecretPost  = "client_secret_post"
	authPrivateKeyJWT     = "private_key_jwt"
)

// secretMethod reports whether method m authenticates with a secret.
func secretMethod(m string) bool { return m == authClientSecretBasic || m == authClientSecretPost }

// guessableSecret reports whether c authenticates with a secret someone
// could guess: an operator's, configured or bcrypt. A secret the issuer
// generated (256 random bits, kept as sha256: a stored client's or
// agent's) cannot be guessed, and neither can anything of a client with
// no secret.
func (c *Client) guessableSecret() bool {
	source := c.Source
	if c.agent != nil {
		source = c.agent.Source
	}
	return secretMethod(c.TokenEndpointAuthMethod) && (source == sourceConfig || !strings.HasPrefix(c.SecretHash, sha256Prefix))
}

const jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

const (
	// maxAssertionLifetime bounds exp of a client assertion, and so how
	// long its jti must be remembered.
	maxAssertionLifetime = time.Hour
	// assertionLeeway is the clock skew allowed on a client assertion's
	// exp, nbf and iat, as on an ID-JAG's (idJAGLeeway).
	assertionLeeway = 30 * time.Second
	// clientAssertionType is the explicit typ of a client assertion
	// (draft-ietf-oauth-rfc7523bis section 4), which clients may send.
	clientAssertionType = "client-authentication+jwt"
)

// authenticateClient authenticates the client of a back-channel request
// (token, PAR, revocation, introspection): none (public client, client_id
// form field), client_secret_basic, client_secret_post, private_key_jwt.
// Exactly one method per request. Slowed on failure (ratelimit.go). Errors are *Error (invalid_client, or invalid_request for a
// malformed request). A private_key_jwt assertion is returned unspent:
// the endpoint spends it (clientAssertion).
func (i *Issuer) authenticateClient(r *http.Request, f url.Values) (*Client, *clientAssertion, error) {
	ctx := r.Context()
	id, secret, basic, err := basicCredentials(r)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, ErrInvalidRequest.WithDescription("use exactly one client authentication method")
	}
	formID := f.Get("client_id")
	addr := clientAddr(r)
	var c *Client
	switch {
	case basic:
		if formID != "" && formID != id {
			return nil, nil, ErrInvalidClient.WithDescription("client_id does not match the credentials")
		}
		c, err = i.authSecret(ctx, id, secret, addr, authClientSecretBasic)
		return c, nil, err
	case post:
		if formID == "" {
			return nil, nil, ErrInvalidClient.WithDescription("client_id is required")
		}
		c, err = i.authSecret(ctx, formID, f.Get("client_secret"), addr, authClientSecretPost)
		return c, nil, err
	case assertion || assertionType:
		return i.authAssertion(ctx, r, f, formID, addr)
	}
	if formID == "" {
		return nil, nil, ErrInvalidClient.WithDescription("client authentication is required")
	}
	c, err = i.dir.lookupClient(ctx, formID)
	if err != nil {
		i.clientAuthFailed("", addr, "unknown_client")
		return nil, nil, asInvalidClient(err)
	}
	if !c.Public() {
		i.clientAuthFailed(formID, addr, "no_credentials")
		return nil, nil, ErrInvalidClient.WithDescription("client authentication is required")
	}
	return c, nil, nil
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
	// proof is the request's DPoP proof, not yet spent; nil for none.
	proof *dpop.Proof
	// assertion is the client assertion the client authenticated with,
	// not yet spent; nil for other methods.
	assertion *clientAssertion
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
	c, a, err := i.authenticateClient(r, f)
	if err != nil {
		i.writeErr(w, err)
		return nil, false
	}
	return &clientRequest{client: c, form: f, basis: basis, assertion: a}, true
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

// authSecret checks client_secret_basic / client_secret_post; used is the
// method the request used. A client uses the method it registered (RFC
// 7591 section 2); the other is refused before its secret is checked, and
// not counted as a failure: golang.org/x/oauth2's AuthStyleAutoDetect
// sends the header first, then the form, and its clients would slow
// themselves down. An agent registers no method and may use either.
func (i *Issuer) authSecret(ctx context.Context, id, secret, addr, used string) (*Client, error) {
	account := "client:" + id
	switch d, err := i.limiter.attemptDelay(ctx, account, addr); {
	case err != nil:
		return nil, err
	case d > 0:
		i.clientAuthFailed("", addr, "throttled") // before the lookup: the id may be no client's
		return nil, tooManyAttempts(d)
	}
	if err := i.limiter.slowAttempt(ctx, account); err != nil {
		// The caller went away, or the store is unreachable.
		return nil, ErrTemporarilyUnavailable.Wrap(err)
	}
	c, err := i.dir.lookupClient(ctx, id)
	if err != nil {
		i.limiter.recordFailure(ctx, "", addr) // unknown ids count against the address only
		i.clientAuthFailed("", addr, "unknown_client")
		return nil, asInvalidClient(err)
	}
	if c.agent == nil && secretMethod(c.TokenEndpointAuthMethod) && c.TokenEndpointAuthMethod != used {
		i.clientAuthFailed(id, addr, "wrong_method")
		return nil, ErrInvalidClient.WithDescription("client is not registered for " + used)
	}
	d, gen, err := i.limiter.reserveAttempt(ctx, account, addr)
	switch {
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
	if secretMethod(m) {
		if ok, err = i.dir.checkSecret(ctx, c.SecretHash, secret, i.limiter.isKnown(account, c.SecretHash, addr)); err != nil {
			i.limiter.attemptNotRun(ctx, account, addr, gen)
			return nil, hashBusyError(err)
		}
	}
	if !ok {
		if c.guessableSecret() {
			i.limiter.attemptFailed(ctx, account, addr, gen)
		} else {
			// Slowing the client down would protect nothing.
			i.limiter.attemptFailedHere(ctx, account, addr, gen)
		}
		i.clientAuthFailed(id, addr, "invalid_secret")
		return nil, ErrInvalidClient.WithDescription("client authentication failed")
	}
	i.limiter.attemptSucceeded(ctx, account, addr, gen)
	if !strings.HasPrefix(c.SecretHash, sha256Prefix) {
		// Only a check in the gate makes the pair known: a generated
		// secret (any registered client's) takes no slot, and its
		// pairs would fill the bounded memory.
		i.limiter.remember(account, c.SecretHash, addr)
	}
	return c, nil
}

// authAssertion checks private_key_jwt (RFC 7523 sections 2.2 and 3):
// iss = sub = client_id, exp required, jti used once, signed by one of the
// client's keys with a pinned alg. aud must be one value: the issuer
// identifier (what draft-ietf-oauth-rfc7523bis requires, and all an
// assertion typed client-authentication+jwt may name), or, for clients
// written to RFC 7523 and RFC 9126, the token endpoint URL or the URL of
// the endpoint the request went to (PAR, revocation, introspection). A
// list with any other value is refused: an assertion addressed to several
// servers could have been replayed from one of them. An assertion used
// before is refused here; the caller spends this one (clientAssertion).
func (i *Issuer) authAssertion(ctx context.Context, r *http.Request, f url.Values, formID, addr string) (*Client, *clientAssertion, error) {
	if f.Get("client_assertion_type") != jwtBearerAssertion {
		return nil, nil, ErrInvalidClient.WithDescription("client_assertion_type must be " + jwtBearerAssertion)
	}
	raw := f.Get("client_assertion")
	if raw == "" {
		return nil, nil, ErrInvalidClient.WithDescription("client_assertion is required")
	}
	var peek jwt.RegisteredClaims
	if err := accesstoken.CheckMembers(raw); err != nil {
		return nil, nil, ErrInvalidClient.WithDescription("malformed client assertion: " + err.Error())
	}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &peek); err != nil || peek.Subject == "" {
		return nil, nil, ErrInvalidClient.WithDescription("malformed client assertion")
	}
	id := peek.Subject
	if formID != "" && formID != id {
		return nil, nil, ErrInvalidClient.WithDescription("client_id does not match the assertion")
	}
	// A signature cannot be guessed: failures count against the address
	// only, so forged assertions cannot slow the client down.
	switch d, err := i.limiter.attemptDelay(ctx, "", addr); {
	case err != nil:
		return nil, nil, err
	case d > 0:
		i.clientAuthFailed("", addr, "throttled") // before the lookup
		return nil, nil, tooManyAttempts(d)
	}
	c, err := i.dir.lookupClient(ctx, id)
	if err != nil {
		i.limiter.recordFailure(ctx, "", addr)
		i.clientAuthFailed("", addr, "unknown_client")
		return nil, nil, asInvalidClient(err)
	}
	fail := func(desc string) (*Client, *clientAssertion, error) {
		return nil, nil, i.assertionRefused(ctx, id, addr, "invalid_assertion", desc)
	}
	if c.TokenEndpointAuthMethod != authPrivateKeyJWT {
		return fail("client is not registered for private_key_jwt")
	}
	endpoint := *i.issuer
	endpoint.Path = r.URL.Path
	algs := accesstoken.Algorithms()
	if c.TokenEndpointAuthSigningAlg != "" {
		algs = []string{c.TokenEndpointAuthSigningAlg}
	}
	var claims jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		if err := accesstoken.RefuseCritical(t); err != nil {
			return nil, err
		}
		if err := notOtherJWTType(t); err != nil {
			return nil, err
		}
		return i.assertionKeys(ctx, c, t)
	}, jwt.WithValidMethods(algs), jwt.WithIssuer(id), jwt.WithSubject(id),
		jwt.WithAudience(i.URL(), i.endpoint(pathToken), endpoint.String()),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(i.now), jwt.WithLeeway(assertionLeeway))
	if err != nil {
		return fail("client assertion is not valid")
	}
	if len(claims.Audience) != 1 {
		return fail("client assertion aud must be a single value")
	}
	if typedClientAssertion(tok) && claims.Audience[0] != i.URL() {
		return fail("a client assertion typed " + clientAssertionType + " must have the issuer identifier as its aud")
	}
	now := i.now()
	exp := claims.ExpiresAt.Time
	if claims.ID == "" || len(claims.ID) > maxJTILen {
		// Kept in the store until exp: bounded as an ID-JAG's is (a
		// PostgreSQL index row holds at most 2,704 bytes).
		return fail("client assertion needs a jti of at most 256 bytes")
	}
	if exp.Sub(now) > maxAssertionLifetime {
		return fail("client assertion lives too long")
	}
	a := &clientAssertion{clientID: id, jti: claims.ID, until: exp.Add(time.Minute), addr: addr}
	var used bool
	err = i.store.View(ctx, func(tx store.Tx) (err error) {
		used, err = assertionsIn(tx).used(id, claims.ID)
		return err
	})
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("read assertion jti: %w", err)
	case used:
		return nil, nil, i.assertionErr(ctx, a, errAssertionUsed)
	}
	return c, a, nil
}

// clientAssertion is a private_key_jwt assertion that authenticated a
// request, not yet spent. The endpoint spends it (use, in the transaction
// of the request's own write where it has one) only once the request is
// otherwise valid, as DPoP proofs (spendProof) and ID-JAGs are: a request
// refused for something the client can fix (a DPoP nonce, a grant type)
// leaves the assertion to its corrected retry, and of concurrent requests
// with one assertion one commits.
type clientAssertion struct {
	clientID, jti string
	until         time.Time // when its jti may be forgotten
	addr          string    // the request's clientAddr
}

// errAssertionUsed: use found the assertion spent; assertionErr answers it.
var errAssertionUsed = errors.New("client assertion already used")

// use records the assertion as spent in tx, errAssertionUsed when it was
// already; nil for no assertion.
func (a *clientAssertion) use(tx store.Tx) error {
	if a == nil {
		return nil
	}
	err := assertionsIn(tx).use(a.clientID, a.jti, a.until)
	if errors.Is(err, store.ErrAlreadyExists) {
		return errAssertionUsed
	}
	return err
}

// assertionErr is err of a write that spent a (use), errAssertionUsed
// turned into the refused client authentication it is.
func (i *Issuer) assertionErr(ctx context.Context, a *clientAssertion, err error) error {
	if !errors.Is(err, errAssertionUsed) {
		return err
	}
	return i.assertionRefused(ctx, a.clientID, a.addr, "assertion_reused", "client assertion was already used")
}

// spendAssertion spends the request's client assertion, for an endpoint
// with no write of its own to spend it in; nil for none.
//
// The spent jti is stored until the assertion expires (up to
// maxAssertionLifetime), and anyone can make a self-registered client
// with a key of their own: its spends here, where nothing else bounds
// how often it asks, come from its address's budget of writes before
// anyone signs in, as a public client's pushed requests do.
func (i *Issuer) spendAssertion(ctx context.Context, req *clientRequest) error {
	if req.assertion == nil {
		return nil
	}
	if req.client.selfRegistered() {
		if err := i.anonWrites.spend(ctx, req.assertion.addr, "too many client assertions from this address; retry later"); err != nil {
			return err
		}
	}
	err := i.store.Update(ctx, req.assertion.use)
	if err != nil && !errors.Is(err, errAssertionUsed) {
		return fmt.Errorf("record assertion jti: %w", err)
	}
	return i.assertionErr(ctx, req.assertion, err)
}

// assertionRefused answers a refused client assertion, the failure
// counted against the address only (see authAssertion).
func (i *Issuer) assertionRefused(ctx context.Context, id, addr, reason, desc string) error {
	i.limiter.recordFailure(ctx, "", addr)
	i.clientAuthFailed(id, addr, reason)
	return ErrInvalidClient.WithDescription(desc)
}

// assertionKeys returns the client's key that fits the assertion's kid and
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
		if key, err := keyFor(set, kid, alg); !errors.Is(err, errNoKeyFits) {
			return key, err
		}
	}
	return nil, errors.New("no client key fits the assertion")
}

var errNoKeyFits = errors.New("no key fits")

// notOtherJWTType refuses a client assertion whose typ marks it as
// another kind of JWT (RFC 8725 section 3.11): a +jwt media type other
// than clientAssertionType, such as at+jwt, dpop+jwt, oauth-id-jag+jwt or
// logout+jwt, signed by the client's key for another purpose. No typ, or
// JWT, passes: stock clients (oauth4webapi, most libraries) send none.
func notOtherJWTType(t *jwt.Token) error {
	v, present := t.Header["typ"]
	if !present {
		return nil
	}
	typ, ok := v.(string)
	if !ok {
		return errors.New("typ is not a string")
	}
	typ = mediaSubtype(typ)
	if strings.HasSuffix(typ, "+jwt") && typ != clientAssertionType {
		return errors.New("typ names another kind of JWT")
	}
	return nil
}

// typedClientAssertion: t's typ is clientAssertionType, the mark of a
// client written to draft-ietf-oauth-rfc7523bis, which has the issuer
// identifier as an assertion's sole aud and no endpoint URL (the audience
// injection it closes). Such a client gets no leeway meant for older ones.
func typedClientAssertion(t *jwt.Token) bool {
	typ, _ := t.Header["typ"].(string)
	return mediaSubtype(typ) == clientAssertionType
}

// mediaSubtype is a JWS typ read as the media type it names (RFC 7515
// section 4.1.9): lower case, without "application/", parameters or
// surrounding space, so "Application/AT+JWT; v=1 " is at+jwt.
func mediaSubtype(typ string) string {
	typ, _, _ = strings.Cut(typ, ";")
	return strings.TrimPrefix(strings.ToLower(strings.TrimSpace(typ)), "application/")
}

// keyFor is the one signature key of set that fits a JWS's kid (when it
// names one) and alg: errNoKeyFits when none does, and an error when
// several do. Trying each of several keys would make every request pay
// a signature check per key of a set anyone can publish (a Client ID
// Metadata Document's jwks_uri): 300 P-521 keys cost half a second of CPU
// per request (review s13-dos F1).
func keyFor(set []accesstoken.JWK, kid, alg string) (any, error) {
	var key any
	for _, j := range set {
		if kid != "" && j.Kid != kid {
			continue
		}
		pub, ok := verifyingKey(j, alg)
		if !ok {
			continue
		}
		if key != nil {
			if eq, ok := key.(interface{ Equal(crypto.PublicKey) bool }); ok && eq.Equal(pub) {
				continue // the same key listed twice (with and without alg, say)
			}
			return nil, errors.New("several keys fit: the JWS must name its key (kid), and each key needs a kid of its own")
		}
		key = pub
	}
	if key == nil {
		return nil, errNoKeyFits
	}
	return key, nil
}

// verifyingKey is j's public key when j can sign alg: for signatures, of
// alg's kind, and of no other alg.
func verifyingKey(j accesstoken.JWK, alg string) (crypto.PublicKey, bool) {
	if (j.Alg != "" && j.Alg != alg) || !j.ForSignatures() {
		return nil, false
	}
	pub, err := j.PublicKey()
	if err != nil || accesstoken.KeyFitsAlg(alg, pub) != nil {
		return nil, false
	}
	return pub, true
}

// maxJWKSKeys bounds a JWK Set's keys: a set is parsed whole, and a set
// anyone can publish must not cost more than that (review s13-dos F2).
const maxJWKSKeys = 32

// decodeJWKS reads a JWK Set whose member names are unambiguous, as
// client metadata's (decodeJSONObject): a "KTY" or a second "kid" read
// here as another reader of the set does not read it could pick another
// key than the client or its auditor sees.
func decodeJWKS(b []byte) ([]accesstoken.JWK, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := decodeJSONObject(b, &set); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	if len(set.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("decode jwks: %d keys, at most %d", len(set.Keys), maxJWKSKeys)
	}
	keys := make([]accesstoken.JWK, len(set.Keys))
	for n, raw := range set.Keys {
		if err := decodeJSONObject(raw, &keys[n]); err != nil {
			return nil, fmt.Errorf("decode jwks: key %d: %w", n, err)
		}
	}
	return keys, nil
}

// privateKeyMembers are the JWK members of private and symmetric key
// values (RFC 7518 sections 6.2.2, 6.3.2 and 6.4.1).
var privateKeyMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// checkJWKS checks a client's or agent's inline JWK Set: at least one key,
// each a public key of a kind an assertion is checked with, with no
// private or symmetric key member, which a JWK Set of a client must not
// hold: PublicKey reads only a non-empty d, and the set is stored and
// answered back as it came.
func checkJWKS(b []byte) error {
	keys, err := decodeJWKS(b)
	if err != nil || len(keys) == 0 {
		return errors.New("jwks must be a JWK Set with keys")
	}
	var members struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &members); err != nil {
		return errors.New("jwks must be a JWK Set with keys")
	}
	for n, k := range keys {
		// In any case: a reader matching names without case, as
		// encoding/json does, reads "P" or "\u212a" (Kelvin) as p or k.
		for name := range members.Keys[n] {
			if slices.ContainsFunc(privateKeyMembers, func(m string) bool { return strings.EqualFold(name, m) }) {
				return fmt.Errorf("jwks: key %d has private or symmetric key member %q", n, name)
			}
		}
		if _, err := k.PublicKey(); err != nil {
			return fmt.Errorf("jwks: %w", err)
		}
	}
	return nil
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
// its /56 for IPv6. One host usually owns a whole /64, and a customer
// the /56 (or /48) its ISP delegates (RIPE-690), any /64 of which it may
// put on one host: keyed per /64, each customer held 256 budgets or more.
// An IPv6 address that carries the IPv4 address it stands for is keyed
// by that: behind a NAT64 / SIIT translator every IPv4 client is
// 64:ff9b::<address> (RFC 6052), and one /56 would hold them all.
func clientAddr(r *http.Request) string { return clientPrefix(r, 56) }

// registrantAddr is the key of the per-address registration budget: as
// clientAddr, but an IPv6 client's /48. All addresses share one
// registration budget (registrationGlobalBurst), and a /48, which one
// customer may hold (a tunnel broker hands one out for free), has 256
// /56s: keyed per /56, one holder took all of it.
func registrantAddr(r *http.Request) string { return clientPrefix(r, 48) }

// clientPrefix is the request's source IP, or for IPv6 its prefix of
// bits.
func clientPrefix(r *http.Request, bits int) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = embeddedIPv4(ip.Unmap())
	if ip.Is6() {
		p, _ := ip.Prefix(bits)
		return p.String()
	}
	return ip.String()
}

// embeddedIPv4 is the IPv4 address ip stands for, or ip: NAT64 / SIIT's
// well-known prefix 64:ff9b::/96 (RFC 6052) carries it in the last 32
// bits, 6to4's 2002::/16 (RFC 3056) in bits 16 to 47, Teredo's 2001::/32
// (RFC 4380) in the last 32, inverted.
func embeddedIPv4(ip netip.Addr) netip.Addr {
	if !ip.Is6() {
		return ip
	}
	b := ip.As16()
	switch {
	case [12]byte(b[:12]) == [12]byte{0, 0x64, 0xff, 0x9b}:
		return netip.AddrFrom4([4]byte(b[12:]))
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte(b[2:6]))
	case [4]byte(b[:4]) == [4]byte{0x20, 0x01}:
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
	}
	return ip
}
