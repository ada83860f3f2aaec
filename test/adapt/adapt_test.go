// Package adapt checks that every Caddyfile form of the mcp_auth global
// option and the mcp_issuer and mcp_gateway directives adapts to the
// expected JSON (golden files in testdata/), and that malformed input is
// refused with an error naming the problem.
//
// Update the golden files after an intended change with
//
//	go test ./test/adapt -update
package adapt

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/google/go-cmp/cmp"

	_ "github.com/caddy-mcp-auth/caddy-mcp-auth/caddymodule"
)

var update = flag.Bool("update", false, "rewrite the golden JSON files")

func adapt(t *testing.T, caddyfile []byte) ([]byte, error) {
	t.Helper()
	a := caddyconfig.GetAdapter("caddyfile")
	if a == nil {
		t.Fatal(`GetAdapter("caddyfile") = nil`)
	}
	out, warnings, err := a.Adapt(caddyfile, map[string]any{"filename": "Caddyfile"})
	for _, w := range warnings {
		t.Errorf("Adapt() warning: %s", w.String())
	}
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		t.Fatalf("indent adapted JSON: %v", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func TestAdaptGolden(t *testing.T) {
	// {$NAME} is expanded at adapt time; {env.NAME} is kept for load time.
	t.Setenv("MCP_DEMO_ISSUER", "https://auth.example.com")

	inputs, err := filepath.Glob("testdata/*.caddyfile")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("Glob(testdata/*.caddyfile) = %v, %v", inputs, err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := adapt(t, src)
			if err != nil {
				t.Fatalf("Adapt(%s) error: %v", in, err)
			}
			golden := strings.TrimSuffix(in, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("Adapt(%s) mismatch (-want +got):\n%s", in, diff)
			}
		})
	}
}

func TestAdaptErrors(t *testing.T) {
	global := func(body string) string {
		return "{\n\tmcp_auth {\n\t\tissuer https://auth.example.com\n" + body + "\n\t}\n}\nexample.com {\n\tmcp_issuer\n}\n"
	}
	site := func(body string) string {
		return "{\n\tmcp_auth {\n\t\tissuer https://auth.example.com\n\t}\n}\nexample.com {\n" + body + "\n}\n"
	}
	gw := func(body string) string {
		return site("\tmcp_gateway {\n\t\tresource https://example.com/mcp\n" + body + "\n\t}\n\treverse_proxy localhost:3001")
	}
	tests := []struct {
		name      string
		caddyfile string
		want      string // substring of the error
	}{
		{"global unknown subdirective", global("colour blue"), `unrecognized subdirective "colour"`},
		{"trusted_idp without jwks_uri", global("trusted_idp https://idp.example.com"), "jwks_uri is required"},
		{"trusted_idp unknown subdirective", global("trusted_idp https://idp.example.com {\n\t\t\tjwks https://x\n\t\t}"), `unrecognized trusted_idp subdirective "jwks"`},
		{"trusted_idp no issuer", global("trusted_idp"), "missing argument"},
		{"client id_token_alg without an algorithm", global("client app {\n\t\t\tid_token_alg\n\t\t}"), "id_token_alg: missing argument"},
		{"client auth_signing_alg without an algorithm", global("client app {\n\t\t\tauth_signing_alg\n\t\t}"), "auth_signing_alg: missing argument"},
		{"client auth_signing_alg twice", global("client app {\n\t\t\tauth_signing_alg ES256 RS256\n\t\t}"), "auth_signing_alg: too many arguments"},
		{"client id_token_alg twice", global("client app {\n\t\t\tid_token_alg ES256 RS256\n\t\t}"), "id_token_alg: too many arguments"},
		{"client post_logout_redirect_uri without a URI", global("client app {\n\t\t\tpost_logout_redirect_uri\n\t\t}"), "post_logout_redirect_uri: missing argument"},
		{"global option argument", "{\n\tmcp_auth extra {\n\t}\n}\n", "wrong argument count"},
		{"global twice", "{\n\tmcp_auth {\n\t\tissuer https://a.example\n\t}\n\tmcp_auth {\n\t}\n}\n", "only once"},
		{"issuer missing url", global("issuer"), "issuer: missing argument"},
		{"issuer two urls", global("issuer https://a https://b"), "issuer: too many arguments"},
		// A singleton given twice: the last would silently win.
		{"issuer twice", global("issuer https://other.example.com"), `issuer: given more than once ("https://auth.example.com", then "https://other.example.com")`},
		{"signing_alg twice", global("signing_alg ES256\n\t\tsigning_alg RS256"), "signing_alg: given more than once"},
		{"ttl twice", global("access_token_ttl 5m\n\t\taccess_token_ttl 1h"), "access_token_ttl: given more than once"},
		{"gateway resource twice", gw("resource https://example.com/other"), "resource: given more than once"},
		{"gateway pin_tools twice", gw("pin_tools approved\n\t\tpin_tools off"), "pin_tools: given more than once"},
		{"gateway audit twice", gw("audit all\n\t\taudit denials_only"), "audit: given more than once"},
		{"gateway max_body_size twice", gw("max_body_size 1MB\n\t\tmax_body_size 1GB"), "max_body_size: given more than once"},
		{"storage twice", global("storage bolt /tmp/x.db\n\t\tstorage memory"), "storage: given more than once"},
		{"max_depth 1 then 3", gw("tool x s {\n\t\t\tmax_depth 1\n\t\t\tmax_depth 3\n\t\t}"), "max_depth: given more than once"},
		// 0 is what an absent max_depth reads as: no limit for a rule,
		// the issuer's for an agent; written to allow no delegation, it
		// would allow the most (review s17-ops F1).
		{"rule max_depth 0", gw("tool x s {\n\t\t\tmax_depth 0\n\t\t}"), "max_depth 0: want at least 1 (0 would mean no limit"},
		{"agent max_depth 0", global("agent planner {\n\t\t\tjwks_uri https://planner.example/jwks\n\t\t\tmax_depth 0\n\t\t}"), "max_depth 0: want at least 1 (0 would mean the issuer's limit"},
		{"min_password_length twice", global("min_password_length 0\n\t\tmin_password_length 12"), "min_password_length: given more than once"},
		{"storage missing kind", global("storage"), "wrong argument count"},
		{"storage unknown kind", global("storage redis"), `unknown storage "redis"`},
		{"storage bolt two paths", global("storage bolt a b"), "wrong argument count"},
		{"storage memory path", global("storage memory /x"), "wrong argument count"},
		{"storage postgres no dsn", global("storage postgres"), "storage postgres: want one <dsn>"},
		{"storage postgres two dsns", global("storage postgres a b"), "storage postgres: want one <dsn>"},
		{"storage postgres url password", global("storage postgres postgres://mcp:hunter2@db/mcp"), "the dsn holds a password in clear"},
		{"storage postgres kv password", global(`storage postgres "host=db user=mcp password=hunter2 dbname=mcp"`), "the dsn holds a password in clear"},
		{"storage postgres query password", global("storage postgres postgres://mcp@db/mcp?sslmode=require&password=hunter2"), "the dsn holds a password in clear"},
		{"storage postgres password around placeholder", global("storage postgres postgres://mcp:x{env.PW}@db/mcp"), "the dsn holds a password in clear"},
		{"ttl bad duration", global("access_token_ttl soon"), `access_token_ttl "soon"`},
		{"ttl negative", global("code_ttl -5m"), `code_ttl "-5m"`},
		{"revocation resync bad duration", global("revocation_resync often"), `revocation_resync "often"`},
		{"ttl missing", global("id_token_ttl"), "id_token_ttl: missing argument"},
		{"signing alg unknown", global("signing_alg HS256"), `signing_alg "HS256"`},
		{"flag with argument", global("require_par yes"), "require_par: takes no arguments"},
		{"user missing hash", global("user alice"), "user: want <name> <bcrypt-hash>"},
		{"user extra argument", global("user alice $2a$04$9jzmNsMhg4JvinvxvJr.s.8dpjl8hwwsuuQQmhnluCuonJ5SowuhK extra"), "wrong argument count"},
		{"user unknown subdirective", global("user alice $2a$04$9jzmNsMhg4JvinvxvJr.s.8dpjl8hwwsuuQQmhnluCuonJ5SowuhK {\n\t\t\tphone 1\n\t\t}"), `unrecognized user subdirective "phone"`},
		{"user groups missing", global("user alice $2a$04$9jzmNsMhg4JvinvxvJr.s.8dpjl8hwwsuuQQmhnluCuonJ5SowuhK {\n\t\t\tgroups\n\t\t}"), "groups: missing argument"},
		{"user argon2 hash", global("user alice $argon2id$v=19$m=47104,t=1,p=1$c2FsdA$aGFzaA"), "user \"alice\": password hash: an argon2 hash; only bcrypt is accepted: make one with `caddy hash-password`, at Caddyfile:4"},
		{"user plain password", global("user alice hunter2"), "user \"alice\": password hash: not a bcrypt hash; only bcrypt is accepted: make one with `caddy hash-password`, at Caddyfile:4"},
		{"user hash of cost 20", global("user alice $2a$20$" + strings.Repeat("a", 53)), "user \"alice\": password hash: bcrypt cost 20 is above the most accepted, 16: make one with `caddy hash-password` (cost 14), at Caddyfile:4"},
		{"client secret of cost 17", global("client c {\n\t\t\tsecret $2a$17$" + strings.Repeat("a", 53) + "\n\t\t}"), "secret: bcrypt cost 17 is above the most accepted, 16"},
		{"user unknown group", global("user alice $2a$04$9jzmNsMhg4JvinvxvJr.s.8dpjl8hwwsuuQQmhnluCuonJ5SowuhK {\n\t\t\tgroups staff admins\n\t\t}\n\t\tgroup staff {\n\t\t\tscopes * read\n\t\t}"), "user \"alice\": group \"admins\" is not declared (groups: staff), at Caddyfile:5"},
		{"user group none declared", global("user alice $2a$04$9jzmNsMhg4JvinvxvJr.s.8dpjl8hwwsuuQQmhnluCuonJ5SowuhK {\n\t\t\tgroups staff\n\t\t}"), "group \"staff\" is not declared (no group is): add `group staff { scopes <resource> <scope...> }` to mcp_auth, at Caddyfile:5"},
		{"client argon2 secret", global("client c {\n\t\t\tsecret $argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA\n\t\t}"), "secret: an argon2 hash; only bcrypt is accepted: make one with `caddy hash-password` (or give sha256:<hex>), at Caddyfile:5"},
		{"agent short sha256", global("agent a {\n\t\t\tsecret sha256:abcd\n\t\t}"), "sha256:<hex> must have 64 hex digits, at Caddyfile:5"},
		{"group missing name", global("group"), "group: missing argument"},
		{"group scopes missing scope", global("group g {\n\t\t\tscopes *\n\t\t}"), "scopes: want <resource-url|*> <scope...>"},
		{"group unknown subdirective", global("group g {\n\t\t\tmembers a\n\t\t}"), `unrecognized group subdirective "members"`},
		{"client missing id", global("client"), "client: missing argument"},
		{"client unknown subdirective", global("client c {\n\t\t\tlogo x\n\t\t}"), `unrecognized client subdirective "logo"`},
		{"client secret missing", global("client c {\n\t\t\tsecret\n\t\t}"), "secret: missing argument"},
		{"client public argument", global("client c {\n\t\t\tpublic yes\n\t\t}"), "public: takes no arguments"},
		{"client introspect argument", global("client c {\n\t\t\tintrospect yes\n\t\t}"), "introspect: takes no arguments"},
		{"agent unknown subdirective", global("agent a {\n\t\t\towner x\n\t\t}"), `unrecognized agent subdirective "owner"`},
		{"agent bad max_depth", global("agent a {\n\t\t\tmax_depth deep\n\t\t}"), `max_depth "deep"`},
		{"revocation_max_stale zero", global("revocation_max_stale 0s"), `revocation_max_stale "0s": want a positive duration`},
		{"revocation_max_stale without value", global("revocation_max_stale"), "revocation_max_stale: missing argument"},
		{"bad min_password_length", global("min_password_length -3"), `min_password_length "-3"`},
		{"min_password_length without value", global("min_password_length"), "min_password_length: missing argument"},
		{"resource missing url", global("resource"), "resource: missing argument"},
		{"resource unknown subdirective", global("resource https://x/mcp {\n\t\t\tname x\n\t\t}"), `unrecognized resource subdirective "name"`},
		{"issuer handler argument", site("\tmcp_issuer now"), "wrong argument count"},
		{"issuer handler subdirective", site("\tmcp_issuer {\n\t\tpath /x\n\t}"), `unrecognized subdirective "path"`},
		{"gateway unknown subdirective", gw("rate_limit 5"), `unrecognized subdirective "rate_limit"`},
		{"gateway inline argument", site("\tmcp_gateway https://example.com/mcp"), "wrong argument count"},
		{"gateway resource missing", gw("resource"), "resource: missing argument"},
		{"gateway issuer missing", gw("issuer"), "issuer: missing argument"},
		{"gateway issuer unknown option", gw("issuer https://idp.example.com {\n\t\t\ttyp any\n\t\t}"), `unrecognized issuer subdirective "typ"`},
		{"gateway issuer flag argument", gw("issuer https://idp.example.com {\n\t\t\taccept_typ_jwt yes\n\t\t}"), "accept_typ_jwt: takes no arguments"},
		{"gateway introspection without client", gw("issuer https://idp.example.com {\n\t\t\tintrospection {\n\t\t\t\tendpoint https://idp.example.com/introspect\n\t\t\t}\n\t\t}"), "introspection: client_id is required"},
		{"gateway introspection unknown option", gw("issuer https://idp.example.com {\n\t\t\tintrospection {\n\t\t\t\tclient_id x\n\t\t\t\tttl 5s\n\t\t\t}\n\t\t}"), `unrecognized introspection subdirective "ttl"`},
		{"gateway introspection twice", gw("issuer https://idp.example.com {\n\t\t\tintrospection {\n\t\t\t\tclient_id a\n\t\t\t}\n\t\t\tintrospection {\n\t\t\t\tclient_id b\n\t\t\t}\n\t\t}"), "introspection: given more than once"},
		{"gateway introspection bad cache", gw("issuer https://idp.example.com {\n\t\t\tintrospection {\n\t\t\t\tclient_id x\n\t\t\t\tcache soon\n\t\t\t}\n\t\t}"), `cache "soon"`},
		{"gateway scope missing", gw("scope"), "scope: missing argument"},
		{"gateway implies one scope", gw("scope_implies admin"), "scope_implies: want <broad-scope> <narrow-scope...>"},
		{"gateway tool missing pattern", gw("tool"), "tool: want <pattern> [<scope...>]"},
		{"gateway method missing pattern", gw("method"), "method: want <pattern> [<scope...>]"},
		{"gateway method unknown subdirective", gw("method x-a/* {\n\t\t\tcolour blue\n\t\t}"), `unrecognized method subdirective "colour"`},
		{"gateway prompt missing pattern", gw("prompt"), "prompt: want <pattern> [<scope...>]"},
		{"gateway resource_rule missing prefix", gw("resource_rule"), "resource_rule: want <pattern> [<scope...>]"},
		{"gateway tool unknown subdirective", gw("tool echo read {\n\t\t\tagent x\n\t\t}"), `unrecognized tool subdirective "agent"`},
		{"gateway tool bad max_depth", gw("tool echo read {\n\t\t\tmax_depth -1\n\t\t}"), `max_depth "-1"`},
		{"gateway tool flag argument", gw("tool echo read {\n\t\t\tuser_only yes\n\t\t}"), "user_only: takes no arguments"},
		{"gateway arg on a prompt", gw("prompt p {\n\t\t\targ /a present\n\t\t}"), "argument rules apply to tool rules only"},
		{"gateway arg without predicate", gw("tool t {\n\t\t\targ /a\n\t\t}"), "arg: want <json-pointer> [optional] <predicate> [<value...>]"},
		{"gateway arg optional without predicate", gw("tool t {\n\t\t\targ /a optional\n\t\t}"), "arg: want <json-pointer> [optional] <predicate> [<value...>]"},
		{"gateway audit_arguments argument", gw("audit_arguments yes"), "audit_arguments: takes no arguments"},
		{"gateway origins missing", gw("allowed_origins"), "allowed_origins: missing argument"},
		{"gateway bad body size", gw("max_body_size lots"), `max_body_size "lots"`},
		{"gateway zero body size", gw("max_body_size 0"), `max_body_size "0"`},
		{"gateway zero in flight", gw("max_in_flight 0"), "max_in_flight 0: want at least 1"},
		{"gateway negative in flight", gw("max_in_flight -1"), `max_in_flight "-1": want a non-negative integer`},
		{"gateway in flight twice", gw("max_in_flight 5\n\t\tmax_in_flight 6"), "max_in_flight: given more than once"},
		{"gateway zero in flight per client", gw("max_in_flight_per_client 0"), "max_in_flight_per_client 0: want at least 1"},
		{"gateway in flight per client twice", gw("max_in_flight_per_client 5\n\t\tmax_in_flight_per_client 6"), "max_in_flight_per_client: given more than once"},
		{"gateway in flight per client above the default", gw("max_in_flight_per_client 101"), "max_in_flight_per_client 101 is above max_in_flight (100), which bounds all of a principal's clients together, at Caddyfile:7"},
		{"gateway in flight per client above max_in_flight", gw("max_in_flight_per_client 5\n\t\tmax_in_flight 4"), "max_in_flight_per_client 5 is above max_in_flight (4)"},
		{"gateway forward_identity argument", gw("forward_identity on"), "forward_identity: takes no arguments"},
		{"gateway audit missing", gw("audit"), "audit: missing argument"},
		{"gateway audit unknown", gw("audit allowed_only"), `audit "allowed_only": want all or denials_only`},
		{"gateway session_key missing", gw("session_key"), "session_key: missing argument"},
		// Provision would refuse these without a line to look at: they
		// are refused at adapt, naming the mcp_gateway block's line.
		{"gateway tool rule shadowed", gw("tool * read\n\t\ttool delete_all admin"), "tool rule \"delete_all\" is never reached"},
		{"gateway tool rule shadowed line", gw("tool * read\n\t\ttool delete_all admin"), ", at Caddyfile:7"},
		{"gateway arg unknown predicate", gw("tool t {\n\t\t\targ /a between 1 2\n\t\t}"), "unknown predicate: want equals"},
		{"gateway arg unknown predicate line", gw("tool t {\n\t\t\targ /a between 1 2\n\t\t}"), ", at Caddyfile:7"},
		{"gateway arg bad regex", gw("tool t {\n\t\t\targ /a regex (\n\t\t}"), "error parsing regexp"},
		{"gateway method matching an MCP method", gw("method tools/*"), ", at Caddyfile:7"},
		{"gateway bad scope", gw("scope \"a b\""), ", at Caddyfile:7"},
		{"gateway bad origin", gw("allowed_origins app.example.com"), "allowed origin \"app.example.com\""},
		{"gateway bad origin line", gw("allowed_origins app.example.com"), ", at Caddyfile:7"},
		{"gateway bad pin mode", gw("pin_tools always"), "pin_tools: pin mode \"always\": want off, first_use or approved, at Caddyfile:9"},
		{"gateway local issuer with remote options", gw("issuer local {\n\t\t\taccept_typ_jwt\n\t\t}"), "accept_typ_jwt, audience, introspection and agent_claims are for a remote issuer (issuer <url>); the local issuer's tokens need none of them, at Caddyfile:7"},
		{"gateway local issuer with agent_claims", gw("issuer local {\n\t\t\tagent_claims\n\t\t}"), "are for a remote issuer"},
		{"gateway default issuer with audience", site("\tmcp_gateway {\n\t\tresource https://example.com/mcp\n\t\tissuer local {\n\t\t\taudience api://x\n\t\t}\n\t}"), "are for a remote issuer"},
		// Provision refuses these too, but with no line to look at.
		{"issuer not given", "{\n\tmcp_auth {\n\t\tstorage memory\n\t}\n}\nexample.com {\n\tmcp_issuer\n}\n", "mcp_auth: issuer is required: add `issuer <url>`, the URL of the site that serves mcp_issuer, at Caddyfile:2"},
		{"gateway resource not given", site("\tmcp_gateway {\n\t\tscope notes:read\n\t}\n\treverse_proxy localhost:3001"), "mcp_gateway: resource is required: add `resource <url>`, the MCP endpoint's URL as clients use it, at Caddyfile:7"},
		{"gateway without a block", site("\tmcp_gateway\n\treverse_proxy localhost:3001"), "mcp_gateway: resource is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := adapt(t, []byte(tt.caddyfile))
			if err == nil {
				t.Fatalf("Adapt() = %s, want error containing %q", out, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Adapt() error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestAdaptErrorsHideSecrets: a secret given twice in a block (an
// imported snippet and the site's own, say) is refused as any value
// given twice, but the error, which Caddy writes to its log, names
// neither value: a {$NAME} the adapter replaced, or a secret in clear,
// would otherwise be in the log of every start that fails on it.
func TestAdaptErrorsHideSecrets(t *testing.T) {
	const first, second = "hunter2-first-secret-41d9", "hunter2-second-secret-7c3a"
	twice := func(name string) string {
		return "\t\t\t" + name + " " + first + "\n\t\t\t" + name + " " + second
	}
	for _, tt := range []struct{ name, caddyfile string }{
		{"identity_provider client_secret", "{\n\tmcp_auth {\n\t\tissuer https://auth.example.com\n\t\tidentity_provider corp {\n" +
			"\t\t\tissuer https://idp.example.com\n\t\t\tclient_id mcp\n" + twice("client_secret") + "\n\t\t}\n\t}\n}\nauth.example.com {\n\tmcp_issuer\n}\n"},
		{"introspection client_secret", "example.com {\n\tmcp_gateway {\n\t\tresource https://example.com/mcp\n\t\tissuer https://idp.example.com {\n" +
			"\t\t\tintrospection {\n\t\t\t\tclient_id gw\n\t" + twice("client_secret") + "\n\t\t\t}\n\t\t}\n\t}\n\treverse_proxy localhost:3001\n}\n"},
		{"gateway session_key", "example.com {\n\tmcp_gateway {\n\t\tresource https://example.com/mcp\n" +
			strings.ReplaceAll(twice("session_key"), "\t\t\t", "\t\t") + "\n\t}\n\treverse_proxy localhost:3001\n}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := adapt(t, []byte(tt.caddyfile))
			if err == nil {
				t.Fatalf("Adapt() = %s, want an error", out)
			}
			if !strings.Contains(err.Error(), "given more than once") {
				t.Errorf("Adapt() error = %q, want given more than once", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Adapt() error names the secret: %q", err)
			}
		})
	}
}

// TestCaddyfileExample adapts the repository's Caddyfile.example (golden
// file testdata/Caddyfile.example.json) and validates the result the way
// `caddy validate` does: every module is provisioned, no store is opened,
// nothing is started.
func TestCaddyfileExample(t *testing.T) {
	src, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	got, err := adapt(t, src)
	if err != nil {
		t.Fatalf("Adapt(Caddyfile.example) error: %v", err)
	}
	golden := "testdata/Caddyfile.example.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if want, err := os.ReadFile(golden); err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	} else if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("Adapt(Caddyfile.example) mismatch (-want +got):\n%s", diff)
	}

	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	var cfg caddy.Config
	if err := json.Unmarshal(got, &cfg); err != nil {
		t.Fatalf("decode adapted config: %v", err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Errorf("Validate(Caddyfile.example) = %v", err)
	}
}

// TestUnsetEnvironmentVariable: Caddy replaces {$NAME} in the
// Caddyfile's text before reading it, by nothing when the variable is
// unset, so a rule's scope written as one reads as a rule without it:
// `tool delete_* {$ADMIN_SCOPE}` is `tool delete_*`, which needs the
// base scopes only. README says so and names the two safe spellings: a
// default, which is the scope when the variable is unset, and quotes,
// which leave an empty scope that refuses to load.
func TestUnsetEnvironmentVariable(t *testing.T) {
	t.Setenv("MCP_UNSET_ADMIN_SCOPE", "")
	os.Unsetenv("MCP_UNSET_ADMIN_SCOPE")
	caddyfile := func(scope string) []byte {
		return []byte("{\n\tmcp_auth {\n\t\tissuer https://auth.example.com\n\t}\n}\nexample.com {\n\tmcp_gateway {\n\t\tresource https://example.com/mcp\n\t\tscope read\n\t\ttool delete_* " +
			scope + "\n\t\ttool * read\n\t}\n\treverse_proxy localhost:3001\n}\n")
	}
	rule := func(t *testing.T, out []byte) string {
		t.Helper()
		var cfg struct {
			Apps struct {
				HTTP struct {
					Servers map[string]struct {
						Routes []struct {
							Handle []struct {
								Routes []struct {
									Handle []json.RawMessage `json:"handle"`
								} `json:"routes"`
							} `json:"handle"`
						} `json:"routes"`
					} `json:"servers"`
				} `json:"http"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		var gw struct {
			Tools []json.RawMessage `json:"tools"`
		}
		if err := json.Unmarshal(cfg.Apps.HTTP.Servers["srv0"].Routes[0].Handle[0].Routes[0].Handle[0], &gw); err != nil || len(gw.Tools) == 0 {
			t.Fatalf("no gateway tools in %s (%v)", out, err)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, gw.Tools[0]); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	out, err := adapt(t, caddyfile("{$MCP_UNSET_ADMIN_SCOPE}"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rule(t, out), `{"match":"delete_*"}`; got != want {
		t.Errorf("unset, unquoted: rule %s, want %s (no scope)", got, want)
	}
	out, err = adapt(t, caddyfile("{$MCP_UNSET_ADMIN_SCOPE:admin}"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rule(t, out), `{"match":"delete_*","scopes":["admin"]}`; got != want {
		t.Errorf("unset, with a default: rule %s, want %s", got, want)
	}
	if _, err := adapt(t, caddyfile(`"{$MCP_UNSET_ADMIN_SCOPE}"`)); err == nil || !strings.Contains(err.Error(), `tools rule "delete_*": invalid scope token ""`) {
		t.Errorf("unset, quoted: Adapt() error = %v, want the empty scope refused", err)
	}
}
