package mcpparse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// DefaultMaxEvent bounds an event when NewReader is given no size.
const DefaultMaxEvent = 4 << 20

// ErrEventTooLarge is returned by Reader.Next when an event (all its lines,
// terminators included) exceeds the reader's bound.
var ErrEventTooLarge = errors.New("mcpparse: event too large")

// ErrInvalidEvent is returned by Reader.Next for a stream that is not
// UTF-8, and by WriteEvent for an event that cannot be written without
// changing its meaning.
var ErrInvalidEvent = errors.New("mcpparse: invalid event")

// Event is one server-sent event, as a WHATWG EventSource would see it,
// plus what it ignores (comments) so that it can be re-emitted.
type Event struct {
	Event string // the event type, "" for the default ("message")
	ID    string
	Data  string // data lines joined with "\n"
	Retry string // only if all ASCII digits, as the spec requires
	// Comment holds the text after ':' of each comment line, joined
	// with "\n".
	Comment string

	// HasData, HasID and HasComment tell an absent field from an empty
	// one: "data:" alone still dispatches a message event with empty
	// data, and "id:" alone resets the last event id.
	HasData, HasID, HasComment bool
	// Raw is the event's bytes exactly as read, its terminating blank
	// line included, so that an unchanged event can be passed on as is
	// (see CopyEvent). It is only valid until the next call to Next.
	Raw []byte
}

// Reader returns events one by one from an upstream text/event-stream per
// the WHATWG rules: lines end with "\n", "\r\n" or "\r"; a blank line ends
// an event; "field:value" lines lose one space after the colon; a line
// without a colon is a field with an empty value; unknown fields are
// ignored; comments start with ':'. It returns every block of lines that
// a blank line ends, even one without data (a keep-alive comment, an id),
// since a proxy must pass those on too.
type Reader struct {
	br      *bufio.Reader
	max     int
	started bool // the optional byte order mark has been dealt with
	skipLF  bool // the last line ended in '\r': a following '\n' is part of it
	raw     []byte
	line    []byte
	data    strings.Builder
	comment strings.Builder
}

// NewReader returns a Reader of r that refuses events larger than
// maxEvent bytes (DefaultMaxEvent when maxEvent <= 0).
func NewReader(r io.Reader, maxEvent int) *Reader {
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEvent
	}
	return &Reader{br: bufio.NewReader(r), max: maxEvent}
}

// Next returns the next event. At the end of the stream it returns io.EOF,
// or io.ErrUnexpectedEOF if the stream ended inside an event: like a
// browser, it discards such an event.
func (r *Reader) Next() (Event, error) {
	var ev Event
	r.raw = r.raw[:0]
	r.data.Reset()
	r.comment.Reset()
	lines := 0
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && lines > 0 {
				err = io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if lines == 0 {
				// Extra blank lines dispatch nothing; dropping them keeps
				// a stream of them from growing one event without bound.
				r.raw = r.raw[:0]
				continue
			}
			// A "\r" blank line may be the start of "\r\n": take the
			// '\n' if it is already here, so that Raw stays exact.
			if r.skipLF && r.br.Buffered() > 0 {
				if b, _ := r.br.Peek(1); b[0] == '\n' {
					r.br.Discard(1)
					r.raw = append(r.raw, '\n')
				}
				r.skipLF = false
			}
			ev.Data = r.data.String()
			ev.Comment = r.comment.String()
			ev.Raw = r.raw
			return ev, nil
		}
		lines++
		r.field(&ev, line)
	}
}

// field applies one non-blank line to ev.
func (r *Reader) field(ev *Event, line []byte) {
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(name) == 0 {
			if ev.HasComment {
				r.comment.WriteByte('\n')
			}
			r.comment.Write(value)
			ev.HasComment = true
			return
		}
		value = bytes.TrimPrefix(value, []byte(" "))
	}
	switch string(name) {
	case "event":
		ev.Event = string(value)
	case "data":
		if ev.HasData {
			r.data.WriteByte('\n')
		}
		r.data.Write(value)
		ev.HasData = true
	case "id":
		if bytes.IndexByte(value, 0) < 0 { // the spec ignores ids with NUL
			ev.ID, ev.HasID = string(value), true
		}
	case "retry":
		if len(value) > 0 && strings.Trim(string(value), "0123456789") == "" {
			ev.Retry = string(value)
		}
	}
}

// readLine returns the next line without its terminator, appending the
// line and its terminator to r.raw. The line is valid until the next call.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	if r.skipLF {
		b, err := r.br.Peek(1)
		if err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			r.br.Discard(1)
			r.raw = append(r.raw, '\n')
		}
		r.skipLF = false
	}
	for {
		if _, err := r.br.Peek(1); err != nil {
			if err == io.EOF && len(r.line) > 0 {
				err = io.ErrUnexpectedEOF // an unterminated last line
			}
			return nil, err
		}
		buf, _ := r.br.Peek(r.br.Buffered())
		i := bytes.IndexAny(buf, "\r\n")
		chunk := buf
		if i >= 0 {
			chunk = buf[:i+1]
		}
		if len(r.raw)+len(chunk) > r.max {
			return nil, fmt.Errorf("%w: over %d bytes", ErrEventTooLarge, r.max)
		}
		r.raw = append(r.raw, chunk...)
		if i < 0 {
			r.line = append(r.line, buf...)
			r.br.Discard(len(buf))
			continue
		}
		r.line = append(r.line, buf[:i]...)
		r.skipLF = buf[i] == '\r'
		r.br.Discard(i + 1)
		break
	}
	line := r.line
	if !r.started {
		r.started = true
		line = bytes.TrimPrefix(line, []byte("\uFEFF"))
	}
	if !utf8.Valid(line) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrInvalidEvent)
	}
	return line, nil
}

// WriteEvent writes one event in canonical form: comment lines, then
// event, id, retry and data fields, each "name: value\n", then a blank
// line. It refuses values that would be read back differently (a line
// break in Event, ID or Retry, a carriage return in Data or Comment, NUL
// in ID, a non-numeric Retry).
func WriteEvent(w io.Writer, ev Event) error {
	switch {
	case strings.ContainsAny(ev.Event, "\r\n"),
		strings.ContainsAny(ev.ID, "\r\n\x00"),
		strings.Trim(ev.Retry, "0123456789") != "",
		strings.ContainsRune(ev.Data, '\r'),
		strings.ContainsRune(ev.Comment, '\r'):
		return fmt.Errorf("%w: a field cannot be written as is", ErrInvalidEvent)
	}
	var b []byte
	if ev.HasComment || ev.Comment != "" {
		for line := range strings.SplitSeq(ev.Comment, "\n") {
			b = append(b, ':')
			b = append(b, line...)
			b = append(b, '\n')
		}
	}
	if ev.Event != "" {
		b = appendField(b, "event", ev.Event)
	}
	if ev.HasID || ev.ID != "" {
		b = appendField(b, "id", ev.ID)
	}
	if ev.Retry != "" {
		b = appendField(b, "retry", ev.Retry)
	}
	if ev.HasData || ev.Data != "" {
		for line := range strings.SplitSeq(ev.Data, "\n") {
			b = appendField(b, "data", line)
		}
	}
	b = append(b, '\n')
	_, err := w.Write(b)
	return err
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, '\n')
}

// CopyEvent passes an event on: its Raw bytes when it has them (an event
// from Reader.Next, unchanged), its canonical form otherwise. Callers that
// change an event clear Raw.
func CopyEvent(w io.Writer, ev Event) error {
	if ev.Raw == nil {
		return WriteEvent(w, ev)
	}
	_, err := w.Write(ev.Raw)
	return err
}
