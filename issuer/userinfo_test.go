package issuer

import (
	"net/http"
	"strings"
	"testing"
)

func TestUserinfo(t *testing.T) {
	e := newTokEnv(t)
	token := func(scopes ...string) string {
		code, verifier := e.issueCode(t, codeSpec{scopes: scopes})
		tok, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	get := func(auth string) answer {
		req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return e.do(t, req)
	}
	tests := []struct {
		name, auth string
		status     int
		want       map[string]any
		challenge  string
	}{
		{name: "openid only", auth: "Bearer " + token("openid", "read"), status: 200, want: map[string]any{"sub": tUser, "principal_type": "user"}},
		{name: "profile and email", auth: "Bearer " + token("openid", "profile", "email"), status: 200,
			want: map[string]any{"sub": tUser, "name": "Alice A.", "preferred_username": tUser, "email": "alice@example.com", "principal_type": "user"}},
		{name: "no token", status: 401, challenge: "Bearer"},
		{name: "basic scheme", auth: "Basic eDp5", status: 401, challenge: "Bearer"},
		{name: "bad token", auth: "Bearer abc.def.ghi", status: 401, challenge: `error="invalid_token"`},
		{name: "without openid", auth: "Bearer " + token("read"), status: 403, challenge: `error="insufficient_scope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(tt.auth)
			if a.status != tt.status {
				t.Fatalf("userinfo = %d %s, want %d", a.status, a.raw, tt.status)
			}
			if tt.challenge != "" && !strings.Contains(a.header.Get("WWW-Authenticate"), tt.challenge) {
				t.Errorf("WWW-Authenticate = %q, want it to contain %q", a.header.Get("WWW-Authenticate"), tt.challenge)
			}
			if tt.want != nil && len(a.body) != len(tt.want) {
				t.Errorf("userinfo = %v, want %v", a.body, tt.want)
			}
			for k, v := range tt.want {
				if a.body[k] != v {
					t.Errorf("userinfo %s = %v, want %v", k, a.body[k], v)
				}
			}
		})
	}
}
