// Package mcpdemo is a small MCP server for demos and tests: tools that
// need different scopes (echo and add read, add_note writes,
// delete_notes administers), a prompt and a resource.
package mcpdemo

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// NotesURI is the resource listing the notes written so far.
const NotesURI = "notes://all"

// notes is the server's only state, shared by its sessions.
type notes struct {
	mu    sync.Mutex
	items []string
}

func (n *notes) add(s string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.items = append(n.items, s)
	return len(n.items)
}

func (n *notes) clear() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := len(n.items)
	n.items = nil
	return k
}

func (n *notes) text() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.items, "\n")
}

// EchoIn is the input of the echo tool.
type EchoIn struct {
	Text string `json:"text" jsonschema:"the text to echo"`
}

// AddIn is the input of the add tool.
type AddIn struct {
	A float64 `json:"a" jsonschema:"first addend"`
	B float64 `json:"b" jsonschema:"second addend"`
}

// SumOut is the output of the add tool.
type SumOut struct {
	Sum float64 `json:"sum"`
}

// NoteIn is the input of the add_note tool.
type NoteIn struct {
	Text string `json:"text" jsonschema:"the note"`
}

// NewServer returns the demo MCP server with fresh state.
func NewServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "caddy-mcp-auth-demo", Version: "v0.1.0"}, nil)
	var n notes

	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echoes its input (needs a read scope)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in EchoIn) (*mcp.CallToolResult, any, error) {
			return text(in.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "add", Description: "Adds two numbers (needs a read scope)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in AddIn) (*mcp.CallToolResult, SumOut, error) {
			return nil, SumOut{Sum: in.A + in.B}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "add_note", Description: "Stores a note (needs a write scope)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in NoteIn) (*mcp.CallToolResult, any, error) {
			k := n.add(in.Text)
			return text(fmt.Sprintf("stored note %d", k)), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_notes", Description: "Deletes every note (needs an admin scope)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
			k := n.clear()
			return text(fmt.Sprintf("deleted %d notes", k)), nil, nil
		})

	s.AddPrompt(&mcp.Prompt{
		Name:        "summarize_notes",
		Description: "Asks the model to summarize the stored notes.",
		Arguments:   []*mcp.PromptArgument{{Name: "style", Description: "e.g. brief, bullet points"}},
	}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		style := req.Params.Arguments["style"]
		if style == "" {
			style = "brief"
		}
		return &mcp.GetPromptResult{
			Description: "Summarize the notes",
			Messages: []*mcp.PromptMessage{{
				Role:    "user",
				Content: &mcp.TextContent{Text: "Summarize these notes (" + style + "):\n" + n.text()},
			}},
		}, nil
	})

	s.AddResource(&mcp.Resource{URI: NotesURI, Name: "notes", Description: "All stored notes", MIMEType: "text/plain"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: NotesURI, MIMEType: "text/plain", Text: n.text()}}}, nil
		})
	return s
}

// Handler serves one demo server over Streamable HTTP (with sessions).
func Handler() http.Handler {
	s := NewServer()
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
