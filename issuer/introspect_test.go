package issuer

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

func TestIntrospection(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{client: tConf, actor: "", scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tConf, tSecret, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	a := e.introspect(t, tok.AccessToken)
	now := float64(e.clock.Now().Unix())
	want := map[string]any{
		"active": true, "scope": "read offline_access", "client_id": tConf, "sub": tUser, "aud": tResource,
		"iss": e.iss.URL(), "exp": now + 3600, "iat": now, "token_type": "Bearer",
	}
	for k, v := range want {
		if a.body[k] != v {
			t.Errorf("introspect access token %s = %v, want %v", k, a.body[k], v)
		}
	}
	if a.str("jti") == "" || a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("introspection jti, Cache-Control = %q, %q", a.str("jti"), a.header.Get("Cache-Control"))
	}

	r := e.introspect(t, tok.RefreshToken)
	if r.body["active"] != true || r.str("sub") != tUser || r.str("client_id") != tConf {
		t.Errorf("introspect own refresh token = %s, want active", r.raw)
	}
	if o := e.post(t, pathIntrospect, url.Values{"token": {tok.RefreshToken}}, tOnlyCC+":"+tSecret); o.raw != "{\"active\":false}\n" {
		t.Errorf("introspect another client's refresh token = %q, want only active false", o.raw)
	}

	for _, tt := range []struct {
		name, token, basic string
		form               url.Values
		status             int
		code               string
	}{
		{name: "no client authentication", token: tok.AccessToken, status: 401, code: "invalid_client"},
		{name: "public client", token: tok.AccessToken, form: url.Values{"client_id": {tPublic}}, status: 401, code: "invalid_client"},
		{name: "bad secret", token: tok.AccessToken, basic: tConf + ":x", status: 401, code: "invalid_client"},
		{name: "no token", basic: tConf + ":" + tSecret, status: 400, code: "invalid_request"},
		{name: "garbage", token: "not-a-token", basic: tConf + ":" + tSecret, status: 200},
		{name: "tampered", token: tok.AccessToken[:len(tok.AccessToken)-4] + "AAAA", basic: tConf + ":" + tSecret, status: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := url.Values{}
			if tt.token != "" {
				f.Set("token", tt.token)
			}
			for k, v := range tt.form {
				f[k] = v
			}
			a := e.post(t, pathIntrospect, f, tt.basic)
			if a.status != tt.status || a.str("error") != tt.code {
				t.Fatalf("introspect = %d %s, want %d %q", a.status, a.raw, tt.status, tt.code)
			}
			if tt.status == 200 && a.body["active"] != false {
				t.Fatalf("introspect = %s, want active false", a.raw)
			}
		})
	}

	e.clock.Advance(time.Hour)
	if e.active(t, tok.AccessToken) {
		t.Error("expired access token is active")
	}
	req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathIntrospect), nil)
	if a := e.do(t, req); a.status != 405 {
		t.Errorf("GET introspect = %d, want 405", a.status)
	}
}

// TestIntrospectionBySelfRegisteredClient: anyone can register a client,
// so a DCR client may introspect only its own tokens; an operator's
// client may introspect any.
func TestIntrospectionBySelfRegisteredClient(t *testing.T) {
	e := newTokEnv(t)
	const dcrSecret = "dcr-secret"
	e.putClientRecord(t, bucketClients, "dcr", Client{ID: "dcr", SecretHash: hashClientSecret(dcrSecret),
		TokenEndpointAuthMethod: authClientSecretBasic, RedirectURIs: []string{tRedirect}, Source: sourceDCR})
	token := func(client, secret string) string {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{client: client})
		tok, err := e.exchange(t, client, secret, code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	others, own := token(tConf, tSecret), token("dcr", dcrSecret)
	for _, tt := range []struct {
		name, basic, token string
		active             bool
	}{
		{"dcr, another client's token", "dcr:" + dcrSecret, others, false},
		{"dcr, its own token", "dcr:" + dcrSecret, own, true},
		{"operator client, another client's token", tOnlyCC + ":" + tSecret, own, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := e.post(t, pathIntrospect, url.Values{"token": {tt.token}}, tt.basic)
			if a.status != http.StatusOK || a.body["active"] != tt.active {
				t.Errorf("introspect = %d %s, want active %v", a.status, a.raw, tt.active)
			}
			if !tt.active && a.raw != "{\"active\":false}\n" {
				t.Errorf("introspect = %q, want only active false", a.raw)
			}
		})
	}
}
