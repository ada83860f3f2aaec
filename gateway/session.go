package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"unsafe"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// Session binding (2025 protocol revisions).
//
// The upstream's Mcp-Session-Id never reaches the client as is. The client
// gets
//
//	base64url(upstreamID || HMAC-SHA256(SessionKey, binding || upstreamID))
//
// where binding is the length-prefixed sequence "mcp-session-v2", the
// resource, iss, the principal type (principalKind), sub, client_id and
// the outermost act.sub ("" when none).
// The resource keeps a session of one MCP server from being presented to
// another gateway that shares the key (the mcp_auth app gives every
// gateway the same one). On every request
// carrying Mcp-Session-Id the gateway recomputes the MAC for the current
// token's principal; only on a match does it forward the upstream's id.
// Nothing is stored, so any gateway instance holding the key can check a
// session, and a session id stolen from one principal is useless to
// another. A refreshed token for the same user, client and agent keeps the
// session.

const (
	sessionMACSize     = sha256.Size
	maxUpstreamSession = 1024 // bytes; far above what servers mint (UUIDs, 32-byte tokens)
)

var errSession = errors.New("session not found")

// wrapSession returns the client-facing session id for an upstream one.
func (g *Gateway) wrapSession(p *principal, upstream string) (string, error) {
	if !validSessionID(upstream) || len(upstream) > maxUpstreamSession {
		return "", errors.New("upstream session id is not visible ASCII or too long")
	}
	if m := p.session.Load(); m != nil && m.g == g && m.upstream == upstream {
		return m.wrapped, nil
	}
	wrapped := g.wrapBound(labelSession, p, upstream)
	p.session.Store(&sessionMemo{g: g, wrapped: wrapped, upstream: upstream})
	return wrapped, nil
}

// sessionMemo is a client-facing session id and the upstream id it
// carries, as verified (or made) by gateway g (its key and resource) for
// one principal. Wrapping is deterministic, so the memo answers exactly
// as the MAC would.
type sessionMemo struct {
	g                 *Gateway
	wrapped, upstream string
}

// unwrapSession verifies a client-facing session id against the principal
// and returns the upstream id.
//
// The id verified last for the principal is remembered on it, so the
// requests of one session cost a comparison, not a MAC.
func (g *Gateway) unwrapSession(p *principal, wrapped string) (string, error) {
	if m := p.session.Load(); m != nil && m.g == g && len(m.wrapped) == len(wrapped) &&
		subtle.ConstantTimeCompare(unsafe.Slice(unsafe.StringData(m.wrapped), len(m.wrapped)), unsafe.Slice(unsafe.StringData(wrapped), len(wrapped))) == 1 {
		return m.upstream, nil
	}
	upstream, ok := g.unwrapBound(labelSession, p, wrapped, maxUpstreamSession)
	if !ok || !validSessionID(upstream) {
		return "", errSession
	}
	p.session.Store(&sessionMemo{g: g, wrapped: wrapped, upstream: upstream})
	return upstream, nil
}

// MAC labels: a session id can never pass as a task id or the reverse.
const (
	labelSession = "mcp-session-v2"
	labelTask    = "mcp-task-v2"
)

// wrapBound returns base64url(upstream || MAC(label, principal, upstream)).
func (g *Gateway) wrapBound(label string, p *principal, upstream string) string {
	buf := make([]byte, 0, len(upstream)+sessionMACSize)
	buf = append(buf, upstream...)
	buf = g.boundMAC(buf, label, p, upstream)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// unwrapBound verifies a wrapped id for the principal and returns the
// upstream id it carries (at most maxLen bytes).
func (g *Gateway) unwrapBound(label string, p *principal, wrapped string, maxLen int) (string, bool) {
	if len(wrapped) > base64.RawURLEncoding.EncodedLen(maxLen+sessionMACSize) {
		return "", false
	}
	ms := g.macs.Get().(*macState)
	defer g.macs.Put(ms)
	raw, err := base64.RawURLEncoding.Strict().AppendDecode(ms.raw[:0], []byte(wrapped))
	ms.raw = raw[:0]
	if err != nil || len(raw) <= sessionMACSize {
		return "", false
	}
	upstream := raw[:len(raw)-sessionMACSize]
	var want [sessionMACSize]byte
	ms.sum(want[:0], label, g.cfg.Resource, p, upstream)
	if !hmac.Equal(raw[len(raw)-sessionMACSize:], want[:]) {
		return "", false
	}
	return string(upstream), true
}

func (g *Gateway) boundMAC(dst []byte, label string, p *principal, upstream string) []byte {
	ms := g.macs.Get().(*macState)
	defer g.macs.Put(ms)
	return ms.sum(dst, label, g.cfg.Resource, p, []byte(upstream))
}

// macState is a keyed HMAC and its scratch space, reused through
// Gateway.macs: a session id is checked on every request of a session,
// and a fresh HMAC costs the key schedule and a dozen allocations.
type macState struct {
	h      hash.Hash
	fields []byte
	raw    []byte
}

func newMACState(key []byte) *macState {
	return &macState{h: hmac.New(sha256.New, key)}
}

// sum appends MAC(label, resource, principal, upstream) to dst: each field
// length-prefixed, so that field boundaries cannot be shifted ("ab"+"c"
// vs "a"+"bc").
func (ms *macState) sum(dst []byte, label, resource string, p *principal, upstream []byte) []byte {
	b := ms.fields[:0]
	for _, f := range [...]string{label, resource, p.issuer, principalKind(p), p.subject, p.clientID, outermostActor(p)} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(upstream)))
	b = append(b, upstream...)
	ms.fields = b[:0]
	ms.h.Reset()
	ms.h.Write(b)
	return ms.h.Sum(dst)
}

// principalKind is the principal type a binding names, and the
// X-MCP-Principal-Type the upstream gets: "user" for a
// token that says user or nothing (other issuers' user tokens), the
// claim otherwise. A client's or an agent's own token that shares a
// user's names (an issuer that keeps them apart no more than the claim)
// does not share the user's sessions and tasks.
func principalKind(p *principal) string {
	if p.principalType == "" {
		return accesstoken.PrincipalUser
	}
	return p.principalType
}

func outermostActor(p *principal) string {
	if len(p.actors) > 0 {
		return p.actors[0]
	}
	return ""
}

// validSessionID checks the MCP rule: visible ASCII (0x21–0x7E) only.
func validSessionID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
