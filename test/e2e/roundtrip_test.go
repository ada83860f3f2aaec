package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestMultiRoundTripThroughGateway: a Go SDK server whose tool asks for
// confirmation with a 2026-07-28 input-required result (elicitation and
// a requestState), and the Go SDK client that fulfils it and retries,
// through Caddy: the client completes the call, and the server gets back
// the state it minted, though the client only ever held the gateway's
// bound form of it (state.go).
func TestMultiRoundTripThroughGateway(t *testing.T) {
	var ran executed
	srv := mcp.NewServer(&mcp.Implementation{Name: "mrtr", Version: "v1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "get_record", Description: "Reads a user's record, once confirmed."},
		func(_ context.Context, req *mcp.CallToolRequest, in RecordIn) (*mcp.CallToolResult, any, error) {
			if req.Params.RequestState == "" {
				return &mcp.CallToolResult{
					InputRequests: mcp.InputRequestMap{"confirm": &mcp.ElicitParams{
						Message:         "Read the record of " + in.Owner + "?",
						RequestedSchema: &jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{"ok": {Type: "boolean"}}},
					}},
					RequestState: "server-state:" + in.Owner,
				}, nil, nil
			}
			ran.add("state " + req.Params.RequestState)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "record of " + in.Owner}}}, nil, nil
		})
	e, ctx, tok := startModern(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true}))
	var asked []string
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			asked = append(asked, req.Params.Message)
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"ok": true}}, nil
		},
	})
	// Every requestState the client sends, as it sends it.
	var sent []string
	hc := &http.Client{Transport: &oauth2.Transport{Source: harness.NewSwapSource(tok), Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.GetBody != nil {
			if b, err := r.GetBody(); err == nil {
				body, _ := io.ReadAll(b)
				if _, rest, ok := strings.Cut(string(body), `"requestState":"`); ok {
					sent = append(sent, rest[:strings.IndexByte(rest, '"')])
				}
			}
		}
		return http.DefaultTransport.RoundTrip(r)
	})}}
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.modern, HTTPClient: hc},
		&mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_record", Arguments: map[string]any{"owner": "alice"}})
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "record of alice" {
		t.Fatalf("CallTool(get_record) = %+v, %v; want the record after the confirmation", res, err)
	}
	if len(asked) != 1 {
		t.Errorf("elicitations = %q, want one", asked)
	}
	if got := ran.list(); len(got) != 1 || got[0] != "state server-state:alice" {
		t.Errorf("the server ran %q, want once with its own state", got)
	}
	if len(sent) != 1 || strings.Contains(sent[0], "server-state") {
		t.Errorf("the client sent requestState %q, want one, the gateway's bound form", sent)
	}
}

// TestRootsChangedThroughGateway: the Go SDK client in 2026-07-28 still
// sends notifications/roots/list_changed when its roots change, which
// this revision removed. The gateway drops it (202) rather than refusing
// it: a refusal, which for a notification has no id, ended the client's
// connection, and every later call failed ("client is closing"), where
// the SDK's own server takes it. The notification reaches no server.
func TestRootsChangedThroughGateway(t *testing.T) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "roots", Version: "v1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "get_record", Description: "Reads a user's record."},
		func(_ context.Context, _ *mcp.CallToolRequest, in RecordIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "record of " + in.Owner}}}, nil, nil
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true})
	var notified atomic.Int32
	e, ctx, tok := startModern(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte("notifications/roots/list_changed")) {
			notified.Add(1)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler.ServeHTTP(w, r)
	}))
	// The notification goes out in the background: its answer's status,
	// once the client has read it (closed its body).
	answered := make(chan int, 1)
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && r.Header.Get("Mcp-Method") == "notifications/roots/list_changed" {
			resp.Body = &onClose{ReadCloser: resp.Body, closed: func() {
				select {
				case answered <- resp.StatusCode:
				default:
				}
			}}
		}
		return resp, err
	})
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, nil)
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(tok), Base: base}}
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.modern, HTTPClient: hc},
		&mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	c.AddRoots(&mcp.Root{URI: "file:///home/alice/project"})
	select {
	case status := <-answered:
		if status != http.StatusAccepted {
			t.Fatalf("notifications/roots/list_changed answered %d, want 202 (dropped)", status)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client sent no notifications/roots/list_changed, or read no answer")
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_record", Arguments: map[string]any{"owner": "alice"}})
	if err != nil || res.IsError {
		t.Fatalf("CallTool after the roots changed = %+v, %v; want the record", res, err)
	}
	if n := notified.Load(); n != 0 {
		t.Errorf("notifications/roots/list_changed at the server: %d, want none", n)
	}
}

// startModern starts Caddy with argsCaddyfile in front of the stateless
// MCP server h (both resources) and authorizes alice for records there.
func startModern(t *testing.T, h http.Handler) (*env, context.Context, *oauth2.Token) {
	t.Helper()
	modern := httptest.NewServer(h)
	t.Cleanup(modern.Close)
	up := modern.Listener.Addr().String()
	e := startArgs(t, up, up)
	ctx := ctxTimeout(t, 60*time.Second)
	tok, err := e.authorize(ctx, harness.NewRobot("alice", password, redirectURI), e.oauthConfig("records"), e.modern)
	if err != nil {
		t.Fatal(err)
	}
	return e, ctx, tok
}

// onClose calls closed once the body is closed.
type onClose struct {
	io.ReadCloser
	once   sync.Once
	closed func()
}

func (b *onClose) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.closed)
	return err
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestServerRequestsThroughGateway: in a 2025 session, a Go SDK server's
// tool asks the client for input while it runs (elicitation, sampling,
// roots), and the Go SDK client's answers go back through Caddy as
// POSTed JSON-RPC responses in the caller's session: on the call's event
// stream, or with JSON answers on the session's GET stream. The call
// completes with what the client answered, with tool pinning (the
// default) and the tool's argument rule in force; a call the rule
// refuses never runs, so the server asks nothing.
func TestServerRequestsThroughGateway(t *testing.T) {
	for _, tc := range []struct {
		version string
		json    bool
	}{
		{"2025-06-18", false},
		{"2025-06-18", true},
		{"2025-11-25", false},
		{"2025-11-25", true},
	} {
		name := tc.version + "/events"
		if tc.json {
			name = tc.version + "/json"
		}
		t.Run(name, func(t *testing.T) { testServerRequests(t, tc.version, tc.json) })
	}
}

func testServerRequests(t *testing.T, version string, jsonAnswers bool) {
	var ran executed
	srv := mcp.NewServer(&mcp.Implementation{Name: "asks", Version: "v1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "get_record", Description: "Reads a user's record, once the user confirms."},
		func(ctx context.Context, req *mcp.CallToolRequest, in RecordIn) (*mcp.CallToolResult, any, error) {
			// An answer that never arrives fails the call, not the test's
			// time limit.
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			er, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "Read the record of " + in.Owner + "?",
				RequestedSchema: &jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{"ok": {Type: "boolean"}}}})
			if err != nil {
				return nil, nil, err
			}
			sr, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10,
				Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "Summarize " + in.Owner}}}})
			if err != nil {
				return nil, nil, err
			}
			rr, err := req.Session.ListRoots(ctx, nil)
			if err != nil || len(rr.Roots) != 1 {
				return nil, nil, fmt.Errorf("roots %v: %v", rr, err)
			}
			ran.add(fmt.Sprintf("get_record of %s: %s %v, %s %q, root %s", in.Owner, er.Action, er.Content["ok"], sr.Model, sr.Content.(*mcp.TextContent).Text, rr.Roots[0].URI))
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "record of " + in.Owner}}}, nil, nil
		})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{JSONResponse: jsonAnswers}))
	t.Cleanup(up.Close)
	e := startArgs(t, up.Listener.Addr().String(), up.Listener.Addr().String())
	ctx := ctxTimeout(t, 60*time.Second)
	tok, err := e.authorize(ctx, harness.NewRobot("alice", password, redirectURI), e.oauthConfig("records"), e.legacy)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, &mcp.ClientOptions{
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			asked.Add(1)
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"ok": true}}, nil
		},
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			asked.Add(1)
			return &mcp.CreateMessageResult{Model: "model-1", Role: "assistant", Content: &mcp.TextContent{Text: "a summary"}}, nil
		},
	})
	c.AddRoots(&mcp.Root{URI: "file:///home/alice"})
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(tok)}}
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.legacy, HTTPClient: hc},
		&mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_record", Arguments: map[string]any{"owner": "alice"}})
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "record of alice" {
		t.Fatalf("CallTool(get_record) = %+v, %v; want the record once the client answered", res, err)
	}
	want := `get_record of alice: accept true, model-1 "a summary", root file:///home/alice`
	if got := ran.list(); len(got) != 1 || got[0] != want {
		t.Errorf("the server ran %q, want once with the client's answers: %s", got, want)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the client was asked %d times, want 2 (elicitation, sampling)", n)
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_record", Arguments: map[string]any{"owner": "bob"}})
	if err == nil && !res.IsError {
		t.Error("CallTool(get_record of bob) succeeded, want the argument rule's refusal")
	}
	if got := ran.list(); len(got) != 1 || asked.Load() != 2 {
		t.Errorf("after the refused call the server ran %q and the client was asked %d times; want nothing more", got, asked.Load())
	}
}
