package mcpparse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// chunkReader returns its chunks one per Read, as a network connection
// might.
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// splitAll feeds chunks to a Splitter and returns the events emitted and
// the error that ended the stream (io.EOF for a clean end, as Reader).
func splitAll(chunks [][]byte, max int) ([]Event, error) {
	s := NewSplitter(max)
	var evs []Event
	emit := func(ev Event) error {
		ev.Raw = bytes.Clone(ev.Raw)
		evs = append(evs, ev)
		return nil
	}
	for _, c := range chunks {
		if err := s.Feed(c, emit); err != nil {
			return evs, err
		}
		if s.Held() > 0 && len(evs) > 0 && bytes.HasSuffix(c, evs[len(evs)-1].Raw) {
			return evs, fmt.Errorf("the splitter holds %d bytes after a complete event", s.Held())
		}
	}
	if err := s.End(); err != nil {
		return evs, err
	}
	return evs, io.EOF
}

// errKind names the errors a stream can end with.
func errKind(err error) string {
	for _, e := range []error{io.ErrUnexpectedEOF, io.EOF, ErrEventTooLarge, ErrInvalidEvent} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return fmt.Sprintf("other: %v", err)
}

// chunkings returns ways to cut stream: whole, byte by byte, at every
// point in two if it is no longer than short, and at random points.
func chunkings(stream []byte, short int, rnd *rand.Rand) [][][]byte {
	out := [][][]byte{{stream}}
	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	out = append(out, bytewise)
	if len(stream) <= short {
		for i := 1; i < len(stream); i++ {
			out = append(out, [][]byte{stream[:i], stream[i:]})
		}
	}
	for range 20 {
		var c [][]byte
		for rest := stream; len(rest) > 0; {
			n := 1 + rnd.IntN(min(len(rest), 64))
			c, rest = append(c, rest[:n]), rest[n:]
		}
		out = append(out, c)
	}
	return out
}

// comparable drops from Raw what depends on where the stream was cut:
// the '\n' of a "\r\n" that ends an event goes with it only if it came
// in the same piece, and begins the next event otherwise.
var comparable = cmp.Transformer("raw", func(raw []byte) string {
	return strings.TrimSuffix(strings.TrimPrefix(string(raw), "\n"), "\n")
})

// checkSplitter asserts that Splitter.Feed emits, for every chunking of
// stream, what Reader.Next returns from the same pieces, and that the
// events do not depend on the chunking.
func checkSplitter(t *testing.T, stream []byte, max, short int, rnd *rand.Rand) {
	t.Helper()
	var whole []Event
	var wholeErr error
	for i, chunks := range chunkings(stream, short, rnd) {
		read, readErr := readAll(NewReader(&chunkReader{chunks: slices.Clone(chunks)}, max))
		split, splitErr := splitAll(chunks, max)
		if errKind(splitErr) != errKind(readErr) {
			t.Fatalf("%q cut as %q, max %d: Splitter error %v, Reader %v", stream, chunks, max, splitErr, readErr)
		}
		if !cmp.Equal(read, split, cmpopts.EquateEmpty()) {
			diff := cmp.Diff(read, split, cmpopts.EquateEmpty())
			t.Fatalf("%q cut as %q, max %d: events (-Reader +Splitter):\n%s", stream, chunks, max, diff)
		}
		if i == 0 {
			whole, wholeErr = split, splitErr
			continue
		}
		if errKind(splitErr) != errKind(wholeErr) {
			t.Fatalf("%q cut as %q, max %d: error %v, whole %v", stream, chunks, max, splitErr, wholeErr)
		}
		if !cmp.Equal(whole, split, comparable, cmpopts.EquateEmpty()) {
			diff := cmp.Diff(whole, split, comparable, cmpopts.EquateEmpty())
			t.Fatalf("%q cut as %q, max %d: events (-whole +cut):\n%s", stream, chunks, max, diff)
		}
	}
}

// sseTokens are the pieces generated streams are made of: every line
// terminator, fields, comments, the byte order mark, invalid UTF-8.
var sseTokens = []string{
	"\n", "\r", "\r\n", "\n\n", "\r\r", "\r\n\r\n", "data: x", "data:", "data", ": c", ":", "id: 7", "id",
	"event: message", "event: e", "retry: 30", "retry: 3s", "foo", "\uFEFF", "\xff", "\xef\xbb", "é", `{"jsonrpc":"2.0"}`,
}

func generatedStream(rnd *rand.Rand) []byte {
	var b []byte
	for range 1 + rnd.IntN(24) {
		b = append(b, sseTokens[rnd.IntN(len(sseTokens))]...)
	}
	return b
}

func TestSplitterMatchesReader(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var streams [][]byte
	files, _ := filepath.Glob("testdata/sse/*.sse")
	if len(files) == 0 {
		t.Fatal("no SSE corpus")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, b)
	}
	for _, s := range []string{
		"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n", "data: a\rdata: b\r\rdata: c\r\r",
		"data: a\r\ndata: b\rdata: c\n\r\n", "\n\n\ndata: x\n\n\n\n", "\r\n\r\n\r\ndata: x\r\n\r\n",
		"\uFEFFdata: x\n\n\uFEFFdata: y\n\n", "\uFEFF\n\uFEFFdata: y\n\n", "\uFEFF", "data: x\n\ndata: y\n",
		"data: x", "", "data: \xff\n\n", "data: x\n\ndata: \xff\n", ": keep-alive\r\r\n: keep-alive\r\r\n",
	} {
		streams = append(streams, []byte(s))
	}
	for _, s := range streams {
		for _, max := range []int{0, 12} {
			checkSplitter(t, s, max, 512, rnd)
		}
	}
	for range 200 {
		checkSplitter(t, generatedStream(rnd), 8+rnd.IntN(16), 64, rnd)
	}
}

// TestSplitterLargeStream cuts a stream longer than Reader's buffer.
func TestSplitterLargeStream(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	var b bytes.Buffer
	for b.Len() < 20000 {
		b.Write(generatedStream(rnd))
		b.WriteString("data: " + strings.Repeat("y", rnd.IntN(3000)) + "\r\n\r\n")
	}
	checkSplitter(t, b.Bytes(), 0, 0, rnd)
}

func TestSplitterHoldsOnlyUnfinished(t *testing.T) {
	s := NewSplitter(0)
	var got []string
	emit := func(ev Event) error { got = append(got, ev.Data); return nil }
	for _, step := range []struct {
		feed string
		held bool
	}{
		{"data: a\n", true},
		{"\n", false},
		{"data: b\n\ndata: c", true},
		{"\n\n: keep-alive\n\n", false},
		{"\n\n", false},
		{"data: d\r\r", false},
		{"\n", false}, // the end of the last event's "\r\n"
		{"data: e", true},
	} {
		if err := s.Feed([]byte(step.feed), emit); err != nil {
			t.Fatalf("Feed(%q) = %v", step.feed, err)
		}
		if held := s.Held() > 0; held != step.held {
			t.Errorf("after Feed(%q): Held() = %d, want held %v", step.feed, s.Held(), step.held)
		}
	}
	if err := s.End(); err != io.ErrUnexpectedEOF {
		t.Errorf("End() with an unfinished event = %v, want %v", err, io.ErrUnexpectedEOF)
	}
	if s.Held() != 0 {
		t.Errorf("Held() after End = %d, want 0", s.Held())
	}
	if want := []string{"a", "b", "c", "", "d"}; !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func TestSplitterErrors(t *testing.T) {
	stop := errors.New("stop")
	tests := []struct {
		name   string
		chunks []string
		emit   error
		want   error
		events int
	}{
		{"emit error stops the stream", []string{"data: a\n\ndata: b\n\n", "data: c\n\n"}, stop, stop, 1},
		{"too large across pieces", []string{"data: 1234", "5678\n", "\n"}, nil, ErrEventTooLarge, 0},
		{"invalid UTF-8 at the end of its line", []string{"data: a\n\ndata: \xff", "\n"}, nil, ErrInvalidEvent, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSplitter(12)
			n := 0
			emit := func(Event) error { n++; return tt.emit }
			var err error
			for _, c := range tt.chunks {
				if err = s.Feed([]byte(c), emit); err != nil {
					break
				}
			}
			if !errors.Is(err, tt.want) || n != tt.events {
				t.Errorf("Feed() = %v after %d events, want %v after %d", err, n, tt.want, tt.events)
			}
			if again := s.Feed([]byte("data: z\n\n"), emit); !errors.Is(again, tt.want) || n != tt.events {
				t.Errorf("Feed() after the error = %v, %d events; want %v, %d", again, n, tt.want, tt.events)
			}
			if end := s.End(); !errors.Is(end, tt.want) {
				t.Errorf("End() = %v, want %v", end, tt.want)
			}
		})
	}
}
