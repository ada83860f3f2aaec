package interop

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestListOnAnotherRequestFiltered: the official TypeScript SDK's server
// transport sends an answer to the POST that carried its id last, so a
// caller that sends a tools/call with the id of its pending
// resources/list gets the resources list as the call's answer
// (test/node/listserver.mjs makes the timing certain). Through the
// gateway (pinning on, as by default, and resource rules) that answer is
// filtered as the list it is: before, the caller, whose scopes the
// resource rules refuse test:// resources, read their URIs there. JSON
// answers and event streams alike.
func TestListOnAnotherRequestFiltered(t *testing.T) {
	nt := requireNode(t)
	for _, mode := range []string{"json", "events"} {
		t.Run(mode, func(t *testing.T) {
			port := harness.FreePort(t)
			ctx := context.Background()
			args := []string{filepath.Join(nt.dir, "listserver.mjs"), "--port", strconv.Itoa(port)}
			if mode == "json" {
				args = append(args, "--json")
			}
			lines := nt.start(t, args...)
			waitLine(t, lines, "listening")
			s := startStack(t, "127.0.0.1:"+strconv.Itoa(port))
			md, err := harness.Discover(ctx, s.Issuer)
			if err != nil {
				t.Fatal(err)
			}
			cc := clientcredentials.Config{ClientID: ccClientID, ClientSecret: ccClientSecret, TokenURL: md.TokenEndpoint,
				Scopes: []string{baseScope}, EndpointParams: url.Values{"resource": {s.Resource}}}
			tok, err := cc.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			token := tok.AccessToken
			client := &http.Client{Timeout: 10 * time.Second}
			resp, body, err := harness.SessionPost(ctx, client, s.Resource, token, "",
				`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("initialize = %v %s, %v", resp, body, err)
			}
			session := resp.Header.Get("Mcp-Session-Id")
			for _, msg := range []string{`{"jsonrpc":"2.0","method":"notifications/initialized"}`, `{"jsonrpc":"2.0","id":"t","method":"tools/list"}`} {
				if resp, body, err := harness.SessionPost(ctx, client, s.Resource, token, session, msg); err != nil || resp.StatusCode >= 300 {
					t.Fatalf("%s = %v %s, %v", msg, resp, body, err)
				}
			}
			listCtx, stopList := context.WithTimeout(ctx, 8*time.Second)
			defer stopList()
			go harness.SessionPost(listCtx, client, s.Resource, token, session, `{"jsonrpc":"2.0","id":1,"method":"resources/list"}`)
			// The call goes once the list is pending at the upstream.
			waitLine(t, lines, "listing")
			resp, body, err = harness.SessionPost(ctx, client, s.Resource, token, session,
				`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+permitTool+`","arguments":{}}}`)
			if err != nil {
				t.Fatalf("tools/call: %v", err)
			}
			if !strings.Contains(body, `"resources"`) {
				t.Fatalf("tools/call = %d %s; want the resources list as its answer (the SDK's id mapping)", resp.StatusCode, body)
			}
			if resp.StatusCode != http.StatusOK || strings.Contains(body, "hidden-plan") {
				t.Errorf("tools/call answered with the resources list = %d %s, want 200 with test://files/hidden-plan filtered out", resp.StatusCode, body)
			}
		})
	}
}

// waitLine waits for listserver.mjs to print want.
func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	select {
	case line := <-lines:
		if line != want {
			t.Fatalf("the server printed %q, want %q", line, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the server did not print %q", want)
	}
}
