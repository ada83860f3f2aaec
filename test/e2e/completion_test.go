package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// completionServer is listServer with completions and resource
// subscriptions; what reached its handlers is recorded in reached
// (a completion by its ref's name or URI, a subscription as "sub "+URI).
func completionServer(reached *sync.Map) *mcp.Server {
	return listServer(&mcp.ServerOptions{
		CompletionHandler: func(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			ref := req.Params.Ref.Name + req.Params.Ref.URI
			reached.Store(ref, true)
			return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{"offered by " + ref}}}, nil
		},
		SubscribeHandler: func(ctx context.Context, req *mcp.SubscribeRequest) error {
			reached.Store("sub "+req.Params.URI, true)
			return nil
		},
		UnsubscribeHandler: func(ctx context.Context, req *mcp.UnsubscribeRequest) error { return nil },
	})
}

// TestCompletionAndSubscribeThroughSDK: the Go SDK client's Complete and
// Subscribe through Caddy to an SDK server, in the 2025-11-25 (session,
// resources/subscribe) and 2026-07-28 (stateless, subscriptions/listen)
// revisions, under listsCaddyfile's rules. bob (docs) completes only the
// prompt and template he could get or read (a template by every rule an
// expansion could fall under: file:///docs/{path} may expand under
// file:///docs/secret/) and subscribes only to what he could read; a
// refused completion or subscription never reaches the server. alice
// (docs secret review) reaches everything.
func TestCompletionAndSubscribeThroughSDK(t *testing.T) {
	var reached sync.Map
	legacyUp, modernUp := serveBoth(t, completionServer(&reached))
	e := startSites(t, listsCaddyfile, legacyUp, modernUp)
	refs := []*mcp.CompleteReference{
		{Type: "ref/prompt", Name: "summarize"},
		{Type: "ref/prompt", Name: "review_code"},
		{Type: "ref/resource", URI: "file:///docs/notes/{name}"},
		{Type: "ref/resource", URI: "file:///docs/{path}"},
		{Type: "ref/resource", URI: "file:///docs/secret/plan.md"},
	}
	uris := []string{"file:///docs/readme.md", "file:///docs/secret/plan.md"}
	for _, tc := range []struct{ version, resource string }{
		{"2025-11-25", e.legacy},
		{"2026-07-28", e.modern},
	} {
		for _, p := range []struct {
			user   string
			scopes []string
			allow  map[string]bool // ref name or URI, subscribed URI: served
		}{
			{"bob", []string{"docs"}, map[string]bool{"summarize": true, "file:///docs/notes/{name}": true, "file:///docs/readme.md": true}},
			{"alice", []string{"docs", "secret", "review"}, nil},
		} {
			t.Run(tc.version+" "+p.user, func(t *testing.T) {
				ctx := ctxTimeout(t, 60*time.Second)
				cs := e.session(t, ctx, p.user, tc.resource, tc.version, p.scopes...)
				for _, ref := range refs {
					key := ref.Name + ref.URI
					want := p.allow == nil || p.allow[key]
					reached.Delete(key)
					res, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: ref, Argument: mcp.CompleteParamsArgument{Name: "topic", Value: "x"}})
					_, upstream := reached.Load(key)
					switch {
					case want && (err != nil || len(res.Completion.Values) != 1 || res.Completion.Values[0] != "offered by "+key):
						t.Errorf("Complete(%s) = %v, %v, want it served", key, res, err)
					case !want && (err == nil || upstream):
						t.Errorf("Complete(%s) = %v, %v, reached the server: %v; want it refused", key, res, err, upstream)
					}
				}
				for _, uri := range uris {
					want := p.allow == nil || p.allow[uri]
					reached.Delete("sub " + uri)
					// A 2026-07-28 subscription is a subscriptions/listen
					// that lasts; it has reached the server when the
					// server has it.
					sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					err := cs.Subscribe(sctx, &mcp.SubscribeParams{URI: uri})
					cancel()
					_, upstream := reached.Load("sub " + uri)
					if upstream != want {
						t.Errorf("Subscribe(%s) = %v, reached the server: %v, want %v", uri, err, upstream, want)
					}
					if tc.version == "2025-11-25" && (err == nil) != want {
						t.Errorf("Subscribe(%s) = %v, want served: %v", uri, err, want)
					}
				}
			})
		}
	}
}
