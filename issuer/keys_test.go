package issuer

import (
	"crypto"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// jwksOf fetches and decodes the issuer's JWKS.
func (e *testEnv) jwksOf(t *testing.T) ([]accesstoken.JWK, http.Header) {
	t.Helper()
	resp, err := e.srv.Client().Get(e.iss.endpoint(pathJWKS))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct{ Keys []accesstoken.JWK }
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	return set.Keys, resp.Header
}

func kids(keys []accesstoken.JWK) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.Kid)
	}
	return out
}

func (e *testEnv) clientToken(t testing.TB) string {
	t.Helper()
	subj := tokenSubject{client: &Client{ID: tConf}, subject: tConf, resource: tResource, scopes: []string{"read"}}
	tok, _, _, err := e.iss.signAccessToken(t.Context(), subj, e.iss.expiry(subj))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSigningAlgorithms(t *testing.T) {
	for _, tt := range []struct{ alg, kty, crv string }{
		{"ES256", "EC", "P-256"},
		{"RS256", "RSA", ""},
		{"EdDSA", "OKP", "Ed25519"},
	} {
		t.Run(tt.alg, func(t *testing.T) {
			e := newTokEnv(t, func(c *Config) { c.SigningAlg = tt.alg })
			keys, h := e.jwksOf(t)
			if len(keys) != 1 {
				t.Fatalf("JWKS has %d keys, want 1", len(keys))
			}
			k := keys[0]
			if k.Kty != tt.kty || k.Crv != tt.crv || k.Alg != tt.alg || k.Use != "sig" || k.Kid != k.Thumbprint() {
				t.Errorf("JWK = %+v, want kty %s crv %q alg %s use sig and kid = thumbprint", k, tt.kty, tt.crv, tt.alg)
			}
			if ct := h.Get("Content-Type"); ct != "application/jwk-set+json" {
				t.Errorf("JWKS Content-Type = %q", ct)
			}
			if cc := h.Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") {
				t.Errorf("JWKS Cache-Control = %q, want public with a short max-age", cc)
			}
			a := e.post(t, pathToken, ccForm(nil), tConf+":"+tSecret)
			claims := verifyLikeGateway(t, e, a.str("access_token"), tt.alg)
			if claims["sub"] != tConf {
				t.Errorf("sub = %v, want %s", claims["sub"], tConf)
			}
			// The published JWK itself verifies the token.
			pub, err := k.PublicKey()
			if err != nil {
				t.Fatalf("PublicKey(published) error: %v", err)
			}
			got, _ := e.iss.PublicKey(t.Context(), k.Kid)
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(got) {
				t.Error("published JWK differs from PublicKey(kid)")
			}
		})
	}
}

func TestSigningKeyPersisted(t *testing.T) {
	e := newTokEnv(t)
	var recs []signingKey
	_ = e.store.View(t.Context(), func(tx store.Tx) error {
		return tx.List(bucketKeys, "", func(_ string, v []byte) error {
			var k signingKey
			_ = json.Unmarshal(v, &k)
			recs = append(recs, k)
			return nil
		})
	})
	if len(recs) != 1 {
		t.Fatalf("stored keys = %d, want 1", len(recs))
	}
	b, _ := pem.Decode(recs[0].PrivatePEM)
	if b == nil || b.Type != "PRIVATE KEY" || recs[0].Alg != "ES256" || !recs[0].RetiredAt.IsZero() {
		t.Errorf("stored key = %+v, want a current ES256 PKCS#8 PEM key", recs[0])
	}
	if _, err := New(Config{Issuer: e.srv.URL, SigningAlg: "HS256"}, e.store); err == nil {
		t.Error("New(SigningAlg HS256) error = nil, want an error")
	}
}

// signedWith is the kid a token e signs now carries.
func (e *testEnv) signedWith(t *testing.T) string {
	t.Helper()
	h, _ := claimsOf(t, e.clientToken(t))
	kid, _ := h["kid"].(string)
	return kid
}

// TestSigningKeyRotation: a new key is published at once, next to the
// key that signs, and takes over keyPublishDelay later; the old one stays
// published until its tokens have expired.
func TestSigningKeyRotation(t *testing.T) {
	e := newTokEnv(t)
	old := e.clientToken(t)
	oldKeys, _ := e.jwksOf(t)
	kid, err := e.iss.RotateSigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if kid == oldKeys[0].Kid {
		t.Fatal("RotateSigningKey() returned the old kid")
	}
	keys, _ := e.jwksOf(t)
	if got := kids(keys); len(got) != 2 || got[0] != oldKeys[0].Kid || got[1] != kid {
		t.Fatalf("JWKS kids after rotation = %v, want [old new]", got)
	}
	if got := e.signedWith(t); got != oldKeys[0].Kid {
		t.Errorf("token right after rotation: kid %s, want the old key until the delay has passed", got)
	}
	e.clock.Advance(keyPublishDelay - time.Nanosecond)
	if got := e.signedWith(t); got != oldKeys[0].Kid {
		t.Errorf("token just before the delay: kid %s, want the old key", got)
	}
	e.clock.Advance(time.Nanosecond)
	keys, _ = e.jwksOf(t)
	if got := kids(keys); len(got) != 2 || got[0] != kid || got[1] != oldKeys[0].Kid {
		t.Fatalf("JWKS kids after the delay = %v, want [new old]", got)
	}
	// Tokens of the old key still verify; new tokens use the new key.
	verifyLikeGateway(t, e, old, "ES256")
	if !e.active(t, old) {
		t.Error("old token inactive after rotation")
	}
	if got := e.signedWith(t); got != kid {
		t.Errorf("new token kid = %v, want %s", got, kid)
	}
	// A token it signed at the last instant is taken by gateways until
	// its exp plus their leeway: the key is published until then.
	e.clock.Advance(time.Hour + accesstoken.Leeway)
	if keys, _ := e.jwksOf(t); !slices.Contains(kids(keys), oldKeys[0].Kid) {
		t.Fatalf("JWKS kids when gateways last take the old key's tokens = %v, want it kept", kids(keys))
	}
	// Once every token of the old key has expired, it is withdrawn.
	e.clock.Advance(keyReload + time.Second)
	keys, _ = e.jwksOf(t)
	if got := kids(keys); len(got) != 1 || got[0] != kid {
		t.Fatalf("JWKS kids after the old key's tokens expired = %v, want [%s]", got, kid)
	}
	if _, err := e.iss.PublicKey(t.Context(), oldKeys[0].Kid); err == nil {
		t.Error("PublicKey(withdrawn kid) error = nil, want an error")
	}
}

// TestSigningKeySharedAcrossInstances: a rotation on b is in a's JWKS and
// known to a's verification within keyReload, and both sign with it from
// keyPublishDelay on, not before. On PostgreSQL: TestKeyRotationAcrossInstances.
func TestSigningKeySharedAcrossInstances(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
	a := newTokEnvStore(t, st, clock)
	b := newTokEnvStore(t, st, clock) // a config reload: same store
	ka, _ := a.jwksOf(t)
	kb, _ := b.jwksOf(t)
	if len(ka) != 1 || len(kb) != 1 || ka[0].Kid != kb[0].Kid {
		t.Fatalf("instances publish %v and %v, want the same single key", kids(ka), kids(kb))
	}
	kid, err := b.iss.RotateSigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyReload)
	if keys, _ := a.jwksOf(t); !slices.Contains(kids(keys), kid) {
		t.Fatalf("other instance's JWKS after keyReload = %v, want %s in it", kids(keys), kid)
	}
	if _, err := a.iss.PublicKey(t.Context(), kid); err != nil {
		t.Fatalf("other instance PublicKey(rotated kid) error: %v", err)
	}
	for name, e := range map[string]*testEnv{"a": a, "b": b} {
		if got := e.signedWith(t); got == kid {
			t.Errorf("%s signs with the new key %s before keyPublishDelay", name, kid)
		}
	}
	clock.Advance(keyPublishDelay - keyReload)
	for name, e := range map[string]*testEnv{"a": a, "b": b} {
		if got := e.signedWith(t); got != kid {
			t.Errorf("%s signs with %v after keyPublishDelay, want %s", name, got, kid)
		}
	}

	// A restart with another algorithm rotates to a key of that algorithm.
	c := newTokEnvStore(t, st, clock, func(c *Config) { c.SigningAlg = "EdDSA" })
	clock.Advance(keyPublishDelay)
	keys, _ := c.jwksOf(t)
	if len(keys) != 3 || keys[0].Alg != "EdDSA" || keys[1].Kid != kid && keys[2].Kid != kid {
		t.Fatalf("JWKS after an algorithm change = %+v, want the EdDSA key first and the old ones kept", keys)
	}
	if h, _ := claimsOf(t, c.clientToken(t)); h["alg"] != "EdDSA" {
		t.Errorf("signing alg after the change = %v, want EdDSA", h["alg"])
	}
}

// TestCachedJWKSKnowsEverySigningKey: a copy of the JWKS that a
// verifier or a shared cache keeps as its Cache-Control max-age allows
// lists every key that signs while the copy is fresh, though it was
// fetched, just before that instance re-read the keys, from an instance
// that did not know yet of a rotation on another: a new key signs only
// once every copy fetched without it has gone stale.
func TestCachedJWKSKnowsEverySigningKey(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
	a := newTokEnvStore(t, st, clock) // a read the key set now
	b := newTokEnvStore(t, st, clock)
	kid, err := b.iss.RotateSigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyReload - time.Nanosecond)
	cached, h := a.jwksOf(t)
	if slices.Contains(kids(cached), kid) {
		t.Fatalf("a's JWKS before it re-read the keys = %v, want the copy without the new key %s", kids(cached), kid)
	}
	var maxAge int
	if _, err := fmt.Sscanf(h.Get("Cache-Control"), "public, max-age=%d", &maxAge); err != nil || maxAge <= 0 {
		t.Fatalf("JWKS Cache-Control = %q, want public, max-age=N", h.Get("Cache-Control"))
	}
	// The copy's last fresh instant (RFC 9111 section 4.2: fresh while
	// its age is below max-age).
	clock.Advance(time.Duration(maxAge)*time.Second - time.Nanosecond)
	for name, e := range map[string]*testEnv{"a": a, "b": b} {
		if got := e.signedWith(t); !slices.Contains(kids(cached), got) {
			t.Errorf("%s signs with %s while a copy of the JWKS without it is fresh (%v)", name, got, kids(cached))
		}
	}
	clock.Advance(keyPublishDelay)
	for name, e := range map[string]*testEnv{"a": a, "b": b} {
		if got := e.signedWith(t); got != kid {
			t.Errorf("%s signs with %s after keyPublishDelay, want %s", name, got, kid)
		}
	}
}

// TestUnknownKidReloadsRarely: a token with a kid nobody published makes
// the key ring re-read the store at most every keyMinReload, so forged
// kids cost the gateways no store read each; and so while the store
// fails, when a read that failed must not make the next request read
// again, nor a /jwks request (anyone's) each read the store.
func TestUnknownKidReloadsRarely(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &failingStore{Store: memory.New(memory.Options{Now: clock.Now})}
	e := newTokEnvStore(t, st, clock)
	clock.Advance(keyMinReload)
	if _, err := e.iss.PublicKey(t.Context(), "made-up"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PublicKey(made-up) = %v, want ErrNotFound after a reload", err)
	}
	st.down.Store(true) // any read now fails
	for range 100 {
		if _, err := e.iss.PublicKey(t.Context(), "made-up"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("PublicKey(made-up) within keyMinReload = %v, want ErrNotFound without reading the store", err)
		}
	}
	clock.Advance(keyMinReload)
	if _, err := e.iss.PublicKey(t.Context(), "made-up"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PublicKey(made-up) after keyMinReload = %v, want the store's error (it reads again)", err)
	}
	failed := st.failed.Load()
	for range 100 {
		if _, err := e.iss.PublicKey(t.Context(), "made-up"); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Fatalf("PublicKey(made-up) after a failed read = %v, want the store's error", err)
		}
	}
	if n := st.failed.Load() - failed; n != 0 {
		t.Errorf("100 made-up kids within keyMinReload of a failed read tried the store %d times, want 0", n)
	}
	// /jwks: the ID-token ring has no key yet and must read; the signing
	// ring's copy is stale (keyReload).
	clock.Advance(keyReload)
	failed = st.failed.Load()
	for k := range 100 {
		rec := httptest.NewRecorder()
		e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, pathJWKS, nil))
		if rec.Code == http.StatusOK {
			t.Fatalf("/jwks request %d with the store down = %d %s, want the store's error", k, rec.Code, rec.Body)
		}
	}
	if n := st.failed.Load() - failed; n > 2 {
		t.Errorf("100 /jwks requests with the store down tried it %d times, want at most one per key ring", n)
	}
	clock.Advance(keyMinReload)
	st.down.Store(false)
	rec := httptest.NewRecorder()
	e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, pathJWKS, nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/jwks keyMinReload after the store is back = %d %s, want 200", rec.Code, rec.Body)
	}
}

func TestPublicKeyUnknown(t *testing.T) {
	e := newTokEnv(t)
	if _, err := e.iss.PublicKey(t.Context(), "nope"); err == nil {
		t.Error("PublicKey(unknown) error = nil, want an error")
	}
	// A forged token with an unknown kid is not introspected as active.
	if e.active(t, "eyJhbGciOiJFUzI1NiIsImtpZCI6Im5vcGUiLCJ0eXAiOiJhdCtqd3QifQ.e30.c2ln") {
		t.Error("token with unknown kid is active")
	}
}

// TestRetiredKeyOutlivesOtherInstancesTokens: after a rotation every
// instance signs with the old key until the new one takes over
// (keyPublishDelay); the old key stays published until those tokens
// expire too.
func TestRetiredKeyOutlivesOtherInstancesTokens(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
	a := newTokEnvStore(t, st, clock)
	b := newTokEnvStore(t, st, clock)
	old := a.clientToken(t) // a has the key cached from now on
	h, _ := claimsOf(t, old)
	oldKid := h["kid"].(string)
	if _, err := b.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyPublishDelay - time.Second)
	late := a.clientToken(t)
	if h, _ := claimsOf(t, late); h["kid"] != oldKid {
		t.Fatalf("a's token before the new key takes over: kid %v, want the old key %s", h["kid"], oldKid)
	}
	clock.Advance(time.Hour - time.Second) // the late token's last second
	keys, _ := b.jwksOf(t)
	if got := kids(keys); !slices.Contains(got, oldKid) {
		t.Errorf("JWKS before the late token expires = %v, want the old key %s kept", got, oldKid)
	}
	verifyLikeGateway(t, a, late, "ES256")
}

// TestRetiredKeyOutlivesLongerLivedTokens: a rotation under a
// configuration with shorter token lifetimes than the one before (a
// reload that lowered them, or an instance beside others still on the
// longer ones) keeps the old key published until the tokens it signed
// under the longer lifetime have expired (the token horizon), not only
// for the new lifetime.
func TestRetiredKeyOutlivesLongerLivedTokens(t *testing.T) {
	e := newTokEnv(t) // access and ID tokens live an hour
	tok, _, _ := clientTokenOf(t, e)
	h, c := claimsOf(t, tok)
	oldKid := h["kid"].(string)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	e.restart(e.store, func(c *Config) { c.AccessTokenTTL, c.IDTokenTTL = 5*time.Minute, 5*time.Minute })
	if _, err := e.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(exp.Add(accesstoken.Leeway - time.Second).Sub(e.clock.Now()))
	if _, err := e.store.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.restart(e.store, func(c *Config) { c.AccessTokenTTL, c.IDTokenTTL = 5*time.Minute, 5*time.Minute })
	if keys, _ := e.jwksOf(t); !slices.Contains(kids(keys), oldKid) {
		t.Errorf("JWKS in the last second a gateway takes the old token = %v, want the old key %s kept", kids(keys), oldKid)
	}
	if _, err := e.iss.PublicKey(t.Context(), oldKid); err != nil {
		t.Errorf("PublicKey(old kid) in the old token's last second = %v, want the key", err)
	}
	// The horizon lies up to horizonSlack past the last token's exp.
	e.clock.Advance(time.Second + horizonSlack)
	if keys, _ := e.jwksOf(t); slices.Contains(kids(keys), oldKid) {
		t.Errorf("JWKS once the token horizon has passed = %v, want the old key %s withdrawn", kids(keys), oldKid)
	}
}

// TestRetiredKeyOutlivesTokensSignedAfterRotation: an instance with
// longer token lifetimes than the one that rotates signs with the old key
// until the new one takes over (keyPublishDelay); the old key stays
// published until those tokens expire, though the token horizon at the
// rotation did not reach them (no token was issued for a while).
func TestRetiredKeyOutlivesTokensSignedAfterRotation(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
	a := newTokEnvStore(t, st, clock) // access and ID tokens live an hour
	b := newTokEnvStore(t, st, clock, func(c *Config) { c.AccessTokenTTL, c.IDTokenTTL = 5*time.Minute, 5*time.Minute })
	if _, err := b.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyPublishDelay - time.Second)
	late, _, _ := clientTokenOf(t, a)
	h, c := claimsOf(t, late)
	lateKid := h["kid"].(string)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	clock.Advance(exp.Add(accesstoken.Leeway - time.Second).Sub(clock.Now()))
	if _, err := st.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]*testEnv{"a": a, "b": b} {
		if keys, _ := e.jwksOf(t); !slices.Contains(kids(keys), lateKid) {
			t.Errorf("%s's JWKS in the last second a gateway takes a's late token = %v, want its key %s kept", name, kids(keys), lateKid)
		}
	}
}

// TestIDTokenAlgorithms: ID tokens are signed in RS256, OpenID Connect's
// default, unless the client registered the issuer's signing_alg. The
// RS256 key is made when it first signs, published beside the access
// tokens' key, rotated with it, kept across a restart, accepted as an
// id_token_hint, and never taken for an access token.
func TestIDTokenAlgorithms(t *testing.T) {
	const esClient = "es-client"
	e := newTokEnv(t, func(c *Config) {
		c.Clients = append(c.Clients, Client{ID: esClient, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none", IDTokenAlg: "ES256"})
	})
	idToken := func(client string) (header map[string]any, raw, accessKID string) {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{client: client, scopes: []string{"openid"}})
		tok, err := e.exchange(t, client, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ = tok.Extra("id_token").(string)
		header, _ = claimsOf(t, raw)
		ah, _ := claimsOf(t, tok.AccessToken)
		return header, raw, ah["kid"].(string)
	}
	before, _ := e.jwksOf(t)
	if len(before) != 1 {
		t.Fatalf("JWKS before any ID token = %v, want the access tokens' key alone", kids(before))
	}

	h, es, accessKID := idToken(esClient)
	if h["alg"] != "ES256" || h["kid"] != accessKID {
		t.Errorf("ID token of a client registered for ES256: header %v, want ES256 with the access tokens' key %s", h, accessKID)
	}
	verifyIDToken(t, e, es, "ES256")
	if keys, _ := e.jwksOf(t); len(keys) != 1 {
		t.Errorf("JWKS after an ES256 ID token = %v, want no RS256 key made", kids(keys))
	}

	h, rs, accessKID := idToken(tPublic)
	rsKID, _ := h["kid"].(string)
	if h["alg"] != "RS256" || rsKID == accessKID {
		t.Fatalf("ID token of a client that registered no algorithm: header %v, want RS256 from a key of its own", h)
	}
	verifyIDToken(t, e, rs, "RS256")
	keys, _ := e.jwksOf(t)
	if got := kids(keys); len(got) != 2 || got[0] != accessKID || got[1] != rsKID || keys[1].Kty != "RSA" || keys[1].Alg != "RS256" {
		t.Fatalf("JWKS = %v, want [%s %s], the RS256 key second", keys, accessKID, rsKID)
	}
	if _, err := e.iss.PublicKey(t.Context(), rsKID); err == nil {
		t.Error("PublicKey(the RS256 ID-token key) error = nil: an in-process gateway would take it for access tokens")
	}
	for _, hint := range []string{es, rs} {
		if e.iss.idTokenHint(t.Context(), hint) == nil {
			t.Errorf("idTokenHint(an ID token in %v) = nil, want its claims", hint[:20])
		}
	}
	// One key, not one per token.
	if h, _, _ := idToken(tPublic); h["kid"] != rsKID {
		t.Errorf("second RS256 ID token kid = %v, want %s", h["kid"], rsKID)
	}

	// A restart on the same store keeps it.
	e.restart(e.store, func(c *Config) {
		c.Clients = append(c.Clients, Client{ID: esClient, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none", IDTokenAlg: "ES256"})
	})
	if after, _ := e.jwksOf(t); !slices.Equal(kids(after), kids(keys)) {
		t.Fatalf("JWKS after a restart = %v, want %v", kids(after), kids(keys))
	}
	if h, _, _ := idToken(tPublic); h["kid"] != rsKID {
		t.Errorf("RS256 ID token after a restart: kid %v, want %s", h["kid"], rsKID)
	}

	// A rotation rotates both: new keys published at once, signing after
	// the delay; the old ones stay published.
	newKID, err := e.iss.RotateSigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if keys, _ := e.jwksOf(t); len(keys) != 4 || !slices.Contains(kids(keys), newKID) {
		t.Fatalf("JWKS after a rotation = %v, want 4 keys with %s", kids(keys), newKID)
	}
	e.clock.Advance(keyPublishDelay)
	h, rs, accessKID = idToken(tPublic)
	if accessKID != newKID || h["kid"] == rsKID || h["alg"] != "RS256" {
		t.Errorf("after the delay: access key %s (want %s), ID token header %v (want a new RS256 key)", accessKID, newKID, h)
	}
	verifyIDToken(t, e, rs, "RS256")
}

// TestIDTokenAlgorithmsRS256Issuer: with signing_alg RS256 the access
// tokens' key signs the ID tokens too; no second key is made.
func TestIDTokenAlgorithmsRS256Issuer(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.SigningAlg = "RS256" })
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	idt, _ := tok.Extra("id_token").(string)
	h, _ := claimsOf(t, idt)
	ah, _ := claimsOf(t, tok.AccessToken)
	if h["alg"] != "RS256" || h["kid"] != ah["kid"] {
		t.Errorf("ID token header %v, want RS256 with the access tokens' key %v", h, ah["kid"])
	}
	if keys, _ := e.jwksOf(t); len(keys) != 1 {
		t.Errorf("JWKS = %v, want one key", kids(keys))
	}
	var md map[string]any
	resp, err := e.srv.Client().Get(e.srv.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(md["id_token_signing_alg_values_supported"]); got != "[RS256]" {
		t.Errorf("id_token_signing_alg_values_supported = %s, want [RS256]", got)
	}
}

// TestIDTokenAlgorithmConfigured: an operator's client may name RS256 or
// signing_alg; another algorithm is refused at load and by the admin API.
func TestIDTokenAlgorithmConfigured(t *testing.T) {
	e := newTokEnv(t)
	for _, alg := range []string{"EdDSA", "none", "HS256", "rs256"} {
		cfg := e.config()
		cfg.Clients = append(cfg.Clients, Client{ID: "c", RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none", IDTokenAlg: alg})
		if _, err := New(cfg, memory.New(memory.Options{})); err == nil || !strings.Contains(err.Error(), "id_token_signed_response_alg") {
			t.Errorf("New(a client with id_token_signed_response_alg %s) error = %v, want one naming it", alg, err)
		}
		err := e.iss.PutClient(t.Context(), Client{ID: "admin-" + alg, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none", IDTokenAlg: alg})
		if err == nil || !strings.Contains(err.Error(), "id_token_signed_response_alg") {
			t.Errorf("PutClient(id_token_signed_response_alg %s) error = %v, want one naming it", alg, err)
		}
	}
	for _, alg := range []string{"", "RS256", "ES256"} {
		if err := e.iss.PutClient(t.Context(), Client{ID: "admin-ok-" + alg, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none", IDTokenAlg: alg}); err != nil {
			t.Errorf("PutClient(id_token_signed_response_alg %q) error = %v", alg, err)
		}
	}
}

// TestMakeIDTokenKey: the RS256 ID-token key made ahead, as Caddy's app
// does at start, is in the JWKS before any ID token, once; with
// signing_alg RS256 there is nothing to make.
func TestMakeIDTokenKey(t *testing.T) {
	e := newTokEnv(t)
	for range 2 {
		if err := e.iss.MakeIDTokenKey(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	keys, _ := e.jwksOf(t)
	if len(keys) != 2 || keys[1].Alg != "RS256" {
		t.Fatalf("JWKS = %v, want the access tokens' key and one RS256 key", keys)
	}
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	idt, _ := tok.Extra("id_token").(string)
	if h, _ := claimsOf(t, idt); h["kid"] != keys[1].Kid {
		t.Errorf("ID token kid = %v, want the key made ahead, %s", h["kid"], keys[1].Kid)
	}

	rs := newTokEnv(t, func(c *Config) { c.SigningAlg = "RS256" })
	if err := rs.iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	if keys, _ := rs.jwksOf(t); len(keys) != 1 {
		t.Errorf("JWKS with signing_alg RS256 = %v, want its one key", kids(keys))
	}
}

// TestIDTokenKeysAcrossSigningAlgs: signing_alg changed to RS256 (whose
// own key then signs the ID tokens) retires the RS256 ID-token key: it
// stays published for the ID tokens it signed, then is withdrawn, and a
// rotation makes no new one.
func TestIDTokenKeysAcrossSigningAlgs(t *testing.T) {
	e := newTokEnv(t)
	if err := e.iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := tok.Extra("id_token").(string)
	h, _ := claimsOf(t, old)
	oldKID, _ := h["kid"].(string)

	e.restart(e.store, func(c *Config) { c.SigningAlg = "RS256" })
	if err := e.iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	verifyIDToken(t, e, old, "RS256") // still published for its lifetime
	// Right after the change, while the access tokens' RS256 key waits
	// to sign (keyPublishDelay) and their ES256 key still signs, ID
	// tokens are RS256 all the same: the client registered nothing else.
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"openid"}})
	if tok, err = e.exchange(t, tPublic, "", code, verifier); err != nil {
		t.Fatal(err)
	}
	during, _ := tok.Extra("id_token").(string)
	if h, _ := claimsOf(t, during); h["alg"] != "RS256" {
		t.Errorf("ID token right after signing_alg became RS256: header %v, want RS256", h)
	}
	verifyIDToken(t, e, during, "RS256")
	if e.iss.idTokenHint(t.Context(), old) == nil {
		t.Error("idTokenHint(an ID token signed before the change) = nil, want its claims")
	}
	if _, err := e.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	if e.iss.idKeys.made() {
		t.Error("with signing_alg RS256 (after a rotation) the ID-token key set still has a current key, which nothing signs with")
	}
	e.clock.Advance(e.iss.idKeys.retention + horizonSlack + keyPublishDelay) // past the token horizon too
	keys, _ := e.jwksOf(t)
	for _, kid := range kids(keys) {
		if _, err := e.iss.PublicKey(t.Context(), kid); err != nil {
			t.Errorf("JWKS %v publishes %s, an ID-token key, past the lifetime of the ID tokens %s signed, though nothing signs with it", kids(keys), kid, oldKID)
		}
	}
	if e.iss.idTokenHint(t.Context(), old) != nil {
		t.Error("idTokenHint accepts an ID token of a key that is no longer published")
	}

	// Back to ES256: a new RS256 ID-token key, published at once.
	e.restart(e.store)
	if err := e.iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"openid"}})
	tok, err = e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	idt, _ := tok.Extra("id_token").(string)
	if h, _ := claimsOf(t, idt); h["alg"] != "RS256" || h["kid"] == oldKID {
		t.Errorf("ID token after ES256 again: header %v, want RS256 with a new key", h)
	}
	verifyIDToken(t, e, idt, "RS256")
}

// TestIDTokenAlgNoLongerOffered: a client stored with an ID-token
// algorithm that signing_alg, changed since, no longer offers is refused
// unauthorized_client naming it: at /authorize before anyone signs in
// when openid is asked, and at /token (not a 500 the client would retry).
// Without openid it is served.
func TestIDTokenAlgNoLongerOffered(t *testing.T) {
	const id = "stored-es"
	e := newTokEnv(t)
	if err := e.iss.PutClient(t.Context(), Client{ID: id, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none", IDTokenAlg: "ES256"}); err != nil {
		t.Fatal(err)
	}
	// A grant from before the change.
	code, verifier := e.issueCode(t, codeSpec{client: id, scopes: []string{"openid", "offline_access", "read"}})
	before, err := e.exchange(t, id, "", code, verifier)
	if err != nil || before.RefreshToken == "" {
		t.Fatalf("code exchange before the change: %v, %v", before, err)
	}
	e.restart(e.store, func(c *Config) { c.SigningAlg = "EdDSA" })

	params := func(scope string) url.Values {
		return url.Values{"response_type": {"code"}, "client_id": {id}, "redirect_uri": {tRedirect}, "state": {"st"},
			"code_challenge": {testChallenge}, "code_challenge_method": {"S256"}, "resource": {tResource}, "scope": {scope}}
	}
	authorize := func(scope string) *url.URL {
		t.Helper()
		p := params(scope)
		resp, err := e.browser().Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return loc
	}
	loc := authorize("openid read")
	if q := loc.Query(); !strings.HasPrefix(loc.String(), tRedirect+"?") || q.Get("error") != "unauthorized_client" || !strings.Contains(q.Get("error_description"), "ES256") {
		t.Errorf("authorization request with openid: Location %s, want unauthorized_client naming ES256 at the client", loc)
	}
	if loc := authorize("read"); strings.HasPrefix(loc.String(), tRedirect) {
		t.Errorf("authorization request without openid: Location %s, want the sign-in", loc)
	}
	if a := e.post(t, pathPAR, params("openid"), ""); a.status != http.StatusBadRequest || a.str("error") != "unauthorized_client" {
		t.Errorf("pushed authorization request with openid = %d %v, want 400 unauthorized_client", a.status, a.body)
	}

	code, verifier = e.issueCode(t, codeSpec{client: id, scopes: []string{"openid"}})
	a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "client_id": {id}, "code": {code},
		"code_verifier": {verifier}, "redirect_uri": {tRedirect}}, "")
	if a.status != http.StatusBadRequest || a.str("error") != "unauthorized_client" || !strings.Contains(a.str("error_description"), "ES256") {
		t.Errorf("token request = %d %v, want 400 unauthorized_client naming ES256", a.status, a.body)
	}
	// A refresh may leave the ID token out (OpenID Connect Core 12.2):
	// the grant's access goes on, and nothing is signed in an algorithm
	// the client did not register.
	r := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {before.RefreshToken}}, "")
	if r.status != http.StatusOK || r.str("access_token") == "" || r.str("refresh_token") == "" || r.body["id_token"] != nil {
		t.Errorf("refresh of a grant from before the change = %d %v, want 200 with tokens and no id_token", r.status, r.raw)
	}
}
