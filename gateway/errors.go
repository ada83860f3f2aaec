package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// JSON-RPC error codes the gateway answers with. -32000 is the generic
// implementation-defined server error; -32001 is what the MCP SDKs answer
// for an unknown session; -32020 and -32022 are MCP's HeaderMismatch and
// UnsupportedProtocolVersion.
const (
	codeParseError          = -32700
	codeInvalidRequest      = -32600
	codeMethodNotFound      = -32601
	codeInvalidParams       = -32602
	codeRefused             = -32000
	codeSessionNotFound     = -32001
	codeHeaderMismatch      = -32020
	codeUnsupportedProtocol = -32022
)

// refusal is an answer the gateway gives instead of forwarding.
type refusal struct {
	status    int
	code      int
	message   string
	id        []byte // raw JSON-RPC id, nil when unknown (a batch, or before parsing)
	data      any
	challenge string // WWW-Authenticate value, "" for none
	// dpopChallenge is a second WWW-Authenticate value (RFC 9449 §7.1),
	// and dpopNonce the DPoP-Nonce to send with it; "" for none.
	dpopChallenge, dpopNonce string
	allow                    string // Allow header for 405
	retryAfter               string // Retry-After header (seconds) for 429 and 503
}

type rpcErrorBody struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Error   rpcError        `json:"error"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// write answers with a JSON-RPC error object as the body, so that modern
// clients recognize the answer instead of falling back to the legacy
// transport. The id is omitted when unknown, as MCP prescribes.
func (f *refusal) write(w http.ResponseWriter) {
	h := w.Header()
	if f.challenge != "" {
		h.Set("WWW-Authenticate", f.challenge)
	}
	if f.dpopChallenge != "" {
		h.Add("WWW-Authenticate", f.dpopChallenge)
	}
	if f.dpopNonce != "" {
		h.Set(dpop.NonceHeader, f.dpopNonce)
	}
	if f.allow != "" {
		h.Set("Allow", f.allow)
	}
	if f.retryAfter != "" {
		h.Set("Retry-After", f.retryAfter)
	}
	h.Del("Mcp-Session-Id")
	if f.status == http.StatusAccepted {
		// A notification dropped (sessionlessMessages): answered as one
		// taken, with no body.
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(f.status)
		return
	}
	body, err := json.Marshal(rpcErrorBody{JSONRPC: "2.0", ID: f.id, Error: rpcError{Code: f.code, Message: f.message, Data: f.data}})
	if err != nil {
		// Only data could fail to marshal, and it is built here; drop it.
		body, _ = json.Marshal(rpcErrorBody{JSONRPC: "2.0", ID: f.id, Error: rpcError{Code: f.code, Message: f.message}})
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(f.status)
	w.Write(body)
}

// challenge builds an RFC 6750 Bearer challenge with RFC 9728's
// resource_metadata. Parameter order follows SPEC.md: error first when
// there is one, then resource_metadata and scope for 401, scope and
// resource_metadata for 403.
func (g *Gateway) challenge(a *authError) string {
	if g.cfg.RequireDPoP {
		return "" // the DPoP challenge alone
	}
	var b strings.Builder
	b.WriteString("Bearer ")
	if a.code != "" && !a.dpop {
		b.WriteString(`error="` + a.code + `", `)
		if a.desc != "" {
			b.WriteString(`error_description="` + a.desc + `", `)
		}
	}
	b.WriteString(`resource_metadata="` + g.metadataURL + `"`)
	if a.status == http.StatusUnauthorized && len(g.policy.base) > 0 {
		b.WriteString(`, scope="` + strings.Join(g.policy.base, " ") + `"`)
	}
	return b.String()
}

// scopeChallenges are the 403 step-up challenges naming every scope the
// operation needs, base scopes included, so one re-authorization is
// enough. As for a 401: Bearer (but with require_dpop) and DPoP, the
// error in the challenge of the scheme the token came with (viaDPoP),
// both with the scopes, which step-up code that reads only a Bearer
// challenge then finds too.
func (g *Gateway) scopeChallenges(required []string, viaDPoP bool) (bearer, dpop string) {
	const insufficient = `error="insufficient_scope", `
	params := `scope="` + strings.Join(required, " ") + `", resource_metadata="` + g.metadataURL + `"`
	dpop = `algs="` + dpopAlgs + `", ` + params
	switch {
	case viaDPoP:
		dpop = insufficient + dpop
	default:
		params = insufficient + params
	}
	if !g.cfg.RequireDPoP {
		bearer = "Bearer " + params
	}
	return bearer, "DPoP " + dpop
}
