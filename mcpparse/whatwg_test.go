package mcpparse

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// whatwgBlocks parses stream as the WHATWG EventSource parser does
// (html.spec.whatwg.org, "Interpreting an event stream"), written
// independently of Splitter: one leading BOM is dropped, lines end with
// CRLF, LF or CR, a blank line ends a block. It returns, for every block
// with at least one non-blank line that a blank line ends, what a
// browser would see: data (with the flag that a data field was present),
// the event type, the id. An unfinished last block is discarded.
func whatwgBlocks(stream string) []Event {
	stream = strings.TrimPrefix(stream, "\uFEFF")
	var out []Event
	var cur Event
	var data []string
	nonBlank := false
	for {
		i := strings.IndexAny(stream, "\r\n")
		if i < 0 {
			return out // the rest is an unfinished line: discarded
		}
		line := stream[:i]
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		stream = stream[i+1:]
		if line == "" {
			if nonBlank {
				cur.Data, cur.HasData = strings.Join(data, "\n"), data != nil
				out = append(out, cur)
			}
			cur, data, nonBlank = Event{}, nil, false
			continue
		}
		nonBlank = true
		if line[0] == ':' {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if ok {
			value = strings.TrimPrefix(value, " ")
		}
		switch name {
		case "data":
			data = append(data, value)
		case "event":
			cur.Event = value
		case "id":
			if !strings.Contains(value, "\x00") {
				cur.ID, cur.HasID = value, true
			}
		}
	}
}

// sseFragments are the pieces random streams are built from: every line
// terminator, field names with and without colons and spaces, the BOM,
// NUL, non-ASCII text.
var sseFragments = []string{
	"\r", "\n", "\r\n", "\n\n", "\r\r", ":", ": ", "data", "data:", "data: ", "Data:",
	"id:", "id", "event:", "event: ", "retry: 5", "\uFEFF", "\x00", "x", "{\"a\":1}", "é", " ",
	"tools", "\u2028", "\u0085",
}

// randomStream is up to 40 fragments of sseFragments.
func randomStream(rnd *rand.Rand) string {
	var sb strings.Builder
	for range rnd.IntN(40) {
		sb.WriteString(sseFragments[rnd.IntN(len(sseFragments))])
	}
	return sb.String()
}

// TestSplitterMatchesWHATWG: over random streams and random cuts, the
// Splitter emits exactly the blocks a browser's EventSource parser
// finds, with the same data, type and id.
func TestSplitterMatchesWHATWG(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		stream := randomStream(rnd)
		want := whatwgBlocks(stream)
		var chunks [][]byte
		for p := []byte(stream); len(p) > 0; {
			n := 1 + rnd.IntN(len(p))
			chunks = append(chunks, p[:n])
			p = p[n:]
		}
		s := NewSplitter(0)
		var got []Event
		var err error
		for _, c := range chunks {
			if err = s.Feed(c, func(ev Event) error { got = append(got, ev); return nil }); err != nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("stream %q cut %q: %v", stream, chunks, err)
		}
		if len(got) != len(want) {
			t.Fatalf("stream %q cut %q: %d events, a browser sees %d:\ngot  %+v\nwant %+v", stream, chunks, len(got), len(want), got, want)
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Data != w.Data || g.HasData != w.HasData || g.Event != w.Event || g.ID != w.ID || g.HasID != w.HasID {
				t.Fatalf("stream %q cut %q: event %d\ngot  %+v\nwant %+v", stream, chunks, i, g, w)
			}
		}
	}
}

// TestWriteEventReadBack: what the gateway writes (WriteEvent of an event
// the Splitter read) is read back by a browser as the same event.
func TestWriteEventReadBack(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		stream := randomStream(rnd)
		var out bytes.Buffer
		var evs []Event
		err := NewSplitter(0).Feed([]byte(stream), func(ev Event) error {
			evs = append(evs, ev)
			return WriteEvent(&out, ev)
		})
		if errors.Is(err, ErrInvalidEvent) && (!utf8.ValidString(stream) || strings.ContainsAny(stream, splitlinesBreaks)) {
			continue // refused: not UTF-8, or a value WriteEvent will not write as is
		}
		if err != nil {
			t.Fatalf("stream %q: %v", stream, err)
		}
		// Events with neither data nor id change nothing in a browser.
		visible := func(evs []Event) []Event {
			var out []Event
			for _, ev := range evs {
				if ev.HasData || ev.HasID {
					out = append(out, ev)
				}
			}
			return out
		}
		back, evs := visible(whatwgBlocks(out.String())), visible(evs)
		if len(back) != len(evs) {
			t.Fatalf("stream %q written as %q: a browser reads %d events, want %d", stream, out.String(), len(back), len(evs))
		}
		for i := range back {
			g, w := back[i], evs[i]
			// NEL, U+2028 and U+2029 in data are written as JSON escapes.
			if g.Data != jsonLineEscapes.Replace(w.Data) || g.HasData != w.HasData || g.Event != w.Event || g.ID != w.ID || g.HasID != w.HasID {
				t.Fatalf("stream %q written as %q: event %d read back as %+v, want %+v", stream, out.String(), i, g, w)
			}
		}
	}
}
