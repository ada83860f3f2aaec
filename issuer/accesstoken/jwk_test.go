package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"testing"
)

type testKeys struct {
	p256, p384, p521 *ecdsa.PrivateKey
	rsa, rsaSmall    *rsa.PrivateKey
	ed               ed25519.PrivateKey
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	var k testKeys
	var err error
	must := func(e error) {
		if e != nil {
			t.Fatal(e)
		}
	}
	k.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	k.p521, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	must(err)
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaSmall, err = rsa.GenerateKey(rand.Reader, 1024)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
}

func TestKeyFitsAlg(t *testing.T) {
	k := newTestKeys(t)
	tests := []struct {
		alg string
		key any
		ok  bool
	}{
		{"ES256", &k.p256.PublicKey, true},
		{"ES384", &k.p384.PublicKey, true},
		{"ES512", &k.p521.PublicKey, true},
		{"ES384", &k.p256.PublicKey, false}, // P-256 key under ES384
		{"ES256", &k.p521.PublicKey, false},
		{"ES256", &k.rsa.PublicKey, false},
		{"RS256", &k.rsa.PublicKey, true},
		{"RS512", &k.rsa.PublicKey, true},
		{"PS256", &k.rsa.PublicKey, true},
		{"PS384", &k.rsa.PublicKey, true},
		{"RS256", &k.rsaSmall.PublicKey, false},
		{"RS256", &rsa.PublicKey{E: 65537}, false},
		{"RS256", oversizedRSA(), false},
		{"RS256", &k.p256.PublicKey, false},
		{"EdDSA", k.ed.Public(), true},
		{"EdDSA", ed25519.PublicKey(make([]byte, 31)), false},
		{"EdDSA", &k.p256.PublicKey, false},
		{"HS256", []byte("secret"), false},
		{"HS256", &k.rsa.PublicKey, false},
		{"ES256", []byte("secret"), false},
		{"none", nil, false},
		{"", &k.p256.PublicKey, false},
	}
	for _, tt := range tests {
		if err := KeyFitsAlg(tt.alg, tt.key); (err == nil) != tt.ok {
			t.Errorf("KeyFitsAlg(%s, %T) = %v, want ok=%v", tt.alg, tt.key, err, tt.ok)
		}
	}
}

// TestAlgorithms: the allow-list is asymmetric only and its copies
// cannot change it.
func TestAlgorithms(t *testing.T) {
	algs := Algorithms()
	for _, a := range algs {
		if a == "none" || a[0] == 'H' {
			t.Errorf("Algorithms() contains %q", a)
		}
	}
	algs[0] = "none"
	if Supported("none") || Supported("HS256") || !Supported("ES256") || !Supported("EdDSA") {
		t.Error("Supported: none or HS256 allowed, or ES256/EdDSA refused")
	}
}

// oversizedRSA is an RSA public key one bit past MaxRSABits: costly to
// verify with, whether or not it is a real key.
func oversizedRSA() *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), MaxRSABits)
	return &rsa.PublicKey{N: n.Add(n, big.NewInt(1)), E: 65537}
}

// rsaOfBits is an RSA public key whose modulus has exactly bits bits:
// not a real key, but parsing checks only the size and the exponent.
func rsaOfBits(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	return &rsa.PublicKey{N: n.Add(n, big.NewInt(1)), E: 65537}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func ecJWK(k *ecdsa.PrivateKey) JWK {
	raw, _ := k.PublicKey.Bytes()
	n := (len(raw) - 1) / 2
	return JWK{Kty: "EC", Crv: k.Curve.Params().Name, X: b64(raw[1 : 1+n]), Y: b64(raw[1+n:])}
}

func TestJWKPublicKey(t *testing.T) {
	k := newTestKeys(t)
	rsaJWK := func(pub *rsa.PublicKey) JWK {
		return JWK{Kty: "RSA", N: b64(pub.N.Bytes()), E: b64(big.NewInt(int64(pub.E)).Bytes())}
	}
	mod := func(j JWK, f func(*JWK)) JWK { f(&j); return j }
	tests := []struct {
		name string
		jwk  JWK
		want any // nil: refused
	}{
		{"EC P-256", ecJWK(k.p256), &k.p256.PublicKey},
		{"EC P-384", ecJWK(k.p384), &k.p384.PublicKey},
		{"EC P-521", ecJWK(k.p521), &k.p521.PublicKey},
		{"RSA 2048", rsaJWK(&k.rsa.PublicKey), &k.rsa.PublicKey},
		{"OKP Ed25519", JWK{Kty: "OKP", Crv: "Ed25519", X: b64(k.ed.Public().(ed25519.PublicKey))}, k.ed.Public()},
		{"RSA 1024", rsaJWK(&k.rsaSmall.PublicKey), nil},
		{"RSA modulus over MaxRSABits", rsaJWK(oversizedRSA()), nil},
		// README (DPoP): RSA keys of 2048 to 4096 bits, the numbers
		// themselves rather than the constants.
		{"RSA of 2048 bits", rsaJWK(rsaOfBits(2048)), rsaOfBits(2048)},
		{"RSA of 4096 bits", rsaJWK(rsaOfBits(4096)), rsaOfBits(4096)},
		{"RSA of 2047 bits", rsaJWK(rsaOfBits(2047)), nil},
		{"RSA of 4097 bits", rsaJWK(rsaOfBits(4097)), nil},
		{"RSA even exponent", mod(rsaJWK(&k.rsa.PublicKey), func(j *JWK) { j.E = b64([]byte{1, 0, 0}) }), nil},
		{"RSA exponent too long", mod(rsaJWK(&k.rsa.PublicKey), func(j *JWK) { j.E = b64([]byte{1, 0, 0, 0, 1}) }), nil},
		{"private key material", mod(ecJWK(k.p256), func(j *JWK) { j.D = b64(k.p256.D.Bytes()) }), nil},
		{"unknown curve", mod(ecJWK(k.p256), func(j *JWK) { j.Crv = "secp256k1" }), nil},
		{"curve mismatch", mod(ecJWK(k.p256), func(j *JWK) { j.Crv = "P-384" }), nil},
		{"point not on curve", mod(ecJWK(k.p256), func(j *JWK) { j.Y = j.X }), nil},
		{"padded base64", mod(ecJWK(k.p256), func(j *JWK) { j.X += "=" }), nil},
		{"non-canonical base64", JWK{Kty: "OKP", Crv: "Ed25519", X: b64(make([]byte, 32))[:42] + "B"}, nil},
		{"X25519", JWK{Kty: "OKP", Crv: "X25519", X: b64(make([]byte, 32))}, nil},
		{"symmetric", JWK{Kty: "oct"}, nil},
		{"no kty", JWK{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.jwk.PublicKey()
			if tt.want == nil {
				if err == nil {
					t.Fatalf("PublicKey() = %T, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("PublicKey() error: %v", err)
			}
			if eq, ok := got.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(tt.want) {
				t.Errorf("PublicKey() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestJWKForSignatures(t *testing.T) {
	for use, want := range map[string]bool{"": true, "sig": true, "enc": false, "SIG": false} {
		if got := (JWK{Use: use}).ForSignatures(); got != want {
			t.Errorf("JWK{Use: %q}.ForSignatures() = %v, want %v", use, got, want)
		}
	}
	for _, tt := range []struct {
		ops  string
		want bool
	}{
		{`{}`, true},
		{`{"key_ops":["verify"]}`, true},
		{`{"key_ops":["sign","verify"]}`, true},
		{`{"key_ops":["encrypt"]}`, false},
		{`{"key_ops":[]}`, false},
		{`{"key_ops":["VERIFY"]}`, false},
		{`{"use":"sig","key_ops":["sign"]}`, false},
	} {
		var j JWK
		if err := json.Unmarshal([]byte(tt.ops), &j); err != nil {
			t.Fatal(err)
		}
		if got := j.ForSignatures(); got != tt.want {
			t.Errorf("JWK %s ForSignatures() = %v, want %v", tt.ops, got, tt.want)
		}
	}
}

func TestThumbprint(t *testing.T) {
	tests := []struct {
		name string
		jwk  JWK
		want string
	}{
		{"RFC 7638 section 3.1", JWK{Kty: "RSA", E: "AQAB", Kid: "2011-04-29", N: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},
			"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"},
		// RFC 9449 sections 4.1 and 6.1: the proof key and its cnf.jkt.
		{"RFC 9449 section 6.1", JWK{Kty: "EC", Crv: "P-256", X: "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs", Y: "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"},
			"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
	}
	for _, tt := range tests {
		if got := tt.jwk.Thumbprint(); got != tt.want {
			t.Errorf("%s: Thumbprint() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// smallOrderKeys are the encodings of Ed25519's eight points of small
// order, and non-canonical ones crypto/ed25519 reads as such points (y
// of p+1 and p, the identity with the sign bit set): keys with no
// private key, anyone signing for them.
var smallOrderKeys = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p+1: the identity
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p: order 4
	"0100000000000000000000000000000000000000000000000000000000000080", // the identity, x "negative"
}

// forgeSmallOrder finds a message and a signature that crypto/ed25519
// accepts for pub without any private key: with S = 0 the signature
// holds when R = -[k]A, a point of small order like A, so one of the
// small-order points as R fits about one message in eight.
func forgeSmallOrder(pub ed25519.PublicKey) (msg, sig []byte, ok bool) {
	for n := range 64 {
		msg = []byte("message " + string(rune('A'+n)))
		for _, r := range smallOrderKeys[:8] {
			sig = make([]byte, ed25519.SignatureSize)
			rb, _ := hex.DecodeString(r)
			copy(sig, rb)
			if ed25519.Verify(pub, msg, sig) {
				return msg, sig, true
			}
		}
	}
	return nil, nil, false
}

// TestJWKSmallOrderEd25519 refuses an Ed25519 key of small order, one
// anyone can sign for (shown here with crypto/ed25519 itself), as weak
// RSA keys are refused: a DPoP-bound token bound to one would be a
// bearer token, and a client's or agent's key anyone's to use.
func TestJWKSmallOrderEd25519(t *testing.T) {
	for _, h := range smallOrderKeys {
		raw, _ := hex.DecodeString(h)
		if _, _, ok := forgeSmallOrder(raw); !ok {
			t.Fatalf("found no forgery for %s: not a key of small order as crypto/ed25519 reads it", h)
		}
		if got, err := (JWK{Kty: "OKP", Crv: "Ed25519", X: b64(raw)}).PublicKey(); err == nil {
			t.Errorf("PublicKey(Ed25519 %s, small order) = %v, want refused", h, got)
		}
	}
	for range 2000 {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (JWK{Kty: "OKP", Crv: "Ed25519", X: b64(pub)}).PublicKey(); err != nil {
			t.Fatalf("PublicKey(a generated Ed25519 key) = %v, want it read", err)
		}
	}
}
