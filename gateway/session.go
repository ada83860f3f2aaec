package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
)

// Session binding (2025 protocol revisions).
//
// The upstream's Mcp-Session-Id never reaches the client as is. The client
// gets
//
//	base64url(upstreamID || HMAC-SHA256(SessionKey, binding || upstreamID))
//
// where binding is the length-prefixed sequence "mcp-session-v2", the
// resource, iss, sub, client_id and the outermost act.sub ("" when none).
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
	return g.wrapBound(labelSession, p, upstream), nil
}

// unwrapSession verifies a client-facing session id against the principal
// and returns the upstream id.
func (g *Gateway) unwrapSession(p *principal, wrapped string) (string, error) {
	upstream, ok := g.unwrapBound(labelSession, p, wrapped, maxUpstreamSession)
	if !ok || !validSessionID(upstream) {
		return "", errSession
	}
	return upstream, nil
}

// MAC labels: a session id can never pass as a task id or the reverse.
const (
	labelSession = "mcp-session-v2"
	labelTask    = "mcp-task-v1"
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
	raw, err := base64.RawURLEncoding.Strict().DecodeString(wrapped)
	if err != nil || len(raw) <= sessionMACSize {
		return "", false
	}
	upstream := string(raw[:len(raw)-sessionMACSize])
	want := g.boundMAC(nil, label, p, upstream)
	if !hmac.Equal(raw[len(raw)-sessionMACSize:], want) {
		return "", false
	}
	return upstream, true
}

func (g *Gateway) boundMAC(dst []byte, label string, p *principal, upstream string) []byte {
	m := hmac.New(sha256.New, g.cfg.SessionKey)
	for _, f := range []string{label, g.cfg.Resource, p.issuer, p.subject, p.clientID, outermostActor(p), upstream} {
		writeField(m, f)
	}
	return m.Sum(dst)
}

func outermostActor(p *principal) string {
	if len(p.actors) > 0 {
		return p.actors[0]
	}
	return ""
}

// writeField writes a length-prefixed field, so that field boundaries
// cannot be shifted ("ab"+"c" vs "a"+"bc").
func writeField(h hash.Hash, s string) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
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
