package issuer

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestJWKSCacheFailures: a JWK Set URL that fails is asked again only
// after jwksMinRefetch, however many assertions name it; a fetch cut
// short by its own request's end is not remembered as the URL's failure.
func TestJWKSCacheFailures(t *testing.T) {
	var fetches atomic.Int32
	var up atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(srv.Close)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	c := newJWKSCache(srv.Client(), clock.Now)
	ctx := context.Background()
	for range 5 {
		if _, err := c.keys(ctx, srv.URL, true); err == nil {
			t.Fatal("a failing JWK Set URL gave keys")
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("fetches of a failing URL = %d, want 1 per jwksMinRefetch", n)
	}
	up.Store(true)
	clock.Advance(jwksMinRefetch)
	if _, err := c.keys(ctx, srv.URL, false); err != nil || fetches.Load() != 2 {
		t.Errorf("after jwksMinRefetch: %v, %d fetches; want keys from a second fetch", err, fetches.Load())
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	other := srv.URL + "/other"
	if _, err := c.keys(canceled, other, false); err == nil {
		t.Fatal("a canceled fetch gave keys")
	}
	if _, err := c.keys(ctx, other, false); err != nil {
		t.Errorf("after a canceled fetch: %v, want keys", err)
	}
}

// TestJWKSCacheBounded: expired entries are dropped as URLs keep coming,
// so the cache holds at most about maxJWKSEntries.
func TestJWKSCacheBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(srv.Close)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	c := newJWKSCache(srv.Client(), clock.Now)
	for n := range 3 * maxJWKSEntries {
		if _, err := c.keys(context.Background(), fmt.Sprintf("%s/%d", srv.URL, n), false); err != nil {
			t.Fatal(err)
		}
		if n%maxJWKSEntries == maxJWKSEntries-1 {
			clock.Advance(jwksCacheTTL)
		}
	}
	if n := len(c.entries); n > maxJWKSEntries+1 {
		t.Errorf("cache holds %d entries, want at most %d", n, maxJWKSEntries+1)
	}
}

// TestJWKSCacheKeepsKeys: a refresh that fails leaves the cached keys in
// use until they expire.
func TestJWKSCacheKeepsKeys(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","kid":"a"}]}`))
	}))
	t.Cleanup(srv.Close)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	c := newJWKSCache(srv.Client(), clock.Now)
	ctx := context.Background()
	if _, err := c.keys(ctx, srv.URL, false); err != nil {
		t.Fatal(err)
	}
	up.Store(false)
	clock.Advance(jwksMinRefetch)
	if _, err := c.keys(ctx, srv.URL, true); err == nil {
		t.Error("a failed refresh gave keys")
	}
	if ks, err := c.keys(ctx, srv.URL, false); err != nil || len(ks) != 1 {
		t.Errorf("after a failed refresh: %v, %v; want the cached key", ks, err)
	}
	clock.Advance(jwksCacheTTL)
	if _, err := c.keys(ctx, srv.URL, false); err == nil {
		t.Error("expired keys were used with the URL down")
	}
}
