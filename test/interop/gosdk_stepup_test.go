package interop

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestGoSDKClientStepUp2026 is step-up authorization (MCP 2026-07-28,
// "Step-Up Authorization Flow") with the Go SDK's own OAuth handler, given
// only the gateway URL, over the stateless 2026-07-28 transport in front
// of the demo server: DCR, login, a permitted call; a call needing the
// write scope gets 403 insufficient_scope naming it, the SDK re-authorizes
// with the union of what it held and the challenge (SEP-2350), and the
// call succeeds; the permitted tool still works with the new token, and a
// refresh (the SDK asks for offline_access, SEP-2207) keeps both scopes.
func TestGoSDKClientStepUp2026(t *testing.T) {
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return mcpdemo.NewServer() },
		&mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(up.Close)
	s := startStack(t, up.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	redirectURI := fmt.Sprintf("http://127.0.0.1:%d/callback", harness.FreePort(t))
	robot := harness.NewRobot(userName, userPassword, redirectURI)
	var (
		mu      sync.Mutex
		scopes  []string       // the scope of each authorization request
		sources []*refreshable // one per token the code exchanges gave
		refused []string       // status and WWW-Authenticate of each refused MCP request
	)
	// seen snapshots what the client did so far.
	seen := func() (scope, wire []string, src *refreshable) {
		mu.Lock()
		defer mu.Unlock()
		if len(sources) > 0 {
			src = sources[len(sources)-1]
		}
		return slices.Clone(scopes), slices.Clone(refused), src
	}
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			ClientName:              "Go SDK step-up",
			RedirectURIs:            []string{redirectURI},
			TokenEndpointAuthMethod: "none",
			GrantTypes:              []string{"authorization_code", "refresh_token"},
		}},
		RedirectURL:         redirectURI,
		RequestRefreshToken: true,
		AuthorizationCodeFetcher: robot.CodeFetcher(func(u *url.URL) {
			mu.Lock()
			scopes = append(scopes, u.Query().Get("scope"))
			mu.Unlock()
		}),
		NewTokenSource: func(ctx context.Context, cfg *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			src := &refreshable{ctx: ctx, cfg: cfg, cur: tok}
			mu.Lock()
			sources = append(sources, src)
			mu.Unlock()
			return src, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	recorder := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && r.URL.Path == demoMCPPath && resp.StatusCode >= 400 {
			mu.Lock()
			refused = append(refused, fmt.Sprintf("%d %s", resp.StatusCode, strings.Join(resp.Header.Values("WWW-Authenticate"), " | ")))
			mu.Unlock()
		}
		return resp, err
	})}
	client := mcp.NewClient(&mcp.Implementation{Name: "stepup", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.Resource, OAuthHandler: h, HTTPClient: recorder},
		&mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		_, wire, _ := seen()
		t.Fatalf("connect to %s: %v (refused: %q)", s.Resource, err, wire)
	}
	defer cs.Close()

	call := func(tool string) {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "note"}})
		if err != nil || res.IsError {
			scope, wire, _ := seen()
			t.Fatalf("tools/call %s = %+v, %v (authorizations %q, refused %q)", tool, res, err, scope, wire)
		}
	}
	call(permitTool)
	if scope, _, _ := seen(); len(scope) != 1 {
		t.Fatalf("authorizations before the step-up = %q, want one", scope)
	}
	call(stepUpTool)
	scope, wire, src := seen()
	if len(scope) != 2 {
		t.Fatalf("authorizations after the step-up = %q, want two", scope)
	}
	if got := scopeSet(scope[1]); !got[baseScope] || !got[writeScope] {
		t.Errorf("step-up authorization scope = %q, want %q and %q", scope[1], baseScope, writeScope)
	}
	var challenges int
	for _, w := range wire {
		if strings.HasPrefix(w, "403 ") {
			challenges++
			if !strings.Contains(w, `error="insufficient_scope"`) || !strings.Contains(w, writeScope) || !strings.Contains(w, `resource_metadata="`) {
				t.Errorf("403 challenge = %q, want insufficient_scope naming %q with resource_metadata", w, writeScope)
			}
		}
	}
	if challenges != 1 {
		t.Errorf("403 answers = %d, want 1; refused requests: %q", challenges, wire)
	}
	stepped := src.current()
	if got := scopeSet(fmt.Sprint(stepped.Extra("scope"))); !got[baseScope] || !got[writeScope] || stepped.RefreshToken == "" {
		t.Errorf("stepped-up token: scope %v, refresh token %v; want %q and %q, and a refresh token", stepped.Extra("scope"), stepped.RefreshToken != "", baseScope, writeScope)
	}
	call(permitTool) // the base scope survived the step-up

	// The access token expires (as the client sees it): golang.org/x/oauth2
	// refreshes, and the refreshed token keeps the stepped-up scopes.
	src.expire()
	call(stepUpTool)
	call(permitTool)
	refreshed := src.current()
	if refreshed.AccessToken == stepped.AccessToken {
		t.Fatalf("the client did not refresh")
	}
	if got := scopeSet(fmt.Sprint(refreshed.Extra("scope"))); !got[baseScope] || !got[writeScope] {
		t.Errorf("refreshed token scope = %v, want %q and %q", refreshed.Extra("scope"), baseScope, writeScope)
	}
	if scope, _, _ := seen(); len(scope) != 2 {
		t.Errorf("authorizations after the refresh = %q, want still two", scope)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// refreshable is the client's token source: golang.org/x/oauth2's refresh,
// with a switch that makes the current access token count as expired.
type refreshable struct {
	ctx context.Context
	cfg *oauth2.Config
	mu  sync.Mutex
	cur *oauth2.Token
}

func (r *refreshable) Token() (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tok, err := r.cfg.TokenSource(r.ctx, r.cur).Token()
	if err == nil {
		r.cur = tok
	}
	return tok, err
}

func (r *refreshable) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := *r.cur
	c.Expiry = time.Now().Add(-time.Minute)
	r.cur = &c
}

func (r *refreshable) current() *oauth2.Token {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}
