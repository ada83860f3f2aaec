package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"strconv"
	"strings"
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

// TestRememberedKeysOfClientSize: a key whose jwk carries members its
// type does not decode (a P-256 key with a 4 KB "n"), or an RSA modulus
// spelled longer than MaxRSABits with leading zero bytes, is accepted but
// not remembered: anyone can sign proofs with such keys, each a new
// entry, and 1,024 of them held some 5.5 MB instead of 0.7 MB. Keys as
// clients send them are remembered, however large.
func TestRememberedKeysOfClientSize(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const uri = "https://mcp.example.com/mcp"
	req := Request{Method: "POST", URI: uri}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	junk := strings.Repeat("A", 4000)
	zeros := func(n int) string { return b64(append(make([]byte, n), rk.N.Bytes()...)) }
	for _, tt := range []struct {
		name     string
		key      crypto.Signer
		method   jwt.SigningMethod
		edit     map[string]any
		remember bool
	}{
		{"P-256", ec, jwt.SigningMethodES256, nil, true},
		{"P-256 with n", ec, jwt.SigningMethodES256, map[string]any{"n": junk}, false},
		{"P-256 with e", ec, jwt.SigningMethodES256, map[string]any{"e": junk}, false},
		{"Ed25519", ed, jwt.SigningMethodEdDSA, nil, true},
		{"Ed25519 with y", ed, jwt.SigningMethodEdDSA, map[string]any{"y": junk}, false},
		{"Ed25519 with n", ed, jwt.SigningMethodEdDSA, map[string]any{"n": junk}, false},
		{"RSA", rk, jwt.SigningMethodRS256, nil, true},
		{"RSA with x", rk, jwt.SigningMethodPS256, map[string]any{"x": junk}, false},
		{"RSA with crv", rk, jwt.SigningMethodPS256, map[string]any{"crv": junk}, false},
		{"RSA with y", rk, jwt.SigningMethodPS256, map[string]any{"y": junk}, false},
		{"RSA spelled as 4096 bits", rk, jwt.SigningMethodRS256, map[string]any{"n": zeros(256)}, true},
		{"RSA spelled longer", rk, jwt.SigningMethodRS256, map[string]any{"n": zeros(2000)}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := New(Options{Now: func() time.Time { return now }})
			p := newProof(t, tt.key, tt.method, "POST", uri, now)
			for k, val := range tt.edit {
				p.header["jwk"].(map[string]any)[k] = val
			}
			if _, err := v.Check([]string{p.sign(t)}, req); err != nil {
				t.Fatalf("Check(a proof with jwk %.80v) = %v", p.header["jwk"], err)
			}
			if n := v.keys.len(); (n == 1) != tt.remember {
				t.Errorf("the Verifier remembers %d keys, want remembered %v", n, tt.remember)
			}
			for m := range v.keys.keys {
				if size := len(m.kty + m.crv + m.x + m.y + m.n + m.e); size > 700 {
					t.Errorf("a remembered key of %d characters, more than an RSA-4096 key spells", size)
				}
			}
		})
	}
}
