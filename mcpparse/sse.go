package mcpparse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// DefaultMaxEvent bounds an event when NewReader or NewSplitter is given
// no size.
const DefaultMaxEvent = 4 << 20

const byteOrderMark = "\uFEFF"

func eventLimit(maxEvent int) int {
	if maxEvent <= 0 {
		return DefaultMaxEvent
	}
	return maxEvent
}

// ErrEventTooLarge is returned by Reader.Next and Splitter.Feed when an
// event (all its lines, terminators included) exceeds their bound.
var ErrEventTooLarge = errors.New("mcpparse: event too large")

// ErrInvalidEvent is returned by Reader.Next and Splitter.Feed for a
// stream that is not UTF-8, and by WriteEvent for an event that cannot be
// written without changing its meaning.
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
	// (see CopyEvent). It is only valid until the next call to Next, or
	// until the Splitter's emit returns.
	Raw []byte
}

// Reader returns events one by one from an upstream text/event-stream per
// the WHATWG rules: lines end with "\n", "\r\n" or "\r"; a blank line ends
// an event; "field:value" lines lose one space after the colon; a line
// without a colon is a field with an empty value; unknown fields are
// ignored; comments start with ':'. It returns every block of lines that
// a blank line ends, even one without data (a keep-alive comment, an id),
// since a proxy must pass those on too. It splits what it reads with a
// Splitter: it returns the events a Splitter fed the same reads emits.
type Reader struct {
	rd  io.Reader
	buf []byte
	p   []byte // what was read and not yet split
	err error  // the read error, returned once p is split
	s   Splitter
}

// NewReader returns a Reader of r that refuses events larger than
// maxEvent bytes (DefaultMaxEvent when maxEvent <= 0).
func NewReader(r io.Reader, maxEvent int) *Reader {
	return &Reader{rd: r, buf: make([]byte, 4096), s: Splitter{max: eventLimit(maxEvent)}}
}

// Next returns the next event. At the end of the stream it returns io.EOF,
// or io.ErrUnexpectedEOF if the stream ended inside an event: like a
// browser, it discards such an event. An event's Raw is valid until the
// next call.
func (r *Reader) Next() (Event, error) {
	for r.s.err == nil {
		if len(r.p) > 0 {
			ev, n, ok, err := r.s.next(r.p)
			r.p = r.p[n:]
			if err != nil {
				r.s.fail(err)
				break
			}
			if ok {
				return ev, nil
			}
		}
		switch {
		case r.err == io.EOF:
			if err := r.s.End(); err != nil {
				return Event{}, err
			}
			return Event{}, io.EOF
		case r.err != nil:
			return Event{}, r.err
		}
		n, err := r.rd.Read(r.buf)
		for i := 1; n == 0 && err == nil; i++ {
			if i == 100 { // as bufio.Reader does
				err = io.ErrNoProgress
				break
			}
			n, err = r.rd.Read(r.buf)
		}
		r.p, r.err = r.buf[:n], err
	}
	return Event{}, r.s.err
}

// Splitter finds the events of an upstream text/event-stream fed to it in
// pieces, as they arrive, by the rules Reader documents: the events of a
// stream do not depend on how it is cut. Between calls it holds only the
// bytes of an unfinished event; when the pieces fed so far end with
// complete events it holds no buffer at all, so an idle stream costs the
// Splitter's few words.
type Splitter struct {
	max     int
	started bool // the first line (and its optional byte order mark) has been read
	skipLF  bool // the last line ended in '\r': a following '\n' is part of it
	inLine  bool // a line has begun and its terminator not yet come
	lead    bool // the event begins with the '\n' of the last one's "\r\n"
	bom     bool // the event's first line began with the byte order mark
	lines   int  // the unfinished event's complete lines
	lineOff int  // where the current line begins in the event's bytes
	held    []byte
	err     error
}

// NewSplitter returns a Splitter that refuses events larger than maxEvent
// bytes (DefaultMaxEvent when maxEvent <= 0).
func NewSplitter(maxEvent int) *Splitter {
	return &Splitter{max: eventLimit(maxEvent)}
}

// Feed reads p, the next bytes of the stream, and calls emit with each
// event they complete, in order. An event's Raw is valid only until emit
// returns. Feed keeps no reference to p. It returns the first error of
// the stream (ErrEventTooLarge, ErrInvalidEvent) or of emit, and returns
// it again on every later call.
func (s *Splitter) Feed(p []byte, emit func(Event) error) error {
	for len(p) > 0 && s.err == nil {
		ev, n, ok, err := s.next(p)
		p = p[n:]
		switch {
		case err != nil:
			// Kept for Detach: the event failed on, and the rest of p.
			s.held, s.err = append(s.held, p...), err
		case ok:
			if err := emit(ev); err != nil {
				s.fail(err)
			}
		}
	}
	return s.err
}

// End ends the stream. Like a browser it discards an unfinished last
// event, and then returns io.ErrUnexpectedEOF; it returns the error that
// stopped Feed if there was one, nil otherwise.
func (s *Splitter) End() error {
	if s.err == nil && (s.lines > 0 || (s.inLine && len(s.held) > s.lineOff)) {
		s.err = io.ErrUnexpectedEOF
	}
	s.fail(s.err)
	return s.err
}

// Held is the capacity of the buffer holding an unfinished event: 0
// whenever the bytes fed so far end with a complete event.
func (s *Splitter) Held() int { return cap(s.held) }

// errDetached stops a Splitter after Detach.
var errDetached = errors.New("mcpparse: splitter detached")

// Detach stops the Splitter (Feed fails from then on) and returns the
// bytes fed to it that it has not emitted as events, exactly as they
// came: an unfinished event, or, after Feed failed on the stream
// (ErrEventTooLarge, ErrInvalidEvent), every byte fed from the start of
// the event it failed on. A caller that may pass a stream on unread
// writes them, then the stream's further bytes. ok is false when those
// bytes are gone: after End, or after emit failed.
func (s *Splitter) Detach() (rest []byte, ok bool) {
	rest, ok = s.held, s.err == nil || errors.Is(s.err, ErrEventTooLarge) || errors.Is(s.err, ErrInvalidEvent)
	s.fail(errDetached)
	if !ok {
		return nil, false
	}
	return rest, true
}

func (s *Splitter) fail(err error) {
	s.err, s.held = err, nil
}

// next reads p until it completes an event, which it returns with ok and
// the number of bytes of p it read (the event's bytes are p[:n] after the
// held ones). Otherwise it holds what it read of an unfinished event and
// returns len(p). A returned event is valid until the next call.
func (s *Splitter) next(p []byte) (ev Event, n int, ok bool, err error) {
	// The event's bytes are s.held, then p[start:pos]. As long as nothing
	// is held they stay in p and are copied only if p ends inside them;
	// once something is held, every byte read is appended to it at once.
	start, pos := 0, 0
	if s.lead && len(s.held) == 0 {
		s.held = append(s.held, '\n') // not held while idle: see below
	}
	take := func(k int) {
		if len(s.held) > 0 {
			s.held = append(s.held, p[pos:pos+k]...)
			start = pos + k
		}
		pos += k
	}
	event := func() []byte {
		if len(s.held) > 0 {
			return s.held
		}
		return p[start:pos]
	}
	for {
		if !s.inLine {
			if s.skipLF {
				if pos == len(p) {
					break
				}
				if p[pos] == '\n' {
					s.lead = s.lead || len(event()) == 0
					take(1)
				}
				s.skipLF = false
			}
			s.inLine, s.lineOff = true, len(event())
		}
		if pos == len(p) {
			break
		}
		rest := p[pos:]
		i := bytes.IndexAny(rest, "\r\n")
		k := len(rest)
		if i >= 0 {
			k = i + 1
		}
		// The '\n' of a "\r\n" that ended the last event is not counted,
		// so that the limit does not depend on where the stream was cut.
		if size := len(event()) + k; s.lead && size-1 > s.max || !s.lead && size > s.max {
			return s.failed(p[start:pos], pos, fmt.Errorf("%w: over %d bytes", ErrEventTooLarge, s.max))
		}
		take(k)
		if i < 0 {
			break
		}
		s.inLine = false
		s.skipLF = rest[i] == '\r'
		b := event()
		line := b[s.lineOff : len(b)-1]
		if !s.started {
			s.started = true
			if len(line) >= len(byteOrderMark) && string(line[:len(byteOrderMark)]) == byteOrderMark {
				line, s.bom = line[len(byteOrderMark):], true
			}
		}
		if !utf8.Valid(line) {
			return s.failed(p[start:pos], pos, fmt.Errorf("%w: not UTF-8", ErrInvalidEvent))
		}
		if len(line) > 0 {
			s.lines++
			continue
		}
		if s.lines == 0 {
			// Extra blank lines dispatch nothing; dropping them keeps
			// a stream of them from growing one event without bound.
			s.held, s.lead, s.bom, start = nil, false, false, pos
			continue
		}
		// A "\r" blank line may be the start of "\r\n": take the '\n' if
		// it is already here, so that Raw stays exact.
		if s.skipLF && pos < len(p) {
			if p[pos] == '\n' {
				take(1)
			}
			s.skipLF = false
		}
		ev = parseEvent(event(), s.lead, s.bom)
		s.held, s.lead, s.bom, s.lines = nil, false, false, 0
		return ev, pos, true, nil
	}
	// The '\n' of a "\r\n" that ended the last event, alone, is not held:
	// s.lead stands for it until more comes.
	if len(s.held) == 0 && start < len(p) && !(s.lead && start == len(p)-1) {
		s.held = append([]byte(nil), p[start:]...)
	}
	return Event{}, len(p), false, nil
}

// failed is next's answer to a fault in the stream after reading n bytes
// of p, the event's bytes in p being inP (none once anything is held):
// the Splitter holds every byte of the event read so far (for Detach).
func (s *Splitter) failed(inP []byte, n int, err error) (Event, int, bool, error) {
	s.held = append(s.held, inP...)
	return Event{}, n, false, err
}

// parseEvent reads the fields of an event's bytes, which end with its
// blank line; lead and bom say that they begin with the '\n' of the last
// event's "\r\n" or with the stream's byte order mark.
func parseEvent(raw []byte, lead, bom bool) Event {
	ev := Event{Raw: raw}
	b := raw
	if lead {
		b = b[1:]
	}
	if bom {
		b = b[len(byteOrderMark):]
	}
	var data, comment strings.Builder
	for {
		i := bytes.IndexAny(b, "\r\n")
		line := b[:i]
		if len(line) == 0 {
			break
		}
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		b = b[i+1:]
		field(&ev, line, &data, &comment)
	}
	ev.Data = data.String()
	ev.Comment = comment.String()
	return ev
}

// field applies one non-blank line to ev.
func field(ev *Event, line []byte, data, comment *strings.Builder) {
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(name) == 0 {
			if ev.HasComment {
				comment.WriteByte('\n')
			}
			comment.Write(value)
			ev.HasComment = true
			return
		}
		value = bytes.TrimPrefix(value, []byte(" "))
	}
	switch string(name) {
	case "event":
		if string(value) == "message" {
			ev.Event = "message" // the usual type, without an allocation
		} else {
			ev.Event = string(value)
		}
	case "data":
		if ev.HasData {
			data.WriteByte('\n')
		}
		data.Write(value)
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

// WriteEvent writes one event in canonical form: comment lines, then
// event, id, retry and data fields, each "name: value\n", then a blank
// line. It refuses values that would be read back differently (a line
// break in Event, ID or Retry, a carriage return in Data or Comment, NUL
// in ID, a non-numeric Retry).
//
// Clients that split lines the way Python's str.splitlines does (httpx's
// iter_lines, so httpx-sse before 0.4.2 and the MCP Python SDK's SSE
// client, and line decoders ported from it) also end lines at VT, FF,
// 0x1C-0x1E, NEL, U+2028 and U+2029, so a value holding one could carry a
// line, even a whole event, that a WHATWG parser never sees. WriteEvent
// therefore refuses them in Event and ID and in Data except NEL, U+2028
// and U+2029, which it writes as JSON escapes (\u0085, \u2028, \u2029:
// the same JSON string, and JSON allows them nowhere else); it drops the
// text of a comment line holding one (comments carry no meaning).
func WriteEvent(w io.Writer, ev Event) error {
	switch {
	case strings.ContainsAny(ev.Event, "\r\n"+splitlinesBreaks),
		strings.ContainsAny(ev.ID, "\r\n\x00"+splitlinesBreaks),
		strings.Trim(ev.Retry, "0123456789") != "",
		strings.ContainsRune(ev.Data, '\r'),
		strings.ContainsAny(ev.Data, splitlinesControls),
		strings.ContainsRune(ev.Comment, '\r'):
		return fmt.Errorf("%w: a field cannot be written as is", ErrInvalidEvent)
	}
	if strings.ContainsAny(ev.Data, splitlinesUnicode) {
		ev.Data = jsonLineEscapes.Replace(ev.Data)
	}
	b := make([]byte, 0, eventSize(&ev))
	if ev.HasComment || ev.Comment != "" {
		for line := range strings.SplitSeq(ev.Comment, "\n") {
			b = append(b, ':')
			if !strings.ContainsAny(line, splitlinesBreaks) {
				b = append(b, line...)
			}
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

// eventSize is at least the length of ev as WriteEvent writes it, so
// that it writes from one buffer made once: grown by append, a small
// event's took three or four, a large one's copied its data as often.
func eventSize(ev *Event) int {
	n := 1 // the blank line
	if ev.HasComment || ev.Comment != "" {
		n += len(ev.Comment) + 2*(strings.Count(ev.Comment, "\n")+1) // ':', '\n'
	}
	n += len("event: \n") + len(ev.Event) + len("id: \n") + len(ev.ID) + len("retry: \n") + len(ev.Retry)
	if ev.HasData || ev.Data != "" {
		n += len(ev.Data) + len("data: \n")*(strings.Count(ev.Data, "\n")+1)
	}
	return n
}

// Line ends of str.splitlines beyond CR and LF (see WriteEvent): the
// control characters, and the Unicode ones valid unescaped in JSON
// strings.
const (
	splitlinesControls = "\v\f\x1c\x1d\x1e"
	splitlinesUnicode  = "\u0085\u2028\u2029"
	splitlinesBreaks   = splitlinesControls + splitlinesUnicode
)

var jsonLineEscapes = strings.NewReplacer("\u0085", `\u0085`, "\u2028", `\u2028`, "\u2029", `\u2029`)

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
