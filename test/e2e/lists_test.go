package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// listServer offers prompts, resources and resource templates under the
// rules of listsCaddyfile, with opts (nil: none).
func listServer(opts *mcp.ServerOptions) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "lists", Version: "v1"}, opts)
	for _, name := range []string{"summarize", "review_code"} {
		s.AddPrompt(&mcp.Prompt{Name: name, Description: name},
			func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: name}}}}, nil
			})
	}
	read := func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "text"}}}, nil
	}
	for _, uri := range []string{"file:///docs/readme.md", "file:///docs/secret/plan.md"} {
		s.AddResource(&mcp.Resource{URI: uri, Name: uri[strings.LastIndexByte(uri, '/')+1:]}, read)
	}
	for _, tmpl := range []string{"file:///docs/notes/{name}", "file:///docs/{path}"} {
		s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: tmpl, Name: tmpl}, read)
	}
	return s
}

var listsCaddyfile = template.Must(template.New("Caddyfile").Parse(e2eGlobals + `		storage bolt {{.Dir}}/mcp-auth.db
		user alice {{.Hash}} {
			groups staff
		}
		user bob {{.Hash}} {
			groups guests
		}
		group staff {
			scopes * docs secret review
		}
		group guests {
			scopes * docs
		}
		client {{.ClientID}} {
			public
			redirect_uri {{.RedirectURI}}
		}
	}
}

(rules) {
	prompt review_* review
	prompt * docs
	resource_rule file:///docs/ docs
	resource_rule file:///docs/secret/ secret
}

` + e2eSite))

// TestListsPerCaller: prompts/list, resources/list and
// resources/templates/list answers of an SDK server behind Caddy are
// filtered per caller, as tools/list answers are: bob (docs) sees only
// what he may get, read and complete, alice (docs secret review)
// everything. Before, both saw every name. In the 2025-11-25 (session)
// and 2026-07-28 (stateless) revisions.
func TestListsPerCaller(t *testing.T) {
	legacyUp, modernUp := serveBoth(t, listServer(nil))
	e := startSites(t, listsCaddyfile, legacyUp, modernUp)

	type lists struct{ prompts, resources, templates []string }
	principals := []struct {
		user   string
		scopes []string
		want   lists
	}{
		{"bob", []string{"docs"}, lists{
			[]string{"summarize"},
			[]string{"file:///docs/readme.md"},
			// file:///docs/{path} may expand under file:///docs/secret/.
			[]string{"file:///docs/notes/{name}"},
		}},
		{"alice", []string{"docs", "secret", "review"}, lists{
			[]string{"review_code", "summarize"},
			[]string{"file:///docs/readme.md", "file:///docs/secret/plan.md"},
			[]string{"file:///docs/notes/{name}", "file:///docs/{path}"},
		}},
	}
	for _, tc := range []struct{ version, resource string }{
		{"2025-11-25", e.legacy},
		{"2026-07-28", e.modern},
	} {
		for _, p := range principals {
			t.Run(tc.version+" "+p.user, func(t *testing.T) {
				ctx := ctxTimeout(t, 60*time.Second)
				cs := e.session(t, ctx, p.user, tc.resource, tc.version, p.scopes...)
				var got lists
				lp, err := cs.ListPrompts(ctx, nil)
				if err != nil {
					t.Fatalf("ListPrompts: %v", err)
				}
				for _, pr := range lp.Prompts {
					got.prompts = append(got.prompts, pr.Name)
				}
				lr, err := cs.ListResources(ctx, nil)
				if err != nil {
					t.Fatalf("ListResources: %v", err)
				}
				for _, r := range lr.Resources {
					got.resources = append(got.resources, r.URI)
				}
				lt, err := cs.ListResourceTemplates(ctx, nil)
				if err != nil {
					t.Fatalf("ListResourceTemplates: %v", err)
				}
				for _, r := range lt.ResourceTemplates {
					got.templates = append(got.templates, r.URITemplate)
				}
				slices.Sort(got.prompts)
				slices.Sort(got.resources)
				slices.Sort(got.templates)
				if !slices.Equal(got.prompts, p.want.prompts) || !slices.Equal(got.resources, p.want.resources) || !slices.Equal(got.templates, p.want.templates) {
					t.Errorf("%s lists %+v, want %+v", p.user, got, p.want)
				}
				// What is listed is what may be used: each listed prompt
				// and resource is served.
				for _, name := range got.prompts {
					if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: name}); err != nil {
						t.Errorf("GetPrompt(%s) = %v, want it served", name, err)
					}
				}
				for _, uri := range got.resources {
					if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err != nil {
						t.Errorf("ReadResource(%s) = %v, want it served", uri, err)
					}
				}
			})
		}
	}
}
