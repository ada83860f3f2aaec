package gateway

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Pagination cursor sealing.
//
// A server's nextCursor is opaque to the client but not to whoever
// decodes it: the Go SDK's is base64 of the last item of the page, by
// name or URI, whether or not the gateway lets the caller see that item,
// and it starts a page after any name a client writes into one. So the
// client never sees the upstream's cursor: it gets
//
//	base64url(nonce || AES-256-GCM(key, nonce, pad(cursor), binding))
//
// where key is derived from SessionKey and binding is the MAC of the
// list (its result member), the resource and the principal, as a session
// id's (macState.sum). pad appends 0x80 and zeros up to a multiple of
// cursorBlock bytes (ISO/IEC 7816-4), so that the length shows nothing
// of the cursor's either: the Go SDK's, as long as the page's last name,
// told a caller the length of a hidden one. A list request's params.cursor must open for the
// current token's principal and the list asked for before the
// upstream's cursor replaces it; any other cursor (the upstream's own,
// another caller's, another list's) is refused and never forwarded, so
// a cursor shows nothing and starts a page only where the upstream's
// did for this caller.

const (
	labelCursor       = "mcp-cursor-v1"
	maxUpstreamCursor = 16 << 10 // bytes; far above what servers mint
	cursorBlock       = 256      // bytes; the Go SDK's cursor for a 150-byte name fits one
)

// newCursorAEAD derives the cursor key from the session key: the
// session key itself stays an HMAC key only.
func newCursorAEAD(sessionKey []byte) cipher.AEAD {
	mac := hmac.New(sha256.New, sessionKey)
	mac.Write([]byte(labelCursor + " key"))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// cursorBinding is the additional data of a cursor of list for p.
func (g *Gateway) cursorBinding(p *principal, list mcpparse.List) []byte {
	return g.boundMAC(nil, labelCursor+"\x00"+list.Member(), p, "")
}

// sealCursor returns the client-facing cursor for an upstream one.
func (g *Gateway) sealCursor(p *principal, list mcpparse.List, upstream string) string {
	n := g.cursors.NonceSize()
	padded := (len(upstream)/cursorBlock + 1) * cursorBlock
	buf := make([]byte, n+padded, n+padded+g.cursors.Overhead())
	rand.Read(buf[:n])
	copy(buf[n:], upstream)
	buf[n+len(upstream)] = 0x80
	buf = g.cursors.Seal(buf[:n], buf[:n], buf[n:], g.cursorBinding(p, list))
	return base64.RawURLEncoding.EncodeToString(buf)
}

// openCursor returns the upstream cursor a client-facing one seals for
// p and list.
func (g *Gateway) openCursor(p *principal, list mcpparse.List, sealed string) (string, bool) {
	n := g.cursors.NonceSize()
	if len(sealed) > base64.RawURLEncoding.EncodedLen(n+maxUpstreamCursor+cursorBlock+g.cursors.Overhead()) {
		return "", false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(sealed)
	if err != nil || len(raw) < n+g.cursors.Overhead() {
		return "", false
	}
	up, err := g.cursors.Open(nil, raw[:n], raw[n:], g.cursorBinding(p, list))
	if err != nil {
		return "", false
	}
	up = bytes.TrimRight(up, "\x00")
	if len(up) == 0 || up[len(up)-1] != 0x80 {
		return "", false // sealed here, so padded: cannot happen
	}
	return string(up[:len(up)-1]), true
}

// bindCursors checks the params.cursor of an authorized list request
// and replaces a sealed one with the upstream's, in the body.
func (g *Gateway) bindCursors(x *exchange) *refusal {
	for i := range x.msgs {
		m := &x.msgs[i]
		list, ok := listMethod(m.Method)
		if m.Kind == mcpparse.KindResponse || !ok || !maySpell(m.Raw, "cursor", looseSeps) {
			continue
		}
		var msg struct {
			Params map[string]json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(m.Raw, &msg); err != nil {
			return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID, message: "invalid params: params is not an object"}
		}
		v, found, err := exactMember(msg.Params, "cursor")
		if err != nil {
			return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID, message: "invalid params: params " + err.Error() + " by some servers; spell it cursor"}
		}
		if !found || string(v) == "null" {
			continue // the first page
		}
		invalid := &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID,
			message: "invalid params: params.cursor was not issued for this caller and list"}
		if x.batch || len(x.msgs) != 1 {
			invalid.message = "invalid params: a list request with a cursor must be sent alone"
			return invalid
		}
		span, found, err := mcpparse.LocateString(x.body, "params", "cursor")
		switch {
		case err != nil || !found:
			return invalid
		case span.Value == "":
			return nil // the first page
		}
		up, ok := g.openCursor(x.p, list, span.Value)
		if !ok {
			return invalid
		}
		body, err := mcpparse.ReplaceString(x.body, span, up)
		if err == nil {
			err = g.redecide(x, *m, body, first(x.r.Header[mcpparse.HeaderName]), func(*mcpparse.Message) bool { return true })
		}
		if err != nil {
			g.log.Warn("list cursor not rewritten", zap.Error(err))
			invalid.message = "the list cursor could not be rewritten"
			return invalid
		}
		return nil
	}
	return nil
}

// sealNextCursor seals result.nextCursor of a list answer for x's caller.
// A member Go's decoders may read as nextCursor ("NextCursor",
// "next_cursor") is taken out: it would reach the client unsealed.
func (g *Gateway) sealNextCursor(x *exchange, list mcpparse.List, msg []byte) ([]byte, error) {
	if !maySpell(msg, "nextcursor", looseSeps) {
		return msg, nil
	}
	return editResult(msg, func(result map[string]json.RawMessage) (bool, error) {
		changed := false
		for k := range result {
			if k != "nextCursor" && mcpparse.SameLooseName(k, "nextCursor") {
				delete(result, k)
				changed = true
			}
		}
		v, ok := result["nextCursor"]
		if !ok {
			return changed, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return false, errors.New("list answer: nextCursor is not a string")
		}
		if s == "" {
			return changed, nil
		}
		if len(s) > maxUpstreamCursor {
			return false, fmt.Errorf("list answer: nextCursor is longer than %d bytes", maxUpstreamCursor)
		}
		sealed, err := json.Marshal(g.sealCursor(x.p, list, s))
		if err != nil {
			return false, err
		}
		result["nextCursor"] = sealed
		return true, nil
	})
}
