package e2e

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestAudienceIsolation: a token issued for one resource is refused by the
// gateway of another, even on the same host and issuer.
func TestAudienceIsolation(t *testing.T) {
	e := setup(t)
	ctx := ctxTimeout(t, 30*time.Second)
	robot := harness.NewRobot(username, password, redirectURI)
	tok, err := e.authorize(ctx, robot, e.oauthConfig(scopeRead), e.legacy)
	if err != nil {
		t.Fatal(err)
	}
	resp, body, err := rawToolCall(ctx, http.DefaultClient, e.modern, tok.AccessToken, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token for %s at %s: status %d, want 401; body %s", e.legacy, e.modern, resp.StatusCode, body)
	}
	if ch, _ := challenge(resp.Header.Get("WWW-Authenticate")); ch["error"] != "invalid_token" {
		t.Errorf("token for another resource: WWW-Authenticate = %q, want error=\"invalid_token\"", resp.Header.Get("WWW-Authenticate"))
	}
}

// TestBaseScopeKeepsOutUsersWithoutAGrant: every user can get a token for
// any resource, without the scopes no group grants, so the gateway's base
// scope is what keeps out a user whose groups grant nothing there
// (README, `group`).
func TestBaseScopeKeepsOutUsersWithoutAGrant(t *testing.T) {
	l := startDocumented(t, `{
	mcp_auth {
		issuer https://mcp.example.com
		user alice {env.ALICE_HASH} {
			groups staff
		}
		user bob {env.ALICE_HASH} {
			groups guests
		}
		group staff {
			scopes https://mcp.example.com/mcp notes:read
		}
		group guests {
			scopes https://mcp.example.com/other notes:read
		}
		resource https://mcp.example.com/other {
			scopes notes:read
		}
	}
}

mcp.example.com {
	mcp_issuer
	mcp_gateway {
		resource https://mcp.example.com/mcp
		scope notes:read
		tool * notes:read
	}
	reverse_proxy 127.0.0.1:3001
}
`)
	ctx := ctxTimeout(t, 30*time.Second)
	md, err := harness.Discover(ctx, l.issuer)
	if err != nil {
		t.Fatal(err)
	}
	const redirect = "http://127.0.0.1:9/callback"
	status, reg, err := harness.Register(ctx, md, map[string]any{
		"client_name": "Base scope test", "redirect_uris": []string{redirect},
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code"}, "response_types": []string{"code"},
	})
	id, _ := reg["client_id"].(string)
	if err != nil || status != http.StatusCreated || id == "" {
		t.Fatalf("register: %d %v %v", status, reg, err)
	}
	resource := l.issuer + "/mcp"
	// Asked for no scope, the issuer grants what the user's groups allow
	// for the resource: for bob nothing, and still a token.
	for _, tt := range []struct {
		user  string
		scope string // granted
		code  int    // initialize
	}{
		{"alice", "notes:read", http.StatusOK},
		{"bob", "", http.StatusForbidden},
	} {
		cfg := md.Config(id, redirect)
		ar := harness.NewAuthRequest(cfg, resource)
		q, err := harness.NewRobot(tt.user, docPassword, redirect).Authorize(ctx, ar.URL)
		if err != nil || q.Get("code") == "" {
			t.Fatalf("authorize %s: %v %v", tt.user, q, err)
		}
		tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
		if err != nil {
			t.Fatalf("exchange for %s: %v", tt.user, err)
		}
		if got, _ := tok.Extra("scope").(string); got != tt.scope {
			t.Errorf("%s's token scope = %q, want %q", tt.user, got, tt.scope)
		}
		resp, body, err := harness.SessionPost(ctx, http.DefaultClient, resource, tok.AccessToken, "", probeInitialize)
		if err != nil {
			t.Fatal(err)
		}
		if hits := l.upstreamHits(); resp.StatusCode != tt.code || (tt.code != http.StatusOK) != (len(hits) == 0) {
			t.Errorf("%s's initialize = %d, upstream received %q; want %d (body %s)", tt.user, resp.StatusCode, hits, tt.code, body)
		}
	}
}

// TestSessionBinding: an MCP session created with alice's token cannot be
// used with bob's, though bob's token is valid for the same resource.
func TestSessionBinding(t *testing.T) {
	e := setup(t)
	ctx := ctxTimeout(t, 30*time.Second)
	alice, err := e.authorize(ctx, harness.NewRobot(username, password, redirectURI), e.oauthConfig(scopeRead), e.legacy)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.authorize(ctx, harness.NewRobot(otherUser, password, redirectURI), e.oauthConfig(scopeRead), e.legacy)
	if err != nil {
		t.Fatal(err)
	}

	resp, body := legacyPost(ctx, t, e, alice.AccessToken, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: status %d, session %q; body %s", resp.StatusCode, sid, body)
	}
	legacyPost(ctx, t, e, alice.AccessToken, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)

	const list = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	if resp, body := legacyPost(ctx, t, e, alice.AccessToken, sid, list); resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list in alice's session with alice's token: status %d; body %s", resp.StatusCode, body)
	}
	resp, body = legacyPost(ctx, t, e, bob.AccessToken, sid, list)
	t.Logf("tools/list in alice's session with bob's token: status %d", resp.StatusCode)
	if resp.StatusCode < 400 || strings.Contains(body, `"echo"`) {
		t.Errorf("tools/list in alice's session with bob's token: status %d, want a refusal; body %s", resp.StatusCode, body)
	}
}

// TestResumeOtherPrincipalsStreamRefused: stream resumption (a GET with
// Last-Event-ID) through the gateway in front of the official Go SDK's
// server with an event store. The gateway forwards a resumption only in
// a session that verifies for the caller; the SDK finds events in the
// session the request names, so bob, naming alice's event id in his own
// session, gets nothing of hers, and in hers is refused by the gateway,
// while alice resumes her own stream.
func TestResumeOtherPrincipalsStreamRefused(t *testing.T) {
	e := setupWith(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return mcpdemo.NewServer() },
		&mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)}))
	ctx := ctxTimeout(t, 30*time.Second)
	session := func(user string) (token, sid string) {
		t.Helper()
		tok, err := e.authorize(ctx, harness.NewRobot(user, password, redirectURI), e.oauthConfig(scopeRead), e.legacy)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := legacyPost(ctx, t, e, tok.AccessToken, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
		sid = resp.Header.Get("Mcp-Session-Id")
		if resp.StatusCode != http.StatusOK || sid == "" {
			t.Fatalf("%s's initialize: status %d, session %q; body %s", user, resp.StatusCode, sid, body)
		}
		legacyPost(ctx, t, e, tok.AccessToken, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		return tok.AccessToken, sid
	}
	alice, aliceSID := session(username)
	bob, bobSID := session(otherUser)
	const secret = "alice's private text"
	resp, body := legacyPost(ctx, t, e, alice, aliceSID, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`+secret+`"}}}`)
	// The first event's id (the SDK's priming event): resuming after it
	// replays the answer.
	var eventID string
	for line := range strings.Lines(body) {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "id:"); ok && eventID == "" {
			eventID = strings.TrimSpace(id)
		}
	}
	if resp.StatusCode != http.StatusOK || eventID == "" || !strings.Contains(body, secret) {
		t.Fatalf("alice's call: status %d, no event id in %q", resp.StatusCode, body)
	}
	resume := func(token, sid string) (int, string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, e.legacy, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
		req.Header.Set("Last-Event-ID", eventID)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The replay comes first; the stream then stays open until the
		// timeout.
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := resume(alice, aliceSID); code != http.StatusOK || !strings.Contains(body, secret) {
		t.Fatalf("alice resuming her stream: %d %q, want 200 with her answer replayed", code, body)
	}
	for what, sid := range map[string]string{"his own session": bobSID, "alice's session": aliceSID} {
		if code, body := resume(bob, sid); code == http.StatusOK || strings.Contains(body, secret) {
			t.Errorf("bob resuming alice's stream in %s: %d %q, want a refusal", what, code, body)
		}
	}
}

// legacyPost sends one 2025-11-25 message to the stateful resource.
func legacyPost(ctx context.Context, t *testing.T, e *env, token, session, body string) (*http.Response, string) {
	t.Helper()
	resp, b, err := harness.SessionPost(ctx, http.DefaultClient, e.legacy, token, session, body)
	if err != nil {
		t.Fatalf("POST %s: %v", e.legacy, err)
	}
	return resp, b
}

// TestRevokeConnectedApp revokes an app on the connected apps page (over
// HTTP with the user's session) and checks that both its refresh token and
// its unexpired access token stop working at once.
func TestRevokeConnectedApp(t *testing.T) {
	e := setup(t)
	ctx := ctxTimeout(t, 30*time.Second)
	robot := harness.NewRobot(username, password, redirectURI)
	tok, err := e.authorize(ctx, robot, e.oauthConfig(scopeRead, "offline_access"), e.modern)
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	if resp, body, err := rawToolCall(ctx, http.DefaultClient, e.modern, tok.AccessToken, "echo"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("call before revocation: %v, %v; body %s", resp, err, body)
	}

	apps, err := robot.Get(ctx, e.issuer+"/apps")
	if err != nil {
		t.Fatal(err)
	}
	var form *harness.Form
	for i := range apps.Forms {
		if apps.Forms[i].Hidden.Get("client_id") == clientID {
			form = &apps.Forms[i]
		}
	}
	if form == nil {
		t.Fatalf("apps page has no form for %s: %.300s", clientID, apps.Text())
	}
	resp, err := robot.Submit(ctx, apps, form, url.Values{"action": {"revoke"}})
	if err != nil {
		t.Fatal(err)
	}
	after, err := harness.ReadPage(resp)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != http.StatusOK || strings.Contains(after.Text(), clientName) {
		t.Fatalf("after revoking: status %d, page %.300s", after.Status, after.Text())
	}

	resp, body, err := rawToolCall(ctx, http.DefaultClient, e.modern, tok.AccessToken, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("access token of a revoked app: status %d, want 401; body %s", resp.StatusCode, body)
	}
	tr, err := harness.Refresh(ctx, e.md, clientID, tok.RefreshToken, e.modern)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
		t.Errorf("refresh token of a revoked app: %d %q, want 400 invalid_grant", tr.Status, tr.Error)
	}
}

// TestSessionClientThroughGateway: a Go SDK client in a session works
// through the gateway as without it: its standalone GET stream, opened
// with the session id, carries the server's notification, its calls reach
// the server, and so does the DELETE that ends the session. Without a
// session a GET is answered 405 (Allow: POST, which the SDKs read as "no
// stream") and a notifications/cancelled 400, and neither reaches the
// server.
func TestSessionClientThroughGateway(t *testing.T) {
	srv := mcpdemo.NewServer()
	e := setupWith(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	ctx := ctxTimeout(t, 60*time.Second)
	tok, err := e.authorize(ctx, harness.NewRobot(username, password, redirectURI), e.oauthConfig(scopeRead), e.legacy)
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 1)
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(tok)}}
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.legacy, HTTPClient: hc},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	if cs.ID() == "" {
		t.Fatal("client session has no session id")
	}
	// The client opens its GET stream after the handshake; a tool added
	// once it is open is announced on it alone.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got, _ := e.seen.counts(); got[http.MethodGet] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's GET stream never reached the server")
		}
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "echo_late", Description: "Echoes its input."},
		func(context.Context, *mcp.CallToolRequest, mcpdemo.EchoIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("notifications/tools/list_changed did not arrive on the GET stream")
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "in session"}})
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "in session" {
		t.Fatalf("echo in the session = %v, %v; want its text", res, err)
	}
	if err := cs.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	before, _ := e.seen.counts()
	if before[http.MethodDelete] != 1 {
		t.Errorf("DELETEs at the server = %d, want the client's one", before[http.MethodDelete])
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET without a session = %d, Allow %q; want 405, POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp, body := legacyPost(ctx, t, e, tok.AccessToken, "", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`)
	if resp.StatusCode != http.StatusAccepted || body != "" {
		t.Errorf("notifications/cancelled without a session = %d %q, want 202 and no body (dropped)", resp.StatusCode, body)
	}
	if after, _ := e.seen.counts(); !maps.Equal(after, before) {
		t.Errorf("requests at the server = %v, want %v: the refused ones reached it", after, before)
	}
}

// TestStatelessClientCancelsThroughGateway: behind an upstream without
// sessions (the Go SDK's stateless mode), a client that gives up on a call
// sends notifications/cancelled without a session, which the gateway
// refuses (TestSessionlessRefused). The refusal is a JSON-RPC error the
// Go SDK client takes as a rejected message: its connection carries on,
// and its next call succeeds. The cancel never reaches the server.
func TestStatelessClientCancelsThroughGateway(t *testing.T) {
	// echo as the demo's, but "slow" waits until its caller gives up.
	srv := mcp.NewServer(&mcp.Implementation{Name: "stateless", Version: "1.0.0"}, nil)
	started := make(chan struct{}, 1)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "Echoes its input."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in mcpdemo.EchoIn) (*mcp.CallToolResult, any, error) {
			if in.Text == "slow" {
				started <- struct{}{}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	var cancels atomic.Int32
	up := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true})
	e := setupWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte("notifications/cancelled")) {
			cancels.Add(1)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		up.ServeHTTP(w, r)
	}))
	ctx := ctxTimeout(t, 60*time.Second)
	tok, err := e.authorize(ctx, harness.NewRobot(username, password, redirectURI), e.oauthConfig(scopeRead), e.legacy)
	if err != nil {
		t.Fatal(err)
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, nil)
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(tok)}}
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.legacy, HTTPClient: hc},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if cs.ID() != "" {
		t.Fatalf("client session id %q, want none from a stateless server", cs.ID())
	}
	callCtx, cancel := context.WithCancel(ctx)
	go func() {
		<-started
		cancel()
	}()
	if _, err := cs.CallTool(callCtx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "slow"}}); err == nil {
		t.Fatal("the cancelled call succeeded")
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after the cancel"}})
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "after the cancel" {
		t.Fatalf("echo after a refused cancel = %v, %v; want its text", res, err)
	}
	if n := cancels.Load(); n != 0 {
		t.Errorf("notifications/cancelled at the server: %d, want none", n)
	}
}

// TestInFlightPerPrincipal: one token could hold as many GET event
// streams (and calls in flight) as it opened, each a connection to the
// upstream for as long as the client kept it. Through Caddy, alice's
// client may hold 75 open GET streams (the default
// max_in_flight_per_client): its next is refused, while alice's other
// client (registered with DCR) opens the remaining 25 of her 100 (the
// default max_in_flight); then her next GET and her next tool call,
// through either client, are refused 429 with Retry-After and a JSON-RPC
// error body, and reach no server, while bob, another user, is not
// refused; once one of her streams ends, she may open another.
func TestInFlightPerPrincipal(t *testing.T) {
	const (
		max       = 100 // gateway.DefaultMaxInFlight
		perClient = 75  // gateway.DefaultMaxInFlightPerClient(max)
	)
	var gets atomic.Int32
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			gets.Add(1)
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		w.Header().Set("Mcp-Session-Id", "upstream-session")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"held","version":"1"}}}`)
	})
	e := setupWith(t, up)
	ctx := ctxTimeout(t, 60*time.Second)
	tokenFor := func(user string, cfg *oauth2.Config) string {
		tok, err := e.authorize(ctx, harness.NewRobot(user, password, redirectURI), cfg, e.legacy)
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	token := func(user string) string { return tokenFor(user, e.oauthConfig(scopeRead)) }
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * max}}
	t.Cleanup(hc.CloseIdleConnections)
	send := func(ctx context.Context, method, token, session, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, e.legacy, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`
	session := func(token string) string {
		resp := send(ctx, http.MethodPost, token, "", initialize)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Mcp-Session-Id") == "" {
			t.Fatalf("initialize = %d, session %q; want 200 with a session", resp.StatusCode, resp.Header.Get("Mcp-Session-Id"))
		}
		return resp.Header.Get("Mcp-Session-Id")
	}
	alice := token(username)
	aliceSession := session(alice)
	cancels := make([]context.CancelFunc, 0, max)
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	open := func(token, session string) (*http.Response, context.CancelFunc) {
		sctx, cancel := context.WithCancel(ctx)
		resp := send(sctx, http.MethodGet, token, session, "")
		return resp, cancel
	}
	openAll := func(who, token, session string, n int) {
		for i := range n {
			resp, cancel := open(token, session)
			cancels = append(cancels, cancel)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s GET stream %d = %d, want 200", who, i+1, resp.StatusCode)
			}
		}
	}
	refused := func(what string, resp *http.Response, why string) {
		t.Helper()
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(b), `"code":-32000`) || !strings.Contains(string(b), why) {
			t.Errorf("%s past the bound = %d (Retry-After %q) %s, want 429 with Retry-After and a JSON-RPC error: %s",
				what, resp.StatusCode, resp.Header.Get("Retry-After"), b, why)
		}
	}
	const call = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`
	openAll("alice's", alice, aliceSession, perClient)
	resp, cancel := open(alice, aliceSession)
	refused("alice's GET through her client", resp, "too many requests in flight for this client of the caller (at most 75)")
	cancel()

	status, reg, err := harness.Register(ctx, e.md, map[string]any{
		"client_name": "Second client", "redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none", "application_type": "native",
	})
	second, _ := reg["client_id"].(string)
	if err != nil || status != http.StatusCreated || second == "" {
		t.Fatalf("Register = %d %v, %v; want 201 with a client_id", status, reg, err)
	}
	aliceOther := tokenFor(username, e.md.Config(second, redirectURI, scopeRead))
	otherSession := session(aliceOther)
	openAll("alice's other client's", aliceOther, otherSession, max-perClient)
	if n := gets.Load(); n != max {
		t.Fatalf("GET streams at the server = %d, want %d", n, max)
	}
	for _, c := range []struct{ who, token, session string }{{"her client", alice, aliceSession}, {"her other client", aliceOther, otherSession}} {
		resp, cancel := open(c.token, c.session)
		refused("alice's GET through "+c.who, resp, "too many requests in flight for this caller (at most 100)")
		cancel()
		refused("alice's tool call through "+c.who, send(ctx, http.MethodPost, c.token, c.session, call), "too many requests in flight")
	}
	if n := gets.Load(); n != max {
		t.Errorf("GET streams at the server = %d, want %d: a refused one reached it", n, max)
	}

	bob := token(otherUser)
	resp, cancel = open(bob, session(bob))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("bob's GET stream while alice is at the bound = %d, want 200", resp.StatusCode)
	}
	cancel()
	resp.Body.Close()

	// One of alice's streams ends: she may open another (the gateway
	// counts it out once Caddy's handler returns).
	cancels[0]()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, cancel := open(alice, aliceSession)
		cancels = append(cancels, cancel)
		if resp.StatusCode == http.StatusOK {
			break
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("alice's GET after one of hers ended = %d, want 200", resp.StatusCode)
		}
	}
}
