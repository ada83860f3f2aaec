package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

var b64 = base64.RawURLEncoding.EncodeToString

// publicJWK is the jwk header member for a public key.
func publicJWK(t testing.TB, pub crypto.PublicKey) map[string]any {
	t.Helper()
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		raw, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		n := (len(raw) - 1) / 2
		return map[string]any{"kty": "EC", "crv": k.Curve.Params().Name, "x": b64(raw[1 : 1+n]), "y": b64(raw[1+n:])}
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(k)}
	}
	t.Fatalf("unsupported key %T", pub)
	return nil
}

// proof is a DPoP proof under construction; sign makes it.
type proof struct {
	method jwt.SigningMethod
	key    crypto.Signer
	header map[string]any
	claims jwt.MapClaims
}

func newProof(t testing.TB, key crypto.Signer, method jwt.SigningMethod, htm, htu string, iat time.Time) *proof {
	t.Helper()
	jti := make([]byte, 16)
	rand.Read(jti)
	return &proof{
		method: method, key: key,
		header: map[string]any{"typ": Type, "jwk": publicJWK(t, key.Public())},
		claims: jwt.MapClaims{"jti": b64(jti), "htm": htm, "htu": htu, "iat": iat.Unix()},
	}
}

func (p *proof) sign(t testing.TB) string {
	t.Helper()
	tok := jwt.NewWithClaims(p.method, p.claims)
	for k, v := range p.header {
		tok.Header[k] = v
	}
	var key any = p.key
	if p.method == jwt.SigningMethodNone {
		key = jwt.UnsafeAllowNoneSignatureType
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signTwice signs p as sign does, with the member name given first as
// raw in its header (header) or its claims: readers disagree on which
// of the two counts.
func (p *proof) signTwice(t testing.TB, header bool, name, raw string) string {
	t.Helper()
	h := map[string]any{"alg": p.method.Alg()}
	for k, v := range p.header {
		h[k] = v
	}
	parts := [2]any{h, p.claims}
	var enc [2]string
	for n, v := range parts {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if header == (n == 0) {
			b = append([]byte(`{"`+name+`":`+raw+`,`), b[1:]...)
		}
		enc[n] = b64(b)
	}
	s := enc[0] + "." + enc[1]
	sig, err := p.method.Sign(s, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return s + "." + b64(sig)
}

func ath(token string) string {
	sum := sha256.Sum256([]byte(token))
	return b64(sum[:])
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	const uri, token = "https://mcp.example.com/mcp", "the-access-token"
	req := Request{Method: "POST", URI: uri, AccessToken: token}
	good := func() *proof {
		p := newProof(t, p256, jwt.SigningMethodES256, "POST", uri, now)
		p.claims["ath"] = ath(token)
		return p
	}
	tests := []struct {
		name   string
		edit   func(p *proof)
		values func(s string) []string
		req    *Request
		want   string // substring of the error; "" for success
	}{
		{name: "valid ES256", edit: func(*proof) {}},
		{name: "valid ES384", edit: func(p *proof) {
			p.method, p.key, p.header["jwk"] = jwt.SigningMethodES384, p384, publicJWK(t, p384.Public())
		}},
		{name: "valid RS256", edit: func(p *proof) {
			p.method, p.key, p.header["jwk"] = jwt.SigningMethodRS256, rsaKey, publicJWK(t, rsaKey.Public())
		}},
		{name: "valid PS256", edit: func(p *proof) {
			p.method, p.key, p.header["jwk"] = jwt.SigningMethodPS256, rsaKey, publicJWK(t, rsaKey.Public())
		}},
		{name: "valid EdDSA", edit: func(p *proof) {
			p.method, p.key, p.header["jwk"] = jwt.SigningMethodEdDSA, edKey, publicJWK(t, edKey.Public())
		}},
		// RFC 9864's fully-specified name, which oauth4webapi signs a
		// WebCrypto Ed25519 key's proofs with; still EdDSA's key only.
		{name: "valid Ed25519", edit: func(p *proof) {
			p.method, p.key, p.header["jwk"] = jwt.SigningMethodEdDSA, edKey, publicJWK(t, edKey.Public())
			p.header["alg"] = "Ed25519"
		}},
		{name: "Ed25519 over an EC key", edit: func(p *proof) { p.header["alg"] = "Ed25519" }, want: "malformed"},
		{name: "Ed25519 in another case", edit: func(p *proof) {
			p.method, p.key, p.header["jwk"] = jwt.SigningMethodEdDSA, edKey, publicJWK(t, edKey.Public())
			p.header["alg"] = "ed25519"
		}, want: "malformed"},
		{name: "Ed448", edit: func(p *proof) {
			p.method, p.key, p.header["jwk"] = jwt.SigningMethodEdDSA, edKey, publicJWK(t, edKey.Public())
			p.header["alg"] = "Ed448"
		}, want: "malformed"},
		{name: "htu with default port, upper-case host and a query", edit: func(p *proof) {
			p.claims["htu"] = "HTTPS://MCP.example.com:443/mcp?x=1#f"
		}},
		{name: "iat at the window's edge", edit: func(p *proof) { p.claims["iat"] = now.Add(-DefaultWindow).Unix() }},
		// README (DPoP): iat within 60 seconds of the clock either way,
		// the number itself rather than the constant.
		{name: "iat 60 s behind", edit: func(p *proof) { p.claims["iat"] = now.Add(-60 * time.Second).Unix() }},
		{name: "iat 60 s ahead", edit: func(p *proof) { p.claims["iat"] = now.Add(60 * time.Second).Unix() }},
		{name: "iat 61 s behind", edit: func(p *proof) { p.claims["iat"] = now.Add(-61 * time.Second).Unix() }, want: "iat"},
		{name: "iat 61 s ahead", edit: func(p *proof) { p.claims["iat"] = now.Add(61 * time.Second).Unix() }, want: "iat"},
		{name: "no header", values: func(string) []string { return nil }, want: "missing"},
		{name: "two headers", values: func(s string) []string { return []string{s, s} }, want: "more than one"},
		{name: "not a JWT", values: func(string) []string { return []string{"abc"} }, want: "malformed"},
		{name: "wrong typ", edit: func(p *proof) { p.header["typ"] = "JWT" }, want: "malformed"},
		{name: "at+jwt typ", edit: func(p *proof) { p.header["typ"] = "at+jwt" }, want: "malformed"},
		{name: "typ in its long form", edit: func(p *proof) { p.header["typ"] = "application/dpop+jwt" }},
		{name: "typ in another case", edit: func(p *proof) { p.header["typ"] = "DPoP+JWT" }},
		{name: "typ of another application type", edit: func(p *proof) { p.header["typ"] = "text/dpop+jwt" }, want: "malformed"},
		{name: "typ not a string", edit: func(p *proof) { p.header["typ"] = []string{Type} }, want: "malformed"},
		{name: "no typ", edit: func(p *proof) { delete(p.header, "typ") }, want: "malformed"},
		{name: "crit header", edit: func(p *proof) { p.header["crit"] = []string{"x"} }, want: "malformed"},
		{name: "alg none", edit: func(p *proof) { p.method = jwt.SigningMethodNone }, want: "malformed"},
		{name: "alg HS256 with the public key as secret", values: func(string) []string {
			p := good()
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, p.claims)
			tok.Header["typ"], tok.Header["jwk"] = Type, p.header["jwk"]
			s, _ := tok.SignedString([]byte(p.header["jwk"].(map[string]any)["x"].(string)))
			return []string{s}
		}, want: "malformed"},
		{name: "signed by another key", edit: func(p *proof) { p.key = other }, want: "malformed"},
		{name: "RSA key under ES256 header", edit: func(p *proof) { p.header["jwk"] = publicJWK(t, rsaKey.Public()) }, want: "malformed"},
		{name: "no jwk", edit: func(p *proof) { delete(p.header, "jwk") }, want: "malformed"},
		{name: "jwk with private key", edit: func(p *proof) {
			j := publicJWK(t, p256.Public())
			j["d"] = b64(p256.D.Bytes())
			p.header["jwk"] = j
		}, want: "malformed"},
		{name: "jwk with RSA private parts", edit: func(p *proof) {
			p.method, p.key = jwt.SigningMethodRS256, rsaKey
			j := publicJWK(t, rsaKey.Public())
			j["p"] = b64(rsaKey.Primes[0].Bytes())
			p.header["jwk"] = j
		}, want: "malformed"},
		{name: "symmetric jwk", edit: func(p *proof) { p.header["jwk"] = map[string]any{"kty": "oct", "k": "c2VjcmV0"} }, want: "malformed"},
		{name: "wrong htm", edit: func(p *proof) { p.claims["htm"] = "GET" }, want: "htm"},
		{name: "htm in lower case", edit: func(p *proof) { p.claims["htm"] = "post" }, want: "htm"},
		{name: "wrong htu path", edit: func(p *proof) { p.claims["htu"] = "https://mcp.example.com/other" }, want: "htu"},
		{name: "wrong htu host", edit: func(p *proof) { p.claims["htu"] = "https://evil.example.com/mcp" }, want: "htu"},
		{name: "wrong htu scheme", edit: func(p *proof) { p.claims["htu"] = "http://mcp.example.com/mcp" }, want: "htu"},
		{name: "relative htu", edit: func(p *proof) { p.claims["htu"] = "/mcp" }, want: "htu"},
		{name: "missing ath", edit: func(p *proof) { delete(p.claims, "ath") }, want: "ath"},
		{name: "wrong ath", edit: func(p *proof) { p.claims["ath"] = ath("another token") }, want: "ath"},
		{name: "stale iat", edit: func(p *proof) { p.claims["iat"] = now.Add(-DefaultWindow - time.Second).Unix() }, want: "iat"},
		{name: "future iat", edit: func(p *proof) { p.claims["iat"] = now.Add(DefaultWindow + time.Second).Unix() }, want: "iat"},
		{name: "no iat", edit: func(p *proof) { delete(p.claims, "iat") }, want: "iat"},
		{name: "iat as string", edit: func(p *proof) { p.claims["iat"] = "1800000000" }, want: "malformed"},
		{name: "no jti", edit: func(p *proof) { delete(p.claims, "jti") }, want: "jti"},
		{name: "jti too long", edit: func(p *proof) { p.claims["jti"] = strings.Repeat("a", 300) }, want: "jti"},
		// A member named twice, or in two cases: readers disagree on
		// which counts (before: the last, here).
		{name: "htu twice", values: func(string) []string {
			return []string{good().signTwice(t, false, "htu", `"https://evil.example.com/mcp"`)}
		}, want: "malformed"},
		{name: "htm twice", values: func(string) []string { return []string{good().signTwice(t, false, "htm", `"GET"`)} }, want: "malformed"},
		{name: "jti twice", values: func(string) []string { return []string{good().signTwice(t, false, "jti", `"other"`)} }, want: "malformed"},
		{name: "ath twice", values: func(string) []string { return []string{good().signTwice(t, false, "ath", `"x"`)} }, want: "malformed"},
		{name: "ath in another case", values: func(string) []string { return []string{good().signTwice(t, false, "ATH", `"x"`)} }, want: "malformed"},
		{name: "typ twice", values: func(string) []string { return []string{good().signTwice(t, true, "typ", `"JWT"`)} }, want: "malformed"},
		{name: "jwk twice", values: func(string) []string {
			return []string{good().signTwice(t, true, "jwk", `{"kty":"oct","k":"c2VjcmV0"}`)}
		}, want: "malformed"},
		{name: "alg twice", values: func(string) []string { return []string{good().signTwice(t, true, "alg", `"none"`)} }, want: "malformed"},
		{name: "token endpoint needs no ath", edit: func(p *proof) { delete(p.claims, "ath") },
			req: &Request{Method: "POST", URI: uri}},
	}
	// Each case on a Verifier that has seen none of the keys, and on one
	// that remembers every key of the table (keyCache): a remembered
	// key's proofs are checked as any others.
	warmed := func(t *testing.T) *Verifier {
		v := New(Options{Now: func() time.Time { return now }})
		for _, k := range []struct {
			key    crypto.Signer
			method jwt.SigningMethod
		}{{p256, jwt.SigningMethodES256}, {other, jwt.SigningMethodES256}, {p384, jwt.SigningMethodES384}, {rsaKey, jwt.SigningMethodRS256}, {edKey, jwt.SigningMethodEdDSA}} {
			p := newProof(t, k.key, k.method, "POST", uri, now)
			if _, err := v.Check([]string{p.sign(t)}, Request{Method: "POST", URI: uri}); err != nil {
				t.Fatalf("Check(a proof of a %T) = %v", k.key, err)
			}
		}
		if n := v.keys.len(); n != 5 {
			t.Fatalf("the Verifier remembers %d keys, want 5", n)
		}
		return v
	}
	for _, tt := range tests {
		for _, remembered := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: "", true: "/key remembered"}[remembered], func(t *testing.T) {
				v := New(Options{Now: func() time.Time { return now }})
				if remembered {
					v = warmed(t)
				}
				var values []string
				p := good()
				if tt.edit != nil {
					tt.edit(p)
				}
				if tt.values != nil {
					values = tt.values(p.sign(t))
				} else {
					values = []string{p.sign(t)}
				}
				r := req
				if tt.req != nil {
					r = *tt.req
				}
				jkt, err := v.Verify(t.Context(), values, r)
				if tt.want == "" {
					if err != nil {
						t.Fatalf("Verify() error = %v, want success", err)
					}
					if want := thumbprintOf(t, p.key.Public()); jkt != want {
						t.Errorf("Verify() = %q, want the key's thumbprint %q", jkt, want)
					}
					return
				}
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeInvalidProof || !strings.Contains(e.Description, tt.want) {
					t.Errorf("Verify() = %q, %v; want %s error naming %q", jkt, err, CodeInvalidProof, tt.want)
				}
			})
		}
	}
}

func thumbprintOf(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	j, err := headerKeyByMap(publicJWK(t, pub))
	if err != nil {
		t.Fatal(err)
	}
	return j.Thumbprint()
}

func TestVerifyReplay(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	v := New(Options{Now: clock})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := Request{Method: "POST", URI: "https://as.example.com/token"}
	p := newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now)
	s := p.sign(t)
	if _, err := v.Verify(t.Context(), []string{s}, req); err != nil {
		t.Fatalf("first use: %v", err)
	}
	// Replayed at any time its iat is still acceptable.
	for _, d := range []time.Duration{0, time.Second, DefaultWindow} {
		now = time.Unix(1_800_000_000, 0).Add(d)
		if _, err := v.Verify(t.Context(), []string{s}, req); err == nil || !strings.Contains(err.Error(), "used before") {
			t.Errorf("replay after %v: error = %v, want used before", d, err)
		}
	}
	// The same jti under another key is another proof.
	now = time.Unix(1_800_000_000, 0)
	q := newProof(t, other, jwt.SigningMethodES256, "POST", req.URI, now)
	q.claims["jti"] = p.claims["jti"]
	if _, err := v.Verify(t.Context(), []string{q.sign(t)}, req); err != nil {
		t.Errorf("same jti, other key: %v", err)
	}
	// Remembered while its iat could be accepted: a proof made a window
	// ahead stays refused until a window after that.
	future := newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now.Add(DefaultWindow))
	fs := future.sign(t)
	if _, err := v.Verify(t.Context(), []string{fs}, req); err != nil {
		t.Fatalf("future-dated proof in the window: %v", err)
	}
	for _, d := range []time.Duration{DefaultWindow, 2 * DefaultWindow} {
		now = time.Unix(1_800_000_000, 0).Add(d)
		if _, err := v.Verify(t.Context(), []string{fs}, req); err == nil || !strings.Contains(err.Error(), "used before") {
			t.Errorf("replay of a future-dated proof after %v: error = %v, want used before", d, err)
		}
	}
}

func TestReplayCacheBound(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := newReplay(3, time.Minute)
	for i := range 3 {
		if err := c.add(replayKey("k"+string(rune('a'+i)), "x"), "k"+string(rune('a'+i)), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.add(replayKey("kd", "x"), "kd", now); !errors.Is(err, errReplayFull) {
		t.Errorf("add to a full cache = %v, want %v", err, errReplayFull)
	}
	// Two periods later every entry is gone.
	if err := c.add(replayKey("kd", "x"), "kd", now.Add(2*time.Minute)); err != nil {
		t.Errorf("add after expiry = %v", err)
	}
	if err := c.add(replayKey("ka", "x"), "ka", now.Add(2*time.Minute)); err != nil {
		t.Errorf("expired entry still remembered: %v", err)
	}
	// One key may hold an eighth: its holder, however many proofs it
	// makes, locks only itself out, not the other keys (review s13-dos
	// F3).
	c = newReplay(16, time.Minute)
	for i := range 2 {
		if err := c.add(replayKey("mallory", string(rune('a'+i))), "mallory", now); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.add(replayKey("mallory", "c"), "mallory", now); !errors.Is(err, errKeyShare) {
		t.Errorf("a key past its share = %v, want %v", err, errKeyShare)
	}
	if err := c.add(replayKey("alice", "a"), "alice", now); err != nil {
		t.Errorf("another key while one is past its share = %v", err)
	}
	// Charged to the holder a Request names (a token's client and
	// subject), not the key: one principal's many keys (a bound token
	// each) make one share (review s13-fresh3 F1).
	replay := newReplay(16, 2*time.Minute)
	v := New(Options{Now: func() time.Time { return now }, Replay: replay})
	req := Request{Method: "POST", URI: "https://mcp.example.com/mcp", Holder: "client-1\x00mallory"}
	for i := range 3 {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err := v.Verify(t.Context(), []string{newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now).sign(t)}, req)
		if want := i < 2; (err == nil) != want {
			t.Errorf("mallory's proof %d with a key of its own: %v, want accepted %v (a share of 2)", i, err, want)
		}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req.Holder = "client-1\x00alice"
	if _, err := v.Verify(t.Context(), []string{newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now).sign(t)}, req); err != nil {
		t.Errorf("alice's proof while mallory is past her share: %v", err)
	}
	// The README's bound: 2^19 proofs, kept two windows (two minutes).
	if d := NewReplay(0, time.Time{}); d.max != 1<<19 || d.period != 2*time.Minute {
		t.Errorf("NewReplay(0) keeps %d proofs for %v, want 2^19 for 2m", d.max, d.period)
	}
	// README: a jti is "kept for at least two minutes, and while proofs
	// keep coming at most four (it is forgotten two generations of two
	// minutes on)", as the default memory does it: a proof remembered
	// at a generation's start is refused 2 minutes later and still just
	// before 4, and forgotten at 4, proofs arriving every 30 s meanwhile.
	d := NewReplay(0, time.Time{})
	for _, tc := range []struct {
		at   time.Duration
		jti  string
		want error
	}{
		{0, "first", nil},
		{30 * time.Second, "t1", nil}, {time.Minute, "t2", nil}, {90 * time.Second, "t3", nil},
		{2*time.Minute - time.Nanosecond, "first", errReplayed},
		{2 * time.Minute, "t4", nil}, {150 * time.Second, "t5", nil}, {3 * time.Minute, "t6", nil}, {210 * time.Second, "t7", nil},
		{4*time.Minute - time.Nanosecond, "first", errReplayed},
		{4 * time.Minute, "first", nil},
	} {
		if err := d.add(replayKey("k", tc.jti), "k", now.Add(tc.at)); err != tc.want {
			t.Errorf("default memory: proof %q at %v after the first = %v, want %v", tc.jti, tc.at, err, tc.want)
		}
	}
}

// TestReplayFair: heavy holders flooding the memory together or one
// after another (each until refused, then the next), 8 or 32 of them, lock out themselves but not a holder with few entries; a
// generation later their entries still count and still refuse replays.
func TestReplayFair(t *testing.T) {
	const size = 1 << 14
	now := time.Unix(1_800_000_000, 0)
	used := func(c *Replay) int { return len(c.cur) + len(c.prev) }
	for _, n := range []int{8, 32} {
		for _, inTurn := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d heavy, in turn %v", n, inTurn), func(t *testing.T) {
				c := newReplay(size, time.Minute)
				proofs := make([]int, n) // recorded per heavy holder
				flood := func(at time.Time) {
					t.Helper()
					refused := make([]bool, n)
					for left := n; left > 0; {
						for i := range n {
							for !refused[i] {
								holder := "heavy-" + strconv.Itoa(i)
								err := c.add(replayKey(holder, strconv.Itoa(proofs[i])), holder, at)
								switch {
								case err == nil:
									proofs[i]++
								case errors.Is(err, errKeyShare) || errors.Is(err, errReplayFull):
									refused[i] = true
									left--
								default:
									t.Fatalf("heavy holder %d: add = %v", i, err)
								}
								if used(c) > size {
									t.Fatalf("%d entries, more than the bound %d", used(c), size)
								}
								if !inTurn {
									break
								}
							}
						}
					}
				}
				alice := 0
				aliceAdds := func(at time.Time, count int) {
					t.Helper()
					for range count {
						if err := c.add(replayKey("alice", strconv.Itoa(alice)), "alice", at); err != nil {
							t.Fatalf("alice's proof %d with %d heavy holders flooding (%d of %d entries used) = %v, want recorded",
								alice, n, used(c), size, err)
						}
						alice++
					}
				}
				flood(now)
				if free := size - used(c); free < size/8 {
					t.Errorf("%d heavy holders leave %d of %d entries free, want at least an eighth", n, free, size)
				}
				aliceAdds(now, 16)
				for _, k := range [][16]byte{replayKey("heavy-0", "0"), replayKey("alice", "0")} {
					if err := c.add(k, "bob", now); !errors.Is(err, errReplayed) {
						t.Errorf("replayed proof = %v, want %v", err, errReplayed)
					}
				}
				// A period later the first generation still counts: the
				// heavy holders stay refused, alice still adds, replays
				// are still refused.
				later := now.Add(time.Minute)
				before := slices.Clone(proofs)
				flood(later)
				aliceAdds(later, 4)
				for i := range n {
					if proofs[i] != before[i] {
						t.Errorf("heavy holder %d recorded %d more proofs after the generation switch, want none", i, proofs[i]-before[i])
					}
				}
				for _, k := range [][16]byte{replayKey("heavy-0", "0"), replayKey("alice", "0")} {
					if err := c.add(k, "bob", later); !errors.Is(err, errReplayed) {
						t.Errorf("proof replayed a generation later = %v, want %v", err, errReplayed)
					}
				}
			})
		}
	}
	// One holder alone is refused at its share, an eighth, and no one
	// else is.
	c := newReplay(size, time.Minute)
	got := 0
	for ; ; got++ {
		if err := c.add(replayKey("mallory", strconv.Itoa(got)), "mallory", now); err != nil {
			if !errors.Is(err, errKeyShare) {
				t.Fatalf("mallory's proof %d = %v, want %v", got, err, errKeyShare)
			}
			break
		}
	}
	if got != size/keyShare {
		t.Errorf("a holder alone recorded %d proofs, want %d", got, size/keyShare)
	}
	if err := c.add(replayKey("alice", "a"), "alice", now); err != nil {
		t.Errorf("another holder while one is past its share = %v", err)
	}
	// At small sizes too, a new holder's first proof is recorded as long
	// as there is room, whatever one heavy holder did.
	for size := 1; size <= 12; size++ {
		c := newReplay(size, time.Minute)
		for i := 0; c.add(replayKey("mallory", strconv.Itoa(i)), "mallory", now) == nil; i++ {
		}
		for i := used(c); i < size; i++ {
			if err := c.add(replayKey("new", strconv.Itoa(i)), "new-"+strconv.Itoa(i), now); err != nil {
				t.Errorf("size %d: a new holder's first proof at %d entries = %v, want recorded", size, i, err)
			}
		}
		if err := c.add(replayKey("new", "last"), "new-last", now); !errors.Is(err, errReplayFull) {
			t.Errorf("size %d: a new holder's first proof when full = %v, want %v", size, err, errReplayFull)
		}
	}
}

func TestNonce(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	nonces := NewNonces([]byte(strings.Repeat("k", 32)), time.Minute)
	v := New(Options{Now: func() time.Time { return now }, Nonces: nonces})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := Request{Method: "POST", URI: "https://as.example.com/token"}
	try := func(nonce any) error {
		p := newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now)
		if nonce != nil {
			p.claims["nonce"] = nonce
		}
		_, err := v.Verify(t.Context(), []string{p.sign(t)}, req)
		return err
	}
	useNonce := func(err error) bool {
		var e *Error
		return errors.As(err, &e) && e.Code == CodeUseNonce
	}
	if err := try(nil); !useNonce(err) {
		t.Errorf("no nonce: %v, want %s", err, CodeUseNonce)
	}
	if err := try("made-up"); !useNonce(err) {
		t.Errorf("made-up nonce: %v, want %s", err, CodeUseNonce)
	}
	other := NewNonces([]byte(strings.Repeat("x", 32)), time.Minute)
	if err := try(other.Current(now)); !useNonce(err) {
		t.Errorf("nonce under another key: %v, want %s", err, CodeUseNonce)
	}
	// Another instance whose clock is a little ahead (NTP: milliseconds)
	// is in the next period already near the end of this one; one
	// further ahead than accesstoken.Leeway is not.
	now = now.Add(time.Minute - 20*time.Millisecond)
	if err := try(nonces.Current(now.Add(50 * time.Millisecond))); err != nil {
		t.Errorf("nonce of an instance 50 ms ahead, 20 ms before the next period: %v", err)
	}
	if err := try(nonces.Current(now.Add(2 * time.Minute))); !useNonce(err) {
		t.Errorf("nonce of the period after the next: %v, want %s", err, CodeUseNonce)
	}
	now = now.Add(-time.Minute + 2*accesstoken.Leeway)
	if err := try(nonces.Current(now.Add(time.Minute))); !useNonce(err) {
		t.Errorf("nonce of the next period, %v before it: %v, want %s", time.Minute-2*accesstoken.Leeway, err, CodeUseNonce)
	}
	now = time.Unix(1_800_000_000, 0)
	n := nonces.Current(now)
	if err := try(n); err != nil {
		t.Errorf("current nonce: %v", err)
	}
	now = now.Add(time.Minute)
	if err := try(n); err != nil {
		t.Errorf("nonce of the previous period: %v", err)
	}
	now = now.Add(time.Minute)
	if err := try(n); !useNonce(err) {
		t.Errorf("nonce two periods old: %v, want %s", err, CodeUseNonce)
	}
	// The next period's nonce is taken from accesstoken.Leeway (README:
	// "the 5 s") before it begins, not earlier.
	next := time.Unix(1_800_000_000, 0).Add(time.Minute)
	now = next.Add(-accesstoken.Leeway)
	if err := try(nonces.Current(next)); err != nil {
		t.Errorf("nonce of the next period, %v before it: %v", accesstoken.Leeway, err)
	}
	now = next.Add(-accesstoken.Leeway - time.Millisecond)
	if err := try(nonces.Current(next)); !useNonce(err) {
		t.Errorf("nonce of the next period, %v before it: %v, want %s", accesstoken.Leeway+time.Millisecond, err, CodeUseNonce)
	}

	// What the issuer and the gateway use (period 0): README's
	// "five-minute time slot, valid in its slot and the next", and
	// another instance under the same key (another Nonces) accepts it.
	start := time.Unix(1_800_000_000, 0) // a slot's start
	n = NewNonces([]byte(strings.Repeat("k", 32)), 0).Current(start)
	v = New(Options{Now: func() time.Time { return now }, Nonces: NewNonces([]byte(strings.Repeat("k", 32)), 0)})
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {5*time.Minute - time.Nanosecond, true}, {5 * time.Minute, true},
		{10*time.Minute - time.Nanosecond, true}, {10 * time.Minute, false},
		// README: "and in the 5 s before it", in seconds, not through
		// the constant that sets it.
		{-5 * time.Second, true}, {-5*time.Second - time.Millisecond, false},
	} {
		now = start.Add(tc.at)
		if err := try(n); (err == nil) != tc.want {
			t.Errorf("default period: nonce of the slot at %v, %v later: %v, want accepted %v", start, tc.at, err, tc.want)
		}
	}
	now = start.Add(-5 * time.Minute)
	if err := try(NewNonces([]byte(strings.Repeat("k", 32)), 0).Current(start.Add(-time.Nanosecond))); err != nil {
		t.Errorf("default period: the previous slot's last nonce at its start: %v", err)
	}
}

func TestSameURI(t *testing.T) {
	tests := []struct {
		htu, uri string
		want     bool
	}{
		{"https://a.example/mcp", "https://a.example/mcp", true},
		{"https://A.EXAMPLE/mcp", "https://a.example/mcp", true},
		{"HTTPS://a.example:443/mcp", "https://a.example/mcp", true},
		{"http://a.example:80/mcp", "http://a.example/mcp", true},
		{"https://a.example", "https://a.example/", true},
		{"https://a.example/mcp?x=1#y", "https://a.example/mcp", true},
		{"https://a.example/%7Emcp", "https://a.example/~mcp", true},
		{"https://a.example/a%2fb", "https://a.example/a%2Fb", true},
		{"https://a.example/a%2Fb", "https://a.example/a/b", false},
		{"https://a.example/MCP", "https://a.example/mcp", false},
		{"https://a.example:8443/mcp", "https://a.example/mcp", false},
		// Case is ASCII case: Go lowers U+0130 to "i" and the Kelvin sign
		// to "k", and the first is another name on the wire (UTS 46 maps
		// it to "i" and a combining dot), a host the attacker may own.
		{"https://ap\u0130.example/mcp", "https://api.example/mcp", false},
		{"https://\u212Aey.example/mcp", "https://key.example/mcp", false},
		{"https://api.example/mcp", "https://ap\u0130.example/mcp", false},
		{"http://a.example/mcp", "https://a.example/mcp", false},
		{"https://a.example/mcp/", "https://a.example/mcp", false},
		{"https://u@a.example/mcp", "https://a.example/mcp", false},
		{"ftp://a.example/mcp", "ftp://a.example/mcp", false},
		{"/mcp", "/mcp", false},
		// Dot segments are removed (RFC 3986 §6.2.2.3), escaped ones
		// too (§6.2.2.2 first), as a client's URL library may leave them.
		{"https://a.example/x/../mcp", "https://a.example/mcp", true},
		{"https://a.example/./mcp", "https://a.example/mcp", true},
		{"https://a.example/x/%2E%2E/mcp", "https://a.example/mcp", true},
		{"https://a.example/../mcp", "https://a.example/mcp", true},
		{"https://a.example/mcp/..", "https://a.example/", true},
		{"https://a.example/x/../other", "https://a.example/mcp", false},
		{"https://a.example/x/..%2Fmcp", "https://a.example/mcp", false},
		// A character a URI must escape (a space, "|", "^", a non-ASCII
		// letter) is escaped as it stands, the escapes beside it kept: the
		// path is not decoded whole, which would make "%2F" a separator.
		{"https://a.example/x|/..%2Fmcp", "https://a.example/mcp", false},
		{"https://a.example/x y/..%2Fmcp", "https://a.example/mcp", false},
		{"https://a.example/\u00fc/..%2F..%2Fmcp", "https://a.example/mcp", false},
		{"https://a.example/a%2Fb|", "https://a.example/a/b%7C", false},
		{"https://a.example/a%2Fb|", "https://a.example/a%2Fb%7C", true},
		{"https://a.example/x|/../mcp", "https://a.example/mcp", true},
		{"https://a.example/\u00fc/mcp", "https://a.example/%C3%BC/mcp", true},
	}
	for _, tt := range tests {
		if got := SameURI(tt.htu, tt.uri); got != tt.want {
			t.Errorf("SameURI(%q, %q) = %v, want %v", tt.htu, tt.uri, got, tt.want)
		}
	}
}

// BenchmarkVerify: one ES256 proof with ath, as the gateway checks it per
// request (proofs are made before the timer starts). All b.N proofs are
// one holder's, whose share of the jti memory is a keyShare-th of it: the
// memory holds keyShare times as many, or the holder's share refuses them.
func BenchmarkVerify(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	v := New(Options{Now: func() time.Time { return now }, MaxReplayEntries: keyShare * (b.N + 1)})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri, token = "https://mcp.example.com/mcp", "the-access-token"
	proofs := make([]string, b.N)
	for i := range proofs {
		p := newProof(b, key, jwt.SigningMethodES256, "POST", uri, now)
		p.claims["ath"] = ath(token)
		proofs[i] = p.sign(b)
	}
	req := Request{Method: "POST", URI: uri, AccessToken: token}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(b.Context(), proofs[i:i+1], req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckThenUse: Check remembers nothing; Use spends the jti once.
func TestCheckThenUse(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := New(Options{Now: func() time.Time { return now }})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := Request{Method: "POST", URI: "https://as.example.com/token"}
	s := newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now).sign(t)
	for range 2 {
		if _, err := v.Check([]string{s}, req); err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
	p, _ := v.Check([]string{s}, req)
	if err := p.Use(t.Context()); err != nil {
		t.Fatalf("first Use: %v", err)
	}
	if err := p.Use(t.Context()); err == nil || !strings.Contains(err.Error(), "used before") {
		t.Errorf("second Use = %v, want used before", err)
	}
	if _, err := v.Verify(t.Context(), []string{s}, req); err == nil {
		t.Error("Verify of a spent proof succeeded")
	}
}

// ledger is a Ledger in a map, as a store would keep it; fail makes
// Spend fail as an unreachable store does.
type ledger struct {
	mu    sync.Mutex
	until map[string]time.Time
	calls int
	fail  error
}

func (l *ledger) Spend(_ context.Context, key string, until time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.fail != nil {
		return l.fail
	}
	if _, ok := l.until[key]; ok {
		return ErrReplayed
	}
	l.until[key] = until
	return nil
}

// TestLedger: Verifiers with replay memories of their own (instances)
// sharing a Ledger refuse each other's proofs; the memory refuses a
// replay it saw without asking the Ledger; the Ledger keeps a proof
// until its iat leaves the window (and a margin for clocks); a Ledger
// that cannot tell fails the proof with ErrUnavailable, not *Error.
func TestLedger(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	l := &ledger{until: map[string]time.Time{}}
	a := New(Options{Now: clock, Ledger: l})
	b := New(Options{Now: clock, Ledger: l})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := Request{Method: "POST", URI: "https://as.example.com/token"}
	iat := now.Add(-10 * time.Second)
	s := newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, iat).sign(t)
	if _, err := a.Verify(t.Context(), []string{s}, req); err != nil {
		t.Fatalf("first use at A: %v", err)
	}
	for k, until := range l.until {
		// README (limits): until its iat leaves the 60 s window, plus 10
		// seconds for clocks.
		if want := iat.Add(70 * time.Second); !until.Equal(want) || len(k) != 32 {
			t.Errorf("ledger entry %q until %v, want 32 hex digits until %v", k, until, want)
		}
	}
	var e *Error
	if _, err := b.Verify(t.Context(), []string{s}, req); !errors.As(err, &e) || !strings.Contains(e.Description, "used before") {
		t.Errorf("replay at B = %v, want used before", err)
	}
	calls := l.calls
	if _, err := a.Verify(t.Context(), []string{s}, req); err == nil || l.calls != calls {
		t.Errorf("replay at A = %v with %d ledger calls, want refused by memory alone", err, l.calls-calls)
	}

	l.fail = errors.New("database unreachable")
	fresh := newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now).sign(t)
	_, err := b.Verify(t.Context(), []string{fresh}, req)
	if !errors.Is(err, ErrUnavailable) || errors.As(err, &e) {
		t.Errorf("with the ledger failing = %v, want ErrUnavailable", err)
	}
	if err := b.Bound(t.Context(), []string{newProof(t, key, jwt.SigningMethodES256, "POST", req.URI, now).sign(t)}, req, thumbprintOf(t, key.Public()), true); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Bound with the ledger failing = %v, want ErrUnavailable", err)
	}
}

// TestProofChecked: Bound reads the proof exactly when ProofChecked says
// so: otherwise a garbage proof and request answer as none do.
func TestProofChecked(t *testing.T) {
	v := New(Options{})
	code := func(err error) string {
		if e, ok := err.(*Error); ok {
			return e.Code
		}
		if err != nil {
			return err.Error()
		}
		return ""
	}
	for _, jkt := range []string{"", "thumbprint"} {
		for _, scheme := range []bool{false, true} {
			none := code(v.Bound(t.Context(), nil, Request{}, jkt, scheme))
			garbage := code(v.Bound(t.Context(), []string{"not-a-proof"}, Request{Method: "POST", URI: "https://x/mcp"}, jkt, scheme))
			if checked := ProofChecked(jkt, scheme); checked != (none != garbage || garbage == CodeInvalidProof) {
				t.Errorf("jkt %q, DPoP scheme %v: ProofChecked = %v, but Bound answers %q without a proof and %q with garbage", jkt, scheme, checked, none, garbage)
			}
		}
	}
}

// TestSpelledPathStale: a RawPath that no longer spells Path (a handler
// rewrote Path alone) is not read: the path is Path's, as EscapedPath has it.
func TestSpelledPathStale(t *testing.T) {
	u, err := url.Parse("https://a.example/x|/..%2Fmcp")
	if err != nil {
		t.Fatal(err)
	}
	if got := SpelledPath(u); got != "/x%7C/..%2Fmcp" {
		t.Errorf("SpelledPath = %q, want /x%%7C/..%%2Fmcp", got)
	}
	u.Path = "/other|"
	if got := SpelledPath(u); got != "/other%7C" {
		t.Errorf("SpelledPath after Path changed = %q, want /other%%7C", got)
	}
}

// TestProofOlderThanTheMemory: a proof made before its replay memory
// began (a process start on bbolt, which forgets the jti of every proof
// used before) is refused, since nothing can tell whether it was used;
// one made since is accepted, and with a Ledger, which outlives the
// process, the memory's age does not matter.
func TestProofOlderThanTheMemory(t *testing.T) {
	start := time.Unix(1_800_000_000, 6e8) // iat has whole seconds
	now := start
	clock := func() time.Time { return now }
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri = "https://mcp.example.com/token"
	req := Request{Method: "POST", URI: uri}
	before := newProof(t, key, jwt.SigningMethodES256, "POST", uri, start.Add(-10*time.Second)).sign(t)
	sameSecond := newProof(t, key, jwt.SigningMethodES256, "POST", uri, start.Add(-time.Second/2)).sign(t)
	now = start.Add(5 * time.Second)
	v := New(Options{Now: clock, Replay: NewReplay(0, start)})
	var e *Error
	if _, err := v.Verify(t.Context(), []string{before}, req); !errors.As(err, &e) || !strings.Contains(e.Description, "before") {
		t.Errorf("Verify(a proof made 10 s before the memory) = %v, want it refused as made before", err)
	}
	if _, err := v.Verify(t.Context(), []string{sameSecond}, req); err != nil {
		t.Errorf("Verify(a proof of the memory's first second) = %v, want success (a proof made in it a moment after it began has the same iat)", err)
	}
	if _, err := v.Verify(t.Context(), []string{newProof(t, key, jwt.SigningMethodES256, "POST", uri, now).sign(t)}, req); err != nil {
		t.Errorf("Verify(a proof made since) = %v, want success", err)
	}
	withLedger := New(Options{Now: clock, Replay: NewReplay(0, start), Ledger: &ledger{until: map[string]time.Time{}}})
	if _, err := withLedger.Verify(t.Context(), []string{before}, req); err != nil {
		t.Errorf("Verify(an older proof, with a ledger) = %v, want success", err)
	}
	// A ledger that records nothing (an app's on bbolt) remembers no
	// more than the memory: the proof is refused as without one.
	idle := New(Options{Now: clock, Replay: NewReplay(0, start), Ledger: idleLedger{}})
	if _, err := idle.Verify(t.Context(), []string{before}, req); !errors.As(err, &e) || !strings.Contains(e.Description, "before") {
		t.Errorf("Verify(an older proof, with a ledger not recording) = %v, want it refused as made before", err)
	}
}

// idleLedger is a Ledger that records nothing, and says so.
type idleLedger struct{}

func (idleLedger) Spend(context.Context, string, time.Time) error { return nil }
func (idleLedger) Recording() bool                                { return false }

// TestProofAheadOfTheMemory pins what the start rule cannot do (README,
// DPoP replay memory): a proof is accepted up to the window ahead of
// this clock, so one whose iat is ahead of it (its client's clock runs
// ahead) and that was used before a start has an iat after the start,
// and a memory begun then cannot tell it was used: it is accepted once
// more, for as long as its client's clock ran ahead, up to the window.
// Refusing it would refuse every proof for the window after each start.
func TestProofAheadOfTheMemory(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	now := start.Add(-time.Second)
	clock := func() time.Time { return now }
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const uri = "https://mcp.example.com/token"
	req := Request{Method: "POST", URI: uri}
	ahead := newProof(t, key, jwt.SigningMethodES256, "POST", uri, now.Add(20*time.Second)).sign(t)
	before := New(Options{Now: clock, Replay: NewReplay(0, start.Add(-time.Hour))})
	if _, err := before.Verify(t.Context(), []string{ahead}, req); err != nil {
		t.Fatalf("Verify(a proof 20 s ahead, before the start) = %v, want success", err)
	}
	if _, err := before.Verify(t.Context(), []string{ahead}, req); err == nil {
		t.Fatal("Verify(the same proof again, same memory) succeeded, want it refused as replayed")
	}
	now = start.Add(time.Second)
	after := New(Options{Now: clock, Replay: NewReplay(0, start)})
	if _, err := after.Verify(t.Context(), []string{ahead}, req); err != nil {
		t.Errorf("Verify(that proof after the start) = %v: the limit README states no longer holds, update it", err)
	}
}

// TestProofSmallOrderKeyRefused: a proof whose jwk is the Ed25519
// identity point, "signed" by no one (the identity as R, S zero, which
// crypto/ed25519 accepts for every message under that key), is refused,
// so that a token cannot be bound to a key anyone can sign for.
func TestProofSmallOrderKeyRefused(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := New(Options{Now: func() time.Time { return now }})
	identity := make([]byte, ed25519.PublicKeySize)
	identity[0] = 1
	header, _ := json.Marshal(map[string]any{"typ": Type, "alg": "EdDSA", "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(identity)}})
	claims, _ := json.Marshal(map[string]any{"jti": "j1", "htm": "POST", "htu": "https://mcp.example.com/mcp", "iat": now.Unix()})
	sig := make([]byte, ed25519.SignatureSize)
	sig[0] = 1
	signing := b64(header) + "." + b64(claims)
	if !ed25519.Verify(identity, []byte(signing), sig) {
		t.Fatal("the forged signature does not verify: the test no longer shows a forgery")
	}
	_, err := v.Verify(t.Context(), []string{signing + "." + b64(sig)}, Request{Method: "POST", URI: "https://mcp.example.com/mcp"})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidProof {
		t.Fatalf("Verify(a proof of the Ed25519 identity key, forged) = %v, want invalid_dpop_proof", err)
	}
}
