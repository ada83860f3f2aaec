package gateway

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	raw, _ := k.Bytes() // 0x04 || x || y
	n := (len(raw) - 1) / 2
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(raw[1 : 1+n]), "y": b64(raw[1+n:]), "use": "sig"}
}

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func edJWK(kid string, k ed25519.PublicKey) map[string]any {
	return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k)}
}

// fakeIssuer serves RFC 8414 metadata (or only OIDC discovery) and a JWKS.
type fakeIssuer struct {
	srv        *httptest.Server
	issuer     string
	oidcOnly   bool
	jwks       atomic.Value // []map[string]any
	jwksHits   atomic.Int32
	wrongIssue bool
	down       atomic.Bool // every answer 503
}

func newFakeIssuer(t *testing.T, path string, oidcOnly bool) *fakeIssuer {
	f := &fakeIssuer{oidcOnly: oidcOnly}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		md := func() {
			iss := f.issuer
			if f.wrongIssue {
				iss += "/other"
			}
			json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": f.srv.URL + "/jwks"})
		}
		if f.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server" + path:
			if f.oidcOnly {
				http.NotFound(w, r)
				return
			}
			md()
		case path + "/.well-known/openid-configuration":
			md()
		case "/jwks":
			f.jwksHits.Add(1)
			json.NewEncoder(w).Encode(map[string]any{"keys": f.jwks.Load()})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	f.issuer = f.srv.URL + path
	return f
}

func TestRemoteKeys(t *testing.T) {
	k := theKeys(t)
	for _, tt := range []struct {
		name     string
		path     string
		oidcOnly bool
	}{
		{"RFC 8414 root issuer", "", false},
		{"RFC 8414 path issuer", "/tenant1", false},
		{"OIDC discovery fallback", "/tenant1", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIssuer(t, tt.path, tt.oidcOnly)
			f.jwks.Store([]map[string]any{
				ecJWK("ec1", &k.ec.PublicKey),
				rsaJWK("rsa1", &k.rsa.PublicKey),
				edJWK("ed1", k.ed.Public().(ed25519.PublicKey)),
				{"kty": "oct", "kid": "hmac", "k": b64([]byte("secret"))},
				{"kty": "RSA", "kid": "small", "n": b64(big.NewInt(12345).Bytes()), "e": "AQAB"},
				{"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256", "x": "", "y": ""},
			})
			rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
			t.Cleanup(rk.Close)
			ctx := context.Background()
			for kid, want := range map[string]any{"ec1": &k.ec.PublicKey, "rsa1": &k.rsa.PublicKey, "ed1": k.ed.Public()} {
				got, err := rk.PublicKey(ctx, kid)
				if err != nil {
					t.Fatalf("Key(%s) = %v", kid, err)
				}
				if eq, ok := got.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(want) {
					t.Errorf("Key(%s) = %T, want the published key", kid, got)
				}
			}
			for _, kid := range []string{"hmac", "small", "enc", "unknown"} {
				if _, err := rk.PublicKey(ctx, kid); !errors.Is(err, ErrUnknownKey) {
					t.Errorf("Key(%s) = %v, want ErrUnknownKey", kid, err)
				}
			}
			if n := f.jwksHits.Load(); n != 1 {
				t.Errorf("JWKS fetches = %d, want 1 (unknown kids rate-limited)", n)
			}
		})
	}
}

func TestRemoteKeysRotation(t *testing.T) {
	k := theKeys(t)
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey)})
	rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
	t.Cleanup(rk.Close)
	now := testNow
	rk.now = func() time.Time { return now }
	ctx := context.Background()
	if _, err := rk.PublicKey(ctx, "ec1"); err != nil {
		t.Fatal(err)
	}
	f.jwks.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey), edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	if _, err := rk.PublicKey(ctx, "ed1"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Key(ed1) within the refetch interval = %v, want ErrUnknownKey", err)
	}
	// README: at most one refetch per 30 s.
	now = testNow.Add(29 * time.Second)
	if _, err := rk.PublicKey(ctx, "ed1"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Key(ed1) 29 s after the last fetch = %v, want ErrUnknownKey", err)
	}
	now = testNow.Add(30 * time.Second)
	if _, err := rk.PublicKey(ctx, "ed1"); err != nil {
		t.Fatalf("Key(ed1) 30 s after the last fetch = %v, want the new key", err)
	}
	if n := f.jwksHits.Load(); n != 2 {
		t.Errorf("JWKS fetches = %d, want 2", n)
	}

	// Past the hour with the issuer down, the known keys stay in use (a
	// failing issuer does not take the gateway down with it)...
	f.down.Store(true)
	now = now.Add(2 * time.Hour)
	if _, err := rk.PublicKey(ctx, "ec1"); err != nil {
		t.Errorf("Key(ec1) with the issuer down = %v, want the known key", err)
	}
	// ...and a key the issuer no longer publishes ends at the first
	// fetch that succeeds after the hour.
	f.down.Store(false)
	f.jwks.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	now = now.Add(time.Minute)
	if _, err := rk.PublicKey(ctx, "ec1"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Key(ec1) after the issuer dropped it = %v, want ErrUnknownKey", err)
	}
	if _, err := rk.PublicKey(ctx, "ed1"); err != nil {
		t.Errorf("Key(ed1) = %v", err)
	}
	// README: known keys are reused for an hour after the fetch that got
	// them; a key withdrawn meanwhile is still known until then.
	fetched, hits := now, f.jwksHits.Load()
	f.jwks.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey)})
	now = fetched.Add(time.Hour - time.Second)
	if _, err := rk.PublicKey(ctx, "ed1"); err != nil || f.jwksHits.Load() != hits {
		t.Errorf("Key(ed1) withdrawn, a second short of an hour after the fetch = %v after %d more fetches, want the known key and none", err, f.jwksHits.Load()-hits)
	}
	now = fetched.Add(time.Hour)
	if _, err := rk.PublicKey(ctx, "ed1"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Key(ed1) withdrawn, an hour after the fetch = %v, want ErrUnknownKey", err)
	}
}

// TestRemoteKeysSlowIssuer: requests for an unknown kid while the
// issuer is slow to answer wait for the one fetch under way, each until
// its own end: one that ends early gets its context's error at once, not
// when the fetch ends, and the fetch runs on when the request that
// started it ends, so the others get its keys and there is one fetch.
func TestRemoteKeysSlowIssuer(t *testing.T) {
	k := theKeys(t)
	var fetches atomic.Int32
	arrived, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" {
			json.NewEncoder(w).Encode(map[string]any{"issuer": "http://" + r.Host, "jwks_uri": "http://" + r.Host + "/jwks"})
			return
		}
		if fetches.Add(1) == 1 {
			close(arrived)
		}
		<-release
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{ecJWK("ec1", &k.ec.PublicKey)}})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(unblock)
	rk := NewRemoteKeys(srv.URL, srv.Client(), nil)
	t.Cleanup(rk.Close)
	lookup := func(ctx context.Context) <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := rk.PublicKey(ctx, "ec1")
			errc <- err
		}()
		return errc
	}
	// within waits for errc, releasing the issuer when it takes longer
	// than d (a request held until the fetch ends).
	within := func(what string, errc <-chan error, d time.Duration) error {
		t.Helper()
		select {
		case err := <-errc:
			return err
		case <-time.After(d):
			t.Errorf("%s: still waiting after %v", what, d)
			unblock()
			return <-errc
		}
	}

	first, cancelFirst := context.WithCancel(t.Context())
	firstErr := lookup(first)
	<-arrived
	waiting := lookup(t.Context())
	short, cancelShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancelShort()
	if err := within("a request whose deadline passes", lookup(short), 2*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a request whose deadline passes during the fetch: %v, want its deadline", err)
	}
	cancelFirst()
	if err := within("the request that started the fetch, ended", firstErr, 2*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("the request that started the fetch, ended: %v, want its cancellation", err)
	}
	unblock()
	if err := within("the request waiting for the fetch", waiting, 5*time.Second); err != nil {
		t.Errorf("the request waiting for the fetch: %v, want the key", err)
	}
	if _, err := rk.PublicKey(t.Context(), "ec1"); err != nil {
		t.Errorf("after the fetch: %v, want the key", err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("JWKS fetches = %d, want 1", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRemoteKeysFetchPanics: a fetch that panics (the client's
// RoundTripper, here) fails that fetch, not the process: the request gets
// ErrKeysUnavailable, and the next fetch, after the refetch interval, gets the
// keys.
func TestRemoteKeysFetchPanics(t *testing.T) {
	k := theKeys(t)
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey)})
	client := f.srv.Client()
	next := client.Transport
	var panicked atomic.Bool
	client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if panicked.CompareAndSwap(false, true) {
			panic("transport bug")
		}
		return next.RoundTrip(r)
	})
	rk := NewRemoteKeys(f.issuer, client, nil)
	t.Cleanup(rk.Close)
	now := testNow
	rk.now = func() time.Time { return now }
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := rk.PublicKey(ctx, "ec1"); !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("Key(ec1) when the fetch panics = %v, want ErrKeysUnavailable", err)
	}
	now = now.Add(time.Minute)
	if _, err := rk.PublicKey(ctx, "ec1"); err != nil {
		t.Fatalf("Key(ec1) after the interval = %v, want the key", err)
	}
}

func TestRemoteKeysRefusals(t *testing.T) {
	t.Run("issuer mismatch", func(t *testing.T) {
		f := newFakeIssuer(t, "", false)
		f.wrongIssue = true
		f.jwks.Store([]map[string]any{})
		rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
		t.Cleanup(rk.Close)
		if _, err := rk.PublicKey(context.Background(), "ec1"); err == nil {
			t.Fatal("Key with a mismatched issuer succeeded")
		}
		if f.jwksHits.Load() != 0 {
			t.Error("JWKS fetched despite an issuer mismatch")
		}
	})
	// A member named twice is read as the last by encoding/json and as
	// the first by other parsers: a document that names one twice is
	// not read (the key set is not used, the metadata not trusted).
	k := theKeys(t)
	jwk, err := json.Marshal(ecJWK("ec1", &k.ec.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		metadata func(host string) string
		jwks     string
	}{
		{"keys twice", nil, `{"keys":[],"keys":[` + string(jwk) + `]}`},
		{"a key's member twice", nil, `{"keys":[{"kid":"ec0",` + string(jwk[1:]) + `]}`},
		{"jwks_uri twice", func(host string) string {
			return `{"issuer":"http://` + host + `","jwks_uri":"http://` + host + `/other","jwks_uri":"http://` + host + `/jwks"}`
		}, `{"keys":[` + string(jwk) + `]}`},
		{"issuer in another case", func(host string) string {
			return `{"Issuer":"http://` + host + `/other","issuer":"http://` + host + `","jwks_uri":"http://` + host + `/jwks"}`
		}, `{"keys":[` + string(jwk) + `]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.URL.Path == "/jwks":
					w.Write([]byte(tt.jwks))
				case tt.metadata != nil:
					w.Write([]byte(tt.metadata(r.Host)))
				default:
					json.NewEncoder(w).Encode(map[string]any{"issuer": "http://" + r.Host, "jwks_uri": "http://" + r.Host + "/jwks"})
				}
			}))
			defer srv.Close()
			rk := NewRemoteKeys(srv.URL, srv.Client(), nil)
			t.Cleanup(rk.Close)
			// A failed fetch: no key comes of it.
			if key, err := rk.PublicKey(context.Background(), "ec1"); !errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("Key = %T, %v, want ErrKeysUnavailable", key, err)
			}
		})
	}
	// README (In front of another authorization server): the metadata
	// and JWKS are fetched with a 10 s timeout and a 1 MiB limit. A
	// document of exactly 1 MiB is read, one a byte longer is not (its
	// key unknown), the metadata's as the key set's.
	if documented := 10 * time.Second; NewRemoteKeys("https://as.example", nil, nil).timeout != documented {
		t.Errorf("RemoteKeys' fetch timeout = %v, README says %v", NewRemoteKeys("https://as.example", nil, nil).timeout, documented)
	}
	sized := func(doc string, size int) string { // doc, an object, padded to size bytes
		return doc[:len(doc)-1] + strings.Repeat(" ", size-len(doc)) + "}"
	}
	for _, tt := range []struct {
		name                   string
		metadataSize, jwksSize int // 0: as it comes
		read                   bool
	}{
		{"JWKS of 1 MiB", 0, 1 << 20, true},
		{"oversized JWKS", 0, 1<<20 + 1, false},
		{"metadata of 1 MiB", 1 << 20, 0, true},
		{"oversized metadata", 1<<20 + 1, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				doc, size := `{"issuer":"http://`+r.Host+`","jwks_uri":"http://`+r.Host+`/jwks"}`, tt.metadataSize
				if r.URL.Path == "/jwks" {
					doc, size = `{"keys":[`+string(jwk)+`]}`, tt.jwksSize
				}
				if size > 0 {
					doc = sized(doc, size)
				}
				w.Write([]byte(doc))
			}))
			defer srv.Close()
			rk := NewRemoteKeys(srv.URL, srv.Client(), nil)
			t.Cleanup(rk.Close)
			_, err := rk.PublicKey(context.Background(), "ec1")
			if read := err == nil; read != tt.read {
				t.Fatalf("Key(ec1) = %v, want it read = %v", err, tt.read)
			}
			// A document refused is a fetch failed: whether the issuer
			// publishes the kid cannot be told (TestRemoteKeysUnavailable).
			if !tt.read && !errors.Is(err, ErrKeysUnavailable) {
				t.Errorf("Key(ec1) = %v, want ErrKeysUnavailable", err)
			}
		})
	}
}

// TestRemoteKeysGateway runs a token through a gateway keyed by RemoteKeys.
// remoteGateway is a gateway whose issuer is f, publishing k.ed as ed1.
func remoteGateway(t *testing.T) (*signingKeys, *fakeIssuer, *harness) {
	t.Helper()
	k := theKeys(t)
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	cfg := testConfig(t)
	cfg.Issuer = f.issuer
	rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
	t.Cleanup(rk.Close)
	cfg.Keys = rk
	return k, f, newHarness(t, cfg, nil)
}

func TestRemoteKeysGateway(t *testing.T) {
	k, f, h := remoteGateway(t)
	c := claims()
	c["iss"] = f.issuer
	resp := h.do(t, call{body: toolCall("read_a"), token: mintWith(t, jwt.SigningMethodEdDSA, k.ed, "ed1", c, nil)})
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
}

// TestRemoteTokenMembersNamedOnce: a remote issuer's access token whose
// header or claims name a member twice, or in two cases, is refused:
// encoding/json reads the last, the issuer (or an auditor) may mean the
// first. Checked when the token is verified, not on a cache hit.
func TestRemoteTokenMembersNamedOnce(t *testing.T) {
	k, f, h := remoteGateway(t)
	enc := base64.RawURLEncoding.EncodeToString
	// signed is a token of c whose header (header) or claims begin with
	// the member first, then have their own.
	signed := func(header bool, first string) string {
		c := claims()
		c["iss"] = f.issuer
		hdr, _ := json.Marshal(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "ed1"})
		body, _ := json.Marshal(c)
		if header {
			hdr = append([]byte("{"+first+","), hdr[1:]...)
		} else {
			body = append([]byte("{"+first+","), body[1:]...)
		}
		s := enc(hdr) + "." + enc(body)
		sig, err := jwt.SigningMethodEdDSA.Sign(s, k.ed)
		if err != nil {
			t.Fatal(err)
		}
		return s + "." + enc(sig)
	}
	for _, tt := range []struct {
		name   string
		token  string
		status int
	}{
		{"each member once", signed(false, `"azp":"client-1"`), http.StatusOK},
		{"sub twice", signed(false, `"sub":"mallory"`), http.StatusUnauthorized},
		{"scope twice", signed(false, `"scope":"mcp"`), http.StatusUnauthorized},
		{"Scope and scope", signed(false, `"Scope":"mcp"`), http.StatusUnauthorized},
		{"kid twice", signed(true, `"kid":"ed0"`), http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.do(t, call{body: toolCall("read_a"), token: tt.token})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
		})
	}
}

// TestRemoteKeysPublishedUse: what a published JWK says it is for is
// kept. A key naming its alg verifies tokens of that algorithm only (RFC
// 8725 section 3.1), one whose key_ops lack "verify" verifies nothing (RFC
// 7517 section 4.3), and a kid naming two different keys names neither;
// the same key listed twice stays usable.
func TestRemoteKeysPublishedUse(t *testing.T) {
	k := theKeys(t)
	withAlg := func(j map[string]any, alg string) map[string]any { j["alg"] = alg; return j }
	withOps := func(j map[string]any, ops ...string) map[string]any {
		j["key_ops"] = append([]string{}, ops...)
		return j
	}
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{
		withAlg(rsaJWK("ps", &k.rsa.PublicKey), "PS256"),
		rsaJWK("any", &k.rsa.PublicKey),
		withOps(ecJWK("verify", &k.ec.PublicKey), "verify"),
		withOps(ecJWK("encrypt", &k.ec.PublicKey), "encrypt"),
		withOps(ecJWK("none", &k.ec.PublicKey)),
		ecJWK("two", &k.ec.PublicKey),
		rsaJWK("two", &k.rsa.PublicKey),
		withAlg(rsaJWK("same", &k.rsa.PublicKey), "RS256"),
		rsaJWK("same", &k.rsa.PublicKey),
		withAlg(rsaJWK("sameAlg", &k.rsa.PublicKey), "RS384"),
		withAlg(rsaJWK("sameAlg", &k.rsa.PublicKey), "RS384"),
	})
	cfg := testConfig(t)
	cfg.Issuer = f.issuer
	rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
	t.Cleanup(rk.Close)
	cfg.Keys = rk
	cfg.Algorithms = []string{"ES256", "RS256", "RS384", "PS256", "PS384"}
	h := newHarness(t, cfg, nil)
	c := claims()
	c["iss"] = f.issuer
	for _, tt := range []struct {
		kid    string
		method jwt.SigningMethod
		key    any
		want   int
	}{
		{"ps", jwt.SigningMethodPS256, k.rsa, http.StatusOK},
		{"ps", jwt.SigningMethodRS256, k.rsa, http.StatusUnauthorized},
		{"ps", jwt.SigningMethodPS384, k.rsa, http.StatusUnauthorized},
		{"any", jwt.SigningMethodRS256, k.rsa, http.StatusOK},
		{"any", jwt.SigningMethodPS256, k.rsa, http.StatusOK},
		{"verify", jwt.SigningMethodES256, k.ec, http.StatusOK},
		{"encrypt", jwt.SigningMethodES256, k.ec, http.StatusUnauthorized},
		{"none", jwt.SigningMethodES256, k.ec, http.StatusUnauthorized},
		{"two", jwt.SigningMethodES256, k.ec, http.StatusUnauthorized},
		{"two", jwt.SigningMethodRS256, k.rsa, http.StatusUnauthorized},
		{"same", jwt.SigningMethodRS256, k.rsa, http.StatusOK},
		{"same", jwt.SigningMethodPS256, k.rsa, http.StatusOK},
		{"sameAlg", jwt.SigningMethodRS384, k.rsa, http.StatusOK},
		{"sameAlg", jwt.SigningMethodRS256, k.rsa, http.StatusUnauthorized},
	} {
		resp := h.do(t, call{body: toolCall("read_a"), token: mintWith(t, tt.method, tt.key, tt.kid, c, nil)})
		body := readBody(t, resp)
		if resp.StatusCode != tt.want {
			t.Errorf("kid %s, %s: status = %d (%s), want %d", tt.kid, tt.method.Alg(), resp.StatusCode, body, tt.want)
		}
	}
}

// TestRemoteKeysFollowIssuerRotation: a gateway keyed by RemoteKeys
// accepts the first token an issuer signs with a rotated key, though it
// fetched the issuer's JWKS just before the rotation (the refetch on an
// unknown kid is rate-limited): the issuer signs with a new key only
// after that limit, and the refetch asks shared caches to revalidate
// (no-cache), not to answer with the copy they hold.
func TestRemoteKeysFollowIssuerRotation(t *testing.T) {
	clock := storetest.NewClock(testNow)
	var jwksCaching atomic.Value // Cache-Control of the last JWKS request
	var iss *issuer.Issuer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/jwks") {
			jwksCaching.Store(r.Header.Get("Cache-Control"))
		}
		iss.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	const secret = "service secret"
	sum := sha256.Sum256([]byte(secret))
	var err error
	iss, err = issuer.New(issuer.Config{
		Issuer: srv.URL,
		Now:    clock.Now,
		Clients: []issuer.Client{{ID: "svc", SecretHash: "sha256:" + hex.EncodeToString(sum[:]),
			GrantTypes: []string{"client_credentials"}}},
		Resources: []issuer.Resource{{URL: testResource, Scopes: []string{"mcp", "tools:read"}}},
	}, memory.New(memory.Options{Now: clock.Now}))
	if err != nil {
		t.Fatal(err)
	}
	token := func() (tok, kid string) {
		t.Helper()
		form := url.Values{"grant_type": {"client_credentials"}, "resource": {testResource}, "scope": {"mcp tools:read"}}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc", secret)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("client credentials = %d, %v", resp.StatusCode, err)
		}
		parsed, _, err := jwt.NewParser().ParseUnverified(body.AccessToken, jwt.MapClaims{})
		if err != nil {
			t.Fatal(err)
		}
		kid, _ = parsed.Header["kid"].(string)
		return body.AccessToken, kid
	}
	rk := NewRemoteKeys(srv.URL, srv.Client(), nil)
	t.Cleanup(rk.Close)
	rk.now = clock.Now
	cfg := testConfig(t)
	cfg.Issuer, cfg.Keys, cfg.Now = srv.URL, rk, clock.Now
	h := newHarness(t, cfg, nil)
	accepts := func(tok string) (int, string) {
		t.Helper()
		resp := h.do(t, call{body: toolCall("read_a"), token: tok})
		return resp.StatusCode, readBody(t, resp)
	}

	old, oldKid := token()
	if status, body := accepts(old); status != http.StatusOK {
		t.Fatalf("token of the key before the rotation = %d (%s), want 200", status, body)
	}
	clock.Advance(time.Second) // the gateway fetched the JWKS a second ago
	if _, err := iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok, kid := token()
	for kid == oldKid && clock.Now().Sub(testNow) < 10*time.Minute {
		clock.Advance(time.Second)
		tok, kid = token()
	}
	if kid == oldKid {
		t.Fatal("the rotated key never signs")
	}
	if status, body := accepts(tok); status != http.StatusOK {
		t.Errorf("first token of the rotated key, %v after the rotation = %d (%s), want 200", clock.Now().Sub(testNow)-time.Second, status, body)
	}
	if got, _ := jwksCaching.Load().(string); got != "no-cache" {
		t.Errorf("JWKS refetch Cache-Control = %q, want no-cache (shared caches revalidate)", got)
	}
	if status, body := accepts(old); status != http.StatusOK {
		t.Errorf("token of the retired key = %d (%s), want 200", status, body)
	}
}

// withdrawal is a gateway keyed by a RemoteKeys of a fake issuer that
// publishes ec1 and ed1, on a test clock, whose upstream answers POSTs
// and holds GET streams (named by their X-Test-Stream) open.
type withdrawal struct {
	k   *signingKeys
	f   *fakeIssuer
	rk  *RemoteKeys
	now *clock
	h   *harness
	up  *streamUpstream
}

const withdrawalVersion = "2025-11-25"

func newWithdrawal(t *testing.T) *withdrawal {
	w := &withdrawal{k: theKeys(t), f: newFakeIssuer(t, "", false), now: &clock{t: testNow}}
	w.f.jwks.Store([]map[string]any{ecJWK("ec1", &w.k.ec.PublicKey), edJWK("ed1", w.k.ed.Public().(ed25519.PublicKey))})
	w.rk = NewRemoteKeys(w.f.issuer, w.f.srv.Client(), nil)
	t.Cleanup(w.rk.Close)
	w.rk.now = w.now.now
	cfg := testConfig(t)
	cfg.Issuer, cfg.Keys, cfg.Now = w.f.issuer, w.rk, w.now.now
	cfg.StreamCheckInterval = 10 * time.Millisecond
	w.up = newStreamUpstream(func(r *http.Request) string { return r.Header.Get("X-Test-Stream") })
	w.h = newHarness(t, cfg, func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.up.serve(rw, r)
			return
		}
		writeJSONAnswer(rw, r, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	})
	return w
}

// token is a token of sub with an exp a century away.
func (w *withdrawal) token(t *testing.T, sub string, m jwt.SigningMethod, key any, kid string) string {
	c := claims()
	c["iss"], c["sub"], c["exp"] = w.f.issuer, sub, testNow.AddDate(100, 0, 0).Unix()
	return mintWith(t, m, key, kid, c, nil)
}

func (w *withdrawal) ping(t *testing.T, tok string) (int, string) {
	t.Helper()
	resp := w.h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, token: tok, headers: map[string]string{"Mcp-Protocol-Version": withdrawalVersion}})
	return resp.StatusCode, readBody(t, resp)
}

// stream opens the GET stream name with tok.
func (w *withdrawal) stream(t *testing.T, name, tok string) {
	t.Helper()
	resp := w.h.do(t, call{method: http.MethodGet, token: tok, headers: map[string]string{"X-Test-Stream": name, "Mcp-Protocol-Version": withdrawalVersion, "Mcp-Session-Id": sessionFor(t, w.h.g, tok)}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET status = %d, want 200: %s", name, resp.StatusCode, readBody(t, resp))
	}
	t.Cleanup(func() { resp.Body.Close() })
}

// TestRemoteKeyWithdrawnEndsTokens: once the issuer stops publishing a
// key (a compromised key rotated out), the tokens it signed are refused,
// also those the gateway verified before (whose claims it keeps until
// their exp, which whoever holds the key chose: here a century away), and
// their open event streams end within a check interval; the tokens and
// streams of the keys still published go on.
func TestRemoteKeyWithdrawnEndsTokens(t *testing.T) {
	w := newWithdrawal(t)
	k := w.k
	forged := w.token(t, "mallory", jwt.SigningMethodES256, k.ec, "ec1")
	kept := w.token(t, "alice", jwt.SigningMethodEdDSA, k.ed, "ed1")
	for _, tok := range []string{forged, kept} {
		if status, body := w.ping(t, tok); status != http.StatusOK {
			t.Fatalf("before the withdrawal: status = %d (%s), want 200", status, body)
		}
	}
	w.stream(t, "forged", forged)
	w.stream(t, "kept", kept)

	// The issuer withdraws ec1 and signs with a new key, whose first
	// token makes the gateway fetch the keys again.
	w.f.jwks.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey)), rsaJWK("rsa1", &k.rsa.PublicKey)})
	w.now.add(time.Minute)
	if status, body := w.ping(t, w.token(t, "bob", jwt.SigningMethodRS256, k.rsa, "rsa1")); status != http.StatusOK {
		t.Fatalf("token of the new key: status = %d (%s), want 200", status, body)
	}
	if status, body := w.ping(t, forged); status != http.StatusUnauthorized {
		t.Errorf("token of the withdrawn key, verified before: status = %d (%s), want 401", status, body)
	}
	if status, body := w.ping(t, kept); status != http.StatusOK {
		t.Errorf("token of a key still published: status = %d (%s), want 200", status, body)
	}
	select {
	case <-w.up.done("forged"):
	case <-time.After(5 * time.Second):
		t.Error("the stream of the withdrawn key's token is still open 5 s after the withdrawal was seen")
	}
	select {
	case <-w.up.done("kept"):
		t.Error("the stream of a token of a key still published ended")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRemoteKeysNoUsableKeyWithdraws: a key set in which nothing can
// verify (empty, or only keys not for signatures) is the issuer saying
// it publishes no signing key (an issuer pulling the one key it had,
// compromised, before it has another): every key known is withdrawn, so
// tokens forged with it are refused, new ones and those the gateway
// verified before (TestRemoteKeyWithdrawnEndsTokens). A document that is
// no key set (RFC 7517 section 5: no keys array; a misrouted page) is a
// failed fetch, as a 503 is: the keys known stay.
func TestRemoteKeysNoUsableKeyWithdraws(t *testing.T) {
	k := theKeys(t)
	for _, tt := range []struct {
		name string
		set  []map[string]any
		kept bool
	}{
		{"not a key set", nil, true},
		{"empty", []map[string]any{}, false},
		{"no signing key", []map[string]any{{"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256", "x": "", "y": ""}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIssuer(t, "", false)
			f.jwks.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey)})
			now := testNow
			rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
			t.Cleanup(rk.Close)
			rk.now = func() time.Time { return now }
			ctx := context.Background()
			if _, err := rk.PublicKey(ctx, "ec1"); err != nil {
				t.Fatal(err)
			}
			f.jwks.Store(tt.set)
			now = now.Add(time.Minute)
			// After a failed fetch, whether the issuer publishes a kid
			// cannot be told (TestRemoteKeysUnavailable).
			want := map[bool]error{true: ErrKeysUnavailable, false: ErrUnknownKey}[tt.kept]
			if _, err := rk.PublicKey(ctx, "made-up"); !errors.Is(err, want) {
				t.Fatalf("PublicKey(made-up) = %v, want %v", err, want)
			}
			if n := f.jwksHits.Load(); n != 2 {
				t.Fatalf("JWKS fetches = %d, want 2", n)
			}
			_, err := rk.PublicKey(ctx, "ec1")
			if kept := err == nil; kept != tt.kept {
				t.Errorf("PublicKey(ec1) = %v, want the known key kept: %v", err, tt.kept)
			}
			if got, want := rk.Withdrawals(), map[bool]uint64{true: 0, false: 1}[tt.kept]; got != want {
				t.Errorf("Withdrawals() = %d, want %d", got, want)
			}
		})
	}
}

// TestRemoteKeysWithdrawals: a fetch counts as a withdrawal when a kid
// the keys had is gone or verifies less than before (another key, an alg
// it did not name), not when the set grows or a key's alg is dropped
// (it verifies more), and Published finds a key as PublicKey returned it
// while its kid still verifies it.
func TestRemoteKeysWithdrawals(t *testing.T) {
	k := theKeys(t)
	withAlg := func(j map[string]any, alg string) map[string]any { j["alg"] = alg; return j }
	ec := func() map[string]any { return ecJWK("ec1", &k.ec.PublicKey) }
	for _, tt := range []struct {
		name          string
		before, after []map[string]any
		withdrawn     bool
	}{
		{"same keys", []map[string]any{ec()}, []map[string]any{ec()}, false},
		{"key added", []map[string]any{ec()}, []map[string]any{ec(), rsaJWK("rsa1", &k.rsa.PublicKey)}, false},
		{"key removed", []map[string]any{ec(), rsaJWK("rsa1", &k.rsa.PublicKey)}, []map[string]any{rsaJWK("rsa1", &k.rsa.PublicKey)}, true},
		{"kid given another key", []map[string]any{ec()}, []map[string]any{rsaJWK("ec1", &k.rsa.PublicKey)}, true},
		{"alg named", []map[string]any{ec()}, []map[string]any{withAlg(ec(), "ES256")}, true},
		{"alg dropped", []map[string]any{withAlg(ec(), "ES256")}, []map[string]any{ec()}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIssuer(t, "", false)
			f.jwks.Store(tt.before)
			now := testNow
			rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
			t.Cleanup(rk.Close)
			rk.now = func() time.Time { return now }
			ctx := context.Background()
			key, err := rk.PublicKey(ctx, "ec1")
			if err != nil {
				t.Fatal(err)
			}
			f.jwks.Store(tt.after)
			now = now.Add(time.Minute)
			rk.PublicKey(ctx, "made-up") // fetches again
			if got := rk.Withdrawals() == 1; got != tt.withdrawn {
				t.Errorf("Withdrawals() = %d, want a withdrawal: %v", rk.Withdrawals(), tt.withdrawn)
			}
			if got := rk.Published("ec1", key); got != !tt.withdrawn {
				t.Errorf("Published(ec1, key before) = %v, want %v", got, !tt.withdrawn)
			}
		})
	}
}

// TestRemoteKeyAlgNamedKeepsStreams: an issuer that comes to name the
// alg of a key it published without one (RFC 7517 section 4.4) withdraws
// nothing from the tokens that key signed with that alg: they verify as
// before, so their open streams go on, while the stream of a token whose
// key the same fetch withdrew ends.
func TestRemoteKeyAlgNamedKeepsStreams(t *testing.T) {
	w := newWithdrawal(t)
	k := w.k
	withAlg := func(j map[string]any, alg string) map[string]any { j["alg"] = alg; return j }
	w.f.jwks.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey), rsaJWK("rsa1", &k.rsa.PublicKey), edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	tokens := map[string]string{
		"ec":  w.token(t, "alice", jwt.SigningMethodES256, k.ec, "ec1"),
		"rsa": w.token(t, "bob", jwt.SigningMethodRS256, k.rsa, "rsa1"),
		"ed":  w.token(t, "carol", jwt.SigningMethodEdDSA, k.ed, "ed1"),
	}
	for name, tok := range tokens {
		if status, body := w.ping(t, tok); status != http.StatusOK {
			t.Fatalf("%s: status = %d (%s), want 200", name, status, body)
		}
		w.stream(t, name, tok)
	}
	w.f.jwks.Store([]map[string]any{withAlg(ecJWK("ec1", &k.ec.PublicKey), "ES256"), withAlg(rsaJWK("rsa1", &k.rsa.PublicKey), "RS256")})
	w.now.add(time.Minute)
	if _, err := w.rk.PublicKey(t.Context(), "made-up"); !errors.Is(err, ErrUnknownKey) {
		t.Fatal(err)
	}
	select {
	case <-w.up.done("ed"):
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of the withdrawn ed1's token is still open 5 s after the withdrawal was seen")
	}
	for _, name := range []string{"ec", "rsa"} {
		select {
		case <-w.up.done(name):
			t.Errorf("%s: the stream of a token its key still verifies (its alg now named) ended", name)
		case <-time.After(100 * time.Millisecond):
		}
		if status, body := w.ping(t, tokens[name]); status != http.StatusOK {
			t.Errorf("%s: status = %d (%s), want 200", name, status, body)
		}
	}
}

// TestRemoteKeyWithdrawnWithoutNewTokens: a gateway whose requests all
// carry tokens it verified before (cache hits, which ask RemoteKeys for
// no key) still learns that the issuer withdrew a key: the keys it has
// used are fetched again once they are maxAge old, so a token the
// gateway keeps, forged with a compromised key and with an exp a century
// away, is refused and its stream ended within maxAge of the withdrawal,
// though no new token ever makes the gateway ask for a key.
func TestRemoteKeyWithdrawnWithoutNewTokens(t *testing.T) {
	w := newWithdrawal(t)
	w.rk.now = time.Now
	w.rk.maxAge, w.rk.refetchInterval = 200*time.Millisecond, 20*time.Millisecond
	forged := w.token(t, "mallory", jwt.SigningMethodES256, w.k.ec, "ec1")
	if status, body := w.ping(t, forged); status != http.StatusOK {
		t.Fatalf("before the withdrawal: status = %d (%s), want 200", status, body)
	}
	w.stream(t, "forged", forged)

	w.f.jwks.Store([]map[string]any{edJWK("ed1", w.k.ed.Public().(ed25519.PublicKey))})
	deadline := time.Now().Add(5 * time.Second)
	for status, _ := w.ping(t, forged); status != http.StatusUnauthorized; status, _ = w.ping(t, forged) {
		if time.Now().After(deadline) {
			t.Fatalf("the cached token of a key withdrawn 5 s ago (maxAge %v) still passes", w.rk.maxAge)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-w.up.done("forged"):
	case <-time.After(5 * time.Second):
		t.Error("the stream of the withdrawn key's token is still open 5 s after the withdrawal was seen")
	}
}

// refreshers counts the goroutines refreshing a RemoteKeys' keys once
// there are want of them, or 2 s later: one begun or ending a moment ago
// may not be counted yet, or still be.
func refreshers(want int) int {
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := strings.Count(string(buf[:runtime.Stack(buf, true)]), "gateway.(*RemoteKeys).refreshKeys(")
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRemoteKeysRefreshEndsWithClose: the background refresh is one
// goroutine per RemoteKeys, begun by the first fetch that found keys
// (none for a RemoteKeys never asked), however many requests ask, and
// Close ends it, waiting for it; nothing begins it again after Close.
func TestRemoteKeysRefreshEndsWithClose(t *testing.T) {
	k := theKeys(t)
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey)})
	base := refreshers(0)
	rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
	rk.refetchInterval = time.Millisecond
	if n := refreshers(base) - base; n != 0 {
		t.Fatalf("%d refresh goroutines before any fetch, want 0", n)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				rk.PublicKey(context.Background(), "made-up")
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if n := refreshers(base+1) - base; n != 1 {
		t.Errorf("%d refresh goroutines after %d fetches, want 1", n, f.jwksHits.Load())
	}
	rk.Close()
	if n := refreshers(base) - base; n != 0 {
		t.Errorf("%d refresh goroutines after Close, want 0", n)
	}
	time.Sleep(2 * time.Millisecond)
	rk.PublicKey(context.Background(), "made-up")
	rk.Close()
	if n := refreshers(base) - base; n != 0 {
		t.Errorf("%d refresh goroutines after a fetch following Close, want 0", n)
	}
	NewRemoteKeys(f.issuer, f.srv.Client(), nil).Close() // never fetched
}

// TestRemoteKeysCloseEndsRefreshFetch: Close does not wait out a fetch
// of the background refresh that the issuer holds (up to the 10 s fetch
// timeout): it cancels it, so a reload is not held up by a slow issuer.
func TestRemoteKeysCloseEndsRefreshFetch(t *testing.T) {
	k := theKeys(t)
	var fetches atomic.Int32
	held := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" {
			json.NewEncoder(w).Encode(map[string]any{"issuer": "http://" + r.Host, "jwks_uri": "http://" + r.Host + "/jwks"})
			return
		}
		if fetches.Add(1) > 1 {
			if fetches.Load() == 2 {
				close(held)
			}
			<-r.Context().Done()
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{ecJWK("ec1", &k.ec.PublicKey)}})
	}))
	t.Cleanup(srv.Close)
	rk := NewRemoteKeys(srv.URL, srv.Client(), nil)
	rk.maxAge, rk.refetchInterval = 50*time.Millisecond, 10*time.Millisecond
	if _, err := rk.PublicKey(t.Context(), "ec1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("no refresh fetch within 5 s")
	}
	closed := make(chan struct{})
	go func() { rk.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Error("Close still waiting 1 s into a refresh fetch the issuer holds")
		<-closed
	}
}

// TestRemoteKeyRenewedUnderItsKid: an issuer that rotates its key under
// the same kid (a kid such as "default" or "1" names whichever key signs)
// has the new key's tokens accepted once the keys are fetched again: a
// signature the known key does not verify asks for a fetch, as an
// unknown kid does (at most one per refetch interval, so a made-up
// signature costs the issuer nothing more), where the known key was
// taken as the issuer's for up to an hour and every new token refused.
func TestRemoteKeyRenewedUnderItsKid(t *testing.T) {
	k, f, c, status, advance := renewalGateway(t)
	_, next, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f.jwks.Store([]map[string]any{edJWK("ed1", next.Public().(ed25519.PublicKey))})
	c["jti"] = "after-rotation"
	renewed := mintWith(t, jwt.SigningMethodEdDSA, next, "ed1", c, nil)
	// Within the refetch interval of the last fetch: no fetch.
	hits := f.jwksHits.Load()
	if s := status(renewed); s != http.StatusUnauthorized || f.jwksHits.Load() != hits {
		t.Fatalf("within the refetch interval: status %d, %d fetches, want 401 and none", s, f.jwksHits.Load()-hits)
	}
	advance(time.Minute)
	if s := status(renewed); s != http.StatusOK {
		t.Errorf("token of the key rotated under the same kid, past the refetch interval: status %d, want 200", s)
	}
	c["jti"] = "old-key"
	if s := status(mintWith(t, jwt.SigningMethodEdDSA, k.ed, "ed1", c, nil)); s != http.StatusUnauthorized {
		t.Errorf("token of the key rotated out: status %d, want 401", s)
	}
}

// TestRemoteKeyRenewedUnderItsKidOtherType: an issuer that rotates its
// key under the same kid to a key of another type or algorithm (an
// Ed25519 key's kid "1" given to a P-256 key, an algorithm migration)
// has the new key's tokens accepted once the keys are fetched again, as
// for a key of the same type: the known key not fitting the token's
// algorithm asks for the keys as a failed signature does, where it was
// taken as the issuer's and every new token refused for up to an hour.
func TestRemoteKeyRenewedUnderItsKidOtherType(t *testing.T) {
	k, f, c, status, advance := renewalGateway(t)
	for _, tt := range []struct {
		name string
		jwk  map[string]any
	}{
		{"P-256 key", ecJWK("ed1", &k.ec.PublicKey)},
		{"P-256 key naming its alg", func() map[string]any { j := ecJWK("ed1", &k.ec.PublicKey); j["alg"] = "ES256"; return j }()},
	} {
		f.jwks.Store([]map[string]any{tt.jwk})
		advance(time.Minute)
		c["jti"] = "after-rotation-" + tt.name
		if s := status(mintWith(t, jwt.SigningMethodES256, k.ec, "ed1", c, nil)); s != http.StatusOK {
			t.Errorf("%s: token of the key rotated under the same kid, past the refetch interval: status %d, want 200", tt.name, s)
		}
		// Back to the Ed25519 key for the next case.
		f.jwks.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
		advance(time.Minute)
		c["jti"] = "back-" + tt.name
		if s := status(mintWith(t, jwt.SigningMethodEdDSA, k.ed, "ed1", c, nil)); s != http.StatusOK {
			t.Fatalf("%s: token of the Ed25519 key published again: status %d, want 200", tt.name, s)
		}
	}
}

// TestRemoteKeyRenewedWhileIssuerDown: a token whose kid the gateway
// knows but whose signature that key does not verify, while the
// issuer's keys cannot be fetched, may be signed by a key the issuer
// has since published under that kid (a same-kid rotation the gateway
// could not read): it is refused 503 without a challenge, as a token
// of an unknown kid is then, not 401 invalid_token, which had its
// client drop a good token and sign in again at every try until a
// fetch succeeded. Once the issuer answers, the renewed key's token is
// accepted, and a token the known key does not verify is 401.
func TestRemoteKeyRenewedWhileIssuerDown(t *testing.T) {
	k, f, h := remoteGateway(t)
	var mu sync.Mutex
	now := testNow
	h.g.cfg.Keys.(*RemoteKeys).now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(time.Minute); mu.Unlock() }
	c := claims()
	c["iss"] = f.issuer
	check := func(name string, key ed25519.PrivateKey, want int) {
		t.Helper()
		c["jti"] = name
		resp := h.do(t, call{body: toolCall("read_a"), token: mintWith(t, jwt.SigningMethodEdDSA, key, "ed1", c, nil)})
		body := readBody(t, resp)
		www := resp.Header.Get("WWW-Authenticate")
		switch {
		case resp.StatusCode != want:
			t.Errorf("%s: status %d (%s), want %d", name, resp.StatusCode, body, want)
		case want == http.StatusServiceUnavailable && (www != "" || !strings.Contains(body, "retry")):
			t.Errorf("%s: challenge %q, body %s; want no challenge and a retry", name, www, body)
		case want == http.StatusUnauthorized && !strings.Contains(www, `error="invalid_token"`):
			t.Errorf("%s: challenge %q, want invalid_token", name, www)
		}
	}
	check("published key", k.ed, http.StatusOK)

	_, next, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f.jwks.Store([]map[string]any{edJWK("ed1", next.Public().(ed25519.PublicKey))})
	f.down.Store(true)
	advance()
	check("issuer down, key renewed under its kid", next, http.StatusServiceUnavailable)
	check("issuer down, old key still known", k.ed, http.StatusOK)

	f.down.Store(false)
	advance()
	check("issuer back, key renewed under its kid", next, http.StatusOK)
	check("issuer back, old key rotated out", k.ed, http.StatusUnauthorized)
}

// renewalGateway is a gateway of a remote issuer publishing k.ed as
// "ed1" on a clock advance moves, whose token was accepted once: status
// answers a tool call with a token, c are claims of the issuer's.
func renewalGateway(t *testing.T) (*signingKeys, *fakeIssuer, jwt.MapClaims, func(string) int, func(time.Duration)) {
	t.Helper()
	k, f, h := remoteGateway(t)
	var mu sync.Mutex
	now := testNow
	// Set before the first fetch, which is the first to read it.
	h.g.cfg.Keys.(*RemoteKeys).now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c := claims()
	c["iss"] = f.issuer
	status := func(tok string) int {
		t.Helper()
		resp := h.do(t, call{body: toolCall("read_a"), token: tok})
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status(mintWith(t, jwt.SigningMethodEdDSA, k.ed, "ed1", c, nil)); s != http.StatusOK {
		t.Fatalf("token of the published key: status %d", s)
	}
	return k, f, c, status, advance
}

// TestRemoteKeysUnavailable: a token whose kid the gateway does not know
// while the issuer's keys cannot be fetched (the issuer down, at start or
// later) is refused 503 without a challenge, as when introspection
// cannot answer: the token was not found bad, and a 401 invalid_token
// would have its client drop a good token and sign in again. Once a
// fetch succeeds, a kid the issuer does not publish is 401 again, and a
// known key is used while the issuer is down.
func TestRemoteKeysUnavailable(t *testing.T) {
	k := theKeys(t)
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
	t.Cleanup(rk.Close)
	var mu sync.Mutex
	now := time.Now()
	rk.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(time.Minute); mu.Unlock() }
	cfg := testConfig(t)
	cfg.Issuer = f.issuer
	cfg.Keys = rk
	h := newHarness(t, cfg, nil)
	c := claims()
	c["iss"] = f.issuer
	check := func(name, kid string, want int) {
		t.Helper()
		resp := h.do(t, call{body: toolCall("read_a"), token: mintWith(t, jwt.SigningMethodEdDSA, k.ed, kid, c, nil)})
		body := readBody(t, resp)
		www := resp.Header.Get("WWW-Authenticate")
		switch {
		case resp.StatusCode != want:
			t.Errorf("%s: status %d (%s), want %d", name, resp.StatusCode, body, want)
		case want == http.StatusServiceUnavailable && (www != "" || !strings.Contains(body, "retry")):
			t.Errorf("%s: challenge %q, body %s; want no challenge and a retry", name, www, body)
		case want == http.StatusUnauthorized && !strings.Contains(www, `error="invalid_token"`):
			t.Errorf("%s: challenge %q, want invalid_token", name, www)
		}
	}

	f.down.Store(true)
	check("issuer down, no key known", "ed1", http.StatusServiceUnavailable)
	if _, err := rk.PublicKey(context.Background(), "ed1"); !errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("PublicKey with the issuer down = %v, want ErrKeysUnavailable", err)
	}
	f.down.Store(false)
	advance()
	check("issuer back", "ed1", http.StatusOK)
	check("a kid the issuer does not publish", "ed2", http.StatusUnauthorized)

	f.down.Store(true)
	advance()
	check("issuer down, unknown kid", "ed2", http.StatusServiceUnavailable)
	check("issuer down, known key", "ed1", http.StatusOK)

	// A key set that is no key set (no keys array) is a failed fetch too.
	f.down.Store(false)
	f.jwks.Store([]map[string]any(nil))
	advance()
	check("no key set, unknown kid", "ed2", http.StatusServiceUnavailable)
}

// TestRemoteKeysJWKSMoved: an issuer whose metadata comes to name
// another jwks_uri has its keys read there once the old place fails,
// in the same fetch: a key published at the new place only is found, a
// key withdrawn there ends (the old place answering nothing any more
// kept the old keys in use, and the new ones unknown, until a reload).
func TestRemoteKeysJWKSMoved(t *testing.T) {
	k := theKeys(t)
	var jwksPath atomic.Value // the jwks_uri's path the metadata names
	jwksPath.Store("/keys/v1")
	var keys atomic.Value // the set served at jwksPath; other paths 404
	keys.Store([]map[string]any{ecJWK("ec1", &k.ec.PublicKey)})
	var metadataHits atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			metadataHits.Add(1)
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + jwksPath.Load().(string)})
		case jwksPath.Load().(string):
			json.NewEncoder(w).Encode(map[string]any{"keys": keys.Load()})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	rk := NewRemoteKeys(srv.URL, srv.Client(), nil)
	t.Cleanup(rk.Close)
	now := testNow
	rk.now = func() time.Time { return now }
	ctx := context.Background()
	if _, err := rk.PublicKey(ctx, "ec1"); err != nil {
		t.Fatal(err)
	}
	// The issuer moves its keys and rotates: ed1 at the new place only.
	jwksPath.Store("/keys/v2")
	keys.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	now = now.Add(rk.refetchInterval)
	if _, err := rk.PublicKey(ctx, "ed1"); err != nil {
		t.Fatalf("Key(ed1) published at the new jwks_uri = %v, want the key", err)
	}
	if _, err := rk.PublicKey(ctx, "ec1"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Key(ec1) no longer published = %v, want ErrUnknownKey", err)
	}
	if n := metadataHits.Load(); n != 2 {
		t.Errorf("metadata fetches = %d, want 2 (the first fetch, the failed one)", n)
	}
	// While the keys are read where the metadata says, it is not read
	// again.
	now = now.Add(rk.refetchInterval)
	if _, err := rk.PublicKey(ctx, "made-up"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Key(made-up) = %v, want ErrUnknownKey", err)
	}
	if n := metadataHits.Load(); n != 2 {
		t.Errorf("metadata fetches = %d after a fetch that read the keys, want 2", n)
	}
}

// TestRemoteKeysMismatchedIssuerCut: the issuer of metadata that does
// not match is logged cut to maxLoggedIssuer bytes, not as the megabyte
// a hostile or broken server may put there, with each failed fetch.
func TestRemoteKeysMismatchedIssuerCut(t *testing.T) {
	long := strings.Repeat("x", 512<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": long, "jwks_uri": "https://example.com/jwks"})
	}))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.WarnLevel)
	rk := NewRemoteKeys(srv.URL, srv.Client(), zap.New(core))
	t.Cleanup(rk.Close)
	if _, err := rk.PublicKey(t.Context(), "ec1"); !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("Key with a mismatched issuer = %v, want ErrKeysUnavailable", err)
	}
	entries := logs.FilterMessage("fetching issuer keys").All()
	if len(entries) == 0 {
		t.Fatal("the failed fetch was not logged")
	}
	for _, e := range entries {
		msg := fmt.Sprint(e.ContextMap()["error"])
		if !strings.Contains(msg, "does not match") || len(msg) > 2<<10 {
			t.Errorf("logged error of %d bytes (%.200s…), want the mismatch with the issuer cut", len(msg), msg)
		}
	}
}

// TestRemoteKeysLongJWKSURICut: a jwks_uri the issuer's metadata names
// is the issuer's, not ours, and may be as long as the metadata; the
// logged error of a failed key fetch names it cut, not as the half
// megabyte a hostile or broken server may put there, with each failed
// fetch: answered with a status, with no JSON, and not answered.
func TestRemoteKeysLongJWKSURICut(t *testing.T) {
	path := "/" + strings.Repeat("x", 512<<10)
	for _, tt := range []struct {
		name string
		jwks http.HandlerFunc
	}{
		{"status", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{"no JSON", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "not json") }},
		{"no answer", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == path {
					tt.jwks(w, r)
					return
				}
				json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + path})
			}))
			t.Cleanup(srv.Close)
			core, logs := observer.New(zap.WarnLevel)
			rk := NewRemoteKeys(srv.URL, srv.Client(), zap.New(core))
			t.Cleanup(rk.Close)
			if _, err := rk.PublicKey(t.Context(), "ec1"); !errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("Key with the key set unreadable = %v, want ErrKeysUnavailable", err)
			}
			entries := logs.FilterMessage("fetching issuer keys").All()
			if len(entries) == 0 {
				t.Fatal("the failed fetch was not logged")
			}
			for _, e := range entries {
				msg := fmt.Sprint(e.ContextMap()["error"])
				if !strings.Contains(msg, "jwks") || len(msg) > 2<<10 {
					t.Errorf("logged error of %d bytes (%.200s…), want the failure with the URL cut", len(msg), msg)
				}
			}
		})
	}
}

// TestRemoteKeysLongKidCut: a kid the issuer's key set names twice, for
// two keys, is logged cut, not as the half megabyte a hostile or broken
// server may put there, with each fetch.
func TestRemoteKeysLongKidCut(t *testing.T) {
	kid := strings.Repeat("k", 256<<10)
	a, _, _ := ed25519.GenerateKey(nil)
	b, _, _ := ed25519.GenerateKey(nil)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			json.NewEncoder(w).Encode(map[string]any{"keys": []any{edJWK(kid, a), edJWK(kid, b)}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks"})
	}))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.WarnLevel)
	rk := NewRemoteKeys(srv.URL, srv.Client(), zap.New(core))
	t.Cleanup(rk.Close)
	if _, err := rk.PublicKey(t.Context(), kid); err == nil {
		t.Fatal("a kid named twice gave a key")
	}
	entries := logs.FilterMessage("issuer publishes a kid twice; neither key is used").All()
	if len(entries) == 0 {
		t.Fatal("the kid named twice was not logged")
	}
	for _, e := range entries {
		if got := fmt.Sprint(e.ContextMap()["kid"]); len(got) > maxLoggedKid+len(auditCut) {
			t.Errorf("logged kid of %d bytes, want it cut to about %d", len(got), maxLoggedKid)
		}
	}
}

// TestRemoteLogsTerminalSafe: the values of a remote issuer's documents
// that the gateway logs, a kid its key set names twice, a key it skips,
// the jwks_uri its metadata moves the keys to, the introspection_endpoint
// it names (in the error of a failed call) and a host no lookup finds,
// are written with C1 controls and bidi characters escaped, as audit
// events write a caller's text: zap escapes C0 controls only, and a
// hostile issuer's CSI (U+009B) would erase an operator's terminal, its
// U+202E reverse what follows on the line. The values stay readable,
// escaped (\u009b).
func TestRemoteLogsTerminalSafe(t *testing.T) {
	const evil = "\u009b2J\u009b3J\u202eevil" // CSI erase display, CSI erase scrollback, right-to-left override
	a, _, _ := ed25519.GenerateKey(nil)
	b, _, _ := ed25519.GenerateKey(nil)
	var moved atomic.Bool
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/jwks":
			if moved.Load() {
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"keys": []any{edJWK("k"+evil, a), edJWK("k"+evil, b),
				map[string]any{"kid": "c" + evil, "kty": "EC", "crv": "P-256"}}})
		case "/moved", "/introspect":
			http.Error(w, "unavailable", http.StatusInternalServerError)
		default:
			md := map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks", "introspection_endpoint": srv.URL + "/introspect?" + evil}
			if moved.Load() {
				md["jwks_uri"] = srv.URL + "/moved?" + evil
			}
			json.NewEncoder(w).Encode(md)
		}
	}))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)

	rk := NewRemoteKeys(srv.URL, srv.Client(), log)
	t.Cleanup(rk.Close)
	now := testNow
	rk.now = func() time.Time { return now }
	rk.PublicKey(t.Context(), "k1")
	moved.Store(true)
	now = now.Add(time.Minute)
	rk.PublicKey(t.Context(), "k2")

	// An issuer whose metadata names a host no lookup finds: the error
	// names the host.
	var far *httptest.Server
	far = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": far.URL, "jwks_uri": "https://k" + evil + ".invalid/jwks"})
	}))
	t.Cleanup(far.Close)
	hosts := NewRemoteKeys(far.URL, far.Client(), log)
	t.Cleanup(hosts.Close)
	hosts.PublicKey(t.Context(), "k1")

	ri, err := NewRemoteIntrospection(srv.URL, "", gwClientID, gwClientSecret, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Introspector, cfg.Logger = ri, log
	h := newHarness(t, cfg, nil)
	if resp := h.do(t, call{body: toolCall("read_a"), token: "opaque-evil"}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("introspection failing: status %d, want 503", resp.StatusCode)
	}

	for msg, field := range map[string]string{
		"issuer publishes a kid twice; neither key is used": "kid",
		"skipping JWK": "kid",
		"the issuer's metadata names another jwks_uri": "jwks_uri",
		"fetching issuer keys":                         "error",
		"token introspection failed":                   "error",
	} {
		found := false
		for _, e := range logs.FilterMessage(msg).All() {
			v := fmt.Sprint(e.ContextMap()[field])
			if !shownWhole(v) {
				t.Errorf("%s: %s %q written raw", msg, field, v)
			}
			found = found || strings.Contains(v, `\u009b2J\u009b3J\u202eevil`)
		}
		if !found {
			t.Errorf("%s: no %s naming the issuer's value escaped (%v)", msg, field, logs.FilterMessage(msg).All())
		}
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if s := fmt.Sprint(v); !shownWhole(s) {
				t.Errorf("%s: %s %q written raw", e.Message, k, s)
			}
		}
	}
}

// TestRemoteKeysRefusedValuesCut: a jwks_uri the gateway refuses to
// call (one Go cannot parse, a port out of range) or cannot reach (a
// host no lookup finds, which the lookup's error names) and a key it
// skips (a key type or curve it does not know) are the issuer's
// values, as long as the documents; the logged errors name them cut,
// not as the half megabyte a hostile or broken server may put there,
// with each fetch (the skipped key at DEBUG).
func TestRemoteKeysRefusedValuesCut(t *testing.T) {
	long := strings.Repeat("x", 512<<10)
	a, _, _ := ed25519.GenerateKey(nil)
	for _, tt := range []struct {
		name string
		md   func(base string) map[string]any
		keys []any
		msg  string
	}{
		{"bad escape", func(base string) map[string]any {
			return map[string]any{"issuer": base, "jwks_uri": base + "/" + long + "%zz"}
		}, nil, "fetching issuer keys"},
		{"long port", func(base string) map[string]any {
			return map[string]any{"issuer": base, "jwks_uri": "https://h.example:" + strings.Repeat("1", 512<<10) + "/jwks"}
		}, nil, "fetching issuer keys"},
		{"bad port", func(base string) map[string]any {
			return map[string]any{"issuer": base, "jwks_uri": "https://h.example:1" + long + "/jwks"}
		}, nil, "fetching issuer keys"},
		{"long host", func(base string) map[string]any {
			return map[string]any{"issuer": base, "jwks_uri": "https://" + strings.Repeat("a.", 256<<10) + "example/jwks"}
		}, nil, "fetching issuer keys"},
		{"key type", nil, []any{map[string]any{"kid": "k1", "kty": long}, edJWK("k2", a)}, "skipping JWK"},
		{"curve", nil, []any{map[string]any{"kid": "k1", "kty": "EC", "crv": long}, edJWK("k2", a)}, "skipping JWK"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/jwks" {
					json.NewEncoder(w).Encode(map[string]any{"keys": tt.keys})
					return
				}
				md := map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks"}
				if tt.md != nil {
					md = tt.md(srv.URL)
				}
				json.NewEncoder(w).Encode(md)
			}))
			t.Cleanup(srv.Close)
			core, logs := observer.New(zap.DebugLevel)
			rk := NewRemoteKeys(srv.URL, srv.Client(), zap.New(core))
			t.Cleanup(rk.Close)
			rk.PublicKey(t.Context(), "k1")
			entries := logs.FilterMessage(tt.msg).All()
			if len(entries) == 0 {
				t.Fatalf("nothing logged as %q", tt.msg)
			}
			for _, e := range entries {
				if msg := fmt.Sprint(e.ContextMap()["error"]); len(msg) > 2<<10 {
					t.Errorf("logged error of %d bytes (%.200s…), want the issuer's value cut", len(msg), msg)
				}
			}
		})
	}
}
