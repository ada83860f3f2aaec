package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

func (e *testEnv) register(t *testing.T, body string) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := e.srv.Client().Post(e.url(pathRegister, nil), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw := readBody(t, resp)
	var out map[string]any
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("register answer %q: %v", raw, err)
	}
	return resp, out
}

func TestRegisterPublicNativeClient(t *testing.T) {
	e := newBrowserEnv(t, nil)
	resp, out := e.register(t, `{"client_name":"CLI","redirect_uris":["http://127.0.0.1:3000/cb","http://localhost:3000/cb"],
		"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"scope":"files:read"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %v", resp.StatusCode, out)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", resp.Header.Get("Cache-Control"))
	}
	id, _ := out["client_id"].(string)
	if id == "" || out["client_secret"] != nil || out["application_type"] != "native" || out["token_endpoint_auth_method"] != "none" || out["scope"] != "files:read" {
		t.Fatalf("registration = %v", out)
	}
	c, err := e.iss.dir.lookupClient(t.Context(), id)
	if err != nil {
		t.Fatalf("lookupClient(%s): %v", id, err)
	}
	if c.Source != "dcr" || c.Name != "CLI" || !slices.Equal(c.GrantTypes, []string{"authorization_code", "refresh_token"}) || len(c.Scopes) != 0 {
		t.Errorf("stored client = %+v", c)
	}
	// The client can run the authorization flow (any loopback port).
	p := authParams(testChallenge)
	p.Set("client_id", id)
	p.Set("redirect_uri", "http://127.0.0.1:4567/cb")
	if _, err := e.robot(e.browser(), e.url(pathAuthorize, p), "http://127.0.0.1:4567/cb", bUser, bPassword, "approve"); err != nil {
		t.Fatalf("robot with registered client: %v", err)
	}
}

func TestRegisterConfidentialClient(t *testing.T) {
	e := newBrowserEnv(t, nil)
	resp, out := e.register(t, `{"client_name":"Web","redirect_uris":["https://app.example.com/cb"]}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %v", resp.StatusCode, out)
	}
	secret, _ := out["client_secret"].(string)
	if secret == "" || out["client_secret_expires_at"] != float64(0) || out["token_endpoint_auth_method"] != "client_secret_basic" || out["application_type"] != "web" {
		t.Fatalf("registration = %v, want a secret for client_secret_basic", out)
	}
	// RFC 7591 section 3.2.1: the metadata registered, defaults included.
	if out["id_token_signed_response_alg"] != "RS256" {
		t.Errorf("id_token_signed_response_alg = %v, want OpenID Connect's default RS256", out["id_token_signed_response_alg"])
	}
	c, err := e.iss.dir.lookupClient(t.Context(), out["client_id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(secret))
	if c.SecretHash != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("stored secret hash = %q, want sha256 of the secret", c.SecretHash)
	}
}

// TestRegisterStatesIDTokenAlg: the answer names the algorithm ID tokens
// are signed with: OpenID Connect Dynamic Client Registration 1.0 reads
// an answer without id_token_signed_response_alg as RS256 (section 2).
// Asked for nothing, that is RS256; asked for RS256 or signing_alg, that;
// anything else is refused.
func TestRegisterStatesIDTokenAlg(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256", "EdDSA"} {
		e := newBrowserEnv(t, func(c *Config) { c.SigningAlg = alg })
		for asked, want := range map[string]string{"": "RS256", "RS256": "RS256", alg: alg, "none": "", "HS256": "", "PS256": ""} {
			body := `{"client_name":"App","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"`
			if asked != "" {
				body += `,"id_token_signed_response_alg":"` + asked + `"`
			}
			resp, out := e.register(t, body+"}")
			switch {
			case want == "" && (resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata"):
				t.Errorf("signing_alg %s, register asking %q: %d %v, want 400 invalid_client_metadata", alg, asked, resp.StatusCode, out)
			case want != "" && (resp.StatusCode != http.StatusCreated || out["id_token_signed_response_alg"] != want):
				t.Errorf("signing_alg %s, register asking %q: %d id_token_signed_response_alg = %v, want %s",
					alg, asked, resp.StatusCode, out["id_token_signed_response_alg"], want)
			}
		}
	}
}

// TestRegisterSubjectType: subject_type (OpenID Connect Dynamic Client
// Registration 1.0 section 2) is public, the one type the metadata's
// subject_types_supported lists: a registration asking for pairwise is
// refused, not given public identifiers it did not ask for, and the
// answer states the type registered.
func TestRegisterSubjectType(t *testing.T) {
	e := newBrowserEnv(t, nil)
	for asked, want := range map[string]string{"": "public", "public": "public", "pairwise": "", "other": ""} {
		body := `{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"`
		if asked != "" {
			body += `,"subject_type":"` + asked + `","sector_identifier_uri":"https://rp.example.com/sector.json"`
		}
		resp, out := e.register(t, body+"}")
		switch {
		case want == "" && (resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata"):
			t.Errorf("register asking subject_type %q: %d %v, want 400 invalid_client_metadata", asked, resp.StatusCode, out)
		case want != "" && (resp.StatusCode != http.StatusCreated || out["subject_type"] != want):
			t.Errorf("register asking subject_type %q: %d subject_type = %v, want %s", asked, resp.StatusCode, out["subject_type"], want)
		}
	}
}

// TestRegisterEncryptionRefused: this server encrypts no ID token or
// userinfo answer (its metadata lists no encryption algorithm), so a
// registration asking for encrypted ones (OpenID Connect Dynamic Client
// Registration 1.0 section 2) is refused, not registered to get them in
// the clear; a member sent as null asks for nothing.
func TestRegisterEncryptionRefused(t *testing.T) {
	e := newBrowserEnv(t, nil)
	for _, member := range []string{
		`"id_token_encrypted_response_alg":"RSA-OAEP"`, `"id_token_encrypted_response_enc":"A128CBC-HS256"`,
		`"userinfo_encrypted_response_alg":"ECDH-ES"`, `"userinfo_encrypted_response_enc":"A256GCM"`,
	} {
		resp, out := e.register(t, `{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none",`+member+`}`)
		if resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata" {
			t.Errorf("register with %s: %d %v, want 400 invalid_client_metadata", member, resp.StatusCode, out)
		}
	}
	resp, out := e.register(t, `{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none","id_token_encrypted_response_alg":null}`)
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("register with id_token_encrypted_response_alg null: %d %v, want 201", resp.StatusCode, out)
	}
}

// TestRegisterSigningAlgs: the answer to a registration states only
// what the server does (RFC 7591 section 3.2.1; OpenID Connect Dynamic
// Client Registration 1.0 section 2). userinfo_signed_response_alg asks
// for signed userinfo answers, which this server does not make: refused
// (null asks for nothing). token_endpoint_auth_signing_alg of a
// private_key_jwt client is kept, stated and held to: an assertion
// signed with another algorithm is refused ("MUST be rejected"), one of
// an algorithm the metadata does not offer is refused at registration,
// and for a client of another method, to which it does not apply, it is
// not stated.
func TestRegisterSigningAlgs(t *testing.T) {
	e := newTokEnv(t)
	const cb = `"redirect_uris":["https://rp.example.com/cb"]`
	pub, err := publicJWK(e.jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub.Kid = "k1"
	k384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub384, err := publicJWK(k384.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub384.Kid = "k2"
	jwks, err := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub, pub384}})
	if err != nil {
		t.Fatal(err)
	}
	keyed := cb + `,"token_endpoint_auth_method":"private_key_jwt","jwks":` + string(jwks)
	for _, body := range []string{
		// No key of the set signs RS256 (P-256 and P-384 keys): the
		// client could never authenticate.
		`{` + keyed + `,"token_endpoint_auth_signing_alg":"RS256"}`,
		`{` + cb + `,"token_endpoint_auth_method":"none","userinfo_signed_response_alg":"RS256"}`,
		`{` + cb + `,"token_endpoint_auth_method":"none","userinfo_signed_response_alg":"none"}`,
		`{` + keyed + `,"token_endpoint_auth_signing_alg":"HS256"}`,
		`{` + keyed + `,"token_endpoint_auth_signing_alg":"none"}`,
	} {
		if resp, out := e.register(t, body); resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata" {
			t.Errorf("register %s: %d %v, want 400 invalid_client_metadata", body, resp.StatusCode, out)
		}
	}
	if resp, out := e.register(t, `{`+cb+`,"token_endpoint_auth_method":"none","userinfo_signed_response_alg":null}`); resp.StatusCode != http.StatusCreated {
		t.Errorf("register with userinfo_signed_response_alg null: %d %v, want 201", resp.StatusCode, out)
	}
	if resp, out := e.register(t, `{`+cb+`,"token_endpoint_auth_method":"none","token_endpoint_auth_signing_alg":"ES256"}`); resp.StatusCode != http.StatusCreated || out["token_endpoint_auth_signing_alg"] != nil {
		t.Errorf("register a public client with token_endpoint_auth_signing_alg: %d %v, want 201 not stating it", resp.StatusCode, out)
	}
	// The client's assertions are ES256, by its P-256 key k1.
	revoke := func(id string) int {
		t.Helper()
		a := e.clientAssertion(t, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"], c["sub"] = id, id })
		return e.post(t, pathRevoke, url.Values{"token": {"not-a-token"}, "client_assertion_type": {jwtBearerAssertion}, "client_assertion": {a}}, "").status
	}
	for _, tt := range []struct {
		alg    string
		status int
	}{{"", 200}, {"ES256", 200}, {"ES384", 401}} {
		body := `{` + keyed
		if tt.alg != "" {
			body += `,"token_endpoint_auth_signing_alg":"` + tt.alg + `"`
		}
		resp, out := e.register(t, body+`}`)
		if stated, _ := out["token_endpoint_auth_signing_alg"].(string); resp.StatusCode != http.StatusCreated || stated != tt.alg {
			t.Fatalf("register with token_endpoint_auth_signing_alg %q: %d %v, want 201 stating it", tt.alg, resp.StatusCode, out)
		}
		if got := revoke(out["client_id"].(string)); got != tt.status {
			t.Errorf("token_endpoint_auth_signing_alg %q, an ES256 assertion: revoke = %d, want %d", tt.alg, got, tt.status)
		}
	}
}

// TestRegisterDefaultMaxAge: a registered default_max_age (OpenID
// Connect Dynamic Client Registration 1.0 section 2) is the max_age of
// the client's requests that send none: a login older than it signs the
// user in again; a max_age parameter overrides it. The answer states
// it, and a negative or fractional one is refused.
func TestRegisterDefaultMaxAge(t *testing.T) {
	e := newBrowserEnv(t, nil)
	for _, bad := range []string{"-1", "1.5", `"60"`, "4294967296"} {
		resp, out := e.register(t, `{"redirect_uris":["https://rp.example.com/cb"],"token_endpoint_auth_method":"none","default_max_age":`+bad+`}`)
		if resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata" {
			t.Errorf("default_max_age %s: %d %v, want 400 invalid_client_metadata", bad, resp.StatusCode, out)
		}
	}
	resp, out := e.register(t, `{"redirect_uris":["https://rp.example.com/cb"],"token_endpoint_auth_method":"none","default_max_age":60}`)
	if resp.StatusCode != http.StatusCreated || out["default_max_age"] != float64(60) {
		t.Fatalf("register with default_max_age 60: %d %v, want 201 stating default_max_age 60", resp.StatusCode, out)
	}
	// The admin API shows it, for an operator to see why the client's
	// users sign in again.
	runAPI(t, adminServer(t, e.iss), apiCase{"show", "GET", "/mcp-auth/clients/" + out["client_id"].(string), "", 200, `"default_max_age":60`})
	p := webAuthParams(testChallenge)
	p.Set("client_id", out["client_id"].(string))
	p.Set("redirect_uri", "https://rp.example.com/cb")
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, p), "https://rp.example.com/cb", bUser, bPassword, "approve"); err != nil {
		t.Fatal(err)
	}
	if loc := locationOf(t, c, e.url(pathAuthorize, p)); loc.Query().Get("code") == "" {
		t.Fatalf("within default_max_age: Location %s, want a code", loc)
	}
	e.clock.Advance(2 * time.Minute)
	if loc := locationOf(t, c, e.url(pathAuthorize, p)); !strings.HasPrefix(loc.String(), pathLogin+"?req=") {
		t.Errorf("login older than default_max_age: Location %s, want the sign-in page", loc)
	}
	p.Set("max_age", "3600")
	if loc := locationOf(t, c, e.url(pathAuthorize, p)); loc.Query().Get("code") == "" {
		t.Errorf("max_age 3600 overriding default_max_age: Location %s, want a code", loc)
	}
}

// TestRegisterClientNameMarks: a self-registered client's name may put
// at most four combining marks on one character, as written languages
// do; more stack outside the line, and a letter under the fifty that
// fit in client_name's 100 bytes paints a column across the consent
// page's heading and the lines around the name (the note that the name
// is the client's own claim, the redirect host), or, enclosing marks,
// runs past the page's edge, where no line break can come.
func TestRegisterClientNameMarks(t *testing.T) {
	e := newBrowserEnv(t, nil)
	for _, tt := range []struct {
		name, clientName string
		ok               bool
	}{
		{"Vietnamese decomposed", "Vie\u0323\u0302t Notes", true},
		{"Tibetan stack", "\u0f56\u0f66\u0f92\u0fb2\u0f74\u0f56", true},
		{"keycap emoji", "Notes 1\ufe0f\u20e3", true},
		{"four marks", "N\u0300\u0301\u0302\u0303otes", true},
		{"five marks above", "N\u0300\u0301\u0302\u0303\u0304otes", false},
		{"marks below under a letter", "Notes" + strings.Repeat("\u0316", 40), false},
		{"enclosing marks", "W" + strings.Repeat("\u20dd\u0489", 3), false},
		{"marks between zero-width non-joiners", "N" + strings.Repeat("\u0301\u0302\u0303\u0304\u200c", 8), false},
		{"marks between zero-width joiners", "N\u0301\u0302\u0303\u200d\u0304\u0305", false},
		{"marks between zero-width spaces", "N\u0301\u0302\u0303\u200b\u0304\u0305", false},
		{"an emoji sequence", "Notes \u2764\ufe0f\u200d\U0001f525 \U0001f468\u200d\U0001f469\u200d\U0001f467", true},
		{"Persian with a non-joiner", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, out := e.register(t, `{"client_name":"`+tt.clientName+`","redirect_uris":["https://a.example/cb"]}`)
			if tt.ok {
				if resp.StatusCode != http.StatusCreated {
					t.Errorf("register %q = %d %v, want 201", tt.clientName, resp.StatusCode, out)
				}
				return
			}
			if resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata" ||
				!strings.Contains(fmt.Sprint(out["error_description"]), "combining marks") {
				t.Errorf("register %q = %d %v, want 400 invalid_client_metadata naming the combining marks", tt.clientName, resp.StatusCode, out)
			}
		})
	}
}

// TestClientMetadataNullKeySet: "jwks": null in a registration or a
// client metadata document is the member left out, as null is for
// jwks_uri and every other member (clients whose serializers write each
// member, Jackson's by default, send it for a public client): the client
// registers, with no keys. A key set on a client that authenticates
// otherwise is still refused, in both.
func TestClientMetadataNullKeySet(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	for _, tt := range []struct {
		name, members string
		ok            bool
	}{
		{"jwks null", `"jwks":null`, true},
		{"jwks and jwks_uri null", `"jwks":null,"jwks_uri":null`, true},
		{"a key set", `"jwks":{"keys":[{` + testECKey + `}]}`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, out := e.register(t, `{"client_name":"J","redirect_uris":["http://127.0.0.1:3000/cb"],"token_endpoint_auth_method":"none",`+tt.members+`}`)
			switch {
			case tt.ok && resp.StatusCode != http.StatusCreated:
				t.Errorf("registration = %d %v, want 201", resp.StatusCode, out)
			case tt.ok:
				id, _ := out["client_id"].(string)
				c, err := e.iss.dir.lookupClient(t.Context(), id)
				if err != nil || len(c.JWKS) != 0 || c.JWKSURI != "" || out["jwks"] != nil {
					t.Errorf("registered client = %+v, %v (answer %v), want one without keys", c, err, out)
				}
			case resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata":
				t.Errorf("registration = %d %v, want 400 invalid_client_metadata", resp.StatusCode, out)
			}

			path := "/" + strings.ReplaceAll(tt.name, " ", "-") + ".json"
			id := host.doc(path, "", func(id string) string { return strings.TrimSuffix(validDoc(id), "}") + "," + tt.members + "}" })
			c, err := e.iss.cimd.fetch(t.Context(), id)
			switch {
			case tt.ok && (err != nil || len(c.JWKS) != 0 || c.JWKSURI != ""):
				t.Errorf("document client = %+v, %v; want one without keys", c, err)
			case !tt.ok && !errors.Is(err, ErrInvalidClient):
				t.Errorf("document client = %+v, %v; want invalid_client", c, err)
			}
		})
	}
}

func TestRegisterValidation(t *testing.T) {
	e := newBrowserEnv(t, nil)
	tests := []struct {
		name, body, want string
	}{
		{"no redirect_uris", `{"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"fragment", `{"redirect_uris":["https://a.example/cb#x"]}`, "invalid_redirect_uri"},
		{"wildcard", `{"redirect_uris":["https://*.example.com/cb"]}`, "invalid_redirect_uri"},
		{"relative", `{"redirect_uris":["/cb"]}`, "invalid_redirect_uri"},
		{"http non-loopback", `{"redirect_uris":["http://app.example.com/cb"]}`, "invalid_redirect_uri"},
		{"custom scheme without dot", `{"redirect_uris":["myapp:/cb"],"application_type":"native"}`, "invalid_redirect_uri"},
		{"javascript scheme", `{"redirect_uris":["javascript:alert(1)"],"application_type":"native"}`, "invalid_redirect_uri"},
		{"custom scheme for web", `{"redirect_uris":["com.example.app:/cb"],"application_type":"web"}`, "invalid_redirect_uri"},
		{"loopback for web", `{"redirect_uris":["http://127.0.0.1/cb"],"application_type":"web"}`, "invalid_redirect_uri"},
		{"http on a 127. name", `{"redirect_uris":["http://127.evil.example/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"http on a 127.0.0.1. name", `{"redirect_uris":["http://127.0.0.1.nip.io/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"userinfo", `{"redirect_uris":["https://u:p@a.example/cb"]}`, "invalid_redirect_uri"},
		// A browser reads :05555 as :5555, and refuses a port above 65535.
		{"loopback port with a leading zero", `{"redirect_uris":["http://127.0.0.1:05555/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"port with a leading zero", `{"redirect_uris":["https://a.example:0443/cb"]}`, "invalid_redirect_uri"},
		{"port out of range", `{"redirect_uris":["https://a.example:99999/cb"]}`, "invalid_redirect_uri"},
		// A browser reads \ as /: /cb\..\admin is /admin to it.
		{"backslash in the path", `{"redirect_uris":["https://a.example/cb\\..\\admin"]}`, "invalid_redirect_uri"},
		{"backslash in a loopback path", `{"redirect_uris":["http://127.0.0.1/cb\\..\\x"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		// The response adds these: they would be sent twice.
		{"state in the query", `{"redirect_uris":["https://a.example/cb?state=x"]}`, "invalid_redirect_uri"},
		{"iss in the query", `{"redirect_uris":["https://a.example/cb?x=1&iss=https://evil.example"]}`, "invalid_redirect_uri"},
		{"code in the query", `{"redirect_uris":["https://a.example/cb?code=x"]}`, "invalid_redirect_uri"},
		{"error_description in the query", `{"redirect_uris":["https://a.example/cb?error_description=x"]}`, "invalid_redirect_uri"},
		{"escaped state in the query", `{"redirect_uris":["https://a.example/cb?st%61te=x"]}`, "invalid_redirect_uri"},
		// ASP.NET Core reads query names in any case, binding the first.
		{"state in capitals in the query", `{"redirect_uris":["https://a.example/cb?STATE=x"]}`, "invalid_redirect_uri"},
		{"Iss in the query", `{"redirect_uris":["https://a.example/cb?Iss=https://evil.example"]}`, "invalid_redirect_uri"},
		{"query with a semicolon", `{"redirect_uris":["https://a.example/cb?x=1;state=y"]}`, "invalid_redirect_uri"},
		{"query with a bad escape", `{"redirect_uris":["https://a.example/cb?x=%zz"]}`, "invalid_redirect_uri"},
		{"private-use scheme with state", `{"redirect_uris":["com.example.app:/cb?state=x"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"unknown application_type", `{"redirect_uris":["https://a.example/cb"],"application_type":"desktop"}`, "invalid_client_metadata"},
		{"implicit grant", `{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}`, "invalid_client_metadata"},
		{"password grant", `{"redirect_uris":["https://a.example/cb"],"grant_types":["password"]}`, "invalid_client_metadata"},
		{"token response type", `{"redirect_uris":["https://a.example/cb"],"response_types":["token"]}`, "invalid_client_metadata"},
		{"grant and response disagree", `{"grant_types":["client_credentials"],"response_types":["code"]}`, "invalid_client_metadata"},
		{"unknown auth method", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"tls_client_auth"}`, "invalid_client_metadata"},
		{"private_key_jwt without keys", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}`, "invalid_client_metadata"},
		{"private_key_jwt with both", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://a.example/jwks","jwks":{"keys":[{}]}}`, "invalid_client_metadata"},
		{"private_key_jwt http jwks_uri", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"http://a.example/jwks"}`, "invalid_client_metadata"},
		{"public client_credentials", `{"grant_types":["client_credentials"],"token_endpoint_auth_method":"none"}`, "invalid_client_metadata"},
		{"client_credentials", `{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post"}`, "invalid_client_metadata"},
		{"client_credentials with code", `{"redirect_uris":["https://a.example/cb"],"grant_types":["authorization_code","client_credentials"]}`, "invalid_client_metadata"},
		{"client chooses its id", `{"client_id":"mine","redirect_uris":["https://a.example/cb"]}`, "invalid_client_metadata"},
		{"control characters in name", `{"client_name":"Good\u202eApp","redirect_uris":["https://a.example/cb"]}`, "invalid_client_metadata"},
		{"redirect_uris wrong type", `{"redirect_uris":"https://a.example/cb"}`, "invalid_client_metadata"},
		{"require_pushed_authorization_requests a string", `{"redirect_uris":["https://a.example/cb"],"require_pushed_authorization_requests":"true"}`, "invalid_client_metadata"},
		{"require_pushed_authorization_requests a number", `{"redirect_uris":["https://a.example/cb"],"require_pushed_authorization_requests":1}`, "invalid_client_metadata"},
		{"require_pushed_authorization_requests null", `{"redirect_uris":["https://a.example/cb"],"require_pushed_authorization_requests":null}`, "invalid_client_metadata"},
		{"dpop_bound_access_tokens a string", `{"redirect_uris":["https://a.example/cb"],"dpop_bound_access_tokens":"true"}`, "invalid_client_metadata"},
		{"dpop_bound_access_tokens a number", `{"redirect_uris":["https://a.example/cb"],"dpop_bound_access_tokens":1}`, "invalid_client_metadata"},
		{"dpop_bound_access_tokens null", `{"redirect_uris":["https://a.example/cb"],"dpop_bound_access_tokens":null}`, "invalid_client_metadata"},
		{"not an object", `["https://a.example/cb"]`, "invalid_client_metadata"},
		{"trailing data", `{"redirect_uris":["https://a.example/cb"]} {}`, "invalid_client_metadata"},
		{"hex IPv4 host", `{"redirect_uris":["https://0x7f.1/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"decimal IPv4 host", `{"redirect_uris":["https://2130706433/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"short IPv4 host", `{"redirect_uris":["http://127.1/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"underscore in the host", `{"redirect_uris":["https://my_app.example.com/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"underscore in a loopback subdomain", `{"redirect_uris":["http://my_app.localhost:8080/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"octal IPv4 host", `{"redirect_uris":["https://0177.0.0.01/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"numeric last label", `{"redirect_uris":["https://evil.example.1/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"fullwidth localhost", `{"redirect_uris":["https://ｌｏｃａｌｈｏｓｔ/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"percent-encoded Unicode host", `{"redirect_uris":["https://%EF%BD%8Cocalhost/cb"],"token_endpoint_auth_method":"none"}`, "invalid_redirect_uri"},
		{"loopback-looking host for web", `{"redirect_uris":["https://app.localhost/cb"],"application_type":"web"}`, "invalid_redirect_uri"},
		{"long client_name", `{"client_name":"` + strings.Repeat("n", 101) + `","redirect_uris":["https://a.example/cb"]}`, "invalid_client_metadata"},
		{"too many redirect_uris", `{"redirect_uris":[` + strings.Repeat(`"https://a.example/cb",`, maxRedirectURIs) + `"https://a.example/cb"]}`, "invalid_redirect_uri"},
		{"long redirect URI", `{"redirect_uris":["https://a.example/` + strings.Repeat("p", maxRedirectURILen) + `"]}`, "invalid_redirect_uri"},
		{"redirect_uris too large together", `{"redirect_uris":[` + strings.Repeat(`"https://a.example/`+strings.Repeat("p", 900)+`",`, 5) + `"https://a.example/cb"]}`, "invalid_client_metadata"},
		{"large jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"oct","k":"` + strings.Repeat("k", maxStoredJWKS) + `"}]}}`, "invalid_client_metadata"},
		{"post-logout http non-loopback", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":["http://a.example/bye"]}`, "invalid_client_metadata"},
		{"post-logout fragment", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":["https://a.example/bye#x"]}`, "invalid_client_metadata"},
		{"post-logout wildcard", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":["https://*.example/bye"]}`, "invalid_client_metadata"},
		{"post-logout relative", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":["/bye"]}`, "invalid_client_metadata"},
		{"post-logout javascript", `{"redirect_uris":["com.example.app:/cb"],"post_logout_redirect_uris":["javascript:alert(1)"]}`, "invalid_client_metadata"},
		{"post-logout loopback for web", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":["http://127.0.0.1/bye"]}`, "invalid_client_metadata"},
		{"post-logout wrong type", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":"https://a.example/bye"}`, "invalid_client_metadata"},
		{"too many post-logout URIs", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":[` + strings.Repeat(`"https://a.example/bye",`, maxRedirectURIs) + `"https://a.example/bye"]}`, "invalid_client_metadata"},
		{"long post-logout URI", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":["https://a.example/` + strings.Repeat("p", maxRedirectURILen) + `"]}`, "invalid_client_metadata"},
		{"post-logout URIs too large together", `{"redirect_uris":["https://a.example/cb"],"post_logout_redirect_uris":[` + strings.Repeat(`"https://a.example/`+strings.Repeat("p", 900)+`",`, 5) + `"https://a.example/bye"]}`, "invalid_client_metadata"},
		{"long jwks_uri", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://a.example/` + strings.Repeat("j", maxRedirectURILen) + `"}`, "invalid_client_metadata"},
		// ID tokens come in RS256 or signing_alg (ES256 here), always signed.
		{"ID tokens in another algorithm", `{"redirect_uris":["https://a.example/cb"],"id_token_signed_response_alg":"EdDSA"}`, "invalid_client_metadata"},
		{"unsigned ID tokens", `{"redirect_uris":["https://a.example/cb"],"id_token_signed_response_alg":"none"}`, "invalid_client_metadata"},
		{"MAC-signed ID tokens", `{"redirect_uris":["https://a.example/cb"],"id_token_signed_response_alg":"HS256"}`, "invalid_client_metadata"},
		{"ID token algorithm in lower case", `{"redirect_uris":["https://a.example/cb"],"id_token_signed_response_alg":"es256"}`, "invalid_client_metadata"},
		{"ID token algorithm not a string", `{"redirect_uris":["https://a.example/cb"],"id_token_signed_response_alg":256}`, "invalid_client_metadata"},
		// A JWK Set holds public keys only (OpenID Connect Dynamic Client
		// Registration: no private or symmetric key values), of the kinds
		// an assertion is checked with, as a configured client's must.
		{"private key in jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}}`, "invalid_client_metadata"},
		{"symmetric key in jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"oct","k":"c2hhcmVkLXNlY3JldA"}]}}`, "invalid_client_metadata"},
		{"malformed key in jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"EC"}]}}`, "invalid_client_metadata"},
		{"a public key beside a private one", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"kid":"a"},{` + testECKey + `,"kid":"b","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}}`, "invalid_client_metadata"},
		{"jwks key not an object", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":["k"]}}`, "invalid_client_metadata"},
		// A private or symmetric key member is refused whatever the key's
		// kind and however empty: one PublicKey does not read was stored
		// and answered back.
		{"empty private member in jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"d":""}]}}`, "invalid_client_metadata"},
		{"private factors in jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"p":"c2VjcmV0","q":"c2VjcmV0","qi":"c2VjcmV0"}]}}`, "invalid_client_metadata"},
		{"symmetric value on a public key in jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"k":"c2hhcmVkLXNlY3JldA"}]}}`, "invalid_client_metadata"},
	}
	// Each member the README names, alone, and in other cases, which a
	// reader matching names without case (encoding/json) reads as it.
	for _, m := range []string{"p", "q", "dp", "dq", "qi", "oth", "P", "Dp", "QI", "OTH", "K", "\u212a"} {
		tests = append(tests, struct{ name, body, want string }{"private member " + m + " alone in jwks",
			`{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"` + m + `":"c2VjcmV0"}]}}`, "invalid_client_metadata"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.count(bucketClients)
			resp, out := e.register(t, tt.body)
			if resp.StatusCode != http.StatusBadRequest || out["error"] != tt.want {
				t.Errorf("register(%s) = %d %v, want 400 %s", tt.body, resp.StatusCode, out, tt.want)
			}
			if n := e.count(bucketClients); n != before {
				t.Errorf("clients = %d, want %d (nothing stored)", n, before)
			}
		})
	}

	ok := []struct{ name, body, appType string }{
		{"ID tokens in signing_alg", `{"redirect_uris":["https://a.example/cb"],"id_token_signed_response_alg":"ES256"}`, "web"},
		{"ID tokens in RS256", `{"redirect_uris":["https://a.example/cb"],"id_token_signed_response_alg":"RS256"}`, "web"},
		{"custom scheme native", `{"redirect_uris":["com.example.app:/cb"],"token_endpoint_auth_method":"none","application_type":"native"}`, "native"},
		{"custom scheme inferred native", `{"redirect_uris":["com.example.app:/cb"],"token_endpoint_auth_method":"none"}`, "native"},
		{"a query of its own", `{"redirect_uris":["https://a.example/cb?tenant=1&states=2"],"token_endpoint_auth_method":"none"}`, "web"},
		{"https native (claimed URL)", `{"redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"none","application_type":"native"}`, "native"},
		{"private_key_jwt with jwks_uri", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://a.example/jwks"}`, "web"},
		{"private_key_jwt with jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"kid":"a"}]}}`, "web"},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			resp, out := e.register(t, tt.body)
			if resp.StatusCode != http.StatusCreated || out["application_type"] != tt.appType {
				t.Errorf("register(%s) = %d %v, want 201 %s", tt.body, resp.StatusCode, out, tt.appType)
			}
		})
	}
}

// TestRegisterMemberNamesUnambiguous: encoding/json takes the last of
// repeated member names and matches names without case, so metadata
// another reader sees differently (other redirect URIs, say) is refused:
// a name repeated in any object, escaped or not, and a top-level name that
// is a known one in another case, Unicode folding included. Unknown
// members stay ignored in any case, and a name may recur in different
// objects.
func TestRegisterMemberNamesUnambiguous(t *testing.T) {
	e := newBrowserEnv(t, nil)
	refused := []struct{ name, body string }{
		{"repeated", `{"redirect_uris":["https://evil.example/cb"],"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`},
		{"repeated, escaped", `{"redirect_uris":["https://evil.example/cb"],"redirect\u005furis":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`},
		{"repeated in jwks", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"EC"}],"keys":[{"kty":"RSA"}]}}`},
		{"another case", `{"Redirect_URIs":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`},
		{"both cases", `{"redirect_uris":["https://evil.example/cb"],"REDIRECT_URIS":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`},
		{"long s", `{"redirect_uri\u017f":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`},
		{"post-logout URIs in another case", `{"redirect_uris":["https://a.example/cb"],"Post_Logout_Redirect_URIs":["https://evil.example/bye"],"token_endpoint_auth_method":"none"}`},
		{"Kelvin sign", `{"redirect_uris":["https://a.example/cb"],"to\u212aen_endpoint_auth_method":"none"}`},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := e.count(bucketClients)
			resp, out := e.register(t, tt.body)
			if resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata" {
				t.Errorf("register(%s) = %d %v, want 400 invalid_client_metadata", tt.body, resp.StatusCode, out)
			}
			if n := e.count(bucketClients); n != before {
				t.Errorf("clients = %d, want %d (nothing stored)", n, before)
			}
		})
	}
	accepted := []struct{ name, body string }{
		{"unknown member in any case", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none","Logo_URI":"https://a.example/logo.png","logo_uri":"https://a.example/logo.png"}`},
		{"a name in different objects", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"kid":"1"},{` + testECKey + `,"kid":"2"}]}}`},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			if resp, out := e.register(t, tt.body); resp.StatusCode != http.StatusCreated {
				t.Errorf("register(%s) = %d %v, want 201", tt.body, resp.StatusCode, out)
			}
		})
	}
}

func TestRegisterRequestShape(t *testing.T) {
	e := newBrowserEnv(t, nil)
	resp, err := e.srv.Client().Post(e.url(pathRegister, nil), "text/plain", strings.NewReader(`{"redirect_uris":["https://a.example/cb"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("text/plain body: status %d, want 400", resp.StatusCode)
	}
	big := `{"client_name":"` + strings.Repeat("a", maxRegistrationBytes) + `"}`
	resp, err = e.srv.Client().Post(e.url(pathRegister, nil), "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("oversized body: status %d, want 400", resp.StatusCode)
	}
	resp, err = e.srv.Client().Get(e.url(pathRegister, nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		t.Errorf("GET /register: status %d, want an error", resp.StatusCode)
	}
}

func TestRegisterDisabled(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) { c.DisableRegistration = true })
	resp, err := e.srv.Client().Post(e.url(pathRegister, nil), "application/json", strings.NewReader(`{"redirect_uris":["https://a.example/cb"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}
	if n := e.count(bucketClients); n != 0 {
		t.Errorf("clients = %d, want 0", n)
	}
	// A browser's preflight is not told POST is allowed there.
	req, _ := http.NewRequest(http.MethodOptions, e.url(pathRegister, nil), nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	resp, err = e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Allow") != "" {
		t.Errorf("OPTIONS = %d, %v; want 404 without CORS or Allow", resp.StatusCode, resp.Header)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"127.evil.example", false},
		{"127.0.0.1.nip.io", false},
		{"localhost.", true},
		{"LOCALHOST", true},
		{"LocalHost.", true},
		{"app.localhost", true},
		{"App.LOCALHOST.", true},
		{"127.0.0.1.", true},
		{"xlocalhost", false},
		{"localhost..", false},
		{"localhost.evil.example", false},
		{"::1%eth0", false},
		{"0.0.0.0", false},
		{"192.0.2.1", false},
		{"", false},
	} {
		if got := isLoopbackHost(tt.host); got != tt.want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
	// The issuer URL may be http only on a loopback host.
	for _, s := range []string{"http://127.evil.example", "http://127.0.0.1.nip.io/t1"} {
		if _, err := parseIssuerURL(s); err == nil {
			t.Errorf("parseIssuerURL(%q) succeeded, want an error", s)
		}
	}
}

func TestRegisterRateLimitedPerAddress(t *testing.T) {
	e := newBrowserEnv(t, nil)
	const body = `{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`
	registerFrom := func(remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, e.url(pathRegister, nil), strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		e.iss.ServeHTTP(w, r)
		return w
	}
	const a, b = "203.0.113.9:1000", "198.51.100.7:1000"
	for n := range registrationBurst {
		if w := registerFrom(a); w.Code != http.StatusCreated {
			t.Fatalf("registration %d = %d %s, want 201", n+1, w.Code, w.Body)
		}
	}
	w := registerFrom(a)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "180" || !strings.Contains(w.Body.String(), "slow_down") {
		t.Fatalf("registration past the burst = %d Retry-After %q %s, want 429 slow_down, Retry-After 180", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := e.count(bucketClients); n != registrationBurst {
		t.Errorf("clients = %d, want %d (the refused one not stored)", n, registrationBurst)
	}
	if w := registerFrom(b); w.Code != http.StatusCreated {
		t.Errorf("registration from another address = %d, want 201", w.Code)
	}
	e.clock.Advance(3 * time.Minute)
	if w := registerFrom(a); w.Code != http.StatusCreated {
		t.Errorf("registration after the refill = %d, want 201", w.Code)
	}
}

func TestRegisterBodyLimit(t *testing.T) {
	e := newBrowserEnv(t, nil)
	pad := strings.Repeat(" ", 16<<10)
	resp, out := e.register(t, `{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"`+pad+`}`)
	if resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_client_metadata" {
		t.Errorf("register(16 KiB + 1) = %d %v, want 400 invalid_client_metadata", resp.StatusCode, out)
	}
}

// TestRegisteredClientExpiresUnlessUsed: a DCR client that obtains no
// token is deleted after an hour; one that does is kept until 30 days
// after its last token (README, Limits; the durations written out, not
// the constants).
func TestRegisteredClientExpiresUnlessUsed(t *testing.T) {
	e := newBrowserEnv(t, nil)
	const unusedTTL, idleTTL = time.Hour, 30 * 24 * time.Hour
	register := func() string {
		t.Helper()
		resp, out := e.register(t, `{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("register = %d %v", resp.StatusCode, out)
		}
		return out["client_id"].(string)
	}
	known := func(id string) bool {
		_, err := e.iss.dir.lookupClient(t.Context(), id)
		return err == nil
	}
	token := func(id string) {
		t.Helper()
		verifier := oauth2.GenerateVerifier()
		p := authParams(oauth2.S256ChallengeFromVerifier(verifier))
		p.Set("client_id", id)
		p.Set("redirect_uri", "http://127.0.0.1/cb")
		cb, err := e.robot(e.browser(), e.url(pathAuthorize, p), "http://127.0.0.1/cb", bUser, bPassword, "approve")
		if err != nil {
			t.Fatalf("robot: %v", err)
		}
		resp, err := e.srv.Client().PostForm(e.url(pathToken, nil), url.Values{"grant_type": {"authorization_code"}, "client_id": {id},
			"code": {cb.Query().Get("code")}, "code_verifier": {verifier}, "redirect_uri": {"http://127.0.0.1/cb"}})
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
			t.Fatalf("token = %d %s", resp.StatusCode, body)
		}
	}
	unused, used := register(), register()
	e.clock.Advance(unusedTTL - time.Minute)
	if !known(unused) || !known(used) {
		t.Fatalf("clients gone before %v", unusedTTL)
	}
	token(used) // signed in within the hour: kept for a full idle period
	e.clock.Advance(2 * time.Minute)
	if known(unused) {
		t.Errorf("client that obtained no token for %v is still registered, want it deleted", unusedTTL+time.Minute)
	}
	if !known(used) {
		t.Fatalf("client that obtained a token is gone after %v, want it kept", unusedTTL+time.Minute)
	}
	e.clock.Advance(idleTTL - 48*time.Hour)
	token(used)
	e.clock.Advance(72 * time.Hour)
	if !known(used) {
		t.Errorf("client that obtained a token 3 days ago is gone, want it kept")
	}
	// README: kept for 30 days from a token, the expiry moved at most
	// once a day, so 29 to 30 days after the last token.
	token(used) // the last move was 3 days ago: moves it
	e.clock.Advance(24*time.Hour - time.Minute)
	token(used) // a day less a minute after the move: moves nothing
	e.clock.Advance(29 * 24 * time.Hour)
	if !known(used) {
		t.Errorf("client gone 29 days after its last token, want it kept 29 to 30 days")
	}
	e.clock.Advance(2 * time.Minute)
	if known(used) {
		t.Errorf("client still registered 30 days and a minute after the token that last moved its expiry, want it deleted")
	}
	// A token a day and a minute after the last move moves it again.
	daily := register()
	token(daily)
	e.clock.Advance(24*time.Hour + time.Minute)
	token(daily)
	e.clock.Advance(idleTTL - time.Minute)
	if !known(daily) {
		t.Errorf("client gone 30 days less a minute after a token a day after the last move, want the token to have moved it")
	}
}

// registerFrom posts a registration as if from remote.
func registerFrom(iss *Issuer, remote, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, iss.endpoint(pathRegister), strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	iss.ServeHTTP(w, r)
	return w
}

// largestRegistration is a registration body near every size bound: a
// name of 100 bytes (README: client_name at most 100) and redirect URIs
// filling the record.
func largestRegistration() string {
	uri := func(n int) string { return fmt.Sprintf(`"http://127.0.0.1/%d/%s"`, n, strings.Repeat("p", 850)) }
	var uris []string
	for n := range 4 {
		uris = append(uris, uri(n))
	}
	return `{"client_name":"` + strings.Repeat("n", 100) + `","redirect_uris":[` + strings.Join(uris, ",") +
		`],"token_endpoint_auth_method":"none","logo_uri":"https://a.example/` + strings.Repeat("l", 8<<10) + `"}`
}

// TestRegisterGlobalLimit: registrations from many addresses, each within
// its own limit, stop at 200 an hour over all of them (README, Limits:
// 429 slow_down with Retry-After, nothing stored), and resume as the
// bucket refills, one every 18 s.
func TestRegisterGlobalLimit(t *testing.T) {
	e := newBrowserEnv(t, nil)
	const body = `{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`
	const documented = 200 // README; not the constant
	from := func(n int) string { return fmt.Sprintf("198.51.100.%d:1000", n%250) }
	for n := range documented {
		if w := registerFrom(e.iss, from(n), body); w.Code != http.StatusCreated {
			t.Fatalf("registration %d = %d %s, want 201", n+1, w.Code, w.Body)
		}
	}
	w := registerFrom(e.iss, "203.0.113.77:1000", body)
	retry, _ := strconv.Atoi(w.Header().Get("Retry-After"))
	if w.Code != http.StatusTooManyRequests || retry < 1 || retry > int(time.Hour/documented/time.Second)+1 || !strings.Contains(w.Body.String(), "slow_down") {
		t.Fatalf("registration past the global burst = %d Retry-After %q %s, want 429 slow_down with Retry-After", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := e.count(bucketClients); n != documented {
		t.Errorf("clients = %d, want %d (the refused one not stored)", n, documented)
	}
	e.clock.Advance(time.Duration(retry) * time.Second)
	if w := registerFrom(e.iss, "203.0.113.77:1000", body); w.Code != http.StatusCreated {
		t.Errorf("registration after the refill = %d %s, want 201", w.Code, w.Body)
	}
}

// TestRegistrationStorageBounded: what anonymous registrations can add to
// a real bbolt file is bounded whatever the number of addresses: 2000
// registrations of the largest accepted size from 100 addresses store at
// most registrationGlobalBurst small records, these expire unused after
// registrationUnusedTTL, and the next flood reuses their pages instead of
// growing the file.
func TestRegistrationStorageBounded(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "auth.db")
	st, err := bolt.Open(path, bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newTokEnvStore(t, st, clock)
	body := largestRegistration()
	if w := registerFrom(e.iss, "192.0.2.1:1", body); w.Code != http.StatusCreated {
		t.Fatalf("largest registration = %d %s, want 201", w.Code, w.Body)
	}
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	flood := func() (created int) {
		for n := range 2000 {
			w := registerFrom(e.iss, fmt.Sprintf("10.0.0.%d:1000", n%100), body)
			switch w.Code {
			case http.StatusCreated:
				created++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("registration = %d %s", w.Code, w.Body)
			}
		}
		return created
	}
	before := size()
	created := flood()
	first := size()
	var largest int
	err = st.View(t.Context(), func(tx store.Tx) error {
		return tx.List(bucketClients, "", func(_ string, v []byte) error { largest = max(largest, len(v)); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("2000 registrations from 100 addresses: %d stored, largest record %d bytes, file %d -> %d bytes", created, largest, before, first)
	if created > registrationGlobalBurst {
		t.Errorf("stored %d registrations, want at most %d", created, registrationGlobalBurst)
	}
	if largest > maxStoredRegistration+512 { // id, secret hash and times come on top
		t.Errorf("largest stored client = %d bytes, want about %d at most", largest, maxStoredRegistration)
	}
	if grew := first - before; grew > 4<<20 {
		t.Errorf("file grew by %d bytes, want under 4 MiB", grew)
	}

	clock.Advance(registrationUnusedTTL + time.Minute)
	if _, err := st.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := countBucket(t, e, bucketClients); n != 0 {
		t.Errorf("%d unused registrations left after %v, want none", n, registrationUnusedTTL)
	}
	again := flood()
	t.Logf("an hour later, another flood: %d stored, file %d bytes", again, size())
	if again == 0 || again > registrationGlobalBurst {
		t.Errorf("second flood stored %d, want 1..%d", again, registrationGlobalBurst)
	}
	if second := size(); second > first {
		t.Errorf("file grew from %d to %d bytes on the second flood, want the expired records' pages reused", first, second)
	}
}

// TestRegisterOneAddressCannotDrainAll: one address registering as fast
// as its own budget allows, for half an hour, leaves the budget over all
// addresses to the others: a registration from elsewhere still succeeds.
func TestRegisterOneAddressCannotDrainAll(t *testing.T) {
	e := newBrowserEnv(t, nil)
	registerFrom := e.registerPublicFrom
	taken := 0
	for range 30 {
		for registerFrom("203.0.113.9:1000") == http.StatusCreated {
			taken++
		}
		e.clock.Advance(time.Minute)
	}
	if taken >= registrationGlobalBurst/2 {
		t.Errorf("one address registered %d clients in 30 minutes, want fewer than half the global budget (%d)", taken, registrationGlobalBurst/2)
	}
	if code := registerFrom("198.51.100.7:1000"); code != http.StatusCreated {
		t.Errorf("registration from another address after one address's flood = %d, want 201", code)
	}
}

// TestRegisterOneIPv6CustomerCannotDrainAll: the per-address budget is
// keyed, for IPv6, by the /48 a customer may hold (a tunnel broker
// hands one out for free), not the /56 the other limits use: keyed per
// /56, the 256 /56s of one /48 took the budget all addresses share
// within minutes and then each registration as it refilled.
func TestRegisterOneIPv6CustomerCannotDrainAll(t *testing.T) {
	e := newBrowserEnv(t, nil)
	registerFrom := e.registerPublicFrom
	taken := 0
	for n := range 256 {
		for registerFrom(fmt.Sprintf("[2001:db8:7:%x00::1]:1000", n)) == http.StatusCreated {
			taken++
		}
	}
	if taken >= registrationGlobalBurst/2 {
		t.Errorf("the /56s of one /48 registered %d clients, want fewer than half the global budget (%d)", taken, registrationGlobalBurst/2)
	}
	if code := registerFrom("[2001:db8:8::1]:1000"); code != http.StatusCreated {
		t.Errorf("registration from another /48 after one /48's flood = %d, want 201", code)
	}
	if code := registerFrom("198.51.100.7:1000"); code != http.StatusCreated {
		t.Errorf("registration from an IPv4 address after one /48's flood = %d, want 201", code)
	}
}

// registerPublicFrom registers a public client from remote and returns
// the status.
func (e *testEnv) registerPublicFrom(remote string) int {
	const body = `{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`
	r := httptest.NewRequest(http.MethodPost, e.url(pathRegister, nil), strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	return w.Code
}

// TestRegisterJWKSAtMost3KiB: README (Limits, Dynamic Client
// Registration) says a registration's jwks is at most 3 KiB, else use
// jwks_uri, and the record 4 KiB in all, in which the jwks, stored as
// sent and base64-encoded, counts a third more: a set of public keys of
// 2 KiB as sent is registered; one of exactly 3072 bytes passes the
// jwks bound but not the record's; one byte more is refused naming
// jwks_uri. Each refusal is invalid_client_metadata and stores nothing.
// (TestRegisterValidation's "large jwks" is a symmetric key, refused
// whatever its size.)
func TestRegisterJWKSAtMost3KiB(t *testing.T) {
	e := newBrowserEnv(t, nil)
	jwks := func(size int) string {
		head, tail := `{"keys":[{`+testECKey+`}]`, `}`
		return head + strings.Repeat(" ", size-len(head)-len(tail)) + tail
	}
	for _, tt := range []struct {
		size   int
		status int
		names  string // in the refusal's error_description
	}{
		{2 << 10, http.StatusCreated, ""},
		{3 << 10, http.StatusBadRequest, "together must fit in 4096 bytes"},
		{3<<10 + 1, http.StatusBadRequest, "publish the keys at a jwks_uri"},
	} {
		before := e.count(bucketClients)
		resp, out := e.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":`+jwks(tt.size)+`}`)
		if resp.StatusCode != tt.status {
			t.Errorf("registration with a jwks of %d bytes = %d %v, want %d", tt.size, resp.StatusCode, out, tt.status)
			continue
		}
		if tt.status == http.StatusCreated {
			continue
		}
		if desc, _ := out["error_description"].(string); out["error"] != "invalid_client_metadata" || !strings.Contains(desc, tt.names) {
			t.Errorf("registration with a jwks of %d bytes = %v, want invalid_client_metadata, %q", tt.size, out, tt.names)
		}
		if n := e.count(bucketClients); n != before {
			t.Errorf("clients after the refused registration = %d, want %d", n, before)
		}
	}
}
