// Package dpop verifies DPoP proofs (RFC 9449) for the token endpoint and
// for resource servers alike: one definition of the checks of RFC 9449
// §4.3 that the issuer and the gateway share. Like accesstoken, it imports
// nothing else of the issuer.
package dpop

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// Type is the JWS typ of a DPoP proof.
const Type = "dpop+jwt"

// Header is the HTTP header that carries a proof, and NonceHeader the one
// that carries a server nonce.
const (
	Header      = "DPoP"
	NonceHeader = "DPoP-Nonce"
)

// Error codes of RFC 9449 (§5, §7.1, §8), and RFC 6750's for a token
// sent with the wrong scheme.
const (
	CodeInvalidProof = "invalid_dpop_proof"
	CodeUseNonce     = "use_dpop_nonce"
	CodeInvalidToken = "invalid_token"
)

// DefaultWindow is how far a proof's iat may lie from the server's clock,
// either way: proofs are made just before the request, so a minute covers
// clock skew and slow networks, and bounds how long a jti is remembered.
const DefaultWindow = time.Minute

// maxProofLen bounds a proof; an RSA-4096 key and signature fit easily.
const maxProofLen = 8 << 10

// maxJTILen bounds the jti remembered per proof.
const maxJTILen = 256

// Error is a refused proof. Its description is fixed, never derived from
// the proof, so it may be shown to the client.
type Error struct {
	Code        string // CodeInvalidProof or CodeUseNonce
	Description string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func invalid(desc string) *Error { return &Error{Code: CodeInvalidProof, Description: desc} }

// Options configure a Verifier.
type Options struct {
	// Window bounds |now - iat|; default DefaultWindow.
	Window time.Duration
	// Nonces, when set, makes every proof carry a nonce it issued
	// (RFC 9449 §8, §9); nil requires none.
	Nonces *Nonces
	// MaxReplayEntries bounds the jti memory; default 1<<19 (about 50 MB
	// at most). When full, proofs are refused until entries expire.
	MaxReplayEntries int
	// Replay, when set, is the jti memory, shared with other Verifiers
	// (MaxReplayEntries is then ignored: it has its own bound). It
	// remembers for the DefaultWindow, so it is used only when Window is
	// not longer.
	Replay *Replay
	// Ledger, when set, also records every spent proof where other
	// instances see it, after Replay let it through.
	Ledger Ledger
	Now    func() time.Time // default time.Now
}

// ledgerSkew is how much longer than its acceptance window a proof is
// kept in the Ledger: instances' clocks differ a little.
const ledgerSkew = 10 * time.Second

// ErrUnavailable wraps the error of a Ledger that could not tell whether
// a proof was used before: the request should be refused as one to retry
// later (not the client's fault), never accepted.
var ErrUnavailable = errors.New("dpop: the replay check is unavailable")

// Verifier checks proofs and remembers their jti, in memory, until their
// iat leaves the window. Safe for concurrent use.
type Verifier struct {
	window time.Duration
	nonces *Nonces
	now    func() time.Time
	replay *Replay
	ledger Ledger
	keys   keyCache
}

// New returns a Verifier.
func New(o Options) *Verifier {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxReplayEntries <= 0 {
		o.MaxReplayEntries = 1 << 19
	}
	// A jti must be remembered while its proof could still be accepted:
	// until iat+window, and iat may be up to window ahead.
	replay := o.Replay
	if replay == nil || o.Window > DefaultWindow {
		replay = newReplay(o.MaxReplayEntries, 2*o.Window)
	}
	return &Verifier{
		window: o.Window,
		nonces: o.Nonces,
		now:    o.Now,
		replay: replay,
		ledger: o.Ledger,
	}
}

// Algorithms are the proof algorithms accepted (asymmetric only), for
// dpop_signing_alg_values_supported and the algs challenge parameter:
// those of access tokens, and Ed25519 (RFC 9864).
func Algorithms() []string { return append(accesstoken.Algorithms(), algEd25519) }

// Nonces returns the Verifier's nonce source, nil when none is required.
func (v *Verifier) Nonces() *Nonces { return v.nonces }

// Request is the HTTP request a proof must be for.
type Request struct {
	Method string
	// URI is the absolute URI the client addressed (its scheme and host
	// as the client saw them, not as a proxy forwarded them); query and
	// fragment are ignored.
	URI string
	// AccessToken is the token presented with the proof at a resource
	// server; its hash must be the proof's ath. Empty at the token
	// endpoint, where no ath is checked.
	AccessToken string
	// Holder names whom the replay memory charges the proof to (its share,
	// see Replay): HolderOf the token's principal at a resource server,
	// of the client at the token endpoint, so that one principal with
	// many keys (a bound token each, cheap with client credentials) has
	// one share. Empty: the proof's key.
	Holder string
}

// HolderOf names a principal for Request.Holder: its issuer, type
// ("user" for a user's token whether the claim says so or not), client
// and subject, quoted, so that no two principals share a name (a client
// id that is a URL is the same at every issuer of a process, whose
// gateways and issuer share one replay memory).
func HolderOf(issuer, principalType, clientID, subject string) string {
	return strconv.Quote(issuer) + strconv.Quote(principalType) + strconv.Quote(clientID) + strconv.Quote(subject)
}

// Verify checks the DPoP header values of a request and spends the
// proof's jti: Check, then Use. It returns the key's RFC 7638
// thumbprint, which the caller compares to cnf.jkt (or binds the tokens
// it issues to).
func (v *Verifier) Verify(ctx context.Context, values []string, req Request) (string, error) {
	p, err := v.Check(values, req)
	if err != nil {
		return "", err
	}
	if err := p.Use(ctx); err != nil {
		return "", err
	}
	return p.JKT, nil
}

// Proof is a proof that passed every check but the replay check.
type Proof struct {
	JKT    string // the RFC 7638 thumbprint of its key
	v      *Verifier
	jti    string
	iat    time.Time
	holder string // Request.Holder, or JKT
}

// Use spends the proof: it is refused (*Error) if its jti was used before
// for the same key, here or, with a Ledger, at another instance, or when
// the replay memory is full (fail closed). An error wrapping
// ErrUnavailable means the Ledger could not tell: refused too.
//
// A jti is unique per key (RFC 9449 §11.1 asks for one per target URI
// within the window; per key is stricter and needs no htu in the key).
func (p *Proof) Use(ctx context.Context) error {
	k := replayKey(p.JKT, p.jti)
	switch p.v.replay.add(k, p.holder, p.v.now()) {
	case errReplayed:
		return invalid("the DPoP proof was used before")
	case errReplayFull:
		return invalid("too many DPoP proofs; retry later")
	case errKeyShare:
		return invalid("too many DPoP proofs from this holder; retry later")
	}
	if p.v.ledger == nil {
		return nil
	}
	err := p.v.ledger.Spend(ctx, hex.EncodeToString(k[:]), p.iat.Add(p.v.window+ledgerSkew))
	switch {
	case errors.Is(err, ErrReplayed):
		return invalid("the DPoP proof was used before")
	case err != nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Check checks the DPoP header values of a request (RFC 9449 §4.3)
// except for replay: one well-formed proof of typ dpop+jwt, signed with
// an allowed asymmetric algorithm by the public key in its jwk header (no
// private parts), with htm, htu, iat within the window, ath when an
// access token is presented, and the nonce when required. The proof must
// then be spent with Use before the request has any effect; a token
// endpoint does that once the grant is found valid, so requests that
// carry no valid grant cannot fill the bounded replay memory.
func (v *Verifier) Check(values []string, req Request) (*Proof, error) {
	switch {
	case len(values) == 0:
		return nil, invalid("the DPoP header is missing")
	case len(values) > 1:
		return nil, invalid("more than one DPoP header")
	case len(values[0]) > maxProofLen:
		return nil, invalid("the DPoP proof is too long")
	}
	if err := accesstoken.CheckMembers(values[0]); err != nil {
		return nil, invalid("the DPoP proof is malformed: " + err.Error())
	}
	var claims proofClaims
	jwk, decoded, fresh, err := v.readProof(values[0], &claims)
	if err != nil {
		return nil, invalid("the DPoP proof is malformed, not of typ dpop+jwt, or not validly signed with an asymmetric algorithm by the public key in its jwk header")
	}
	if fresh {
		v.keys.add(jwk, decoded)
	}
	now := v.now()
	switch {
	case claims.jti == "" || len(claims.jti) > maxJTILen:
		return nil, invalid("the DPoP proof lacks a valid jti")
	case claims.htm != req.Method:
		return nil, invalid("the DPoP proof's htm is not this request's method")
	case !SameURI(claims.htu, req.URI):
		return nil, invalid("the DPoP proof's htu is not this request's URI")
	case !claims.hasIAT:
		return nil, invalid("the DPoP proof lacks iat")
	case claims.iat.Before(now.Add(-v.window)) || claims.iat.After(now.Add(v.window)):
		return nil, invalid("the DPoP proof's iat is outside the accepted window")
	case !recording(v.ledger) && claims.iat.Before(v.replay.since.Truncate(time.Second)):
		// The memory cannot say whether it was used (NewReplay); iat
		// has whole seconds, so the memory's first second counts.
		return nil, invalid("the DPoP proof was made before this server started; make a new one")
	}
	if req.AccessToken != "" {
		// Hashed, encoded and compared in place: a copy of the token
		// (some 600 bytes at a gateway) and of the hash on every request
		// bought nothing.
		sum := sha256.Sum256(readOnlyBytes(req.AccessToken))
		var want [43]byte // base64url of 32 bytes, unpadded
		base64.RawURLEncoding.Encode(want[:], sum[:])
		if subtle.ConstantTimeCompare(readOnlyBytes(claims.ath), want[:]) != 1 {
			return nil, invalid("the DPoP proof's ath is not the hash of the access token")
		}
	}
	if v.nonces != nil && !v.nonces.valid(claims.nonce, now) {
		return nil, &Error{Code: CodeUseNonce, Description: "the DPoP proof must carry the nonce of the DPoP-Nonce header"}
	}
	return &Proof{JKT: decoded.jkt, v: v, jti: claims.jti, iat: claims.iat, holder: cmp.Or(req.Holder, decoded.jkt)}, nil
}

// ProofChecked reports whether Bound reads the proof and the request for a
// token bound to jkt ("" for none) sent with (dpopScheme) or without the
// DPoP scheme; otherwise callers need not build them.
func ProofChecked(jkt string, dpopScheme bool) bool { return dpopScheme && jkt != "" }

// Bound checks how a resource server's request presents an access token
// bound to jkt (its cnf.jkt, "" for a bearer token), RFC 9449 §7.1: a
// bound token only with the DPoP scheme and a valid proof for req signed
// by that key (so a stolen bound token is useless without the key); the
// DPoP scheme only with a bound token. values are the request's DPoP
// header values; nil means accepted. An error that is not an *Error
// wraps ErrUnavailable (see Proof.Use): refused, to retry later.
func (v *Verifier) Bound(ctx context.Context, values []string, req Request, jkt string, dpopScheme bool) error {
	switch {
	case !dpopScheme && jkt != "":
		return &Error{Code: CodeInvalidToken, Description: "the access token is DPoP-bound: send it with the DPoP scheme and a DPoP proof"}
	case !dpopScheme:
		return nil
	case jkt == "":
		return &Error{Code: CodeInvalidToken, Description: "the access token is not DPoP-bound; send it with the Bearer scheme"}
	}
	// ProofChecked(jkt, dpopScheme) holds here. Another key's proof is
	// refused before it is spent: it is charged to the token's holder,
	// whose share a thief with the token but not the key must not fill.
	p, err := v.Check(values, req)
	switch {
	case err != nil:
		return err
	case p.JKT != jkt:
		return invalid("the DPoP proof is not signed by the key the access token is bound to")
	}
	return p.Use(ctx)
}

// proofClaims are the proof's claims, read by exact name.
type proofClaims struct {
	jti, htm, htu, ath, nonce string
	iat                       time.Time
	hasIAT                    bool
}

// UnmarshalJSON reads the claims in one pass of the tokenizer, without
// the map of every member and the reflection of encoding/json: a
// quarter of a proof's allocations went there. Members are matched by
// their exact (unescaped) names; jti, htm, htu, ath and nonce must be
// strings, iat a number; others are skipped. CheckMembers has already
// refused a member named twice or in two cases.
func (c *proofClaims) UnmarshalJSON(b []byte) error {
	r := newJSONReader(b)
	defer r.free()
	switch r.dec.PeekKind() {
	case 'n': // null: no claims, as encoding/json reads it into a map
		if _, err := r.dec.ReadValue(); err != nil {
			return err
		}
		return r.end()
	case '{':
	default:
		return errors.New("claims are not an object")
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	for r.dec.PeekKind() != '}' {
		name, err := r.name()
		if err != nil {
			return err
		}
		var dst *string
		switch string(name) {
		case "jti":
			dst = &c.jti
		case "htm":
			dst = &c.htm
		case "htu":
			dst = &c.htu
		case "ath":
			dst = &c.ath
		case "nonce":
			dst = &c.nonce
		case "iat":
			v, err := r.dec.ReadValue()
			if err != nil || v.Kind() != '0' {
				return errors.New("malformed iat")
			}
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return errors.New("malformed iat")
			}
			c.iat, c.hasIAT = time.Unix(int64(f), 0), true
			continue
		default:
			if err := r.dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		v, err := r.dec.ReadValue()
		if err == nil && v.Kind() == '"' {
			r.unq, err = jsontext.AppendUnquote(r.unq[:0], v)
		}
		if err != nil || v.Kind() != '"' {
			return errors.New("malformed string claim")
		}
		*dst = string(r.unq)
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	return r.end()
}

// readOnlyBytes is s as a byte slice without a copy, for functions that
// only read it (as gateway/token.go hashes a token).
func readOnlyBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
