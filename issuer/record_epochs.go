package issuer

import (
	"errors"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketEpochs: principal key -> when what the principal held last ended
// (a client deleted or re-keyed, an agent deleted, disabled or re-keyed, a
// user removed or given a new password).
//
// Revoking a principal's grants cannot reach a token request that
// authenticated before the revocation and records its grant after it. So
// every revocation also stamps the principal, in the same transaction,
// and the minter refuses, in the transaction that records an issuance,
// an issuance whose principals were stamped after its basis (the time
// the request began, or the user's login for a code). The store's
// updates are serialised: either the revocation commits first and the
// issuance sees the stamp, or the issuance commits first and the
// revocation finds and revokes its grant.
const bucketEpochs = "epochs"

// epochKeep is how long a stamp outlives the revocation's until: past
// the longest a code may live (Config.CodeTTL is at most 10 minutes), so
// a code issued before the stamp cannot outlive it.
const epochKeep = 10 * time.Minute

// epochKeepAssertion is how long after the revocation a stamp lasts at
// least: an ID-JAG issued before it, which rests on the login it vouches
// for, lives up to maxAssertionLifetime (and the leeway) from its iat,
// however short access_token_ttl makes until.
const epochKeepAssertion = maxAssertionLifetime + idJAGLeeway

type epoch struct {
	At time.Time `json:"at"`
}

// Principal keys of the epochs bucket: the authenticated client (an agent
// authenticating for itself is one too), an actor agent, a user.
func clientPrincipal(id string) string { return "client:" + id }
func agentPrincipal(id string) string  { return "agent:" + id }
func userPrincipal(name string) string { return "user:" + name }

// redirectsPrincipal is stamped when a redirect URI is taken from a
// client's registration (UpdateClient): the codes issued before are
// refused, whichever URI they went to (a code does not record where it
// went when the request named none). The client's grants stay.
func redirectsPrincipal(id string) string { return "redirects:" + id }

// connectionPrincipal is stamped when a user revokes a connection
// (revokeConnection): the codes issued for it before are refused, as its
// grants are revoked, so that a client holding an unredeemed code (a
// remembered consent gives one with prompt=none at any time) cannot
// reconnect itself after the user cut it off.
func connectionPrincipal(user, clientID, resource, actor string) string {
	return "connection:" + consentKey(user, clientID, resource, actor)
}

// revocation is when a revoking action happens (at) and until when what
// it revokes must stay refused (every access token issued before at has
// expired by until).
type revocation struct{ at, until time.Time }

// principalBasis is one principal of an issuance and the time it was
// established for the issuance: a stamp after basis refuses it.
type principalBasis struct {
	key   string
	basis time.Time
}

type epochRecords struct{ t table[epoch] }

func epochsIn(tx store.Tx) epochRecords { return epochRecords{table[epoch]{tx, bucketEpochs}} }

// stamp records that what the principal key held ended at rv.at. A
// stamp already later (another instance's, whose clock is ahead) moves
// on by a nanosecond rather than stay as it was: what recorded the stamp
// it read (a code's conn) must see it changed. One of the same instant
// (a coarse clock) stays: an issuance of that instant is allowed (ended).
func (r epochRecords) stamp(key string, rv revocation) error {
	old, err := r.t.get(key)
	switch {
	case ignoreNotFound(err) != nil:
		return err
	case err == nil && rv.at.Equal(old.At):
		return nil
	case err == nil && rv.at.Before(old.At):
		rv.at = old.At.Add(time.Nanosecond)
	}
	keep := rv.until.Add(epochKeep)
	if k := rv.at.Add(epochKeepAssertion); k.After(keep) {
		keep = k
	}
	return r.t.put(key, &epoch{At: rv.at}, keep)
}

// tokenHorizon is the key of the epochs bucket that holds a time no access
// token issued so far outlives: a grant's revocation marker lasts at least
// until then (revokeGrantTokens), so that lowering access_token_ttl (a
// reload, or an instance with the new configuration beside one with the
// old) cannot let a marker expire before the longer-lived tokens it
// refuses, which would then pass again.
const tokenHorizon = "horizon:access_tokens"

// horizonSlack is how far past a new token's exp the horizon is moved,
// so that steady issuance writes it once per slack, not per token.
const horizonSlack = 5 * time.Minute

// coverToken moves the horizon past exp when exp is beyond it.
func (r epochRecords) coverToken(exp time.Time) error {
	h, err := r.horizon()
	if err != nil || exp.Before(h) {
		return err
	}
	h = exp.Add(horizonSlack)
	return r.t.put(tokenHorizon, &epoch{At: h}, h)
}

// at is when what the principal key held last ended, zero for never
// (or long ago: the stamp expired).
func (r epochRecords) at(key string) (time.Time, error) {
	e, err := r.t.get(key)
	if err != nil {
		return time.Time{}, ignoreNotFound(err)
	}
	return e.At, nil
}

// horizon is the time no access token issued so far outlives (zero when
// none is recorded).
func (r epochRecords) horizon() (time.Time, error) {
	e, err := r.t.get(tokenHorizon)
	if err != nil {
		return time.Time{}, ignoreNotFound(err)
	}
	return e.At, nil
}

// ended returns the first of bases whose principal was stamped strictly
// after its basis ("" for none). Strictly: an issuance that began the
// instant of a revocation, which a coarse clock cannot order, is allowed.
func (r epochRecords) ended(bases []principalBasis) (string, error) {
	for _, b := range bases {
		e, err := r.t.get(b.key)
		switch {
		case err == nil && e.At.After(b.basis):
			return b.key, nil
		case ignoreNotFound(err) != nil:
			return "", err
		}
	}
	return "", nil
}

// errSignedOut: the user's password changed or the user was removed
// after the login began; no session or code rests on that login.
var errSignedOut = errors.New("user signed out during the login")

// signedOut is errSignedOut when the user was stamped after a login at
// authTime.
func (r epochRecords) signedOut(user string, authTime time.Time) error {
	switch ended, err := r.ended([]principalBasis{{userPrincipal(user), authTime}}); {
	case err != nil:
		return err
	case ended != "":
		return errSignedOut
	}
	return nil
}
