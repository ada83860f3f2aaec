package mcpparse_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

func ExampleParse() {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{"location":"Seattle"}}}`)
	msgs, _, err := mcpparse.Parse(body, mcpparse.Limits{})
	if err != nil {
		fmt.Println(err)
		return
	}
	m := msgs[0]
	fmt.Println(m.Kind, m.Method, m.Name, string(m.ID))

	// Go's encoding/json would read "Name" as the name: refused.
	_, _, err = mcpparse.Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","Name":"drop_database"}}`), mcpparse.Limits{})
	fmt.Println(errors.Is(err, mcpparse.ErrDuplicateName))
	// Output:
	// request tools/call get_weather 1
	// true
}

func ExampleCheckHeaders() {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Hello, 世界",` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`)
	msgs, _, _ := mcpparse.Parse(body, mcpparse.Limits{})
	h := http.Header{}
	h.Set("MCP-Protocol-Version", "2026-07-28")
	h.Set("Mcp-Method", "tools/call")
	h.Set("Mcp-Name", "=?base64?SGVsbG8sIOS4lueVjA==?=")
	fmt.Println(mcpparse.NeedsHeaderCheck(h, msgs), mcpparse.CheckHeaders(h, msgs[0]))

	h.Set("Mcp-Name", "get_weather")
	var mismatch *mcpparse.HeaderMismatchError
	fmt.Println(errors.As(mcpparse.CheckHeaders(h, msgs[0]), &mismatch), mismatch.Header, mcpparse.CodeHeaderMismatch)
	// Output:
	// true <nil>
	// true Mcp-Name -32020
}

func ExampleReader() {
	stream := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}\n\n"
	r := mcpparse.NewReader(strings.NewReader(stream), 1<<20)
	var out strings.Builder
	for {
		ev, err := r.Next()
		if err != nil {
			break
		}
		filtered, err := mcpparse.FilterToolsList([]byte(ev.Data), func(name string) bool { return name == "b" })
		if err != nil {
			break // fail closed: end the stream
		}
		ev.Data, ev.Raw = string(filtered), nil
		mcpparse.WriteEvent(&out, ev)
	}
	fmt.Print(out.String())
	// Output:
	// event: message
	// data: {"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"b"}]}}
}
