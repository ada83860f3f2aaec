package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// ToolPin is what is pinned of one tool of one MCP resource: the
// definition gateways admit, and a different one its server offered
// since, awaiting an operator's review. Gateways hash definitions (the
// gateway's canonical JSON); the store keeps the canonical definition for
// review.
type ToolPin struct {
	Resource string          `json:"resource"`
	Tool     string          `json:"tool"`
	Pinned   *ToolDefinition `json:"pinned,omitempty"`
	Pending  *ToolDefinition `json:"pending,omitempty"`
}

// ToolDefinition is one definition of a tool.
type ToolDefinition struct {
	Hash       string          `json:"hash"`
	Definition json.RawMessage `json:"definition"`
	// At is when it was pinned, or first offered (pending).
	At time.Time `json:"at"`
	// By is how a pinned definition was pinned: PinnedByFirstUse or
	// PinnedByOperator.
	By string `json:"by,omitempty"`
	// Rejected marks a pending definition an operator refused: it stays
	// refused, and is no longer news.
	Rejected bool `json:"rejected,omitempty"`
}

// How a definition came to be pinned.
const (
	PinnedByFirstUse = "first_use"
	PinnedByOperator = "operator"
)

// ErrPinMismatch: an approval or rejection named a definition hash the
// tool's pin does not hold (the server changed it again meanwhile).
var ErrPinMismatch = errors.New("the tool's definition is not the one named")

// ToolPins keeps tool pins in a store, shared by every instance on it.
type ToolPins struct {
	st  store.Store
	now func() time.Time
}

// NewToolPins returns the tool pins kept in st; now defaults to time.Now.
func NewToolPins(st store.Store, now func() time.Time) *ToolPins {
	if now == nil {
		now = time.Now
	}
	return &ToolPins{st: st, now: now}
}

// ToolPins returns the tool pins in the issuer's store.
func (i *Issuer) ToolPins() *ToolPins { return NewToolPins(i.store, i.cfg.Now) }

// List returns the pins of resource, or of every resource for "".
func (p *ToolPins) List(ctx context.Context, resource string) ([]ToolPin, error) {
	var out []ToolPin
	err := p.st.View(ctx, func(tx store.Tx) (err error) {
		out, err = toolPinsIn(tx).list(resource)
		return err
	})
	return out, err
}

// Get returns one tool's pin, or an error wrapping store.ErrNotFound.
func (p *ToolPins) Get(ctx context.Context, resource, tool string) (ToolPin, error) {
	var out ToolPin
	err := p.st.View(ctx, func(tx store.Tx) (err error) {
		out, err = toolPinsIn(tx).get(resource, tool)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return ToolPin{}, errNoPin(resource, tool)
	}
	return out, err
}

// Observe records that resource's server offers tool with definition def
// (canonical JSON) of hash. With no record of the tool yet and firstUse,
// def is pinned; a definition other than the pinned one becomes pending
// (replacing an older pending one); the pinned one again clears what was
// pending. A tool with a pending definition and none pinned (offered for
// review in approved mode, rejected or not, or a lookalike name) is not
// pinned on first use: a switch to first_use must not turn what awaits
// or failed review into a pin, nor may a server shake off a rejection by
// changing the definition. It returns the pin afterwards and whether it
// changed.
func (p *ToolPins) Observe(ctx context.Context, resource, tool, hash string, def []byte, firstUse bool) (ToolPin, bool, error) {
	if resource == "" || tool == "" || hash == "" {
		return ToolPin{}, false, fmt.Errorf("%w: resource, tool and hash are required", ErrInvalidEntry)
	}
	var out ToolPin
	var changed bool
	err := p.st.Update(ctx, func(tx store.Tx) error {
		changed = false
		r := toolPinsIn(tx)
		cur, err := r.get(resource, tool)
		switch {
		case errors.Is(err, store.ErrNotFound):
			cur = ToolPin{Resource: resource, Tool: tool}
		case err != nil:
			return err
		}
		out = cur
		d := &ToolDefinition{Hash: hash, Definition: def, At: p.now().UTC()}
		switch {
		case cur.Pinned == nil && cur.Pending == nil && firstUse:
			d.By = PinnedByFirstUse
			out.Pinned, out.Pending = d, nil
		case cur.Pinned != nil && cur.Pinned.Hash == hash:
			if cur.Pending == nil {
				return nil
			}
			out.Pending = nil
		case cur.Pending != nil && cur.Pending.Hash == hash:
			return nil
		default:
			out.Pending = d
		}
		changed = true
		return r.put(out)
	})
	return out, changed, err
}

// Approve pins the tool's pending definition, or confirms a first-use
// pin when nothing is pending, as the operator's. hash, when not empty,
// must name that definition, so that an approval never covers a
// definition the operator has not seen.
func (p *ToolPins) Approve(ctx context.Context, resource, tool, hash string) (ToolPin, error) {
	return p.change(ctx, resource, tool, func(pin *ToolPin) error {
		d := pin.Pending
		if d == nil {
			d = pin.Pinned
		}
		if hash != "" && d.Hash != hash {
			return fmt.Errorf("%w: %s holds %s", ErrPinMismatch, tool, d.Hash)
		}
		d.By, d.Rejected, d.At = PinnedByOperator, false, p.now().UTC()
		pin.Pinned, pin.Pending = d, nil
		return nil
	})
}

// Reject marks the tool's pending definition refused: gateways go on
// refusing it (and the pinned one, if any, stays pinned).
func (p *ToolPins) Reject(ctx context.Context, resource, tool, hash string) (ToolPin, error) {
	return p.change(ctx, resource, tool, func(pin *ToolPin) error {
		d := pin.Pending
		if d == nil {
			return fmt.Errorf("%w: %s has no definition awaiting review", ErrPinMismatch, tool)
		}
		if hash != "" && d.Hash != hash {
			return fmt.Errorf("%w: %s holds %s", ErrPinMismatch, tool, d.Hash)
		}
		d.Rejected = true
		return nil
	})
}

// Forget removes the tool's pin and what is pending: gateways then treat
// the tool as never seen (first_use pins the next definition listed,
// approved mode refuses it until approved). hash, when not empty, must
// name the pinned definition (the pending one when nothing is pinned). It
// returns what was removed.
func (p *ToolPins) Forget(ctx context.Context, resource, tool, hash string) (ToolPin, error) {
	return p.update(ctx, resource, tool, func(pin *ToolPin) (bool, error) {
		d := pin.Pinned
		if d == nil {
			d = pin.Pending
		}
		if hash != "" && (d == nil || d.Hash != hash) {
			return false, fmt.Errorf("%w: %s is not pinned as %s", ErrPinMismatch, tool, hash)
		}
		return true, nil
	})
}

func (p *ToolPins) change(ctx context.Context, resource, tool string, fn func(*ToolPin) error) (ToolPin, error) {
	return p.update(ctx, resource, tool, func(pin *ToolPin) (bool, error) { return false, fn(pin) })
}

// errNoPin: the tool has neither a pin nor a definition awaiting review.
func errNoPin(resource, tool string) error {
	return notFound(fmt.Sprintf("tool %q of %s: no pin or pending definition", tool, resource))
}

// update applies fn to the tool's pin, then stores the pin, or removes it
// when fn says so.
func (p *ToolPins) update(ctx context.Context, resource, tool string, fn func(*ToolPin) (remove bool, err error)) (ToolPin, error) {
	var out ToolPin
	err := p.st.Update(ctx, func(tx store.Tx) error {
		r := toolPinsIn(tx)
		cur, err := r.get(resource, tool)
		if err != nil {
			return err
		}
		remove, err := fn(&cur)
		if err != nil {
			return err
		}
		out = cur
		if remove {
			return r.delete(resource, tool)
		}
		return r.put(cur)
	})
	if errors.Is(err, store.ErrNotFound) {
		return ToolPin{}, errNoPin(resource, tool)
	}
	return out, err
}
