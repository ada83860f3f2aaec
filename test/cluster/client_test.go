package cluster

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestOneClientAlternately: one stock MCP client, the Go SDK's with its
// own OAuth handler (discovery from the 401, PKCE, resource indicator,
// RFC 9207 iss, code exchange and refresh by golang.org/x/oauth2), with
// the login pages driven by the robot, all through the balancer, so that
// every request goes to the other instance than the one before: login,
// an MCP session with tool calls against the stateful demo server, a
// refresh within the session, a revocation. Nothing fails until the
// revocation; after it both instances refuse the session's calls.
func TestOneClientAlternately(t *testing.T) {
	c := shared.get(t)
	ctx := ctxTimeout(t, 60*time.Second)
	first := c.lb.served()

	r := robot(nil)
	var logins atomic.Int32
	var loginOff atomic.Bool
	tokens := &clientTokens{}
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		PreregisteredClient: &oauthex.ClientCredentials{ClientID: clientID, Issuer: c.issuer},
		RedirectURL:         redirectURI,
		RequestRefreshToken: true,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			if loginOff.Load() {
				return nil, errLoginOff
			}
			logins.Add(1)
			q, err := r.Authorize(ctx, args.URL)
			if err != nil {
				return nil, err
			}
			return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
		},
		NewTokenSource: tokens.start,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "cluster", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: c.legacy, OAuthHandler: h},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatalf("connect to %s through the balancer: %v", c.legacy, err)
	}
	defer cs.Close()
	sid := cs.ID()
	if logins.Load() != 1 || sid == "" {
		t.Fatalf("connected after %d logins, session %q; want 1 login and a session", logins.Load(), sid)
	}

	calls := func(what string, n int) {
		t.Helper()
		for i := range n {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": what}})
			if err != nil || res.IsError {
				t.Fatalf("%s: tools/call %d = %+v, %v", what, i, res, err)
			}
		}
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Fatalf("%s: tools/list: %v", what, err)
		}
	}
	calls("after login", 4)
	loginOff.Store(true) // from here on the client has to do with its tokens

	// The session is bound to alice on both instances: her token passes
	// at each, bob's valid token and a tampered session id are refused at
	// each.
	bob := c.grantFor(ctx, t, harness.NewRobot(otherUser, password, redirectURI), c.a, c.legacy)
	// One character in the middle changed (an id ending in what the
	// replacement would be was once "tampered" into itself).
	mid := len(sid) / 2
	tampered := sid[:mid] + map[bool]string{true: "B", false: "A"}[sid[mid] == 'A'] + sid[mid+1:]
	for _, in := range []*instance{c.a, c.b} {
		for _, tc := range []struct {
			what, token, session string
			pass                 bool
		}{
			{"alice's token", tokens.current().AccessToken, sid, true},
			{"bob's token", bob.AccessToken, sid, false},
			{"a tampered session id", tokens.current().AccessToken, tampered, false},
		} {
			resp, body, err := harness.SessionPost(ctx, in.client, c.legacy, tc.token, tc.session, `{"jsonrpc":"2.0","id":99,"method":"tools/list"}`)
			if err != nil {
				t.Fatal(err)
			}
			if passed := resp.StatusCode == http.StatusOK && strings.Contains(body, `"echo"`); passed != tc.pass {
				t.Errorf("tools/list in alice's session with %s at %s = %d %.200s; want passed %v", tc.what, in.name, resp.StatusCode, body, tc.pass)
			}
		}
	}

	// Refresh: the access token expires (as far as the client knows);
	// golang.org/x/oauth2 redeems the refresh token on the next call.
	before := tokens.current()
	tokens.expire()
	calls("after the refresh", 4)
	after := tokens.current()
	if after.AccessToken == before.AccessToken || after.RefreshToken == "" || after.RefreshToken == before.RefreshToken {
		t.Fatalf("the client did not refresh: the access or refresh token is unchanged")
	}

	// Revocation (RFC 7009) of the refresh token: its whole grant.
	lb := &instance{name: "the balancer", client: http.DefaultClient}
	if status, err := c.revoke(ctx, lb, after.RefreshToken); status != http.StatusOK {
		t.Fatalf("revoke through the balancer = %d, %v", status, err)
	}
	revoked := c.lb.served()
	time.Sleep(revocationBound) // the revocation reached the other instance
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "revoked"}}); err == nil {
		t.Error("tools/call after the revocation succeeded")
	}
	for _, in := range []*instance{c.a, c.b} {
		resp, body, err := harness.SessionPost(ctx, in.client, c.legacy, after.AccessToken, sid, `{"jsonrpc":"2.0","id":98,"method":"tools/call","params":{"name":"echo","arguments":{"text":"revoked"}}}`)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("tools/call in the session at %s after the revocation = %v %.200s, %v; want 401", in.name, resp, body, err)
		}
	}

	trail := c.lb.since(first)
	perInstance := map[string]int{}
	mcpAt := map[string]int{}
	refused := 0
	for i, e := range trail {
		perInstance[e.backend]++
		if i > 0 && e.backend == trail[i-1].backend {
			t.Errorf("requests %d and %d (%s %s, %s %s) both went to %s", i-1, i, trail[i-1].method, trail[i-1].path, e.method, e.path, e.backend)
		}
		isMCP := e.path == "/mcp"
		switch {
		case first+i >= revoked:
			if isMCP && e.status != http.StatusUnauthorized {
				t.Errorf("%s %s at %s after the revocation = %d, want 401", e.method, e.path, e.backend, e.status)
			}
			if isMCP {
				refused++
			}
		case isMCP && e.status == http.StatusUnauthorized && i == 0:
			// The client's first request, without a token, starts the login.
		case e.status == 0 || e.status >= 400:
			t.Errorf("%s %s at %s = %d, want success", e.method, e.path, e.backend, e.status)
		case isMCP:
			mcpAt[e.backend]++
		}
	}
	if refused == 0 {
		t.Error("the client's call after the revocation did not reach a gateway")
	}
	if perInstance[c.a.addr]-perInstance[c.b.addr] > 1 || perInstance[c.b.addr]-perInstance[c.a.addr] > 1 || mcpAt[c.a.addr] == 0 || mcpAt[c.b.addr] == 0 {
		t.Errorf("requests per instance: A %d (%d MCP), B %d (%d MCP); want alternation, MCP requests at both", perInstance[c.a.addr], mcpAt[c.a.addr], perInstance[c.b.addr], mcpAt[c.b.addr])
	}
	t.Logf("one SDK client through the balancer, every request to the other instance: %d requests (A %d, B %d; MCP session requests A %d, B %d, all answered), login, 8 tool calls and 2 lists in one session, a refresh; after the revocation %d of its requests refused with 401, and both instances refuse the session's calls",
		len(trail), perInstance[c.a.addr], perInstance[c.b.addr], mcpAt[c.a.addr], mcpAt[c.b.addr], refused)
}

var errLoginOff = errors.New("no login expected now")

// clientTokens is the token source the SDK's OAuth handler uses after the
// code exchange: golang.org/x/oauth2's, which redeems the refresh token
// when the access token has expired. expire makes it do so on next use.
type clientTokens struct {
	mu   sync.Mutex
	ctx  context.Context
	cfg  *oauth2.Config
	src  oauth2.TokenSource
	last *oauth2.Token
}

func (s *clientTokens) start(ctx context.Context, cfg *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx, s.cfg, s.src, s.last = ctx, cfg, cfg.TokenSource(ctx, tok), tok
	return s, nil
}

func (s *clientTokens) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, err := s.src.Token()
	if err == nil {
		s.last = tok
	}
	return tok, err
}

// current is the token last handed out.
func (s *clientTokens) current() *oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// expire makes the source treat its access token as expired.
func (s *clientTokens) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := *s.last
	tok.Expiry = time.Now().Add(-time.Minute)
	s.src = s.cfg.TokenSource(s.ctx, &tok)
}
