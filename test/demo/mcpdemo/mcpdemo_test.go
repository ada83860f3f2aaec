package mcpdemo

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestDemoServer(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	ctx := context.Background()
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	defer cs.Close()

	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("Tools() = %v", err)
		}
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if want := []string{"add", "add_note", "delete_notes", "echo"}; !slices.Equal(names, want) {
		t.Errorf("Tools() = %v, want %v", names, want)
	}

	call := func(name string, args map[string]any) string {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil || res.IsError {
			t.Fatalf("CallTool(%s) = %v, %v", name, res, err)
		}
		return res.Content[0].(*mcp.TextContent).Text
	}
	if got := call("echo", map[string]any{"text": "hi"}); got != "hi" {
		t.Errorf("echo = %q, want %q", got, "hi")
	}
	if got := call("add", map[string]any{"a": 2, "b": 3}); !strings.Contains(got, "5") {
		t.Errorf("add = %q, want a sum of 5", got)
	}
	if got := call("add_note", map[string]any{"text": "buy milk"}); got != "stored note 1" {
		t.Errorf("add_note = %q, want %q", got, "stored note 1")
	}
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: NotesURI})
	if err != nil || rr.Contents[0].Text != "buy milk" {
		t.Errorf("ReadResource(%s) = %v, %v, want buy milk", NotesURI, rr, err)
	}
	pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summarize_notes"})
	if err != nil || !strings.Contains(pr.Messages[0].Content.(*mcp.TextContent).Text, "buy milk") {
		t.Errorf("GetPrompt(summarize_notes) = %v, %v, want the notes", pr, err)
	}
	if got := call("delete_notes", nil); got != "deleted 1 notes" {
		t.Errorf("delete_notes = %q, want %q", got, "deleted 1 notes")
	}
}
