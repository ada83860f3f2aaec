package mcpparse

import (
	"errors"
	"testing"
)

func TestLocateString(t *testing.T) {
	for _, tt := range []struct {
		name, msg string
		path      []string
		found     bool
		value     string
		literal   string
		err       error
	}{
		{"params.taskId", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-1"}}`, []string{"params", "taskId"}, true, "t-1", `"t-1"`, nil},
		{"escaped", `{"params":{"x":{"taskId":"no"},"taskId" : "a\u0062\/"}}`, []string{"params", "taskId"}, true, "ab/", `"a\u0062\/"`, nil},
		{"after nested", `{"result":{"content":[{"taskId":"inner"}],"taskId":"outer"}}`, []string{"result", "taskId"}, true, "outer", `"outer"`, nil},
		{"absent member", `{"params":{"name":"x"}}`, []string{"params", "taskId"}, false, "", "", nil},
		{"absent object", `{"result":{"taskId":"x"}}`, []string{"params", "taskId"}, false, "", "", nil},
		{"case variant not matched", `{"params":{"TaskId":"x"}}`, []string{"params", "taskId"}, false, "", "", nil},
		{"not a string", `{"params":{"taskId":7}}`, []string{"params", "taskId"}, false, "", "", ErrNotString},
		{"params not an object", `{"params":["taskId"]}`, []string{"params", "taskId"}, false, "", "", ErrNotString},
		{"not an object", `["params"]`, []string{"params"}, false, "", "", ErrNotString},
		// The rest is not read: Parse refuses duplicates beforehand.
		{"first of duplicates", `{"params":{"taskId":"a","taskId":"b"}}`, []string{"params", "taskId"}, true, "a", `"a"`, nil},
		{"truncated", `{"params":{"name":"x",`, []string{"params", "taskId"}, false, "", "", ErrInvalidJSON},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, found, err := LocateString([]byte(tt.msg), tt.path...)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("LocateString(%s) error = %v, want %v", tt.msg, err, tt.err)
			}
			if found != tt.found || s.Value != tt.value {
				t.Errorf("LocateString(%s) = %q, %v, want %q, %v", tt.msg, s.Value, found, tt.value, tt.found)
			}
			if found && tt.msg[s.Start:s.End] != tt.literal {
				t.Errorf("LocateString(%s) span = %q, want %q", tt.msg, tt.msg[s.Start:s.End], tt.literal)
			}
		})
	}
}

func TestReplaceString(t *testing.T) {
	msg := []byte(`{"id":1,"params":{"taskId" : "wrapped","x":"wrapped"}}`)
	s, found, err := LocateString(msg, "params", "taskId")
	if err != nil || !found {
		t.Fatalf("LocateString = %v, %v", found, err)
	}
	got, err := ReplaceString(msg, s, "up\"1")
	if want := `{"id":1,"params":{"taskId" : "up\"1","x":"wrapped"}}`; err != nil || string(got) != want {
		t.Errorf("ReplaceString = %s, %v, want %s", got, err, want)
	}
	for _, bad := range []Span{{Start: 0, End: 1}, {Start: 5, End: 2}, {Start: s.Start, End: len(msg) + 1}, {Start: s.Start + 1, End: s.End}} {
		if _, err := ReplaceString(msg, bad, "x"); err == nil {
			t.Errorf("ReplaceString(%+v) = nil error, want one", bad)
		}
	}
}
