//go:build !race

// Allocation counts hold only without the race detector, whose
// instrumentation moves values to the heap.

package mcpparse

import (
	"io"
	"strings"
	"testing"
)

// TestParseAllocations: reading a usual tools/call allocates the message
// slice and the tool's name, nothing per member (part of the design: the
// method and protocol version are the same strings for every request).
func TestParseAllocations(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
		want float64
	}{
		{"2025-11-25", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`, 2},
		{"2026-07-28 with _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},` +
			`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"}}}}`, 2},
	} {
		body := []byte(tt.body)
		var msgs []Message
		got := testing.AllocsPerRun(100, func() {
			var err error
			if msgs, _, err = Parse(body, Limits{}); err != nil {
				t.Fatal(err)
			}
		})
		if got != tt.want {
			t.Errorf("%s: Parse allocates %v times, want %v", tt.name, got, tt.want)
		}
		if msgs[0].Method != "tools/call" || msgs[0].Name != "echo" {
			t.Errorf("%s: Parse = method %q name %q, want tools/call echo", tt.name, msgs[0].Method, msgs[0].Name)
		}
	}
}

// TestLocateStringAllocations: finding a task id or request state in a
// small message reuses a pooled tokenizer (part of the design: the
// gateway does it for every answer to a request that declares the Tasks
// extension); what it allocates is the value it returns.
func TestLocateStringAllocations(t *testing.T) {
	for _, tt := range []struct {
		name, msg string
		path      []string
		want      float64
	}{
		{"task id", `{"jsonrpc":"2.0","id":1,"result":{"content":[],"taskId":"t-1"}}`, []string{"result", "taskId"}, 1},
		{"escaped", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}],"taskId":"t\u002d1"}}`, []string{"result", "taskId"}, 1},
		{"absent", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}]}}`, []string{"result", "taskId"}, 0},
	} {
		msg := []byte(tt.msg)
		var s Span
		got := testing.AllocsPerRun(100, func() {
			var err error
			if s, _, err = LocateString(msg, tt.path...); err != nil {
				t.Fatal(err)
			}
		})
		if got != tt.want {
			t.Errorf("%s: LocateString allocates %v times, want %v", tt.name, got, tt.want)
		}
		if tt.want > 0 && s.Value != "t-1" {
			t.Errorf("%s: LocateString = %q, want t-1", tt.name, s.Value)
		}
	}
}

// TestWriteEventAllocations: writing an event makes one buffer, whatever
// its size (part of the design: the gateway writes every event of every
// event stream it reads).
func TestWriteEventAllocations(t *testing.T) {
	for _, tt := range []struct {
		name string
		ev   Event
	}{
		{"small answer", Event{Event: "message", ID: "1", HasID: true, Data: `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`, HasData: true}},
		{"64 KiB text", Event{Event: "message", Data: `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"` + strings.Repeat("ab", 32<<10) + `"}]}}`, HasData: true}},
		{"lines and a comment", Event{Comment: "keep\nalive", HasComment: true, Retry: "1000", Data: "a\nb\n\nc", HasData: true}},
	} {
		got := testing.AllocsPerRun(100, func() {
			if err := WriteEvent(io.Discard, tt.ev); err != nil {
				t.Fatal(err)
			}
		})
		if got != 1 {
			t.Errorf("%s: WriteEvent allocates %v times, want 1", tt.name, got)
		}
	}
}
