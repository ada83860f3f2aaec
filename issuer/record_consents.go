package issuer

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketConsents: user, client_id, resource and actor joined by NUL ->
// consent. Consents do not expire; the user revokes them on the apps page.
const bucketConsents = "consents"

// consent remembers that a user approved scopes for a client, resource and
// actor, so the consent page is not shown again for the same or fewer scopes.
type consent struct {
	Scopes    []string  `json:"scopes"`
	GrantedAt time.Time `json:"granted_at"`
	// RedirectHosts, for a client whose publisher may change its redirect
	// URIs at any time (a metadata document's), are the redirect hosts
	// (consentTarget) its consent pages named when the user approved: a
	// redirect URI added later is not covered by the approval.
	RedirectHosts []string `json:"redirect_hosts,omitempty"`
}

// consentKey is the bucketConsents key.
func consentKey(user, clientID, resource, actor string) string {
	return user + "\x00" + clientID + "\x00" + resource + "\x00" + actor
}

// consentRecords are the users' remembered consents.
type consentRecords struct{ t table[consent] }

func consentsIn(tx store.Tx) consentRecords {
	return consentRecords{table[consent]{tx, bucketConsents}}
}

func (r consentRecords) get(user, clientID, resource, actor string) (*consent, error) {
	return r.t.get(consentKey(user, clientID, resource, actor))
}

// covers reports whether the user approved at least scopes for this
// client, resource and actor, and redirect host target unless it is "".
func (r consentRecords) covers(user, clientID, resource, actor string, scopes []string, target string) (bool, error) {
	cs, err := r.get(user, clientID, resource, actor)
	if err != nil {
		return false, ignoreNotFound(err)
	}
	if target != "" && !slices.Contains(cs.RedirectHosts, target) {
		return false, nil
	}
	for _, sc := range scopes {
		if !slices.Contains(cs.Scopes, sc) {
			return false, nil
		}
	}
	return true, nil
}

// add records approved scopes, and redirect host target unless it is "",
// adding to what was approved before. A new consent first forgets the
// consents forget names (toForget, read before the transaction).
func (r consentRecords) add(user, clientID, resource, actor string, scopes []string, target string, now time.Time, forget []string) error {
	key := consentKey(user, clientID, resource, actor)
	cs, err := r.t.get(key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		for _, k := range forget {
			if err := r.t.delete(k); err != nil {
				return err
			}
		}
		cs = &consent{GrantedAt: now}
	case err != nil:
		return err
	}
	for _, sc := range scopes {
		if !slices.Contains(cs.Scopes, sc) {
			cs.Scopes = append(cs.Scopes, sc)
		}
	}
	if cs.Scopes == nil {
		cs.Scopes = []string{}
	}
	if target != "" && !slices.Contains(cs.RedirectHosts, target) {
		cs.RedirectHosts = append(cs.RedirectHosts, target)
	}
	return r.t.put(key, cs, time.Time{})
}

func (r consentRecords) delete(user, clientID, resource, actor string) error {
	return r.t.delete(consentKey(user, clientID, resource, actor))
}

// ofUser calls fn for every consent the user gave.
func (r consentRecords) ofUser(user string, fn func(clientID, resource, actor string, cs *consent) error) error {
	return r.t.list(user+"\x00", func(key string, cs *consent) error {
		parts := strings.Split(key, "\x00")
		if len(parts) != 4 || parts[0] != user {
			return nil
		}
		return fn(parts[1], parts[2], parts[3], cs)
	})
}

// hasClient reports whether the user approved anything for the client,
// for any resource and actor, for redirect host target unless it is "".
func (r consentRecords) hasClient(user, clientID, target string) (bool, error) {
	found := false
	err := r.ofUser(user, func(id, _, _ string, cs *consent) error {
		found = found || id == clientID && (target == "" || slices.Contains(cs.RedirectHosts, target))
		return nil
	})
	return found, err
}

// deleteUser deletes every consent the user gave.
func (r consentRecords) deleteUser(user string) error {
	return r.t.list(user+"\x00", func(key string, _ *consent) error { return r.t.delete(key) })
}

// deleteNaming deletes every consent that names one of ids as its client
// or its actor (clients and agents share one namespace), so a client or
// agent added later under a removed one's id starts with no consent. The
// bucket is keyed by user first: this reads every consent.
func (r consentRecords) deleteNaming(ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	return r.t.list("", func(key string, _ *consent) error {
		parts := strings.Split(key, "\x00")
		if len(parts) != 4 || !slices.Contains(ids, parts[1]) && !slices.Contains(ids, parts[3]) {
			return nil
		}
		return r.t.delete(key)
	})
}

// maxUserConsents bounds the consents one user keeps: they do not expire,
// and anyone can make a client id (a client metadata document at a URL of
// their own), so a user approving ever new clients would otherwise grow
// the store without bound, and the reads of every consent of the user
// (hasClient, the apps page) with it.
const maxUserConsents = 1000

// toForget returns the keys of the user's oldest consents (by GrantedAt)
// to forget so that one more, for clientID, resource and actor, fits
// under maxUserConsents; none when that one is already remembered. Only
// the remembered approval goes: the app asks for consent again; its
// grants live on.
//
// It reads every consent of the user, so it runs in a read-only
// transaction before the one that adds (add): in that one, a read of the
// whole range would conflict with every concurrent write near it, and
// cost each approval of a user with many consents its retries. The bound
// is then approximate when one user approves several apps at once, and
// restored by the next approval, which forgets all that is over it.
func (r consentRecords) toForget(user, clientID, resource, actor string) ([]string, error) {
	switch _, err := r.get(user, clientID, resource, actor); {
	case err == nil:
		return nil, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	type entry struct {
		key     string
		granted time.Time
	}
	var all []entry
	err := r.t.list(user+"\x00", func(key string, cs *consent) error {
		all = append(all, entry{key, cs.GrantedAt})
		return nil
	})
	if err != nil || len(all) < maxUserConsents {
		return nil, err
	}
	slices.SortFunc(all, func(a, b entry) int { return a.granted.Compare(b.granted) })
	keys := make([]string, 0, len(all)-maxUserConsents+1)
	for _, e := range all[:len(all)-maxUserConsents+1] {
		keys = append(keys, e.key)
	}
	return keys, nil
}
