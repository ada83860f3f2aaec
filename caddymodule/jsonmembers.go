package caddymodule

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

// UnmarshalJSON reads the app's JSON configuration strictly, as Caddy
// does, refusing a member given twice (see checkMembers), and a
// revocation_max_stale of 0, which the Caddyfile cannot write
// (durationArg): 0 reads as the default, 30 seconds, so written to have
// the gateways refuse tokens as soon as the revocations may be stale it
// let them take tokens revoked elsewhere for 30 seconds more.
func (a *App) UnmarshalJSON(b []byte) error {
	type plain App
	if err := decodeMembersOnce(b, (*plain)(a)); err != nil {
		return err
	}
	var given struct {
		MaxStale *caddy.Duration `json:"revocation_max_stale"`
	}
	if err := json.Unmarshal(b, &given); err != nil {
		return err
	}
	if given.MaxStale != nil && *given.MaxStale == 0 {
		return fmt.Errorf("revocation_max_stale 0: want a duration of at least twice revocation_resync, such as \"2s\" (0 would mean the default, %v)", issuer.DefaultRevocationMaxStale)
	}
	return nil
}

// UnmarshalJSON reads the gateway's JSON configuration strictly, as Caddy
// does, refusing a member given twice (see checkMembers).
func (h *GatewayHandler) UnmarshalJSON(b []byte) error {
	type plain GatewayHandler
	return decodeMembersOnce(b, (*plain)(h))
}

// decodeMembersOnce decodes b into v strictly (unknown fields refused, as
// caddy.StrictUnmarshalJSON does) once checkMembers found every member
// named once.
func decodeMembersOnce(b []byte, v any) error {
	if err := checkMembers(b, reflect.TypeOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// checkMembers refuses JSON that names a member of one object twice:
// encoding/json keeps the last silently, and matches a struct's field
// names without case, so {"pin_tools": "approved", "PIN_TOOLS": "off"}
// switched pinning off unnoticed, where the Caddyfile refuses a
// subdirective given twice (oneArg). (Caddy reads a handler's
// configuration into a map before it is decoded here, keeping the last
// of two members of one name: there only names differing in case are
// left to refuse.) t, the type b decodes into, tells
// a struct's fields (compared as encoding/json matches them) from a
// map's keys (compared exactly: scopes and group names are
// case-sensitive).
func checkMembers(b []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return walkMembers(dec, t, "")
}

func walkMembers(dec *json.Decoder, t reflect.Type, at string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]jsonField
		var elem reflect.Type
		switch {
		case t != nil && t.Kind() == reflect.Struct:
			fields = jsonFields(t)
		case t != nil && t.Kind() == reflect.Map:
			elem = t.Elem()
		}
		seen := map[string]string{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			name := tok.(string)
			key, next := name, elem
			if f, ok := fields[foldName(name)]; ok {
				key, next = f.name, f.typ
			}
			if prev, ok := seen[key]; ok {
				return fmt.Errorf("%s: member %q given twice (as %q before): JSON would keep the last silently", cmp.Or(at, "configuration"), name, prev)
			}
			seen[key] = name
			if err := walkMembers(dec, next, at+"/"+name); err != nil {
				return err
			}
		}
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for n := 0; dec.More(); n++ {
			if err := walkMembers(dec, elem, fmt.Sprintf("%s/%d", at, n)); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// jsonField is a struct field as encoding/json decodes into it.
type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields are t's fields by folded JSON name, those of embedded
// structs included, as encoding/json finds them.
func jsonFields(t reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[foldName(name)] = jsonField{name, f.Type}
	}
	return out
}

// foldName is name as encoding/json compares field names: ASCII letters
// in upper case, every other rune the least of its Unicode case folding
// orbit (so "ſcopes", with U+017F, names scopes).
func foldName(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b.WriteRune(r)
			continue
		}
		for {
			next := unicode.SimpleFold(r)
			if next <= r {
				r = next
				break
			}
			r = next
		}
		b.WriteRune(r)
	}
	return b.String()
}
