package dpop

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// TestRememberedKeyOnlyForItsMembers: a remembered key serves only a jwk
// of exactly its members; the same coordinates under another curve or
// key type, or beside another key's, are decoded (and refused) as on a
// Verifier that never saw the key.
func TestRememberedKeyOnlyForItsMembers(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := New(Options{Now: func() time.Time { return now }})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri = "https://mcp.example.com/mcp"
	req := Request{Method: "POST", URI: uri}
	if _, err := v.Check([]string{newProof(t, key, jwt.SigningMethodES256, "POST", uri, now).sign(t)}, req); err != nil {
		t.Fatalf("Check(a valid proof) = %v", err)
	}
	if n := v.keys.len(); n != 1 {
		t.Fatalf("the Verifier remembers %d keys, want 1", n)
	}
	jwk := publicJWK(t, key.Public())
	with := func(edit map[string]any) map[string]any {
		j := map[string]any{}
		for k, v := range jwk {
			j[k] = v
		}
		for k, v := range edit {
			if v == nil {
				delete(j, k)
			} else {
				j[k] = v
			}
		}
		return j
	}
	for _, tt := range []struct {
		name string
		jwk  map[string]any
		ok   bool
	}{
		{"the same members", with(nil), true},
		{"the same members and a kid", with(map[string]any{"kid": "k1"}), true},
		{"another curve", with(map[string]any{"crv": "P-384"}), false},
		{"another key type", with(map[string]any{"kty": "OKP", "crv": "Ed25519"}), false},
		{"another key's y", with(map[string]any{"y": publicJWK(t, other.Public())["y"]}), false},
		{"no y", with(map[string]any{"y": nil}), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newProof(t, key, jwt.SigningMethodES256, "POST", uri, now)
			p.header["jwk"] = tt.jwk
			_, err := v.Check([]string{p.sign(t)}, req)
			if (err == nil) != tt.ok {
				t.Errorf("Check(a proof of the remembered key with jwk %v) = %v, want accepted %v", tt.jwk, err, tt.ok)
			}
		})
	}
}

// TestKeysRememberedOnlyOnceTheySigned: a proof whose signature fails, or
// whose key is refused, leaves nothing remembered, so proofs nobody
// signed cannot push out the keys of those who did.
func TestKeysRememberedOnlyOnceTheySigned(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := New(Options{Now: func() time.Time { return now }})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri = "https://mcp.example.com/mcp"
	req := Request{Method: "POST", URI: uri}

	forged := newProof(t, key, jwt.SigningMethodES256, "POST", uri, now)
	forged.key = other
	if _, err := v.Check([]string{forged.sign(t)}, req); err == nil {
		t.Fatal("Check(a proof signed by another key) succeeded")
	}
	identity := make([]byte, ed25519.PublicKeySize)
	identity[0] = 1
	header, _ := json.Marshal(map[string]any{"typ": Type, "alg": "EdDSA", "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(identity)}})
	claims, _ := json.Marshal(map[string]any{"jti": "j1", "htm": "POST", "htu": uri, "iat": now.Unix()})
	sig := make([]byte, ed25519.SignatureSize)
	sig[0] = 1
	if _, err := v.Check([]string{b64(header) + "." + b64(claims) + "." + b64(sig)}, req); err == nil {
		t.Fatal("Check(a proof of the Ed25519 identity key) succeeded")
	}
	if n := v.keys.len(); n != 0 {
		t.Errorf("after two refused proofs the Verifier remembers %d keys, want 0", n)
	}
}

// TestKeyCacheBounded: at most maxKeys keys are remembered; each new one
// past that takes the place of one, and is served.
func TestKeyCacheBounded(t *testing.T) {
	var c keyCache
	for i := range maxKeys + 100 {
		j := jwkOf(i)
		c.add(j, decodedKey{jkt: strconv.Itoa(i)})
		if d, fresh, err := c.decode(j); err != nil || fresh || d.jkt != strconv.Itoa(i) {
			t.Fatalf("decode(key %d just added) = %q, fresh %v, %v; want it remembered", i, d.jkt, fresh, err)
		}
	}
	if n := c.len(); n != maxKeys {
		t.Errorf("the cache holds %d keys, want %d", n, maxKeys)
	}
}

// jwkOf is a distinct made-up key for the cache's own tests.
func jwkOf(i int) accesstoken.JWK {
	return accesstoken.JWK{Kty: "EC", Crv: "P-256", X: strconv.Itoa(i), Y: "y"}
}
