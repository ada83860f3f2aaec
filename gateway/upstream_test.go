package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestUpstreamRequestIsolated: the request next gets is the gateway's own
// shallow copy: next may change its URL in place (Caddy's rewrite handlers
// do) without touching the client's request; its header is the client's,
// edited in place while next runs (Caddy's reverse_proxy copies it before
// changing it) and put back as it came afterwards, which Caddy's logs and
// error routes read, but for the credentials
// (TestInterceptRoutesGetNoCredentials); the body next reads, and
// GetBody, are the authorized bytes.
func TestUpstreamRequestIsolated(t *testing.T) {
	g := newGateway(t, testConfig(t))
	body := toolCall("read_a")
	r := httptest.NewRequest(http.MethodPost, "/mcp?x=1", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
	r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	r.Header["X-Custom"] = []string{"a", "b"}
	before := r.Header.Clone()
	beforeURL := *r.URL

	var got []byte
	var again []byte
	var upstream http.Header
	g.Serve(httptest.NewRecorder(), r, NextHandler(http.HandlerFunc(func(w http.ResponseWriter, out *http.Request) {
		upstream = out.Header.Clone()
		var err error
		if got, err = io.ReadAll(out.Body); err != nil {
			t.Errorf("reading the upstream body: %v", err)
		}
		rc, err := out.GetBody()
		if err != nil {
			t.Fatalf("GetBody() error = %v", err)
		}
		again, _ = io.ReadAll(rc)
		if r.Header.Get("Authorization") != "" {
			t.Error("the client's header still carries Authorization while next runs")
		}
		out.URL.Path = "/rewritten"
		out.URL.RawQuery = ""
		w.WriteHeader(http.StatusOK)
	})))

	if string(got) != body || string(again) != body {
		t.Errorf("upstream body = %q, GetBody = %q, want %q", got, again, body)
	}
	if upstream.Get("Authorization") != "" || upstream.Get("X-Custom") != "a" || upstream.Get("Content-Type") != "application/json" {
		t.Errorf("upstream header = %v, want the client's without Authorization", upstream)
	}
	before.Del("Authorization")
	if diff := cmp.Diff(before, r.Header); diff != "" {
		t.Errorf("client request header changed (-want +got):\n%s", diff)
	}
	if *r.URL != beforeURL {
		t.Errorf("client request URL = %v, want %v", r.URL, &beforeURL)
	}
}

// TestUpstreamHeaderSpelling: a header the gateway removes is removed
// whatever the spelling of its key in the map (another handler may have
// set one without canonicalizing it).
func TestUpstreamHeaderSpelling(t *testing.T) {
	g := newGateway(t, testConfig(t))
	token := mint(t, claims())
	for _, key := range []string{"authorization", "AUTHORIZATION", "cookie", "x-mcp-subject", "mcp-session-id", "trailer"} {
		t.Run(key, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader([]byte(toolCall("read_a"))))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer "+token)
			r.Header[key] = []string{"from-the-client"}
			var upstream http.Header
			g.Serve(httptest.NewRecorder(), r, NextHandler(http.HandlerFunc(func(w http.ResponseWriter, out *http.Request) {
				upstream = out.Header.Clone()
			})))
			if upstream == nil {
				t.Fatal("request not forwarded")
			}
			for k, vv := range upstream {
				if strings.EqualFold(k, key) || strings.EqualFold(k, "Authorization") {
					t.Errorf("upstream header %s = %q, want none", k, vv)
				}
			}
		})
	}
}

// TestConnectionHeader: a proxy removes every header the Connection
// header names, so a client could strip headers the gateway checked or
// set (X-MCP-Subject, Mcp-Session-Id, MCP-Protocol-Version). Such a
// request is refused; the usual connection options still pass.
func TestConnectionHeader(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, nil)
	token := mint(t, claims())
	tests := []struct {
		value  string
		status int
	}{
		{"keep-alive", 200},
		{"close", 200},
		{"TE", 200},
		{"X-Mcp-Subject", 400},
		{"keep-alive, X-MCP-Scope", 400},
		{"Mcp-Session-Id", 400},
		{"MCP-Protocol-Version", 400},
		{"Content-Type", 400},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: toolCall("read_a"), token: token, headers: map[string]string{"Connection": tt.value}})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("Connection: %s: status = %d, want %d (%s)", tt.value, resp.StatusCode, tt.status, body)
			}
			got := h.up.requests()
			if tt.status != 200 {
				if len(got) != before {
					t.Fatalf("Connection: %s reached the upstream", tt.value)
				}
				return
			}
			if v := got[len(got)-1].Header.Get("X-Mcp-Subject"); v != "alice" {
				t.Errorf("upstream X-Mcp-Subject = %q, want alice", v)
			}
		})
	}
}

// TestUnderscoreHeaders: CGI-style servers (FastCGI, PHP, WSGI) read
// "X_Mcp_Subject" and "X-Mcp-Subject" as the same variable, so a client
// copy spelled with underscores would stand in for a header the gateway
// asserts or binds. No header with an underscore in its name reaches the
// upstream.
func TestUnderscoreHeaders(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, nil)
	resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims()), headers: map[string]string{
		"X_Mcp_Subject":  "mallory",
		"Mcp_Session_Id": "someone-elses-upstream-session",
		"Mcp_Name":       "delete_all",
	}})
	readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	got := h.up.requests()
	for k, v := range got[len(got)-1].Header {
		if strings.Contains(k, "_") {
			t.Errorf("upstream header %s = %q, want no header with an underscore", k, v)
		}
	}
}

// TestRequestTrailers: request trailers are not part of what was
// authorized; next never sees them (Caddy's reverse_proxy forwards them).
func TestRequestTrailers(t *testing.T) {
	g := newGateway(t, testConfig(t))
	body := toolCall("read_a")
	r := httptest.NewRequest(http.MethodPost, "/mcp", io.NopCloser(strings.NewReader(body)))
	r.ContentLength = -1
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
	r.Header.Set("Trailer", "Mcp-Session-Id")
	r.Trailer = http.Header{"Mcp-Session-Id": {"someone-elses-upstream-session"}, "X-Mcp-Subject": {"mallory"}}
	var seen *http.Request
	w := httptest.NewRecorder()
	g.Serve(w, r, NextHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Clone(r.Context()) // the header is the client's, put back once next is done
	})))
	if seen == nil {
		t.Fatalf("Serve did not forward (status %d, %s)", w.Code, w.Body)
	}
	if len(seen.Trailer) != 0 || len(seen.Header.Values("Trailer")) != 0 {
		t.Errorf("next saw trailers %v, Trailer header %q, want none", seen.Trailer, seen.Header.Values("Trailer"))
	}
}

// TestClientHeaderRestored: whatever the gateway removed, replaced or
// added for next (credentials, the client's stand-ins for identity
// headers in any spelling, the session id) is back as the client sent it
// once Serve returns, also when next fails, but for the credentials
// (Authorization, Cookie, DPoP), which Caddy's error routes or an
// intercept's routes would get; while next runs, it sees the gateway's
// values only.
func TestClientHeaderRestored(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	g := newGateway(t, cfg)
	token := mint(t, claims())
	p, aerr := g.authenticate(t.Context(), nil, token, g.now())
	if aerr != nil {
		t.Fatal(aerr)
	}
	wrapped, err := g.wrapSession(p, "upstream-session")
	if err != nil {
		t.Fatal(err)
	}
	for _, failing := range []bool{false, true} {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_a")))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		r.Header.Set("Mcp-Session-Id", wrapped)
		r.Header.Set("Cookie", "login=secret")
		r.Header.Set("X-Mcp-Subject", "mallory")
		r.Header["x-mcp-client"] = []string{"mallory-client"}
		r.Header.Set("X-Mcp-Principal-Type", "user")
		before := r.Header.Clone()
		var during http.Header
		g.Serve(httptest.NewRecorder(), r, NextFunc(func(w http.ResponseWriter, out *http.Request) error {
			during = out.Header.Clone()
			if failing {
				return errors.New("upstream unreachable")
			}
			return nil
		}))
		want := http.Header{
			"Content-Type":         {"application/json"},
			"Mcp-Protocol-Version": {"2025-11-25"},
			"Mcp-Session-Id":       {"upstream-session"},
			"X-Mcp-Subject":        {"alice"},
			"X-Mcp-Client":         {"client-1"},
			"X-Mcp-Scope":          {"mcp tools:read"},
			"X-Mcp-Principal-Type": {"user"},
		}
		if diff := cmp.Diff(want, during); diff != "" {
			t.Errorf("failing=%v: header next saw (-want +got):\n%s", failing, diff)
		}
		// Caddy's error routes, or an intercept's routes, get it next:
		// not the credentials (TestErrorRoutesGetNoCredentials,
		// TestInterceptRoutesGetNoCredentials).
		before.Del("Authorization")
		before.Del("Cookie")
		if diff := cmp.Diff(before, r.Header); diff != "" {
			t.Errorf("failing=%v: client header after Serve (-want +got):\n%s", failing, diff)
		}
	}
}

// TestUpgradeAnyValue: a request asking for a protocol upgrade in any of
// its Upgrade values is refused, an empty first one included.
func TestUpgradeAnyValue(t *testing.T) {
	g := newGateway(t, testConfig(t))
	token := mint(t, claims())
	for _, values := range [][]string{{"websocket"}, {"", "websocket"}, {"h2c", ""}} {
		r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		r.Header["Upgrade"] = values
		forwarded := false
		w := httptest.NewRecorder()
		g.Serve(w, r, NextFunc(func(http.ResponseWriter, *http.Request) error { forwarded = true; return nil }))
		if w.Code != http.StatusBadRequest || forwarded {
			t.Errorf("Upgrade %q: status %d, forwarded %v; want 400, not forwarded", values, w.Code, forwarded)
		}
	}
}
