package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"text/template"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// Operator-configured clients through the Caddyfile: the introspect
// option (a resource server may introspect every token, other clients
// only their own) and a public loopback client, whose consent is asked
// every time (RFC 8252 section 8.6).

const (
	rsID       = "resource-server" // introspect
	rsSecret   = "rs-secret-8c1f0e2d3b4a59687766554433221100"
	peerID     = "peer" // confidential, no introspect
	peerSecret = "peer-secret-00112233445566778899aabbccddeeff"
)

var clientsCaddyfile = template.Must(template.New("Caddyfile").Parse(e2eGlobals + `		storage memory
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
		client {{.RSID}} {
			secret {{.RSHash}}
			grant_types client_credentials
			introspect
		}
		client {{.PeerID}} {
			secret {{.PeerHash}}
			grant_types client_credentials
		}
		resource {{.Issuer}}/mcp {
			scopes {{.Read}}
		}
	}
}

{{.Issuer}} {
	mcp_issuer
}
`))

type clientsEnv struct {
	issuer, resource string
	md               *harness.Metadata
}

func setupClients(t *testing.T) *clientsEnv {
	t.Helper()
	dir, hash := t.TempDir(), harness.HashPassword(t, password)
	e := &clientsEnv{}
	harness.StartFree(t, func(port int) string {
		e.issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		e.resource = e.issuer + "/mcp"
		var b strings.Builder
		err := clientsCaddyfile.Execute(&b, map[string]any{
			"Dir": dir, "Issuer": e.issuer, "User": username, "Hash": hash, "Read": scopeRead,
			"ClientID": clientID, "RedirectURI": redirectURI,
			"RSID": rsID, "RSHash": secretHash(rsSecret), "PeerID": peerID, "PeerHash": secretHash(peerSecret),
		})
		if err != nil {
			panic(err) // the template is a constant
		}
		return b.String()
	})
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	md, err := harness.Discover(context.Background(), e.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", e.issuer, err)
	}
	e.md = md
	return e
}

// post sends form to endpoint with id:secret as client_secret_basic
// (none when id is "") and returns the status and the raw body.
func (e *clientsEnv) post(ctx context.Context, t *testing.T, endpoint, id, secret string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestIntrospectOption(t *testing.T) {
	e := setupClients(t)
	ctx := t.Context()
	cfg := e.md.Config(clientID, redirectURI, scopeRead)
	ar := harness.NewAuthRequest(cfg, e.resource)
	q, err := harness.NewRobot(username, password, redirectURI).Authorize(ctx, ar.URL)
	if err != nil || q.Get("code") == "" {
		t.Fatalf("authorize: %v, error %q; want a code", err, q.Get("error"))
	}
	userTok, err := ar.Exchange(context.WithValue(ctx, oauth2.HTTPClient, http.DefaultClient), cfg, q.Get("code"))
	if err != nil {
		t.Fatalf("Exchange() error = %v", err)
	}
	status, body := e.post(ctx, t, e.md.TokenEndpoint, peerID, peerSecret,
		url.Values{"grant_type": {"client_credentials"}, "resource": {e.resource}})
	var peer struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &peer); err != nil || status != http.StatusOK || peer.AccessToken == "" {
		t.Fatalf("client credentials for %s = %d, %v; want a token", peerID, status, err)
	}

	for _, tt := range []struct {
		name, id, secret, token string
		status                  int
		active                  bool
		code                    string // OAuth error
	}{
		{"resource server, a user's token", rsID, rsSecret, userTok.AccessToken, 200, true, ""},
		{"resource server, another client's token", rsID, rsSecret, peer.AccessToken, 200, true, ""},
		{"confidential client without introspect, a user's token", peerID, peerSecret, userTok.AccessToken, 200, false, ""},
		{"confidential client without introspect, its own token", peerID, peerSecret, peer.AccessToken, 200, true, ""},
		{"resource server, wrong secret", rsID, "wrong", userTok.AccessToken, 401, false, "invalid_client"},
		{"public client, its own token", "", "", userTok.AccessToken, 401, false, "invalid_client"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"token": {tt.token}}
			if tt.id == "" {
				form.Set("client_id", clientID)
			}
			status, body := e.post(ctx, t, e.md.IntrospectionEndpoint, tt.id, tt.secret, form)
			var in struct {
				Active bool   `json:"active"`
				Sub    string `json:"sub"`
				Error  string `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &in); err != nil || status != tt.status || in.Active != tt.active || in.Error != tt.code {
				t.Fatalf("introspect = %d %+v, %v; want %d, active %v, error %q", status, in, err, tt.status, tt.active, tt.code)
			}
			if tt.status == 200 && !tt.active && strings.TrimSpace(body) != `{"active":false}` {
				t.Errorf("introspect = %s, want only active false", body)
			}
			if tt.active && tt.token == userTok.AccessToken && in.Sub != username {
				t.Errorf("introspect sub = %q, want %q", in.Sub, username)
			}
		})
	}
}

// TestPublicLoopbackClientConsentEveryTime: a public client from the
// Caddyfile with a loopback redirect URI gets no code without the user's
// decision: the consent page again on a second authorization (on another
// port), and consent_required for prompt=none.
func TestPublicLoopbackClientConsentEveryTime(t *testing.T) {
	e := setupClients(t)
	ctx := t.Context()
	robot := harness.NewRobot(username, password, redirectURI)
	consents := func() int {
		n := 0
		for _, p := range robot.Pages {
			if p.Form("consent") != nil {
				n++
			}
		}
		return n
	}
	for n, redirect := range []string{redirectURI, "http://127.0.0.1:45678/callback"} {
		robot.RedirectURI = redirect
		ar := harness.NewAuthRequest(e.md.Config(clientID, redirect, scopeRead), e.resource)
		if q, err := robot.Authorize(ctx, ar.URL); err != nil || q.Get("code") == "" {
			t.Fatalf("authorization %d: %v, error %q; want a code", n+1, err, q.Get("error"))
		}
		if got := consents(); got != n+1 {
			t.Fatalf("authorization %d: consent pages seen = %d, want %d", n+1, got, n+1)
		}
	}
	robot.RedirectURI = "http://127.0.0.1:45679/callback"
	ar := harness.NewAuthRequest(e.md.Config(clientID, robot.RedirectURI, scopeRead), e.resource)
	q, err := robot.Authorize(ctx, ar.URL+"&prompt=none")
	if err != nil || q.Get("error") != "consent_required" || q.Has("code") {
		t.Fatalf("prompt=none: error %q, code given %v, %v; want consent_required and no code", q.Get("error"), q.Has("code"), err)
	}
}
