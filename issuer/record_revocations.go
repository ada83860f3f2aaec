package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketRevoked: an access token's jti, or "grant:"+grant id, -> an empty
// marker, until every token it refuses has expired.
const bucketRevoked = "revoked"

// revocationRecords are the markers that refuse access tokens before they
// expire.
type revocationRecords struct{ t table[struct{}] }

func revocationsIn(tx store.Tx) revocationRecords {
	return revocationRecords{table[struct{}]{tx, bucketRevoked}}
}

// revokeToken refuses the access token jti until exp.
func (r revocationRecords) revokeToken(jti string, exp time.Time) error {
	return r.t.put(jti, &struct{}{}, exp)
}

// revokeGrantTokens refuses every access token of the grant until until.
func (r revocationRecords) revokeGrantTokens(grantID string, until time.Time) error {
	return r.t.put("grant:"+grantID, &struct{}{}, until)
}

// revoked reports whether the token jti or its grant was revoked.
func (r revocationRecords) revoked(jti, grantID string) (bool, error) {
	if jti != "" {
		if ok, err := r.t.has(jti); ok || err != nil {
			return ok, err
		}
	}
	if grantID == "" {
		return false, nil
	}
	return r.t.has("grant:" + grantID)
}
