package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketAgents: agent id -> storedAgent (admin-managed; never expires).
const bucketAgents = "agents"

// storedAgent is an Agent as the store keeps it. It is a type of its own
// so that Agent, the public API type, can change without changing what is
// on disk; the field names are the format of existing databases.
type storedAgent struct {
	ID             string    `json:"agent_id"`
	Name           string    `json:"name,omitempty"`
	SecretHash     string    `json:"secret_hash,omitempty"`
	JWKS           []byte    `json:"jwks,omitempty"`
	JWKSURI        string    `json:"jwks_uri,omitempty"`
	AllowedClients []string  `json:"allowed_clients,omitempty"`
	Scopes         []string  `json:"scopes,omitempty"`
	MaxDepth       int       `json:"max_depth,omitempty"`
	Disabled       bool      `json:"disabled,omitempty"`
	Source         string    `json:"source,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
}

func agentRecord(a *Agent) *storedAgent {
	return &storedAgent{
		ID:             a.ID,
		Name:           a.Name,
		SecretHash:     a.SecretHash,
		JWKS:           a.JWKS,
		JWKSURI:        a.JWKSURI,
		AllowedClients: a.AllowedClients,
		Scopes:         a.Scopes,
		MaxDepth:       a.MaxDepth,
		Disabled:       a.Disabled,
		Source:         a.Source,
		CreatedAt:      a.CreatedAt,
	}
}

func (s *storedAgent) agent() *Agent {
	return &Agent{
		ID:             s.ID,
		Name:           s.Name,
		SecretHash:     s.SecretHash,
		JWKS:           s.JWKS,
		JWKSURI:        s.JWKSURI,
		AllowedClients: s.AllowedClients,
		Scopes:         s.Scopes,
		MaxDepth:       s.MaxDepth,
		Disabled:       s.Disabled,
		Source:         s.Source,
		CreatedAt:      s.CreatedAt,
	}
}

// agentRecords are the runtime-managed agents.
type agentRecords struct{ t table[storedAgent] }

func agentsIn(tx store.Tx) agentRecords { return agentRecords{table[storedAgent]{tx, bucketAgents}} }

func (r agentRecords) get(id string) (*Agent, error) {
	s, err := r.t.get(id)
	if err != nil {
		return nil, err
	}
	return s.agent(), nil
}

// has reports whether a live agent is stored under id.
func (r agentRecords) has(id string) (bool, error) { return r.t.has(id) }

func (r agentRecords) put(a *Agent) error { return r.t.put(a.ID, agentRecord(a), time.Time{}) }

// remove deletes the agent, or returns store.ErrNotFound.
func (r agentRecords) remove(id string) error { return r.t.remove(id) }

// each calls fn for every stored agent.
func (r agentRecords) each(fn func(*Agent) error) error {
	return r.t.list("", func(_ string, s *storedAgent) error { return fn(s.agent()) })
}
