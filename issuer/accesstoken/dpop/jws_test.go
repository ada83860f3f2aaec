package dpop

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// The reading readProof replaced: golang-jwt's Parser, the header in a
// map, and the key function Check gave it. readProof must agree with it
// on every proof CheckMembers lets through.

// jwtClaims is proofClaims as a jwt.Claims.
type jwtClaims struct{ c *proofClaims }

func (j *jwtClaims) UnmarshalJSON(b []byte) error              { return j.c.UnmarshalJSON(b) }
func (jwtClaims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (jwtClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (jwtClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (jwtClaims) GetIssuer() (string, error)                   { return "", nil }
func (jwtClaims) GetSubject() (string, error)                  { return "", nil }
func (jwtClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// headerKeyByMap reads the jwk header member from golang-jwt's map.
func headerKeyByMap(v any) (accesstoken.JWK, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return accesstoken.JWK{}, errors.New("no jwk")
	}
	for _, private := range [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
		if _, ok := m[private]; ok {
			return accesstoken.JWK{}, errors.New("private key in jwk")
		}
	}
	str := func(name string) (string, bool) {
		v, present := m[name]
		s, ok := v.(string)
		return s, ok || !present
	}
	var j accesstoken.JWK
	var ok1, ok2, ok3, ok4, ok5, ok6 bool
	j.Kty, ok1 = str("kty")
	j.Crv, ok2 = str("crv")
	j.X, ok3 = str("x")
	j.Y, ok4 = str("y")
	j.N, ok5 = str("n")
	j.E, ok6 = str("e")
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return accesstoken.JWK{}, errors.New("malformed jwk")
	}
	return j, nil
}

// ed25519Method is golang-jwt's EdDSA under RFC 9864's name, Ed25519,
// which readProof reads as EdDSA: registered for proofByJWT only (readProof
// asks golang-jwt for EdDSA's method by that name).
type ed25519Method struct{ *jwt.SigningMethodEd25519 }

func (ed25519Method) Alg() string { return algEd25519 }

var registerEd25519 sync.Once

// proofByJWT reads and verifies a proof as Check did with golang-jwt,
// and a proof naming Ed25519 as one naming EdDSA.
func proofByJWT(s string) (accesstoken.JWK, proofClaims, error) {
	registerEd25519.Do(func() {
		jwt.RegisterSigningMethod(algEd25519, func() jwt.SigningMethod { return ed25519Method{jwt.SigningMethodEdDSA} })
	})
	var jwk accesstoken.JWK
	var claims proofClaims
	parser := jwt.NewParser(jwt.WithValidMethods(append(accesstoken.Algorithms(), algEd25519)), jwt.WithoutClaimsValidation())
	_, err := parser.ParseWithClaims(s, &jwtClaims{&claims}, func(t *jwt.Token) (any, error) {
		if err := accesstoken.RefuseCritical(t); err != nil {
			return nil, err
		}
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, Type) && !strings.EqualFold(typ, "application/"+Type) {
			return nil, errors.New("typ")
		}
		var err error
		if jwk, err = headerKeyByMap(t.Header["jwk"]); err != nil {
			return nil, err
		}
		key, err := jwk.PublicKey()
		if err != nil {
			return nil, err
		}
		alg := t.Method.Alg()
		if alg == algEd25519 {
			alg = "EdDSA"
		}
		if err := accesstoken.KeyFitsAlg(alg, key); err != nil {
			return nil, err
		}
		return key, nil
	})
	return jwk, claims, err
}

// checkProofAgrees compares readProof with proofByJWT on s, when
// CheckMembers (which Check applies first) lets s through.
func checkProofAgrees(t *testing.T, v *Verifier, s string) {
	t.Helper()
	if accesstoken.CheckMembers(s) != nil {
		return
	}
	wantJWK, wantClaims, wantErr := proofByJWT(s)
	var claims proofClaims
	jwk, d, _, err := v.readProof(s, &claims)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("readProof(%q) = %v, golang-jwt's reading %v", s, err, wantErr)
	}
	if err != nil {
		return
	}
	if membersOf(jwk) != membersOf(wantJWK) || claims != wantClaims || d.jkt != wantJWK.Thumbprint() {
		t.Errorf("readProof(%q) = %+v, %+v, %q; golang-jwt's reading %+v, %+v", s, jwk, claims, d.jkt, wantJWK, wantClaims)
	}
}

// checkHeaderAgrees compares readHeader with golang-jwt's map of the
// header b, as Check read it: alg and typ as strings, crit present, the
// jwk headerKeyByMap reads.
func checkHeaderAgrees(t *testing.T, b []byte) {
	t.Helper()
	if !json.Valid(b) || accesstoken.CheckMembers(b64(b)+".e30.") != nil {
		return
	}
	var m map[string]any
	wantErr := json.Unmarshal(b, &m)
	h, err := readHeader(b)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("readHeader(%q) = %v, encoding/json's %v", b, err, wantErr)
	}
	if err != nil {
		return
	}
	alg, _ := m["alg"].(string)
	typ, _ := m["typ"].(string)
	_, crit := m["crit"]
	jwk, jwkErr := headerKeyByMap(m["jwk"])
	if h.alg != alg || h.typ != typ || h.crit != crit || h.jwkOK != (jwkErr == nil) || h.jwkOK && membersOf(h.jwk) != membersOf(jwk) {
		t.Errorf("readHeader(%q) = %+v; golang-jwt's map: alg %q, typ %q, crit %v, jwk %+v, %v", b, h, alg, typ, crit, jwk, jwkErr)
	}
}

var headerSeeds = []string{
	`{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"a","y":"b"}}`,
	`null`, `{}`, `[]`, `"x"`, `1`,
	`{"alg":1}`, `{"alg":null}`, `{"alg":"ES256","typ":["dpop+jwt"]}`, `{"typ":null}`,
	`{"crit":null}`, `{"crit":[]}`, `{"crit":["x"]}`,
	`{"jwk":null}`, `{"jwk":[]}`, `{"jwk":"x"}`, `{"jwk":{}}`,
	`{"jwk":{"kty":1}}`, `{"jwk":{"kty":null}}`, `{"jwk":{"x":{"a":"b"}}}`, `{"jwk":{"e":["AQAB"]}}`,
	`{"jwk":{"kty":"EC","d":"x"}}`, `{"jwk":{"kty":"EC","d":null}}`, `{"jwk":{"kty":"oct","k":"c2VjcmV0"}}`,
	`{"jwk":{"kty":"RSA","n":"a","e":"AQAB","p":1,"q":2,"dp":3,"dq":4,"qi":5,"oth":[]}}`,
	`{"jwk":{"kty":"EC","kid":{"a":[1,{"d":2}]},"use":"sig","key_ops":["verify"],"alg":"ES256"}}`,
	`{"jwk":{"k\u0074y":"EC","\u0064":"escaped private"}}`, `{"\u0061lg":"ES256","ty\u0070":"dpop+jwt"}`,
	`{"jwk":{"kty":"EC"},"other":{"jwk":{"d":"nested"}},"alg":"ES256"}`,
	`{"ALG":"ES256","Jwk":{"kty":"EC"}}`, `{"jwk":{"D":"upper"}}`, `{"jwk":{"x":"\u00e9\n"}}`,
	` { "alg" : "EdDSA" } `, `{"alg":"ES256"} x`, `{"alg":"ES256"}{}`,
}

// TestReadHeaderAsJWT: readHeader reads every seed header as Check read
// golang-jwt's map of it.
func TestReadHeaderAsJWT(t *testing.T) {
	for _, s := range headerSeeds {
		checkHeaderAgrees(t, []byte(s))
	}
}

// FuzzProofHeader: as TestReadHeaderAsJWT, for any header.
func FuzzProofHeader(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkHeaderAgrees(t, b) })
}

// TestReadProofAsJWT: readProof accepts and refuses the proofs of the
// TestVerify table's kinds as golang-jwt's reading did, with the same
// key and claims, and spellings of the compact form around them.
func TestReadProofAsJWT(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := New(Options{Now: func() time.Time { return now }})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, s := range proofSeeds(t, key, now) {
		checkProofAgrees(t, v, s)
	}
}

// FuzzReadProof: as TestReadProofAsJWT, for any proof text.
func FuzzReadProof(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, s := range proofSeeds(f, key, now) {
		f.Add(s)
	}
	v := New(Options{Now: func() time.Time { return now }})
	f.Fuzz(func(t *testing.T, s string) { checkProofAgrees(t, v, s) })
}

func proofSeeds(t testing.TB, key *ecdsa.PrivateKey, now time.Time) []string {
	const uri = "https://mcp.example.com/mcp"
	good := newProof(t, key, jwt.SigningMethodES256, "POST", uri, now).sign(t)
	head, rest, _ := strings.Cut(good, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	seeds := []string{good,
		head + "." + payload, head + "." + payload + "." + sig + ".", head + "." + payload + ".",
		head + "=." + payload + "." + sig, head + "." + payload + "." + sig + "=", head + "\n." + payload + "." + sig,
		head + "." + payload + "." + sig[:len(sig)-1], head + "." + payload + "." + sig[1:],
		"." + payload + "." + sig, head + ".." + sig, "...", "",
	}
	for _, edit := range []func(p *proof){
		func(p *proof) { p.header["typ"] = "JWT" },
		func(p *proof) { p.header["typ"] = "Application/DPoP+JWT" },
		func(p *proof) { p.header["crit"] = []string{"x"} },
		func(p *proof) { p.header["jwk"].(map[string]any)["d"] = "x" },
		func(p *proof) { p.header["jwk"].(map[string]any)["kid"] = 7 },
		func(p *proof) { p.header["jwk"].(map[string]any)["crv"] = "P-384" },
		func(p *proof) { p.method = jwt.SigningMethodES384 },
		func(p *proof) { p.method = jwt.SigningMethodNone },
		func(p *proof) { delete(p.header, "jwk") },
		func(p *proof) { p.claims["iat"] = "x" },
		func(p *proof) { p.claims["extra"] = map[string]any{"jti": 1} },
		func(p *proof) { p.header["alg"] = algEd25519 },
	} {
		p := newProof(t, key, jwt.SigningMethodES256, "POST", uri, now)
		edit(p)
		if p.method == jwt.SigningMethodES384 {
			seeds = append(seeds, p.signWith(t, key))
			continue
		}
		seeds = append(seeds, p.sign(t))
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, alg := range []string{"EdDSA", algEd25519, "ed25519", "Ed448"} {
		p := newProof(t, ed, jwt.SigningMethodEdDSA, "POST", uri, now)
		p.header["alg"] = alg
		seeds = append(seeds, p.sign(t))
	}
	return seeds
}

// signWith signs p's header and claims with key under p's method's
// name, whatever key the method wants (a P-256 key under ES384).
func (p *proof) signWith(t testing.TB, key *ecdsa.PrivateKey) string {
	t.Helper()
	h := map[string]any{"alg": p.method.Alg()}
	for k, v := range p.header {
		h[k] = v
	}
	hb, _ := json.Marshal(h)
	cb, _ := json.Marshal(p.claims)
	s := b64(hb) + "." + b64(cb)
	sig, err := jwt.SigningMethodES256.Sign(s, key)
	if err != nil {
		t.Fatal(err)
	}
	return s + "." + b64(sig)
}
