package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// UnmarshalJSON reads a rule, refusing "max_depth": 0 as the Caddyfile
// does (maxDepthArg): 0 is what an absent max_depth reads as, no limit,
// so written to allow no delegation it would allow the most (review
// s17-fresh3 F3).
func (r *Rule) UnmarshalJSON(b []byte) error {
	type plain Rule
	return decodeMaxDepthGiven(b, (*plain)(r), "no limit; user_only refuses delegated tokens")
}

// UnmarshalJSON reads an agent, refusing "max_depth": 0 (see Rule's).
func (a *Agent) UnmarshalJSON(b []byte) error {
	type plain Agent
	return decodeMaxDepthGiven(b, (*plain)(a), "the issuer's limit, 5")
}

// decodeMaxDepthGiven decodes b into v strictly, as Caddy decodes a
// config (a type's own UnmarshalJSON would otherwise let a misspelt
// field inside it load unnoticed), and refuses a max_depth given as 0,
// which would mean zero.
func decodeMaxDepthGiven(b []byte, v any, zero string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	var given struct {
		MaxDepth *int `json:"max_depth"`
	}
	if err := json.Unmarshal(b, &given); err != nil {
		return err
	}
	if given.MaxDepth != nil && *given.MaxDepth == 0 {
		return fmt.Errorf("max_depth 0: want at least 1 (0 would mean %s)", zero)
	}
	return nil
}
