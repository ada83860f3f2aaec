package mcpparse

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// readAll returns every event of stream, and the error that ended it.
func readAll(r *Reader) ([]Event, error) {
	var evs []Event
	for {
		ev, err := r.Next()
		if err != nil {
			return evs, err
		}
		ev.Raw = bytes.Clone(ev.Raw)
		evs = append(evs, ev)
	}
}

var ignoreRaw = cmpopts.IgnoreFields(Event{}, "Raw")

func TestReader(t *testing.T) {
	tests := []struct {
		name    string
		stream  string
		want    []Event
		wantErr error
	}{
		{"one event", "event: message\nid: 1\ndata: {}\n\n",
			[]Event{{Event: "message", ID: "1", Data: "{}", HasID: true, HasData: true}}, io.EOF},
		{"multi-line data", "data: a\ndata:  b\ndata:c\n\n",
			[]Event{{Data: "a\n b\nc", HasData: true}}, io.EOF},
		{"CRLF", "data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
			[]Event{{Data: "a\nb", HasData: true}, {Data: "c", HasData: true}}, io.EOF},
		{"CR", "data: a\rdata: b\r\rdata: c\r\r",
			[]Event{{Data: "a\nb", HasData: true}, {Data: "c", HasData: true}}, io.EOF},
		{"mixed terminators", "data: a\r\ndata: b\rdata: c\n\r\n",
			[]Event{{Data: "a\nb\nc", HasData: true}}, io.EOF},
		{"empty data still an event", "data\n\ndata:\n\n",
			[]Event{{HasData: true}, {HasData: true}}, io.EOF},
		{"comments are kept", ": keep-alive\n\n:a\n: b\ndata: x\n\n",
			[]Event{{Comment: " keep-alive", HasComment: true}, {Comment: "a\n b", HasComment: true, Data: "x", HasData: true}}, io.EOF},
		{"empty comment", ":\n\n", []Event{{HasComment: true}}, io.EOF},
		{"extra blank lines", "\n\n\ndata: x\n\n\n\n", []Event{{Data: "x", HasData: true}}, io.EOF},
		{"last event and id field win", "event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n",
			[]Event{{Event: "b", ID: "2", HasID: true, Data: "x", HasData: true}}, io.EOF},
		{"empty id resets", "id\n\n", []Event{{HasID: true}}, io.EOF},
		{"id with NUL is ignored", "id: a\x00b\ndata: x\n\n", []Event{{Data: "x", HasData: true}}, io.EOF},
		{"retry digits only", "retry: 3000\n\nretry: 3s\n\nretry:\n\n",
			[]Event{{Retry: "3000"}, {}, {}}, io.EOF},
		{"unknown field ignored", "foo: bar\ndata: x\n\n", []Event{{Data: "x", HasData: true}}, io.EOF},
		{"only one space stripped", "data:   x  \n\n", []Event{{Data: "  x  ", HasData: true}}, io.EOF},
		{"colon in value", "data: a:b: c\n\n", []Event{{Data: "a:b: c", HasData: true}}, io.EOF},
		{"field names are case-sensitive", "Data: x\nDATA: y\n\n", []Event{{}}, io.EOF},
		{"byte order mark", "\uFEFFdata: x\n\n", []Event{{Data: "x", HasData: true}}, io.EOF},
		{"only the first byte order mark", "\uFEFFdata: x\n\n\uFEFFdata: y\n\n", []Event{{Data: "x", HasData: true}, {}}, io.EOF},
		{"unfinished event is discarded", "data: x\n\ndata: y\n", []Event{{Data: "x", HasData: true}}, io.ErrUnexpectedEOF},
		{"unterminated line", "data: x", nil, io.ErrUnexpectedEOF},
		{"empty stream", "", nil, io.EOF},
		{"invalid UTF-8", "data: \xff\n\n", nil, ErrInvalidEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, rd := range []struct {
				name string
				r    func(string) io.Reader
			}{
				{"whole", func(s string) io.Reader { return strings.NewReader(s) }},
				{"byte by byte", func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
			} {
				got, err := readAll(NewReader(rd.r(tt.stream), 0))
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("%s: Next() error = %v, want %v", rd.name, err, tt.wantErr)
				}
				if diff := cmp.Diff(tt.want, got, ignoreRaw, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("%s: events of %q (-want +got):\n%s", rd.name, tt.stream, diff)
				}
			}
		})
	}
}

func TestReaderRawIsExact(t *testing.T) {
	streams := []string{
		"event: message\nid: 1\ndata: {}\n\n",
		"data: a\r\n: c\r\nfoo\r\n\r\ndata: b\r\n\r\n",
		"data: a\rdata: b\r\rdata: c\r\r",
		"\uFEFFid: 0\ndata:\n\nretry: 10\n\n",
	}
	files, _ := filepath.Glob("testdata/sse/*.sse")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, string(b))
	}
	for _, s := range streams {
		evs, err := readAll(NewReader(strings.NewReader(s), 0))
		if err != io.EOF {
			t.Errorf("events of %q: error = %v, want EOF", s, err)
		}
		var out bytes.Buffer
		for _, ev := range evs {
			if err := CopyEvent(&out, ev); err != nil {
				t.Fatal(err)
			}
		}
		if out.String() != s {
			t.Errorf("CopyEvent of every event of %q = %q, want the stream itself", s, out.String())
		}
	}
}

func TestReaderCorpus(t *testing.T) {
	// Every data payload of the corpus streams is one JSON-RPC message.
	files, _ := filepath.Glob("testdata/sse/*.sse")
	if len(files) == 0 {
		t.Fatal("no SSE corpus")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			evs, err := readAll(NewReader(bytes.NewReader(b), 0))
			if err != io.EOF {
				t.Fatalf("Next() error = %v, want EOF", err)
			}
			n := 0
			for _, ev := range evs {
				if ev.Data == "" {
					continue
				}
				n++
				if _, _, err := Parse([]byte(ev.Data), Limits{}); err != nil {
					t.Errorf("Parse(data of event %q) error = %v", ev.Data, err)
				}
			}
			if n == 0 {
				t.Errorf("%s has no message", f)
			}
		})
	}
}

func TestReaderMaxEvent(t *testing.T) {
	tests := []struct {
		name    string
		stream  string
		max     int
		wantN   int
		wantErr error
	}{
		{"event at the limit", "data: 12345\n\n", len("data: 12345\n\n"), 1, io.EOF},
		{"event over the limit", "data: 123456\n\n", len("data: 12345\n\n"), 0, ErrEventTooLarge},
		{"long line", "data: " + strings.Repeat("x", 10000) + "\n\n", 100, 0, ErrEventTooLarge},
		{"many lines", strings.Repeat("data: x\n", 100) + "\n", 100, 0, ErrEventTooLarge},
		{"the limit is per event", strings.Repeat("data: 1234\n\n", 100), len("data: 1234\n\n"), 100, io.EOF},
		{"blank lines do not add up", strings.Repeat("\n", 1000) + "data: 1\n\n", 20, 1, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := readAll(NewReader(strings.NewReader(tt.stream), tt.max))
			if len(evs) != tt.wantN || !errors.Is(err, tt.wantErr) {
				t.Errorf("events = %d, error %v; want %d, %v", len(evs), err, tt.wantN, tt.wantErr)
			}
		})
	}
}

func TestWriteEvent(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"message", Event{Event: "message", ID: "1", HasID: true, Data: `{"jsonrpc":"2.0"}`, HasData: true},
			"event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\"}\n\n"},
		{"multi-line data", Event{Data: "a\n b\n", HasData: true}, "data: a\ndata:  b\ndata: \n\n"},
		{"empty data", Event{HasData: true}, "data: \n\n"},
		{"data without HasData", Event{Data: "x"}, "data: x\n\n"},
		{"comment only", Event{Comment: " keep-alive", HasComment: true}, ": keep-alive\n\n"},
		{"empty comment", Event{HasComment: true}, ":\n\n"},
		{"empty id", Event{HasID: true}, "id: \n\n"},
		{"retry", Event{Retry: "3000"}, "retry: 3000\n\n"},
		{"nothing", Event{}, "\n"},
		{"all fields in order", Event{Comment: "c", Event: "e", ID: "i", Retry: "1", Data: "d"}, ":c\nevent: e\nid: i\nretry: 1\ndata: d\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteEvent(&b, tt.ev); err != nil {
				t.Fatalf("WriteEvent() error = %v", err)
			}
			if b.String() != tt.want {
				t.Errorf("WriteEvent() wrote %q, want %q", b.String(), tt.want)
			}
			// What is written reads back as the same event.
			got, err := NewReader(&b, 0).Next()
			if tt.want == "\n" {
				if err != io.EOF {
					t.Errorf("Next() after an empty event = %v, want EOF", err)
				}
				return
			}
			want := tt.ev
			want.HasData = want.HasData || want.Data != ""
			want.HasID = want.HasID || want.ID != ""
			want.HasComment = want.HasComment || want.Comment != ""
			if err != nil {
				t.Fatalf("Next() error = %v", err)
			}
			if diff := cmp.Diff(want, got, ignoreRaw); diff != "" {
				t.Errorf("event read back (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteEventRefuses(t *testing.T) {
	for _, ev := range []Event{
		{Event: "a\nb"}, {Event: "a\rb"}, {ID: "a\nb"}, {ID: "a\x00b"},
		{Retry: "3s"}, {Retry: "1\n"}, {Data: "a\rb"}, {Comment: "a\r"},
	} {
		var b bytes.Buffer
		if err := WriteEvent(&b, ev); !errors.Is(err, ErrInvalidEvent) || b.Len() != 0 {
			t.Errorf("WriteEvent(%+v) = %v, wrote %q; want %v and nothing written", ev, err, b.String(), ErrInvalidEvent)
		}
	}
}

func TestCopyEventWithoutRaw(t *testing.T) {
	var b bytes.Buffer
	if err := CopyEvent(&b, Event{Data: "x"}); err != nil || b.String() != "data: x\n\n" {
		t.Errorf("CopyEvent() wrote %q, %v; want %q", b.String(), err, "data: x\n\n")
	}
}

// TestSplitterDetach: Detach hands back every byte fed that was not
// emitted as an event, exactly as it came, so that what was emitted, then
// those bytes, then the pieces not fed make up the stream: an unfinished
// event, or, after a fault in the stream (an event over the bound, one
// not UTF-8), all of the event it failed on and the rest of the piece.
// After End, nothing can be handed back.
func TestSplitterDetach(t *testing.T) {
	big := "data: " + strings.Repeat("x", 40) + "\n\n"
	for _, tc := range []struct {
		name    string
		stream  string
		piece   int    // fed in pieces of this many bytes
		stopAt  int    // pieces fed at most
		emitted string // the prefix emitted as events
		fault   error
	}{
		{name: "unfinished event", stream: "data: a\n\ndata: b\n\n", piece: 3, stopAt: 4, emitted: "data: a\n\n"},
		{name: "nothing unfinished", stream: "data: a\n\ndata: b\n\n", piece: 9, stopAt: 1, emitted: "data: a\n\n"},
		{name: "an event over the bound", stream: "data: a\n\n" + big + "data: c\n\n", piece: 5, stopAt: 100, emitted: "data: a\n\n", fault: ErrEventTooLarge},
		{name: "an event over the bound, fed whole", stream: "data: a\n\n" + big + "data: c\n\n", piece: 1000, stopAt: 100, emitted: "data: a\n\n", fault: ErrEventTooLarge},
		{name: "an event not UTF-8", stream: "data: a\n\ndata: \xff\n\ndata: c\n\n", piece: 4, stopAt: 100, emitted: "data: a\n\n", fault: ErrInvalidEvent},
		{name: "after CRLF cut at its LF", stream: "data: a\r\n\r\ndata: b", piece: 10, stopAt: 2, emitted: "data: a\r\n\r"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSplitter(32)
			var emitted strings.Builder
			var pieces []string
			for p := tc.stream; len(p) > 0; {
				n := min(tc.piece, len(p))
				pieces, p = append(pieces, p[:n]), p[n:]
			}
			fed := 0
			for fed < len(pieces) && fed < tc.stopAt {
				err := s.Feed([]byte(pieces[fed]), func(ev Event) error { emitted.Write(ev.Raw); return nil })
				fed++
				if err != nil {
					if !errors.Is(err, tc.fault) || tc.fault == nil {
						t.Fatalf("Feed = %v, want %v", err, tc.fault)
					}
					break
				}
			}
			rest, ok := s.Detach()
			if !ok {
				t.Fatal("Detach() ok = false, want true")
			}
			if got := emitted.String(); got != tc.emitted {
				t.Errorf("emitted %q, want %q", got, tc.emitted)
			}
			if got, want := tc.emitted+string(rest)+strings.Join(pieces[fed:], ""), tc.stream; got != want {
				t.Errorf("emitted, Detach() and the pieces not fed = %q, want the stream %q", got, want)
			}
			if err := s.Feed([]byte("data: d\n\n"), func(Event) error { t.Error("an event after Detach"); return nil }); err == nil {
				t.Error("Feed after Detach = nil, want an error")
			}
		})
	}
	s := NewSplitter(0)
	s.Feed([]byte("data: a"), func(Event) error { return nil })
	s.End()
	if rest, ok := s.Detach(); ok || rest != nil {
		t.Errorf("Detach() after End = %q, %v, want nil, false", rest, ok)
	}
}
