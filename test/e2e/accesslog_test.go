package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// An access log (Caddy's `log` in a site) records response headers, the
// Location of an authorization response with its code among them. The
// README's filter keeps the code out; TestAccessLogCodeRedacted runs
// the README's `log` block through a whole authorization, then keeps the
// ID token of a sign-out (an id_token_hint in a URL) out the same way.

var accessLogCaddyfile = template.Must(template.New("Caddyfile").Parse(`{
	admin off
	persist_config off
	storage file_system {{.Dir}}/caddy
	mcp_auth {
		issuer {{.Issuer}}
		storage memory
		user {{.User}} {{.Hash}} {
			groups readers
		}
		group readers {
			scopes * {{.Read}}
		}
		client {{.ClientID}} {
			public
			redirect_uri {{.RedirectURI}}
		}
		resource {{.Issuer}}/mcp {
			scopes {{.Read}}
		}
	}
}

{{.Issuer}} {
	{{.LogBlock}}
	mcp_issuer
}
`))

// readmeAccessLog is the `log` block of the README's access-log example,
// writing to path.
func readmeAccessLog(t *testing.T, path string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block, err := harness.AccessLogBlock(string(readme), path)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	return block
}

func TestAccessLogCodeRedacted(t *testing.T) {
	dir, hash := t.TempDir(), harness.HashPassword(t, password)
	logPath := filepath.Join(dir, "access.log")
	logBlock := readmeAccessLog(t, logPath)
	var issuer string
	harness.StartFree(t, func(port int) string {
		issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		var b strings.Builder
		err := accessLogCaddyfile.Execute(&b, map[string]any{
			"Dir": dir, "Issuer": issuer, "User": username, "Hash": hash, "Read": scopeRead,
			"ClientID": clientID, "RedirectURI": redirectURI, "LogBlock": logBlock,
		})
		if err != nil {
			panic(err) // the template is a constant
		}
		return b.String()
	})
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	ctx := ctxTimeout(t, 30*time.Second)
	md, err := harness.Discover(ctx, issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", issuer, err)
	}
	cfg := md.Config(clientID, redirectURI, "openid", scopeRead)
	ar := harness.NewAuthRequest(cfg, issuer+"/mcp")
	q, err := harness.NewRobot(username, password, redirectURI).Authorize(ctx, ar.URL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	code := q.Get("code")
	if code == "" {
		t.Fatalf("authorization response %q: no code", q.Encode())
	}
	// The code still works: the filter changes the log, not the answer.
	tok, err := ar.Exchange(ctx, cfg, code)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	// Signing out puts the ID token in the URL of a GET; the Location
	// that sends a cross-site POST on as the GET leaves it out.
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		t.Fatal("no ID token")
	}
	logout := url.Values{"client_id": {clientID}, "id_token_hint": {idToken}}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, send := range []func() (*http.Response, error){
		func() (*http.Response, error) { return noFollow.Get(issuer + "/logout?" + logout.Encode()) },
		func() (*http.Response, error) { return noFollow.PostForm(issuer+"/logout", logout) },
	} {
		resp, err := send()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); strings.Contains(loc, "id_token_hint") {
			t.Errorf("%s /logout: Location %q, want none with the ID token", resp.Request.Method, loc)
		}
	}

	// Caddy writes an access log line when the request is done; wait for
	// the redirect's.
	var log []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		log, _ = os.ReadFile(logPath)
		if bytes.Contains(log, []byte("code=REDACTED")) && bytes.Count(log, []byte("id_token_hint=REDACTED")) >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if bytes.Contains(log, []byte(code)) {
		t.Errorf("the access log holds the authorization code")
	}
	// The signature alone would do: the header and claims of two tokens
	// may be alike.
	if sig := idToken[strings.LastIndexByte(idToken, '.')+1:]; bytes.Contains(log, []byte(sig)) {
		t.Errorf("the access log holds the ID token of a sign-out")
	}
	if n := bytes.Count(log, []byte("id_token_hint=REDACTED")); n != 1 {
		t.Errorf("%d redacted id_token_hint in the access log, want 1 (the GET's URI): the filter did not apply, or the POST's Location has it", n)
	}
	if !bytes.Contains(log, []byte("code=REDACTED")) {
		t.Errorf("no redirect with a redacted code in the access log (%d bytes): the filter did not apply", len(log))
	}
}

// TestAccessLogHTTPSRedirect: Caddy's automatic HTTPS answers a request
// to the site's http port with a redirect whose Location is the same URI
// on https, and logs it with the site's `log` (the redirect server gets
// the site's logging); a client that follows it (as Go's does) names
// the http URI in the Referer of its next request. So every parameter the
// README's filter drops from a request's URI must be dropped from the
// Location and the Referer too: a client that sends its secret or a token
// in the query, to the http address, would otherwise have it logged there.
func TestAccessLogHTTPSRedirect(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	logBlock := readmeAccessLog(t, logPath)
	httpPort := harness.FreePort(t)
	var httpsPort int
	httpsPort = harness.StartFree(t, func(port int) string {
		return fmt.Sprintf(`{
	admin off
	persist_config off
	http_port %d
	https_port %d
	local_certs
	skip_install_trust
	storage file_system %s/caddy
	mcp_auth {
		issuer https://localhost:%d
		storage memory
	}
}

localhost:%d {
	%s
	mcp_issuer
}
`, httpPort, port, dir, port, port, logBlock)
	})
	q := url.Values{}
	var secrets []string
	for _, name := range []string{"code", "state", "id_token_hint", "request_uri", "access_token", "refresh_token", "token",
		"client_secret", "client_assertion", "code_verifier", "subject_token", "actor_token", "assertion"} {
		v := "in-the-query-" + name + "-" + strings.Repeat("7", 8)
		q.Set(name, v)
		secrets = append(secrets, v)
	}
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		// Caddy names no port in the Location (it expects 443).
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			req.URL.Host = fmt.Sprintf("localhost:%d", httpsPort)
			req.Host = ""
			return nil
		},
	}
	// The certificate is obtained once Caddy runs.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get(fmt.Sprintf("https://localhost:%d/healthz", httpsPort))
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate: %v", err)
		}
	}
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		req, _ := http.NewRequest(method, fmt.Sprintf("http://localhost:%d/token?%s", httpPort, q.Encode()), nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Request.URL.Scheme != "https" || resp.Request.Header.Get("Referer") == "" {
			t.Fatalf("%s: not redirected to https with a Referer: %s %q", method, resp.Request.URL, resp.Request.Header.Get("Referer"))
		}
	}
	var log []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		log, _ = os.ReadFile(logPath)
		if bytes.Count(log, []byte(`"Referer"`)) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !bytes.Contains(log, []byte(`"status":308`)) || !bytes.Contains(log, []byte(`"Referer"`)) {
		t.Fatalf("no redirect and no redirected request in the access log: %s", log)
	}
	for _, s := range secrets {
		for n, line := range bytes.Split(log, []byte("\n")) {
			if bytes.Contains(line, []byte(s)) {
				t.Errorf("access.log line %d holds %s: %.1500s", n+1, s, line)
				break
			}
		}
	}
}

// TestErrorLogHoldsNoDPoPProof: when a handler fails (the gateway's MCP
// server refuses the connection: 502), Caddy's error log writes the
// request as it came, its headers among them, to the default log at
// ERROR level, where the site's `log` filter does not reach. A
// DPoP-bound call's proof would be there in clear; the README's
// `log default` block keeps it (and the URI's credentials) out.
func TestErrorLogHoldsNoDPoPProof(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := harness.CaddyfileBlocks(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	var defaultLog string
	for _, b := range blocks {
		if _, rest, ok := strings.Cut(b.Text, "\tlog default {"); ok && !b.Syntax {
			defaultLog = harness.BraceBlock("log default {" + rest)
			break
		}
	}
	if defaultLog == "" {
		t.Fatal("README.md: no `log default` block")
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "caddy.log")
	defaultLog = strings.Replace(defaultLog, "log default {", "log default {\n\t\toutput file "+logPath, 1)
	const secret = "dpop-client-secret-4d1c"
	var issuer string
	harness.StartFree(t, func(port int) string {
		issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s/caddy
	%s
	mcp_auth {
		issuer %s
		storage memory
		client svc {
			secret %s
			grant_types client_credentials
		}
	}
}

%s {
	bind 127.0.0.1
	mcp_issuer
	@mcp path /mcp /.well-known/oauth-protected-resource/mcp
	handle @mcp {
		mcp_gateway {
			resource %s/mcp
			scope mcp:tools
		}
		reverse_proxy 127.0.0.1:%d
	}
}
`, dir, defaultLog, issuer, secretHash(secret), issuer, issuer, harness.FreePort(t))
	})
	resource := issuer + "/mcp"
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req, _ := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(url.Values{
		"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"mcp:tools"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", logProof(t, key, issuer+"/token", ""))
	req.SetBasicAuth("svc", secret)
	var tok tokenAnswer
	if status, err := doToken(req, &tok); err != nil || status != http.StatusOK || tok.TokenType != "DPoP" {
		t.Fatalf("DPoP token: %d %v %v", status, tok, err)
	}
	proof := logProof(t, key, resource, tok.AccessToken)
	// The page the call came from names a code in its URI (a browser
	// client's callback), which the request's Referer carries.
	const refererCode = "referer-code-7c2e90d4b1"
	resp := dpopCall(t, &http.Client{Transport: withReferer(issuer + "/cb?code=" + refererCode + "&state=s")}, resource, "2026-07-28", "tools/list", "",
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`,
		tok.AccessToken, proof)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("call with the MCP server down: %d, want 502", resp.StatusCode)
	}
	var log []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		log, _ = os.ReadFile(logPath)
		if bytes.Contains(log, []byte(`"status":502`)) || time.Now().After(deadline) {
			break
		}
	}
	if !bytes.Contains(log, []byte(`"status":502`)) {
		t.Fatalf("no error line in the log: %s", log)
	}
	if !bytes.Contains(log, []byte(`"Referer"`)) {
		t.Fatalf("no Referer in the error line: %s", log)
	}
	pieces := logPieces([]string{proof, tok.AccessToken, refererCode})
	for n, line := range bytes.Split(log, []byte("\n")) {
		if p, ok := leaked(line, pieces); ok {
			t.Errorf("caddy.log line %d holds %q (of the DPoP proof or the Referer's code): %.800s", n+1, p, line)
		}
	}
}

// withReferer is a transport that sends each request with a Referer.
type withReferer string

func (ref withReferer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Referer", string(ref))
	return http.DefaultTransport.RoundTrip(r)
}
