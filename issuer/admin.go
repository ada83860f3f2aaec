package issuer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// AdminHandler returns the management API, a REST API over the management
// methods (PutUser, PutClient, ...). Its routes, relative to where it is
// mounted:
//
//	GET    /users                    list users
//	POST   /users                    add a user (NewUserRequest)
//	GET    /users/{name}             show a user
//	DELETE /users/{name}             remove a user
//	PUT    /users/{name}/password    set a user's password (PasswordRequest)
//	GET    /clients                  list clients
//	POST   /clients                  add a client (NewClientRequest)
//	GET    /clients/{id}             show a client
//	PUT    /clients/{id}             replace a client's registration (NewClientRequest; UpdateClient)
//	DELETE /clients/{id}             remove a client
//	POST   /clients/{id}/secret      rotate a client's secret
//	GET    /agents                   list agents
//	POST   /agents                   add an agent (NewAgentRequest)
//	GET    /agents/{id}              show an agent
//	DELETE /agents/{id}              remove an agent
//	POST   /agents/{id}/secret       rotate an agent's secret
//	POST   /agents/{id}/disable      disable an agent (revokes its grants)
//	POST   /agents/{id}/enable       enable an agent
//	POST   /keys/rotate              rotate the signing key, or withdraw keys (KeyRotateRequest)
//	GET    /backup                   a consistent copy of the store
//	GET    /tools?resource=R[&tool=T] pinned tool definitions (ToolPin)
//	POST   /tools/approve            pin a tool's pending definition (ToolPinRequest)
//	POST   /tools/reject             refuse a tool's pending definition (ToolPinRequest)
//	POST   /tools/forget             remove a tool's pin (ToolPinRequest)
//
// Bodies are JSON, errors {"error": "..."}. Password and secret hashes are
// never returned; a generated client or agent secret is returned once, by
// the request that made it. The handler does no access control: mount it
// only where the operator alone can reach it (Caddy's admin endpoint).
func (i *Issuer) AdminHandler() http.Handler {
	return i.newAdmin(0)
}

// admin serves AdminHandler.
type admin struct {
	iss               *Issuer
	mux               *http.ServeMux
	hashCost          int // bcrypt cost of passwords sent in the clear; 0: bcrypt.DefaultCost
	minPasswordLength int
}

func (i *Issuer) newAdmin(hashCost int) *admin {
	a := &admin{
		iss:               i,
		mux:               http.NewServeMux(),
		hashCost:          hashCost,
		minPasswordLength: cmp.Or(max(i.cfg.MinPasswordLength, 0), DefaultMinPasswordLength),
	}
	for pattern, h := range map[string]func(http.ResponseWriter, *http.Request) error{
		"GET /users":                 listRoute(i.Users, userView),
		"POST /users":                a.addUser,
		"GET /users/{name}":          a.showUser,
		"DELETE /users/{name}":       actRoute(i.DeleteUser, "name"),
		"PUT /users/{name}/password": a.setPassword,
		"POST /users/{name}/disable": actRoute(i.DisableUser, "name"),
		"POST /users/{name}/enable":  actRoute(i.EnableUser, "name"),
		"GET /clients":               listRoute(i.Clients, clientView),
		"POST /clients":              a.addClient,
		"GET /clients/{id}":          a.showClient,
		"PUT /clients/{id}":          a.updateClient,
		"DELETE /clients/{id}":       actRoute(i.DeleteClient, "id"),
		"POST /clients/{id}/secret":  a.rotateClientSecret,
		"GET /agents":                listRoute(i.Agents, agentView),
		"POST /agents":               a.addAgent,
		"GET /agents/{id}":           a.showAgent,
		"DELETE /agents/{id}":        actRoute(i.DeleteAgent, "id"),
		"POST /agents/{id}/secret":   a.rotateAgentSecret,
		"POST /agents/{id}/disable":  actRoute(i.DisableAgent, "id"),
		"POST /agents/{id}/enable":   actRoute(i.EnableAgent, "id"),
		"POST /keys/rotate":          a.rotateKey,
		"GET /backup":                a.backup,
		"GET /tools":                 a.listTools,
		"POST /tools/approve":        a.pinRoute((*ToolPins).Approve),
		"POST /tools/reject":         a.pinRoute((*ToolPins).Reject),
		"POST /tools/forget":         a.pinRoute((*ToolPins).Forget),
	} {
		a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				a.writeError(w, err)
			} else if r.Method != http.MethodGet {
				// The admin endpoint does not know who called.
				i.sec.Info("admin change", zap.String("action", pattern), zap.String("target", cmp.Or(r.PathValue("name"), r.PathValue("id"))))
			}
		})
	}
	return a
}

// listRoute answers the views of all entries of a kind.
func listRoute[T, V any](all func(context.Context) ([]T, error), view func(T) V) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		entries, err := all(r.Context())
		if err != nil {
			return err
		}
		out := make([]V, 0, len(entries))
		for _, e := range entries {
			out = append(out, view(e))
		}
		return writeAdminJSON(w, http.StatusOK, out)
	}
}

// actRoute applies fn to the entry the path names (path value param) and
// answers 204.
func actRoute(fn func(context.Context, string) error, param string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := fn(r.Context(), r.PathValue(param)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// adminMethods are the methods the routes use, in the order an Allow
// header lists them.
var adminMethods = [...]string{http.MethodDelete, http.MethodGet, http.MethodPost, http.MethodPut}

func (a *admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// An unclean path would get the mux's redirect, which knows nothing of
	// where the handler is mounted. Judged on the path as sent: an id
	// holding "/.." or "//" (a CIMD-style client id, an agent id) comes
	// escaped as %2F and must stay addressable.
	if ep := r.URL.EscapedPath(); path.Clean(ep) != ep {
		a.writeError(w, adminErr(http.StatusNotFound, fmt.Errorf("no such resource: %s", r.URL.Path)))
		return
	}
	// HEAD would match the GET routes; nothing here needs it.
	if _, pattern := a.mux.Handler(r); pattern != "" && r.Method != http.MethodHead {
		if r.Method != http.MethodGet {
			// Every change, with a body or none (a key rotation), is JSON
			// or untyped: not a form a page could post; and no longer
			// than maxAdminBody, on the routes that read none too.
			b, err := readAdminBody(r)
			if err != nil {
				a.writeError(w, err)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		a.mux.ServeHTTP(w, r)
		return
	}
	// The mux answers unknown paths and methods in plain text; this API
	// answers in JSON.
	var allowed []string
	for _, m := range adminMethods {
		probe := *r
		probe.Method = m
		if _, pattern := a.mux.Handler(&probe); pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		a.writeError(w, adminErr(http.StatusNotFound, fmt.Errorf("no such resource: %s", r.URL.Path)))
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	a.writeError(w, adminErr(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method)))
}

// UserView is a user as the admin API shows it (no password hash).
type UserView struct {
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
	Name     string   `json:"name,omitempty"`
	Email    string   `json:"email,omitempty"`
	Disabled bool     `json:"disabled,omitempty"`
	Source   string   `json:"source,omitempty"`
	// An identity provider's user: the provider, the issuer and tenant
	// that provisioned it (a re-pointed provider's kept users show the
	// old ones), its subject, the mapped provider groups of the last
	// sign-in and when it was.
	IdentityProvider string    `json:"identity_provider,omitempty"`
	IdPIssuer        string    `json:"idp_issuer,omitempty"`
	IdPTenant        string    `json:"idp_tenant,omitempty"`
	IdPSubject       string    `json:"idp_subject,omitempty"`
	IdPGroups        []string  `json:"idp_groups,omitempty"`
	LastLogin        time.Time `json:"last_login,omitzero"`
}

func userView(u User) UserView {
	return UserView{
		Username: u.Username, Groups: u.Groups, Name: u.Name, Email: u.Email, Disabled: u.Disabled, Source: u.Source,
		IdentityProvider: u.IdentityProvider, IdPIssuer: u.IdPIssuer, IdPTenant: u.IdPTenant, IdPSubject: u.IdPSubject, IdPGroups: u.IdPGroups, LastLogin: u.LastLogin,
	}
}

// NewUserRequest is the body of POST /users. Exactly one of Password and
// PasswordHash is given; the CLI sends a hash, so the password never
// leaves the operator's machine.
type NewUserRequest struct {
	Username     string   `json:"username"`
	Password     string   `json:"password,omitempty"`
	PasswordHash string   `json:"password_hash,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	Name         string   `json:"name,omitempty"`
	Email        string   `json:"email,omitempty"`
}

// PasswordRequest is the body of PUT /users/{name}/password.
type PasswordRequest struct {
	Password     string `json:"password,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
}

// findEntry returns the entry of a kind named name.
func findEntry[T any](ctx context.Context, all func(context.Context) ([]T, error), kind, name string, nameOf func(T) string) (T, error) {
	var zero T
	entries, err := all(ctx)
	if err != nil {
		return zero, err
	}
	for _, e := range entries {
		if nameOf(e) == name {
			return e, nil
		}
	}
	return zero, entryErr(kind, name, store.ErrNotFound)
}

func (a *admin) findUser(r *http.Request, name string) (User, error) {
	return findEntry(r.Context(), a.iss.Users, "user", name, func(u User) string { return u.Username })
}

func (a *admin) showUser(w http.ResponseWriter, r *http.Request) error {
	u, err := a.findUser(r, r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeAdminJSON(w, http.StatusOK, userView(u))
}

func (a *admin) addUser(w http.ResponseWriter, r *http.Request) error {
	var nu NewUserRequest
	if err := readAdminJSON(r, &nu); err != nil {
		return err
	}
	if nu.Username == "" {
		return adminErr(http.StatusBadRequest, errors.New("username is required"))
	}
	if _, err := a.findUser(r, nu.Username); err == nil {
		return entryErr("user", nu.Username, store.ErrAlreadyExists)
	}
	hash, err := a.passwordHash(nu.Password, nu.PasswordHash)
	if err != nil {
		return err
	}
	u := User{Username: nu.Username, PasswordHash: hash, Groups: nu.Groups, Name: nu.Name, Email: nu.Email}
	if err := a.iss.PutUser(r.Context(), u); err != nil {
		return err
	}
	u.Source = sourceAdmin
	r.SetPathValue("name", u.Username) // the target the change is logged with
	return writeAdminJSON(w, http.StatusCreated, userView(u))
}

func (a *admin) setPassword(w http.ResponseWriter, r *http.Request) error {
	var np PasswordRequest
	if err := readAdminJSON(r, &np); err != nil {
		return err
	}
	hash, err := a.passwordHash(np.Password, np.PasswordHash)
	if err != nil {
		return err
	}
	if err := a.iss.SetPassword(r.Context(), r.PathValue("name"), hash); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// passwordHash takes exactly one of a password (checked for length and
// hashed here) and a bcrypt hash (checked for form).
func (a *admin) passwordHash(password, hash string) (string, error) {
	switch {
	case password != "" && hash != "":
		return "", adminErr(http.StatusBadRequest, errors.New("give password or password_hash, not both"))
	case password != "":
		if err := CheckPassword(password, a.minPasswordLength); err != nil {
			return "", adminErr(http.StatusBadRequest, err)
		}
		h, err := HashPassword(password, a.hashCost)
		if err != nil {
			return "", adminErr(http.StatusBadRequest, err)
		}
		return h, nil
	case hash != "":
		if err := CheckPasswordHash(hash); err != nil {
			return "", adminErr(http.StatusBadRequest, fmt.Errorf("password_hash: %w", err))
		}
		return hash, nil
	}
	return "", adminErr(http.StatusBadRequest, errors.New("password or password_hash is required"))
}

// ClientView is a client as the admin API shows it (no secret hash).
type ClientView struct {
	ID                     string   `json:"client_id"`
	Name                   string   `json:"client_name,omitempty"`
	RedirectURIs           []string `json:"redirect_uris,omitempty"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes             []string `json:"grant_types,omitempty"`
	AuthMethod             string   `json:"token_endpoint_auth_method,omitempty"`
	JWKSURI                string   `json:"jwks_uri,omitempty"`
	HasJWKS                bool     `json:"has_jwks,omitempty"`
	ApplicationType        string   `json:"application_type,omitempty"`
	Resources              []string `json:"resources,omitempty"`
	Scopes                 []string `json:"scopes,omitempty"`
	Introspect             bool     `json:"introspect,omitempty"`
	DPoPBound              bool     `json:"dpop_bound_access_tokens,omitempty"`
	RequirePAR             bool     `json:"require_pushed_authorization_requests,omitempty"`
	IDTokenAlg             string   `json:"id_token_signed_response_alg,omitempty"`
	// DefaultMaxAge is what a self-registered client asked for
	// (OpenID Connect Dynamic Client Registration 1.0 section 2);
	// shown, not set, here.
	DefaultMaxAge *uint32 `json:"default_max_age,omitempty"`
	// AuthSigningAlg is the algorithm a self-registered private_key_jwt
	// client's assertions must use, when it registered one; shown, not
	// set, here.
	AuthSigningAlg string    `json:"token_endpoint_auth_signing_alg,omitempty"`
	Source         string    `json:"source,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	// ClientSecret is set only in the answer that generated it.
	ClientSecret string `json:"client_secret,omitempty"`
}

func clientView(c Client) ClientView {
	return ClientView{
		ID: c.ID, Name: c.Name, RedirectURIs: c.RedirectURIs, PostLogoutRedirectURIs: c.PostLogoutRedirectURIs, GrantTypes: c.GrantTypes,
		AuthMethod: c.TokenEndpointAuthMethod, JWKSURI: c.JWKSURI, HasJWKS: len(c.JWKS) > 0,
		ApplicationType: c.ApplicationType, Resources: c.Resources, Scopes: c.Scopes,
		Introspect: c.Introspect, DPoPBound: c.DPoPBoundAccessTokens, RequirePAR: c.RequirePushedAuthorizationRequests,
		IDTokenAlg: c.IDTokenAlg, DefaultMaxAge: c.DefaultMaxAge, AuthSigningAlg: c.TokenEndpointAuthSigningAlg,
		Source: c.Source, CreatedAt: c.CreatedAt,
	}
}

// NewClientRequest is the body of POST /clients. A confidential client
// (auth method client_secret_basic or client_secret_post, the default when
// not public and without keys) gets a generated secret, returned once.
type NewClientRequest struct {
	ID           string   `json:"client_id"`
	Name         string   `json:"client_name,omitempty"`
	Public       bool     `json:"public,omitempty"`
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// PostLogoutRedirectURIs are where RP-Initiated Logout may send the
	// browser back to (post_logout_redirect_uris).
	PostLogoutRedirectURIs []string        `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes             []string        `json:"grant_types,omitempty"`
	AuthMethod             string          `json:"token_endpoint_auth_method,omitempty"`
	JWKSURI                string          `json:"jwks_uri,omitempty"`
	JWKS                   json.RawMessage `json:"jwks,omitempty"`
	Resources              []string        `json:"resources,omitempty"`
	Scopes                 []string        `json:"scopes,omitempty"`
	// Introspect marks a resource server, which may introspect every
	// token.
	Introspect bool `json:"introspect,omitempty"`
	// DPoPBound: the client always uses DPoP; its token requests without
	// a proof are refused (RFC 9449 section 5.2).
	DPoPBound bool `json:"dpop_bound_access_tokens,omitempty"`
	// RequirePAR: the client's authorization requests must be pushed
	// first (RFC 9126 section 6).
	RequirePAR bool `json:"require_pushed_authorization_requests,omitempty"`
	// IDTokenAlg is the algorithm of its ID tokens: RS256 (the default)
	// or the issuer's signing_alg.
	IDTokenAlg string `json:"id_token_signed_response_alg,omitempty"`
	// AuthSigningAlg is the one algorithm its private_key_jwt assertions
	// may be signed with; default: any asymmetric one offered.
	AuthSigningAlg string `json:"token_endpoint_auth_signing_alg,omitempty"`
}

func (a *admin) findClient(r *http.Request, id string) (Client, error) {
	return findEntry(r.Context(), a.iss.Clients, "client", id, func(c Client) string { return c.ID })
}

func (a *admin) showClient(w http.ResponseWriter, r *http.Request) error {
	c, err := a.findClient(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if c.Source == sourceAdmin { // the only ones PUT changes
		// The answer and its ETag from one read: from two, an update
		// between them would show the old registration under the new
		// tag, and a PUT of it would undo the update unseen (review
		// s14-fresh3 M2).
		var stored *Client
		if err := a.iss.store.View(r.Context(), func(tx store.Tx) error {
			var err error
			stored, err = clientsIn(tx).get(c.ID)
			return err
		}); err != nil {
			return entryErr("client", c.ID, err)
		}
		c = *stored
		w.Header().Set("ETag", ClientETag(c))
	}
	return writeAdminJSON(w, http.StatusOK, clientView(c))
}

// client is the registration nc asks for, its method decided: none for a
// public client, client_secret_basic for one without keys or a method.
// PutClient and UpdateClient validate the rest (credentials fitting the
// method).
func (nc *NewClientRequest) client() (Client, error) {
	c := Client{
		ID: nc.ID, Name: nc.Name, RedirectURIs: nc.RedirectURIs, PostLogoutRedirectURIs: nc.PostLogoutRedirectURIs, GrantTypes: nc.GrantTypes,
		TokenEndpointAuthMethod: nc.AuthMethod, JWKSURI: nc.JWKSURI, JWKS: nc.JWKS,
		Resources: nc.Resources, Scopes: nc.Scopes, Introspect: nc.Introspect, IDTokenAlg: nc.IDTokenAlg,
		TokenEndpointAuthSigningAlg: nc.AuthSigningAlg,
		DPoPBoundAccessTokens:       nc.DPoPBound, RequirePushedAuthorizationRequests: nc.RequirePAR,
	}
	switch {
	case nc.Public && c.TokenEndpointAuthMethod != "" && c.TokenEndpointAuthMethod != authNone:
		return Client{}, adminErr(http.StatusBadRequest, errors.New("a public client's auth method is none"))
	case nc.Public:
		c.TokenEndpointAuthMethod = authNone
	case c.TokenEndpointAuthMethod == "" && c.JWKSURI == "" && len(c.JWKS) == 0:
		c.TokenEndpointAuthMethod = authClientSecretBasic
	}
	return c, nil
}

func (a *admin) addClient(w http.ResponseWriter, r *http.Request) error {
	var nc NewClientRequest
	if err := readAdminJSON(r, &nc); err != nil {
		return err
	}
	if nc.ID == "" {
		return adminErr(http.StatusBadRequest, errors.New("client_id is required"))
	}
	c, err := nc.client()
	if err != nil {
		return err
	}
	if _, err := a.findClient(r, c.ID); err == nil {
		return entryErr("client", c.ID, store.ErrAlreadyExists)
	}
	var secret string
	if secretMethod(c.TokenEndpointAuthMethod) {
		// Generated here so that the client is stored once, complete.
		if secret, c.SecretHash, err = a.iss.newSecret(); err != nil {
			return err
		}
	}
	if err := a.iss.PutClient(r.Context(), c); err != nil {
		return err
	}
	r.SetPathValue("id", c.ID) // the target the change is logged with
	view := clientView(c)
	view.Source = sourceAdmin
	view.ClientSecret = secret
	w.Header().Set("Cache-Control", "no-store")
	return writeAdminJSON(w, http.StatusCreated, view)
}

// updateClient replaces a client's registration (UpdateClient): the body
// is POST's; its client_id, when given, must be the path's. The secret is
// neither changed nor shown.
func (a *admin) updateClient(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var nc NewClientRequest
	if err := readAdminJSON(r, &nc); err != nil {
		return err
	}
	switch {
	case nc.ID == "":
		nc.ID = id
	case nc.ID != id:
		return adminErr(http.StatusBadRequest, fmt.Errorf("client_id %q differs from the client the path names, %q; a client's id cannot change", nc.ID, id))
	}
	c, err := nc.client()
	if err != nil {
		return err
	}
	// If-Match (RFC 9110 section 13.1.1): the ETag of a GET, so that a
	// change made meanwhile is not undone unseen (the CLI sends it).
	updated, tag, err := a.iss.UpdateClientIfMatch(r.Context(), c, ifMatch(r.Header))
	if errors.Is(err, ErrClientChanged) {
		return adminErr(http.StatusPreconditionFailed, err)
	}
	if err != nil {
		return err
	}
	w.Header().Set("ETag", tag)
	return writeAdminJSON(w, http.StatusOK, clientView(updated))
}

// ifMatch is the entity tags of If-Match (RFC 9110 section 13.1.1) for
// UpdateClientIfMatch: nil without one or with "*" (any: the client must
// exist anyway).
func ifMatch(h http.Header) []string {
	var tags []string
	for _, v := range h.Values("If-Match") {
		for t := range strings.SplitSeq(v, ",") {
			switch t = strings.TrimSpace(t); t {
			case "":
			case "*":
				return nil
			default:
				tags = append(tags, t)
			}
		}
	}
	return tags
}

func (a *admin) rotateClientSecret(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	secret, err := a.iss.RotateClientSecret(r.Context(), id)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeAdminJSON(w, http.StatusOK, map[string]string{"client_id": id, "client_secret": secret})
}

// AgentView is an agent as the admin API shows it (no secret hash).
type AgentView struct {
	ID             string    `json:"agent_id"`
	Name           string    `json:"name,omitempty"`
	JWKSURI        string    `json:"jwks_uri,omitempty"`
	HasJWKS        bool      `json:"has_jwks,omitempty"`
	AllowedClients []string  `json:"allowed_clients,omitempty"`
	Scopes         []string  `json:"scopes,omitempty"`
	MaxDepth       int       `json:"max_depth,omitempty"`
	Disabled       bool      `json:"disabled,omitempty"`
	Source         string    `json:"source,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	// Secret is set only in the answer that generated it.
	Secret string `json:"secret,omitempty"`
}

func agentView(ag Agent) AgentView {
	return AgentView{
		ID: ag.ID, Name: ag.Name, JWKSURI: ag.JWKSURI, HasJWKS: len(ag.JWKS) > 0,
		AllowedClients: ag.AllowedClients, Scopes: ag.Scopes, MaxDepth: ag.MaxDepth,
		Disabled: ag.Disabled, Source: ag.Source, CreatedAt: ag.CreatedAt,
	}
}

// NewAgentRequest is the body of POST /agents. An agent without keys
// (jwks_uri or jwks) gets a generated secret, returned once.
type NewAgentRequest struct {
	ID             string          `json:"agent_id"`
	Name           string          `json:"name,omitempty"`
	JWKSURI        string          `json:"jwks_uri,omitempty"`
	JWKS           json.RawMessage `json:"jwks,omitempty"`
	AllowedClients []string        `json:"allowed_clients,omitempty"`
	Scopes         []string        `json:"scopes,omitempty"`
	MaxDepth       int             `json:"max_depth,omitempty"`
}

func (a *admin) showAgent(w http.ResponseWriter, r *http.Request) error {
	ag, err := a.iss.Agent(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeAdminJSON(w, http.StatusOK, agentView(ag))
}

func (a *admin) addAgent(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		NewAgentRequest
		// Given as 0, max_depth would read as none given, the issuer's
		// limit: written to allow no delegation, it would allow the
		// most. Refused, as in a configuration.
		MaxDepth *int `json:"max_depth"`
	}
	if err := readAdminJSON(r, &req); err != nil {
		return err
	}
	na := req.NewAgentRequest
	if req.MaxDepth != nil {
		if *req.MaxDepth == 0 {
			return adminErr(http.StatusBadRequest, fmt.Errorf("max_depth 0: want at least 1 (0 would mean the issuer's limit, %d)", MaxDelegationDepth))
		}
		na.MaxDepth = *req.MaxDepth
	}
	if na.ID == "" {
		return adminErr(http.StatusBadRequest, errors.New("agent_id is required"))
	}
	if _, err := a.iss.Agent(r.Context(), na.ID); err == nil {
		return entryErr("agent", na.ID, store.ErrAlreadyExists)
	}
	ag := Agent{
		ID: na.ID, Name: na.Name, JWKSURI: na.JWKSURI, JWKS: na.JWKS,
		AllowedClients: na.AllowedClients, Scopes: na.Scopes, MaxDepth: na.MaxDepth,
	}
	var secret string
	if ag.JWKSURI == "" && len(ag.JWKS) == 0 {
		var err error
		if secret, ag.SecretHash, err = a.iss.newSecret(); err != nil {
			return err
		}
	}
	if err := a.iss.PutAgent(r.Context(), ag); err != nil {
		return err
	}
	r.SetPathValue("id", ag.ID) // the target the change is logged with
	view := agentView(ag)
	view.Source = sourceAdmin
	view.Secret = secret
	w.Header().Set("Cache-Control", "no-store")
	return writeAdminJSON(w, http.StatusCreated, view)
}

func (a *admin) rotateAgentSecret(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	secret, err := a.iss.RotateAgentSecret(r.Context(), id)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeAdminJSON(w, http.StatusOK, map[string]string{"agent_id": id, "secret": secret})
}

// KeyRotateRequest is the optional body of POST /keys/rotate. Withdraw,
// true or a kid, withdraws at once every signing key or the one named
// (WithdrawSigningKeys) instead of rotating.
type KeyRotateRequest struct {
	Withdraw json.RawMessage `json:"withdraw,omitempty"`
}

// errWithdraw: the withdraw member is neither true nor a kid.
var errWithdraw = errors.New(`withdraw: want true (every signing key) or the kid of a published key`)

// rotateKey rotates the signing key or, asked to, withdraws keys.
func (a *admin) rotateKey(w http.ResponseWriter, r *http.Request) error {
	b, err := readAdminBody(r)
	if err != nil {
		return err
	}
	var req KeyRotateRequest
	if len(bytes.TrimSpace(b)) > 0 {
		if err := decodeAdminJSON(b, &req); err != nil {
			return err
		}
	}
	if req.Withdraw == nil {
		kid, err := a.iss.RotateSigningKey(r.Context())
		if err != nil {
			return err
		}
		return writeAdminJSON(w, http.StatusOK, map[string]string{"kid": kid})
	}
	var kid string
	switch v := bytes.TrimSpace(req.Withdraw); {
	case string(v) == "true":
	case json.Unmarshal(v, &kid) != nil || kid == "":
		return adminErr(http.StatusBadRequest, errWithdraw)
	}
	res, err := a.iss.WithdrawSigningKeys(r.Context(), kid)
	if err != nil {
		return err
	}
	r.SetPathValue("id", strings.Join(res.Withdrawn, " ")) // the target the change is logged with
	return writeAdminJSON(w, http.StatusOK, res)
}

// listTools answers the tool pins of a resource (all without one), or
// of one tool.
func (a *admin) listTools(w http.ResponseWriter, r *http.Request) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		// URL.Query would drop the pair and list every resource's pins.
		return adminErr(http.StatusBadRequest, fmt.Errorf("the query could not be read: %w", err))
	}
	resource, tool := q.Get("resource"), q.Get("tool")
	pins := a.iss.ToolPins()
	if tool != "" {
		if resource == "" {
			return adminErr(http.StatusBadRequest, errors.New("tool needs resource"))
		}
		p, err := pins.Get(r.Context(), resource, tool)
		if err != nil {
			return err
		}
		return writeAdminJSON(w, http.StatusOK, p)
	}
	list, err := pins.List(r.Context(), resource)
	if err != nil {
		return err
	}
	if list == nil {
		list = []ToolPin{}
	}
	return writeAdminJSON(w, http.StatusOK, list)
}

// ToolPinRequest names a tool's definition to approve, reject or forget;
// Hash, when set, must be the definition's (see ToolPins.Approve and
// ToolPins.Forget).
type ToolPinRequest struct {
	Resource string `json:"resource"`
	Tool     string `json:"tool"`
	Hash     string `json:"hash,omitempty"`
}

// pinRoute applies an approval, rejection or removal and answers the pin
// (the removed one, for a removal).
func (a *admin) pinRoute(fn func(*ToolPins, context.Context, string, string, string) (ToolPin, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req ToolPinRequest
		if err := readAdminJSON(r, &req); err != nil {
			return err
		}
		if req.Resource == "" || req.Tool == "" {
			return adminErr(http.StatusBadRequest, errors.New("resource and tool are required"))
		}
		p, err := fn(a.iss.ToolPins(), r.Context(), req.Resource, req.Tool, req.Hash)
		if err != nil {
			return err
		}
		a.iss.sec.Info("tool pin changed", zap.String("resource", req.Resource), zap.String("tool", req.Tool), zap.String("path", r.URL.Path))
		r.SetPathValue("name", req.Tool)
		return writeAdminJSON(w, http.StatusOK, p)
	}
}

// backup answers a consistent copy of the store, taken while the issuer
// serves (for bolt storage, a bbolt file to put in place of the database
// while Caddy is stopped). Once the copy has begun a failure can only
// abort the connection, so the client sees a truncated answer, never a
// complete-looking one.
func (a *admin) backup(w http.ResponseWriter, r *http.Request) error {
	b, ok := a.iss.backend.(store.Backuper)
	if !ok {
		return adminErr(http.StatusNotImplemented, errors.New("this storage cannot be backed up here: memory storage keeps nothing across restarts; back up postgres storage with pg_dump"))
	}
	sw := &streamWriter{w: w}
	n, err := b.Backup(r.Context(), sw)
	switch {
	case err != nil && !sw.started:
		return err
	case err != nil:
		if r.Context().Err() == nil {
			a.iss.log.Error("admin API: backup aborted", zap.Int64("bytes", n), zap.Error(err))
		}
		panic(http.ErrAbortHandler)
	}
	a.iss.log.Info("admin API: backup", zap.Int64("bytes", n))
	return nil
}

// streamWriter sends the backup's headers with its first bytes, so that a
// failure before them is still an ordinary JSON error.
type streamWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *streamWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.started = true
		h := s.w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="mcp-auth.db"`)
		h.Set("Cache-Control", "no-store")
		s.w.WriteHeader(http.StatusOK)
	}
	return s.w.Write(p)
}

// adminError is an admin API failure with its status.
type adminError struct {
	status int
	err    error
}

func (e *adminError) Error() string { return e.err.Error() }
func (e *adminError) Unwrap() error { return e.err }

func adminErr(status int, err error) error { return &adminError{status: status, err: err} }

// adminStatus is the status of an error from a handler: its own, else
// derived from what went wrong: not found 404; already exists, declared
// in the configuration or self-registered 409; an invalid entry or OAuth error 400; else
// 500.
func adminStatus(err error) int {
	var ae *adminError
	var oe *Error
	switch {
	case errors.As(err, &ae):
		return ae.status
	case storeBusy(err):
		return http.StatusServiceUnavailable
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrAlreadyExists), errors.Is(err, ErrConfigured), errors.Is(err, errSelfRegistered), errors.Is(err, ErrPinMismatch):
		return http.StatusConflict
	case errors.Is(err, ErrInvalidEntry):
		return http.StatusBadRequest
	case errors.As(err, &oe) && oe.Code != ErrServerError.Code:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// writeError answers {"error": message}, the form of Caddy's admin API.
func (a *admin) writeError(w http.ResponseWriter, err error) {
	status := adminStatus(err)
	msg := err.Error()
	switch status {
	case http.StatusInternalServerError:
		// The details are the storage's, for the log; the operator is told
		// where to look.
		a.iss.log.Error("admin API", zap.Int("status", status), zap.Error(err))
		msg = `internal error; the details are in Caddy's log (message "admin API")`
	case http.StatusServiceUnavailable:
		a.iss.log.Error("admin API", zap.Int("status", status), zap.Error(err))
		msg = `storage temporarily unavailable, nothing was changed; retry later (details in Caddy's log, message "admin API")`
		// When to retry, as every other 503 of the issuer says.
		w.Header().Set("Retry-After", retryAfter(storeRetryAfter))
	}
	_ = writeAdminJSON(w, status, map[string]string{"error": msg})
}

// maxAdminBody bounds admin request bodies (a JWK Set is the largest).
const maxAdminBody = 64 << 10

// checkAdminContentType refuses a request whose Content-Type is not
// application/json (none is fine): 415.
func checkAdminContentType(r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return adminErr(http.StatusUnsupportedMediaType,
				fmt.Errorf("content type %q: send a JSON body, with Content-Type: application/json or none", ct))
		}
	}
	return nil
}

// readAdminBody reads a request's body, refusing one of another type
// (checkAdminContentType) or longer than maxAdminBody: 413 rather than
// the first maxAdminBody bytes, which may hold a whole JSON value and
// leave what follows unread, another request than the one sent.
func readAdminBody(r *http.Request) ([]byte, error) {
	if err := checkAdminContentType(r); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return nil, adminErr(http.StatusBadRequest, fmt.Errorf("request body: %w", err))
	}
	if len(b) > maxAdminBody {
		return nil, adminErr(http.StatusRequestEntityTooLarge, fmt.Errorf("request body: at most %d bytes", maxAdminBody))
	}
	return b, nil
}

// readAdminJSON decodes one JSON value with known fields only. A request
// without a Content-Type is read as JSON.
func readAdminJSON(r *http.Request, dst any) error {
	b, err := readAdminBody(r)
	if err != nil {
		return err
	}
	return decodeAdminJSON(b, dst)
}

// decodeAdminJSON decodes body b into dst as readAdminJSON says.
func decodeAdminJSON(b []byte, dst any) error {
	// encoding/json keeps the last of a repeated name and matches names
	// without case: the operator's tooling could read another body than
	// this server does. (Any other fault the decoder reports below.)
	names := checkMemberNames(b, dst)
	if errors.Is(names, errMemberNames) {
		return adminErr(http.StatusBadRequest, fmt.Errorf("request body: %w", names))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// Without the Go type names the decoder's message carries.
			if te.Field == "" {
				return adminErr(http.StatusBadRequest, errors.New("request body: want a JSON object"))
			}
			return adminErr(http.StatusBadRequest, fmt.Errorf("request body: field %s has the wrong type (JSON %s)", te.Field, te.Value))
		}
		return adminErr(http.StatusBadRequest, fmt.Errorf("request body: %w", err))
	}
	if dec.More() {
		return adminErr(http.StatusBadRequest, errors.New("request body: more than one JSON value"))
	}
	if names != nil {
		// A fault the decoder lets pass (invalid UTF-8, a lone
		// surrogate: it reads U+FFFD) ended the check of the names
		// before the names after it.
		return adminErr(http.StatusBadRequest, fmt.Errorf("request body: %w", names))
	}
	if l, ok := dst.(restrictionLists); ok {
		var members map[string]json.RawMessage
		_ = json.Unmarshal(b, &members) // decoded above: an object
		for _, list := range l.restrictionLists() {
			if v := EmptyList(members, list.name, false); v != "" {
				return adminErr(http.StatusBadRequest, fmt.Errorf("%s %s: list at least one entry, or leave %s out for %s", list.name, v, list.name, list.leftOut))
			}
		}
	}
	return nil
}

// EmptyList is how the JSON object members gives the list name when it
// gives it empty, "[]" or "null" (what a generator writes for a nil
// list), and "" when it has entries or is not there. A restriction list
// reads empty as absent, no restriction, so one written to allow nothing
// would allow everything: the admin API and the JSON config refuse it.
// fold matches name in any case, as encoding/json decodes members.
func EmptyList(members map[string]json.RawMessage, name string, fold bool) string {
	for m, raw := range members {
		if m == name || fold && strings.EqualFold(m, name) {
			if v := string(bytes.Join(bytes.Fields(raw), nil)); v == "[]" || v == "null" {
				return v
			}
		}
	}
	return ""
}

// restrictionLists is a request with lists that restrict when they have
// entries and not at all, or to a default, when left out (or empty):
// given as [] (or null, what a generator writes for a nil list), such a
// list, written to allow nothing, would allow everything (or the
// default: a client's grant_types, authorization_code and
// refresh_token), so readAdminJSON refuses it (member names are exact
// here).
type restrictionLists interface{ restrictionLists() []restrictionList }

// restrictionList is a list member and what it means left out.
type restrictionList struct{ name, leftOut string }

func (NewClientRequest) restrictionLists() []restrictionList {
	return []restrictionList{{"resources", "no restriction"}, {"scopes", "no restriction"},
		{"grant_types", "the default grant types, authorization_code and refresh_token"}}
}

func (NewAgentRequest) restrictionLists() []restrictionList {
	return []restrictionList{{"allowed_clients", "no restriction"}, {"scopes", "no restriction"}}
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) error {
	return writeJSON(w, status, "application/json", "no-store", v)
}

var _ http.Handler = (*admin)(nil)
