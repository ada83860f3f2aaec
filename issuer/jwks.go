package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

const (
	// jwksCacheTTL is how long a fetched JWK Set is reused.
	jwksCacheTTL = 5 * time.Minute
	// jwksMinRefetch is the least time between two fetches of one JWK
	// Set: a key that fits no cached key (a rotation) asks for a refetch,
	// and a flood of assertions with made-up kids must not become a flood
	// of fetches.
	jwksMinRefetch = 30 * time.Second
	maxJWKSBytes   = 64 << 10
	// maxJWKSEntries bounds the cache: past it expired entries are
	// dropped (clients' jwks_uri come and go), and then live ones.
	maxJWKSEntries = 1000
)

// jwksCache fetches and caches JWK Sets published at URLs (a client's
// jwks_uri, a trusted IdP's), over one HTTP client, time- and
// size-limited.
type jwksCache struct {
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]cachedJWKS // by URL
	// fetches is the fetch under way of each URL, which every request
	// wanting that URL's keys meanwhile waits for: anyone may name a
	// jwks_uri (a Client ID Metadata Document's), and a burst of
	// assertions must not become as many fetches at once.
	fetches singleflight.Group
}

type cachedJWKS struct {
	keys    []accesstoken.JWK
	fetched time.Time // when keys were fetched; zero for none
	tried   time.Time // the last fetch
	err     error     // of the last fetch
}

func newJWKSCache(client *http.Client, now func() time.Time) *jwksCache {
	return &jwksCache{client: client, now: now, entries: make(map[string]cachedJWKS)}
}

// keys returns the JWK Set at uri: cached for jwksCacheTTL; refresh asks
// for a fetch. uri is fetched at most once per jwksMinRefetch, failures
// included (they are the answer meanwhile), and once at a time: requests
// that want it while it is fetched wait for that fetch. The fetch is the
// URL's, not the request's that started it: it runs on when that
// request ends (the client's timeout bounds it), so the others get its
// answer and a request's end is never remembered as the URL's failure.
// A failed refresh keeps the keys.
func (c *jwksCache) keys(ctx context.Context, uri string, refresh bool) ([]accesstoken.JWK, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := c.now()
	c.mu.Lock()
	cached, ok := c.entries[uri]
	fresh := ok && !cached.fetched.IsZero() && now.Sub(cached.fetched) < jwksCacheTTL
	recent := ok && now.Sub(cached.tried) < jwksMinRefetch
	switch {
	case fresh && (!refresh || recent):
		c.mu.Unlock()
		return cached.keys, nil
	case recent:
		c.mu.Unlock()
		return nil, cached.err
	}
	// Joined under c.mu: a fetch records its outcome under c.mu before
	// it leaves the group, so one seen as not recent is either under way
	// or not begun.
	detached := context.WithoutCancel(ctx)
	done := c.fetches.DoChan(uri, func() (any, error) { return c.fetchFor(detached, uri, now) })
	c.mu.Unlock()
	select {
	case r := <-done:
		keys, _ := r.Val.([]accesstoken.JWK)
		return keys, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fetchFor fetches uri, the fetch started at now, and records its
// outcome. A panic (in the client's RoundTripper, say) is that fetch's
// failure, not the process's.
func (c *jwksCache) fetchFor(ctx context.Context, uri string, now time.Time) (keys []accesstoken.JWK, err error) {
	defer func() {
		if v := recover(); v != nil {
			keys, err = nil, fmt.Errorf("fetch jwks_uri: panic: %v", v)
		}
		c.record(uri, keys, err, now)
	}()
	return c.fetch(ctx, uri)
}

// record remembers the outcome of the fetch of uri started at now.
func (c *jwksCache) record(uri string, keys []accesstoken.JWK, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := cachedJWKS{keys: keys, fetched: now, tried: now}
	if err != nil {
		cached := c.entries[uri]
		next = cachedJWKS{keys: cached.keys, fetched: cached.fetched, tried: now, err: err}
	}
	if len(c.entries) >= maxJWKSEntries {
		for u, e := range c.entries {
			if now.Sub(e.tried) >= jwksCacheTTL {
				delete(c.entries, u)
			}
		}
		// Still full of live entries (many clients' jwks_uri at once):
		// drop some at random, a refetch for those, rather than no bound.
		for u := range c.entries {
			if len(c.entries) < maxJWKSEntries {
				break
			}
			delete(c.entries, u)
		}
	}
	c.entries[uri] = next
}

func (c *jwksCache) fetch(ctx context.Context, uri string) ([]accesstoken.JWK, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	// This cache bounds the fetches; a shared cache on the way must ask
	// the publisher, or the refetch for an unknown kid (a rotation) gets
	// the copy without the new key (RFC 9111 section 5.2.1.4).
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks_uri: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks_uri: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil || len(body) > maxJWKSBytes {
		return nil, errors.New("fetch jwks_uri: unreadable or too large")
	}
	return decodeJWKS(body)
}
