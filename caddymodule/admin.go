package caddymodule

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// adminBase is the admin API prefix of every mcp_auth route.
const adminBase = "/mcp-auth/"

// AdminAPI serves the mcp_auth management endpoints on Caddy's admin API:
//
//	GET    /mcp-auth/users                    list users
//	POST   /mcp-auth/users                    add a user
//	GET    /mcp-auth/users/<name>             show a user
//	DELETE /mcp-auth/users/<name>             remove a user
//	PUT    /mcp-auth/users/<name>/password    set a user's password
//	GET    /mcp-auth/clients                  list clients
//	POST   /mcp-auth/clients                  add a client
//	GET    /mcp-auth/clients/<id>             show a client
//	DELETE /mcp-auth/clients/<id>             remove a client
//	POST   /mcp-auth/clients/<id>/secret      rotate a client's secret
//	GET    /mcp-auth/agents                   list agents
//	POST   /mcp-auth/agents                   add an agent
//	GET    /mcp-auth/agents/<id>              show an agent
//	DELETE /mcp-auth/agents/<id>              remove an agent
//	POST   /mcp-auth/agents/<id>/secret       rotate an agent's secret
//	POST   /mcp-auth/agents/<id>/disable      disable an agent (revokes its grants)
//	POST   /mcp-auth/agents/<id>/enable       enable an agent
//	POST   /mcp-auth/keys/rotate              rotate the signing key
//
// Bodies are JSON. Password and secret hashes are never returned; a newly
// generated client or agent secret is returned once, by the request that
// made it.
type AdminAPI struct {
	app      *App
	hashCost int // bcrypt cost of passwords sent in the clear; 0: bcrypt.DefaultCost
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.mcp_auth",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision finds the mcp_auth app, if the config has one.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	v, err := ctx.AppIfConfigured("mcp_auth")
	if err != nil {
		// Not configured: the routes answer 404. A provisioning error
		// surfaces again, and fails the config, when Caddy loads the apps.
		return nil
	}
	a.app = v.(*App)
	return nil
}

// Routes implements caddy.AdminRouter.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: adminBase, Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	if a.app == nil {
		return apiError(http.StatusNotFound, errors.New("the mcp_auth app is not configured"))
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, adminBase), "/")
	switch {
	case len(parts) == 1 && parts[0] == "users":
		return a.methods(w, r, map[string]handlerFunc{"GET": a.listUsers, "POST": a.addUser}, "")
	case len(parts) == 2 && parts[0] == "users" && parts[1] != "":
		return a.methods(w, r, map[string]handlerFunc{"GET": a.showUser, "DELETE": a.removeUser}, parts[1])
	case len(parts) == 3 && parts[0] == "users" && parts[1] != "" && parts[2] == "password":
		return a.methods(w, r, map[string]handlerFunc{"PUT": a.setPassword}, parts[1])
	case len(parts) == 1 && parts[0] == "clients":
		return a.methods(w, r, map[string]handlerFunc{"GET": a.listClients, "POST": a.addClient}, "")
	case len(parts) == 2 && parts[0] == "clients" && parts[1] != "":
		return a.methods(w, r, map[string]handlerFunc{"GET": a.showClient, "DELETE": a.removeClient}, parts[1])
	case len(parts) == 3 && parts[0] == "clients" && parts[1] != "" && parts[2] == "secret":
		return a.methods(w, r, map[string]handlerFunc{"POST": a.rotateSecret}, parts[1])
	case len(parts) == 1 && parts[0] == "agents":
		return a.methods(w, r, map[string]handlerFunc{"GET": a.listAgents, "POST": a.addAgent}, "")
	case len(parts) == 2 && parts[0] == "agents" && parts[1] != "":
		return a.methods(w, r, map[string]handlerFunc{"GET": a.showAgent, "DELETE": a.removeAgent}, parts[1])
	case len(parts) == 3 && parts[0] == "agents" && parts[1] != "" && parts[2] == "secret":
		return a.methods(w, r, map[string]handlerFunc{"POST": a.rotateAgentSecret}, parts[1])
	case len(parts) == 3 && parts[0] == "agents" && parts[1] != "" && parts[2] == "disable":
		return a.methods(w, r, map[string]handlerFunc{"POST": a.disableAgent}, parts[1])
	case len(parts) == 3 && parts[0] == "agents" && parts[1] != "" && parts[2] == "enable":
		return a.methods(w, r, map[string]handlerFunc{"POST": a.enableAgent}, parts[1])
	case len(parts) == 2 && parts[0] == "keys" && parts[1] == "rotate":
		return a.methods(w, r, map[string]handlerFunc{"POST": a.rotateKey}, "")
	}
	return apiError(http.StatusNotFound, fmt.Errorf("no such resource: %s", r.URL.Path))
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, name string) error

func (a *AdminAPI) methods(w http.ResponseWriter, r *http.Request, m map[string]handlerFunc, name string) error {
	h, ok := m[r.Method]
	if !ok {
		allowed := make([]string, 0, len(m))
		for k := range m {
			allowed = append(allowed, k)
		}
		slices.Sort(allowed)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return apiError(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
	}
	return h(w, r, name)
}

// UserView is a user as the admin API shows it (no password hash).
type UserView struct {
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
	Name     string   `json:"name,omitempty"`
	Email    string   `json:"email,omitempty"`
	Disabled bool     `json:"disabled,omitempty"`
	Source   string   `json:"source,omitempty"`
}

func userView(u issuer.User) UserView {
	return UserView{Username: u.Username, Groups: u.Groups, Name: u.Name, Email: u.Email, Disabled: u.Disabled, Source: u.Source}
}

// NewUser is the body of POST /mcp-auth/users. Exactly one of Password
// and PasswordHash is given; the CLI sends a hash, so the password never
// leaves the operator's machine.
type NewUser struct {
	Username     string   `json:"username"`
	Password     string   `json:"password,omitempty"`
	PasswordHash string   `json:"password_hash,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	Name         string   `json:"name,omitempty"`
	Email        string   `json:"email,omitempty"`
}

// NewPassword is the body of PUT /mcp-auth/users/<name>/password.
type NewPassword struct {
	Password     string `json:"password,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
}

func (a *AdminAPI) listUsers(w http.ResponseWriter, r *http.Request, _ string) error {
	users, err := a.app.Issuer().Users(r.Context())
	if err != nil {
		return apiError(0, err)
	}
	out := make([]UserView, 0, len(users))
	for _, u := range users {
		out = append(out, userView(u))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *AdminAPI) findUser(r *http.Request, name string) (issuer.User, error) {
	users, err := a.app.Issuer().Users(r.Context())
	if err != nil {
		return issuer.User{}, apiError(0, err)
	}
	for _, u := range users {
		if u.Username == name {
			return u, nil
		}
	}
	return issuer.User{}, apiError(http.StatusNotFound, fmt.Errorf("user %q: %w", name, store.ErrNotFound))
}

func (a *AdminAPI) showUser(w http.ResponseWriter, r *http.Request, name string) error {
	u, err := a.findUser(r, name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, userView(u))
}

func (a *AdminAPI) addUser(w http.ResponseWriter, r *http.Request, _ string) error {
	var nu NewUser
	if err := readJSON(r, &nu); err != nil {
		return err
	}
	if nu.Username == "" {
		return apiError(http.StatusBadRequest, errors.New("username is required"))
	}
	if _, err := a.findUser(r, nu.Username); err == nil {
		return apiError(http.StatusConflict, fmt.Errorf("user %q: %w", nu.Username, store.ErrAlreadyExists))
	}
	hash, err := a.passwordHash(nu.Password, nu.PasswordHash)
	if err != nil {
		return err
	}
	u := issuer.User{Username: nu.Username, PasswordHash: hash, Groups: nu.Groups, Name: nu.Name, Email: nu.Email}
	if err := a.app.Issuer().PutUser(r.Context(), u); err != nil {
		return apiError(0, err)
	}
	u.Source = "admin"
	return writeJSON(w, http.StatusCreated, userView(u))
}

func (a *AdminAPI) removeUser(w http.ResponseWriter, r *http.Request, name string) error {
	if err := a.app.Issuer().DeleteUser(r.Context(), name); err != nil {
		return apiError(0, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *AdminAPI) setPassword(w http.ResponseWriter, r *http.Request, name string) error {
	var np NewPassword
	if err := readJSON(r, &np); err != nil {
		return err
	}
	hash, err := a.passwordHash(np.Password, np.PasswordHash)
	if err != nil {
		return err
	}
	if err := a.app.Issuer().SetPassword(r.Context(), name, hash); err != nil {
		return apiError(0, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// passwordHash takes exactly one of a password (hashed here) and a bcrypt
// hash (checked).
func (a *AdminAPI) passwordHash(password, hash string) (string, error) {
	switch {
	case password != "" && hash != "":
		return "", apiError(http.StatusBadRequest, errors.New("give password or password_hash, not both"))
	case password != "":
		b, err := bcrypt.GenerateFromPassword([]byte(password), cmp.Or(a.hashCost, bcrypt.DefaultCost))
		if err != nil {
			return "", apiError(http.StatusBadRequest, fmt.Errorf("password: %w", err))
		}
		return string(b), nil
	case hash != "":
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return "", apiError(http.StatusBadRequest, fmt.Errorf("password_hash must be bcrypt: %w", err))
		}
		return hash, nil
	}
	return "", apiError(http.StatusBadRequest, errors.New("password or password_hash is required"))
}

// ClientView is a client as the admin API shows it (no secret hash).
type ClientView struct {
	ID              string    `json:"client_id"`
	Name            string    `json:"client_name,omitempty"`
	RedirectURIs    []string  `json:"redirect_uris,omitempty"`
	GrantTypes      []string  `json:"grant_types,omitempty"`
	AuthMethod      string    `json:"token_endpoint_auth_method,omitempty"`
	JWKSURI         string    `json:"jwks_uri,omitempty"`
	HasJWKS         bool      `json:"has_jwks,omitempty"`
	ApplicationType string    `json:"application_type,omitempty"`
	Resources       []string  `json:"resources,omitempty"`
	Scopes          []string  `json:"scopes,omitempty"`
	Introspect      bool      `json:"introspect,omitempty"`
	Source          string    `json:"source,omitempty"`
	CreatedAt       time.Time `json:"created_at,omitzero"`
	// ClientSecret is set only in the answer that generated it.
	ClientSecret string `json:"client_secret,omitempty"`
}

func clientView(c issuer.Client) ClientView {
	return ClientView{
		ID: c.ID, Name: c.Name, RedirectURIs: c.RedirectURIs, GrantTypes: c.GrantTypes,
		AuthMethod: c.TokenEndpointAuthMethod, JWKSURI: c.JWKSURI, HasJWKS: len(c.JWKS) > 0,
		ApplicationType: c.ApplicationType, Resources: c.Resources, Scopes: c.Scopes,
		Introspect: c.Introspect, Source: c.Source, CreatedAt: c.CreatedAt,
	}
}

// NewClient is the body of POST /mcp-auth/clients. A confidential client
// (auth method client_secret_basic or client_secret_post, the default when
// not public and without keys) gets a generated secret, returned once.
type NewClient struct {
	ID           string          `json:"client_id"`
	Name         string          `json:"client_name,omitempty"`
	Public       bool            `json:"public,omitempty"`
	RedirectURIs []string        `json:"redirect_uris,omitempty"`
	GrantTypes   []string        `json:"grant_types,omitempty"`
	AuthMethod   string          `json:"token_endpoint_auth_method,omitempty"`
	JWKSURI      string          `json:"jwks_uri,omitempty"`
	JWKS         json.RawMessage `json:"jwks,omitempty"`
	Resources    []string        `json:"resources,omitempty"`
	Scopes       []string        `json:"scopes,omitempty"`
	// Introspect marks a resource server, which may introspect every
	// token.
	Introspect bool `json:"introspect,omitempty"`
}

func (a *AdminAPI) listClients(w http.ResponseWriter, r *http.Request, _ string) error {
	clients, err := a.app.Issuer().Clients(r.Context())
	if err != nil {
		return apiError(0, err)
	}
	out := make([]ClientView, 0, len(clients))
	for _, c := range clients {
		out = append(out, clientView(c))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *AdminAPI) findClient(r *http.Request, id string) (issuer.Client, error) {
	clients, err := a.app.Issuer().Clients(r.Context())
	if err != nil {
		return issuer.Client{}, apiError(0, err)
	}
	for _, c := range clients {
		if c.ID == id {
			return c, nil
		}
	}
	return issuer.Client{}, apiError(http.StatusNotFound, fmt.Errorf("client %q: %w", id, store.ErrNotFound))
}

func (a *AdminAPI) showClient(w http.ResponseWriter, r *http.Request, id string) error {
	c, err := a.findClient(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, clientView(c))
}

func (a *AdminAPI) addClient(w http.ResponseWriter, r *http.Request, _ string) error {
	var nc NewClient
	if err := readJSON(r, &nc); err != nil {
		return err
	}
	if nc.ID == "" {
		return apiError(http.StatusBadRequest, errors.New("client_id is required"))
	}
	c := issuer.Client{
		ID: nc.ID, Name: nc.Name, RedirectURIs: nc.RedirectURIs, GrantTypes: nc.GrantTypes,
		TokenEndpointAuthMethod: nc.AuthMethod, JWKSURI: nc.JWKSURI, JWKS: nc.JWKS,
		Resources: nc.Resources, Scopes: nc.Scopes, Introspect: nc.Introspect,
	}
	// The issuer validates the rest (credentials fitting the method).
	switch {
	case nc.Public && c.TokenEndpointAuthMethod != "" && c.TokenEndpointAuthMethod != "none":
		return apiError(http.StatusBadRequest, errors.New("a public client's auth method is none"))
	case nc.Public:
		c.TokenEndpointAuthMethod = "none"
	case c.TokenEndpointAuthMethod == "" && c.JWKSURI == "" && len(c.JWKS) == 0:
		c.TokenEndpointAuthMethod = "client_secret_basic"
	}
	needsSecret := c.TokenEndpointAuthMethod == "client_secret_basic" || c.TokenEndpointAuthMethod == "client_secret_post"
	if _, err := a.findClient(r, c.ID); err == nil {
		return apiError(http.StatusConflict, fmt.Errorf("client %q: %w", c.ID, store.ErrAlreadyExists))
	}
	var secret string
	if needsSecret {
		// Generated here so that the client is stored once, complete.
		var err error
		if secret, c.SecretHash, err = newSecret(); err != nil {
			return apiError(http.StatusInternalServerError, err)
		}
	}
	if err := a.app.Issuer().PutClient(r.Context(), c); err != nil {
		return apiError(0, err)
	}
	view := clientView(c)
	view.Source = "admin"
	view.ClientSecret = secret
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, view)
}

func (a *AdminAPI) removeClient(w http.ResponseWriter, r *http.Request, id string) error {
	if err := a.app.Issuer().DeleteClient(r.Context(), id); err != nil {
		return apiError(0, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *AdminAPI) rotateSecret(w http.ResponseWriter, r *http.Request, id string) error {
	secret, err := a.app.Issuer().RotateClientSecret(r.Context(), id)
	if err != nil {
		return apiError(0, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, map[string]string{"client_id": id, "client_secret": secret})
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

func agentView(ag issuer.Agent) AgentView {
	return AgentView{
		ID: ag.ID, Name: ag.Name, JWKSURI: ag.JWKSURI, HasJWKS: len(ag.JWKS) > 0,
		AllowedClients: ag.AllowedClients, Scopes: ag.Scopes, MaxDepth: ag.MaxDepth,
		Disabled: ag.Disabled, Source: ag.Source, CreatedAt: ag.CreatedAt,
	}
}

// NewAgent is the body of POST /mcp-auth/agents. An agent without keys
// (jwks_uri or jwks) gets a generated secret, returned once.
type NewAgent struct {
	ID             string          `json:"agent_id"`
	Name           string          `json:"name,omitempty"`
	JWKSURI        string          `json:"jwks_uri,omitempty"`
	JWKS           json.RawMessage `json:"jwks,omitempty"`
	AllowedClients []string        `json:"allowed_clients,omitempty"`
	Scopes         []string        `json:"scopes,omitempty"`
	MaxDepth       int             `json:"max_depth,omitempty"`
}

func (a *AdminAPI) listAgents(w http.ResponseWriter, r *http.Request, _ string) error {
	agents, err := a.app.Issuer().Agents(r.Context())
	if err != nil {
		return apiError(0, err)
	}
	out := make([]AgentView, 0, len(agents))
	for _, ag := range agents {
		out = append(out, agentView(ag))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *AdminAPI) showAgent(w http.ResponseWriter, r *http.Request, id string) error {
	ag, err := a.app.Issuer().Agent(r.Context(), id)
	if err != nil {
		return apiError(0, err)
	}
	return writeJSON(w, http.StatusOK, agentView(ag))
}

func (a *AdminAPI) addAgent(w http.ResponseWriter, r *http.Request, _ string) error {
	var na NewAgent
	if err := readJSON(r, &na); err != nil {
		return err
	}
	if na.ID == "" {
		return apiError(http.StatusBadRequest, errors.New("agent_id is required"))
	}
	if _, err := a.app.Issuer().Agent(r.Context(), na.ID); err == nil {
		return apiError(http.StatusConflict, fmt.Errorf("agent %q: %w", na.ID, store.ErrAlreadyExists))
	}
	ag := issuer.Agent{
		ID: na.ID, Name: na.Name, JWKSURI: na.JWKSURI, JWKS: na.JWKS,
		AllowedClients: na.AllowedClients, Scopes: na.Scopes, MaxDepth: na.MaxDepth,
	}
	var secret string
	if ag.JWKSURI == "" && len(ag.JWKS) == 0 {
		var err error
		if secret, ag.SecretHash, err = newSecret(); err != nil {
			return apiError(http.StatusInternalServerError, err)
		}
	}
	if err := a.app.Issuer().PutAgent(r.Context(), ag); err != nil {
		return apiError(0, err)
	}
	view := agentView(ag)
	view.Source = "admin"
	view.Secret = secret
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, view)
}

func (a *AdminAPI) removeAgent(w http.ResponseWriter, r *http.Request, id string) error {
	if err := a.app.Issuer().DeleteAgent(r.Context(), id); err != nil {
		return apiError(0, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *AdminAPI) rotateAgentSecret(w http.ResponseWriter, r *http.Request, id string) error {
	secret, err := a.app.Issuer().RotateAgentSecret(r.Context(), id)
	if err != nil {
		return apiError(0, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, map[string]string{"agent_id": id, "secret": secret})
}

func (a *AdminAPI) disableAgent(w http.ResponseWriter, r *http.Request, id string) error {
	if err := a.app.Issuer().DisableAgent(r.Context(), id); err != nil {
		return apiError(0, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *AdminAPI) enableAgent(w http.ResponseWriter, r *http.Request, id string) error {
	if err := a.app.Issuer().EnableAgent(r.Context(), id); err != nil {
		return apiError(0, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// newSecret returns a random secret and the "sha256:<hex>" hash the issuer
// verifies it against (a high-entropy secret needs no slow hash).
func newSecret() (secret, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(secret))
	return secret, "sha256:" + hex.EncodeToString(sum[:]), nil
}

func (a *AdminAPI) rotateKey(w http.ResponseWriter, r *http.Request, _ string) error {
	kid, err := a.app.Issuer().RotateSigningKey(r.Context())
	if err != nil {
		return apiError(0, err)
	}
	return writeJSON(w, http.StatusOK, map[string]string{"kid": kid})
}

// apiError maps err to an admin API error. A zero status is derived from
// err: not found 404; already exists or declared in the Caddyfile 409; an
// invalid entry or OAuth error 400; else 500.
func apiError(status int, err error) error {
	var ae caddy.APIError
	if errors.As(err, &ae) {
		return ae
	}
	if status == 0 {
		var oe *issuer.Error
		switch {
		case errors.Is(err, store.ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, store.ErrAlreadyExists), errors.Is(err, issuer.ErrConfigured):
			status = http.StatusConflict
		case errors.Is(err, issuer.ErrInvalidEntry):
			status = http.StatusBadRequest
		case errors.As(err, &oe) && oe.Code != issuer.ErrServerError.Code:
			status = http.StatusBadRequest
		default:
			status = http.StatusInternalServerError
		}
	}
	return caddy.APIError{HTTPStatus: status, Err: err}
}

// maxAdminBody bounds admin request bodies (a JWK Set is the largest).
const maxAdminBody = 64 << 10

func readJSON(r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return apiError(http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want application/json", ct))
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return apiError(http.StatusBadRequest, fmt.Errorf("request body: %w", err))
	}
	if dec.More() {
		return apiError(http.StatusBadRequest, errors.New("request body: more than one JSON value"))
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
