package mcpparse

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// addCorpus seeds f with every JSON corpus file.
func addCorpus(f *testing.F, add func(b []byte)) {
	files, err := filepath.Glob("testdata/*/*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no corpus: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

// v1Message is a message as a case-insensitive decoder (encoding/json, as
// used by the Go MCP SDK) reads it.
type v1Message struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	ID      json.RawMessage `json:"id"`
	Params  json.RawMessage `json:"params"`
}

type v1Params struct {
	Name   json.RawMessage `json:"name"`
	URI    json.RawMessage `json:"uri"`
	TaskID json.RawMessage `json:"taskId"`
	Meta   struct {
		Version json.RawMessage `json:"io.modelcontextprotocol/protocolVersion"`
	} `json:"_meta"`
}

// v1String decodes raw if it is a JSON string.
func v1String(t *testing.T, raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("json.Unmarshal(%s) error = %v", raw, err)
	}
	return s, true
}

// FuzzParse checks the property that defines the package: whatever Parse
// accepts, encoding/json reads as the same envelope, method, name and uri,
// exact keys or case-insensitive ones alike; and Raw reads back alone as
// the same message.
func FuzzParse(f *testing.F) {
	addCorpus(f, func(b []byte) { f.Add(b, true) })
	f.Fuzz(func(t *testing.T, body []byte, allowBatches bool) {
		msgs, batch, err := Parse(body, Limits{AllowBatches: allowBatches})
		if err != nil {
			if msgs != nil {
				t.Fatalf("Parse() = %d messages and error %v", len(msgs), err)
			}
			checkParamsError(t, body, err)
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Parse accepted what encoding/json calls invalid: %q", body)
		}
		if !jsontext.Value(body).IsValid() {
			// RFC 7493: unique names in every object, valid UTF-8. Parse
			// keeps its own record of names; this is an independent one.
			t.Fatalf("Parse accepted what RFC 7493 refuses (a duplicate name or invalid UTF-8): %q", body)
		}
		if batch != (bytes.TrimLeft(body, " \t\r\n")[0] == '[') || (batch && !allowBatches) {
			t.Fatalf("Parse() batch = %v for %q (batches allowed: %v)", batch, body, allowBatches)
		}
		if batch {
			var elems []json.RawMessage
			if err := json.Unmarshal(body, &elems); err != nil {
				t.Fatalf("json.Unmarshal(batch) error = %v", err)
			}
			if len(elems) != len(msgs) {
				t.Fatalf("Parse() = %d messages, encoding/json reads %d", len(msgs), len(elems))
			}
			for i := range elems {
				if !bytes.Equal(elems[i], msgs[i].Raw) {
					t.Fatalf("message %d Raw = %q, encoding/json reads %q", i, msgs[i].Raw, elems[i])
				}
			}
		}
		for _, m := range msgs {
			checkV1(t, m)
			checkSDK(t, m)
			again, b, err := Parse(m.Raw, Limits{})
			if err != nil || b || len(again) != 1 {
				t.Fatalf("Parse(Raw %q) = %d messages, %v", m.Raw, len(again), err)
			}
			if diff := cmp.Diff(m, again[0], cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("Parse(Raw) differs (-first +again):\n%s", diff)
			}
		}
	})
}

// checkParamsError checks that a *ParamsError comes only for one valid
// JSON object whose id encoding/json reads as the error's.
func checkParamsError(t *testing.T, body []byte, err error) {
	t.Helper()
	var pe *ParamsError
	if !errors.As(err, &pe) {
		return
	}
	if !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("ParamsError %v does not wrap ErrInvalidParams", err)
	}
	var w struct {
		ID json.RawMessage `json:"id"`
	}
	if !json.Valid(body) || json.Unmarshal(body, &w) != nil {
		t.Fatalf("ParamsError for what encoding/json does not read as an object: %q", body)
	}
	if !SameID(w.ID, pe.ID) {
		t.Fatalf("ParamsError id %s, encoding/json reads %s in %q", pe.ID, w.ID, body)
	}
}

// checkV1 compares a message with what encoding/json reads of its Raw,
// once through a struct (case-insensitive names) and once through maps
// (exact names).
func checkV1(t *testing.T, m Message) {
	t.Helper()
	var w v1Message
	if err := json.Unmarshal(m.Raw, &w); err != nil {
		t.Fatalf("json.Unmarshal(%q) error = %v", m.Raw, err)
	}
	var exact map[string]json.RawMessage
	if err := json.Unmarshal(m.Raw, &exact); err != nil {
		t.Fatalf("json.Unmarshal(%q) into a map error = %v", m.Raw, err)
	}
	if w.JSONRPC != "2.0" {
		t.Fatalf("encoding/json reads jsonrpc %q in %q", w.JSONRPC, m.Raw)
	}
	if w.Method != m.Method {
		t.Fatalf("method = %q, encoding/json reads %q in %q", m.Method, w.Method, m.Raw)
	}
	if !bytes.Equal(w.ID, m.ID) || !bytes.Equal(exact["id"], m.ID) {
		t.Fatalf("id = %q, encoding/json reads %q in %q", m.ID, w.ID, m.Raw)
	}
	if m.Kind == KindResponse {
		return
	}
	var p v1Params
	var pExact map[string]json.RawMessage
	if len(w.Params) > 0 && w.Params[0] == '{' {
		if err := json.Unmarshal(w.Params, &p); err != nil {
			// Only a _meta that is not an object can fail here, and
			// Parse refuses that.
			t.Fatalf("json.Unmarshal(params %q) error = %v", w.Params, err)
		}
		if err := json.Unmarshal(exact["params"], &pExact); err != nil {
			t.Fatalf("json.Unmarshal(params %q) into a map error = %v", exact["params"], err)
		}
	}
	nameRaw, nameExact := p.Name, pExact["name"]
	if targetOf(m.Method).src == srcTaskID {
		nameRaw, nameExact = p.TaskID, pExact["taskId"]
	}
	for _, c := range []struct {
		what       string
		got        string
		has        bool
		raw, exact json.RawMessage
	}{
		{"name", m.Name, m.HasName, nameRaw, nameExact},
		{"uri", m.URI, m.HasURI, p.URI, pExact["uri"]},
		{"protocol version", m.ProtocolVersion, m.ProtocolVersion != "", p.Meta.Version, nil},
	} {
		s, ok := v1String(t, c.raw)
		if c.what == "protocol version" {
			ok = ok && s != ""
		}
		if ok != c.has || s != c.got {
			t.Fatalf("%s = %q (present %v), encoding/json reads %q (present %v) in %q", c.what, c.got, c.has, s, ok, m.Raw)
		}
		if c.exact != nil && !bytes.Equal(c.exact, c.raw) {
			t.Fatalf("%s: exact key reads %q, case-insensitive %q in %q", c.what, c.exact, c.raw, m.Raw)
		}
	}
}

// checkSDK compares a message with what the Go MCP SDK decodes of its Raw,
// when it decodes it at all (what it refuses, the upstream refuses).
func checkSDK(t *testing.T, m Message) {
	t.Helper()
	decoded, err := jsonrpc.DecodeMessage(m.Raw)
	if err != nil {
		return
	}
	var id jsonrpc.ID
	switch d := decoded.(type) {
	case *jsonrpc.Request:
		if m.Kind == KindResponse || d.Method != m.Method || d.IsCall() != (m.Kind == KindRequest) {
			t.Fatalf("the SDK reads a request for %q (call %v) in %q, Parse a %s for %q", d.Method, d.IsCall(), m.Raw, m.Kind, m.Method)
		}
		id = d.ID
	case *jsonrpc.Response:
		if m.Kind != KindResponse {
			t.Fatalf("the SDK reads a response in %q, Parse a %s", m.Raw, m.Kind)
		}
		id = d.ID
	}
	if !id.IsValid() {
		if m.ID != nil && string(m.ID) != "null" {
			t.Fatalf("the SDK reads no id in %q, Parse %s", m.Raw, m.ID)
		}
		return
	}
	want, err := json.Marshal(id.Raw())
	if err != nil || !SameID(want, m.ID) {
		t.Fatalf("the SDK reads id %s in %q, Parse %s", want, m.Raw, m.ID)
	}
}

// FuzzReader checks that every event read writes back, canonically or
// as is, to a stream that reads as the same event.
func FuzzReader(f *testing.F) {
	files, _ := filepath.Glob("testdata/sse/*.sse")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("data: a\rdata: b\r\r:c\r\n\r\nid\nretry: 12\n\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := NewReader(bytes.NewReader(stream), 1<<10)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			for _, write := range []func(*bytes.Buffer) error{
				func(b *bytes.Buffer) error { return WriteEvent(b, ev) },
				func(b *bytes.Buffer) error { return CopyEvent(b, ev) },
			} {
				var b bytes.Buffer
				if err := write(&b); err != nil {
					t.Fatalf("writing %+v: %v", ev, err)
				}
				again, err := NewReader(&b, 0).Next()
				if err != nil {
					if isEmpty(ev) {
						continue // nothing to write but a blank line
					}
					t.Fatalf("reading back %q: %v", b.Bytes(), err)
				}
				if diff := cmp.Diff(ev, again, ignoreRaw); diff != "" {
					t.Fatalf("event read back from %q (-first +again):\n%s", b.Bytes(), diff)
				}
			}
		}
	})
}

func isEmpty(ev Event) bool {
	return cmp.Equal(ev, Event{}, ignoreRaw)
}

// FuzzFilterToolsList checks that what encoding/json reads of the filtered
// list is exactly the allowed tools, in order.
func FuzzFilterToolsList(f *testing.F) {
	addCorpus(f, func(b []byte) {
		if bytes.Contains(b, []byte(`"tools"`)) {
			f.Add(b)
		}
	})
	f.Fuzz(func(t *testing.T, msg []byte) {
		var seen []string
		allow := func(n string) bool { seen = append(seen, n); return len(n)%2 == 0 }
		out, err := FilterToolsList(msg, allow)
		_, errPrivate := MarkPrivate(msg)
		_, errID := ResponseID(msg)
		if (err == nil || errPrivate == nil || errID == nil) && !jsontext.Value(msg).IsValid() {
			t.Fatalf("accepted what RFC 7493 refuses (a duplicate name or invalid UTF-8): %q (errors %v, %v, %v)", msg, err, errPrivate, errID)
		}
		if err != nil {
			return
		}
		got, ok := filteredKeys(t, msg, out, "tools", "name")
		if !ok {
			return
		}
		want := slices.DeleteFunc(slices.Clone(seen), func(n string) bool { return len(n)%2 != 0 })
		if !slices.Equal(got, want) {
			t.Fatalf("encoding/json reads tools %q in %q, want %q", got, out, want)
		}
		id1, err1 := ResponseID(msg)
		id2, err2 := ResponseID(out)
		if err1 != nil || err2 != nil || !bytes.Equal(id1, id2) {
			t.Fatalf("ResponseID = %q, %v before and %q, %v after", id1, err1, id2, err2)
		}
	})
}

// FuzzFilterList is FuzzFilterToolsList for every kind of list: what
// encoding/json reads of the filtered list's keys is exactly the allowed
// ones, in order.
func FuzzFilterList(f *testing.F) {
	addCorpus(f, func(b []byte) {
		for i, l := range listSpecs {
			if bytes.Contains(b, []byte(`"`+l.member+`"`)) {
				f.Add(b, uint8(i))
			}
		}
	})
	f.Fuzz(func(t *testing.T, msg []byte, kind uint8) {
		list := List(kind % uint8(len(listSpecs)))
		l := listSpecs[list]
		var seen []string
		allow := func(k string, _ []byte) bool { seen = append(seen, k); return len(k)%2 == 0 }
		out, err := FilterList(msg, list, allow)
		if err == nil && !jsontext.Value(msg).IsValid() {
			t.Fatalf("accepted what RFC 7493 refuses (a duplicate name or invalid UTF-8): %q", msg)
		}
		if err != nil {
			return
		}
		got, ok := filteredKeys(t, msg, out, l.member, l.key)
		if !ok {
			return
		}
		want := slices.DeleteFunc(slices.Clone(seen), func(k string) bool { return len(k)%2 != 0 })
		if !slices.Equal(got, want) {
			t.Fatalf("encoding/json reads %s %q in %q, want %q", l.member, got, out, want)
		}
	})
}

// filteredKeys is what encoding/json reads of the keys of result.member
// in out, filtered from msg; false for an error response, which must be
// msg unchanged.
func filteredKeys(t *testing.T, msg, out []byte, member, key string) ([]string, bool) {
	t.Helper()
	var v struct {
		Result *map[string]json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("json.Unmarshal(%q) error = %v", out, err)
	}
	if v.Result == nil {
		if !bytes.Equal(out, msg) {
			t.Fatalf("error response %q rewritten to %q", msg, out)
		}
		return nil, false
	}
	// A case variant left beside the member or key would be read by
	// encoding/json's structs, which match names without case.
	variant := func(m map[string]json.RawMessage, name string) {
		for k := range m {
			if k != name && strings.EqualFold(k, name) {
				t.Fatalf("%q holds %q, which encoding/json may read as %s", out, k, name)
			}
		}
	}
	variant(*v.Result, member)
	var items []map[string]json.RawMessage
	if err := json.Unmarshal((*v.Result)[member], &items); err != nil {
		t.Fatalf("result.%s of %q: %v", member, out, err)
	}
	var keys []string
	for _, it := range items {
		variant(it, key)
		var k string
		if err := json.Unmarshal(it[key], &k); err != nil {
			t.Fatalf("%s of an item of %q: %v", key, out, err)
		}
		keys = append(keys, k)
	}
	return keys, true
}

// FuzzSplitter checks that a Splitter fed the stream in pieces emits what
// Reader.Next returns from the same pieces, whatever the pieces, and
// events that do not depend on them.
func FuzzSplitter(f *testing.F) {
	files, _ := filepath.Glob("testdata/sse/*.sse")
	for i, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint64(i))
	}
	f.Add([]byte("data: a\r\r\ndata: b\r\n\r\n\uFEFF:c\r\r\n\r\nid\nretry: 12\n\n"), uint64(7))
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		rnd := rand.New(rand.NewPCG(seed, seed))
		checkSplitter(t, stream, 1+rnd.IntN(64), 64, rnd)
	})
}
