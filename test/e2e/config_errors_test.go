package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// Mistakes only the whole loaded config shows are refused when it loads,
// with a message that names the mistake and the fix; the config that
// fixes it loads.
func TestConfigErrorsAtLoad(t *testing.T) {
	hash := harness.HashPassword(t, "pw")
	dir := t.TempDir()
	port := harness.FreePort(t)
	local := fmt.Sprintf("localhost:%d", port)
	render := func(issuer, site, group, handlers string) string {
		return fmt.Sprintf(`{
	admin off
	skip_install_trust
	mcp_auth {
		issuer %s
		storage bolt %s
		user alice %s {
			groups staff
		}
		group staff {
			scopes %s read
		}
	}
}

%s {
	%s
	mcp_gateway {
		resource http://%s/mcp
		scope read
	}
	respond "upstream"
}
`, issuer, filepath.Join(dir, "mcp-auth.db"), hash, group, site, handlers, local)
	}
	good := render("http://"+local, "http://"+local, "http://"+local+"/mcp", "mcp_issuer")
	// withClient is good with a client whose resources names res.
	withClient := func(res string) string {
		return strings.Replace(good, "\t\tgroup staff {", "\t\tclient app {\n\t\t\tpublic\n\t\t\tredirect_uri http://127.0.0.1:9/cb\n\t\t\tresources "+res+"\n\t\t}\n\t\tgroup staff {", 1)
	}
	// withScopes is good with a client or agent (head: its first lines)
	// allowed scopes.
	agentSecret := "sha256:" + strings.Repeat("ab", 32)
	withScopes := func(head, scopes string) string {
		return strings.Replace(good, "\t\tgroup staff {", "\t\t"+head+"\n\t\t\tscopes "+scopes+"\n\t\t}\n\t\tgroup staff {", 1)
	}
	tests := []struct {
		name      string
		caddyfile string
		want      string
	}{
		{"group resource with trailing slash", render("http://"+local, "http://"+local, "http://"+local+"/mcp/", "mcp_issuer"),
			fmt.Sprintf(`group "staff" has scopes for http://%[1]s/mcp/, which no mcp_gateway or resource declares; did you mean http://%[1]s/mcp?`, local)},
		{"group resource with https", render("http://"+local, "http://"+local, "https://"+local+"/mcp", "mcp_issuer"),
			fmt.Sprintf(`group "staff" has scopes for https://%[1]s/mcp, which no mcp_gateway or resource declares; did you mean http://%[1]s/mcp?`, local)},
		// The issuer keeps an escaped "/" apart from a separator: a group
		// for /a/b/mcp grants nothing at /a%2Fb/mcp.
		{"group resource with a separator for an escaped slash", strings.Replace(render("http://"+local, "http://"+local, "http://"+local+"/a/b/mcp", "mcp_issuer"), "resource http://"+local+"/mcp", "resource http://"+local+"/a%2Fb/mcp", 1),
			fmt.Sprintf(`group "staff" has scopes for http://%[1]s/a/b/mcp, which no mcp_gateway or resource declares; did you mean http://%[1]s/a%%2Fb/mcp?`, local)},
		// A client's resources entry the issuer serves no token for
		// would allow nothing.
		{"client resource with https", withClient("https://" + local + "/mcp"),
			fmt.Sprintf(`client "app": resources names https://%[1]s/mcp, which no mcp_gateway or resource declares; did you mean http://%[1]s/mcp?`, local)},
		{"client resource elsewhere", withClient("https://other.example/mcp"),
			fmt.Sprintf("client \"app\": resources names https://other.example/mcp, which no mcp_gateway or resource declares (declared: http://%s/mcp): add `resource https://other.example/mcp` to mcp_auth if another Caddy serves it", local)},
		// A configured client's or agent's scope no resource offers
		// allowed nothing (the admin API refuses one already).
		{"client scope no resource offers", withScopes("client app {\n\t\t\tpublic\n\t\t\tredirect_uri http://127.0.0.1:9/cb", "raed"),
			`client "app": scope "raed" is offered by no resource (offered: read)`},
		{"client scope star", withScopes("client app {\n\t\t\tpublic\n\t\t\tredirect_uri http://127.0.0.1:9/cb", "read *"),
			`client "app": scope "*" is offered by no resource (offered: read)`},
		{"agent scope no resource offers", withScopes("agent bot {\n\t\t\tsecret "+agentSecret, "openid raed"),
			`agent "bot": scope "raed" is offered by no resource (offered: read)`},
		// A group's scope the resource does not offer granted nothing:
		// its members were refused at sign-in.
		{"group scope the resource does not offer", strings.Replace(good, "/mcp read\n", "/mcp read raed\n", 1),
			fmt.Sprintf(`group "staff": scope "raed" for http://%s/mcp: the resource does not offer it (offered: read)`, local)},
		{"group scope for star no resource offers", render("http://"+local, "http://"+local, "* raed", "mcp_issuer"),
			`group "staff": scopes for *: scope "raed" is offered by no resource (offered: read)`},
		{"group resource elsewhere", render("http://"+local, "http://"+local, "https://other.example/mcp", "mcp_issuer"),
			fmt.Sprintf("(declared: http://%s/mcp): add `resource https://other.example/mcp` to mcp_auth if another Caddy serves it", local)},
		{"issuer site without mcp_issuer", render("http://"+local, "http://"+local, "*", ""),
			fmt.Sprintf("the site for %[1]s (server srv0) serves the issuer URL http://%[1]s but has no mcp_issuer: add `mcp_issuer` to that site block", local)},
		{"https issuer on an http site", render("https://"+local, "http://"+local, "*", "mcp_issuer"),
			fmt.Sprintf("the issuer https://%[1]s is https, but the site for %[1]s (server srv0) is served over plain http", local)},
		{"http issuer on an https site", render("http://"+local, local, "*", "mcp_issuer"),
			fmt.Sprintf("the issuer http://%[1]s is http, but the site for %[1]s (server srv0) is served over https", local)},
		// Caddy names the app ("provision mcp_auth: ", "mcp_auth app
		// module: start: "): the message does not name it again.
		{"password hash resolving to nothing", strings.Replace(good, hash, "{env.MCP_TEST_UNSET_AT_LOAD}", 1),
			`provision mcp_auth: user "alice": password hash: {env.MCP_TEST_UNSET_AT_LOAD} resolves to nothing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := harness.Load(t, tt.caddyfile)
			if err == nil {
				_ = caddy.Stop()
				t.Fatalf("Load() = nil, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load() error = %v\nwant it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), ": mcp_auth: ") {
				t.Errorf("Load() error = %v, which names mcp_auth twice", err)
			}
		})
	}
	// After all those refusals, the corrected config loads on the same
	// store: none of them left it locked or half open. Its client's entry
	// has a trailing slash, which the issuer reads as the declared
	// resource (issuer.CanonicalResource), so it allows that resource's
	// tokens and loads.
	// Its client and agent are allowed a scope the gateway offers, and
	// OpenID Connect's.
	fixed := strings.Replace(withClient("http://"+local+"/mcp/"), "\t\t\tresources ", "\t\t\tscopes read openid\n\t\t\tresources ", 1)
	fixed = strings.Replace(fixed, "\t\tgroup staff {", "\t\tagent bot {\n\t\t\tsecret "+agentSecret+"\n\t\t\tscopes read offline_access\n\t\t}\n\t\tgroup staff {", 1)
	// Its group lists "*" and OpenID Connect's scopes beside the
	// resource's, and every resource's scopes ("*") too.
	fixed = strings.Replace(fixed, "/mcp read\n", "/mcp read * openid\n\t\t\tscopes * read\n", 1)
	harness.Start(t, fixed)
}

// A placeholder that resolves to nothing is named, not its value, already
// when the config is checked (caddy validate).
func TestConfigPlaceholdersAtValidate(t *testing.T) {
	argon := "$argon2id$v=19$m=47104,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	t.Setenv("MCP_TEST_EMPTY_HASH", "")
	t.Setenv("MCP_TEST_ARGON_HASH", argon)
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	tests := []struct {
		name, hash, want string
	}{
		{"unset env", "{env.MCP_TEST_UNSET_HASH}", `user "alice": password hash: {env.MCP_TEST_UNSET_HASH} resolves to nothing`},
		{"empty env", "{env.MCP_TEST_EMPTY_HASH}", `user "alice": password hash: {env.MCP_TEST_EMPTY_HASH} resolves to nothing`},
		{"missing file", "{file./nonexistent/alice.hash}", `user "alice": password hash: {file./nonexistent/alice.hash} resolves to nothing`},
		{"argon2 from env", "{env.MCP_TEST_ARGON_HASH}", "an argon2 hash; only bcrypt is accepted: make one with `caddy hash-password`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := harness.Adapt(fmt.Sprintf(`{
	admin off
	mcp_auth {
		issuer http://localhost:9
		user alice %s
	}
}
`, tt.hash))
			if err != nil {
				t.Fatal(err)
			}
			var c caddy.Config
			if err := json.Unmarshal(cfg, &c); err != nil {
				t.Fatal(err)
			}
			err = caddy.Validate(&c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), argon) {
				t.Errorf("Validate() error %q shows the hash", err)
			}
		})
	}
}

// TestOpenRulesWarnAtLoad: a gateway of the local issuer with no base
// scope and a rule that needs none loads with a warning naming the rule:
// every user of the issuer, whatever their groups, gets a token for the
// resource. A gateway with a base scope loads without one.
func TestOpenRulesWarnAtLoad(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	cfg, _, err := harness.Adapt(fmt.Sprintf(`{
	admin off
	log default {
		output file %s
		format json
	}
	mcp_auth {
		issuer http://localhost:9
		storage memory
	}
}

http://localhost:9 {
	mcp_issuer
	mcp_gateway /open {
		resource http://localhost:9/open
		tool delete_* admin
		tool *
	}
	mcp_gateway /scoped {
		resource http://localhost:9/scoped
		scope read
		tool *
	}
	respond "upstream"
}
`, logFile))
	if err != nil {
		t.Fatal(err)
	}
	var c caddy.Config
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("Validate() = %v, want the open gateway loaded", err)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	if want := "mcp_gateway http://localhost:9/open: no base scope, and tool * need no scope either: every user of the issuer"; !strings.Contains(log, want) {
		t.Errorf("log = %s\nwant a warning containing %q", log, want)
	}
	if strings.Contains(log, "mcp_gateway http://localhost:9/scoped: no base scope") {
		t.Errorf("log = %s\nwant no warning for the gateway with a base scope", log)
	}
}

// TestResourceDeclaredByGateway: a `resource` in mcp_auth for the URL an
// mcp_gateway of the config registers does not load. The gateway's
// registration replaced it: the scopes written there were ignored
// unseen, so `resource ... { scopes read }` written to keep the issuer
// from granting admin for the resource granted it to a group with every
// scope of the resource (`scopes * *`) all the same.
func TestResourceDeclaredByGateway(t *testing.T) {
	dir := t.TempDir()
	port := harness.FreePort(t)
	local := fmt.Sprintf("localhost:%d", port)
	render := func(resource string) string {
		return fmt.Sprintf(`{
	admin off
	skip_install_trust
	mcp_auth {
		issuer http://%[1]s
		storage bolt %[2]s
		group staff {
			scopes * *
		}
		%[3]s
	}
}

http://%[1]s {
	mcp_issuer
	mcp_gateway {
		resource http://%[1]s/mcp
		scope read
		tool delete_* admin
		tool * read
	}
	respond "upstream"
}
`, local, filepath.Join(dir, "mcp-auth.db"), resource)
	}
	for _, spelling := range []string{"http://" + local + "/mcp", "HTTP://LOCALHOST:" + fmt.Sprint(port) + "/mcp/"} {
		t.Run(spelling, func(t *testing.T) {
			err := harness.Load(t, render("resource "+spelling+" {\n\t\t\tscopes read\n\t\t}"))
			if err == nil {
				_ = caddy.Stop()
				t.Fatal("Load() = nil, want the resource the gateway registers refused")
			}
			want := fmt.Sprintf("resource %s is the resource of an mcp_gateway of this config (http://%s/mcp)", spelling, local)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Load() error = %v\nwant it to contain %q", err, want)
			}
		})
	}
	// Another resource beside the gateway's loads.
	if err := harness.Load(t, render("resource https://other.example/mcp {\n\t\t\tscopes read\n\t\t}")); err != nil {
		t.Fatalf("Load() = %v, want a resource of another server loaded", err)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestGatewayResourceTwice: two mcp_gateway handlers for one resource URL
// load only when they are the same gateway (one snippet in two sites): a
// token names the resource, not the site, so both take it, and different
// rules would make what a call may do depend on the site it reached.
func TestGatewayResourceTwice(t *testing.T) {
	dir := t.TempDir()
	port := harness.FreePort(t)
	local := fmt.Sprintf("localhost:%d", port)
	render := func(second, resource string) string {
		return fmt.Sprintf(`{
	admin off
	skip_install_trust
	mcp_auth {
		issuer http://%[1]s
		storage bolt %[2]s
	}
}

(gw) {
	mcp_gateway {
		resource http://%[1]s/mcp
		scope read
		tool delete_* admin
		tool * read
	}
}

http://%[1]s {
	mcp_issuer
	import gw
	respond "upstream"
}

http://127.0.0.1:%[3]d {
	%[4]s
	respond "upstream"
}
`, local, filepath.Join(dir, "mcp-auth.db"), port, strings.ReplaceAll(second, "RESOURCE", resource))
	}
	other := `mcp_gateway {
		resource RESOURCE
		scope read
		tool * read
	}`
	for _, tt := range []struct {
		name, second, resource string
	}{
		{"fewer rules", other, "http://" + local + "/mcp"},
		{"another spelling", other, "HTTP://LOCALHOST:" + fmt.Sprint(port) + "/mcp/"},
		{"another in-flight bound", `mcp_gateway {
		resource RESOURCE
		scope read
		tool delete_* admin
		tool * read
		max_in_flight 100
		max_in_flight_per_client 76
	}`, "http://" + local + "/mcp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := harness.Load(t, render(tt.second, tt.resource))
			if err == nil {
				_ = caddy.Stop()
				t.Fatal("Load() = nil, want the second gateway for the resource refused")
			}
			want := fmt.Sprintf("mcp_gateway %s is configured twice, differently (as http://%s/mcp before)", tt.resource, local)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Load() error = %v\nwant it to contain %q", err, want)
			}
		})
	}
	// The same gateway in both sites is one policy: it loads, also when
	// one writes out what the other leaves to its defaults.
	for _, tt := range []struct{ name, second string }{
		{"one snippet", "import gw"},
		{"defaults written", `mcp_gateway {
		resource http://` + local + `/mcp
		issuer http://` + local + `
		scope read
		tool delete_* admin
		tool * read
		max_body_size 1MiB
		max_in_flight 100
		max_in_flight_per_client 75
		audit all
		pin_tools first_use
	}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := harness.Load(t, render(tt.second, "")); err != nil {
				t.Fatalf("Load() = %v, want the same gateway in both sites loaded", err)
			}
			if err := caddy.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGatewayResourceTwiceWithoutApp: a configuration without the
// mcp_auth app (gateways in front of another authorization server) is
// held to the same rule as TestGatewayResourceTwice: two gateways for one
// resource take the same tokens, so they must be configured alike.
// Without the app nothing compared them, and the site a caller chose
// (here by naming another host on the same port) decided which rules its
// token met.
func TestGatewayResourceTwiceWithoutApp(t *testing.T) {
	port := harness.FreePort(t)
	local := fmt.Sprintf("localhost:%d", port)
	render := func(second string) string {
		return fmt.Sprintf(`{
	admin off
	skip_install_trust
}

(gw) {
	mcp_gateway {
		resource http://%[1]s/mcp
		issuer https://idp.example.com
		scope read
		tool delete_* admin
		tool * read
	}
}

http://%[1]s {
	import gw
	respond "upstream"
}

http://127.0.0.1:%[2]d {
	%[3]s
	respond "upstream"
}
`, local, port, second)
	}
	for _, tt := range []struct{ name, second string }{
		{"fewer rules", `mcp_gateway {
		resource http://` + local + `/mcp
		issuer https://idp.example.com
		scope read
		tool * read
	}`},
		{"another issuer", `mcp_gateway {
		resource http://` + local + `/mcp
		issuer https://idp2.example.com
		scope read
		tool delete_* admin
		tool * read
	}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := harness.Load(t, render(tt.second))
			if err == nil {
				_ = caddy.Stop()
				t.Fatal("Load() = nil, want the second gateway for the resource refused")
			}
			want := fmt.Sprintf("mcp_gateway http://%[1]s/mcp is configured twice, differently (as http://%[1]s/mcp before)", local)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Load() error = %v\nwant it to contain %q", err, want)
			}
		})
	}
	// One snippet in both sites is one policy; a configuration that
	// failed to load, and one replaced, leave nothing behind that the
	// next load would compare with.
	for range 2 {
		if err := harness.Load(t, render("import gw")); err != nil {
			t.Fatalf("Load() = %v, want the same gateway in both sites loaded", err)
		}
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSharedAudienceWarnsWithoutApp: gateways for different resources
// that take tokens of one remote issuer by the same audience take each
// other's tokens; Caddy warns, naming both, also in a configuration
// without the mcp_auth app, the usual one in front of another
// authorization server, once for the issuer and audience however many
// gateways share them; another audience gets no warning.
func TestSharedAudienceWarnsWithoutApp(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	gw := func(path, aud string) string {
		return fmt.Sprintf(`mcp_gateway /%[1]s {
		resource http://localhost:9/%[1]s
		issuer https://idp.example.com {
			audience %[2]s
		}
		scope read
		tool * read
	}
	`, path, aud)
	}
	cfg, _, err := harness.Adapt(fmt.Sprintf(`{
	admin off
	log default {
		output file %s
		format json
	}
}

http://localhost:9 {
	%s%s%s%s
	respond "upstream"
}
`, logFile, gw("one", "api://shared"), gw("two", "api://shared"), gw("three", "api://shared"), gw("four", "api://four")))
	if err != nil {
		t.Fatal(err)
	}
	var c caddy.Config
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("Validate() = %v, want the gateways loaded", err)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	// The Caddyfile orders the gateways by their path matchers: the
	// warning names the first two provisioned.
	var warned [][]string
	for line := range strings.Lines(string(b)) {
		var e struct {
			Msg       string   `json:"msg"`
			Resources []string `json:"resources"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && strings.HasPrefix(e.Msg, "mcp_gateways for different resources take tokens of one issuer by the same audience") {
			warned = append(warned, e.Resources)
		}
	}
	shared := []string{"http://localhost:9/one", "http://localhost:9/two", "http://localhost:9/three"}
	if len(warned) != 1 || len(warned[0]) != 2 || warned[0][0] == warned[0][1] ||
		!slices.Contains(shared, warned[0][0]) || !slices.Contains(shared, warned[0][1]) {
		t.Errorf("warned for %q, want one warning naming two of %q\nlog = %s", warned, shared, b)
	}
}

// TestSharedAudienceOfResourceWarns: a gateway whose audience is another
// gateway's resource, with the same remote issuer, takes that gateway's
// tokens (their aud is its resource), and that one takes its tokens:
// Caddy warns, naming both, in a configuration without the mcp_auth app
// as with it.
func TestSharedAudienceOfResourceWarns(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	cfg, _, err := harness.Adapt(fmt.Sprintf(`{
	admin off
	log default {
		output file %s
		format json
	}
}

http://localhost:9 {
	mcp_gateway /notes {
		resource http://localhost:9/notes
		issuer https://idp.example.com
		scope read
		tool * read
	}
	mcp_gateway /admin {
		resource http://localhost:9/admin
		issuer https://idp.example.com {
			audience http://localhost:9/notes
		}
		scope read
		tool * read
	}
	respond "upstream"
}
`, logFile))
	if err != nil {
		t.Fatal(err)
	}
	var c caddy.Config
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("Validate() = %v, want the gateways loaded", err)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var warned [][]string
	for line := range strings.Lines(string(b)) {
		var e struct {
			Msg       string   `json:"msg"`
			Resources []string `json:"resources"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && strings.HasPrefix(e.Msg, "mcp_gateways for different resources take tokens of one issuer by the same audience") {
			slices.Sort(e.Resources)
			warned = append(warned, e.Resources)
		}
	}
	if want := []string{"http://localhost:9/admin", "http://localhost:9/notes"}; len(warned) != 1 || !slices.Equal(warned[0], want) {
		t.Errorf("warned for %q, want one warning naming %q\nlog = %s", warned, want, b)
	}
}

// TestIssuerOffSiteWarns: mcp_issuer in a site that does not serve the
// issuer URL (another host on its port, or another port) answers there
// with metadata naming the issuer URL and sign-in pages whose sign-in is
// refused: Caddy loads the config and warns, naming the server, the
// site's hosts and the issuer. The issuer's own site gets no warning,
// nor does a Caddy behind a proxy, listening on another port than the
// issuer URL's, which serves the issuer in a site of that port.
func TestIssuerOffSiteWarns(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	port, other := harness.FreePort(t), harness.FreePort(t)
	issuer := fmt.Sprintf("http://localhost:%d", port)
	// load runs the sites under the issuer, logging to a file of their
	// own, and returns the hosts of the sites warned about.
	load := func(t *testing.T, sites string) []string {
		t.Helper()
		logFile := filepath.Join(t.TempDir(), "caddy.log")
		if err := harness.Load(t, fmt.Sprintf(`{
	admin off
	log default {
		output file %s
		format json
	}
	mcp_auth {
		issuer %s
		storage memory
	}
}
%s`, logFile, issuer, sites)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for line := range strings.SplitSeq(string(b), "\n") {
			var entry struct {
				Msg    string   `json:"msg"`
				Hosts  []string `json:"hosts"`
				Issuer string   `json:"issuer"`
			}
			if json.Unmarshal([]byte(line), &entry) != nil || !strings.HasPrefix(entry.Msg, "mcp_issuer is in a site that does not serve the issuer URL") {
				continue
			}
			if entry.Issuer != issuer {
				t.Errorf("warning names issuer %q, want %q", entry.Issuer, issuer)
			}
			got = append(got, strings.Join(entry.Hosts, ","))
		}
		slices.Sort(got)
		return got
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	got := load(t, fmt.Sprintf(`
%[1]s {
	mcp_issuer
}

http://127.0.0.1:%[2]d {
	mcp_issuer
	respond "another host"
}

http://localhost:%[3]d {
	mcp_issuer
	respond "another port"
}
`, issuer, port, other))
	if want := []string{"127.0.0.1", "localhost"}; !slices.Equal(got, want) {
		t.Errorf("warned for the sites of hosts %q, want %q", got, want)
	}
	if got := load(t, fmt.Sprintf("\nhttp://localhost:%d {\n\tmcp_issuer\n}\n", other)); len(got) > 0 {
		t.Errorf("behind a proxy, on another port: warned for the sites of hosts %q, want none", got)
	}
}

// TestPlainHTTPBeyondLoopbackWarns: an http issuer (and gateway resource)
// is allowed for loopback hosts only, but a site for http://localhost:PORT
// without bind listens on every interface, where anyone who reaches the
// port names localhost in Host: Caddy loads it and warns, naming the
// server, its listener and the URLs. Bound to loopback, as
// Caddyfile.example is, it does not.
func TestPlainHTTPBeyondLoopbackWarns(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	port := harness.FreePort(t)
	issuer := fmt.Sprintf("http://localhost:%d", port)
	load := func(t *testing.T, bind string) [][]string {
		t.Helper()
		logFile := filepath.Join(t.TempDir(), "caddy.log")
		if err := harness.Load(t, fmt.Sprintf(`{
	admin off
	log default {
		output file %[1]s
		format json
	}
	mcp_auth {
		issuer %[2]s
		storage memory
	}
}

%[2]s {
	%[3]s
	mcp_issuer
	mcp_gateway {
		resource %[2]s/mcp
		scope notes:read
		tool * notes:read
	}
	respond "upstream"
}
`, logFile, issuer, bind)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		var got [][]string
		for line := range strings.SplitSeq(string(b), "\n") {
			var entry struct {
				Msg    string   `json:"msg"`
				Listen []string `json:"listen"`
				URLs   []string `json:"urls"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && strings.HasPrefix(entry.Msg, "plain http is allowed for loopback URLs only") {
				got = append(got, append(entry.Listen, entry.URLs...))
			}
		}
		return got
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	want := [][]string{{fmt.Sprintf(":%d", port), issuer, issuer + "/mcp"}}
	if got := load(t, ""); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("without bind: warned %q, want %q", got, want)
	}
	if got := load(t, "bind 127.0.0.1"); len(got) > 0 {
		t.Errorf("bound to loopback: warned %q, want none", got)
	}
}
