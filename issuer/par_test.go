package issuer

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

func parForm(extra url.Values) url.Values {
	v := url.Values{
		"response_type": {"code"}, "client_id": {tPublic}, "redirect_uri": {tRedirect},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
		"scope": {"read"}, "resource": {tResource}, "state": {"xyz"},
	}
	for k, vs := range extra {
		if len(vs) == 0 {
			delete(v, k)
			continue
		}
		v[k] = vs
	}
	return v
}

func TestPARStoresRequestBoundToClient(t *testing.T) {
	e := newTokEnv(t)
	a := e.post(t, pathPAR, parForm(url.Values{"client_id": nil}), tConf+":"+tSecret)
	if a.status != http.StatusCreated || a.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("PAR = %d %s, want 201 no-store", a.status, a.raw)
	}
	uri := a.str("request_uri")
	if !strings.HasPrefix(uri, "urn:ietf:params:oauth:request_uri:") || len(uri) < 60 || a.body["expires_in"] != float64(60) {
		t.Fatalf("PAR answer = %s, want an urn request_uri and expires_in 60", a.raw)
	}
	var pr parRequest
	err := e.store.View(t.Context(), func(tx store.Tx) error { return getJSON(tx, bucketPAR, tokenKey(uri), &pr) })
	if err != nil {
		t.Fatalf("stored pushed request: %v", err)
	}
	if pr.ClientID != tConf || pr.Params.Get("client_id") != tConf || pr.Params.Get("state") != "xyz" ||
		!pr.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)) {
		t.Errorf("stored request = %+v, want it bound to %s for 60s", pr, tConf)
	}
	// The second push gets another request_uri.
	if b := e.post(t, pathPAR, parForm(url.Values{"client_id": nil}), tConf+":"+tSecret); b.str("request_uri") == uri {
		t.Error("two pushes share a request_uri")
	}

	// Client credentials are not kept with the request.
	a = e.post(t, pathPAR, parForm(url.Values{"client_id": {tPost}, "client_secret": {tSecret2}}), "")
	err = e.store.View(t.Context(), func(tx store.Tx) error { return getJSON(tx, bucketPAR, tokenKey(a.str("request_uri")), &pr) })
	if err != nil || pr.Params.Has("client_secret") {
		t.Errorf("stored params = %v, %v; want no client_secret", pr.Params, err)
	}
}

func TestPARValidation(t *testing.T) {
	e := newTokEnv(t)
	tests := []struct {
		name       string
		extra      url.Values
		basic      string
		wantStatus int
		wantCode   string
	}{
		{name: "public client", extra: nil, wantStatus: 201},
		{name: "request_uri inside", extra: url.Values{"request_uri": {"urn:ietf:params:oauth:request_uri:x"}}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "client_id of another client", extra: url.Values{"client_id": {tNarrow}}, basic: tConf + ":" + tSecret, wantStatus: 401, wantCode: "invalid_client"},
		{name: "unauthenticated confidential client", extra: url.Values{"client_id": {tConf}}, wantStatus: 401, wantCode: "invalid_client"},
		{name: "unknown client", extra: url.Values{"client_id": {"ghost"}}, wantStatus: 401, wantCode: "invalid_client"},
		{name: "unregistered redirect", extra: url.Values{"redirect_uri": {"https://evil.example.com/cb"}}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "loopback redirect on another port", extra: url.Values{"redirect_uri": {"http://127.0.0.1:1234/cb"}}, wantStatus: 201},
		{name: "response_type token", extra: url.Values{"response_type": {"token"}}, wantStatus: 400, wantCode: "unsupported_response_type"},
		{name: "no code challenge", extra: url.Values{"code_challenge": nil}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "plain challenge", extra: url.Values{"code_challenge_method": {"plain"}}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "unknown resource", extra: url.Values{"resource": {"https://nope.example.com/"}}, wantStatus: 400, wantCode: "invalid_target"},
		{name: "request object", extra: url.Values{"request": {"a.b.c"}}, wantStatus: 400},
		{name: "repeated parameter", extra: url.Values{"scope": {"read", "write"}}, wantStatus: 400, wantCode: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := countBucket(t, e, bucketPAR)
			a := e.post(t, pathPAR, parForm(tt.extra), tt.basic)
			if a.status != tt.wantStatus || (tt.wantCode != "" && a.str("error") != tt.wantCode) {
				t.Fatalf("PAR = %d %s, want %d %s", a.status, a.raw, tt.wantStatus, tt.wantCode)
			}
			if after := countBucket(t, e, bucketPAR); tt.wantStatus != 201 && after != before {
				t.Errorf("refused PAR stored a request (%d -> %d)", before, after)
			}
		})
	}
}

func countBucket(t *testing.T, e *tokEnv, bucket string) int {
	t.Helper()
	n := 0
	err := e.store.View(t.Context(), func(tx store.Tx) error {
		return tx.List(bucket, "", func(string, []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
