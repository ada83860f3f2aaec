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
	v := struct {
		*plain
		MaxDepth *int `json:"max_depth,omitempty"`
	}{plain: (*plain)(r)}
	if err := strictJSON(b, &v); err != nil {
		return err
	}
	return jsonMaxDepth(&r.MaxDepth, v.MaxDepth, "no limit; user_only refuses delegated tokens")
}

// UnmarshalJSON reads an agent, refusing "max_depth": 0 (see Rule's).
func (a *Agent) UnmarshalJSON(b []byte) error {
	type plain Agent
	v := struct {
		*plain
		MaxDepth *int `json:"max_depth,omitempty"`
	}{plain: (*plain)(a)}
	if err := strictJSON(b, &v); err != nil {
		return err
	}
	return jsonMaxDepth(&a.MaxDepth, v.MaxDepth, "the issuer's limit, 5")
}

// strictJSON decodes b into v refusing unknown fields: Caddy decodes a
// config strictly, and a type's own UnmarshalJSON would otherwise let
// a misspelt field inside it load unnoticed.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func jsonMaxDepth(dst, given *int, zero string) error {
	if given == nil {
		return nil
	}
	if *given == 0 {
		return fmt.Errorf("max_depth 0: want at least 1 (0 would mean %s)", zero)
	}
	*dst = *given
	return nil
}
