package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

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
)

// jwksCache fetches and caches JWK Sets published at URLs (a client's
// jwks_uri, a trusted IdP's), over one HTTP client, time- and
// size-limited.
type jwksCache struct {
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]cachedJWKS // by URL
}

type cachedJWKS struct {
	keys    []accesstoken.JWK
	fetched time.Time
}

func newJWKSCache(client *http.Client, now func() time.Time) *jwksCache {
	return &jwksCache{client: client, now: now, entries: make(map[string]cachedJWKS)}
}

// keys returns the JWK Set at uri: cached for jwksCacheTTL; refresh asks
// for a fetch, done at most once per jwksMinRefetch.
func (c *jwksCache) keys(ctx context.Context, uri string, refresh bool) ([]accesstoken.JWK, error) {
	now := c.now()
	c.mu.Lock()
	cached, ok := c.entries[uri]
	c.mu.Unlock()
	age := now.Sub(cached.fetched)
	if ok && age < jwksCacheTTL && (!refresh || age < jwksMinRefetch) {
		return cached.keys, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
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
	keys, err := decodeJWKS(body)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.entries[uri] = cachedJWKS{keys: keys, fetched: now}
	c.mu.Unlock()
	return keys, nil
}
