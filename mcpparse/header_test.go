package mcpparse

import (
	"errors"
	"net/http"
	"testing"
)

func TestDecodeHeaderValue(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		// The spec's encoding examples.
		{in: "us-west1", want: "us-west1"},
		{in: "=?base64?SGVsbG8sIOS4lueVjA==?=", want: "Hello, 世界"},
		{in: "=?base64?IHBhZGRlZCA=?=", want: " padded "},
		{in: "=?base64?bGluZTEKbGluZTI=?=", want: "line1\nline2"},
		{in: "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", want: "=?base64?literal?="},
		// Plain values.
		{in: "", want: ""},
		{in: "get_weather", want: "get_weather"},
		{in: "file:///projects/myapp/config.json", want: "file:///projects/myapp/config.json"},
		{in: "a b\tc", want: "a b\tc"},
		{in: "=?base64?", want: "=?base64?"},               // no suffix: plain
		{in: "x=?base64?YQ==?=", want: "x=?base64?YQ==?="}, // prefix not at start: plain
		{in: "=?BASE64?YQ==?=", want: "=?BASE64?YQ==?="},   // markers are case-sensitive
		{in: "=?base64??=", want: ""},
		// Refused.
		{in: "=?base64?=", wantErr: true},          // prefix and suffix overlap
		{in: "=?base64?SGVsbG8?=", wantErr: true},  // unpadded
		{in: "=?base64?SGVsbG9=?=", wantErr: true}, // non-canonical padding bits
		{in: "=?base64?SGV sbG8=?=", wantErr: true},
		{in: "=?base64?SGVsbG8-?=", wantErr: true}, // URL alphabet
		{in: "=?base64?/w==?=", wantErr: true},     // decodes to invalid UTF-8
		{in: "Hello, 世界", wantErr: true},           // raw non-ASCII
		{in: "a\x00b", wantErr: true},
		{in: "a\nb", wantErr: true},
		{in: "a\rb", wantErr: true},
		{in: "a\x7fb", wantErr: true},
		{in: " padded", wantErr: true},
		{in: "padded\t", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := DecodeHeaderValue(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedHeader) {
					t.Errorf("DecodeHeaderValue(%q) = %q, %v; want %v", tt.in, got, err, ErrMalformedHeader)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("DecodeHeaderValue(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// parseOne reads a single corpus message.
func parseOne(t *testing.T, name string) Message {
	t.Helper()
	msgs, _, err := Parse(readCorpus(t, name), Limits{})
	if err != nil {
		t.Fatalf("Parse(%s) error = %v", name, err)
	}
	return msgs[0]
}

func TestCheckHeaders(t *testing.T) {
	h := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	const v = "2026-07-28"
	toolsCall := parseOne(t, "2026-07-28/tools-call.json")
	unicodeCall := parseOne(t, "2026-07-28/tools-call-unicode.json")
	read := parseOne(t, "2026-07-28/resources-read.json")
	prompt := parseOne(t, "2026-07-28/prompts-get.json")
	list := parseOne(t, "2026-07-28/tools-list.json")
	tasksGet := parseOne(t, "2026-07-28/tasks-get.json")
	notification := parseOne(t, "2026-07-28/progress.json")
	response := parseOne(t, "2026-07-28/tools-list-result.json")
	oldCall := parseOne(t, "2025-06-18/tools-call-meta.json")
	noMeta := parseOne(t, "2026-07-28/server-discover-no-meta.json")
	noVersion := parseOne(t, "2026-07-28/server-discover-no-version.json")
	subscribe := parseOne(t, "2026-07-28/resources-subscribe-removed.json")
	tasksResult := parseOne(t, "2026-07-28/tasks-result-removed.json")
	emptyVersion := toolsCall
	emptyVersion.ProtocolVersion = ""

	tests := []struct {
		name       string
		h          http.Header
		m          Message
		wantHeader string // "" = no *HeaderMismatchError
		wantReason string
		wantErr    error // another error, not a *HeaderMismatchError
	}{
		{"tools/call", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "get_weather"), toolsCall, "", "", nil},
		{"header names are case-insensitive", h("mcp-protocol-version", v, "MCP-METHOD", "tools/call", "mcp-name", "get_weather"), toolsCall, "", "", nil},
		{"base64 name", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "=?base64?SGVsbG8sIOS4lueVjA==?="), unicodeCall, "", "", nil},
		{"resources/read", h("MCP-Protocol-Version", v, "Mcp-Method", "resources/read", "Mcp-Name", "file:///projects/myapp/config.json"), read, "", "", nil},
		{"prompts/get", h("MCP-Protocol-Version", v, "Mcp-Method", "prompts/get", "Mcp-Name", "code_review"), prompt, "", "", nil},
		{"tools/list without name", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/list"), list, "", "", nil},
		{"tasks/get names the task", h("MCP-Protocol-Version", v, "Mcp-Method", "tasks/get", "Mcp-Name", taskID), tasksGet, "", "", nil},
		{"notification without _meta", h("MCP-Protocol-Version", v, "Mcp-Method", "notifications/progress"), notification, "", "", nil},

		{"missing method", h("MCP-Protocol-Version", v, "Mcp-Name", "get_weather"), toolsCall, HeaderMethod, "missing", nil},
		{"other method", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/list", "Mcp-Name", "get_weather"), toolsCall, HeaderMethod, "mismatch", nil},
		{"method differs in case", h("MCP-Protocol-Version", v, "Mcp-Method", "Tools/Call", "Mcp-Name", "get_weather"), toolsCall, HeaderMethod, "mismatch", nil},
		{"method repeated", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Method", "tools/call", "Mcp-Name", "get_weather"), toolsCall, HeaderMethod, "repeated", nil},
		{"method base64 is not decoded", h("MCP-Protocol-Version", v, "Mcp-Method", "=?base64?dG9vbHMvY2FsbA==?=", "Mcp-Name", "get_weather"), toolsCall, HeaderMethod, "mismatch", nil},
		{"method with control character", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call\x00", "Mcp-Name", "get_weather"), toolsCall, HeaderMethod, "malformed", nil},
		{"response", h("MCP-Protocol-Version", v, "Mcp-Method", ""), response, HeaderMethod, "mismatch", nil},

		{"missing version", h("Mcp-Method", "tools/call", "Mcp-Name", "get_weather"), toolsCall, HeaderProtocolVersion, "missing", nil},
		{"version differs from _meta", h("MCP-Protocol-Version", "2025-11-25", "Mcp-Method", "tools/call", "Mcp-Name", "get_weather"), toolsCall, HeaderProtocolVersion, "mismatch", nil},
		{"server/discover without _meta", h("MCP-Protocol-Version", v, "Mcp-Method", "server/discover"), noMeta, "", "", ErrMissingProtocolVersion},
		{"_meta without version", h("MCP-Protocol-Version", v, "Mcp-Method", "server/discover"), noVersion, "", "", ErrMissingProtocolVersion},
		{"older request without _meta version", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "get_weather_data"), oldCall, "", "", ErrMissingProtocolVersion},
		{"empty _meta version", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "get_weather"), emptyVersion, "", "", ErrMissingProtocolVersion},
		{"no version anywhere", h("Mcp-Method", "server/discover"), noMeta, HeaderProtocolVersion, "missing", nil},
		{"version header repeated, no _meta", h("MCP-Protocol-Version", v, "MCP-Protocol-Version", v, "Mcp-Method", "server/discover"), noMeta, HeaderProtocolVersion, "repeated", nil},
		{"method checked before _meta", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/list"), noMeta, HeaderMethod, "mismatch", nil},

		{"missing name", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call"), toolsCall, HeaderName, "missing", nil},
		{"other name", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "delete_everything"), toolsCall, HeaderName, "mismatch", nil},
		{"name differs in case", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "Get_Weather"), toolsCall, HeaderName, "mismatch", nil},
		{"name repeated", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "get_weather", "Mcp-Name", "get_weather"), toolsCall, HeaderName, "repeated", nil},
		{"raw non-ASCII name", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "Hello, 世界"), unicodeCall, HeaderName, "malformed", nil},
		{"bad base64 name", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "=?base64?SGVsbG8?="), toolsCall, HeaderName, "malformed", nil},
		{"base64 of another name", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/call", "Mcp-Name", "=?base64?ZXZpbA==?="), toolsCall, HeaderName, "mismatch", nil},
		{"uri in place of name", h("MCP-Protocol-Version", v, "Mcp-Method", "resources/read", "Mcp-Name", "file:///etc/passwd"), read, HeaderName, "mismatch", nil},
		{"name on a method without one", h("MCP-Protocol-Version", v, "Mcp-Method", "tools/list", "Mcp-Name", "get_weather"), list, HeaderName, "mismatch", nil},
		{"tasks/get without task id", h("MCP-Protocol-Version", v, "Mcp-Method", "tasks/get"), tasksGet, HeaderName, "missing", nil},
		{"tasks/get with another task", h("MCP-Protocol-Version", v, "Mcp-Method", "tasks/get", "Mcp-Name", "other"), tasksGet, HeaderName, "mismatch", nil},

		// Removed in 2026-07-28: no Mcp-Name, so the server can answer
		// "method not found".
		{"tasks/result has no name header", h("MCP-Protocol-Version", v, "Mcp-Method", "tasks/result"), tasksResult, "", "", nil},
		{"tasks/result with a name header", h("MCP-Protocol-Version", v, "Mcp-Method", "tasks/result", "Mcp-Name", taskID), tasksResult, HeaderName, "mismatch", nil},
		{"resources/subscribe has no name header", h("MCP-Protocol-Version", v, "Mcp-Method", "resources/subscribe"), subscribe, "", "", nil},
		{"resources/subscribe with a name header", h("MCP-Protocol-Version", v, "Mcp-Method", "resources/subscribe", "Mcp-Name", "file:///a"), subscribe, HeaderName, "mismatch", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHeaders(tt.h, tt.m)
			var hm *HeaderMismatchError
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || errors.As(err, &hm) {
					t.Errorf("CheckHeaders() = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if tt.wantHeader == "" {
				if err != nil {
					t.Errorf("CheckHeaders() = %v, want nil", err)
				}
				return
			}
			if !errors.As(err, &hm) {
				t.Fatalf("CheckHeaders() = %v, want a *HeaderMismatchError", err)
			}
			if hm.Header != tt.wantHeader || hm.Reason != tt.wantReason {
				t.Errorf("CheckHeaders() = %s %s (%v), want %s %s", hm.Header, hm.Reason, err, tt.wantHeader, tt.wantReason)
			}
		})
	}
}

// TestMissingProtocolVersionIsInvalidParams: callers map the error to
// -32602 by the contract sentinels.
func TestMissingProtocolVersionIsInvalidParams(t *testing.T) {
	for _, target := range []error{ErrInvalidParams, ErrNotJSONRPC} {
		if !errors.Is(ErrMissingProtocolVersion, target) {
			t.Errorf("errors.Is(ErrMissingProtocolVersion, %v) = false, want true", target)
		}
	}
}

func TestHeaderMismatchErrorMessage(t *testing.T) {
	tests := []struct {
		err  HeaderMismatchError
		want string
	}{
		{HeaderMismatchError{Header: HeaderName, HeaderValue: "foo", BodyValue: "bar", Reason: "mismatch"},
			`mcpparse: header mismatch: Mcp-Name header value "foo" does not match body value "bar"`},
		{HeaderMismatchError{Header: HeaderMethod, Reason: "missing"}, "mcpparse: header mismatch: Mcp-Method header is missing"},
		{HeaderMismatchError{Header: HeaderName, Reason: "repeated"}, "mcpparse: header mismatch: Mcp-Name header is repeated"},
		{HeaderMismatchError{Header: HeaderName, HeaderValue: "a\nb", Reason: "malformed"}, `mcpparse: header mismatch: Mcp-Name header value "a\nb" is malformed`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestNeedsHeaderCheck(t *testing.T) {
	withMeta := parseOne(t, "2026-07-28/tools-call.json")
	without := parseOne(t, "2025-06-18/tools-call-meta.json")
	tests := []struct {
		name    string
		version string
		msgs    []Message
		want    bool
	}{
		{"2026-07-28", "2026-07-28", []Message{without}, true},
		{"later revision", "2027-01-01", []Message{without}, true},
		{"2025-11-25", "2025-11-25", []Message{without}, false},
		{"no header", "", []Message{without}, false},
		{"no header but _meta version", "", []Message{withMeta}, true},
		{"downgraded header but _meta version", "2025-06-18", []Message{without, withMeta}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.version != "" {
				h.Set("MCP-Protocol-Version", tt.version)
			}
			if got := NeedsHeaderCheck(h, tt.msgs); got != tt.want {
				t.Errorf("NeedsHeaderCheck(%q) = %v, want %v", tt.version, got, tt.want)
			}
		})
	}
}
