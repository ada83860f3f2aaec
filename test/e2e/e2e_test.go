// Package e2e runs the issuer and the gateway in one in-process Caddy in
// front of a real MCP server, and talks to it with the official Go MCP SDK
// client, golang.org/x/oauth2 and an HTTP robot for the login pages.
package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	clientID    = "e2e-client"
	clientName  = "E2E Client"
	redirectURI = "http://127.0.0.1/callback"
	username    = "alice"
	otherUser   = "bob" // same password and group
	password    = "e2e password, never logged"

	scopeRead  = "notes:read"
	scopeWrite = "notes:write"
	scopeAdmin = "notes:admin" // required by delete_notes; no user holds it
)

// env is Caddy with the issuer and two gateways in front of the demo MCP
// server (test/demo/mcpdemo: echo and add read, add_note writes,
// delete_notes administers): resource /mcp proxies to a stateful server
// (sessions, protocol up to 2025-11-25), resource /v2/mcp to a stateless
// one that also speaks 2026-07-28.
type env struct {
	seen     *upstreamLog
	port     int
	dir      string
	hash     string
	legacyUp string // host:port of the stateful MCP server
	modernUp string // host:port of the stateless MCP server
	issuer   string
	legacy   string // resource URL of /mcp
	modern   string // resource URL of /v2/mcp
	md       *harness.Metadata
}

// TestMain stops the PostgreSQL server a documented layout on storage
// postgres starts.
func TestMain(m *testing.M) { pgtest.Main(m) }

func setup(t *testing.T) *env {
	t.Helper()
	return setupWith(t, mcpdemo.Handler())
}

// setupWith is setup with legacyUp as the stateful MCP server.
func setupWith(t *testing.T, legacyUp http.Handler) *env {
	t.Helper()
	seen := &upstreamLog{}
	legacy := httptest.NewServer(seen.wrap(legacyUp))
	t.Cleanup(legacy.Close)
	s := mcpdemo.NewServer()
	modern := httptest.NewServer(seen.wrap(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{Stateless: true})))
	t.Cleanup(modern.Close)
	e := &env{
		seen:     seen,
		dir:      t.TempDir(),
		hash:     harness.HashPassword(t, password),
		legacyUp: legacy.Listener.Addr().String(),
		modernUp: modern.Listener.Addr().String(),
	}
	harness.StartFree(t, func(port int) string {
		e.port = port
		e.issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		e.legacy = e.issuer + "/mcp"
		e.modern = e.issuer + "/v2/mcp"
		return e.caddyfile(0)
	})
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	md, err := harness.Discover(context.Background(), e.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", e.issuer, err)
	}
	e.md = md
	return e
}

// upstreamLog records what reached the MCP servers behind the gateway.
type upstreamLog struct {
	mu            sync.Mutex
	requests      map[string]int // by method
	authorization int            // requests that carried an Authorization header
}

func (l *upstreamLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		if l.requests == nil {
			l.requests = map[string]int{}
		}
		l.requests[r.Method]++
		if r.Header.Get("Authorization") != "" {
			l.authorization++
		}
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// counts returns the requests by method and how many carried a token.
func (l *upstreamLog) counts() (map[string]int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.requests), l.authorization
}

// e2eSite is the site of every e2e configuration: the issuer, and a
// gateway per protocol generation in front of its upstream, both with the
// configuration's (rules) snippet.
const e2eSite = `{{.Issuer}} {
	mcp_issuer
	@legacy path /mcp /.well-known/oauth-protected-resource/mcp
	handle @legacy {
		mcp_gateway {
			resource {{.Issuer}}/mcp
			import rules
		}
		reverse_proxy {{.LegacyUp}}
	}
	@modern path /v2/mcp /.well-known/oauth-protected-resource/v2/mcp
	handle @modern {
		mcp_gateway {
			resource {{.Issuer}}/v2/mcp
			import rules
		}
		reverse_proxy {{.ModernUp}}
	}
}
`

var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(e2eGlobals + `		storage bolt {{.Dir}}/mcp-auth.db
		user {{.User}} {{.Hash}} {
			groups writers
			name "Alice v{{.Variant}}"
		}
		user {{.OtherUser}} {{.Hash}} {
			groups writers
		}
		group writers {
			scopes * {{.Read}} {{.Write}}
		}
		client {{.ClientID}} {
			name "{{.ClientName}}"
			public
			redirect_uri {{.RedirectURI}}
		}
	}
}

(rules) {
	scope {{.Read}}
	tool echo {{.Read}}
	tool add {{.Read}}
	tool add_note {{.Write}}
	tool delete_notes {{.Admin}}
	tool search_v{{.Variant}} {{.Read}}
	prompt * {{.Read}}
	resource_rule notes:// {{.Read}}
}

` + e2eSite))

// e2eGlobals opens the global options of a test Caddyfile, up to the
// mcp_auth block's storage, users, groups and clients: no admin
// endpoint, state under {{.Dir}}, the issuer at {{.Issuer}}.
const e2eGlobals = `{
	admin off
	persist_config off
	storage file_system {{.Dir}}/caddy
	log {
		level WARN
	}
	mcp_auth {
		issuer {{.Issuer}}
`

// serveBoth serves srv over Streamable HTTP with sessions (the legacy
// upstream) and stateless (the modern one), returning their host:port.
func serveBoth(t *testing.T, srv *mcp.Server) (legacyUp, modernUp string) {
	t.Helper()
	legacy := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(legacy.Close)
	modern := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(modern.Close)
	return legacy.Listener.Addr().String(), modern.Listener.Addr().String()
}

// startSites starts Caddy with tmpl (e2eSite, with the user alice's
// password hash as {{.Hash}}) in front of the MCP servers at legacyUp
// (resource /mcp) and modernUp (/v2/mcp).
func startSites(t *testing.T, tmpl *template.Template, legacyUp, modernUp string) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), hash: harness.HashPassword(t, password)}
	harness.StartFree(t, func(port int) string {
		e.issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		e.legacy, e.modern = e.issuer+"/mcp", e.issuer+"/v2/mcp"
		var b strings.Builder
		if err := tmpl.Execute(&b, map[string]any{
			"Dir": e.dir, "Issuer": e.issuer, "Hash": e.hash, "ClientID": clientID, "RedirectURI": redirectURI,
			"LegacyUp": legacyUp, "ModernUp": modernUp,
		}); err != nil {
			panic(err)
		}
		return b.String()
	})
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	md, err := harness.Discover(context.Background(), e.issuer)
	if err != nil {
		t.Fatal(err)
	}
	e.md = md
	return e
}

// caddyfile renders the configuration; variant changes details (a user's
// display name, a tool rule) so a reload has something to do.
func (e *env) caddyfile(variant int) string {
	var b strings.Builder
	err := caddyfileTemplate.Execute(&b, map[string]any{
		"Dir": e.dir, "Issuer": e.issuer, "User": username, "OtherUser": otherUser, "Hash": e.hash,
		"ClientID": clientID, "ClientName": clientName, "RedirectURI": redirectURI,
		"Read": scopeRead, "Write": scopeWrite, "Admin": scopeAdmin,
		"Variant": variant, "LegacyUp": e.legacyUp, "ModernUp": e.modernUp,
	})
	if err != nil {
		panic(err) // the template is a constant
	}
	return b.String()
}

// oauthConfig is the pre-registered public client's configuration.
func (e *env) oauthConfig(scopes ...string) *oauth2.Config {
	return e.md.Config(clientID, redirectURI, scopes...)
}

// authorize runs the code flow with robot (login and consent over HTTP)
// and redeems the code.
func (e *env) authorize(ctx context.Context, robot *harness.Robot, cfg *oauth2.Config, resource string) (*oauth2.Token, error) {
	ar := harness.NewAuthRequest(cfg, resource)
	q, err := robot.Authorize(ctx, ar.URL)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	if q.Get("state") != ar.State || q.Get("iss") != e.issuer || q.Get("code") == "" {
		return nil, fmt.Errorf("authorization response %q: want code, state %q, iss %q", q.Encode(), ar.State, e.issuer)
	}
	tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
	if err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	return tok, nil
}

// connect opens an MCP client session with resource through the gateway,
// with tokens from src.
func connect(ctx context.Context, resource string, src oauth2.TokenSource, version string, base http.RoundTripper) (*mcp.ClientSession, error) {
	if base == nil {
		base = http.DefaultTransport
	}
	hc := &http.Client{Transport: &oauth2.Transport{Source: src, Base: base}}
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: resource, HTTPClient: hc},
		&mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		return nil, fmt.Errorf("connect (%s): %w", version, err)
	}
	return cs, nil
}

// rawToolCall posts one tools/call to resource in the stateless 2026-07-28
// form, with the headers that must match the body, and returns the
// response with its body read.
func rawToolCall(ctx context.Context, client *http.Client, resource, token, tool string) (*http.Response, string, error) {
	return rawToolCallArgs(ctx, client, resource, token, tool, `{}`)
}

// rawToolCallArgs is rawToolCall with the arguments member given verbatim.
func rawToolCallArgs(ctx context.Context, client *http.Client, resource, token, tool, args string) (*http.Response, string, error) {
	return harness.RawToolCall(ctx, client, resource, token, tool, args)
}

// challenge parses a Bearer WWW-Authenticate header into its parameters.
func challenge(h string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(h, "Bearer")
	if !ok {
		return nil, false
	}
	params := map[string]string{}
	rest = strings.TrimSpace(rest)
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, false
		}
		k = strings.TrimSpace(k)
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				return nil, false
			}
			params[k] = v[1 : end+1]
			rest = v[end+2:]
		} else {
			val, after, _ := strings.Cut(v, ",")
			params[k] = strings.TrimSpace(val)
			rest = "," + after
		}
		rest = strings.TrimPrefix(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return params, true
}

// session authorizes user for scopes on resource and connects the SDK
// client there in the protocol version, closed when t ends.
func (e *env) session(t *testing.T, ctx context.Context, user, resource, version string, scopes ...string) *mcp.ClientSession {
	t.Helper()
	tok, err := e.authorize(ctx, harness.NewRobot(user, password, redirectURI), e.oauthConfig(scopes...), resource)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connect(ctx, resource, harness.NewSwapSource(tok), version, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// metadataURL is where RFC 9728 puts a resource's metadata.
func metadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil {
		panic(err) // resources are built by setup
	}
	return u.Scheme + "://" + u.Host + "/.well-known/oauth-protected-resource" + u.Path
}
