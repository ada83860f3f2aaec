package dpop

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// errMalformed is any proof that is not a compact JWS of the expected
// header, claims and signature; Check answers them all alike.
var errMalformed = errors.New("malformed proof")

// proofHeader is what Check reads of a proof's JOSE header.
type proofHeader struct {
	alg, typ string // "" when absent or not a string
	crit     bool   // a crit member, of any value
	jwk      accesstoken.JWK
	jwkOK    bool // jwk is an object of string kty, crv, x, y, n, e (each when present) and no private member
}

// algEd25519 is RFC 9864's fully-specified name for EdDSA with an
// Ed25519 key, which WebCrypto names such a key and oauth4webapi signs
// its proofs with; a proof naming it is read as EdDSA, whose key must be
// an Ed25519 one (accesstoken.KeyFitsAlg).
const algEd25519 = "Ed25519"

// readProof reads and verifies a proof as golang-jwt's Parser read it
// (the header into a map, the claims with proofClaims.UnmarshalJSON,
// then the key function and the signature), in one pass over each part
// and without the map: compact serialization of three base64url parts
// (unpadded, as jwt.Parser decodes them), an allowed asymmetric alg
// (Ed25519 read as EdDSA), no crit, typ dpop+jwt, a public jwk (decoded,
// or remembered: keyCache) of a type and size that fit alg, and the
// signature of the first two parts by that key, checked by golang-jwt's
// signing method. It returns the key's decoding, and fresh when it was
// decoded now.
func (v *Verifier) readProof(s string, claims *proofClaims) (jwk accesstoken.JWK, d decodedKey, fresh bool, err error) {
	head, rest, ok := strings.Cut(s, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sig, ".") {
		return jwk, d, false, errMalformed
	}
	hb, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return jwk, d, false, errMalformed
	}
	h, err := readHeader(hb)
	if err != nil {
		return jwk, d, false, err
	}
	cb, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || claims.UnmarshalJSON(cb) != nil {
		return jwk, d, false, errMalformed
	}
	sb, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return jwk, d, false, errMalformed
	}
	alg := h.alg
	if alg == algEd25519 {
		alg = "EdDSA"
	}
	method := jwt.GetSigningMethod(alg)
	if method == nil || !accesstoken.Supported(alg) || h.crit {
		return jwk, d, false, errMalformed
	}
	// A media type, read as RFC 7515 section 4.1.9 says: without case,
	// and "application/" implied when absent (as accesstoken reads
	// at+jwt).
	if !strings.EqualFold(h.typ, Type) && !strings.EqualFold(h.typ, "application/"+Type) {
		return jwk, d, false, errMalformed
	}
	if !h.jwkOK {
		return jwk, d, false, errMalformed
	}
	if d, fresh, err = v.keys.decode(h.jwk); err != nil {
		return jwk, d, false, err
	}
	if err := accesstoken.KeyFitsAlg(alg, d.key); err != nil {
		return jwk, d, false, err
	}
	if err := method.Verify(s[:len(head)+1+len(payload)], sb, d.key); err != nil {
		return jwk, d, false, err
	}
	return h.jwk, d, fresh, nil
}

// privateMembers are the JWK members of private keys of every key type
// (RFC 7518 section 6), which a proof's jwk must not carry (RFC 9449
// section 4.3 step 7), whatever their value.
var privateMembers = [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// readHeader reads a JOSE header, its members by exact (unescaped)
// name, as golang-jwt's map of it was read: alg and typ only when
// strings, crit when present at all, jwk only when an object whose kty,
// crv, x, y, n and e are strings where present and that names no private
// member. A header that is null has no members; one that is not an
// object, or not one JSON text, is refused. CheckMembers has refused a
// member named twice or in two cases, and invalid UTF-8.
func readHeader(b []byte) (h proofHeader, err error) {
	r := newJSONReader(b)
	defer r.free()
	switch r.dec.PeekKind() {
	case 'n':
		if _, err := r.dec.ReadValue(); err != nil {
			return h, errMalformed
		}
		return h, r.end()
	case '{':
	default:
		return h, errMalformed
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return h, errMalformed
	}
	for r.dec.PeekKind() != '}' {
		name, err := r.name()
		if err != nil {
			return h, errMalformed
		}
		switch string(name) {
		case "alg":
			h.alg, _, err = r.stringValue()
		case "typ":
			h.typ, _, err = r.stringValue()
		case "crit":
			h.crit = true
			err = r.dec.SkipValue()
		case "jwk":
			h.jwk, h.jwkOK, err = r.jwk()
		default:
			err = r.dec.SkipValue()
		}
		if err != nil {
			return h, errMalformed
		}
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return h, errMalformed
	}
	return h, r.end()
}

// jwk reads the jwk header member (see readHeader); ok is false for one
// that is no object, has a member of the six that is no string, or a
// private member.
func (r *jsonReader) jwk() (j accesstoken.JWK, ok bool, err error) {
	if r.dec.PeekKind() != '{' {
		return j, false, r.dec.SkipValue()
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return j, false, err
	}
	ok = true
	for r.dec.PeekKind() != '}' {
		name, err := r.name()
		if err != nil {
			return j, false, err
		}
		var dst *string
		switch n := string(name); n {
		case "kty":
			dst = &j.Kty
		case "crv":
			dst = &j.Crv
		case "x":
			dst = &j.X
		case "y":
			dst = &j.Y
		case "n":
			dst = &j.N
		case "e":
			dst = &j.E
		default:
			for _, p := range privateMembers {
				if n == p {
					ok = false
				}
			}
			if err := r.dec.SkipValue(); err != nil {
				return j, false, err
			}
			continue
		}
		s, isString, err := r.stringValue()
		if err != nil {
			return j, false, err
		}
		*dst, ok = s, ok && isString
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return j, false, err
	}
	return j, ok, nil
}

// jsonReader is a tokenizer and scratch for one small JSON text of a
// proof (its header or claims), pooled: setting up a tokenizer costs as
// much as reading a proof's header.
type jsonReader struct {
	src bytes.Buffer // the text, read in place
	dec jsontext.Decoder
	unq []byte
}

var jsonReaders = sync.Pool{New: func() any { return new(jsonReader) }}

// newJSONReader returns a reader of b; the caller must call free once
// done with it. Duplicate names are not looked for: CheckMembers has
// refused them, and their case variants.
func newJSONReader(b []byte) *jsonReader {
	r := jsonReaders.Get().(*jsonReader)
	r.src = *bytes.NewBuffer(b)
	r.dec.Reset(&r.src, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(false))
	return r
}

// name reads an object member's name, unescaped into r.unq (the bytes
// are valid until the next read).
func (r *jsonReader) name() ([]byte, error) {
	v, err := r.dec.ReadValue()
	if err != nil {
		return nil, err
	}
	if r.unq, err = jsontext.AppendUnquote(r.unq[:0], v); err != nil {
		return nil, err
	}
	return r.unq, nil
}

// stringValue reads a value, and its text when it is a string.
func (r *jsonReader) stringValue() (s string, isString bool, err error) {
	v, err := r.dec.ReadValue()
	if err != nil || v.Kind() != '"' {
		return "", false, err
	}
	if r.unq, err = jsontext.AppendUnquote(r.unq[:0], v); err != nil {
		return "", false, err
	}
	return string(r.unq), true, nil
}

// end checks that nothing but whitespace follows the value read.
func (r *jsonReader) end() error {
	if _, err := r.dec.ReadToken(); err != io.EOF {
		return errMalformed
	}
	return nil
}

func (r *jsonReader) free() {
	r.src = bytes.Buffer{}
	r.dec.Reset(&r.src) // forgets the text
	if cap(r.unq) > maxProofLen {
		r.unq = nil
	}
	jsonReaders.Put(r)
}
