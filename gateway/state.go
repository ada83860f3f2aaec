package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Request state binding (2026-07-28, multi round-trip requests).
//
// A tools/call, prompts/get or resources/read may be answered with an
// input-required result whose result.requestState the client echoes,
// unread, in params.requestState of its retry. The specification leaves
// its integrity to the server, which should bind it to the authenticated
// principal; behind the gateway the server never sees the token, so the
// gateway binds it, as it binds task ids (task.go). The client only ever
// sees
//
//	base64url(state || HMAC-SHA256(SessionKey, "mcp-state-v1", method, target, resource, iss, principal type, sub, client_id, act.sub, state))
//
// where target is the tool or prompt name or the resource URI of the
// request the state answered. A retry's state is verified for the
// current token's principal and the retry's own method and target, and
// replaced by the upstream's; one that does not verify is refused and
// never forwarded. So a state taken from another caller, or from another
// tool, is useless, and an upstream that keeps no principal in its state
// (it cannot know it) still gets a state only from the caller it gave it
// to.
//
// Before 2026-07-28 no client gets a state (servers fulfil the input
// themselves over the session), so a request there that carries one is
// refused.

const maxUpstreamState = 256 << 10 // bytes of the upstream's state

// stateLabel is the MAC label of a state answering method on target:
// length-prefixed with the rest of the binding (macState.sum), so
// neither can run into the other.
func stateLabel(method, target string) string {
	return "mcp-state-v1\x00" + method + "\x00" + target
}

// roundTripRequest reports whether a method may be answered with an
// input-required result (and so be retried with a requestState).
func roundTripRequest(method string) bool {
	switch method {
	case "tools/call", "prompts/get", "resources/read":
		return true
	}
	return false
}

// roundTripTarget is what a round-trip request names: its tool or
// prompt, or its resource.
func roundTripTarget(m *mcpparse.Message) string {
	if m.Method == "resources/read" {
		return m.URI
	}
	return m.Name
}

// rewritesStates reports whether the answer may carry a requestState to
// wrap: a 2026-07-28 round-trip request.
func (x *exchange) rewritesStates() bool {
	return x.rev.bindsTaskIDs() && len(x.msgs) == 1 && !x.batch &&
		x.msgs[0].Kind == mcpparse.KindRequest && roundTripRequest(x.msgs[0].Method)
}

// stateMember finds params.requestState of a request, as every upstream
// may read it: a member that reads as requestState to a decoder that
// ignores case, underscores or dashes (request_state, RequestState, and
// request-state to Go's json/v2 matching names case-insensitively) but is
// not spelt so is an error, since the gateway would not have checked what
// such an upstream reads.
func stateMember(raw []byte) (found bool, err error) {
	if !maySpell(raw, "requeststate", looseSeps) {
		return false, nil
	}
	var msg struct {
		Params map[string]json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return false, errors.New("params is not an object")
	}
	_, found, err = exactMember(msg.Params, "requestState")
	if err != nil {
		return false, fmt.Errorf("params %w by some servers; spell it requestState", err)
	}
	return found, nil
}

// bindRequestState checks the requestState of an authorized request and
// replaces a verified one with the upstream's, in the body.
func (g *Gateway) bindRequestState(x *exchange) *refusal {
	for i := range x.msgs {
		m := &x.msgs[i]
		// A notification of a round-trip method is read too: it is
		// decided as the request, since a lenient server runs it as one.
		if m.Kind == mcpparse.KindResponse || !roundTripRequest(m.Method) {
			continue
		}
		found, err := stateMember(m.Raw)
		if err != nil {
			return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID, message: "invalid params: " + err.Error()}
		}
		if !found {
			continue
		}
		if !x.rev.bindsTaskIDs() {
			return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID,
				message: "params.requestState is part of protocol version " + rev20260728.String() + " only"}
		}
		if m.Kind == mcpparse.KindNotification {
			// It gets no answer: no client is given a state for it.
			return &refusal{status: http.StatusBadRequest, code: codeInvalidParams,
				message: "invalid params: a notification carries no params.requestState"}
		}
		return g.unwrapRequestState(x)
	}
	return nil
}

// unwrapRequestState verifies the requestState of x's one request and
// readies the body the upstream gets.
func (g *Gateway) unwrapRequestState(x *exchange) *refusal {
	m := x.msgs[0]
	invalid := &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID,
		message: "invalid params: params.requestState was not issued for this caller and request"}
	span, found, err := mcpparse.LocateString(x.body, "params", "requestState")
	switch {
	case err != nil || !found:
		return invalid
	case span.Value == "":
		return nil // carries nothing to bind
	}
	up, ok := g.unwrapBound(stateLabel(m.Method, roundTripTarget(&m)), x.p, span.Value, maxUpstreamState)
	if !ok {
		return invalid
	}
	body, err := mcpparse.ReplaceString(x.body, span, up)
	if err == nil {
		err = g.redecide(x, m, body, first(x.r.Header[mcpparse.HeaderName]), func(n *mcpparse.Message) bool {
			return n.Name == m.Name && n.URI == m.URI && n.HasName == m.HasName && n.HasURI == m.HasURI
		})
	}
	if err != nil {
		g.log.Warn("request state not rewritten", zap.Error(err))
		return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, message: "the request state could not be rewritten", id: m.ID}
	}
	return nil
}

// wrapRequestState wraps result.requestState of the request's own answer
// (the first response with its id: ids collide across callers, so a
// later one, or one with another id, is not this caller's to get a
// usable state from).
func (g *Gateway) wrapRequestState(x *exchange, m *mcpparse.Message, msg []byte) ([]byte, error) {
	req := &x.msgs[0]
	if m.Kind != mcpparse.KindResponse || !mcpparse.SameID(m.ID, req.ID) || x.stateAnswered {
		return msg, nil
	}
	x.stateAnswered = true
	if !mayName(msg, "requeststate") {
		return msg, nil
	}
	span, found, err := mcpparse.LocateString(msg, "result", "requestState")
	switch {
	case err != nil:
		return nil, fmt.Errorf("request state: %w", err)
	case !found || span.Value == "":
		return msg, nil
	case len(span.Value) > maxUpstreamState:
		return nil, errors.New("upstream request state is too long")
	}
	return mcpparse.ReplaceString(msg, span, g.wrapBound(stateLabel(req.Method, roundTripTarget(req)), x.p, span.Value))
}
