package caddymodule

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

// curlArgs splits a shell line of the README's curl examples into words;
// only single quotes are used there.
func curlArgs(line string) []string {
	var words []string
	var w strings.Builder
	quoted, inWord := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// TestREADMEAdminExamples sends the README's admin API curl examples, in
// order, to the admin routes as Caddy mounts them with the demo's
// configuration (Caddyfile.example, which `./xcaddy.sh run` serves with
// the admin endpoint at localhost:2019), and checks the answers against
// the JSON shapes the README documents.
func TestREADMEAdminExamples(t *testing.T) {
	src, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(src)
	_, section, _ := strings.Cut(readme, "\n## Admin API\n")
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "\n```sh\n")
	if !ok {
		t.Fatal("README.md: no sh block in the Admin API section")
	}
	block, _, _ = strings.Cut(block, "\n```\n")

	// Shapes the README documents: a value "..." stands for any.
	shapes := map[string]string{
		"POST /mcp-auth/users":         `{"username": "bob", "groups": ["demo-users"], "source": "admin"}`,
		"POST /mcp-auth/clients":       `{"client_id": "ci-bot", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic", "scopes": ["notes:read"], "source": "admin", "client_secret": "..."}`,
		"PUT /mcp-auth/clients/ci-bot": `{"client_id": "ci-bot", "client_name": "CI bot", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic", "scopes": ["notes:read", "notes:write"], "source": "admin", "created_at": "..."}`,
		"POST /mcp-auth/keys/rotate":   `{"kid": "..."}`,
	}
	for route, shape := range shapes {
		if !strings.Contains(strings.Join(strings.Fields(section), " "), shape) {
			t.Errorf("README.md does not document %s as %s", route, shape)
		}
	}

	srv := adminServer(t, &AdminAPI{app: exampleApp(t)})
	var n int
	for line := range strings.Lines(block) {
		args := curlArgs(strings.TrimSpace(line))
		if len(args) == 0 || args[0] != "curl" {
			t.Fatalf("README.md admin example %q: not a curl command", line)
		}
		method, body, target, output := http.MethodGet, "", "", false
		header := http.Header{}
		for i := 1; i < len(args); i++ {
			switch args[i] {
			case "-X":
				i++
				method = args[i]
			case "-d":
				i++
				body = args[i]
				if method == http.MethodGet {
					method = http.MethodPost
				}
			case "-H":
				i++
				k, v, _ := strings.Cut(args[i], ":")
				header.Set(k, strings.TrimSpace(v))
			case "-o":
				i++
				output = true
			default:
				target = args[i]
			}
		}
		path, ok := strings.CutPrefix(target, "localhost:2019")
		if !ok {
			t.Fatalf("README.md admin example %q: want a URL at localhost:2019", line)
		}
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		// As curl: -d without a type sends a form type.
		if body != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		maps.Copy(req.Header, header)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		n++
		if resp.StatusCode >= 300 {
			t.Errorf("README.md example %s: %d %s", strings.TrimSpace(line), resp.StatusCode, got)
			continue
		}
		if output {
			if len(got) == 0 || resp.Header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("README.md example %s: %d bytes of %s", strings.TrimSpace(line), len(got), resp.Header.Get("Content-Type"))
			}
			continue
		}
		if shape, ok := shapes[method+" "+path]; ok {
			var want, have map[string]any
			if err := json.Unmarshal([]byte(shape), &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &have); err != nil {
				t.Fatalf("%s %s answer %s: %v", method, path, got, err)
			}
			if !slices.Equal(slices.Sorted(maps.Keys(have)), slices.Sorted(maps.Keys(want))) {
				t.Errorf("%s %s answers %s, README documents %s", method, path, got, shape)
			}
			for k, v := range want {
				if v != "..." && !jsonEqual(v, have[k]) {
					t.Errorf("%s %s answers %s = %v, README documents %v", method, path, k, have[k], v)
				}
			}
		}
	}
	if n < 8 {
		t.Errorf("README.md: %d admin examples ran, want the whole block", n)
	}
}

// upgradeQuery is the form of the README's Upgrading queries: the list
// at a path, the entries added through the admin API missing one of the
// named lists, and the member naming each.
var upgradeQuery = regexp.MustCompile(`^curl -s localhost:2019(/mcp-auth/\w+) \| jq -r '\.\[\] \| select\(\.source == "admin" and \(((?:\.\w+ == null(?: or )?)+)\)\) \| \.(\w+)'$`)

// TestREADMEUpgradingQueries runs the README's Upgrading queries, which
// find the clients and agents an earlier release may have stored with a
// restriction list sent as [] (stored as no list: TestStoredFormat), as jq
// would on the admin API's answers: they must list the admin entries
// without a list, and no entry with its lists or from the configuration.
func TestREADMEUpgradingQueries(t *testing.T) {
	src, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(src), "\n## Upgrading\n")
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "\n```sh\n")
	if !ok {
		t.Fatal("README.md: no sh block in the Upgrading section")
	}
	block, _, _ = strings.Cut(block, "\n```\n")

	srv := adminServer(t, &AdminAPI{app: exampleApp(t)})
	const resource = "http://localhost:8080/mcp"
	for _, add := range []struct{ path, body string }{
		{"/mcp-auth/clients", `{"client_id":"open","grant_types":["client_credentials"]}`},
		{"/mcp-auth/clients", `{"client_id":"scoped","grant_types":["client_credentials"],"scopes":["notes:read"]}`},
		{"/mcp-auth/clients", `{"client_id":"bound","grant_types":["client_credentials"],"resources":["` + resource + `"]}`},
		{"/mcp-auth/clients", `{"client_id":"held","grant_types":["client_credentials"],"scopes":["notes:read"],"resources":["` + resource + `"]}`},
		{"/mcp-auth/agents", `{"agent_id":"any-agent"}`},
		{"/mcp-auth/agents", `{"agent_id":"half-agent","scopes":["notes:read"]}`},
		{"/mcp-auth/agents", `{"agent_id":"held-agent","allowed_clients":["held"],"scopes":["notes:read"]}`},
	} {
		resp, err := srv.Client().Post(srv.URL+add.path, "application/json", strings.NewReader(add.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s %s = %d", add.path, add.body, resp.StatusCode)
		}
	}
	want := map[string][]string{
		"/mcp-auth/clients": {"bound", "open", "scoped"},
		"/mcp-auth/agents":  {"any-agent", "half-agent"},
	}
	got := map[string][]string{}
	for line := range strings.Lines(block) {
		m := upgradeQuery.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			t.Fatalf("README.md Upgrading query %q: not of the form this test runs", line)
		}
		path, lists, id := m[1], strings.Split(m[2], " or "), m[3]
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var entries []map[string]any
		err = json.NewDecoder(resp.Body).Decode(&entries)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		for _, e := range entries {
			// jq: a member missing is null.
			if e["source"] != "admin" || !slices.ContainsFunc(lists, func(l string) bool {
				return e[strings.TrimSuffix(strings.TrimPrefix(l, "."), " == null")] == nil
			}) {
				continue
			}
			name, _ := e[id].(string)
			got[path] = append(got[path], name)
		}
		slices.Sort(got[path])
	}
	for path, w := range want {
		if !slices.Equal(got[path], w) {
			t.Errorf("README.md Upgrading query of %s lists %q, want %q", path, got[path], w)
		}
	}
}

// exampleApp is the mcp_auth app of Caddyfile.example, started on a bbolt
// file of the test's own.
func exampleApp(t *testing.T) *App {
	t.Helper()
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("Adapt(Caddyfile.example): %v", err)
	}
	var doc struct {
		Apps struct {
			MCPAuth json.RawMessage `json:"mcp_auth"`
		} `json:"apps"`
	}
	a := &App{}
	if err := json.Unmarshal(cfg, &doc); err != nil || json.Unmarshal(doc.Apps.MCPAuth, a) != nil {
		t.Fatalf("Caddyfile.example: no mcp_auth app in %s", cfg)
	}
	a.StorageRaw = caddyconfig.JSONModuleObject(BoltStorage{Path: filepath.Join(t.TempDir(), "mcp-auth.db")}, "module", "bolt", nil)
	// The example's gateway registers its resource, with the scopes its
	// rules name, when Caddy runs it.
	a.Resources = append(a.Resources, issuer.Resource{URL: "http://localhost:8080/mcp", Scopes: []string{"notes:read", "notes:write", "notes:admin"}})
	return startBoltApp(t, a)
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestREADMEModules: the modules the README lists are those this plugin
// registers with Caddy, no more and no fewer.
func TestREADMEModules(t *testing.T) {
	src, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, para, ok := strings.Cut(string(src), "shows the\nmodules: ")
	if !ok {
		t.Fatal("README.md: no module list (\"shows the modules: \")")
	}
	para, _, _ = strings.Cut(para, "\n\n")
	var documented []string
	for i, part := range strings.Split(para, "`") {
		if i%2 == 1 {
			documented = append(documented, part)
		}
	}
	var registered []string
	for _, name := range caddy.Modules() {
		info, err := caddy.GetModule(name)
		if err != nil {
			t.Fatal(err)
		}
		typ := reflect.TypeOf(info.New())
		if typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if strings.HasPrefix(typ.PkgPath(), "github.com/caddy-mcp-auth/caddy-mcp-auth/") {
			registered = append(registered, name)
		}
	}
	slices.Sort(documented)
	if !slices.Equal(documented, registered) {
		t.Errorf("README.md lists the modules %q, the plugin registers %q", documented, registered)
	}
}

// TestCLISynopses: the command list of the README's CLI section and of
// `caddy mcp-auth --help` name every subcommand, and only those.
func TestCLISynopses(t *testing.T) {
	root := &cobra.Command{Use: "mcp-auth"}
	newCLI(root, &cli{})
	var leaves []string
	var walk func(c *cobra.Command, path string)
	walk = func(c *cobra.Command, path string) {
		if !c.HasSubCommands() {
			leaves = append(leaves, path)
		}
		for _, sub := range c.Commands() {
			walk(sub, strings.TrimSpace(path+" "+sub.Name()))
		}
	}
	walk(root, "")
	slices.Sort(leaves)

	src, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(src), "\n## CLI\n")
	section, _, _ = strings.Cut(section, "\n## ")
	if got := synopsisCommands(section, "    caddy mcp-auth "); !slices.Equal(got, leaves) {
		t.Errorf("README.md's CLI section lists %q, the commands are %q", got, leaves)
	}
	help := caddycmd.Commands()["mcp-auth"].Long
	if got := synopsisCommands(help, "  "); !slices.Equal(got, leaves) {
		t.Errorf("`caddy mcp-auth --help` lists %q, the commands are %q", got, leaves)
	}
}

// synopsisCommands reads the commands of a synopsis whose lines start
// with prefix and a command ("user list | show <name>"; a line of
// alternatives may go on, starting with "|").
func synopsisCommands(text, prefix string) []string {
	var cmds []string
	group := ""
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, prefix)
		trimmed := strings.TrimSpace(line)
		switch {
		case ok && rest != "" && rest[0] >= 'a' && rest[0] <= 'z':
			alts := strings.Split(rest, "|")
			words := strings.Fields(alts[0])
			var path []string
			for _, w := range words {
				if strings.ContainsAny(w[:1], "<[-") {
					break
				}
				path = append(path, w)
			}
			cmds = append(cmds, strings.Join(path, " "))
			group = path[0]
			for _, a := range alts[1:] {
				cmds = append(cmds, group+" "+strings.Fields(a)[0])
			}
		case strings.HasPrefix(trimmed, "|") && group != "":
			for _, a := range strings.Split(trimmed, "|")[1:] {
				cmds = append(cmds, group+" "+strings.Fields(a)[0])
			}
		default:
			if !strings.HasPrefix(trimmed, "[") {
				group = ""
			}
		}
	}
	slices.Sort(cmds)
	return slices.Compact(cmds)
}

// TestREADMESynopsesNameEverySubdirective: every word the Caddyfile
// parser takes (a case of caddyfile.go: subdirectives and their keyword
// values) is in one of the README's syntax blocks, so no option is
// parsed that the synopses do not show.
func TestREADMESynopsesNameEverySubdirective(t *testing.T) {
	f, err := parser.ParseFile(gotoken.NewFileSet(), "caddyfile.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var words []string
	ast.Inspect(f, func(n ast.Node) bool {
		if c, ok := n.(*ast.CaseClause); ok {
			for _, e := range c.List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == gotoken.STRING {
					w, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					words = append(words, w)
				}
			}
		}
		return true
	})
	if len(words) < 50 {
		t.Fatalf("%d case words in caddyfile.go, want the parser's subdirectives (the extraction broke?)", len(words))
	}
	src, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var synopses []string
	for _, block := range strings.Split(string(src), "```caddyfile syntax\n")[1:] {
		text, _, _ := strings.Cut(block, "\n```")
		synopses = append(synopses, text)
	}
	all := strings.Join(synopses, "\n")
	// The plural spellings the JSON members have, accepted beside the
	// documented singular.
	aliases := map[string]bool{"redirect_uris": true, "post_logout_redirect_uris": true}
	for _, w := range words {
		if !aliases[w] && !regexp.MustCompile(`(^|[\s|{])`+regexp.QuoteMeta(w)+`($|[\s|}])`).MatchString(all) {
			t.Errorf("the Caddyfile parser takes %q, which no syntax block of README.md shows", w)
		}
	}
}
