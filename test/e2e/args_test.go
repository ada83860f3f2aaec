package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// EmailIn and RecordIn are the inputs of the argument-rule test tools.
type EmailIn struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

type RecordIn struct {
	Owner string `json:"owner"`
}

// executed records the tool calls the MCP server ran.
type executed struct {
	mu    sync.Mutex
	calls []string
}

func (x *executed) add(s string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.calls = append(x.calls, s)
}

func (x *executed) list() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.calls...)
}

func argServer(x *executed) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "args", Version: "v1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "send_email", Description: "Sends an email."},
		func(ctx context.Context, req *mcp.CallToolRequest, in EmailIn) (*mcp.CallToolResult, any, error) {
			x.add("send_email to " + in.To)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "get_record", Description: "Reads a user's record."},
		func(ctx context.Context, req *mcp.CallToolRequest, in RecordIn) (*mcp.CallToolResult, any, error) {
			x.add("get_record of " + in.Owner)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "record of " + in.Owner}}}, nil, nil
		})
	return s
}

var argsCaddyfile = template.Must(template.New("Caddyfile").Parse(e2eGlobals + `		storage bolt {{.Dir}}/mcp-auth.db
		user alice {{.Hash}} {
			groups staff
		}
		group staff {
			scopes * mail records
		}
		client {{.ClientID}} {
			public
			redirect_uri {{.RedirectURI}}
		}
	}
}

(rules) {
	tool send_email mail {
		arg /to regex [A-Za-z0-9._%+-]+@example\.com
		arg /cc optional regex [A-Za-z0-9._%+-]+@example\.com
	}
	tool get_record records {
		arg /owner equals {token.sub}
	}
}

` + e2eSite))

// startArgs starts Caddy with argsCaddyfile in front of the MCP servers
// at legacyUp (resource /mcp) and modernUp (/v2/mcp).
func startArgs(t *testing.T, legacyUp, modernUp string) *env {
	t.Helper()
	return startSites(t, argsCaddyfile, legacyUp, modernUp)
}

// TestArgumentRules: "only to @example.com" and "only your own records"
// as Caddyfile lines, through Caddy to a Go SDK server, in the 2025-11-25
// (session) and 2026-07-28 (stateless, Mcp-Name) revisions. A refused
// call never runs; tools/list still shows both tools.
func TestArgumentRules(t *testing.T) {
	var ran executed
	legacyUp, modernUp := serveBoth(t, argServer(&ran))
	e := startArgs(t, legacyUp, modernUp)

	for _, tc := range []struct{ version, resource string }{
		{"2025-11-25", e.legacy},
		{"2026-07-28", e.modern},
	} {
		t.Run(tc.version, func(t *testing.T) {
			ctx := ctxTimeout(t, 60*time.Second)
			cs := e.session(t, ctx, "alice", tc.resource, tc.version, "mail", "records")
			lt, err := cs.ListTools(ctx, nil)
			if err != nil || len(lt.Tools) != 2 {
				t.Fatalf("ListTools = %v, %v; want both tools listed", lt, err)
			}

			tests := []struct {
				tool string
				args map[string]any
				ok   bool
			}{
				{"send_email", map[string]any{"to": "bob@example.com", "subject": "hi"}, true},
				{"send_email", map[string]any{"to": "eve@evil.com", "subject": "hi"}, false},
				{"send_email", map[string]any{"to": "eve@evil.com,bob@example.com"}, false},
				{"send_email", map[string]any{"to": "eve@evil.com\n@example.com"}, false},
				{"send_email", map[string]any{"subject": "no recipient"}, false},
				{"get_record", map[string]any{"owner": "alice"}, true},
				{"get_record", map[string]any{"owner": "bob"}, false},
				{"get_record", map[string]any{"owner": "Alice"}, false},
			}
			for _, tt := range tests {
				before := len(ran.list())
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tt.tool, Arguments: tt.args})
				got := ran.list()[before:]
				if tt.ok {
					if err != nil || res.IsError || len(got) != 1 {
						t.Errorf("%s %v = %v, %v (ran %q); want it run", tt.tool, tt.args, res, err, got)
					}
					continue
				}
				if err == nil && !res.IsError {
					t.Errorf("%s %v succeeded, want refusal", tt.tool, tt.args)
				}
				if len(got) != 0 {
					t.Errorf("%s %v: the server ran %q", tt.tool, tt.args, got)
				}
			}
		})
	}

	// Encodings the SDK client would not produce, as raw 2026-07-28
	// requests: the server runs none of them.
	ctx := ctxTimeout(t, 60*time.Second)
	robot := harness.NewRobot("alice", password, redirectURI)
	tok, err := e.authorize(ctx, robot, e.oauthConfig("mail", "records"), e.modern)
	if err != nil {
		t.Fatal(err)
	}
	type rawCall struct{ tool, args string }
	for c, want := range map[rawCall]int{
		// A case or NUL variant of an optional argument is not missing:
		// encoding/json v1 (many Go servers) reads "CC" as cc.
		{"send_email", `{"to":"bob@example.com","cc":"carol@example.com"}`}:  200,
		{"send_email", `{"to":"bob@example.com","CC":"eve@evil.com"}`}:       403,
		{"send_email", `{"to":"bob@example.com","cc\u0000":"eve@evil.com"}`}: 403,
		// And one with '-' or '_': Go's json/v2 ignoring case reads "c_c" as cc.
		{"send_email", `{"to":"bob@example.com","c_c":"eve@evil.com"}`}: 403,
		// Beside cc too: json/v2 allowing duplicate names reads the last.
		{"send_email", `{"to":"bob@example.com","cc":"carol@example.com","c_c":"eve@evil.com"}`}: 403,
		{"send_email", `{"to":"bob@example.com","\u212a":"x"}`}:                                  200,
	} {
		before := len(ran.list())
		resp, body, err := rawToolCallArgs(ctx, http.DefaultClient, e.modern, tok.AccessToken, c.tool, c.args)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want || (want == 403 && !strings.Contains(body, `"argument":"/cc"`)) {
			t.Errorf("%s %s: status %d, want %d (%s)", c.tool, c.args, resp.StatusCode, want, body)
		}
		if want == 403 && len(ran.list()) != before {
			t.Errorf("%s %s: the server ran %q", c.tool, c.args, ran.list()[before:])
		}
	}
	for args, want := range map[string]int{
		`{"owner":"alice"}`:                    200,
		`{"\u006fwner":"alice"}`:               200,
		`{"owner":"bob"}`:                      403,
		`{"owner":"alice","owner":"bob"}`:      400,
		`{"owner":"alice","Owner":"bob"}`:      400,
		`{"owner":"alice","\u006fwner":"bob"}`: 400,
		`{"owner":["alice","bob"]}`:            403,
		`{"owner":"alice\u0000bob"}`:           403,
		`{"owner":"alice","x":{"a":1,"a":2}}`:  400,
		`{"Owner":"bob"}`:                      403,
		`{"owner":"alic\u0065"}`:               200,
		`{"owner":"\ud800"}`:                   400,
	} {
		before := len(ran.list())
		resp, body, err := rawToolCallArgs(ctx, http.DefaultClient, e.modern, tok.AccessToken, "get_record", args)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want {
			t.Errorf("get_record %s: status %d, want %d (%s)", args, resp.StatusCode, want, body)
		}
		if ranNow := ran.list()[before:]; (want == 200) != (len(ranNow) == 1) {
			t.Errorf("get_record %s: the server ran %q", args, ranNow)
		}
		if want == 403 && (!strings.Contains(body, `"rule":"get_record"`) || !strings.Contains(body, `"argument":"/owner"`) ||
			resp.Header.Get("WWW-Authenticate") != "") {
			t.Errorf("get_record %s: refusal %s (WWW-Authenticate %q), want one naming rule and argument, no challenge",
				args, body, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestParamHeadersThroughGateway: a 2026-07-28 tool that mirrors an
// argument into an Mcp-Param-* header (x-mcp-header), through Caddy. The
// Go SDK client, which mirrors the argument of a tool it has listed, is
// served; a call whose body has the argument but that leaves its header
// out ("client omits header but value is in body: server MUST reject")
// is refused by the gateway with -32020 and never reaches the upstream,
// whatever the upstream would have checked: a router before it that acts
// on the header would act on its absence.
func TestParamHeadersThroughGateway(t *testing.T) {
	var ran executed
	srv := mcp.NewServer(&mcp.Implementation{Name: "params", Version: "v1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "get_record", Description: "Reads a user's record.", InputSchema: map[string]any{
		"type":       "object",
		"properties": map[string]any{"owner": map[string]any{"type": "string", "x-mcp-header": "Owner"}},
	}}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		ran.add("get_record " + string(req.Params.Arguments))
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "record"}}}, nil
	})
	// The upstream's own check aside: what reaches it is counted.
	var calls sync.Map
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true})
	e, ctx, tok := startModern(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Mcp-Method") == "tools/call" {
			calls.Store(r.Header.Get("Mcp-Param-Owner"), true)
		}
		handler.ServeHTTP(w, r)
	}))
	cs, err := connect(ctx, e.modern, harness.NewSwapSource(tok), "2026-07-28", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_record", Arguments: map[string]any{"owner": "alice"}})
	if err != nil || res.IsError {
		t.Fatalf("CallTool(get_record) = %+v, %v; want it run", res, err)
	}
	if _, ok := calls.Load("alice"); !ok {
		t.Fatalf("the upstream got no call with Mcp-Param-Owner: alice")
	}

	resp, body, err := rawToolCallArgs(ctx, http.DefaultClient, e.modern, tok.AccessToken, "get_record", `{"owner":"alice"}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "-32020") || !strings.Contains(body, "Mcp-Param-Owner") {
		t.Errorf("a call without Mcp-Param-Owner = %d %s, want 400 with -32020 naming the header", resp.StatusCode, body)
	}
	if _, ok := calls.Load(""); ok {
		t.Errorf("a call without Mcp-Param-Owner reached the upstream")
	}
	if got := ran.list(); len(got) != 1 {
		t.Errorf("the server ran %q, want the SDK client's call only", got)
	}
}
