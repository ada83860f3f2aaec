package mcpparse

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// want is the envelope expected of one message of a corpus file.
type want struct {
	Kind            Kind
	Method          string
	ID              string
	Name, URI       string
	HasName, HasURI bool
	ProtocolVersion string
}

const taskID = "786512e2-9e0d-44bd-8f29-789f320fe840"

// goodCorpus lists every file under testdata/<revision>/ with the messages
// it holds; TestCorpusListed keeps it complete.
var goodCorpus = map[string][]want{
	"2024-11-05/initialize.json":             {{Kind: KindRequest, Method: "initialize", ID: "1"}},
	"2024-11-05/initialize-result.json":      {{Kind: KindResponse, ID: "1"}},
	"2024-11-05/initialized.json":            {{Kind: KindNotification, Method: "notifications/initialized"}},
	"2024-11-05/ping.json":                   {{Kind: KindRequest, Method: "ping", ID: `"123"`}},
	"2024-11-05/tools-list.json":             {{Kind: KindRequest, Method: "tools/list", ID: "1"}},
	"2024-11-05/tools-list-result.json":      {{Kind: KindResponse, ID: "1"}},
	"2024-11-05/tools-call.json":             {{Kind: KindRequest, Method: "tools/call", ID: "2", Name: "get_weather", HasName: true}},
	"2024-11-05/tools-call-result.json":      {{Kind: KindResponse, ID: "2"}},
	"2024-11-05/resources-read.json":         {{Kind: KindRequest, Method: "resources/read", ID: "2", URI: "file:///project/src/main.rs", HasURI: true}},
	"2024-11-05/resources-read-result.json":  {{Kind: KindResponse, ID: "2"}},
	"2024-11-05/resources-subscribe.json":    {{Kind: KindRequest, Method: "resources/subscribe", ID: "4", URI: "file:///project/src/main.rs", HasURI: true}},
	"2024-11-05/resources-updated.json":      {{Kind: KindNotification, Method: "notifications/resources/updated", URI: "file:///project/src/main.rs", HasURI: true}},
	"2024-11-05/prompts-get.json":            {{Kind: KindRequest, Method: "prompts/get", ID: "2", Name: "code_review", HasName: true}},
	"2024-11-05/progress.json":               {{Kind: KindNotification, Method: "notifications/progress"}},
	"2024-11-05/cancelled.json":              {{Kind: KindNotification, Method: "notifications/cancelled"}},
	"2024-11-05/sampling-create.json":        {{Kind: KindRequest, Method: "sampling/createMessage", ID: "1"}},
	"2024-11-05/logging-setlevel.json":       {{Kind: KindRequest, Method: "logging/setLevel", ID: "1"}},
	"2024-11-05/error-method-not-found.json": {{Kind: KindResponse, ID: "3"}},
	"2024-11-05/error-null-id.json":          {{Kind: KindResponse, ID: "null"}},

	"2025-03-26/initialize.json": {{Kind: KindRequest, Method: "initialize", ID: "1"}},
	"2025-03-26/batch-requests.json": {
		{Kind: KindRequest, Method: "tools/call", ID: "10", Name: "get_weather", HasName: true},
		{Kind: KindRequest, Method: "resources/read", ID: "11", URI: "file:///project/README.md", HasURI: true},
		{Kind: KindNotification, Method: "notifications/progress"},
	},
	"2025-03-26/batch-responses.json": {{Kind: KindResponse, ID: "1"}, {Kind: KindResponse, ID: "2"}},
	"2025-03-26/batch-notifications.json": {
		{Kind: KindNotification, Method: "notifications/initialized"},
		{Kind: KindNotification, Method: "notifications/roots/list_changed"},
	},
	"2025-03-26/tools-list-result-annotations.json": {{Kind: KindResponse, ID: "5"}},
	"2025-03-26/completion-complete.json":           {{Kind: KindRequest, Method: "completion/complete", ID: "1"}},
	"2025-03-26/tools-call-audio-result.json":       {{Kind: KindResponse, ID: "9"}},

	"2025-06-18/initialize.json":                      {{Kind: KindRequest, Method: "initialize", ID: "1"}},
	"2025-06-18/tools-call-meta.json":                 {{Kind: KindRequest, Method: "tools/call", ID: `"req-7"`, Name: "get_weather_data", HasName: true}},
	"2025-06-18/tools-call-structured-result.json":    {{Kind: KindResponse, ID: `"req-7"`}},
	"2025-06-18/elicitation-create.json":              {{Kind: KindRequest, Method: "elicitation/create", ID: "1"}},
	"2025-06-18/elicitation-result.json":              {{Kind: KindResponse, ID: "1"}},
	"2025-06-18/resources-read-unicode.json":          {{Kind: KindRequest, Method: "resources/read", ID: "3", URI: "file:///projets/données/résumé.md", HasURI: true}},
	"2025-06-18/tools-list-result.json":               {{Kind: KindResponse, ID: "2"}},
	"2025-06-18/prompts-list-result.json":             {{Kind: KindResponse, ID: "5"}},
	"2025-06-18/resources-list-result.json":           {{Kind: KindResponse, ID: "6"}},
	"2025-06-18/resources-templates-list-result.json": {{Kind: KindResponse, ID: "7"}},
	"2025-06-18/prompts-get-escaped.json":             {{Kind: KindRequest, Method: "prompts/get", ID: "4", Name: "code_review", HasName: true}},
	"2025-11-25/initialize.json":                      {{Kind: KindRequest, Method: "initialize", ID: "1"}},
	"2025-11-25/tools-call-task.json":                 {{Kind: KindRequest, Method: "tools/call", ID: "1", Name: "get_weather", HasName: true}},
	"2025-11-25/create-task-result.json":              {{Kind: KindResponse, ID: "1"}},
	"2025-11-25/tasks-get.json":                       {{Kind: KindRequest, Method: "tasks/get", ID: "3", Name: taskID, HasName: true}},
	"2025-11-25/tasks-result.json":                    {{Kind: KindRequest, Method: "tasks/result", ID: "4", Name: taskID, HasName: true}},
	"2025-11-25/tasks-list.json":                      {{Kind: KindRequest, Method: "tasks/list", ID: "5"}},
	"2025-11-25/tasks-cancel.json":                    {{Kind: KindRequest, Method: "tasks/cancel", ID: "6", Name: taskID, HasName: true}},
	"2025-11-25/task-status-notification.json":        {{Kind: KindNotification, Method: "notifications/tasks/status"}},
	"2025-11-25/tools-list-result-icons.json":         {{Kind: KindResponse, ID: "1"}},
	"2025-11-25/elicitation-url.json":                 {{Kind: KindRequest, Method: "elicitation/create", ID: "3"}},
	"2025-11-25/tools-call-unicode.json":              {{Kind: KindRequest, Method: "tools/call", ID: "12", Name: "天気", HasName: true}},
	"2026-07-28/server-discover.json":                 {{Kind: KindRequest, Method: "server/discover", ID: "1", ProtocolVersion: "2026-07-28"}},
	"2026-07-28/server-discover-result.json":          {{Kind: KindResponse, ID: "1"}},
	"2026-07-28/tools-call.json":                      {{Kind: KindRequest, Method: "tools/call", ID: "1", Name: "get_weather", HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/tools-call-param-header.json":         {{Kind: KindRequest, Method: "tools/call", ID: "1", Name: "execute_sql", HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/tools-call-unicode.json":              {{Kind: KindRequest, Method: "tools/call", ID: `"c-1"`, Name: "Hello, 世界", HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/resources-read.json":                  {{Kind: KindRequest, Method: "resources/read", ID: "2", URI: "file:///projects/myapp/config.json", HasURI: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/resources-read-result.json":           {{Kind: KindResponse, ID: "2"}},
	"2026-07-28/prompts-get.json":                     {{Kind: KindRequest, Method: "prompts/get", ID: "3", Name: "code_review", HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/tools-list.json":                      {{Kind: KindRequest, Method: "tools/list", ID: "4", ProtocolVersion: "2026-07-28"}},
	"2026-07-28/tools-list-result.json":               {{Kind: KindResponse, ID: "4"}},
	"2026-07-28/prompts-list-result.json":             {{Kind: KindResponse, ID: "8"}},
	"2026-07-28/subscriptions-listen.json":            {{Kind: KindRequest, Method: "subscriptions/listen", ID: "1", ProtocolVersion: "2026-07-28"}},
	"2026-07-28/subscriptions-acknowledged.json":      {{Kind: KindNotification, Method: "notifications/subscriptions/acknowledged"}},
	"2026-07-28/resources-updated.json":               {{Kind: KindNotification, Method: "notifications/resources/updated", URI: "file:///project/config.json", HasURI: true}},
	"2026-07-28/tasks-get.json":                       {{Kind: KindRequest, Method: "tasks/get", ID: "3", Name: taskID, HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/tasks-update.json":                    {{Kind: KindRequest, Method: "tasks/update", ID: "6", Name: taskID, HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/tasks-cancel.json":                    {{Kind: KindRequest, Method: "tasks/cancel", ID: "9", Name: taskID, HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/tasks-result-removed.json":            {{Kind: KindRequest, Method: "tasks/result", ID: "10", Name: taskID, HasName: true, ProtocolVersion: "2026-07-28"}},
	"2026-07-28/resources-subscribe-removed.json":     {{Kind: KindRequest, Method: "resources/subscribe", ID: "500", ProtocolVersion: "2026-07-28"}},
	"2026-07-28/server-discover-no-meta.json":         {{Kind: KindRequest, Method: "server/discover", ID: "101"}},
	"2026-07-28/server-discover-no-version.json":      {{Kind: KindRequest, Method: "server/discover", ID: "102"}},
	"2026-07-28/create-task-result.json":              {{Kind: KindResponse, ID: "1"}},
	"2026-07-28/input-required-result.json":           {{Kind: KindResponse, ID: "1"}},
	"2026-07-28/header-mismatch-error.json":           {{Kind: KindResponse, ID: "1"}},
	"2026-07-28/unsupported-version-error.json":       {{Kind: KindResponse, ID: "1"}},
	"2026-07-28/progress.json":                        {{Kind: KindNotification, Method: "notifications/progress"}},
}

// badCorpus lists every file under testdata/bad/ with the error Parse
// (batches allowed) must wrap.
var badCorpus = map[string]error{
	"duplicate-method.json":              ErrDuplicateName,
	"duplicate-name.json":                ErrDuplicateName,
	"duplicate-escaped-name.json":        ErrDuplicateName,
	"duplicate-params.json":              ErrDuplicateName,
	"duplicate-deep-arguments.json":      ErrDuplicateName,
	"case-name.json":                     ErrDuplicateName,
	"case-method.json":                   ErrDuplicateName,
	"case-only-Name.json":                ErrInvalidParams,
	"case-only-Method-response.json":     ErrNotJSONRPC,
	"case-only-URI.json":                 ErrInvalidParams,
	"case-kelvin.json":                   ErrDuplicateName,
	"case-kelvin-escaped.json":           ErrDuplicateName,
	"case-long-s.json":                   ErrDuplicateName,
	"case-long-s-alone.json":             ErrNotJSONRPC,
	"case-deep-arguments.json":           ErrDuplicateName,
	"case-meta-version.json":             ErrInvalidParams,
	"case-taskid.json":                   ErrDuplicateName,
	"nul-name.json":                      ErrDuplicateName,
	"nul-method.json":                    ErrNotJSONRPC,
	"nul-method-alone.json":              ErrNotJSONRPC,
	"nul-only-name.json":                 ErrInvalidParams,
	"nul-deep-arguments.json":            ErrDuplicateName,
	"invalid-utf8-value.json":            ErrInvalidJSON,
	"invalid-utf8-name.json":             ErrInvalidJSON,
	"overlong-utf8.json":                 ErrInvalidJSON,
	"lone-surrogate.json":                ErrInvalidJSON,
	"trailing-data.json":                 ErrInvalidJSON,
	"two-messages.json":                  ErrInvalidJSON,
	"trailing-comma.json":                ErrInvalidJSON,
	"truncated.json":                     ErrInvalidJSON,
	"deep-nesting.json":                  ErrTooDeep,
	"deep-nesting-objects.json":          ErrTooDeep,
	"jsonrpc-1.0.json":                   ErrNotJSONRPC,
	"jsonrpc-number.json":                ErrNotJSONRPC,
	"jsonrpc-missing.json":               ErrNotJSONRPC,
	"bom.json":                           ErrInvalidJSON,
	"empty.json":                         ErrInvalidJSON,
	"whitespace.json":                    ErrInvalidJSON,
	"not-object-string.json":             ErrNotJSONRPC,
	"not-object-null.json":               ErrNotJSONRPC,
	"comment.json":                       ErrInvalidJSON,
	"single-quotes.json":                 ErrInvalidJSON,
	"control-char.json":                  ErrInvalidJSON,
	"nan-id.json":                        ErrInvalidJSON,
	"leading-zero-id.json":               ErrInvalidJSON,
	"method-not-string.json":             ErrNotJSONRPC,
	"id-null-request.json":               ErrNotJSONRPC,
	"id-object.json":                     ErrNotJSONRPC,
	"id-bool.json":                       ErrNotJSONRPC,
	"id-float.json":                      ErrNotJSONRPC,
	"id-exponent.json":                   ErrNotJSONRPC,
	"id-huge.json":                       ErrNotJSONRPC,
	"id-negative-zero.json":              ErrNotJSONRPC,
	"params-null.json":                   ErrNotJSONRPC,
	"params-string.json":                 ErrNotJSONRPC,
	"tools-call-no-params.json":          ErrInvalidParams,
	"tools-call-no-name.json":            ErrInvalidParams,
	"tools-call-name-number.json":        ErrInvalidParams,
	"tools-call-params-array.json":       ErrInvalidParams,
	"resources-read-no-uri.json":         ErrInvalidParams,
	"prompts-get-name-null.json":         ErrInvalidParams,
	"tasks-get-no-taskid.json":           ErrInvalidParams,
	"tasks-cancel-name-not-taskid.json":  ErrInvalidParams,
	"tasks-result-taskid-number.json":    ErrInvalidParams,
	"resources-subscribe-uri-array.json": ErrInvalidParams,
	"meta-not-object.json":               ErrInvalidParams,
	"meta-version-number.json":           ErrInvalidParams,
	"both-result-error.json":             ErrNotJSONRPC,
	"method-and-result.json":             ErrNotJSONRPC,
	"response-no-id.json":                ErrNotJSONRPC,
	"response-with-params.json":          ErrNotJSONRPC,
	"null-id-result.json":                ErrNotJSONRPC,
	"error-not-object.json":              ErrNotJSONRPC,
	"error-no-code.json":                 ErrNotJSONRPC,
	"error-case-code.json":               ErrDuplicateName,
	"no-kind.json":                       ErrNotJSONRPC,
	"empty-batch.json":                   ErrBatch,
	"batch-non-object.json":              ErrNotJSONRPC,
	"batch-nested.json":                  ErrNotJSONRPC,
	"batch-bad-element.json":             ErrDuplicateName,
	"batch-trailing.json":                ErrInvalidJSON,
}

// corpusFiles returns the corpus files under testdata/dir, relative to
// testdata.
func corpusFiles(t testing.TB, dirs ...string) []string {
	t.Helper()
	var files []string
	for _, dir := range dirs {
		matches, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range matches {
			files = append(files, filepath.ToSlash(strings.TrimPrefix(m, "testdata"+string(filepath.Separator))))
		}
	}
	return files
}

var revisions = []string{"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"}

func readCorpus(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorpusListed(t *testing.T) {
	for _, f := range corpusFiles(t, revisions...) {
		if _, ok := goodCorpus[f]; !ok {
			t.Errorf("testdata/%s has no entry in goodCorpus", f)
		}
	}
	for _, f := range corpusFiles(t, "bad") {
		if _, ok := badCorpus[strings.TrimPrefix(f, "bad/")]; !ok {
			t.Errorf("testdata/%s has no entry in badCorpus", f)
		}
	}
	for _, rev := range revisions {
		if len(corpusFiles(t, rev)) == 0 {
			t.Errorf("no corpus for revision %s", rev)
		}
	}
}

func envelopeOf(m Message) want {
	return want{
		Kind: m.Kind, Method: m.Method, ID: string(m.ID),
		Name: m.Name, URI: m.URI, HasName: m.HasName, HasURI: m.HasURI,
		ProtocolVersion: m.ProtocolVersion,
	}
}

func TestParseCorpus(t *testing.T) {
	for name, wantMsgs := range goodCorpus {
		t.Run(name, func(t *testing.T) {
			body := readCorpus(t, name)
			msgs, batch, err := Parse(body, Limits{AllowBatches: true})
			if err != nil {
				t.Fatalf("Parse(%s) error = %v, want nil", name, err)
			}
			wantBatch := strings.Contains(name, "batch")
			if batch != wantBatch {
				t.Errorf("Parse(%s) batch = %v, want %v", name, batch, wantBatch)
			}
			var got []want
			for _, m := range msgs {
				got = append(got, envelopeOf(m))
			}
			if diff := cmp.Diff(wantMsgs, got); diff != "" {
				t.Errorf("Parse(%s) envelopes (-want +got):\n%s", name, diff)
			}
			checkRaw(t, body, msgs)
		})
	}
}

// checkRaw checks that each Raw lies within body and reads back alone as
// the same message.
func checkRaw(t *testing.T, body []byte, msgs []Message) {
	t.Helper()
	for i, m := range msgs {
		if len(m.Raw) == 0 || !strings.Contains(string(body), string(m.Raw)) {
			t.Errorf("message %d Raw %q is not part of the body", i, m.Raw)
			continue
		}
		again, batch, err := Parse(m.Raw, Limits{})
		if err != nil || batch || len(again) != 1 {
			t.Errorf("Parse(Raw of message %d) = %d messages, batch %v, error %v; want one message", i, len(again), batch, err)
			continue
		}
		if diff := cmp.Diff(m, again[0], cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Parse(Raw of message %d) differs (-first +again):\n%s", i, diff)
		}
	}
}

func TestParseBad(t *testing.T) {
	for name, wantErr := range badCorpus {
		t.Run(name, func(t *testing.T) {
			body := readCorpus(t, "bad/"+name)
			msgs, _, err := Parse(body, Limits{AllowBatches: true})
			if !errors.Is(err, wantErr) {
				t.Fatalf("Parse(%s) error = %v, want %v", name, err, wantErr)
			}
			if msgs != nil {
				t.Errorf("Parse(%s) messages = %v, want none", name, msgs)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	batchOf := func(n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(ping+",", n), ",") + "]"
	}
	nested := func(depth int) string { // depth counts the message object
		return `{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":` +
			strings.Repeat("[", depth-2) + strings.Repeat("]", depth-2) + `}}`
	}
	tests := []struct {
		name    string
		body    string
		lim     Limits
		wantN   int
		wantErr error
	}{
		{"batch refused by default", batchOf(1), Limits{}, 0, ErrBatch},
		{"batch allowed", batchOf(2), Limits{AllowBatches: true}, 2, nil},
		{"batch at default limit", batchOf(DefaultMaxBatch), Limits{AllowBatches: true}, DefaultMaxBatch, nil},
		{"batch over default limit", batchOf(DefaultMaxBatch + 1), Limits{AllowBatches: true}, 0, ErrBatch},
		{"batch at own limit", batchOf(3), Limits{AllowBatches: true, MaxBatch: 3}, 3, nil},
		{"batch over own limit", batchOf(4), Limits{AllowBatches: true, MaxBatch: 3}, 0, ErrBatch},
		{"depth at default limit", nested(DefaultMaxDepth), Limits{}, 1, nil},
		{"depth over default limit", nested(DefaultMaxDepth + 1), Limits{}, 0, ErrTooDeep},
		{"depth at own limit", nested(10), Limits{MaxDepth: 10}, 1, nil},
		{"depth over own limit", nested(11), Limits{MaxDepth: 10}, 0, ErrTooDeep},
		{"batch array counts as a level", "[" + nested(10) + "]", Limits{MaxDepth: 10, AllowBatches: true}, 0, ErrTooDeep},
		{"huge own limit is capped", nested(maxTokenizerDepth), Limits{MaxDepth: 1 << 30}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, _, err := Parse([]byte(tt.body), tt.lim)
			if !errors.Is(err, tt.wantErr) || len(msgs) != tt.wantN {
				t.Errorf("Parse() = %d messages, error %v; want %d, %v", len(msgs), err, tt.wantN, tt.wantErr)
			}
		})
	}
}

func TestParseMessages(t *testing.T) {
	tests := []struct {
		name string
		body string
		want want
	}{
		{"whitespace around", " \r\n\t{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} \n",
			want{Kind: KindRequest, Method: "ping", ID: "1"}},
		{"members in any order", `{"params":{"arguments":{},"name":"t"},"method":"tools/call","id":"x","jsonrpc":"2.0"}`,
			want{Kind: KindRequest, Method: "tools/call", ID: `"x"`, Name: "t", HasName: true}},
		{"escaped jsonrpc", `{"jsonrpc":"2\u002e0","id":1,"method":"ping"}`,
			want{Kind: KindRequest, Method: "ping", ID: "1"}},
		{"negative id", `{"jsonrpc":"2.0","id":-42,"method":"ping"}`,
			want{Kind: KindRequest, Method: "ping", ID: "-42"}},
		{"largest safe id", `{"jsonrpc":"2.0","id":9007199254740991,"method":"ping"}`,
			want{Kind: KindRequest, Method: "ping", ID: "9007199254740991"}},
		{"zero id", `{"jsonrpc":"2.0","id":0,"method":"ping"}`,
			want{Kind: KindRequest, Method: "ping", ID: "0"}},
		{"empty name is present", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}`,
			want{Kind: KindRequest, Method: "tools/call", ID: "1", HasName: true}},
		{"non-string name elsewhere is ignored", `{"jsonrpc":"2.0","id":1,"method":"x/y","params":{"name":{"first":"a"},"uri":1}}`,
			want{Kind: KindRequest, Method: "x/y", ID: "1"}},
		{"name and uri of any method", `{"jsonrpc":"2.0","method":"x/y","params":{"name":"n","uri":"u"}}`,
			want{Kind: KindNotification, Method: "x/y", Name: "n", URI: "u", HasName: true, HasURI: true}},
		{"params array", `{"jsonrpc":"2.0","id":1,"method":"x","params":[1,{"a":[]}]}`,
			want{Kind: KindRequest, Method: "x", ID: "1"}},
		{"unknown members are allowed", `{"jsonrpc":"2.0","id":1,"method":"ping","extra":{"Method":1}}`,
			want{Kind: KindRequest, Method: "ping", ID: "1"}},
		{"error with data", `{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"m","data":{"code":2}}}`,
			want{Kind: KindResponse, ID: `"a"`}},
		{"result of any type", `{"jsonrpc":"2.0","id":1,"result":null}`,
			want{Kind: KindResponse, ID: "1"}},
		{"same name in different objects", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"name":"b","x":{"Name":1}}}}`,
			want{Kind: KindRequest, Method: "tools/call", ID: "1", Name: "a", HasName: true}},
		// 2026-07-28 removed these methods; their requests carry no target.
		{"resources/subscribe without uri", `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{}}`,
			want{Kind: KindRequest, Method: "resources/subscribe", ID: "1"}},
		{"resources/unsubscribe without params", `{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe"}`,
			want{Kind: KindRequest, Method: "resources/unsubscribe", ID: "1"}},
		{"tasks/result without taskId", `{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{"name":"n"}}`,
			want{Kind: KindRequest, Method: "tasks/result", ID: "1"}},
		{"resources/unsubscribe with uri", `{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":"file:///a"}}`,
			want{Kind: KindRequest, Method: "resources/unsubscribe", ID: "1", URI: "file:///a", HasURI: true}},
		{"case variants in sibling objects", `{"jsonrpc":"2.0","id":1,"method":"x","params":[{"a":1},{"A":1}]}`,
			want{Kind: KindRequest, Method: "x", ID: "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, _, err := Parse([]byte(tt.body), Limits{})
			if err != nil {
				t.Fatalf("Parse(%s) error = %v", tt.body, err)
			}
			if diff := cmp.Diff(tt.want, envelopeOf(msgs[0])); diff != "" {
				t.Errorf("Parse(%s) (-want +got):\n%s", tt.body, diff)
			}
			checkRaw(t, []byte(tt.body), msgs)
		})
	}
}

func TestParseCaseVariants(t *testing.T) {
	// Each pair of names is one a case-insensitive decoder merges.
	pairs := [][2]string{
		{"path", "Path"},
		{"path", "PATH"},
		{"key", "\u212aey"},          // Kelvin sign
		{"KEY", "\u212aEY"},          // Kelvin sign
		{"size", "\u017fize"},        // long s
		{"size", "sıze"},             // dotless i is its own orbit: not a pair
		{"straße", "STRASSE"},        // a full fold only: not a pair
		{"\u00b5", "\u039c"},         // micro sign and capital mu
		{"name", "n\\u0041me"},       // escape of a case variant
		{"\u01c4", "\u01c5"},         // DŽ and Dž
		{"\u1e9e", "\u00df"},         // capital and small sharp s
		{"\u03c3", "\u03c2"},         // sigma and final sigma
		{"\u0398", "\u03d1"},         // theta and theta symbol
		{"x\u212b", "x\u00e5"},       // Angstrom sign and å
		{"\u2126mega", "\u03c9MEGA"}, // Ohm sign and omega
	}
	notPairs := map[string]bool{"s\u0131ze": true, "STRASSE": true}
	body := func(a, b string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"` + a + `":1,"` + b + `":2}}}`
	}
	for _, p := range pairs {
		t.Run(p[0]+"|"+p[1], func(t *testing.T) {
			_, _, err := Parse([]byte(body(p[0], p[1])), Limits{})
			want := ErrDuplicateName
			if notPairs[p[1]] {
				want = nil
			}
			if !errors.Is(err, want) {
				t.Errorf("Parse(%q, %q) error = %v, want %v", p[0], p[1], err, want)
			}
		})
	}
	// The map path (objects with many names) must catch variants too,
	// wherever they sit.
	for _, n := range []int{linearNames - 1, linearNames, linearNames + 1, 3 * linearNames} {
		var b strings.Builder
		for i := range n {
			b.WriteString(`"k` + strings.Repeat("x", i) + `":0,`)
		}
		for _, at := range []string{"first", "last"} {
			variant := `"K":1`
			if at == "last" {
				variant = `"K` + strings.Repeat("X", n-1) + `":1`
			}
			body := `{"jsonrpc":"2.0","id":1,"method":"x","params":{` + b.String() + variant + `}}`
			_, _, err := Parse([]byte(body), Limits{})
			if !errors.Is(err, ErrDuplicateName) {
				t.Errorf("Parse(%d names + variant of %s) error = %v, want %v", n, at, err, ErrDuplicateName)
			}
		}
	}
}

// TestParseSeparatorVariants: a member of the envelope or of params that
// is spelt as one Parse reads but for case and '-' or '_' is refused:
// Go's json/v2, matching names case-insensitively, ignores those too and
// reads "par_ams" as params where the message has none, so a
// subscriptions/listen decided without params would subscribe upstream.
func TestParseSeparatorVariants(t *testing.T) {
	for _, tt := range []struct {
		body string
		want error
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","par_ams":{"notifications":{"resourceSubscriptions":["file:///secret/a"]}}}`, ErrNotJSONRPC},
		{`{"jsonrpc":"2.0","id":1,"method":"ping","Para-ms":{}}`, ErrNotJSONRPC},
		{`{"jsonrpc":"2.0","id":1,"method":"ping","me_thod":"tools/call"}`, ErrNotJSONRPC},
		{`{"jsonrpc":"2.0","id":1,"method":"ping","_id":2}`, ErrNotJSONRPC},
		// Laravel takes a top-level _method of a JSON body for the
		// request's HTTP method (Symfony's method override, on there).
		{`{"jsonrpc":"2.0","id":1,"method":"tools/list","_method":"DELETE"}`, ErrNotJSONRPC},
		{`{"json_rpc":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}`, ErrNotJSONRPC},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"na-me":"admin_x"}}`, ErrInvalidParams},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","argu_ments":{"x":1}}}`, ErrInvalidParams},
		{`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"a","task-id":"b"}}`, ErrInvalidParams},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","me-ta":{}}}`, ErrInvalidParams},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","u_r_i":"x"}}`, ErrInvalidParams},
		// Other names, with separators of their own, stay.
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{},"name_x":1,"arguments":{"na_me":1}}}`, nil},
		{`{"jsonrpc":"2.0","id":1,"method":"ping","x_id":1}`, nil},
	} {
		_, _, err := Parse([]byte(tt.body), Limits{})
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("Parse(%s) error = %v, want %v", tt.body, err, tt.want)
		}
	}
}

func TestCanonicalInt(t *testing.T) {
	tests := map[string]bool{
		"0": true, "1": true, "-1": true, "9007199254740991": true, "-9007199254740991": true,
		"9007199254740992": false, "-0": false, "01": false, "1.0": false, "1e3": false,
		"": false, "-": false, "12345678901234567": false,
	}
	for in, want := range tests {
		if got := canonicalInt([]byte(in)); got != want {
			t.Errorf("canonicalInt(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindRequest: "request", KindNotification: "notification", KindResponse: "response", 0: "invalid"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}

func TestParseParamsError(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		lim     Limits
		wantID  string // "" = no *ParamsError
		wantErr error
	}{
		{"missing name", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}`, Limits{}, "7", ErrInvalidParams},
		{"string id", `{"jsonrpc":"2.0","id":"a\u0062","method":"resources/read"}`, Limits{}, `"a\u0062"`, ErrInvalidParams},
		{"id after a case variant", `{"jsonrpc":"2.0","method":"tools/call","params":{"Name":"x"},"id":"a"}`, Limits{}, `"a"`, ErrInvalidParams},
		{"id after _meta that is no object", `{"method":"x","params":{"_meta":[]},"jsonrpc":"2.0","id":3}`, Limits{}, "3", ErrInvalidParams},
		{"id after a numeric version", `{"method":"x","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":1}},"id":4,"jsonrpc":"2.0"}`, Limits{}, "4", ErrInvalidParams},
		{"non-string uri of a removed method", `{"jsonrpc":"2.0","id":5,"method":"resources/unsubscribe","params":{"uri":{}}}`, Limits{}, "5", ErrInvalidParams},
		{"first fault is reported", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"_meta":1,"Name":2}}`, Limits{}, "6", ErrInvalidParams},
		// Servers that read snake_case field names too (the Python SDK's
		// models) take task_id for taskId.
		{"task_id beside taskId", `{"jsonrpc":"2.0","id":8,"method":"tasks/get","params":{"taskId":"a","task_id":"b"}}`, Limits{}, "8", ErrInvalidParams},
		{"task_id alone", `{"jsonrpc":"2.0","id":9,"method":"tasks/cancel","params":{"task_id":"b"}}`, Limits{}, "9", ErrInvalidParams},
		{"Task_ID on another method", `{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"x","Task_ID":"b"}}`, Limits{}, "10", ErrInvalidParams},
		{"meta beside _meta", `{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"x","_meta":{},"meta":{"progressToken":1}}}`, Limits{}, "11", ErrInvalidParams},
		{"meta alone", `{"jsonrpc":"2.0","id":12,"method":"tools/list","params":{"meta":{}}}`, Limits{}, "12", ErrInvalidParams},

		{"notification has no id", `{"jsonrpc":"2.0","method":"tools/call","params":{}}`, Limits{}, "", ErrInvalidParams},
		{"trailing data comes first", `{"jsonrpc":"2.0","id":1,"method":"tools/call"} x`, Limits{}, "", ErrInvalidJSON},
		{"later duplicate comes first", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"x"},"id":2}`, Limits{}, "", ErrDuplicateName},
		{"later deep fault comes first", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"x","a":{"b":1,"B":2}}}`, Limits{}, "", ErrDuplicateName},
		{"envelope fault comes first", `{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"Name":"x"}}`, Limits{}, "", ErrNotJSONRPC},
		{"response with bad params", `{"jsonrpc":"2.0","id":1,"result":{},"params":{"_meta":1}}`, Limits{}, "", ErrNotJSONRPC},
		{"batch element", `[{"jsonrpc":"2.0","id":1,"method":"tools/call"}]`, Limits{AllowBatches: true}, "", ErrInvalidParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, _, err := Parse([]byte(tt.body), tt.lim)
			if !errors.Is(err, tt.wantErr) || msgs != nil {
				t.Fatalf("Parse(%s) = %d messages, %v; want %v", tt.body, len(msgs), err, tt.wantErr)
			}
			var pe *ParamsError
			gotID := ""
			if errors.As(err, &pe) {
				gotID = string(pe.ID)
			}
			if gotID != tt.wantID {
				t.Errorf("Parse(%s) ParamsError id = %q, want %q", tt.body, gotID, tt.wantID)
			}
		})
	}
}

// TestDuplicateNamesEveryDepth: Parse, FilterToolsList, MarkPrivate and
// ResponseID refuse an exact duplicate name (plain, escaped, past the
// switch to a name set) in an object at every depth the limits allow,
// inside objects or arrays, in a single message or a batch; the same
// text with distinct names is accepted, so the refusal is the duplicate's.
func TestDuplicateNamesEveryDepth(t *testing.T) {
	many := ""
	for i := range linearNames + 4 {
		many += `"n` + strconv.Itoa(i) + `":0,`
	}
	objects := []struct {
		name      string
		dup, twin string // an object with a duplicate, and with distinct names
	}{
		{"plain", `{"k":1,"k":2}`, `{"k":1,"j":2}`},
		{"escaped", `{"k":1,"\u006b":2}`, `{"k":1,"\u006a":2}`},
		{"not adjacent", `{"k":1,"x":null,"k":2}`, `{"k":1,"x":null,"j":2}`},
		{"many names", `{` + many + `"k":1,"k":2}`, `{` + many + `"k":1,"j":2}`},
		{"many names escaped", `{` + many + `"k":1,"\u006b":2}`, `{` + many + `"k":1,"\u006a":2}`},
	}
	// nest wraps inner (an object at depth d+n) in n objects or arrays.
	nest := func(n int, inner string, arrays bool) string {
		for range n {
			if arrays {
				inner = `[0,` + inner + `]`
			} else {
				inner = `{"a":` + inner + `}`
			}
		}
		return inner
	}
	type text struct {
		name, dup, twin string
		parse           func(string) error
	}
	parseLim := func(lim Limits) func(string) error {
		return func(s string) error { _, _, err := Parse([]byte(s), lim); return err }
	}
	response := func(f func([]byte) error) func(string) error {
		return func(s string) error { return f([]byte(s)) }
	}
	responses := map[string]func(string) error{
		"FilterToolsList": response(func(b []byte) error {
			_, err := FilterToolsList(b, func(string) bool { return false })
			return err
		}),
		"MarkPrivate": response(func(b []byte) error { _, err := MarkPrivate(b); return err }),
		"ResponseID":  response(func(b []byte) error { _, err := ResponseID(b); return err }),
	}
	var texts []text
	for _, o := range objects {
		for _, arrays := range []bool{false, true} {
			kind := "objects"
			if arrays {
				kind = "arrays"
			}
			// Requests: the envelope is depth 1, params 2, arguments 3.
			for d := 3; d <= DefaultMaxDepth; d++ {
				req := func(obj string) string {
					return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":` + nest(d-3, obj, arrays) + `}}`
				}
				texts = append(texts, text{
					name: fmt.Sprintf("request %s %s depth %d", o.name, kind, d),
					dup:  req(o.dup), twin: req(o.twin), parse: parseLim(Limits{}),
				})
				if d < DefaultMaxDepth {
					batch := func(obj string) string { return `[{"jsonrpc":"2.0","method":"n"},` + req(obj) + `]` }
					texts = append(texts, text{
						name: fmt.Sprintf("batch %s %s depth %d", o.name, kind, d+1),
						dup:  batch(o.dup), twin: batch(o.twin), parse: parseLim(Limits{AllowBatches: true}),
					})
				}
			}
			// Responses: the envelope is depth 1, result 2, tools 3, a tool 4.
			for d := 5; d <= responseMaxDepth; d++ {
				resp := func(obj string) string {
					return `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"t","inputSchema":` + nest(d-5, obj, arrays) + `}]}}`
				}
				for fn, parse := range responses {
					texts = append(texts, text{
						name: fmt.Sprintf("%s %s %s depth %d", fn, o.name, kind, d),
						dup:  resp(o.dup), twin: resp(o.twin), parse: parse,
					})
				}
			}
		}
	}
	// Every object the envelope readers own.
	for _, s := range []struct{ name, dup, twin string }{
		{"envelope", `{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}`, `{"jsonrpc":"2.0","id":1,"method":"ping"}`},
		{"params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","nam":"b"}}`},
		{"_meta", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"x":1,"x":2}}}`, `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"x":1,"y":2}}}`},
		{"params array", `{"jsonrpc":"2.0","id":1,"method":"x","params":[{"x":1,"x":2}]}`, `{"jsonrpc":"2.0","id":1,"method":"x","params":[{"x":1,"y":2}]}`},
		{"error", `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","code":2}}`, `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","cod":2}}`},
		{"error data", `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","data":{"x":1,"x":2}}}`, `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","data":{"x":1,"y":2}}}`},
	} {
		texts = append(texts, text{name: s.name, dup: s.dup, twin: s.twin, parse: parseLim(Limits{})})
	}
	for _, s := range []struct{ name, dup, twin string }{
		{"result", `{"jsonrpc":"2.0","id":1,"result":{"tools":[],"x":1,"x":2}}`, `{"jsonrpc":"2.0","id":1,"result":{"tools":[],"x":1,"y":2}}`},
		{"tool", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"b"}]}}`, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","nam":"b"}]}}`},
		{"cacheScope", `{"jsonrpc":"2.0","id":1,"result":{"tools":[],"cacheScope":"a","cacheScope":"b"}}`, `{"jsonrpc":"2.0","id":1,"result":{"tools":[],"cacheScope":"a","cacheScop":"b"}}`},
	} {
		for fn, parse := range responses {
			texts = append(texts, text{name: fn + " " + s.name, dup: s.dup, twin: s.twin, parse: parse})
		}
	}
	for _, tt := range texts {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.parse(tt.dup); !errors.Is(err, ErrDuplicateName) {
				t.Errorf("reading %s: error = %v, want %v", tt.dup, err, ErrDuplicateName)
			}
			if err := tt.parse(tt.twin); err != nil {
				t.Errorf("reading %s: error = %v, want nil", tt.twin, err)
			}
		})
	}
}

// TestSameName: names a JSON decoder may read as one member.
func TestSameName(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"tasks", "tasks", true},
		{"tasks", "TASKS", true},
		{"tasks", "Taſks", true},      // U+017F long s folds to s (encoding/json)
		{"kind", "\u212aind", true},   // Kelvin sign folds to k
		{"tasks", "tasks\x00x", true}, // C-string decoders stop at NUL
		{"tasks", "task", false},
		{"tasks", "tasks_", false},
		{"tasks", "", false},
	} {
		if got := SameName(tt.a, tt.b); got != tt.want {
			t.Errorf("SameName(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestSameLooseName: names a decoder that also ignores '-' and '_' may
// read as one member.
func TestSameLooseName(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"requestState", "request_state", true},
		{"requestState", "Request-State", true},
		{"name", "Na_me\x00x", true}, // up to the NUL, as C strings end
		{"name", "naſme", false},
		{"Kelvin", "\u212aelvin", true},
		{"ſtate", "STATE", true},
		{"name", "names", false},
		{"name", "na_me_s", false},
		{"name", "", false},
	} {
		if got := SameLooseName(tt.a, tt.b); got != tt.want {
			t.Errorf("SameLooseName(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := LooseFold(tt.a) == LooseFold(tt.b); got != tt.want {
			t.Errorf("LooseFold(%q) == LooseFold(%q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestProtoNameRefused: a request with a member named __proto__, in any
// object and however escaped, is refused (ErrProtoName), by the fast path
// too: a JavaScript server that copies an object with Object.assign or a
// for-in loop reads that member's members as the copy's own wherever it
// has none, so an argument absent to the gateway is present to it.
// Responses keep such members (a tool's schema may name one), and a
// name that only contains __proto__, or a __proto__ string value, is
// just a name or a string.
func TestProtoNameRefused(t *testing.T) {
	call := func(args string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":` + args + `}}`
	}
	refused := map[string]string{
		"arguments":       call(`{"__proto__":{"note":"x"}}`),
		"escaped":         call(`{"\u005f_proto__":{"note":"x"}}`),
		"escaped fully":   call(`{"\u005f\u005f\u0070\u0072\u006f\u0074\u006f\u005f\u005f":{"note":"x"}}`),
		"beside the name": call(`{"note":"y","__proto__":{"note":"x"}}`),
		"nested":          call(`{"filter":{"__proto__":{"owner":"bob"}}}`),
		"in an array":     call(`{"ids":[{"__proto__":{"id":1}}]}`),
		"not an object":   call(`{"__proto__":null}`),
		"params":          `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","__proto__":{"arguments":{"note":"x"}}}}`,
		"envelope":        `{"jsonrpc":"2.0","id":1,"method":"ping","__proto__":{"method":"tools/call"}}`,
		"_meta":           `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"__proto__":{}}}}`,
		"batch":           `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","arguments":{"__proto__":{}}}}]`,
	}
	for name, body := range refused {
		t.Run(name, func(t *testing.T) {
			_, _, err := Parse([]byte(body), Limits{AllowBatches: true})
			if !errors.Is(err, ErrProtoName) {
				t.Fatalf("Parse = %v, want ErrProtoName", err)
			}
			if _, ok := parseSimple([]byte(body), DefaultMaxDepth); ok {
				t.Fatal("the fast path answered")
			}
		})
	}
	passed := map[string]string{
		"longer name":  call(`{"__proto__x":1,"x__proto__":2,"__PROTO__":3}`),
		"string value": call(`{"key":"__proto__"}`),
		"proto":        call(`{"proto":{},"_proto_":{}}`),
	}
	for name, body := range passed {
		t.Run(name, func(t *testing.T) {
			if _, _, err := Parse([]byte(body), Limits{}); err != nil {
				t.Fatalf("Parse = %v", err)
			}
		})
	}
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"t","inputSchema":{"type":"object","properties":{"__proto__":{"type":"object"}}}}]}}`
	if _, err := FilterToolsList([]byte(list), func(string) bool { return true }); err != nil {
		t.Fatalf("FilterToolsList of a schema naming __proto__ = %v", err)
	}
}

// TestBigObjectNamesMemory: the duplicate check of an object with many
// names keeps a hash of each name, not the name again as a string beside
// its span: a 1 MiB body of 100,000 short names allocated 19 MB while it
// was read (about 190 bytes a member), and a token's max_in_flight such
// requests at once (100 by default) took the gateway process past a
// gigabyte (60 of them: 157 MiB to 951 MiB of RSS, on the binary).
func TestBigObjectNamesMemory(t *testing.T) {
	const n = 100000
	var b strings.Builder
	b.WriteString(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strconv.Itoa(i) + `":1`)
	}
	b.WriteString(`}}}`)
	body := []byte(b.String())
	if _, _, err := Parse(body, Limits{}); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, _, err := Parse(body, Limits{}); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	runtime.ReadMemStats(&after)
	perMember := (after.TotalAlloc - before.TotalAlloc) / n
	if perMember > 64 {
		t.Errorf("Parse of an object of %d names (%d bytes) allocated %d bytes per member, want at most 64", n, len(body), perMember)
	}
	if testing.Verbose() {
		t.Logf("%d bytes per member", perMember)
	}
}

// TestBigObjectHashCollisions: where two names of a big object hash
// alike, the names themselves decide: with every name hashing alike,
// distinct names (plain, escaped, nested objects between them) pass, and
// a duplicate or case variant anywhere is refused.
func TestBigObjectHashCollisions(t *testing.T) {
	saved := nameHash
	nameHash = func([]byte) uint64 { return 7 }
	t.Cleanup(func() { nameHash = saved })
	var many strings.Builder
	for i := range 3 * linearNames {
		fmt.Fprintf(&many, `"n%d":{"x":[1,{"n%d":2}],"y":"\"}"},`, i, i)
	}
	for _, tt := range []struct {
		members string
		want    error
	}{
		{many.String() + `"k":1,"j":2`, nil},
		{many.String() + `"k":1,"\u006a":2`, nil},
		{`"k":1,` + many.String() + `"j":2`, nil},
		{many.String() + `"k":1,"k":2`, ErrDuplicateName},
		{many.String() + `"k":1,"\u006b":2`, ErrDuplicateName},
		{`"k":1,` + many.String() + `"K":2`, ErrDuplicateName},
		{many.String() + `"N3":2`, ErrDuplicateName},
		{many.String() + `"n0":2`, ErrDuplicateName},
	} {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{` + tt.members + `}}}`
		if _, _, err := Parse([]byte(body), Limits{}); !errors.Is(err, tt.want) && (tt.want != nil || err != nil) {
			t.Errorf("Parse(%.60s…%s) error = %v, want %v", tt.members, tt.members[max(0, len(tt.members)-20):], err, tt.want)
		}
	}
}
