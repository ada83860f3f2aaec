package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketIdPDisabled: "<provider>:<sub>" -> the names of that provider's
// accounts of sub an operator disabled, and idpDisabledComplete once an
// instance's start indexed every disabled account (indexDisabledUsers).
// An entry may name an account since enabled (deleting one takes it
// out): readers read each account again. Until the index is complete, readers read every
// user of the provider.
const bucketIdPDisabled = "idp_disabled"

// idpDisabledComplete names no provider's sub: it has no ':'.
const idpDisabledComplete = "complete"

type idpDisabledEntry struct {
	Names []string `json:"names,omitempty"`
}

type idpDisabledRecords struct{ t table[idpDisabledEntry] }

func idpDisabledIn(tx store.Tx) idpDisabledRecords {
	return idpDisabledRecords{table[idpDisabledEntry]{tx, bucketIdPDisabled}}
}

func idpDisabledKey(provider, sub string) string { return provider + ":" + sub }

// entryOf is u's entry (empty if there is none) and its key.
func (r idpDisabledRecords) entryOf(u *User) (string, *idpDisabledEntry, error) {
	key := idpDisabledKey(u.IdentityProvider, u.IdPSubject)
	e, err := r.t.get(key)
	if errors.Is(err, store.ErrNotFound) {
		return key, &idpDisabledEntry{}, nil
	}
	return key, e, err
}

// add indexes u, a disabled account, under its provider and sub; a
// user of no provider is not indexed.
func (r idpDisabledRecords) add(u *User) error {
	if u.IdentityProvider == "" {
		return nil
	}
	key, e, err := r.entryOf(u)
	if err != nil || slices.Contains(e.Names, u.Username) {
		return err
	}
	e.Names = append(e.Names, u.Username)
	return r.t.put(key, e, time.Time{})
}

// forget takes u, an account being deleted, out of the index, and the
// entry with it when u was its last name: the index must not keep a
// deleted account's name (an email address, say) and sub.
func (r idpDisabledRecords) forget(u *User) error {
	if u.IdentityProvider == "" {
		return nil
	}
	key, e, err := r.entryOf(u)
	if err != nil || !slices.Contains(e.Names, u.Username) {
		return err
	}
	e.Names = slices.DeleteFunc(e.Names, func(n string) bool { return n == u.Username })
	if len(e.Names) == 0 {
		return r.t.delete(key)
	}
	return r.t.put(key, e, time.Time{})
}

// names returns the accounts indexed under provider and sub, and whether
// the index is complete (if not, names is nil).
func (r idpDisabledRecords) names(provider, sub string) ([]string, bool, error) {
	switch done, err := r.t.has(idpDisabledComplete); {
	case err != nil || !done:
		return nil, false, err
	}
	e, err := r.t.get(idpDisabledKey(provider, sub))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, true, nil
	case err != nil:
		return nil, false, err
	}
	return e.Names, true, nil
}

func (r idpDisabledRecords) markComplete() error {
	return r.t.put(idpDisabledComplete, &idpDisabledEntry{}, time.Time{})
}

// indexDisabledUsers indexes the disabled accounts of identity providers
// that an earlier version disabled, or, during a rolling upgrade, one
// beside this instance, and marks the index complete. It runs at each
// start, as indexGrants does; until a pass completes, readers read every
// user of the provider.
func (i *Issuer) indexDisabledUsers(ctx context.Context) error {
	var disabled []string
	err := i.store.View(ctx, func(tx store.Tx) error {
		disabled = disabled[:0]
		return usersIn(tx).each(func(u *User) error {
			if u.Disabled && u.IdentityProvider != "" {
				disabled = append(disabled, u.Username)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("index disabled users: %w", err)
	}
	err = i.store.Update(ctx, func(tx store.Tx) error {
		index := idpDisabledIn(tx)
		for _, name := range disabled {
			switch u, err := usersIn(tx).get(name); {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			case u.Disabled:
				if err := index.add(u); err != nil {
					return err
				}
			}
		}
		return index.markComplete()
	})
	if err != nil {
		return fmt.Errorf("index disabled users: %w", err)
	}
	return nil
}
