package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Registration is open to anyone, so what it may store is bounded:
//
//   - in size: the request body, each field the server keeps (client_name,
//     redirect_uris, jwks) and the stored record as a whole; nothing else
//     of the request is stored;
//   - in rate: registrationBurst per address (for IPv6 per /48,
//     registrantAddr) and registrationGlobalBurst over all addresses, each
//     refilled at that many an hour, so that many addresses together
//     cannot fill the disk either, and one address (or one customer's
//     IPv6 prefix) takes at most a tenth of what all may register. Only
//     valid registrations count. The price of the global
//     bound is that a flood from many addresses can keep others from
//     registering for a while (429 with Retry-After); clients with a
//     metadata document (CIMD) and the operator's clients are unaffected;
//   - in lifetime: a registered client that has obtained no token is
//     deleted after registrationUnusedTTL (long enough for one sign-in);
//     once it obtains one, it is kept until it has obtained none for
//     registrationIdleTTL (every token pushes the expiry out, at most
//     once a day).
//
// Together the live never-used registrations are at most about
// registrationGlobalBurst * (1 + registrationUnusedTTL/time.Hour) records
// of at most maxStoredRegistration bytes each (about 1.7 MB).
const (
	maxRegistrationBytes  = 16 << 10 // request body; unknown members are ignored, not stored
	maxStoredRegistration = 4 << 10  // the stored client record
	maxRedirectURIs       = 20       // also for the operator's clients
	maxRedirectURILen     = 2000     // also for the operator's clients
	maxClientNameLen      = 100
	maxStoredJWKS         = 3 << 10 // a few public keys; more belong behind jwks_uri

	registrationBurst       = 20  // per address, refilled at that many an hour
	registrationGlobalBurst = 200 // over all addresses, refilled at that many an hour
	registrationUnusedTTL   = time.Hour
	registrationIdleTTL     = 30 * 24 * time.Hour
)

// clientMetadata is the RFC 7591 client metadata this issuer reads, from a
// registration request or a Client ID Metadata Document. Unknown members
// are ignored, as RFC 7591 section 2 requires.
type clientMetadata struct {
	ClientID                string          `json:"client_id"`
	ClientSecret            *string         `json:"client_secret"`
	ClientSecretExpiresAt   *int64          `json:"client_secret_expires_at"`
	RedirectURIs            []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string        `json:"post_logout_redirect_uris"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	GrantTypes              []string        `json:"grant_types"`
	ResponseTypes           []string        `json:"response_types"`
	ClientName              string          `json:"client_name"`
	Scope                   string          `json:"scope"`
	JWKSURI                 string          `json:"jwks_uri"`
	JWKS                    json.RawMessage `json:"jwks"`
	ApplicationType         string          `json:"application_type"`
	DPoPBoundAccessTokens   strictBool      `json:"dpop_bound_access_tokens"`
	RequirePAR              strictBool      `json:"require_pushed_authorization_requests"`
	IDTokenAlg              string          `json:"id_token_signed_response_alg"`
	SubjectType             string          `json:"subject_type"`
	DefaultMaxAge           *uint32         `json:"default_max_age"`
	IDTokenEncAlg           string          `json:"id_token_encrypted_response_alg"`
	IDTokenEnc              string          `json:"id_token_encrypted_response_enc"`
	UserinfoEncAlg          string          `json:"userinfo_encrypted_response_alg"`
	UserinfoEnc             string          `json:"userinfo_encrypted_response_enc"`
	UserinfoAlg             string          `json:"userinfo_signed_response_alg"`
	AuthSigningAlg          string          `json:"token_endpoint_auth_signing_alg"`
}

// hasJWKS reports whether m has a jwks member other than null: a null
// member is one left out, as encoding/json reads null for jwks_uri and
// the other members (clients whose serializers write every member,
// Jackson's by default, send "jwks":null for none), and as
// validateClientKeys reads it for private_key_jwt.
func (m *clientMetadata) hasJWKS() bool { return len(m.JWKS) > 0 && string(m.JWKS) != "null" }

// strictBool is a boolean member that must be true or false: for null,
// encoding/json would leave a bool false without an error.
type strictBool bool

func (b *strictBool) UnmarshalJSON(raw []byte) error {
	switch string(raw) {
	case "true":
		*b = true
	case "false":
		*b = false
	default:
		return errors.New("not a boolean")
	}
	return nil
}

// registrationResponse is the RFC 7591 section 3.2.1 answer.
type registrationResponse struct {
	ClientID                string          `json:"client_id"`
	ClientSecret            string          `json:"client_secret,omitempty"`
	ClientIDIssuedAt        int64           `json:"client_id_issued_at"`
	ClientSecretExpiresAt   *int64          `json:"client_secret_expires_at,omitempty"`
	ClientName              string          `json:"client_name,omitempty"`
	RedirectURIs            []string        `json:"redirect_uris,omitempty"`
	PostLogoutRedirectURIs  []string        `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes              []string        `json:"grant_types"`
	ResponseTypes           []string        `json:"response_types"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	ApplicationType         string          `json:"application_type"`
	JWKSURI                 string          `json:"jwks_uri,omitempty"`
	JWKS                    json.RawMessage `json:"jwks,omitempty"`
	Scope                   string          `json:"scope,omitempty"`
	DPoPBoundAccessTokens   bool            `json:"dpop_bound_access_tokens,omitempty"`
	RequirePAR              bool            `json:"require_pushed_authorization_requests,omitempty"`
	IDTokenAlg              string          `json:"id_token_signed_response_alg"`
	SubjectType             string          `json:"subject_type"`
	DefaultMaxAge           *uint32         `json:"default_max_age,omitempty"`
	AuthSigningAlg          string          `json:"token_endpoint_auth_signing_alg,omitempty"`
}

// handleRegister is Dynamic Client Registration (RFC 7591). Registered
// clients get no scopes or resources of their own: what they may obtain is
// decided by the user's groups and consent, so a client cannot widen its
// reach by registering with a broad scope (the requested scope is echoed
// and otherwise ignored, and must not cap later requests: step-up asks
// for more). For the same reason they may not register client_credentials:
// anyone can register, and without a user nothing would bound the token.
func (i *Issuer) handleRegister(w http.ResponseWriter, r *http.Request) {
	if i.cfg.DisableRegistration {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e := ErrInvalidRequest.WithDescription("registration requires POST")
		e.Status = http.StatusMethodNotAllowed
		writeError(w, e)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, ErrInvalidClientMetadata.WithDescription("body must be application/json"))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRegistrationBytes+1))
	if bodyTooLarge(err) {
		// A handler in front bounds the body tighter (Caddy's
		// request_body max_size, a chunked body over it): too large, as
		// Caddy answers it when Content-Length says so and readForm
		// answers it at the other endpoints.
		writeError(w, (&Error{Code: "invalid_request", Status: http.StatusRequestEntityTooLarge}).WithDescription("request body too large"))
		return
	}
	if err != nil {
		writeError(w, ErrInvalidRequest.WithDescription("unreadable body"))
		return
	}
	if len(body) > maxRegistrationBytes {
		writeError(w, ErrInvalidClientMetadata.WithDescription("registration request too large"))
		return
	}
	var m clientMetadata
	switch err := decodeJSONObject(body, &m); {
	case errors.Is(err, errMemberNames):
		writeError(w, ErrInvalidClientMetadata.WithDescription("member names must be unique and spelled as RFC 7591 spells them"))
		return
	case err != nil:
		writeError(w, ErrInvalidClientMetadata.WithDescription("body is not a valid client metadata object"))
		return
	}
	c, err := validateRegistration(&m, idTokenAlgs(i.cfg.SigningAlg))
	if err != nil {
		writeError(w, err)
		return
	}
	for _, lim := range []struct {
		l        *rateLimiter
		key, who string
	}{
		{i.registrations, registrantAddr(r), "from this address"},
		{i.registrationsAll, "", "on this server"},
	} {
		switch d, err := lim.l.take(r.Context(), lim.key); {
		case err != nil:
			writeError(w, err)
			return
		case d > 0:
			writeError(w, rateLimited(ErrSlowDown, d, "too many registrations "+lim.who+"; retry later"))
			return
		}
	}
	now := i.now()
	c.Source = sourceDCR
	c.CreatedAt = now
	c.ExpiresAt = now.Add(registrationUnusedTTL)
	var secret string
	if !c.Public() && c.TokenEndpointAuthMethod != "private_key_jwt" {
		if secret, c.SecretHash, err = i.newSecret(); err != nil {
			writeError(w, err)
			return
		}
	}
	if err := i.createClient(r.Context(), c); err != nil {
		i.log.Error("registration: store client", zap.Error(err))
		// A store that cannot write now is 503, as at the token endpoint.
		writeError(w, err)
		return
	}

	resp := registrationResponse{
		ClientID:                c.ID,
		ClientSecret:            secret,
		ClientIDIssuedAt:        now.Unix(),
		ClientName:              c.Name,
		RedirectURIs:            c.RedirectURIs,
		PostLogoutRedirectURIs:  c.PostLogoutRedirectURIs,
		GrantTypes:              c.GrantTypes,
		ResponseTypes:           responseTypesFor(c.GrantTypes),
		TokenEndpointAuthMethod: c.TokenEndpointAuthMethod,
		ApplicationType:         c.ApplicationType,
		JWKSURI:                 c.JWKSURI,
		JWKS:                    json.RawMessage(c.JWKS),
		Scope:                   m.Scope,
		DPoPBoundAccessTokens:   c.DPoPBoundAccessTokens,
		RequirePAR:              c.RequirePushedAuthorizationRequests,
		IDTokenAlg:              c.idTokenAlg(),
		SubjectType:             subjectPublic,
		DefaultMaxAge:           c.DefaultMaxAge,
		AuthSigningAlg:          c.TokenEndpointAuthSigningAlg,
	}
	if secret != "" {
		var never int64
		resp.ClientSecretExpiresAt = &never
	}
	writeNoStoreJSON(w, http.StatusCreated, resp)
}

// createClient stores a newly registered client under a fresh random id.
// The write is durable before it returns (store.Update contract).
func (i *Issuer) createClient(ctx context.Context, c *Client) error {
	for range 3 {
		id, err := i.randomToken(16)
		if err != nil {
			return err
		}
		c.ID = id
		err = i.store.Update(ctx, func(tx store.Tx) error { return clientsIn(tx).create(c) })
		if !errors.Is(err, store.ErrAlreadyExists) {
			return err
		}
	}
	return errors.New("create client: no free client id")
}

// keepRegistration pushes out the expiry of a registered client that just
// obtained a token to registrationIdleTTL, at most once a day (the first
// token always does: a never-used client expires within
// registrationUnusedTTL). Failing to only costs an earlier expiry, so it
// is logged, not returned.
func (i *Issuer) keepRegistration(ctx context.Context, c *Client) {
	now := i.now()
	if c.Source != sourceDCR || (!c.ExpiresAt.IsZero() && c.ExpiresAt.Sub(now) > registrationIdleTTL-24*time.Hour) {
		return
	}
	err := i.store.Update(ctx, func(tx store.Tx) error {
		clients := clientsIn(tx)
		cur, err := clients.get(c.ID)
		if err != nil || cur.Source != sourceDCR {
			return err
		}
		cur.ExpiresAt = now.Add(registrationIdleTTL)
		return clients.put(cur)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		i.log.Warn("registration: extend client expiry", zap.Error(err))
	}
}

func responseTypesFor(grantTypes []string) []string {
	if slices.Contains(grantTypes, "authorization_code") {
		return []string{"code"}
	}
	return []string{}
}

// errMemberNames refuses metadata whose member names are ambiguous
// (checkMemberNames).
var errMemberNames = errors.New("a member name is repeated, or differs from a known one only in case")

// decodeJSONObject decodes a single JSON object and nothing after it into
// the struct v points to. Member names must be unambiguous
// (checkMemberNames).
func decodeJSONObject(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not a JSON object")
	}
	if err := checkMemberNames(b, v); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after JSON object")
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data after JSON object")
	}
	return nil
}

// checkMemberNames refuses a JSON object that repeats a member name in any
// of its objects, or whose own member names include one that equals a
// json name of v's struct only when case is ignored. encoding/json takes
// the last of repeated names and matches names without case (Unicode
// folding: Redirect_URIs, or redirect_uriſ, is read as redirect_uris),
// so another reader of the same document, an auditor's or the client's
// own, could see other redirect URIs than this server does.
func checkMemberNames(b []byte, v any) error {
	known := jsonNames(reflect.TypeOf(v).Elem(), nil)
	d := jsontext.NewDecoder(bytes.NewReader(b)) // refuses duplicate names
	for {
		tok, err := d.ReadToken()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, jsontext.ErrDuplicateName) {
			return errMemberNames
		}
		if err != nil {
			return err
		}
		if d.StackDepth() != 1 || tok.Kind() != '"' {
			continue
		}
		// Names and values alternate in an object: a string read at depth
		// 1 with an even number of tokens before it in the object is a
		// name.
		if _, n := d.StackIndex(1); n%2 == 1 {
			name := tok.String()
			for _, k := range known {
				if name != k && strings.EqualFold(name, k) {
					return errMemberNames
				}
			}
		}
	}
}

// jsonNames appends the member names encoding/json reads into struct t:
// its fields' json names (an untagged exported field's Go name), and
// those of an untagged embedded struct, whose fields it promotes.
func jsonNames(t reflect.Type, names []string) []string {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct:
			names = jsonNames(f.Type, names)
		case name != "":
			names = append(names, name)
		case f.IsExported():
			names = append(names, f.Name)
		}
	}
	return names
}

// validateRegistration checks DCR metadata and returns the client to store
// (without id or secret); idAlgs are the ID-token algorithms offered.
func validateRegistration(m *clientMetadata, idAlgs []string) (*Client, error) {
	if m.ClientID != "" || m.ClientSecret != nil {
		return nil, ErrInvalidClientMetadata.WithDescription("client_id and client_secret are assigned by the server")
	}
	grants := m.GrantTypes
	if len(grants) == 0 {
		grants = []string{"authorization_code"}
	}
	for _, g := range grants {
		switch g {
		case "authorization_code", "refresh_token":
		case "client_credentials":
			return nil, ErrInvalidClientMetadata.WithDescription("client_credentials is not available to dynamically registered clients; ask the operator for a client")
		default:
			return nil, ErrInvalidClientMetadata.WithDescription(fmt.Sprintf("unsupported grant_type %q", g))
		}
	}
	responses := m.ResponseTypes
	if len(responses) == 0 && slices.Contains(grants, "authorization_code") {
		responses = []string{"code"}
	}
	for _, rt := range responses {
		if rt != "code" {
			return nil, ErrInvalidClientMetadata.WithDescription(fmt.Sprintf("unsupported response_type %q", rt))
		}
	}
	// RFC 7591 section 2.1: grant_types and response_types must agree.
	if slices.Contains(grants, "authorization_code") != slices.Contains(responses, "code") {
		return nil, ErrInvalidClientMetadata.WithDescription("grant_type authorization_code and response_type code go together")
	}

	method := m.TokenEndpointAuthMethod
	if method == "" {
		method = "client_secret_basic" // RFC 7591 section 2 default
	}
	switch method {
	case "none", "client_secret_basic", "client_secret_post":
		if m.hasJWKS() || m.JWKSURI != "" {
			return nil, ErrInvalidClientMetadata.WithDescription("jwks and jwks_uri are only for private_key_jwt")
		}
	case "private_key_jwt":
	default:
		return nil, ErrInvalidClientMetadata.WithDescription(fmt.Sprintf("unsupported token_endpoint_auth_method %q", method))
	}
	jwks, jwksURI, err := validateClientKeys(method, m.JWKS, m.JWKSURI)
	if err != nil {
		return nil, err
	}

	name, err := validateClientName(m.ClientName)
	if err != nil {
		return nil, err
	}
	c, err := m.client(Client{Name: name, GrantTypes: grants, TokenEndpointAuthMethod: method, JWKS: jwks, JWKSURI: jwksURI},
		slices.Contains(grants, "authorization_code"), idAlgs)
	if err != nil {
		return nil, err
	}
	if err := checkStoredSize(c); err != nil {
		return nil, err
	}
	return c, nil
}

// client completes c, the client m registers with its name, grant types,
// method and keys checked: it checks m's redirect URIs (at least one
// when redirect), post-logout redirect URIs and ID-token algorithm
// (one of idAlgs), and reads the members taken as they are. Dynamic
// Client Registration and Client ID Metadata Documents both read m
// here, so that a member is added once for both.
func (m *clientMetadata) client(c Client, redirect bool, idAlgs []string) (*Client, error) {
	uris, appType, err := validateRedirectURIs(m.RedirectURIs, m.ApplicationType, redirect)
	if err != nil {
		return nil, err
	}
	logoutURIs, err := validatePostLogoutRedirectURIs(m.PostLogoutRedirectURIs, appType)
	if err != nil {
		return nil, err
	}
	if err := validateIDTokenAlg(m.IDTokenAlg, idAlgs); err != nil {
		return nil, err
	}
	if err := validateOIDCMetadata(m); err != nil {
		return nil, err
	}
	c.RedirectURIs, c.PostLogoutRedirectURIs, c.ApplicationType = uris, logoutURIs, appType
	c.DPoPBoundAccessTokens = bool(m.DPoPBoundAccessTokens)
	c.RequirePushedAuthorizationRequests = bool(m.RequirePAR)
	c.IDTokenAlg = m.IDTokenAlg
	c.DefaultMaxAge = m.DefaultMaxAge
	if c.TokenEndpointAuthMethod == authPrivateKeyJWT {
		// Of another method it applies to nothing: neither kept nor
		// stated (RFC 7591 section 3.2.1).
		c.TokenEndpointAuthSigningAlg = m.AuthSigningAlg
	}
	if err := validateAuthSigningAlg(&c); err != nil {
		return nil, ErrInvalidClientMetadata.WithDescription(err.Error())
	}
	return &c, nil
}

// validateAuthSigningAlg checks a client's token_endpoint_auth_signing_alg:
// one of the algorithms offered for assertions, only of a
// private_key_jwt client, and one that a key of its inline jwks signs
// with (else its assertions could never be checked; the keys of a
// jwks_uri are not known here).
func validateAuthSigningAlg(c *Client) error {
	switch alg := c.TokenEndpointAuthSigningAlg; {
	case alg == "":
	case c.TokenEndpointAuthMethod != authPrivateKeyJWT:
		return errors.New("token_endpoint_auth_signing_alg is only for private_key_jwt")
	case !accesstoken.Supported(alg):
		return errors.New("token_endpoint_auth_signing_alg must be one of " + strings.Join(accesstoken.Algorithms(), ", "))
	case len(c.JWKS) > 0 && !signsWith(c.JWKS, alg):
		return fmt.Errorf("token_endpoint_auth_signing_alg is %s, but no key of its jwks signs %s: add such a key, or pin the algorithm of its keys", alg, alg)
	}
	return nil
}

// signsWith reports whether a key of the JWK Set b can sign alg, as
// keyFor would take it for an assertion. A set that does not decode is
// checkJWKS's to refuse.
func signsWith(b []byte, alg string) bool {
	keys, err := decodeJWKS(b)
	if err != nil {
		return true
	}
	return slices.ContainsFunc(keys, func(j accesstoken.JWK) bool {
		_, ok := verifyingKey(j, alg)
		return ok
	})
}

// validateIDTokenAlg checks a client's id_token_signed_response_alg
// against the algorithms offered (none: ID tokens are always signed).
func validateIDTokenAlg(alg string, offered []string) error {
	if alg == "" || slices.Contains(offered, alg) {
		return nil
	}
	return ErrInvalidClientMetadata.WithDescription("id_token_signed_response_alg must be one of " + strings.Join(offered, ", "))
}

// subjectPublic is the one subject identifier type (OpenID Connect Core
// 8): sub is the username, the same for every client.
const subjectPublic = "public"

// validateOIDCMetadata refuses the OpenID Connect registration metadata
// (Dynamic Client Registration 1.0 section 2) that asks for what this
// server does not do, rather than register the client without it: a
// client asking for pairwise identifiers must not get public ones, which
// would let RPs correlate their users behind its back, nor one asking
// for encrypted ID tokens or userinfo answers get them in the clear, nor
// one asking for signed userinfo answers get them as plain JSON.
func validateOIDCMetadata(m *clientMetadata) error {
	if m.SubjectType != "" && m.SubjectType != subjectPublic {
		return ErrInvalidClientMetadata.WithDescription("subject_type must be public, the only type this server supports (subject_types_supported)")
	}
	if m.IDTokenEncAlg != "" || m.IDTokenEnc != "" || m.UserinfoEncAlg != "" || m.UserinfoEnc != "" {
		return ErrInvalidClientMetadata.WithDescription("this server encrypts neither ID tokens nor userinfo answers")
	}
	if m.UserinfoAlg != "" {
		// A JWT answer, signed (or, for none, not): userinfo answers
		// here are plain JSON.
		return ErrInvalidClientMetadata.WithDescription("this server does not sign userinfo answers (userinfo_signed_response_alg)")
	}
	return nil
}

// checkStoredSize bounds the record of a self-registered client (DCR, or
// a cached metadata document): the fields' own bounds allow more than one
// record may hold together.
func checkStoredSize(c *Client) error {
	if b, err := json.Marshal(clientRecord(c)); err != nil || len(b) > maxStoredRegistration {
		return ErrInvalidClientMetadata.WithDescription(fmt.Sprintf("client metadata too large: client_name, redirect_uris, post_logout_redirect_uris and jwks together must fit in %d bytes", maxStoredRegistration))
	}
	return nil
}

// validateClientKeys checks the key material of a private_key_jwt client:
// exactly one of jwks (a JWK Set of public keys, checkJWKS) and jwks_uri
// (https).
func validateClientKeys(method string, jwks json.RawMessage, jwksURI string) ([]byte, string, error) {
	if method != "private_key_jwt" {
		return nil, "", nil
	}
	hasSet := len(jwks) > 0 && string(jwks) != "null"
	if hasSet == (jwksURI != "") {
		return nil, "", ErrInvalidClientMetadata.WithDescription("private_key_jwt requires exactly one of jwks and jwks_uri")
	}
	if jwksURI != "" {
		u, err := url.Parse(jwksURI)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.Fragment != "" || u.User != nil || len(jwksURI) > maxRedirectURILen {
			return nil, "", ErrInvalidClientMetadata.WithDescription("jwks_uri must be an https URL")
		}
		return nil, jwksURI, nil
	}
	if len(jwks) > maxStoredJWKS {
		return nil, "", ErrInvalidClientMetadata.WithDescription(fmt.Sprintf("jwks larger than %d bytes; publish the keys at a jwks_uri", maxStoredJWKS))
	}
	// Checked as a configured client's: a private or symmetric key here
	// would be stored and answered back, and authenticates no one.
	if err := checkJWKS(jwks); err != nil {
		return nil, "", ErrInvalidClientMetadata.WithDescription(err.Error())
	}
	return bytes.Clone(jwks), "", nil
}

// maxMarksInARow is how many combining marks (Mn, Me) one character of a
// self-registered client's name may carry. Each stacks on the one before
// it, outside the line: a letter under fifty of them, which fit in
// client_name's 100 bytes, paints a column across the consent page's
// heading and the lines around the name (the client id, the note that
// the name is the client's own claim, the redirect host), and enclosing
// marks drawn side by side run past the page's edge, where no line break
// can come (a character and its marks are not broken apart). Written
// languages put no more than four on one letter (Tibetan stacks, Hebrew
// points with cantillation, Vietnamese decomposed).
const maxMarksInARow = 4

// validateClientName refuses names that could mislead on the consent page
// (control and bidirectional-override characters, stacked combining
// marks) or bloat it.
func validateClientName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if len(name) > maxClientNameLen {
		return "", ErrInvalidClientMetadata.WithDescription("client_name too long")
	}
	marks := 0
	for _, r := range name {
		if misleading(r) {
			return "", ErrInvalidClientMetadata.WithDescription("client_name contains control characters")
		}
		switch {
		case unicode.Is(unicode.Cf, r):
			// A zero-width joiner, non-joiner or space between marks
			// shows nothing: the marks after it stack on the same
			// character (Chromium draws "N" and four marks, then a
			// ZWNJ, twelve times over as one column).
		case !unicode.In(r, unicode.Mn, unicode.Me):
			marks = 0
		case marks >= maxMarksInARow:
			return "", ErrInvalidClientMetadata.WithDescription(fmt.Sprintf("client_name stacks more than %d combining marks on one character", maxMarksInARow))
		default:
			marks++
		}
	}
	return name, nil
}

// redirectKind classifies a redirect URI.
type redirectKind int

const (
	redirectWeb      redirectKind = iota // https on a non-loopback host
	redirectLoopback                     // http(s) on localhost or a loopback IP literal
	redirectCustom                       // private-use scheme (RFC 8252 section 7.1)
)

// classifyRedirectURI checks one redirect URI against the rules every
// client must follow (absolute, no fragment, no userinfo, no wildcard,
// https or loopback http or a reverse-DNS private-use scheme) and says
// which kind it is.
func classifyRedirectURI(s string) (redirectKind, error) { return classifyRedirect(s, false) }

// configuredRedirectURI checks a configured client's redirect URI: a
// registered client's rules, but for a private-use scheme, which need not
// be a reverse domain name: the operator vouches for the client, and
// apps such as Cursor (cursor://) register none (review s16b F4).
func configuredRedirectURI(s string) error {
	_, err := classifyRedirect(s, true)
	return err
}

// browserSchemes are the schemes no redirect URI may have (url.Parse
// gives them in lower case).
var browserSchemes = map[string]bool{
	"javascript": true, "vbscript": true, "data": true, "blob": true,
	"file": true, "filesystem": true, "about": true, "view-source": true,
}

// classifyRedirect is classifyRedirectURI; anyScheme lets a private-use
// scheme be other than a reverse domain name.
func classifyRedirect(s string, anyScheme bool) (redirectKind, error) {
	bad := func(why string) (redirectKind, error) {
		// At most 40 bytes of it, as of every value a client chose: a
		// client metadata document's reason is shown on /authorize's
		// error page, where anyone's link may lead.
		return 0, ErrInvalidRedirectURI.WithDescription(fmt.Sprintf("redirect URI %q: %s", truncate(s, 40), why))
	}
	if len(s) > maxRedirectURILen {
		return bad("too long")
	}
	if strings.ContainsAny(s, "#*") {
		return bad("fragments and wildcards are not allowed")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return bad("contains whitespace or control characters")
		}
	}
	// No URI holds a backslash, and a browser reads one as "/" in an
	// http(s) URL: the browser would be sent to another path than the
	// one registered (..\ a dot segment to it).
	if strings.Contains(s, "\\") {
		return bad("contains a backslash")
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() {
		return bad("not an absolute URI")
	}
	if (u.Scheme == "http" || u.Scheme == "https") && !accesstoken.ValidPort(u.Port()) {
		// A browser refuses the URL, or reads :05555 as :5555.
		return bad("the port must be 1 to 65535, without leading zeros")
	}
	if u.User != nil {
		return bad("userinfo is not allowed")
	}
	switch name, err := responseParamIn(u.RawQuery); {
	case err != nil:
		return bad("the query is not application/x-www-form-urlencoded")
	case name != "":
		return bad(fmt.Sprintf("the query carries %s, which the authorization response adds (a parameter must not be sent twice)", name))
	}
	if !plainHost(u.Hostname()) {
		return bad("the host must be an ASCII DNS name (xn-- form) or a dotted IP address")
	}
	if cspSource(s) == "" {
		// The sign-in and consent pages' form-action must name where
		// they send the browser, and a CSP source names only letters,
		// digits, '-' and '.' in a host: Chrome would block the redirect.
		return bad("the host has a character a Content-Security-Policy cannot name ('_', say), so no browser would be let through to it")
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return bad("missing host")
		}
		if isLoopbackHost(u.Hostname()) {
			return redirectLoopback, nil
		}
		return redirectWeb, nil
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return bad("http is allowed only for loopback hosts")
		}
		return redirectLoopback, nil
	}
	// RFC 8252 section 7.1: private-use schemes are reverse domain names.
	if !anyScheme && !strings.Contains(u.Scheme, ".") {
		return bad("custom schemes must be reverse-DNS names such as com.example.app")
	}
	// Schemes a browser runs or reads itself are no application's: a
	// configured client (anyScheme) must not name one either, or the
	// browser would be sent to a script or a document of the redirect's
	// making (a post_logout_redirect_uri of javascript: or data:).
	if browserSchemes[u.Scheme] {
		return bad("the scheme " + u.Scheme + ": is the browser's own, not an application's")
	}
	return redirectCustom, nil
}

// authorizationResponseParams are the parameters an authorization
// response adds to the redirect URI's query (RFC 6749 sections 4.1.2 and
// 4.1.2.1, RFC 9207).
var authorizationResponseParams = []string{"code", "state", "iss", "error", "error_description", "error_uri"}

// responseParamIn names an authorization response parameter that a
// redirect URI's own query (rawQuery) already carries, "" for none, and
// fails for a query that is not form-encoded (a ';' separator, a bad
// escape), which readers split differently. The response keeps that
// query (RFC 6749 section 3.1.2), so such a parameter would be sent
// twice (section 3.1 forbids it), and a client taking the first value
// would read the registered state, code or iss, not this server's. Names
// match in any case: some readers (ASP.NET Core's query, which binds the
// first value) take STATE for state.
func responseParamIn(rawQuery string) (string, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", err
	}
	for _, p := range authorizationResponseParams {
		for name := range q {
			if strings.EqualFold(name, p) {
				return p, nil
			}
		}
	}
	return "", nil
}

// plainHost reports whether a browser reads host as Go does: ASCII (a
// browser maps Unicode hosts such as fullwidth "ｌｏｃａｌｈｏｓｔ" to other
// names) and, if its last label is numeric (which makes it an IPv4
// address to a WHATWG URL parser, as 0x7f.1 or 2130706433 is 127.0.0.1),
// a dotted-decimal IP literal.
func plainHost(host string) bool {
	for _, r := range host {
		if r >= utf8.RuneSelf {
			return false
		}
	}
	h := strings.TrimSuffix(host, ".")
	last := h[strings.LastIndexByte(h, '.')+1:]
	numeric := last != "" && strings.Trim(last, "0123456789") == ""
	if hex, ok := strings.CutPrefix(strings.ToLower(last), "0x"); ok && strings.Trim(hex, "0123456789abcdef") == "" {
		numeric = true
	}
	if !numeric || strings.Contains(h, ":") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Is4()
}

// validateRedirectURIs applies the per-URI rules and the application_type
// rules of OpenID Connect Dynamic Client Registration (which the MCP
// 2026-07-28 revision points at): web clients use https on non-loopback
// hosts; native clients use loopback, private-use schemes, or https.
// Clients of earlier MCP revisions often omit application_type; for them
// the type is inferred (native if any URI is loopback or a custom scheme)
// rather than defaulting to web and refusing localhost callbacks.
func validateRedirectURIs(uris []string, appType string, required bool) ([]string, string, error) {
	if required && len(uris) == 0 {
		return nil, "", ErrInvalidRedirectURI.WithDescription("redirect_uris is required for the authorization_code grant")
	}
	if err := checkRedirectURICount(uris); err != nil {
		return nil, "", err
	}
	if appType != "" && appType != "web" && appType != "native" {
		return nil, "", ErrInvalidClientMetadata.WithDescription(fmt.Sprintf("unsupported application_type %q", truncate(appType, 40)))
	}
	kinds := make([]redirectKind, len(uris))
	native := false
	for n, s := range uris {
		k, err := classifyRedirectURI(s)
		if err != nil {
			return nil, "", err
		}
		kinds[n] = k
		native = native || k != redirectWeb
	}
	if appType == "" {
		appType = "web"
		if native {
			appType = "native"
		}
	}
	if appType == "web" {
		for n, k := range kinds {
			if k != redirectWeb {
				return nil, "", ErrInvalidRedirectURI.WithDescription(fmt.Sprintf("redirect URI %q: web clients must use https on a non-loopback host (register as application_type native)", truncate(uris[n], 40)))
			}
		}
	}
	return slices.Clone(uris), appType, nil
}

// checkRedirectURICount bounds a client's redirect URIs, or its
// post-logout redirect URIs: every client's, the operator's too.
func checkRedirectURICount(uris []string) *Error {
	if len(uris) > maxRedirectURIs {
		return ErrInvalidRedirectURI.WithDescription(fmt.Sprintf("too many redirect_uris (%d, at most %d)", len(uris), maxRedirectURIs))
	}
	return nil
}

// validatePostLogoutRedirectURIs checks post_logout_redirect_uris
// (OpenID Connect RP-Initiated Logout 1.0 section 3.1) by the rules of
// redirect_uris for the client's application type: the browser is sent
// there as it is to a redirect URI.
func validatePostLogoutRedirectURIs(uris []string, appType string) ([]string, error) {
	out, _, err := validateRedirectURIs(uris, appType, false)
	var e *Error
	if errors.As(err, &e) {
		return nil, ErrInvalidClientMetadata.WithDescription("post_logout_redirect_uris: " + e.Description)
	}
	return out, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
