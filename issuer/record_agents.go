package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketAgents: agent id -> Agent (admin-managed; never expires).
const bucketAgents = "agents"

// agentRecords are the runtime-managed agents.
type agentRecords struct{ table[Agent] }

func agentsIn(tx store.Tx) agentRecords { return agentRecords{table[Agent]{tx, bucketAgents}} }

func (r agentRecords) put(a *Agent) error { return r.table.put(a.ID, a, time.Time{}) }

// each calls fn for every stored agent.
func (r agentRecords) each(fn func(*Agent) error) error {
	return r.list("", func(_ string, a *Agent) error { return fn(a) })
}
