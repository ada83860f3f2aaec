//go:build !race

// Allocation counts hold only without the race detector.

package dpop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestCheckRememberedKeyAllocations: the proofs of a key seen before are
// checked without decoding the key or hashing its thumbprint again
// (keyCache): some fifteen allocations less than on a Verifier that has
// not seen it.
func TestCheckRememberedKeyAllocations(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri = "https://mcp.example.com/mcp"
	req := Request{Method: "POST", URI: uri}
	values := []string{newProof(t, key, jwt.SigningMethodES256, "POST", uri, now).sign(t)}
	const runs = 50
	fresh := make([]*Verifier, runs+1)
	for i := range fresh {
		fresh[i] = New(Options{Now: func() time.Time { return now }})
	}
	i := 0
	cold := testing.AllocsPerRun(runs, func() {
		if _, err := fresh[i].Check(values, req); err != nil {
			t.Fatal(err)
		}
		i++
	})
	v := fresh[0]
	warm := testing.AllocsPerRun(runs, func() {
		if _, err := v.Check(values, req); err != nil {
			t.Fatal(err)
		}
	})
	if cold-warm < 12 {
		t.Errorf("Check of a remembered key's proof allocates %v times, of a new key's %v: want at least 12 fewer", warm, cold)
	}
}

// TestProofClaimsAllocations: the claims are read with a pooled
// tokenizer; what reading them allocates is the strings they hold (here
// jti, htm, htu and ath), not a map of every member.
func TestProofClaimsAllocations(t *testing.T) {
	b := []byte(`{"jti":"3f2a9c1e5b7d4e8f","htm":"POST","htu":"https://mcp.example.com/mcp","iat":1800000000,"ath":"fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"}`)
	var c proofClaims
	if n := testing.AllocsPerRun(100, func() {
		c = proofClaims{}
		if err := c.UnmarshalJSON(b); err != nil {
			t.Fatal(err)
		}
	}); n > 4 {
		t.Errorf("reading a proof's claims allocates %v times, want at most 4", n)
	}
}

// TestCheckAllocations: a proof is read without golang-jwt's map of its
// header and without its token: Check of an ES256 proof whose key is
// remembered allocates the signature check's objects (golang-jwt's and
// crypto/ecdsa's, about 23), the three parts decoded, the strings of the
// header and claims, the htu comparison's and the Proof: at most 48.
func TestCheckAllocations(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri = "https://mcp.example.com/mcp"
	req := Request{Method: "POST", URI: uri, AccessToken: "the-access-token"}
	p := newProof(t, key, jwt.SigningMethodES256, "POST", uri, now)
	p.claims["ath"] = ath(req.AccessToken)
	values := []string{p.sign(t)}
	v := New(Options{Now: func() time.Time { return now }})
	if n := testing.AllocsPerRun(50, func() {
		if _, err := v.Check(values, req); err != nil {
			t.Fatal(err)
		}
	}); n > 48 {
		t.Errorf("Check of a remembered key's proof allocates %v times, want at most 48", n)
	}
}

// TestCheckTokenHashedInPlace: the access token's hash, checked against
// ath, is taken without copying the token: a token of 600 bytes, as a
// gateway sees, costs Check no allocation more than one of 16.
func TestCheckTokenHashedInPlace(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri = "https://mcp.example.com/mcp"
	v := New(Options{Now: func() time.Time { return now }})
	allocs := func(token string) float64 {
		req := Request{Method: "POST", URI: uri, AccessToken: token}
		p := newProof(t, key, jwt.SigningMethodES256, "POST", uri, now)
		p.claims["ath"] = ath(token)
		values := []string{p.sign(t)}
		return testing.AllocsPerRun(50, func() {
			if _, err := v.Check(values, req); err != nil {
				t.Fatal(err)
			}
		})
	}
	short, long := allocs(strings.Repeat("t", 16)), allocs(strings.Repeat("t", 600))
	if long != short {
		t.Errorf("Check allocates %v times with a 600-byte token, %v with a 16-byte one: want the same", long, short)
	}
}
