package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// CIMD caching (draft-ietf-oauth-client-id-metadata-document, "Metadata
// Caching"): the document's freshness (Cache-Control max-age, else
// Expires, less its age: Age, or the time since its Date when longer) is
// honoured up to cimdMaxCache; without either it is kept for
// cimdDefaultCache less that age; no-store, no-cache and max-age=0 mean
// it is fetched on every use. Errors are never cached.
const (
	cimdDefaultCache = time.Hour
	cimdMaxCache     = 24 * time.Hour
	// Documents admitted to the store's cache, per hour: anyone can name
	// documents of their own, and each cached one lives up to
	// cimdMaxCache. cimdCacheBurst over all hosts (at most about 2500
	// entries of at most maxStoredRegistration bytes and their URLs);
	// cimdHostBurst per host, so that one host's documents take a tenth
	// of that at most, and the documents of other hosts are still cached.
	// Past either, a document is kept in cimdMemory instead.
	cimdCacheBurst = 100
	cimdHostBurst  = 10
	// cimdMaxHosts bounds the hosts whose budgets are tracked (a bucket
	// lives until it is full again, at most an hour): past it, a document
	// of a host not tracked is kept in cimdMemory.
	cimdMaxHosts = 10_000
	// cimdFetchBurst documents fetched per address, refilled at that many
	// a minute: each is a request the issuer sends to a URL anyone names.
	cimdFetchBurst = 60
	maxClientIDLen = 2000
)

// cimdFetcher fetches what clients publish at their own URLs, over one
// SSRF-protected HTTP client: Client ID Metadata Documents (cached in the
// store) and the jwks_uri of private_key_jwt clients (cached in memory).
type cimdFetcher struct {
	client     *http.Client
	cfg        *Config
	store      store.Store
	log        *zap.Logger
	now        func() time.Time
	fetches    *rateLimiter // documents fetched, per address
	hosts      *rateLimiter // documents cached in the store, per host
	caches     *rateLimiter // documents cached in the store, over all hosts (key "")
	anonWrites *rateLimiter // store writes per address: a cached document is one
	memory     *cimdMemory  // documents the budgets kept out of the store

	jwks *jwksCache // client jwks_uri
}

func newCIMDFetcher(cfg *Config, st store.Store, log *zap.Logger, now func() time.Time, anonWrites, fetches *rateLimiter) (*cimdFetcher, error) {
	client, err := newFetchClient(cfg.HTTPClient, cfg.CIMDAllowPrivate, cfg.CIMDTimeout)
	if err != nil {
		return nil, err
	}
	return &cimdFetcher{
		client:     client,
		cfg:        cfg,
		store:      st,
		log:        log,
		now:        now,
		fetches:    fetches,
		hosts:      newRateLimiter(now, cimdHostBurst, time.Hour, newMemCounters(now, cimdMaxHosts, false)),
		caches:     newRateLimiter(now, cimdCacheBurst, time.Hour, nil),
		anonWrites: anonWrites,
		memory:     newCIMDMemory(cimdMemoryEntries),
		jwks:       newJWKSCache(client, now),
	}, nil
}

// isClientID reports whether a client_id names a Client ID Metadata
// Document: an https URL with a path (http too when private targets are
// allowed, for development).
func (f *cimdFetcher) isClientID(id string) bool {
	u, ok := documentURL(id)
	return ok && (u.Scheme == "https" || f.cfg.CIMDAllowPrivate)
}

// documentURL parses id when it has a Client ID Metadata Document's
// shape, whatever cimd_allow_private says: an http or https URL (in any
// case of the scheme, which url.Parse lowers) with a host and a path.
// Such an id is a client's for whoever publishes a document at it, so
// no user may have it for a name (a token whose sub equals its
// client_id is a client's own).
func documentURL(id string) (*url.URL, bool) {
	u, err := url.Parse(id)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, false
	}
	return u, u.Path != "" && u.Path != "/"
}

// errDocumentName refuses a user name that is a client metadata
// document's client id (documentURL).
const errDocumentName = "a client metadata document has this id (an http or https URL with a host and a path)"

// fetch fetches, validates and caches a Client ID Metadata Document
// (SSRF-protected, size/time limited, HTTP caching honoured, errors never
// cached) and returns it as a public (or private_key_jwt) Client.
func (f *cimdFetcher) fetch(ctx context.Context, clientID string) (*Client, error) {
	if err := f.checkURL(clientID); err != nil {
		return nil, ErrInvalidClient.WithDescription("client_id is not a valid client metadata URL").Wrap(err)
	}
	if c, ok := f.held(ctx, clientID); ok {
		return c, nil
	}
	// Anyone can name any URL: each fetch is a request sent for them.
	switch d, err := f.fetches.take(ctx, contextAddr(ctx)); {
	case err != nil:
		return nil, err
	case d > 0:
		return nil, ErrInvalidClient.WithDescription("too many client metadata documents fetched from this address; retry later")
	}
	c, ttl, err := f.download(ctx, clientID)
	if err != nil {
		f.log.Info("client metadata document refused", zap.String("client_id", truncate(clientID, 200)), zap.Error(err))
		return nil, ErrInvalidClient.WithDescription("client metadata document could not be used: " + describeCIMDError(err)).Wrap(err)
	}
	if ttl > 0 {
		f.keep(ctx, clientID, c, f.now().Add(ttl))
	}
	return c, nil
}

// keep caches a document until exp: in the store if its budgets admit it
// (cacheAllowed), else in this process's memory.
func (f *cimdFetcher) keep(ctx context.Context, clientID string, c *Client, exp time.Time) {
	rec := clientRecord(c)
	if !f.cacheAllowed(ctx, clientID) {
		f.memory.put(clientID, rec, exp)
		return
	}
	err := f.store.Update(ctx, func(tx store.Tx) error {
		return cimdIn(tx).put(f.cacheKey(clientID), &cimdEntry{Client: *rec, ExpiresAt: exp, Public: !f.cfg.CIMDAllowPrivate})
	})
	if err != nil {
		// The document is valid: failing to store it costs the store's
		// cache, not its use.
		f.log.Warn("client metadata document: cache write", zap.Error(err))
		f.memory.put(clientID, rec, exp)
	}
}

// cacheAllowed spends a token of each budget an entry in the store takes:
// the document's host's, all hosts', then the caller's address's store
// writes. The first that refuses ends it, so a host past its budget
// spends nothing of the others', and the caller's writes are spent only
// for an entry that will be written.
func (f *cimdFetcher) cacheAllowed(ctx context.Context, clientID string) bool {
	u, err := url.Parse(clientID)
	if err != nil {
		return false
	}
	for _, b := range []struct {
		l   *rateLimiter
		key string
	}{
		{f.hosts, strings.ToLower(u.Hostname())},
		{f.caches, ""},
		{f.anonWrites, contextAddr(ctx)},
	} {
		if d, err := b.l.take(ctx, b.key); err != nil || d > 0 {
			return false
		}
	}
	return true
}

// held returns the document cached in the store or remembered in this
// process's memory, if it has not expired.
func (f *cimdFetcher) held(ctx context.Context, clientID string) (*Client, bool) {
	if c, ok := f.cached(ctx, clientID); ok {
		return c, true
	}
	return f.memory.get(clientID, f.now())
}

func (f *cimdFetcher) cached(ctx context.Context, clientID string) (*Client, bool) {
	var e *cimdEntry
	err := f.store.View(ctx, func(tx store.Tx) error {
		var err error
		e, err = cimdIn(tx).get(f.cacheKey(clientID))
		return err
	})
	// Without the option, an entry an earlier release wrote under the
	// client_id (it did with the option on too) is fetched again.
	if err != nil || !f.now().Before(e.ExpiresAt) || !f.cfg.CIMDAllowPrivate && !e.Public {
		return nil, false
	}
	return e.Client.client(), true
}

// cacheKey is where the store caches clientID's document. One fetched
// with private targets allowed is kept apart, under a key no client_id
// has (one holds no space): this issuer after a reload that stops
// allowing them would otherwise take a document of a private address
// from the store until it expired (up to cimdMaxCache), as would
// another instance on the store that does not allow them.
func (f *cimdFetcher) cacheKey(clientID string) string {
	if f.cfg.CIMDAllowPrivate {
		return "private " + clientID
	}
	return clientID
}

// checkURL applies the draft's rules for client identifier URLs:
// https, a host, a path without dot segments (in any spelling a server
// reads as one), no fragment, no userinfo.
// A URL is ASCII, of the characters RFC 3986 allows, and so is its host
// once decoded: the pages
// show the client_id as the application's identity, and a host such as
// https://аpp.example.com (a Cyrillic а) would read there as another's,
// where a browser's address bar shows its xn-- form.
func (f *cimdFetcher) checkURL(id string) error {
	if len(id) > maxClientIDLen {
		return errors.New("too long")
	}
	for _, r := range id {
		if r <= ' ' || r >= 0x7f {
			return errors.New("not an ASCII URL")
		}
	}
	// Characters no URI holds, which readers take differently: a WHATWG
	// parser (a browser) reads \ as /, so ..\ is a dot segment to it.
	if strings.ContainsAny(id, "\\\"<>^`{|}") {
		return errors.New("not a URL: a character RFC 3986 does not allow")
	}
	u, err := url.Parse(id)
	if err != nil {
		return err
	}
	if !plainHost(u.Hostname()) {
		return errors.New("the host must be an ASCII DNS name (xn-- form) or a dotted IP address")
	}
	switch {
	case u.Scheme == "http" && f.cfg.CIMDAllowPrivate:
	case u.Scheme != "https":
		return errors.New("scheme must be https")
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" || strings.Contains(id, "#") {
		return errors.New("needs a host and no userinfo or fragment")
	}
	if u.Path == "" || u.Path == "/" {
		return errors.New("needs a path")
	}
	// Dot segments as servers read them, not only as RFC 3986 spells
	// them: decoded (nginx decodes %2F, IIS %5C, before resolving them),
	// with \ a separator (IIS), a segment's ;parameters dropped (Tomcat,
	// Jetty: "..;x" is ".."), and so after each further decoding a server
	// may make (..%255C is ..\ to one that decodes twice), up to
	// maxPathDecodings: a path still escaped past them is refused, as each
	// decoding reads the whole path (a chain of %25 would take one per
	// two bytes).
	path := u.EscapedPath()
	for range maxPathDecodings + 1 {
		next := unescapeValid(path)
		// Nor any byte but printable ASCII once decoded: spellings of a
		// dot that some reader takes for one (an overlong %c0%ae, a
		// fullwidth %EF%BC%8E under NFKC or Windows' best-fit mapping),
		// a NUL a C server ends a segment at ("..%00"), a line break.
		if strings.IndexFunc(next, func(r rune) bool { return r < ' ' || r >= 0x7f }) >= 0 {
			return errors.New("the path decodes to a control character or non-ASCII")
		}
		for _, seg := range strings.FieldsFunc(next, func(r rune) bool { return r == '/' || r == '\\' }) {
			if seg, _, _ = strings.Cut(seg, ";"); seg == "." || seg == ".." {
				return errors.New("dot segments are not allowed")
			}
		}
		if next == path {
			return nil
		}
		path = next
	}
	return errors.New("the path is escaped too deeply")
}

// maxPathDecodings is how many decodings of a client_id's path checkURL
// follows (%25252e is . after three).
const maxPathDecodings = 3

// unescapeValid decodes each %XX of s and keeps a % that starts none, as
// a server decoding an already decoded path does. Each decoding that
// changes s shortens it.
func unescapeValid(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if h, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(h))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// clientKeys returns a client's JWK Set: registered inline, or fetched from
// jwks_uri (SSRF-protected client, cached, see jwksCache).
func (f *cimdFetcher) clientKeys(ctx context.Context, c *Client, refresh bool) ([]accesstoken.JWK, error) {
	if len(c.JWKS) > 0 {
		return decodeJWKS(c.JWKS)
	}
	if c.JWKSURI == "" {
		return nil, errors.New("client has no keys")
	}
	return f.jwks.keys(ctx, c.JWKSURI, refresh)
}

// cimdError is a reason a document was refused that is safe to show:
// what a document served with status 200 is or says.
type cimdError string

func (e cimdError) Error() string { return string(e) }

// describeCIMDError is the reason shown for a refused document. Anyone
// can name any URL as a client_id, so every way of not getting a document
// reads the same (a name that does not resolve, or resolves to a private
// address; a port that refuses, or never answers; a redirect; a status
// other than 200): telling them apart would answer, for anyone, which
// internal names exist and which hosts and ports answer the issuer. The
// log has the reason.
func describeCIMDError(err error) string {
	var ce cimdError
	if errors.As(err, &ce) {
		return string(ce)
	}
	return "the document could not be fetched"
}

// download fetches and validates the document and returns the client
// and how long it may be cached (0: not at all).
func (f *cimdFetcher) download(ctx context.Context, clientID string) (*Client, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.CIMDTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientID, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("the document URL answered HTTP %d", resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, 0, cimdError("the document is not application/json")
	}
	if resp.ContentLength > f.cfg.CIMDMaxBytes {
		return nil, 0, cimdError("the document is too large")
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.cfg.CIMDMaxBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	if int64(len(body)) > f.cfg.CIMDMaxBytes {
		return nil, 0, cimdError("the document is too large")
	}
	var m clientMetadata
	switch err := decodeJSONObject(body, &m); {
	case errors.Is(err, errMemberNames):
		return nil, 0, cimdError("the document repeats a member name or spells one in another case")
	case err != nil:
		return nil, 0, cimdError("the document is not a valid JSON client metadata object")
	}
	c, err := validateCIMD(clientID, &m, idTokenAlgs(f.cfg.SigningAlg))
	if err != nil {
		return nil, 0, err
	}
	return c, cacheLifetime(resp.Header, f.now()), nil
}

// validateCIMD checks a document's contents against its URL; idAlgs are
// the ID-token algorithms offered.
func validateCIMD(clientID string, m *clientMetadata, idAlgs []string) (*Client, error) {
	// Simple string comparison, no normalization (draft section 3).
	if m.ClientID != clientID {
		return nil, cimdError("the document's client_id does not equal its URL")
	}
	if m.ClientSecret != nil || m.ClientSecretExpiresAt != nil {
		return nil, cimdError("the document must not contain a client secret")
	}
	if strings.TrimSpace(m.ClientName) == "" {
		return nil, cimdError("the document has no client_name")
	}
	name, err := validateClientName(m.ClientName)
	if err != nil {
		return nil, cimdError("the document's client_name is not acceptable")
	}
	if len(m.RedirectURIs) == 0 {
		return nil, cimdError("the document has no redirect_uris")
	}
	method := m.TokenEndpointAuthMethod
	if method == "" {
		method = "none"
	}
	if method != "none" && method != "private_key_jwt" {
		return nil, cimdError("token_endpoint_auth_method must be none or private_key_jwt")
	}
	jwks, jwksURI, err := validateClientKeys(method, m.JWKS, m.JWKSURI)
	if err != nil {
		return nil, cimdError("private_key_jwt requires exactly one of jwks and jwks_uri (https)")
	}
	if method == "none" && (m.hasJWKS() || m.JWKSURI != "") {
		return nil, cimdError("jwks and jwks_uri are only for private_key_jwt")
	}
	grants := m.GrantTypes
	if len(grants) == 0 {
		grants = []string{"authorization_code"}
	}
	for _, g := range grants {
		switch g {
		case "authorization_code", "refresh_token":
		case "client_credentials":
			// Anyone can publish a document; without a user nothing would
			// bound the token.
			return nil, cimdError("client_credentials is not available to metadata document clients")
		case grantJWTBearer:
			// Enterprise-managed authorization names such a client: the
			// ID-JAG bounds the token by a user, and a trusted IdP issued
			// it to this client_id. It stays a bearer artifact until
			// redeemed, so only a client proving its key may redeem it.
			if method != authPrivateKeyJWT {
				return nil, cimdError("the jwt-bearer grant needs token_endpoint_auth_method private_key_jwt")
			}
		default:
			return nil, cimdError(fmt.Sprintf("unsupported grant_type %q", truncate(g, 40)))
		}
	}
	for _, rt := range m.ResponseTypes {
		if rt != "code" {
			return nil, cimdError(fmt.Sprintf("unsupported response_type %q", truncate(rt, 40)))
		}
	}
	c, err := m.client(Client{ID: clientID, Name: name, GrantTypes: slices.Clone(grants), TokenEndpointAuthMethod: method,
		JWKS: jwks, JWKSURI: jwksURI, Source: sourceCIMD}, true, idAlgs)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, cimdError(e.Description)
		}
		return nil, err
	}
	if err := checkStoredSize(c); err != nil {
		return nil, cimdError(fmt.Sprintf("the document is too large: client_id, client_name, redirect_uris, post_logout_redirect_uris and jwks together must fit in %d bytes", maxStoredRegistration))
	}
	return c, nil
}

// cacheLifetime is how long a document may be reused (RFC 9111): its
// freshness lifetime, Cache-Control max-age or else Expires less Date
// (an invalid Expires, "0" above all, is in the past: section 5.3; a
// max-age given twice makes it stale), less
// its age (section 4.2.3): the larger of the Age a cache on the way has
// held it and how long before now its Date is (apparent_age: a cache
// that sends no Age keeps the origin's Date), at most cimdMaxCache;
// cimdDefaultCache less that age when the answer says neither.
func cacheLifetime(h http.Header, now time.Time) time.Duration {
	// Durations are bounded by maxDelta (RFC 9111 section 1.2.2's 2^31
	// seconds), so that none overflows.
	const maxDelta = time.Duration(1<<31) * time.Second
	ttl, known := time.Duration(0), false
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(arg, `"`), 10, 64)
				// Given twice, the answer is stale (section 4.2.1:
				// the first is used, or it is stale).
				if err != nil || n <= 0 || known {
					return 0
				}
				ttl, known = time.Duration(min(n, int64(maxDelta/time.Second)))*time.Second, true
			}
		}
	}
	date, dateErr := http.ParseTime(h.Get("Date"))
	if exp := h.Values("Expires"); !known && len(exp) > 0 {
		t, err := http.ParseTime(exp[0])
		if err != nil {
			return 0
		}
		from := now
		if dateErr == nil {
			from = date
		}
		ttl, known = max(min(t.Sub(from), maxDelta), 0), true
	}
	if !known {
		ttl = cimdDefaultCache
	}
	var age time.Duration
	// An Age past int64 is huge, not absent (section 1.2.2).
	if a, err := strconv.ParseInt(h.Get("Age"), 10, 64); (err == nil || errors.Is(err, strconv.ErrRange)) && a > 0 {
		age = time.Duration(min(a, int64(maxDelta/time.Second))) * time.Second
	}
	if dateErr == nil {
		age = max(age, min(now.Sub(date), maxDelta))
	}
	return min(max(ttl-age, 0), cimdMaxCache)
}
