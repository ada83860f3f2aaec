package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketConfig: issuer URL -> directorySnapshot of the configuration last
// applied.
const bucketConfig = "config"

// directorySnapshot is what a configuration declared: each user, client
// and agent with a fingerprint of its credential. Config-declared
// principals live in memory only, so this record is how the next
// configuration learns which of them it removed or re-keyed.
type directorySnapshot struct {
	Users   map[string]string `json:"users"`
	Clients map[string]string `json:"clients"`
	Agents  map[string]string `json:"agents"`
	// IdentityProviders: name -> fingerprint of issuer and client_id.
	IdentityProviders map[string]string `json:"identity_providers,omitempty"`
}

// configRecords are the snapshots of the configurations applied, one per
// issuer URL.
type configRecords struct{ t table[directorySnapshot] }

func configIn(tx store.Tx) configRecords {
	return configRecords{table[directorySnapshot]{tx, bucketConfig}}
}

func (r configRecords) get(issuer string) (*directorySnapshot, error) { return r.t.get(issuer) }

func (r configRecords) put(issuer string, d *directorySnapshot) error {
	return r.t.put(issuer, d, time.Time{})
}
