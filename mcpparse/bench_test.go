package mcpparse

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
)

// benchBodies are the request bodies BenchmarkParse reads.
func benchBodies() []struct {
	name string
	body []byte
	lim  Limits
} {
	small := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{"location":"Seattle, WA"},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"ExampleClient","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}`

	// About 1 MB of arguments: many keys, nested records and a long text.
	var args strings.Builder
	args.WriteString(`{"document":"` + strings.Repeat("lorem ipsum dolor sit amet ", 10000) + `","rows":[`)
	for i := range 5000 {
		if i > 0 {
			args.WriteByte(',')
		}
		fmt.Fprintf(&args, `{"id":%d,"name":"row %d","tags":["a","b","c"],"attrs":{"x":%d.5,"y":true,"z":null}}`, i, i, i)
	}
	args.WriteString(`]}`)
	large := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ingest","arguments":` + args.String() + `}}`

	var batch strings.Builder
	batch.WriteByte('[')
	for i := range 50 {
		if i > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"tool_%d","arguments":{"q":"query %d"}}}`, i, i, i)
	}
	batch.WriteByte(']')

	return []struct {
		name string
		body []byte
		lim  Limits
	}{
		{"small", []byte(small), Limits{}},
		{"large", []byte(large), Limits{}},
		{"batch50", []byte(batch.String()), Limits{AllowBatches: true}},
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bb := range benchBodies() {
		for _, r := range []struct {
			name  string
			parse func([]byte, Limits) ([]Message, bool, error)
		}{{"", Parse}, {"/full", parseFull}} { // full: without the fast path
			b.Run(bb.name+r.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(bb.body)))
				for b.Loop() {
					if _, _, err := r.parse(bb.body, bb.lim); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkEncodingJSON is the baseline: encoding/json decoding the same
// bodies into the Go MCP SDK's shape (which checks nothing of the above).
func BenchmarkEncodingJSON(b *testing.B) {
	type params struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	type msg struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  string          `json:"method"`
		Params  params          `json:"params"`
	}
	for _, bb := range benchBodies() {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				var err error
				if bb.lim.AllowBatches {
					var m []msg
					err = json.Unmarshal(bb.body, &m)
				} else {
					var m msg
					err = json.Unmarshal(bb.body, &m)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFilterToolsList(b *testing.B) {
	var msg strings.Builder
	msg.WriteString(`{"jsonrpc":"2.0","id":4,"result":{"tools":[`)
	for i := range 200 {
		if i > 0 {
			msg.WriteByte(',')
		}
		fmt.Fprintf(&msg, `{"name":"tool_%d","description":"Tool number %d","inputSchema":{"type":"object","properties":{"q":{"type":"string"}},"required":["q"]}}`, i, i)
	}
	msg.WriteString(`]}}`)
	body := []byte(msg.String())
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := FilterToolsList(body, func(n string) bool { return len(n)%2 == 0 }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReader(b *testing.B) {
	ev := "event: message\ndata: " + `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"abc123","progress":50,"total":100}}` + "\n\n"
	stream := strings.Repeat(ev, 1000)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		r := NewReader(strings.NewReader(stream), 0)
		for {
			if _, err := r.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestMethodAndVersionStrings(t *testing.T) {
	for _, s := range []string{"tools/call", "subscriptions/listen", "x/unknown", "", "tools/call "} {
		if got := method([]byte(s)); got != s {
			t.Errorf("method(%q) = %q", s, got)
		}
	}
	for _, s := range []string{"2026-07-28", "2025-11-25", "2025-06-18", "2024-11-05", "2099-01-01"} {
		if got := version([]byte(s)); got != s {
			t.Errorf("version(%q) = %q", s, got)
		}
	}
}

// BenchmarkSplitter: BenchmarkReader's stream fed in the 32 KiB pieces
// of reverse_proxy's copy buffer.
func BenchmarkSplitter(b *testing.B) {
	ev := "event: message\ndata: " + `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"abc123","progress":50,"total":100}}` + "\n\n"
	stream := []byte(strings.Repeat(ev, 1000))
	emit := func(Event) error { return nil }
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		s := NewSplitter(0)
		for p := stream; len(p) > 0; {
			n := min(len(p), 32<<10)
			if err := s.Feed(p[:n], emit); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
		if err := s.End(); err != nil {
			b.Fatal(err)
		}
	}
}
