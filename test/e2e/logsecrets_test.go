package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestLogsHoldNoSecrets runs every flow of the issuer and the gateway,
// the failing ones too, with Caddy's default log at DEBUG level, the
// gateway's audit log and the site's access log (the README's `log`
// block) written to files, and then looks for every credential the
// flows used or were given, and every 16-character piece of one, in
// every line Caddy wrote: tokens (access, refresh, ID, registration
// access), codes, client secrets, passwords (right and wrong), DPoP
// proofs, PAR request URIs, the session cookie and the forms' CSRF
// tokens, as they are and URL-encoded.
func TestLogsHoldNoSecrets(t *testing.T) {
	logs := t.TempDir()
	defaultLog, accessLog := filepath.Join(logs, "caddy.log"), filepath.Join(logs, "access.log")
	e := setupAgents(t, agentOpts{defaultLog: defaultLog, accessLog: readmeAccessLog(t, accessLog)})
	ctx := ctxTimeout(t, agentsTestLimit)
	var secrets []string
	secret := func(s ...string) {
		for _, v := range s {
			if v != "" {
				secrets = append(secrets, v)
			}
		}
	}
	secret(password, svcSecret, agentASecret, agentBSecret)

	// Authorization code with PKCE, login and consent; refresh.
	robot := harness.NewRobot(username, password, redirectURI)
	cfg := e.hostConfig(hostID, scopeTools, "openid", "offline_access")
	ar := e.authRequest(cfg, "")
	code := e.code(ctx, t, robot, ar)
	secret(code, ar.Verifier)
	tok, err := redeem(ctx, cfg, ar, code, "", "")
	if err != nil {
		t.Fatalf("redeem: %v", err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	secret(tok.AccessToken, tok.RefreshToken, idToken)
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	for _, p := range robot.Pages {
		for _, f := range p.Forms {
			for k, vs := range f.Hidden {
				if k != "req" && k != "scope" && k != "resource" && k != "decision" {
					secret(vs...)
				}
			}
		}
	}
	iss, _ := url.Parse(e.issuer)
	for _, c := range robot.Client.Jar.Cookies(iss) {
		secret(c.Value)
	}
	rt, err := harness.Refresh(ctx, e.md, hostID, tok.RefreshToken, e.resource)
	if err != nil || rt.Status != http.StatusOK {
		t.Fatalf("refresh: %d, %v", rt.Status, err)
	}
	secret(rt.AccessToken, rt.RefreshToken)
	// The rotated refresh token again: the family is revoked.
	reused, _ := harness.Refresh(ctx, e.md, hostID, tok.RefreshToken, e.resource)
	if reused.Status == http.StatusOK {
		t.Fatal("reused refresh token accepted")
	}
	// The code again: refused, its grant revoked.
	if _, err := redeem(ctx, cfg, ar, code, "", ""); err == nil {
		t.Fatal("reused code accepted")
	}

	// PAR, and an authorization through its request_uri.
	par := e.pushed(ctx, t, "", scopeTools)
	pu, _ := url.Parse(par.URL)
	// The request_uri's random part (its prefix is common to all).
	ru := pu.Query().Get("request_uri")
	secret(ru[strings.LastIndexByte(ru, ':')+1:])
	secret(e.code(ctx, t, robot, par), par.Verifier)
	// A pushed request sent on by a cross-site POST, which arrives
	// without the session cookie: the 303 to its GET names the
	// request_uri in its Location.
	crossSite := e.pushed(ctx, t, "", scopeTools)
	cu, _ := url.Parse(crossSite.URL)
	cru := cu.Query().Get("request_uri")
	secret(cru[strings.LastIndexByte(cru, ':')+1:])
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noFollow.PostForm(e.md.AuthorizationEndpoint, cu.Query()); err != nil {
		t.Fatalf("cross-site POST to /authorize: %v", err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "request_uri=") {
		t.Fatalf("cross-site POST to /authorize: %d, Location %q; want 303 to the GET with the request_uri", resp.StatusCode, resp.Header.Get("Location"))
	}

	// A failed login, with a password that may be another account's.
	wrong := harness.NewRobot(username, "wrong password of someone", redirectURI)
	if _, err := wrong.Authorize(ctx, e.authRequest(cfg, "").URL); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	secret("wrong password of someone")
	// A password typed into the name field: no account has that name.
	typo := harness.NewRobot("hunter2-typed-as-the-name", password, redirectURI)
	if _, err := typo.Authorize(ctx, e.authRequest(cfg, "").URL); err == nil {
		t.Fatal("login of an unknown user succeeded")
	}
	secret("hunter2-typed-as-the-name")

	// Client credentials, a wrong secret, token exchange with act.
	svcTok := e.ownToken(ctx, t, svcID, svcSecret)
	agentTok := e.ownToken(ctx, t, agentA, agentASecret)
	secret(svcTok, agentTok)
	if a := e.tokenRequest(ctx, t, svcID, "svc-wrong-secret-91c3e0f2a7", url.Values{"grant_type": {"client_credentials"}}); a.Status != http.StatusUnauthorized {
		t.Fatalf("wrong client secret: %v", a)
	}
	secret("svc-wrong-secret-91c3e0f2a7")
	// Credentials swapped: the secret in the client id's place.
	if a := e.tokenRequest(ctx, t, svcSecret, svcID, url.Values{"grant_type": {"client_credentials"}}); a.Status != http.StatusUnauthorized {
		t.Fatalf("swapped client credentials: %v", a)
	}
	userTok := e.userToken(ctx, t, robot, scopeTools)
	secret(userTok.AccessToken)
	x := e.exchange(ctx, t, agentA, agentASecret, userTok.AccessToken, agentTok, nil)
	if x.Status != http.StatusOK {
		t.Fatalf("token exchange with an actor: %v", x)
	}
	secret(x.AccessToken)
	// Introspection and revocation.
	var in map[string]any
	e.introspect(ctx, t, x.AccessToken, &in)
	e.revoke(ctx, t, svcID, svcSecret, svcTok)
	for _, endpoint := range []string{e.md.IntrospectionEndpoint, e.md.RevocationEndpoint} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(url.Values{"token": {x.AccessToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(svcID, "svc-wrong-secret-91c3e0f2a7")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}

	// Dynamic client registration and its registration access token.
	status, reg, err := harness.Register(ctx, e.md, map[string]any{
		"client_name": "Logged Client", "redirect_uris": []string{redirectURI},
		"grant_types": []string{"authorization_code"}, "token_endpoint_auth_method": "client_secret_basic",
	})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("register: %d %v %v", status, reg, err)
	}
	rat, _ := reg["registration_access_token"].(string)
	cs, _ := reg["client_secret"].(string)
	secret(rat, cs)
	if uri, _ := reg["registration_client_uri"].(string); uri != "" && rat != "" {
		for _, bearer := range []string{rat, "wrong-registration-token-5e1f"} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
			req.Header.Set("Authorization", "Bearer "+bearer)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		secret("wrong-registration-token-5e1f")
	}

	// DPoP: a bound token, a call with its proof, a replayed proof.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tp := logProof(t, key, e.md.TokenEndpoint, "")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.md.TokenEndpoint,
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "resource": {e.resource}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", tp)
	req.SetBasicAuth(agentA, agentASecret)
	var dt tokenAnswer
	if status, err := doToken(req, &dt); err != nil || status != http.StatusOK || dt.TokenType != "DPoP" {
		t.Fatalf("DPoP token: %d %v %v", status, dt, err)
	}
	secret(tp, dt.AccessToken)
	gp := logProof(t, key, e.resource, dt.AccessToken)
	secret(gp)
	for range 2 {
		dpopCall(t, e.client, e.resource, agentsProtocol, "tools/call", "echo",
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`, dt.AccessToken, gp)
	}

	// The gateway: a valid token, a forged one, a token in the query.
	if resp, body, _ := e.callRaw(ctx, t, x.AccessToken, toolPlain); resp.StatusCode != http.StatusOK {
		t.Fatalf("call with a valid token: %d %s", resp.StatusCode, body)
	}
	forged := userTok.AccessToken[:strings.LastIndexByte(userTok.AccessToken, '.')+1] + "AAAA" + userTok.AccessToken[strings.LastIndexByte(userTok.AccessToken, '.')+5:]
	secret(forged)
	if resp, _, _ := e.callRaw(ctx, t, forged, toolPlain); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("call with a forged token: %d", resp.StatusCode)
	}
	if resp, err := e.client.Get(e.resource + "?access_token=" + url.QueryEscape(rt.AccessToken)); err == nil {
		resp.Body.Close()
	}

	// Credentials a client puts in the URI of a back-channel request,
	// where RFC 6749 section 2.3.1 forbids them: the issuer reads only
	// the body, but Caddy's access log keeps the URI.
	inURI := []string{
		e.md.TokenEndpoint + "?" + url.Values{"grant_type": {"client_credentials"}, "client_id": {svcID}, "client_secret": {svcSecret}}.Encode(),
		e.md.TokenEndpoint + "?" + url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt.RefreshToken}}.Encode(),
		e.md.TokenEndpoint + "?" + url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {ar.Verifier}}.Encode(),
		e.md.TokenEndpoint + "?" + url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {userTok.AccessToken}, "actor_token": {agentTok}}.Encode(),
		e.md.TokenEndpoint + "?" + url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
			"assertion": {idToken}, "client_assertion": {forged}}.Encode(),
		e.md.IntrospectionEndpoint + "?" + url.Values{"token": {x.AccessToken}}.Encode(),
		e.md.RevocationEndpoint + "?" + url.Values{"token": {x.AccessToken}}.Encode(),
	}
	for _, u := range inURI {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(""))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("POST %s with its parameters in the URI only: 200, want a refusal", u[:strings.IndexByte(u, '?')])
		}
	}

	// Wait for the access log of the last request, then scan.
	time.Sleep(500 * time.Millisecond)
	files := []string{defaultLog, accessLog, e.audit.path}
	pieces := logPieces(secrets)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		if len(b) == 0 {
			t.Errorf("%s is empty: the test reads no log", f)
		}
		for n, line := range bytes.Split(b, []byte("\n")) {
			if p, ok := leaked(line, pieces); ok {
				t.Errorf("%s line %d holds %q (of a credential): %.400s", filepath.Base(f), n+1, p, line)
			}
		}
	}
}

// doToken sends a token request and decodes its answer.
func doToken(req *http.Request, a *tokenAnswer) (int, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(a)
}

// logProof is an ES256 DPoP proof of key for a POST to htu, bound to
// tok when it is not empty.
func logProof(t *testing.T, key *ecdsa.PrivateKey, htu, tok string) string {
	t.Helper()
	raw, _ := key.PublicKey.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	claims := jwt.MapClaims{"jti": rand.Text(), "htm": http.MethodPost, "htu": htu, "iat": time.Now().Unix()}
	if sum := sha256.Sum256([]byte(tok)); tok != "" {
		claims["ath"] = enc(sum[:])
	}
	jwk := map[string]any{"kty": "EC", "crv": "P-256", "x": enc(raw[1:33]), "y": enc(raw[33:])}
	p := &jwt.Token{Method: jwt.SigningMethodES256, Claims: claims, Header: map[string]any{"alg": "ES256", "typ": "dpop+jwt", "jwk": jwk}}
	proof, err := p.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return proof
}

// logPieces are the 16-byte windows of every credential, raw and
// URL-encoded; of a JWT, of its claims and signature only (headers are
// alike across tokens).
func logPieces(secrets []string) map[string]bool {
	const n = 16
	pieces := map[string]bool{}
	for _, s := range secrets {
		if strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ") {
			s = s[strings.IndexByte(s, '.')+1:]
		}
		for _, v := range []string{s, url.QueryEscape(s)} {
			for i := 0; i+n <= len(v); i++ {
				pieces[v[i:i+n]] = true
			}
		}
	}
	return pieces
}

// leaked reports the first piece of a credential in line.
func leaked(line []byte, pieces map[string]bool) (string, bool) {
	const n = 16
	for i := 0; i+n <= len(line); i++ {
		if pieces[string(line[i:i+n])] {
			return string(line[i : i+n]), true
		}
	}
	return "", false
}

// dpopCall posts an MCP message of the protocol revision to resource with
// a DPoP-bound token and its proof (name: the Mcp-Name header, "" for
// none), and returns the answer, its body closed.
func dpopCall(t *testing.T, client *http.Client, resource, revision, method, name, body, token, proof string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, resource, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", revision)
	req.Header.Set("Mcp-Method", method)
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	req.Header.Set("Authorization", "DPoP "+token)
	req.Header.Set("DPoP", proof)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}
