package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketCIMD: client_id URL -> cimdEntry, with the expiry HTTP caching
// allowed.
const bucketCIMD = "cimd"

// cimdEntry is a cached, validated Client ID Metadata Document.
type cimdEntry struct {
	Client    storedClient `json:"client"`
	ExpiresAt time.Time    `json:"expires_at"`
	// Public is set when the document was fetched with private targets
	// refused (no cimd_allow_private). An issuer without the option
	// takes no entry without it: 7de412a and earlier releases cached a
	// document fetched with the option on under its client_id too, so
	// one of theirs may be a private address's (cimdFetcher.cacheKey).
	Public bool `json:"public,omitempty"`
}

// cimdRecords are the cached client metadata documents.
type cimdRecords struct{ t table[cimdEntry] }

func cimdIn(tx store.Tx) cimdRecords { return cimdRecords{table[cimdEntry]{tx, bucketCIMD}} }

func (r cimdRecords) get(clientID string) (*cimdEntry, error) { return r.t.get(clientID) }

func (r cimdRecords) put(clientID string, e *cimdEntry) error {
	return r.t.put(clientID, e, e.ExpiresAt)
}
