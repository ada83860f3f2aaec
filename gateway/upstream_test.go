package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestUpstreamRequestIsolated: the request next gets is the gateway's own
// copy. next may change its header values and URL in place (Caddy's
// request_header replace and rewrite handlers do) without touching the
// client's request, which Caddy's logs and error routes still read; the
// body next reads, and GetBody, are the authorized bytes.
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
		for k, vv := range out.Header {
			for i := range vv {
				vv[i] = "changed"
			}
			out.Header[k] = append(vv, "added")
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
	if diff := cmp.Diff(before, r.Header); diff != "" {
		t.Errorf("client request header changed (-before +after):\n%s", diff)
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
				upstream = out.Header
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
