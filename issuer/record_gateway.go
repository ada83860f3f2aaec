package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketGateway holds the gateways' shared state: the default session
// binding key, so that every Caddy instance sharing the store, and every
// reload, binds sessions with the same key. Stored raw, not as JSON.
const (
	bucketGateway  = "gateway"
	sessionKeyName = "session_key"
)

// gatewayRecords are the gateways' shared records.
type gatewayRecords struct{ tx store.Tx }

func gatewayIn(tx store.Tx) gatewayRecords { return gatewayRecords{tx} }

// sessionKey returns the stored session key, creating one of 32 bytes
// from rnd on first use.
func (r gatewayRecords) sessionKey(rnd io.Reader) ([]byte, error) {
	v, err := r.tx.Get(bucketGateway, sessionKeyName)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := io.ReadFull(rnd, key); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	return key, r.tx.Create(bucketGateway, sessionKeyName, key, time.Time{})
}

// GatewaySessionKey returns the default HMAC key with which gateways bind
// sessions to their principal, creating and persisting a random one on
// first use.
func (i *Issuer) GatewaySessionKey(ctx context.Context) ([]byte, error) {
	var key []byte
	err := i.store.Update(ctx, func(tx store.Tx) (err error) {
		key, err = gatewayIn(tx).sessionKey(i.cfg.Rand)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return key, nil
}
