package issuer

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketToolPins: resource + "\x00" + tool name -> ToolPin as JSON (never
// expires). The separator cannot occur in a resource URL, so a resource's
// pins are the keys with its prefix.
const bucketToolPins = "tool_pins"

func toolPinKey(resource, tool string) string { return resource + "\x00" + tool }

// toolPinRecords are the tool pins of a store transaction.
type toolPinRecords struct{ tx store.Tx }

func toolPinsIn(tx store.Tx) toolPinRecords { return toolPinRecords{tx} }

// get returns the tool's pin, or store.ErrNotFound.
func (r toolPinRecords) get(resource, tool string) (ToolPin, error) {
	v, err := r.tx.Get(bucketToolPins, toolPinKey(resource, tool))
	if err != nil {
		return ToolPin{}, err
	}
	var p ToolPin
	if err := json.Unmarshal(v, &p); err != nil {
		return ToolPin{}, fmt.Errorf("tool pin %q: %w", tool, err)
	}
	return p, nil
}

func (r toolPinRecords) put(p ToolPin) error {
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return r.tx.Put(bucketToolPins, toolPinKey(p.Resource, p.Tool), v, time.Time{})
}

func (r toolPinRecords) delete(resource, tool string) error {
	return r.tx.Delete(bucketToolPins, toolPinKey(resource, tool))
}

// list returns the pins of resource ("" for every resource), in key order.
func (r toolPinRecords) list(resource string) ([]ToolPin, error) {
	prefix := ""
	if resource != "" {
		prefix = toolPinKey(resource, "")
	}
	var out []ToolPin
	err := r.tx.List(bucketToolPins, prefix, func(key string, v []byte) error {
		var p ToolPin
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("tool pin %q: %w", strings.ReplaceAll(key, "\x00", " "), err)
		}
		out = append(out, p)
		return nil
	})
	return out, err
}
