package interop

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/net/http2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestHTTPDifferential sends requests that a reader of HTTP other than the
// gateway could take for a call of a tool the caller may not run through
// the gateway to real SDK servers: the Go SDK's stateless Streamable HTTP
// handler (2025 and 2026-07-28 requests) and the TypeScript SDK's
// transport (test/node/sdkserver.mjs, 2025 requests; it knows no later
// revision), on its own and in the SDK's Express app, whose body parser
// decodes the charset the Content-Type names. The caller may call echo only; every request tries to run
// delete_notes: in the body beside an allowed reading (duplicate or
// variant names, a second message, a batch, a NUL), in a body the gateway
// cannot read (gzip, deflate, UTF-16, UTF-7 named beside an RFC 2231
// charset*, a BOM), behind headers that
// disagree with the body (Mcp-Method, Mcp-Name plain or Base64), in
// framing (two Content-Length, chunked beside Content-Length, a request
// smuggled after the body, Expect), on other paths and methods, over
// HTTP/1.1 and h2c. No server
// may run it; echo through the same stack must run.
func TestHTTPDifferential(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := startDiffStack(t)
	base, addr := st.base, st.addr

	for _, up := range []struct {
		name     string
		runs     *toolRuns
		versions []string
	}{
		{"go", st.goRuns, []string{"2025-06-18", "2025-03-26", "2026-07-28"}},
		{"ts", st.tsRuns, []string{"2025-06-18", "2025-03-26"}},
		{"express", st.expressRuns, []string{"2025-06-18", "2025-03-26"}},
	} {
		resource := base + "/" + up.name + "/mcp"
		token := readToken(ctx, t, base, resource)
		for _, version := range up.versions {
			t.Run(up.name+"/"+version+"/h2c", func(t *testing.T) {
				h2cRequests(t, addr, resource, token, version, up.runs)
			})
			for _, c := range httpDiffCases(up.name, version) {
				t.Run(up.name+"/"+version+"/"+c.name, func(t *testing.T) {
					before := up.runs.count("delete_notes")
					echoes := up.runs.count("echo")
					status, body := roundTrip(t, addr, c.raw(token))
					if up.runs.wait("delete_notes", before) || strings.Contains(body, "ran delete_notes") {
						t.Fatalf("%s ran delete_notes (answer %d %q)", up.name, status, body)
					}
					if c.echo && (status != http.StatusOK || !up.runs.waitFor("echo", echoes)) {
						t.Fatalf("the allowed call: %d %q, echo not run", status, body)
					}
				})
			}
		}
	}
}

// diffStack is Caddy with the gateway in front of the three servers of
// httpDiffCaddyfile, at base (host:port addr), and those servers.
type diffStack struct {
	base, addr                  string
	goAddr, tsAddr, expressAddr string
	goRuns, tsRuns, expressRuns *toolRuns
	// A Go SDK server with sessions answering in event streams.
	sessionsAddr string
	sessionsRuns *toolRuns
}

// startDiffStack starts the servers and Caddy for the rest of the test.
func startDiffStack(t *testing.T) *diffStack {
	t.Helper()
	nt := requireNode(t)
	st := &diffStack{goRuns: &toolRuns{}}
	goSrv := httptest.NewServer(goSDKServer(st.goRuns))
	t.Cleanup(goSrv.Close)
	st.goAddr = goSrv.Listener.Addr().String()
	st.sessionsRuns = &toolRuns{}
	sessionsSrv := httptest.NewServer(goSDKServerWith(st.sessionsRuns, &mcp.StreamableHTTPOptions{}))
	t.Cleanup(sessionsSrv.Close)
	st.sessionsAddr = sessionsSrv.Listener.Addr().String()
	st.tsAddr, st.tsRuns = startSDKServer(t, nt)
	st.expressAddr, st.expressRuns = startSDKServer(t, nt, "--express")
	port := harness.StartFree(t, func(port int) string {
		var routes strings.Builder
		for _, r := range [][2]string{{"go", st.goAddr}, {"ts", st.tsAddr}, {"express", st.expressAddr}, {"sessions", st.sessionsAddr}} {
			fmt.Fprintf(&routes, httpDiffRoute, port, r[0], r[1])
		}
		return fmt.Sprintf(httpDiffCaddyfile, port, harness.HashPassword(t, ccClientSecret), routes.String())
	})
	st.addr = fmt.Sprintf("127.0.0.1:%d", port)
	st.base = "http://" + st.addr
	harness.WaitReady(t, st.base+"/.well-known/oauth-authorization-server")
	return st
}

// httpDiffCaddyfile is the configuration of a diffStack: the port, the
// client's secret hash, and the routes (httpDiffRoute).
const httpDiffCaddyfile = `{
	servers {
		protocols h1 h2c
	}
	admin off
	persist_config off
	auto_https off
	mcp_auth {
		issuer http://127.0.0.1:%[1]d
		storage memory
		client ` + ccClientID + ` {
			name "HTTP differential"
			secret %[2]s
			grant_types client_credentials
			auth_method client_secret_basic
			scopes read
		}
	}
}

http://127.0.0.1:%[1]d {
	bind 127.0.0.1
	mcp_issuer%[3]s
}
`

// httpDiffRoute is the route to one server of a diffStack: its name
// (the path prefix) and address. The caller may call echo with the text
// hello or none, get the prompt greet and read under file:///public/.
const httpDiffRoute = `
	route /%[2]s/* {
		mcp_gateway {
			resource http://127.0.0.1:%[1]d/%[2]s/mcp
			scope read
			tool echo read {
				arg /text optional one_of hello
			}
			tool * admin
			prompt greet read
			prompt * admin
			resource_rule file:///public/ read
			resource_rule file:/// admin
		}
		uri strip_prefix /%[2]s
		reverse_proxy %[3]s
	}`

// meta2026 is the params._meta every 2026-07-28 request carries.
const meta2026 = `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`

// readToken gets a token with the scope read for resource.
func readToken(ctx context.Context, t *testing.T, issuer, resource string) string {
	t.Helper()
	cfg := clientcredentials.Config{
		ClientID:       ccClientID,
		ClientSecret:   ccClientSecret,
		TokenURL:       issuer + "/token",
		Scopes:         []string{"read"},
		EndpointParams: map[string][]string{"resource": {resource}},
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatalf("token for %s: %v", resource, err)
	}
	return tok.AccessToken
}

// toolRuns counts the runs of each tool of a server and keeps the text
// arguments they got (JSON, percent-encoded).
type toolRuns struct {
	mu    sync.Mutex
	runs  map[string]int
	texts map[string][]string
}

func (r *toolRuns) ranWith(tool, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs, r.texts = map[string]int{}, map[string][]string{}
	}
	r.runs[tool]++
	r.texts[tool] = append(r.texts[tool], text)
}

// textsOf returns the text arguments of tool's runs from the n-th on.
func (r *toolRuns) textsOf(tool string, n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.texts[tool][min(n, len(r.texts[tool])):]...)
}

func (r *toolRuns) count(tool string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[tool]
}

// wait reports whether tool ran more than before times, giving a run
// that a refused request may have started a moment to be counted.
func (r *toolRuns) wait(tool string, before int) bool {
	time.Sleep(20 * time.Millisecond)
	return r.count(tool) > before
}

// waitFor reports whether tool ran more than before times within a second.
func (r *toolRuns) waitFor(tool string, before int) bool {
	for range 100 {
		if r.count(tool) > before {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// goSDKServer is a stateless server of the Go SDK with the tools echo and
// delete_notes, counting their runs and answering "ran <tool> <text>" as
// test/node/sdkserver.mjs does, in JSON, and with its resources and
// prompts.
func goSDKServer(runs *toolRuns) http.Handler {
	return goSDKServerWith(runs, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
}

// goSDKServerWith is goSDKServer with other options.
func goSDKServerWith(runs *toolRuns, opts *mcp.StreamableHTTPOptions) http.Handler {
	s := mcp.NewServer(&mcp.Implementation{Name: "httpdiff", Version: "v0"}, nil)
	type in struct {
		Text *string `json:"text,omitempty"`
	}
	for _, name := range []string{"echo", "delete_notes"} {
		mcp.AddTool(s, &mcp.Tool{Name: name}, func(_ context.Context, _ *mcp.CallToolRequest, args in) (*mcp.CallToolResult, any, error) {
			text, _ := json.Marshal(args.Text)
			runs.ranWith(name, url.QueryEscape(string(text)))
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran " + name + " " + url.QueryEscape(string(text))}}}, nil, nil
		})
	}
	for _, name := range []string{"public", "secret"} {
		s.AddResource(&mcp.Resource{URI: "file:///" + name + "/a", Name: name}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "served " + name}}}, nil
		})
	}
	for _, name := range []string{"greet", "admin_prompt"} {
		s.AddPrompt(&mcp.Prompt{Name: name}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "prompted " + name}}}}, nil
		})
	}
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, opts)
}

// startSDKServer runs test/node/sdkserver.mjs until the test ends and
// counts the runs it prints.
func startSDKServer(t *testing.T, nt nodeTools, flags ...string) (string, *toolRuns) {
	t.Helper()
	port := harness.FreePort(t)
	lines := nt.start(t, append([]string{"sdkserver.mjs", "--port", strconv.Itoa(port)}, flags...)...)
	waitLine(t, lines, "listening")
	runs := &toolRuns{}
	go func() {
		for line := range lines {
			if ran, ok := strings.CutPrefix(line, "ran "); ok {
				tool, text, _ := strings.Cut(ran, " ")
				runs.ranWith(tool, text)
			}
		}
	}()
	return fmt.Sprintf("127.0.0.1:%d", port), runs
}

// httpDiffCase is one request, written out byte for byte.
type httpDiffCase struct {
	name string
	raw  func(token string) []byte
	echo bool // the allowed call: must run echo
}

// httpDiffCases are the requests for the upstream at /<site>/mcp under a
// protocol version.
func httpDiffCases(site, version string) []httpDiffCase {
	path := "/" + site + "/mcp"
	v2026 := version >= "2026-07-28"
	meta := ""
	if v2026 {
		meta = meta2026
	}
	callOf := func(params string) string {
		return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{` + params + meta + `}}`
	}
	echo, del := callOf(`"name":"echo","arguments":{}`), callOf(`"name":"delete_notes","arguments":{}`)
	// headers are the usual ones, for a call of tool.
	headers := func(tool string) []string {
		h := []string{"Content-Type: application/json", "Accept: application/json, text/event-stream", "MCP-Protocol-Version: " + version}
		if v2026 {
			h = append(h, "Mcp-Method: tools/call", "Mcp-Name: "+tool)
		}
		return h
	}
	// request writes a request whose body may carry the token (a request
	// smuggled inside it); keepAlive leaves out Connection: close, so that
	// what follows the body would be read as a second request.
	request := func(method, target string, h []string, body func(token string) string, keepAlive bool) func(string) []byte {
		return func(token string) []byte {
			var b bytes.Buffer
			fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: placeholder\r\nAuthorization: Bearer %s\r\n", method, target, token)
			if !keepAlive {
				b.WriteString("Connection: close\r\n")
			}
			for _, line := range h {
				b.WriteString(line + "\r\n")
			}
			b.WriteString("\r\n")
			b.WriteString(body(token))
			return b.Bytes()
		}
	}
	fixed := func(body string) func(string) string { return func(string) string { return body } }
	post := func(h []string, body string) func(string) []byte {
		return request("POST", path, append(h, fmt.Sprintf("Content-Length: %d", len(body))), fixed(body), false)
	}
	with := func(h []string, drop string, add ...string) []string {
		var out []string
		for _, line := range h {
			if !strings.HasPrefix(line, drop+":") {
				out = append(out, line)
			}
		}
		return append(out, add...)
	}
	compressed := func(w func(io.Writer) io.WriteCloser) string {
		var b bytes.Buffer
		zw := w(&b)
		zw.Write([]byte(del))
		zw.Close()
		return b.String()
	}
	utf16 := func(s string) string {
		var b strings.Builder
		b.WriteString("\xff\xfe")
		for _, c := range s {
			b.WriteByte(byte(c))
			b.WriteByte(0)
		}
		return b.String()
	}
	chunked := func(body string) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body) }
	smuggled := func(token string) string { return string(post(headers("delete_notes"), del)(token)) }
	// framed is a request for echo followed by a smuggled one for
	// delete_notes, with the framing headers frame gives for both.
	framed := func(frame func(first, smuggled string) []string, first func(string) string) func(string) []byte {
		return func(token string) []byte {
			f := first(echo)
			return request("POST", path, append(headers("echo"), frame(f, smuggled(token))...), fixed(f+smuggled(token)), true)(token)
		}
	}
	b64 := func(s string) string { return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?=" }

	cases := []httpDiffCase{
		{name: "allowed", raw: post(headers("echo"), echo), echo: true},
		{name: "forbidden", raw: post(headers("delete_notes"), del)},
		{name: "duplicate name", raw: post(headers("echo"), callOf(`"name":"echo","name":"delete_notes"`))},
		{name: "duplicate name, other order", raw: post(headers("echo"), callOf(`"name":"delete_notes","name":"echo"`))},
		{name: "escaped duplicate", raw: post(headers("echo"), callOf(`"name":"echo","n\u0061me":"delete_notes"`))},
		{name: "Name beside name", raw: post(headers("echo"), callOf(`"name":"echo","Name":"delete_notes"`))},
		{name: "NAME only", raw: post(headers("echo"), callOf(`"NAME":"delete_notes"`))},
		{name: "name with NUL", raw: post(headers("echo"), callOf(`"name\u0000":"delete_notes","name":"echo"`))},
		{name: "params twice", raw: post(headers("echo"), `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"`+meta+`},"params":{"name":"delete_notes"`+meta+`}}`)},
		{name: "Params beside params", raw: post(headers("echo"), `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"`+meta+`},"Params":{"name":"delete_notes"`+meta+`}}`)},
		{name: "method twice", raw: post(headers("echo"), `{"jsonrpc":"2.0","id":7,"method":"ping","method":"tools/call","params":{"name":"delete_notes"`+meta+`}}`)},
		{name: "__proto__ params", raw: post(headers("echo"), callOf(`"name":"echo","__proto__":{"name":"delete_notes"}`))},
		{name: "second message after the first", raw: post(headers("echo"), echo+del)},
		{name: "batch", raw: post(headers("echo"), "["+echo+","+del+"]")},
		{name: "nested batch", raw: post(headers("echo"), "["+echo+",["+del+"]]")},
		{name: "BOM", raw: post(headers("delete_notes"), "\uFEFF"+del)},
		{name: "lone surrogate name", raw: post(headers("echo"), callOf(`"name":"delete_notes\ud800"`))},
		{name: "gzip", raw: post(with(headers("delete_notes"), "", "Content-Encoding: gzip"), compressed(func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }))},
		{name: "deflate", raw: post(with(headers("delete_notes"), "", "Content-Encoding: deflate"), compressed(func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) }))},
		{name: "UTF-16 with charset", raw: post(with(headers("delete_notes"), "Content-Type", "Content-Type: application/json; charset=utf-16"), utf16(del))},
		{name: "UTF-16 without charset", raw: post(headers("delete_notes"), utf16(del))},
		// Go's mime.ParseMediaType reads the RFC 2231 charset* (utf-8);
		// Express's body-parser reads charset and decodes UTF-7, where
		// +AG4- is n: the name is delete_notes, given after echo.
		{name: "UTF-7 beside charset*", raw: post(with(headers("echo"), "Content-Type", "Content-Type: application/json; charset=utf-7; charset*=utf-8''utf-8"), callOf(`"name":"echo","+AG4-ame":"delete_notes"`))},
		{name: "UTF-7 beside charset* continued", raw: post(with(headers("echo"), "Content-Type", "Content-Type: application/json; charset=utf-7; charset*0=utf-8"), callOf(`"name":"echo","+AG4-ame":"delete_notes"`))},
		{name: "two Content-Type", raw: post(append(headers("delete_notes"), "Content-Type: text/plain"), del)},
		{name: "two Content-Length", raw: framed(func(f, sm string) []string {
			return []string{fmt.Sprintf("Content-Length: %d", len(f)), fmt.Sprintf("Content-Length: %d", len(f)+len(sm))}
		}, func(b string) string { return b })},
		{name: "chunked beside Content-Length", raw: framed(func(f, sm string) []string {
			return []string{fmt.Sprintf("Content-Length: %d", len(f)+len(sm)), "Transfer-Encoding: chunked"}
		}, chunked)},
		{name: "Content-Length beside chunked", raw: framed(func(f, sm string) []string {
			return []string{"Transfer-Encoding: chunked", "Content-Length: 0"}
		}, chunked)},
		{name: "Expect 100-continue", raw: post(append(headers("delete_notes"), "Expect: 100-continue"), del)},
	}
	for _, m := range []string{"PUT", "PATCH", "GET", "DELETE", "OPTIONS", "post"} {
		cases = append(cases, httpDiffCase{name: "method " + m, raw: request(m, path, append(headers("delete_notes"), fmt.Sprintf("Content-Length: %d", len(del))), fixed(del), false)})
	}
	for _, p := range []string{path + "/", strings.ToUpper(path), "/" + path, path + ";x", strings.Replace(path, "mcp", "%6dcp", 1), strings.Replace(path, "/mcp", "%2Fmcp", 1)} {
		cases = append(cases, httpDiffCase{name: "path " + p, raw: request("POST", p, append(headers("delete_notes"), fmt.Sprintf("Content-Length: %d", len(del))), fixed(del), false)})
	}
	if v2026 {
		cases = append(cases,
			httpDiffCase{name: "allowed, Mcp-Name in Base64", raw: post(with(headers("echo"), "Mcp-Name", "Mcp-Name: "+b64("echo")), echo)},
			httpDiffCase{name: "Mcp-Name echo, body delete_notes", raw: post(headers("echo"), del)},
			httpDiffCase{name: "Mcp-Name Base64 echo, body delete_notes", raw: post(with(headers("echo"), "Mcp-Name", "Mcp-Name: "+b64("echo")), del)},
			httpDiffCase{name: "Mcp-Name percent-encoded", raw: post(with(headers("echo"), "Mcp-Name", "Mcp-Name: delete%5Fnotes"), del)},
			httpDiffCase{name: "Mcp-Method tools/list", raw: post(with(headers("echo"), "Mcp-Method", "Mcp-Method: tools/list"), del)},
			httpDiffCase{name: "two Mcp-Name", raw: post(append(headers("echo"), "Mcp-Name: delete_notes"), del)},
			httpDiffCase{name: "Mcp_Name", raw: post(append(with(headers("echo"), "Mcp-Name"), "Mcp_Name: delete_notes"), del)},
		)
	}
	return cases
}

// h2cRequests sends calls over HTTP/2 without TLS (prior knowledge):
// the allowed call runs echo; delete_notes, plainly, with Mcp-Name
// echo (2026-07-28), with Mcp-Name given as two fields, or with a
// content-length that says less than the DATA frames carry, never runs.
func h2cRequests(t *testing.T, addr, resource, token, version string, runs *toolRuns) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	v2026 := version >= "2026-07-28"
	meta := ""
	if v2026 {
		meta = meta2026
	}
	body := func(tool string) string {
		return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + tool + `","arguments":{}` + meta + `}}`
	}
	send := func(tool string, names []string, length int64) (int, string) {
		req, err := http.NewRequest(http.MethodPost, resource, strings.NewReader(body(tool)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", version)
		if v2026 {
			req.Header.Set("Mcp-Method", "tools/call")
			req.Header["Mcp-Name"] = names
		}
		if length >= 0 {
			req.ContentLength = length
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s", resp.Proto)
		}
		return resp.StatusCode, string(b)
	}
	echoes := runs.count("echo")
	if status, b := send("echo", []string{"echo"}, -1); status != http.StatusOK || !runs.waitFor("echo", echoes) {
		t.Fatalf("the allowed call over h2c: %d %q, echo not run", status, b)
	}
	for _, c := range []struct {
		name   string
		names  []string
		length int64
	}{
		{"forbidden", []string{"delete_notes"}, -1},
		{"Mcp-Name echo", []string{"echo"}, -1},
		{"Mcp-Name twice", []string{"echo", "delete_notes"}, -1},
		{"content-length short", []string{"delete_notes"}, 10},
	} {
		before := runs.count("delete_notes")
		status, b := send("delete_notes", c.names, c.length)
		if runs.wait("delete_notes", before) || strings.Contains(b, "ran delete_notes") {
			t.Errorf("%s: delete_notes ran (answer %d %q)", c.name, status, b)
		}
	}
}

// roundTrip writes raw to addr and reads every answer until the server
// closes the connection (a request smuggled in the body of the first is
// answered too): the status of the first final answer, and all bodies.
func roundTrip(t *testing.T, addr string, raw []byte) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	raw = bytes.Replace(raw, []byte("Host: placeholder"), []byte("Host: "+addr), -1)
	if _, err := conn.Write(raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	status := 0
	var bodies strings.Builder
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if status == 0 {
				return 0, "no answer: " + err.Error()
			}
			return status, bodies.String()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusContinue {
			continue
		}
		if status == 0 {
			status = resp.StatusCode
		}
		bodies.Write(body)
	}
}
