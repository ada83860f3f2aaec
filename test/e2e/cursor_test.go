package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/gob"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstreamCursor is the Go SDK server's cursor for the page after uid:
// base64url of a gob-encoded pageToken{LastUID}, as its encodeCursor
// makes it.
func upstreamCursor(t *testing.T, uid string) string {
	t.Helper()
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(struct{ LastUID string }{uid}); err != nil {
		t.Fatal(err)
	}
	return base64.URLEncoding.EncodeToString(b.Bytes())
}

// TestListCursorsSealed: a Go SDK server's nextCursor names the last
// item of its page (base64 of the name or URI), whether or not the
// caller may see that item, and takes a cursor naming any item. So bob
// (docs) paging through resources/list, one resource a page, read
// file:///docs/secret/plan.md, which the gateway takes out of his list,
// in the cursor of the page that held it, and could start a page after
// any name he chose. The gateway now hands out cursors sealed for the
// caller and the list (encrypted, so they show nothing), and a cursor it
// did not seal for the caller and the list is refused (-32602), never
// forwarded. In the 2025-11-25 (session) and 2026-07-28 (stateless)
// revisions.
func TestListCursorsSealed(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "pages", Version: "v1"}, &mcp.ServerOptions{PageSize: 1})
	read := func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "text"}}}, nil
	}
	for _, uri := range []string{"file:///docs/a.md", "file:///docs/secret/plan.md", "file:///docs/z.md"} {
		s.AddResource(&mcp.Resource{URI: uri, Name: uri[strings.LastIndexByte(uri, '/')+1:]}, read)
	}
	for _, name := range []string{"review_code", "summarize"} {
		s.AddPrompt(&mcp.Prompt{Name: name}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{}, nil
		})
	}
	legacyUp, modernUp := serveBoth(t, s)
	e := startSites(t, listsCaddyfile, legacyUp, modernUp)
	for _, tc := range []struct{ version, resource string }{
		{"2025-11-25", e.legacy},
		{"2026-07-28", e.modern},
	} {
		t.Run(tc.version, func(t *testing.T) {
			ctx := ctxTimeout(t, 60*time.Second)
			bob := e.session(t, ctx, "bob", tc.resource, tc.version, "docs")
			alice := e.session(t, ctx, "alice", tc.resource, tc.version, "docs", "secret", "review")

			var got, cursors []string
			cursor := ""
			for range 10 {
				lr, err := bob.ListResources(ctx, &mcp.ListResourcesParams{Cursor: cursor})
				if err != nil {
					t.Fatalf("ListResources(cursor %q) = %v, want the next page", cursor, err)
				}
				for _, r := range lr.Resources {
					got = append(got, r.URI)
				}
				if lr.NextCursor == "" {
					break
				}
				cursors = append(cursors, lr.NextCursor)
				cursor = lr.NextCursor
			}
			if want := []string{"file:///docs/a.md", "file:///docs/z.md"}; !slices.Equal(got, want) {
				t.Errorf("bob pages through %v, want %v", got, want)
			}
			for _, c := range cursors {
				raw, _ := base64.URLEncoding.DecodeString(c)
				if raw2, err := base64.RawURLEncoding.DecodeString(c); err == nil {
					raw = append(raw, raw2...)
				}
				if strings.Contains(c, "secret") || bytes.Contains(raw, []byte("secret")) || bytes.Contains(raw, []byte("file://")) {
					t.Errorf("bob got cursor %q (%q), which names a resource", c, raw)
				}
			}
			if len(cursors) == 0 {
				t.Fatal("no page had a next cursor")
			}
			// Nor does a cursor's length tell the length of the name
			// that ended its page (file:///docs/secret/plan.md).
			for _, c := range cursors[1:] {
				if len(c) != len(cursors[0]) {
					t.Errorf("bob's cursors %q differ in length, as the names ending their pages do", cursors)
					break
				}
			}

			// A cursor the gateway did not seal for the caller and the
			// list is refused: the upstream's own, one of another
			// caller's, one of another list.
			ap, err := alice.ListPrompts(ctx, nil)
			if err != nil || ap.NextCursor == "" {
				t.Fatalf("alice ListPrompts = %+v, %v, want a next cursor", ap, err)
			}
			ar, err := alice.ListResources(ctx, nil)
			if err != nil || ar.NextCursor == "" {
				t.Fatalf("alice ListResources = %+v, %v, want a next cursor", ar, err)
			}
			for name, c := range map[string]string{
				"upstream's own":   upstreamCursor(t, "file:///docs/a.md"),
				"another caller's": ar.NextCursor,
				"another list's":   "",
			} {
				if name == "another list's" {
					bp, err := bob.ListPrompts(ctx, nil)
					if err != nil || bp.NextCursor == "" {
						t.Fatalf("bob ListPrompts = %+v, %v, want a next cursor", bp, err)
					}
					c = bp.NextCursor
				}
				lr, err := bob.ListResources(ctx, &mcp.ListResourcesParams{Cursor: c})
				if err == nil || !strings.Contains(err.Error(), "cursor") {
					t.Errorf("bob ListResources with %s cursor = %+v, %v, want refused", name, lr, err)
				}
			}
		})
	}
}
