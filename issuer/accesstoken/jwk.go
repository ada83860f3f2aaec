package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"filippo.io/edwards25519"
)

// MinRSABits and MaxRSABits bound the RSA modulus accepted for a
// signature. The upper bound is for the verifier's sake: keys come from
// anyone (a DPoP proof's jwk header, a registered client's JWK Set), and
// a signature check costs about the cube of the modulus size, so an
// unauthenticated request with a 16384-bit key would cost some 25 times
// one with a common key.
const (
	MinRSABits = 2048
	MaxRSABits = 4096
)

// algorithms are the JWS algorithms a public key may verify: asymmetric
// only, so that a public key can never be used as an HMAC secret, and
// never none.
var algorithms = [...]string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}

// Algorithms returns the JWS algorithms a JWK-published key may verify.
func Algorithms() []string { return slices.Clone(algorithms[:]) }

// Supported reports whether alg is one of Algorithms.
func Supported(alg string) bool { return slices.Contains(algorithms[:], alg) }

// ErrKeyType is a key of the wrong type, curve or size for an algorithm.
var ErrKeyType = errors.New("key does not fit the algorithm")

// KeyFitsAlg refuses a key of the wrong type or size for alg, so that a
// key can never verify under another algorithm's header (an RSA key under
// ES256, a P-256 key under ES384). Algorithms outside Algorithms fit no key.
func KeyFitsAlg(alg string, key crypto.PublicKey) error {
	switch alg {
	case "ES256", "ES384", "ES512":
		k, ok := key.(*ecdsa.PublicKey)
		if !ok || k.Curve != curveOf(alg) {
			return ErrKeyType
		}
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		k, ok := key.(*rsa.PublicKey)
		if !ok || k.N == nil || k.N.BitLen() < MinRSABits || k.N.BitLen() > MaxRSABits {
			return ErrKeyType
		}
	case "EdDSA":
		k, ok := key.(ed25519.PublicKey)
		if !ok || len(k) != ed25519.PublicKeySize {
			return ErrKeyType
		}
	default:
		return ErrKeyType
	}
	return nil
}

func curveOf(alg string) elliptic.Curve {
	switch alg {
	case "ES256":
		return elliptic.P256()
	case "ES384":
		return elliptic.P384()
	case "ES512":
		return elliptic.P521()
	}
	return nil
}

// JWK is a public JSON Web Key (RFC 7517) of the kinds used here: EC
// P-256/384/521, RSA, OKP Ed25519.
type JWK struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	// KeyOps, when present, lists what the key may do (RFC 7517
	// section 4.3): a key without "verify" in it verifies nothing.
	KeyOps []string `json:"key_ops,omitempty"`
	Alg    string   `json:"alg,omitempty"`
	Kid    string   `json:"kid,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	// D is private key material, which a published key must not carry.
	D string `json:"d,omitempty"`
}

// ForSignatures reports whether the key may verify signatures: use
// absent or "sig", and key_ops absent or holding "verify" (RFC 7517
// sections 4.2 and 4.3).
func (j JWK) ForSignatures() bool {
	return (j.Use == "" || j.Use == "sig") && (j.KeyOps == nil || slices.Contains(j.KeyOps, "verify"))
}

// AlgKey is a public key published for one algorithm (a JWK's alg, RFC
// 7517 section 4.4), as a KeyFunc may return it: Parse then refuses a
// token signed with another algorithm (ErrKeyAlg), so that one key is
// used with exactly one algorithm (RFC 8725 section 3.1).
type AlgKey struct {
	Key crypto.PublicKey
	Alg string
}

// ErrKeyAlg: the key was published for another algorithm than the
// token's.
var ErrKeyAlg = errors.New("key is published for another algorithm")

// Verifier is the key a JWK publishes for verification: an AlgKey when
// it names its algorithm, the bare public key otherwise.
func (j JWK) Verifier() (crypto.PublicKey, error) {
	key, err := j.PublicKey()
	if err != nil || j.Alg == "" {
		return key, err
	}
	return AlgKey{Key: key, Alg: j.Alg}, nil
}

// PublicKey decodes the key: EC P-256/384/521, RSA of MinRSABits to
// MaxRSABits with an odd exponent, or OKP Ed25519, in strict base64url.
// Symmetric keys, other curves and keys carrying private material are
// refused. An error quotes at most 64 characters of a value: keys come
// from anyone, and a remote issuer's key set, logged with each fetch,
// may be a megabyte of one kty.
func (j JWK) PublicKey() (crypto.PublicKey, error) {
	if j.D != "" {
		return nil, errors.New("private key material published")
	}
	dec := base64.RawURLEncoding.Strict().DecodeString
	switch j.Kty {
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %.64q", j.Crv)
		}
		x, errX := dec(j.X)
		y, errY := dec(j.Y)
		size := (curve.Params().BitSize + 7) / 8
		if errX != nil || errY != nil || len(x) != size || len(y) != size {
			return nil, errors.New("malformed EC key")
		}
		return ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
	case "RSA":
		n, errN := dec(j.N)
		e, errE := dec(j.E)
		if errN != nil || errE != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("malformed RSA key")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < MinRSABits || pub.N.BitLen() > MaxRSABits || pub.E < 3 || pub.E%2 == 0 {
			return nil, errors.New("RSA key too weak or too large")
		}
		return pub, nil
	case "OKP":
		x, err := dec(j.X)
		if j.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("unsupported or malformed OKP key")
		}
		p, err := new(edwards25519.Point).SetBytes(x)
		if err != nil {
			return nil, errors.New("malformed OKP key: not a point of Ed25519")
		}
		if smallOrder(p) {
			return nil, errors.New("Ed25519 key of small order: anyone can sign for it")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("unsupported key type %.64q", j.Kty)
}

// smallOrder reports whether the Ed25519 point p, a public key, is of
// small order (dividing 8). Such a "key" has no private key to guard:
// with the identity point, a signature of 32 bytes of the identity and
// 32 zero bytes verifies for every message under crypto/ed25519, and the
// other seven points' signatures are found in a few tries. A token bound
// to one (DPoP) would be a bearer token, a client or agent registering
// one anyone's to use. p is decoded as crypto/ed25519 decodes a key
// (filippo.io/edwards25519, its own arithmetic, non-canonical y
// accepted); times the cofactor, a point of small order is the identity.
func smallOrder(p *edwards25519.Point) bool {
	return new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1
}

// Thumbprint is the RFC 7638 JWK thumbprint (SHA-256, base64url): the hash
// of the required members in lexicographic order, without whitespace. Call
// it on a key PublicKey accepted: its members are then base64url strings
// and known curve names, which need no JSON escaping.
func (j JWK) Thumbprint() string {
	var s string
	switch j.Kty {
	case "EC":
		s = `{"crv":"` + j.Crv + `","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	case "RSA":
		s = `{"e":"` + j.E + `","kty":"RSA","n":"` + j.N + `"}`
	case "OKP":
		s = `{"crv":"` + j.Crv + `","kty":"OKP","x":"` + j.X + `"}`
	}
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
