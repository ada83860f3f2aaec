package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// PinMode says whether and how the gateway pins tool definitions: a tool
// whose definition (as the server lists it) differs from its pin is hidden
// from tools/list answers and its calls are refused, so a server cannot
// change a reviewed tool behind the operator's back.
type PinMode uint8

const (
	// PinOff trusts every definition the server lists.
	PinOff PinMode = iota
	// PinFirstUse pins the first definition seen of each tool.
	PinFirstUse
	// PinApproved admits only definitions an operator approved.
	PinApproved
)

// ParsePinMode reads "off", "first_use" or "approved".
func ParsePinMode(s string) (PinMode, error) {
	for m := PinOff; m <= PinApproved; m++ {
		if s == m.String() {
			return m, nil
		}
	}
	return PinOff, fmt.Errorf("pin mode %q: want off, first_use or approved", s)
}

func (m PinMode) String() string {
	switch m {
	case PinFirstUse:
		return "first_use"
	case PinApproved:
		return "approved"
	}
	return "off"
}

// Pin is what a PinStore holds for one tool of one resource. Hashes are
// the hex SHA-256 of a definition's canonical JSON (canonicalJSON).
type Pin struct {
	Pinned   string // the pinned definition, "" when none
	Operator bool   // an operator approved Pinned (rather than first use)
	Pending  string // a definition the server offered that differs from Pinned, "" when none
	// Size is the bytes of the definitions the store keeps for the tool
	// (pinned and pending), 0 when the store does not say.
	Size int64
}

// PinStore keeps tool pins where every gateway instance serving the
// resource sees them; operators approve through it (the local issuer's
// store, in the Caddy adapter). The gateway reads it only to refresh its
// in-memory copy (Config.PinReload) and when a list shows a definition
// it has no record of.
type PinStore interface {
	// LoadPins returns the pins of every tool of resource by name.
	LoadPins(ctx context.Context, resource string) (map[string]Pin, error)
	// ObservePin records, atomically, that resource's server offers tool
	// with definition def (canonical JSON) whose hash is hash: with no
	// record of the tool yet (nothing pinned or pending) and firstUse,
	// def becomes the pin; a definition other than
	// the pinned one becomes Pending; the pinned one again clears
	// Pending. It returns the tool's pin afterwards, the pinned
	// definition when hash differs from it (for the audit's diff), and
	// whether the record changed.
	ObservePin(ctx context.Context, resource, tool, hash string, def []byte, firstUse bool) (p Pin, pinnedDef []byte, changed bool, err error)
}

// DefaultPinReload is how often pins are reloaded from the store, so that
// an approval made through another instance takes effect here.
const DefaultPinReload = 5 * time.Second

// maxPinFetches bounds the tools/list requests the gateway makes itself
// at once (see learnTools), and maxPinFetchesPerPrincipal those made for
// one principal (principal.holder): each of its sessions and clients is a
// fetch of its own, which an upstream slow for it holds up to the fetch
// timeout, and one principal must not hold every slot the others' first
// calls wait for.
const (
	maxPinFetches             = 4
	maxPinFetchesPerPrincipal = 2
)

// pinFetchMemory is how long a completed tools/list fetch stands for its
// key (fetchKey): a call naming a tool it did not list is refused without
// another fetch meanwhile, unless the server said its list changed, so a
// caller naming tools no list shows cannot make the upstream list its
// tools per call. A tool the server adds without saying so is found once
// it has passed.
const pinFetchMemory = 5 * time.Second

// maxPinFetchMemory bounds the keys pinFetchMemory remembers; past it
// the oldest is forgotten.
const maxPinFetchMemory = 1024

// maxPinnedTools bounds the pins of one resource: a pin never expires, so
// a server listing ever new names (one turned malicious, which pinning is
// for) would otherwise grow the shared store, and every gateway's memory
// of it, without bound. Past it, a name without a pin is hidden and not
// recorded, and its calls are refused, until an operator forgets pins.
// Each instance counts what it knows (its last load and its own
// records), so instances together may go past it a little.
const maxPinnedTools = 10000

// maxToolDefinition bounds one definition the gateway learns (its
// canonical JSON), and maxPinnedBytes the definitions the store keeps
// for one resource (pinned and pending, Pin.Size): the count alone let a
// server turned malicious list 10,000 new names of megabytes each, a
// listing at a time, each definition written to the store (read whole
// at every reload, every PinReload) and its schema's defaults and
// parameters kept in every gateway's memory. A larger definition is
// hidden and not recorded, as one that cannot be canonicalized; past
// the bytes a definition not recorded yet is hidden as past the count.
const (
	maxToolDefinition = 1 << 20
	maxPinnedBytes    = 64 << 20
)

// pinSet is a gateway's view of its resource's pins: the store's records
// and the definitions this instance last saw listed, kept in memory so
// that a call costs map lookups.
type pinSet struct {
	mode     PinMode
	store    PinStore
	resource string
	reload   time.Duration
	max      int   // maxPinnedTools
	maxBytes int64 // maxPinnedBytes
	g        *Gateway

	view    atomic.Pointer[pinView]
	mu      sync.Mutex  // serializes changes to view
	loading atomic.Bool // a reload is under way
	gen     atomic.Uint64
	full    atomic.Bool // maxPinnedTools was reached (audited once each time)

	fetches  chan struct{}
	fmu      sync.Mutex
	inflight map[string]*pinFetch
	fetched  map[string]fetchedList  // by fetchKey, under fmu
	holders  map[string]*heldFetches // by principal.holder, under fmu
}

// heldFetches is one principal's share of the fetch slots: slots holds
// one token per fetch it runs, users counts the fetches that hold or wait
// for one (the entry goes with the last).
type heldFetches struct {
	slots chan struct{}
	users int
}

// fetchedList is a tools/list fetch that completed: when, and the list
// generation (pinSet.gen) it started in.
type fetchedList struct {
	at  time.Time
	gen uint64
}

// pinView is one immutable state of a pinSet; changes publish a copy.
type pinView struct {
	loaded  time.Time
	stored  toolMap[Pin]
	current toolMap[string] // tool → hash of the definition last listed
	// params: tool → its current definition's Mcp-Param-* headers
	// (paramHeaders).
	params toolMap[map[string][]string]
	// defaults: tool → what its current definition's input schema says
	// of defaults (readDefaults).
	defaults toolMap[*schemaDefaults]
	// loose: pinKey → pinned names in stored that fold to it, at most
	// loosePinned (addLoose), so that a new name is compared with its
	// lookalikes (resembling), not with every pin.
	loose toolMap[[]string]
	bytes int64 // the Size of the stored pins
	stale bool  // the server said its list changed: current needs a fetch
}

// pinVerdict is what pinning says of a call or a listed definition.
type pinVerdict uint8

const (
	pinOK          pinVerdict = iota
	pinUnknown                // no current definition known: fetch the list
	pinChanged                // the definition differs from its pin
	pinUnapproved             // no operator approval (approved mode), or no pin
	pinUnavailable            // the pin could not be recorded: the store is unavailable
)

// errPinsUnavailable: the pin store could not record a definition.
var errPinsUnavailable = errors.New("tool pins cannot be recorded")

func (v pinVerdict) reason() string {
	switch v {
	case pinChanged:
		return "tool definition changed and needs approval"
	case pinUnapproved:
		return "tool definition is not approved"
	case pinUnavailable:
		return "tool pins are temporarily unavailable"
	}
	return "tool definition unknown"
}

func newPinSet(g *Gateway, cfg *Config) *pinSet {
	s := &pinSet{
		mode:     cfg.PinTools,
		store:    cfg.Pins,
		resource: cfg.Resource,
		reload:   cfg.PinReload,
		max:      maxPinnedTools,
		maxBytes: maxPinnedBytes,
		g:        g,
		fetches:  make(chan struct{}, maxPinFetches),
		inflight: map[string]*pinFetch{},
		fetched:  map[string]fetchedList{},
		holders:  map[string]*heldFetches{},
	}
	s.view.Store(&pinView{})
	return s
}

// judge says whether a definition of hash may be used under pin p.
func (s *pinSet) judge(p Pin, hash string) pinVerdict {
	switch {
	case p.Pinned == "" || (s.mode == PinApproved && !p.Operator):
		return pinUnapproved
	case hash != p.Pinned || p.Pending != "":
		// A pending definition another instance saw counts too, so that
		// every instance refuses the tool alike.
		return pinChanged
	}
	return pinOK
}

// callVerdict judges a call of tool by the definition last listed.
func (s *pinSet) callVerdict(ctx context.Context, tool string) pinVerdict {
	s.refresh(ctx)
	v := s.view.Load()
	cur, ok := v.current.get(tool)
	p := v.stored.at(tool)
	if !ok || v.stale || (s.mode == PinFirstUse && p == Pin{}) {
		// With no record (its pin was forgotten), first_use learns the
		// definition again, which pins it.
		return pinUnknown
	}
	return s.judge(p, cur)
}

// refresh reloads the pins from the store once Config.PinReload has
// passed since the last load. One request does it; others meanwhile use
// the pins they have, so the store is read once per period, never per
// request.
func (s *pinSet) refresh(ctx context.Context) {
	if s.g.now().Sub(s.view.Load().loaded) < s.reload || !s.loading.CompareAndSwap(false, true) {
		return
	}
	defer s.loading.Store(false)
	pins, err := s.store.LoadPins(ctx, s.resource)
	if err != nil {
		// The pins held stay in force; try again next period.
		s.g.log.Warn("tool pins not reloaded", zap.String("resource", s.resource), zap.Error(err))
	}
	s.update(func(v *pinView) {
		v.loaded = s.g.now()
		if err == nil {
			v.setStored(pins)
		}
	})
}

// ReloadPins reloads the tool pins from the store now, so that an
// approval made in this process applies at once (elsewhere it applies
// within Config.PinReload). It does nothing when pinning is off.
func (g *Gateway) ReloadPins(ctx context.Context) {
	if g.pins == nil {
		return
	}
	g.pins.update(func(v *pinView) { v.loaded = time.Time{} })
	g.pins.refresh(ctx)
}

// update publishes a changed copy of the view.
func (s *pinSet) update(change func(v *pinView)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.view.Load()
	v := &pinView{loaded: old.loaded, stored: old.stored.copied(), current: old.current.copied(), params: old.params.copied(),
		defaults: old.defaults.copied(), loose: old.loose.copied(), bytes: old.bytes, stale: old.stale}
	change(v)
	s.view.Store(v)
}

// setStored replaces the stored pins with pins.
func (v *pinView) setStored(pins map[string]Pin) {
	v.stored, v.loose, v.bytes = toolMapOf(pins), toolMap[[]string]{}, 0
	for name, p := range pins {
		v.addLoose(name, p)
		v.bytes += p.Size
	}
	v.loose.owned = 0
}

// store records tool's pin.
func (v *pinView) store(tool string, p Pin) {
	v.addLoose(tool, p)
	v.bytes += p.Size - v.stored.at(tool).Size
	v.stored.set(tool, p)
}

// loosePinned is how many pinned names loose keeps under a pinKey: two
// name one other than any tool, which is all resembling asks.
const loosePinned = 2

// addLoose records tool in loose if it is pinned and its pinKey has
// fewer than loosePinned pinned names. Keeping every name made a listing
// of lookalikes (2^14 case variants of one 14-letter name, all folding
// alike) cost the square of its tools again: each new name copied the
// names before it (the slice is shared with the published view), and
// resembling read past every unpinned one.
func (v *pinView) addLoose(tool string, p Pin) {
	if p.Pinned == "" {
		return
	}
	key := pinKey(tool)
	names := v.loose.at(key)
	if len(names) >= loosePinned || slices.Contains(names, tool) {
		return
	}
	v.loose.set(key, append(slices.Clip(names), tool))
}

// listChanged marks the current definitions stale after the server's
// notifications/tools/list_changed: the next call fetches the list.
func (s *pinSet) listChanged() {
	s.gen.Add(1)
	s.update(func(v *pinView) { v.stale = true })
}

// logTool is the operational log's field for a tool the server names,
// bounded as in the audit events (a name past SEP-986's 128 characters
// is only hidden from callers).
func logTool(tool string) zap.Field {
	tool, _, _ = auditText(tool, maxAuditName, false)
	return zap.String("tool", tool)
}

// listed learns one tool definition as the server lists it and says
// whether the listing may show it, and the definition's hash ("" when it
// cannot be canonicalized). A definition that cannot be canonicalized,
// or whose pin cannot be recorded (err wraps errPinsUnavailable), is
// hidden; nothing is remembered of the latter, so that the next listing
// or call tries again.
func (s *pinSet) listed(ctx context.Context, tool string, raw []byte) (keep bool, hash string, err error) {
	s.refresh(ctx)
	canon, err := canonicalJSON(raw)
	if err != nil {
		s.g.log.Warn("tool definition hidden: not canonicalizable", zap.String("resource", s.resource), logTool(tool), zap.Error(err))
		s.g.metrics.ToolPin("hidden")
		s.forget(tool)
		return false, "", nil
	}
	hash = definitionHash(canon)
	v := s.view.Load()
	p, cur := v.stored.at(tool), v.current.at(tool)
	known := (p.Pinned == hash && p.Pending == "") || (p.Pinned != hash && p.Pending == hash)
	// The pinned definition listed again (a pending one then cleared) is
	// recorded already: one pinned before the size bound stays shown.
	if !known && p.Pinned != hash && len(canon) > maxToolDefinition {
		s.g.log.Warn("tool definition hidden: larger than "+strconv.Itoa(maxToolDefinition)+" bytes", zap.String("resource", s.resource), logTool(tool), zap.Int("bytes", len(canon)))
		s.g.metrics.ToolPin("hidden")
		s.forget(tool)
		return false, "", nil
	}
	// The pinned definition listed again only clears a pending one: the
	// store shrinks, and the bytes bound must not hide the approved tool.
	if !known && (p == (Pin{}) || p.Pinned != hash && v.bytes+int64(len(canon)) > s.maxBytes) {
		if v.stored.len() >= s.max || v.bytes+int64(len(canon)) > s.maxBytes {
			if s.full.CompareAndSwap(false, true) {
				// Not a definition to review: counted as hidden below.
				s.auditEvent("tool pins full: new tools are hidden until pins are forgotten", tool, false, false, zap.Int("pins", v.stored.len()), zap.Int64("bytes", v.bytes))
			}
			s.g.metrics.ToolPin("hidden")
			if p != (Pin{}) && cur != hash {
				// A tool with a pin, listed otherwise: judged by what
				// was listed, as when the change is recorded, so its
				// calls are refused as a changed tool's rather than
				// passing under the definition listed before. Audited
				// once per definition offered, by each instance (nothing
				// is recorded to say another saw it), and not counted
				// as changed, which the recording instance counts.
				s.auditEvent("tool definition changed", tool, false, false,
					zap.String("pinned_hash", p.Pinned), zap.String("offered_hash", hash),
					zap.Bool("recorded", false))
				s.update(func(v *pinView) { v.current.set(tool, hash) })
			}
			return false, hash, nil
		}
		s.full.Store(false) // pins were forgotten: a fill again is audited again
	}
	if !known {
		firstUse, resembles := s.mode == PinFirstUse, ""
		if firstUse && p.Pinned == "" {
			// A new name that a client, model or server could take for a
			// pinned tool's needs an operator's approval.
			if resembles = v.resembling(tool); resembles != "" {
				firstUse = false
			}
		}
		np, pinnedDef, changed, err := s.store.ObservePin(ctx, s.resource, tool, hash, canon, firstUse)
		if err != nil {
			s.g.log.Warn("tool definition hidden: pin not recorded", zap.String("resource", s.resource), logTool(tool), zap.Error(err))
			s.g.metrics.ToolPin("hidden")
			s.forget(tool)
			return false, hash, fmt.Errorf("%w: %w", errPinsUnavailable, err)
		}
		p = np
		switch {
		case changed && resembles != "" && p.Pinned == "":
			pinnedTool, cut, escaped := auditText(resembles, maxAuditName, false)
			s.audit("tool name resembles a pinned tool's", tool, cut, escaped,
				zap.String("pinned_tool", pinnedTool), zap.String("offered_hash", hash))
		case changed && p.Pending == hash:
			s.auditChange(tool, p.Pinned, hash, pinnedDef, canon)
		}
	}
	if !known || cur != hash {
		params, defaults := paramHeaders(canon), readDefaults(canon)
		s.update(func(v *pinView) {
			v.store(tool, p)
			v.current.set(tool, hash)
			v.params.set(tool, params)
			v.defaults.set(tool, defaults)
		})
	}
	if s.judge(p, hash) != pinOK {
		s.g.metrics.ToolPin("hidden")
		return false, hash, nil
	}
	return true, hash, nil
}

// forget takes tool out of the current set: the server now lists a
// definition of it that could not be judged (not canonicalizable, or its
// pin not recorded). A call of it then fetches the list again, and is
// refused while that definition stays unjudged, rather than passing
// under the definition listed before. Its params and defaults stay:
// they are those of the definition judged last, which is the one the
// current set names again if the server lists it again (a fetch under
// way may put it back).
func (s *pinSet) forget(tool string) {
	if _, ok := s.view.Load().current.get(tool); !ok {
		return
	}
	s.update(func(v *pinView) { v.current.del(tool) })
}

// resembling returns a pinned tool whose name is not tool but folds as
// tool's does (pinKey), "" when none.
func (v *pinView) resembling(tool string) string {
	for _, name := range v.loose.at(pinKey(tool)) {
		if name != tool && v.stored.at(name).Pinned != "" {
			return name
		}
	}
	return ""
}

// pinKey folds a tool name as the policy reads names loosely (looseName:
// case, Unicode case folding, the separators - . / _), cut at a NUL, as
// C-string decoders read it, and as Windows reads a file name
// (windowsName: a segment's trailing dots dropped), as decideCaseless
// reads it too: a server that puts tool names in paths runs the pinned
// read_file for a new "read_file.", whose definition no one reviewed.
func pinKey(name string) string {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if read, ok := windowsName(name); ok {
		name = read
	}
	return looseName(name)
}

// auditChange records a definition the server offers that differs from
// the pin (or, in approved mode, a tool no one approved yet): which
// members differ, not the whole definitions (the admin API shows them).
// A member's pointer is made of the server's keys, so each is bounded
// as a URI is in the request events.
func (s *pinSet) auditChange(tool, pinned, offered string, pinnedDef, offeredDef []byte) {
	changes, cut, escaped := DefinitionChanges(pinnedDef, offeredDef), false, false
	for i, c := range changes {
		var cutOne, escOne bool
		changes[i], cutOne, escOne = auditText(c, maxAuditText, false)
		cut, escaped = cut || cutOne, escaped || escOne
	}
	s.audit("tool definition changed", tool, cut, escaped,
		zap.String("pinned_hash", pinned),
		zap.String("offered_hash", offered),
		zap.Strings("changes", changes),
	)
}

// audit records, and counts as "changed", a definition that needs an
// operator's review: one other than the pinned one, a tool no one
// approved yet in approved mode, a new name resembling a pinned tool's.
// The tool's name is the server's, bounded as a caller's is in the
// request events (auditText); cut, escaped: a field of fields was cut,
// or escaped, so.
func (s *pinSet) audit(msg, tool string, cut, escaped bool, fields ...zap.Field) {
	s.g.metrics.ToolPin("changed")
	s.auditEvent(msg, tool, cut, escaped, fields...)
}

// auditEvent is audit without the count.
func (s *pinSet) auditEvent(msg, tool string, cut, escaped bool, fields ...zap.Field) {
	tool, toolCut, toolEscaped := auditText(tool, maxAuditName, false)
	cut, escaped = cut || toolCut, escaped || toolEscaped
	fields = append([]zap.Field{zap.String("resource", s.resource), zap.String("tool", tool), zap.String("pin_mode", s.mode.String())}, fields...)
	if cut {
		fields = append(fields, zap.Bool("truncated", true))
	}
	if escaped {
		fields = append(fields, zap.Bool("escaped", true))
	}
	s.g.audit.Warn(msg, fields...)
}

// maxChanges bounds the paths DefinitionChanges lists.
const maxChanges = 20

// DefinitionChanges lists where two tool definitions (JSON) differ, as
// JSON Pointers marked "+" (only in b), "-" (only in a) or "~" (different
// values), in order, at most 20 (then "…"). With a empty, b is new: "+".
func DefinitionChanges(a, b []byte) []string {
	if len(a) == 0 {
		return []string{"+"}
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return []string{"~"}
	}
	var out []string
	diffValues(&out, "", va, vb)
	if len(out) > maxChanges {
		out = append(out[:maxChanges], "…")
	}
	return out
}

func diffValues(out *[]string, path string, a, b any) {
	if len(*out) > maxChanges {
		return
	}
	ma, aObj := a.(map[string]any)
	mb, bObj := b.(map[string]any)
	if aObj && bObj {
		keys := slices.Sorted(maps.Keys(ma))
		for k := range mb {
			if _, ok := ma[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := path + "/" + pointerEscaper.Replace(k)
			va, inA := ma[k]
			vb, inB := mb[k]
			switch {
			case !inA:
				*out = append(*out, "+"+p)
			case !inB:
				*out = append(*out, "-"+p)
			default:
				diffValues(out, p, va, vb)
			}
		}
		return
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		*out = append(*out, "~"+path)
	}
}
