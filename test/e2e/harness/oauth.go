package harness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/oauth2"
)

// Metadata is the part of the RFC 8414 document the tests use.
type Metadata struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	RegistrationEndpoint  string   `json:"registration_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint"`
	IntrospectionEndpoint string   `json:"introspection_endpoint"`
	CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
}

// Discover reads the issuer's authorization server metadata from the URL a
// client builds from the issuer identifier (RFC 8414 section 3.1).
func Discover(ctx context.Context, issuer string) (*Metadata, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	u.Path = "/.well-known/oauth-authorization-server" + strings.TrimSuffix(u.Path, "/")
	var m Metadata
	if status, err := getJSON(ctx, u.String(), &m); err != nil {
		return nil, err
	} else if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", u, status)
	}
	if m.Issuer != issuer {
		return nil, fmt.Errorf("metadata issuer = %q, want %q", m.Issuer, issuer)
	}
	return &m, nil
}

// Config is an oauth2.Config for a public client of the issuer.
func (m *Metadata) Config(clientID, redirectURI string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    clientID,
		RedirectURL: redirectURI,
		Scopes:      scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL:   m.AuthorizationEndpoint,
			TokenURL:  m.TokenEndpoint,
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

// AuthRequest is one PKCE authorization request.
type AuthRequest struct {
	URL      string
	State    string
	Verifier string
	Resource string
}

// NewAuthRequest builds an S256 PKCE authorization URL for resource.
func NewAuthRequest(cfg *oauth2.Config, resource string) AuthRequest {
	verifier := oauth2.GenerateVerifier()
	state := oauth2.GenerateVerifier()[:22]
	u := cfg.AuthCodeURL(state,
		oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("resource", resource))
	return AuthRequest{URL: u, State: state, Verifier: verifier, Resource: resource}
}

// Exchange redeems code with the request's verifier, for its resource.
func (a AuthRequest) Exchange(ctx context.Context, cfg *oauth2.Config, code string) (*oauth2.Token, error) {
	return cfg.Exchange(ctx, code,
		oauth2.VerifierOption(a.Verifier),
		oauth2.SetAuthURLParam("resource", a.Resource))
}

// TokenResponse is a token endpoint answer, success or error.
type TokenResponse struct {
	Status           int    `json:"-"`
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	RefreshToken     string `json:"refresh_token"`
	Scope            string `json:"scope"`
	ExpiresIn        int    `json:"expires_in"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// PostForm posts form to endpoint and decodes the JSON answer into v; it
// returns the status code.
func PostForm(ctx context.Context, client *http.Client, endpoint string, form url.Values, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return doJSON(client, req, v)
}

// Refresh redeems a refresh token at the token endpoint for resource.
func Refresh(ctx context.Context, m *Metadata, clientID, refreshToken, resource string) (*TokenResponse, error) {
	var tr TokenResponse
	status, err := PostForm(ctx, http.DefaultClient, m.TokenEndpoint, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
		"client_id":     {clientID},
		"resource":      {resource},
	}, &tr)
	tr.Status = status
	return &tr, err
}

// Register registers a client with Dynamic Client Registration (RFC 7591)
// and returns the answer.
func Register(ctx context.Context, m *Metadata, metadata map[string]any) (int, map[string]any, error) {
	body, err := json.Marshal(metadata)
	if err != nil {
		return 0, nil, fmt.Errorf("marshal: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.RegistrationEndpoint, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var out map[string]any
	status, err := doJSON(http.DefaultClient, req, &out)
	return status, out, err
}

func getJSON(ctx context.Context, u string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	return doJSON(http.DefaultClient, req, v)
}

func doJSON(client *http.Client, req *http.Request, v any) (int, error) {
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read %s: %w", req.URL, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: status %d, body %.200q: %w", req.Method, req.URL, resp.StatusCode, body, err)
	}
	return resp.StatusCode, nil
}

// Claims decodes a JWT's payload without verifying it (the gateway
// verifies; tests only read what was issued).
func Claims(jwt string) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("jwt has %d parts, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("jwt payload: %w", err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("jwt payload: %w", err)
	}
	return c, nil
}

// Audience returns the aud claim as a list (it may be a string or an array).
func Audience(claims map[string]any) []string {
	switch a := claims["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// SwapSource is an oauth2.TokenSource whose token a test can replace, as a
// client does after stepping up its authorization.
type SwapSource struct {
	mu  sync.Mutex
	tok *oauth2.Token
}

// NewSwapSource returns a source holding tok.
func NewSwapSource(tok *oauth2.Token) *SwapSource { return &SwapSource{tok: tok} }

// Token implements oauth2.TokenSource.
func (s *SwapSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok, nil
}

// Set replaces the token.
func (s *SwapSource) Set(tok *oauth2.Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tok = tok
}
