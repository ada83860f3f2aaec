package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// fingerprint identifies a credential hash without storing it again.
func fingerprint(hash string) string {
	sum := sha256.Sum256([]byte(hash))
	return hex.EncodeToString(sum[:])
}

// credentialFingerprint identifies a client's or agent's credentials:
// its secret hash and its keys (a JWK Set or its URL), so that re-keying
// a private_key_jwt principal in the configuration counts as a rotation.
// Without keys it is fingerprint(secretHash), as before keys counted.
func credentialFingerprint(secretHash string, jwks []byte, jwksURI string) string {
	if len(jwks) == 0 && jwksURI == "" {
		return fingerprint(secretHash)
	}
	return fingerprint(secretHash + "\x00jwks\x00" + string(jwks) + "\x00" + jwksURI)
}

// RecordConfig records this configuration as the one applied to the
// store under its issuer URL, the one ApplyConfigChanges compares the
// next with, and changes nothing else. A configuration still running
// records itself again when a newer one applied its changes and then
// failed to start (Caddy keeps the old one), so that the next
// configuration is compared with the one that ran: what was granted
// under it meanwhile is ended then.
func (i *Issuer) RecordConfig(ctx context.Context) error {
	cur := i.dir.snapshot()
	return i.store.Update(ctx, func(tx store.Tx) error { return configIn(tx).put(i.URL(), &cur) })
}

// ApplyConfigChanges ends what this configuration took away from the one
// applied before it to the same store under the same issuer URL, exactly
// as the management API does for runtime-managed entries:
//
//   - a removed user: DeleteUser (grants revoked, sessions ended, consents
//     deleted); a changed password hash: SetPassword (grants revoked,
//     sessions ended);
//   - a removed client, or a changed secret hash or keys: DeleteClient and
//     RotateClientSecret (every grant the client holds revoked, its
//     client credentials tokens included; a removed one's consents
//     deleted);
//   - a removed agent: DeleteAgent (its own tokens, delegations to it,
//     grants exchanged to it, consents to it); a changed secret hash or
//     keys: RotateAgentSecret (its own tokens);
//   - a removed identity provider, or one whose issuer or client_id
//     changed: every user it provisioned is signed out (grants revoked,
//     sessions ended). Its users are not deleted: the same provider
//     configured again finds them (and their consents) by name. A
//     changed group mapping revokes nothing: refresh re-applies today's
//     mapping to the provider groups of the user's last sign-in.
//
// Applying the same configuration again changes nothing; the first
// configuration applied to a store only records itself. Call it when the
// configuration takes effect (Caddy: the app's Start, so a configuration
// that fails to load changes nothing). Instances sharing a store should
// load the same directory: each one applied counts as a change.
func (i *Issuer) ApplyConfigChanges(ctx context.Context) error {
	cur := i.dir.snapshot()
	var ended []string
	err := i.store.Update(ctx, func(tx store.Tx) error {
		ended = ended[:0] // the function may run again
		configs := configIn(tx)
		prev, err := configs.get(i.URL())
		switch {
		case errors.Is(err, store.ErrNotFound):
			return configs.put(i.URL(), &cur)
		case err != nil:
			return err
		}
		rv := i.revocation()
		grants := grantsIn(tx)
		for name, fp := range prev.Users {
			now, kept := cur.Users[name]
			var err error
			switch {
			case !kept:
				err = forgetUser(tx, name, rv)
			case now != fp:
				err = signOutUser(tx, name, rv)
			default:
				continue
			}
			if err != nil {
				return err
			}
			ended = append(ended, "user "+name)
		}
		var removed []string // clients and agents, whose consents go too
		for id, fp := range prev.Clients {
			now, kept := cur.Clients[id]
			if kept && now == fp {
				continue
			}
			if !kept {
				removed = append(removed, id)
			}
			if err := grants.revokeClient(id, rv); err != nil {
				return err
			}
			ended = append(ended, "client "+id)
		}
		for id, fp := range prev.Agents {
			now, kept := cur.Agents[id]
			var err error
			switch {
			case !kept:
				removed = append(removed, id)
				err = grants.revokeAgent(id, rv)
			case now != fp:
				err = grants.revokeAgentOwn(id, rv)
			default:
				continue
			}
			if err != nil {
				return err
			}
			ended = append(ended, "agent "+id)
		}
		if err := consentsIn(tx).deleteNaming(removed...); err != nil {
			return err
		}
		for name, fp := range prev.IdentityProviders {
			if now, kept := cur.IdentityProviders[name]; kept && now == fp {
				continue
			}
			err := usersIn(tx).each(func(u *User) error {
				if u.IdentityProvider != name {
					return nil
				}
				return signOutUser(tx, u.Username, rv)
			})
			if err != nil {
				return err
			}
			ended = append(ended, "identity_provider "+name)
		}
		return configs.put(i.URL(), &cur)
	})
	if err != nil {
		return fmt.Errorf("apply configuration changes: %w", err)
	}
	if len(ended) > 0 {
		i.sec.Info("configuration removed or re-keyed principals; their grants are revoked", zap.Strings("principals", ended))
	}
	return nil
}
