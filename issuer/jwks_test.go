package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
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

// TestJWKSCacheFetchOutlivesItsRequest: the fetch of a JWK Set is the
// URL's: the request that started it ending does not end it, so another
// waiting for it gets its keys, and the one fetch is all there is.
func TestJWKSCacheFetchOutlivesItsRequest(t *testing.T) {
	var fetches atomic.Int32
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) == 1 {
			close(arrived)
		}
		<-release
		_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","kid":"a"}]}`))
	}))
	t.Cleanup(srv.Close)
	c := newJWKSCache(srv.Client(), time.Now)
	first, cancel := context.WithCancel(t.Context())
	firstErr := make(chan error)
	go func() {
		_, err := c.keys(first, srv.URL, false)
		firstErr <- err
	}()
	<-arrived
	second := make(chan error)
	go func() {
		ks, err := c.keys(t.Context(), srv.URL, false)
		if err == nil && len(ks) != 1 {
			err = fmt.Errorf("%d keys, want 1", len(ks))
		}
		second <- err
	}()
	cancel()
	if err := <-firstErr; err == nil {
		t.Error("the request that ended got keys")
	}
	close(release)
	if err := <-second; err != nil {
		t.Errorf("the request waiting for the fetch: %v, want its keys", err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("fetches = %d, want 1", n)
	}
}

// TestJWKSCacheFetchPanics: a fetch that panics (the client's
// RoundTripper, here) fails that fetch, not the process: the request gets
// an error, remembered as the URL's failure for jwksMinRefetch, and the
// next fetch gets the keys.
func TestJWKSCacheFetchPanics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","kid":"a"}]}`))
	}))
	t.Cleanup(srv.Close)
	client := srv.Client()
	next := client.Transport
	var panicked atomic.Bool
	client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if panicked.CompareAndSwap(false, true) {
			panic("transport bug")
		}
		return next.RoundTrip(r)
	})
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	c := newJWKSCache(client, clock.Now)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.keys(ctx, srv.URL, false); err == nil || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("keys when the fetch panics = %v, want the fetch's panic as an error", err)
	}
	if _, err := c.keys(ctx, srv.URL, false); err == nil {
		t.Fatal("keys within jwksMinRefetch of a failed fetch succeeded")
	}
	clock.Advance(jwksMinRefetch)
	if ks, err := c.keys(ctx, srv.URL, false); err != nil || len(ks) != 1 {
		t.Fatalf("keys after jwksMinRefetch = %d keys, %v; want 1 key", len(ks), err)
	}
}

// TestJWKSCacheAsksPastSharedCaches: a JWK Set is fetched with
// Cache-Control: no-cache (RFC 9111 section 5.2.1.4), so that a shared
// cache on the way (an outbound proxy) asks the publisher rather than
// answering with its copy: the refetch for a kid no cached key has (a
// client's or an IdP's rotation) must see the new key, and this cache
// bounds how often it asks.
func TestJWKSCacheAsksPastSharedCaches(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Cache-Control"))
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(srv.Close)
	clock := storetest.NewClock(time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC))
	c := newJWKSCache(srv.Client(), clock.Now)
	if _, err := c.keys(t.Context(), srv.URL, false); err != nil {
		t.Fatal(err)
	}
	clock.Advance(jwksMinRefetch)
	if _, err := c.keys(t.Context(), srv.URL, true); err != nil {
		t.Fatal(err)
	}
	if want := []string{"no-cache", "no-cache"}; !slices.Equal(got, want) {
		t.Errorf("Cache-Control of the fetches = %q, want %q", got, want)
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
	// Live entries too: many URLs within one TTL do not grow it past the
	// bound (review s13-dos F2: 1,201 after 1,000).
	for n := range 2 * maxJWKSEntries {
		if _, err := c.keys(context.Background(), fmt.Sprintf("%s/live/%d", srv.URL, n), false); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.entries); n > maxJWKSEntries {
		t.Errorf("cache holds %d live entries, want at most %d", n, maxJWKSEntries)
	}
}

// TestJWKSKeyChoice: a JWK Set holds at most maxJWKSKeys keys, and a JWS
// is checked against exactly one key: the one its kid names, or the only
// one that fits its alg. Several keys that fit are refused rather than
// tried in turn, which let a published set of 300 P-521 keys cost half a
// second of CPU per request (review s13-dos F1).
func TestJWKSKeyChoice(t *testing.T) {
	if maxJWKSKeys != 32 {
		t.Fatalf("maxJWKSKeys = %d, README (mcp_auth, client) says at most 32 keys", maxJWKSKeys)
	}
	ec := func(kid string) accesstoken.JWK {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return accesstoken.JWK{Kty: "EC", Crv: "P-256", Kid: kid,
			X: base64.RawURLEncoding.EncodeToString(k.X.FillBytes(make([]byte, 32))),
			Y: base64.RawURLEncoding.EncodeToString(k.Y.FillBytes(make([]byte, 32)))}
	}
	a, b, a2 := ec("a"), ec("b"), ec("a")
	for _, tt := range []struct {
		name string
		set  []accesstoken.JWK
		kid  string
		want *accesstoken.JWK // nil: refused
	}{
		{"kid names one", []accesstoken.JWK{a, b}, "b", &b},
		{"one key, no kid", []accesstoken.JWK{a}, "", &a},
		{"two keys, no kid", []accesstoken.JWK{a, b}, "", nil},
		{"two keys of one kid", []accesstoken.JWK{a, a2}, "a", nil},
		// The same key listed twice is one key (review s13-fresh3 F3).
		{"one key twice, no kid", []accesstoken.JWK{a, a, b}, "a", &a},
		{"one key twice, once with alg", []accesstoken.JWK{a, {Kty: a.Kty, Crv: a.Crv, Kid: a.Kid, X: a.X, Y: a.Y, Alg: "ES256"}}, "", &a},
		{"kid of none", []accesstoken.JWK{a, b}, "c", nil},
		{"other alg only", []accesstoken.JWK{{Kty: "EC", Crv: "P-256", Kid: "x", Alg: "ES384", X: a.X, Y: a.Y}}, "", nil},
	} {
		key, err := keyFor(tt.set, tt.kid, "ES256")
		if tt.want == nil {
			if err == nil {
				t.Errorf("%s: keyFor chose a key, want a refusal", tt.name)
			}
			continue
		}
		want, _ := tt.want.PublicKey()
		if eq, ok := key.(interface{ Equal(crypto.PublicKey) bool }); err != nil || !ok || !eq.Equal(want) {
			t.Errorf("%s: keyFor = %v, %v, want key %s", tt.name, key, err, tt.want.Kid)
		}
	}

	set := func(n int) []byte {
		b, _ := json.Marshal(map[string]any{"keys": slices.Repeat([]accesstoken.JWK{a}, n)})
		return b
	}
	if keys, err := decodeJWKS(set(maxJWKSKeys)); err != nil || len(keys) != maxJWKSKeys {
		t.Errorf("decodeJWKS(%d keys) = %d, %v", maxJWKSKeys, len(keys), err)
	}
	if _, err := decodeJWKS(set(maxJWKSKeys + 1)); err == nil {
		t.Errorf("decodeJWKS(%d keys) accepted it", maxJWKSKeys+1)
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

// testECKey is the members of a public P-256 JWK (RFC 7517 appendix A.1).
const testECKey = `"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"`

// TestDecodeJWKSMemberNames: a JWK Set (a client's, inline or at its
// jwks_uri, or a trusted IdP's) whose member names another reader could
// read otherwise is refused: a repeated name, or a case variant of a
// name this server reads (encoding/json would take "KTY" for kty and the
// last of two "kid"). Names it does not read (x5c) stay allowed.
func TestDecodeJWKSMemberNames(t *testing.T) {
	for _, tt := range []struct {
		name, set string
		ok        bool
	}{
		{"plain", `{"keys":[{` + testECKey + `,"kid":"a"}]}`, true},
		{"member it does not read", `{"keys":[{` + testECKey + `,"kid":"a","x5t":"abc"}],"extra":1}`, true},
		{"KTY", `{"keys":[{"KTY":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`, false},
		{"Kid besides kid", `{"keys":[{` + testECKey + `,"kid":"a","Kid":"b"}]}`, false},
		{"kid twice", `{"keys":[{` + testECKey + `,"kid":"a","kid":"b"}]}`, false},
		{"Keys", `{"Keys":[{` + testECKey + `}]}`, false},
		{"keys twice", `{"keys":[],"keys":[{` + testECKey + `}]}`, false},
		{"trailing data", `{"keys":[{` + testECKey + `}]} {}`, false},
	} {
		keys, err := decodeJWKS([]byte(tt.set))
		if (err == nil) != tt.ok {
			t.Errorf("%s: decodeJWKS = %v, %v; want ok %v", tt.name, keys, err, tt.ok)
		}
	}
}
