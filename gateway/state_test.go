package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// stateUpstream answers like a 2026-07-28 server using multi round-trip
// requests: a request without params.requestState gets an input-required
// result with requestState upState (as JSON, or as SSE after a progress
// notification when sse is set); a retry gets a result naming the state
// it carried.
func stateUpstream(upState string, sse bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Params struct {
				RequestState *string `json:"requestState"`
			} `json:"params"`
		}
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &req)
		result := `{"resultType":"input_required","inputRequests":{"confirm":{"method":"elicitation/create","params":{"mode":"form","message":"sure?","requestedSchema":{"type":"object","properties":{}}}}},"requestState":` + quote(upState) + `}`
		if req.Params.RequestState != nil {
			result = `{"resultType":"complete","content":[{"type":"text","text":"state ` + *req.Params.RequestState + `"}]}`
		}
		answer := `{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":` + result + `}`
		if sse {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}`+"\n\n")
			io.WriteString(w, "data: "+answer+"\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}
}

// roundTrip is a 2026-07-28 request of method (tools/call, prompts/get,
// resources/read) for target, with params.requestState when state is
// not nil, and its headers.
func roundTrip(method, target string, state *string) (string, map[string]string) {
	member := `"name":` + quote(target)
	if method == "resources/read" {
		member = `"uri":` + quote(target)
	}
	if method == "tools/call" {
		member += `,"arguments":{}`
	}
	if state != nil {
		member += `,"requestState":` + quote(*state) + `,"inputResponses":{"confirm":{"action":"accept","content":{}}}`
	}
	return `{"jsonrpc":"2.0","id":2,"method":"` + method + `","params":{` + member + `,` + meta2026 + `}}`, taskHeaders(method, target)
}

// resultState returns result.requestState of an answer (the last event
// of an event stream).
func resultState(t *testing.T, answer string) string {
	t.Helper()
	if strings.HasPrefix(answer, "data: ") {
		events := strings.Split(strings.TrimSpace(answer), "\n\n")
		answer = strings.TrimPrefix(events[len(events)-1], "data: ")
	}
	var msg struct {
		Result struct {
			RequestState string `json:"requestState"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(answer), &msg); err != nil || msg.Result.RequestState == "" {
		t.Fatalf("answer %q has no result.requestState (%v)", answer, err)
	}
	return msg.Result.RequestState
}

// TestRequestStateBound: the requestState of an input-required result
// (2026-07-28 multi round-trip requests) reaches the client bound to the
// caller and the request it answered; the upstream's own state reaches
// only a retry of the same request by the same principal. Another
// principal, another tool, prompt or resource, the upstream's state
// itself, a spelling only some servers read, or a state in an older
// revision is refused, and the upstream never sees it.
func TestRequestStateBound(t *testing.T) {
	const upState = "upstream-state-1"
	cfg := testConfig(t)
	files := claims()
	files["scope"] = "mcp tools:read prompts:read files:read"
	aliceFiles := mint(t, files)
	files["sub"] = "bob"
	bob := mint(t, files)

	for _, sse := range []bool{false, true} {
		for _, tc := range []struct{ method, target, other string }{
			{"tools/call", "read_a", "read_b"},
			{"prompts/get", "summary", "summary2"},
			{"resources/read", "file:///a", "file:///b"},
		} {
			name := tc.method
			if sse {
				name += "/sse"
			}
			t.Run(name, func(t *testing.T) {
				h := newHarness(t, cfg, stateUpstream(upState, sse))
				body, hdr := roundTrip(tc.method, tc.target, nil)
				resp := h.do(t, call{body: body, token: aliceFiles, headers: hdr})
				got := readBody(t, resp)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("first request = %d %s, want 200", resp.StatusCode, got)
				}
				state := resultState(t, got)
				if state == upState || strings.Contains(got, upState) {
					t.Fatalf("the client got the upstream's state %q: %s", upState, got)
				}

				raw := upState
				variant := strings.Replace(body, `"arguments":{}`, `"arguments":{},"request_state":`+quote(upState), 1)
				if tc.method != "tools/call" {
					variant = strings.Replace(body, `"params":{`, `"params":{"RequestState":`+quote(upState)+`,`, 1)
				}
				dashed := strings.Replace(body, `"params":{`, `"params":{"request-state":`+quote(upState)+`,`, 1)
				// A lenient server runs a notification of the method as
				// the request (no id, so no answer): with the upstream's
				// state, or with one the client was given.
				notification, _ := roundTrip(tc.method, tc.target, &raw)
				notification = strings.Replace(notification, `"id":2,`, ``, 1)
				given, _ := roundTrip(tc.method, tc.target, &state)
				given = strings.Replace(given, `"id":2,`, ``, 1)
				notification2025, _ := roundTrip(tc.method, tc.target, &raw)
				notification2025 = strings.Replace(strings.Replace(notification2025, `,`+meta2026, ``, 1), `"id":2,`, ``, 1)
				v2025 := map[string]string{"MCP-Protocol-Version": "2025-11-25"}
				refused := []struct {
					name, token, target string
					state               *string
					body                string
					headers             map[string]string
				}{
					{name: "another principal", token: bob, target: tc.target, state: &state},
					{name: "another target", token: aliceFiles, target: tc.other, state: &state},
					{name: "the upstream's state", token: aliceFiles, target: tc.target, state: &raw},
					{name: "a spelling some servers read", token: aliceFiles, target: tc.target, body: variant},
					{name: "request-state (json/v2 ignoring case)", token: aliceFiles, target: tc.target, body: dashed},
					{name: "a notification with the upstream's state", token: aliceFiles, target: tc.target, body: notification},
					{name: "a notification with the given state", token: aliceFiles, target: tc.target, body: given},
					{name: "a 2025-11-25 notification", token: aliceFiles, target: tc.target, body: notification2025, headers: v2025},
				}
				for _, r := range refused {
					before := len(h.up.requests())
					rb, rh := roundTrip(tc.method, r.target, r.state)
					if r.body != "" {
						rb = r.body
					}
					if r.headers != nil {
						rh = r.headers
					}
					resp := h.do(t, call{body: rb, token: r.token, headers: rh})
					got := readBody(t, resp)
					if resp.StatusCode != http.StatusBadRequest {
						t.Errorf("%s: retry = %d %s, want 400", r.name, resp.StatusCode, got)
						continue
					}
					if code, _, _ := rpcErr(t, got); code != codeInvalidParams {
						t.Errorf("%s: error code = %d, want %d", r.name, code, codeInvalidParams)
					}
					if n := len(h.up.requests()); n != before {
						t.Errorf("%s: the upstream got the retry: %s", r.name, h.up.requests()[n-1].Body)
					}
				}

				// In an older revision no client gets a state to send.
				old := strings.Replace(body, `,`+meta2026, ``, 1)
				old = strings.Replace(old, `"params":{`, `"params":{"requestState":`+quote(upState)+`,`, 1)
				before := len(h.up.requests())
				resp = h.do(t, call{body: old, token: aliceFiles, headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
				got = readBody(t, resp)
				if resp.StatusCode != http.StatusBadRequest || len(h.up.requests()) != before {
					t.Errorf("2025-11-25 request with requestState = %d %s, want 400, not forwarded", resp.StatusCode, got)
				}

				body, hdr = roundTrip(tc.method, tc.target, &state)
				resp = h.do(t, call{body: body, token: aliceFiles, headers: hdr})
				got = readBody(t, resp)
				if resp.StatusCode != http.StatusOK || !strings.Contains(got, "state "+upState) {
					t.Fatalf("retry = %d %s, want 200 for the upstream's state", resp.StatusCode, got)
				}
				reqs := h.up.requests()
				if up := string(reqs[len(reqs)-1].Body); !strings.Contains(up, `"requestState":`+quote(upState)) || strings.Contains(up, state) {
					t.Errorf("upstream got %s, want the upstream's state in place of the client's", up)
				}
			})
		}
	}
}
