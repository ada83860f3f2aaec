package issuer

import (
	"net/http"
	"slices"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// metadata is the RFC 8414 / OpenID Connect Discovery 1.0 document.
type metadata struct {
	Issuer                             string `json:"issuer"`
	AuthorizationEndpoint              string `json:"authorization_endpoint"`
	TokenEndpoint                      string `json:"token_endpoint"`
	RegistrationEndpoint               string `json:"registration_endpoint,omitempty"`
	JWKSURI                            string `json:"jwks_uri"`
	RevocationEndpoint                 string `json:"revocation_endpoint"`
	IntrospectionEndpoint              string `json:"introspection_endpoint"`
	UserinfoEndpoint                   string `json:"userinfo_endpoint"`
	EndSessionEndpoint                 string `json:"end_session_endpoint"` // RP-Initiated Logout 1.0
	PushedAuthorizationRequestEndpoint string `json:"pushed_authorization_request_endpoint"`
	RequirePushedAuthorizationRequests bool   `json:"require_pushed_authorization_requests"`
	// RequestURIParameterSupported is false: OpenID Connect Discovery
	// reads its absence as true, a request_uri the server fetches, which
	// it does not; a pushed request's request_uri is usable whatever this
	// says (RFC 9126 section 5). Request objects (request) are refused
	// too, which the absence of request_parameter_supported already says.
	RequestURIParameterSupported               bool     `json:"request_uri_parameter_supported"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	ResponseModesSupported                     []string `json:"response_modes_supported"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	RevocationEndpointAuthSigningAlgs          []string `json:"revocation_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthSigningAlgs       []string `json:"introspection_endpoint_auth_signing_alg_values_supported"`
	ScopesSupported                            []string `json:"scopes_supported"`
	SubjectTypesSupported                      []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported           []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported                            []string `json:"claims_supported"`
	ClientIDMetadataDocumentSupported          bool     `json:"client_id_metadata_document_supported"`
	AuthorizationResponseIssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
	DPoPSigningAlgValuesSupported              []string `json:"dpop_signing_alg_values_supported"`
	AuthorizationGrantProfilesSupported        []string `json:"authorization_grant_profiles_supported,omitempty"`
}

// metadataDocument describes this issuer. It is built per request because
// resources (and so scopes_supported) can be added at runtime.
func (i *Issuer) metadataDocument() *metadata {
	authMethods := []string{authNone, authClientSecretBasic, authClientSecretPost, authPrivateKeyJWT}
	var grantTypes []string
	for _, g := range tokenGrants(i) {
		grantTypes = append(grantTypes, g.name())
	}
	m := &metadata{
		Issuer:                                     i.URL(),
		AuthorizationEndpoint:                      i.endpoint(pathAuthorize),
		TokenEndpoint:                              i.endpoint(pathToken),
		JWKSURI:                                    i.endpoint(pathJWKS),
		RevocationEndpoint:                         i.endpoint(pathRevoke),
		IntrospectionEndpoint:                      i.endpoint(pathIntrospect),
		UserinfoEndpoint:                           i.endpoint(pathUserinfo),
		EndSessionEndpoint:                         i.endpoint(pathLogout),
		PushedAuthorizationRequestEndpoint:         i.endpoint(pathPAR),
		RequirePushedAuthorizationRequests:         i.cfg.RequirePAR,
		ResponseTypesSupported:                     []string{"code"},
		ResponseModesSupported:                     []string{"query"},
		GrantTypesSupported:                        grantTypes,
		CodeChallengeMethodsSupported:              []string{"S256"},
		TokenEndpointAuthMethodsSupported:          authMethods,
		TokenEndpointAuthSigningAlgValuesSupported: accesstoken.Algorithms(),
		RevocationEndpointAuthMethodsSupported:     authMethods,
		RevocationEndpointAuthSigningAlgs:          accesstoken.Algorithms(),
		// Introspection reveals token contents: only authenticated clients.
		IntrospectionEndpointAuthMethodsSupported: []string{authClientSecretBasic, authClientSecretPost, authPrivateKeyJWT},
		IntrospectionEndpointAuthSigningAlgs:      accesstoken.Algorithms(),
		SubjectTypesSupported:                     []string{subjectPublic},
		IDTokenSigningAlgValuesSupported:          idTokenAlgs(i.cfg.SigningAlg),
		ClaimsSupported: []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash",
			"name", "preferred_username", "email", "act", "principal_type"},
		ClientIDMetadataDocumentSupported:          true,
		AuthorizationResponseIssParameterSupported: true,
		DPoPSigningAlgValuesSupported:              dpop.Algorithms(),
		AuthorizationGrantProfilesSupported:        i.grantProfiles(),
	}
	if !i.cfg.DisableRegistration {
		m.RegistrationEndpoint = i.endpoint(pathRegister)
	}
	scopes := slices.Clone(oidcScopes)
	for _, r := range i.policy.resources() {
		for _, s := range r.Scopes {
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
	}
	m.ScopesSupported = scopes
	return m
}

// handleMetadata serves the metadata document at every well-known URL
// clients probe (the routes are set up in New).
func (i *Issuer) handleMetadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet, http.MethodHead)
		return
	}
	_ = writeJSON(w, http.StatusOK, "application/json", "public, max-age=300", i.metadataDocument())
}
