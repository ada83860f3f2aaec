package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Rule kinds, also the audit field that names the target.
const (
	kindTool     = "tool"
	kindPrompt   = "prompt"
	kindResource = "uri"
	kindMethod   = "method" // a method no revision defines, passed by a method rule
	kindBase     = ""       // any other method: base scopes only
)

// compiledRule is a Rule with its full requirement (rule scopes ∪ base
// scopes) computed once.
type compiledRule struct {
	Rule
	required []string // sorted, deduplicated
	foldLen  int      // resource prefixes: length of the case-insensitive head (see hasURIPrefix)
	loose    string   // tool and prompt globs: looseName of the pattern (see decideCaseless)
	args     []argCheck
}

// policy is the immutable decision table built by New.
type policy struct {
	base      []string
	implied   map[string][]string // scope -> every scope it implies, transitively (excluding itself)
	tools     []compiledRule
	prompts   []compiledRule
	resources []compiledRule
	methods   []compiledRule
	// claims are the claim paths argument rules read from tokens, other
	// than sub and client_id (see principal.claim).
	claims []string
}

// decision is the outcome for one JSON-RPC message.
type decision struct {
	allow    bool
	kind     string // kindTool, kindPrompt, kindResource or kindBase
	target   string // tool or prompt name, or resource URI
	rule     string // matched pattern, "" when none
	required []string
	reason   string
	// scopeOnly is set on a denial that more scope would cure; the answer
	// is then an insufficient_scope challenge.
	scopeOnly bool
	// args are the matched tool rule's argument rules; argument is the
	// pointer of the one that refused the call.
	args     []argCheck
	argument string
}

// errNoName marks a message that names no tool, prompt or resource where
// its method needs one: it cannot be classified, so it is refused.
var errNoName = errors.New("message names no target")

func newPolicy(cfg *Config) (*policy, error) {
	p := &policy{base: sortedSet(cfg.BaseScopes)}
	for _, s := range p.base {
		if err := ruleScope(s); err != nil {
			return nil, fmt.Errorf("base scope: %w", err)
		}
	}
	for broad, narrow := range cfg.Implies {
		if err := ruleScope(broad); err != nil {
			return nil, fmt.Errorf("implies: %w", err)
		}
		for _, s := range narrow {
			if err := ruleScope(s); err != nil {
				return nil, fmt.Errorf("implies %q: %w", broad, err)
			}
		}
	}
	p.implied = impliedClosure(cfg.Implies)
	var err error
	if p.tools, err = compileRules("tools", cfg.Tools, p.base, compileToolGlob); err != nil {
		return nil, err
	}
	if p.prompts, err = compileRules("prompts", cfg.Prompts, p.base, compilePromptGlob); err != nil {
		return nil, err
	}
	if p.resources, err = compileRules("resources", cfg.ResourceRules, p.base, compilePrefix); err != nil {
		return nil, err
	}
	// The longest prefix decides, the first of equal ones: a later rule
	// for the same prefix (written with the scheme or host in another
	// case, say) would silently never apply.
	for j, r := range p.resources {
		if i := slices.IndexFunc(p.resources[:j], func(e compiledRule) bool { return e.Pattern == r.Pattern }); i >= 0 {
			return nil, fmt.Errorf("resource rule %q is never reached: the rule %q before it has the same prefix (the longest matching prefix decides; give each prefix one rule)", r.Pattern, p.resources[i].Pattern)
		}
	}
	if p.methods, err = compileRules("methods", cfg.Methods, p.base, compileMethodPattern); err != nil {
		return nil, err
	}
	// Tools, prompts and methods take their first matching rule; tool
	// and prompt names are also read loosely (decideCaseless).
	for _, rules := range [...]struct {
		what  string
		rules []compiledRule
		loose bool
	}{{"tool", p.tools, true}, {"prompt", p.prompts, true}, {"method", p.methods, false}} {
		if err := refuseShadowed(rules.what, rules.rules, rules.loose); err != nil {
			return nil, err
		}
	}
	for _, r := range p.tools {
		for _, c := range r.args {
			for _, t := range c.values {
				for _, path := range t.claims() {
					if path != "sub" && path != "client_id" && !slices.Contains(p.claims, path) {
						p.claims = append(p.claims, path)
					}
				}
			}
		}
	}
	return p, nil
}

// compileRules checks rules and puts their patterns in canonical form
// (compile returns it with the pattern's foldLen).
func compileRules(what string, rules []Rule, base []string, compile func(string) (string, int, error)) ([]compiledRule, error) {
	out := make([]compiledRule, 0, len(rules))
	for i, r := range rules {
		pattern, foldLen, err := compile(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("%s rule %d %q: %w", what, i, r.Pattern, err)
		}
		r.Pattern = pattern
		for _, s := range r.Scopes {
			if err := ruleScope(s); err != nil {
				return nil, fmt.Errorf("%s rule %q: %w", what, r.Pattern, err)
			}
		}
		if err := validActorRule(r.Actor); err != nil {
			return nil, fmt.Errorf("%s rule %q: %w", what, r.Pattern, err)
		}
		if len(r.Args) > 0 && what != "tools" {
			return nil, fmt.Errorf("%s rule %q: argument rules apply to tool rules only", what, r.Pattern)
		}
		args, err := compileArgs(r.Args)
		if err != nil {
			return nil, fmt.Errorf("%s rule %q: %w", what, r.Pattern, err)
		}
		out = append(out, compiledRule{Rule: r, required: sortedSet(append(slices.Clone(r.Scopes), base...)), foldLen: foldLen, loose: looseName(pattern), args: args})
	}
	return out, nil
}

// refuseShadowed refuses a first-match rule that an earlier one makes
// unreachable: every name it matches, an earlier rule matches (globCovers),
// so its stricter scopes, actor and argument rules would silently never
// hold ("tool * read" before "tool delete_all admin", "tool delete* read"
// before "tool delete_* admin"). With loose, names read loosely too: a
// rule whose loose form an earlier loose form covers decides nothing
// either, since a name it matches falls under the earlier rule when read
// loosely and is refused as unstable, while the name's loose spellings
// get the earlier rule ("tool fs_* read" before "tool fs.delete admin"
// lets fs_delete through with read, which a loose upstream runs as
// fs.delete).
func refuseShadowed(what string, rules []compiledRule, loose bool) error {
	exact, folded := make([]glob, len(rules)), make([]glob, len(rules))
	for i, r := range rules {
		exact[i], folded[i] = parseGlob(r.Pattern), parseGlob(r.loose)
	}
	for j := range rules {
		for i, r := range rules[:j] {
			how := ""
			covers, ok := coverGlobs(exact[i:i+1], exact[j])
			if ok && !covers && loose {
				covers, ok = coverGlobs(folded[i:i+1], folded[j])
				how = " when case and the separators - . / _ are ignored"
			}
			switch {
			case !ok:
				return fmt.Errorf("%s rule %q: too many wildcards to check whether the rule %q before it makes it unreachable; write it with fewer '?' and '*'", what, rules[j].Pattern, r.Pattern)
			case !covers:
				continue
			}
			return fmt.Errorf("%s rule %q is never reached: the rule %q before it matches every name it does%s (the first matching rule applies; put the narrower rule first)", what, rules[j].Pattern, r.Pattern, how)
		}
		if !slices.ContainsFunc(exact[j].nfa, globToken.wild) {
			// A name (or its loose form) no earlier rule matches alone,
			// none matches.
			continue
		}
		how, globs := "", exact
		covered, err := coveredTogether(what, rules, globs, j)
		if err == nil && covered == nil && loose {
			how, globs = " when case and the separators - . / _ are ignored", folded
			covered, err = coveredTogether(what, rules, globs, j)
		}
		if err != nil {
			return err
		}
		if covered != nil {
			return fmt.Errorf("%s rule %q is never reached: the rules %s before it together match every name it does%s (the first matching rule applies; put the narrower rule first)", what, rules[j].Pattern, strings.Join(covered, ", "), how)
		}
	}
	return nil
}

// coveredTogether names the rules before rules[j] that together match
// every name it does while none does alone ("tool ab read" and "tool
// ab?* read" before "tool ab* admin", or "tool ? read" and "tool ??*
// read" before a catch-all "tool * admin"), nil when they do not; globs
// are the rules' patterns in the form to compare.
func coveredTogether(what string, rules []compiledRule, globs []glob, j int) ([]string, error) {
	tooMany := func(p string) error {
		return fmt.Errorf("%s rule %q: too many wildcards to check whether the rules before it make it unreachable (with %s); write it with fewer '?' and '*'", what, rules[j].Pattern, p)
	}
	var meet []glob
	var names []string
	for i := range rules[:j] {
		m, ok := meetGlobs(globs[i], globs[j])
		if !ok {
			return nil, tooMany(strconv.Quote(rules[i].Pattern))
		}
		if m {
			meet, names = append(meet, globs[i]), append(names, strconv.Quote(rules[i].Pattern))
		}
	}
	if len(meet) < 2 {
		return nil, nil
	}
	covers, ok := coverGlobs(meet, globs[j])
	switch {
	case !ok:
		return nil, tooMany("the rules " + strings.Join(names, ", "))
	case !covers:
		return nil, nil
	}
	return names, nil
}

// globToken is one element of a glob: a literal rune, '?' or '*'.
type globToken struct {
	r         rune
	any, star bool
}

// globTokens reads a glob as globMatch does (validGlob: valid UTF-8, no
// lone '\\').
func globTokens(p string) []globToken {
	var out []globToken
	for i := 0; i < len(p); {
		switch p[i] {
		case '*':
			out = append(out, globToken{star: true})
			i++
		case '?':
			out = append(out, globToken{any: true})
			i++
		case '\\':
			r, n := utf8.DecodeRuneInString(p[i+1:])
			out = append(out, globToken{r: r})
			i += 1 + n
		default:
			r, n := utf8.DecodeRuneInString(p[i:])
			out = append(out, globToken{r: r})
			i += n
		}
	}
	return out
}

// globNFA is a glob as a set of positions: position i has matched the
// first i tokens; len(tokens) accepts.
type globNFA []globToken

// closure adds the positions a '*' reaches by matching nothing.
func (g globNFA) closure(set []bool) []bool {
	for i := range g {
		if set[i] && g[i].star {
			set[i+1] = true
		}
	}
	return set
}

// step is the positions after reading r from set, nil for none.
func (g globNFA) step(set []bool, r rune) []bool {
	next := make([]bool, len(g)+1)
	some := false
	for i, t := range g {
		if !set[i] {
			continue
		}
		switch {
		case t.star:
			next[i], some = true, true
		case t.any || t.r == r:
			next[i+1], some = true, true
		}
	}
	if !some {
		return nil
	}
	return g.closure(next)
}

func (g globNFA) start() []bool {
	set := make([]bool, len(g)+1)
	set[0] = true
	return g.closure(set)
}

func (g globNFA) accepts(set []bool) bool { return set[len(g)] }

// maxCoverStates bounds exploreGlobs' work: the sets of positions it
// explores can grow exponentially with the wildcards of a pattern.
const maxCoverStates = 4096

// maxCoverWork bounds it too, in positions looked at (a few tens of
// milliseconds): a rule compared with hundreds of earlier ones at once
// costs that many more per step.
const maxCoverWork = 1 << 25

// glob is a pattern read for comparison with others: its positions, and
// the literal runes its names all begin and end with (those before its
// first and after its last wildcard, all when it has none; the suffix
// reversed), for a quick test that spares most pairs the full run.
type glob struct {
	nfa             globNFA
	prefix, rsuffix []rune
}

func parseGlob(p string) glob {
	g := glob{nfa: globTokens(p)}
	i := slices.IndexFunc(g.nfa, globToken.wild)
	if i < 0 {
		i = len(g.nfa)
	}
	for _, t := range g.nfa[:i] {
		g.prefix = append(g.prefix, t.r)
	}
	for j := len(g.nfa) - 1; j >= 0 && !g.nfa[j].wild(); j-- {
		g.rsuffix = append(g.rsuffix, g.nfa[j].r)
	}
	return g
}

func (t globToken) wild() bool { return t.any || t.star }

func (t globToken) isStar() bool { return t.star }

func lastStar(g globNFA) int {
	for j := len(g) - 1; j >= 0; j-- {
		if g[j].star {
			return j
		}
	}
	return -1
}

// agree reports whether two runs of literals and '?' (no '*') can read
// the same runes where they overlap: from their start, or from their end
// (fromEnd).
func agree(a, b []globToken, fromEnd bool) bool {
	n := min(len(a), len(b))
	for i := range n {
		x, y := a[i], b[i]
		if fromEnd {
			x, y = a[len(a)-1-i], b[len(b)-1-i]
		}
		if !x.any && !y.any && x.r != y.r {
			return false
		}
	}
	return true
}

// otherRune is a rune none of the globs names.
func otherRune(gs []globNFA) rune {
	other := rune(0x10FFFF)
	for slices.ContainsFunc(gs, func(g globNFA) bool {
		return slices.ContainsFunc(g, func(t globToken) bool { return !t.wild() && t.r == other })
	}) {
		other--
	}
	return other
}

// witnesses are names g matches: each '?' read as other, each '*' as
// nothing, and as other (empty names left out).
func (g globNFA) witnesses(other rune) []string {
	var out []string
	for _, starAs := range []string{"", string(other)} {
		var b strings.Builder
		for _, t := range g {
			switch {
			case t.star:
				b.WriteString(starAs)
			case t.any:
				b.WriteRune(other)
			default:
				b.WriteRune(t.r)
			}
		}
		if b.Len() > 0 {
			out = append(out, b.String())
		}
	}
	return out
}

// matches reports whether g matches name.
func (g globNFA) matches(name string) bool {
	set := g.start()
	for _, r := range name {
		if set = g.step(set, r); set == nil {
			return false
		}
	}
	return g.accepts(set)
}

// mayCover is a quick test that g may cover later: every name of later
// begins with its prefix and ends with its suffix, and where later's own
// are shorter, a wildcard there reads any other rune; so g's must begin
// and end later's.
func (g glob) mayCover(later glob) bool {
	return hasPrefixRunes(later.prefix, g.prefix) && hasPrefixRunes(later.rsuffix, g.rsuffix)
}

// mayMeet is a quick test that two globs may share a name: it begins
// with both prefixes and ends with both suffixes.
func (g glob) mayMeet(o glob) bool {
	return (hasPrefixRunes(g.prefix, o.prefix) || hasPrefixRunes(o.prefix, g.prefix)) &&
		(hasPrefixRunes(g.rsuffix, o.rsuffix) || hasPrefixRunes(o.rsuffix, g.rsuffix))
}

func hasPrefixRunes(s, prefix []rune) bool {
	return len(prefix) <= len(s) && slices.Equal(s[:len(prefix)], prefix)
}

// globCovers reports whether every non-empty name that glob later matches,
// glob earlier matches too (names are never empty); ok is false when it
// could not tell within maxCoverStates.
func globCovers(earlier, later string) (covers, ok bool) {
	return coverGlobs([]glob{parseGlob(earlier)}, parseGlob(later))
}

// coverGlobs reports whether every non-empty name that glob later
// matches, one of the globs earlier matches; ok is false when it could
// not tell within maxCoverStates.
func coverGlobs(earlier []glob, later glob) (covers, ok bool) {
	if len(earlier) == 1 && !earlier[0].mayCover(later) {
		return false, true
	}
	es := make([]globNFA, len(earlier))
	for i, e := range earlier {
		es[i] = e.nfa
	}
	// Most rules that are not covered show it with one of later's
	// plainest names, which spares the full run.
	other := otherRune(append([]globNFA{later.nfa}, es...))
	for _, w := range later.nfa.witnesses(other) {
		if !slices.ContainsFunc(es, func(e globNFA) bool { return e.matches(w) }) {
			return false, true
		}
	}
	counterexample := false
	ok = exploreGlobs(later.nfa, es, func(ln []bool, en [][]bool) bool {
		if !later.nfa.accepts(ln) {
			return false
		}
		for i, e := range es {
			if en[i] != nil && e.accepts(en[i]) {
				return false
			}
		}
		counterexample = true
		return true
	})
	return ok && !counterexample, ok
}

// meetGlobs reports whether some non-empty name matches both globs; ok
// is false when it could not tell within maxCoverStates.
func meetGlobs(a, b glob) (meet, ok bool) {
	if !a.mayMeet(b) {
		return false, true
	}
	if slices.ContainsFunc(a.nfa, globToken.isStar) && slices.ContainsFunc(b.nfa, globToken.isStar) {
		// Both have a '*': a name of both exists exactly when what comes
		// before their first '*' agrees rune by rune, and what comes
		// after their last (the stars take the middles, one after the
		// other).
		ia, ib := slices.IndexFunc(a.nfa, globToken.isStar), slices.IndexFunc(b.nfa, globToken.isStar)
		ja, jb := lastStar(a.nfa), lastStar(b.nfa)
		return agree(a.nfa[:ia], b.nfa[:ib], false) && agree(a.nfa[ja+1:], b.nfa[jb+1:], true), true
	}
	ok = exploreGlobs(a.nfa, []globNFA{b.nfa}, func(an []bool, bn [][]bool) bool {
		meet = a.nfa.accepts(an) && bn[0] != nil && b.nfa.accepts(bn[0])
		return meet
	})
	return meet, ok
}

// exploreGlobs runs glob l and the globs es side by side over every
// non-empty string l can match, as sets of positions (nil: a glob of es
// that can no longer match), and calls found with the sets after each
// string until it returns true. It reads each rune the globs name and
// one they do not, since all others behave alike. It returns false when
// the sets it met exceed maxCoverStates, or its steps maxCoverWork.
func exploreGlobs(l globNFA, es []globNFA, found func(ln []bool, en [][]bool) bool) bool {
	// A rune no glob names first: most names no glob matches use one.
	gs := append([]globNFA{l}, es...)
	alphabet := []rune{otherRune(gs)}
	for _, g := range gs {
		for _, t := range g {
			if !t.wild() && !slices.Contains(alphabet, t.r) {
				alphabet = append(alphabet, t.r)
			}
		}
	}
	// Each step costs a look at every position of every glob: many
	// globs together may spend the budget before the states.
	positions := len(l) + 1
	for _, e := range es {
		positions += len(e) + 1
	}
	steps := maxCoverWork / positions
	type state struct {
		l  []bool
		es [][]bool
	}
	key := func(s state) string {
		b := make([]byte, 0, 64)
		for _, set := range append([][]bool{s.l}, s.es...) {
			for _, in := range set {
				c := byte('0')
				if in {
					c = '1'
				}
				b = append(b, c)
			}
			b = append(b, '|')
		}
		return string(b)
	}
	first := state{l: l.start(), es: make([][]bool, len(es))}
	for i, e := range es {
		first.es[i] = e.start()
	}
	queue := []state{first}
	seen := map[string]bool{key(first): true}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, r := range alphabet {
			if steps--; steps < 0 {
				return false
			}
			ln := l.step(s.l, r)
			if ln == nil {
				continue
			}
			next := state{l: ln, es: make([][]bool, len(es))}
			for i, e := range es {
				if s.es[i] != nil {
					next.es[i] = e.step(s.es[i], r)
				}
			}
			if found(next.l, next.es) {
				return true
			}
			if k := key(next); !seen[k] {
				if len(seen) >= maxCoverStates {
					return false
				}
				seen[k] = true
				queue = append(queue, next)
			}
		}
	}
	return true
}

func validActorRule(a ActorRule) error {
	switch {
	case a.MaxDepth < 0:
		return errors.New("actor max depth is negative")
	case a.RequireAgent && a.UserOnly:
		return errors.New("actor rule requires an agent and refuses agents")
	}
	for _, id := range a.AllowedAgents {
		if id == "" {
			return errors.New("empty agent id in allowed agents")
		}
	}
	return nil
}

// impliedClosure expands Implies transitively, so "admin" → "tools:write"
// → "tools:read" gives admin both. Cycles are harmless.
func impliedClosure(implies map[string][]string) map[string][]string {
	out := make(map[string][]string, len(implies))
	for broad := range implies {
		seen := map[string]bool{broad: true}
		stack := slices.Clone(implies[broad])
		var all []string
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[s] {
				continue
			}
			seen[s] = true
			all = append(all, s)
			stack = append(stack, implies[s]...)
		}
		slices.Sort(all)
		out[broad] = all
	}
	return out
}

// effectiveScopes is the set a token's scopes grant, implications included.
func (p *policy) effectiveScopes(granted []string) map[string]struct{} {
	set := make(map[string]struct{}, len(granted)*2)
	for _, s := range granted {
		set[s] = struct{}{}
		for _, n := range p.implied[s] {
			set[n] = struct{}{}
		}
	}
	return set
}

// isToolCall reports whether m calls a tool: a tools/call request, or
// one without an id, which decide admits by the tool's rules as it is
// still a call to a lenient server, so the checks of a call's tool
// (pinning, Mcp-Param-* headers) apply to it too.
func isToolCall(m *mcpparse.Message) bool {
	return m.Kind != mcpparse.KindResponse && m.Method == "tools/call"
}

// decide decides one message of a request of revision rev. An error
// means the message is refused before any rule: it cannot be classified
// (a tools/call without a name, say), or its method is not one of rev
// (errMethodNotFound).
func (p *policy) decide(pr *principal, m *mcpparse.Message, rev revision) (decision, error) {
	if m.Kind == mcpparse.KindResponse {
		// The client's answers to server requests (sampling, elicitation,
		// roots) carry no operation of their own.
		return p.check(pr, decision{kind: kindBase, required: p.base}, nil), nil
	}
	// Notifications are decided by method like requests: a "tools/call"
	// without an id is still a tools/call to a lenient server.
	if !rev.defines(m.Method) {
		return p.decideMethod(pr, m.Method)
	}
	switch m.Method {
	case "tools/call":
		if !m.HasName {
			return decision{}, fmt.Errorf("tools/call: %w", errNoName)
		}
		if !validToolName(m.Name) {
			return decision{}, fmt.Errorf("tools/call: tool name %q is not 1-128 characters of A-Z a-z 0-9 _ - . / without empty or dot-only segments between slashes", m.Name)
		}
		d, err := p.decideCaseless(pr, kindTool, p.tools, m.Name)
		if err == nil && d.allow && len(d.args) > 0 {
			// Only a call that may otherwise proceed: more scope cannot
			// cure an argument, and a caller without it learns nothing
			// of the argument rules.
			if d.argument, d.reason = argRefusal(d.args, pr, m.Arguments); d.reason != "" {
				d.allow = false
			}
		}
		return d, err
	case "prompts/get":
		if !m.HasName {
			return decision{}, fmt.Errorf("prompts/get: %w", errNoName)
		}
		d, err := p.decidePrompt(pr, m.Name)
		if err != nil {
			err = fmt.Errorf("prompts/get: %w", err)
		}
		return d, err
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		if !m.HasURI {
			return decision{}, fmt.Errorf("%s: %w", m.Method, errNoName)
		}
		d, err := p.decideURI(pr, m.URI)
		if err != nil {
			err = fmt.Errorf("%s: %w", m.Method, err)
		}
		return d, err
	case "completion/complete":
		d, err := p.decideCompletion(pr, m.Raw)
		if err != nil {
			err = fmt.Errorf("completion/complete: %w", err)
		}
		return d, err
	case "subscriptions/listen":
		uris, err := resourceSubscriptions(m.Raw)
		if err != nil {
			return decision{}, fmt.Errorf("%s: %w", m.Method, err)
		}
		return p.decideSubscriptions(pr, uris)
	}
	// Everything else, tasks/* included (params.taskId is a task, not a
	// tool), needs the base scopes.
	return p.check(pr, decision{kind: kindBase, required: p.base}, nil), nil
}

// decidePrompt decides a prompt by name, refusing names an upstream could
// read as another.
func (p *policy) decidePrompt(pr *principal, name string) (decision, error) {
	if !validPromptName(name) {
		return decision{}, fmt.Errorf("prompt name %q has whitespace, control, invisible or compatibility characters, characters that a full case mapping reads beyond simple case folding, or empty or dot-only segments between slashes", name)
	}
	rest, relative := schemeRelative(name)
	if relative || strings.ContainsAny(name, `?#;\|`) {
		// A server that puts the name in a URL, as pathSafeName has it,
		// ends the path at "?" or "#" ("admin_x?" is admin_x), a servlet
		// container drops ";" and what follows up to the segment's end
		// ("team;x/admin" is team/admin), and a WHATWG URL parser
		// (Node's URL and fetch) reads "\" as "/" ("team\admin" is
		// team/admin), so each of those readings must fall under the
		// name's own rule, as the loose form must (stableRule).
		// Without its path parameters a segment may be a dot segment
		// ("x/..;/admin" is admin to Tomcat), which the name is refused
		// for. A server that resolves the name against a base URL
		// drops a scheme before it (schemeRelative): "http:team/admin"
		// is team/admin there, and "file:/etc/x" the absolute path
		// /etc/x (absolutePath), which the name is refused for as
		// "/etc/x" is.
		i, _ := stableRule(p.prompts, name)
		reads, dots := urlPathReadings(name)
		// Against a file URL a Windows drive letter with '|' begins an
		// absolute path: new URL("C|/x", "file:///srv/prompts/") is
		// file:///C:/x. (With ':' the letter is a scheme to WHATWG.)
		dots = dots || windowsDrive(name) && name[1] == '|'
		if relative {
			more, d := urlPathReadings(rest)
			reads, dots = append(reads, more...), dots || d || absolutePath(name, rest)
		}
		for _, read := range reads {
			if k, stable := stableRule(p.prompts, read); k != i || !stable || dots {
				return decision{}, fmt.Errorf("prompt name %q falls under another rule, or has a dot or empty segment, when read as a URL's path is read (up to a ?, # or ;, without path parameters, with \\ for /, or resolved against a base URL, without the scheme before its first colon)", name)
			}
		}
	}
	return p.decideCaseless(pr, kindPrompt, p.prompts, name)
}

// relativeSchemes are the schemes a URL parser drops from a reference it
// resolves against a base URL of the same scheme, reading the rest as a
// path relative to the base: a WHATWG URL parser (Node's URL and fetch)
// for its special schemes, Python's urljoin for those of its
// uses_relative. new URL("http:team/admin", "http://store/prompts/") is
// http://store/prompts/team/admin, and urljoin reads it alike.
var relativeSchemes = map[string]bool{
	"file": true, "ftp": true, "http": true, "https": true, "ws": true, "wss": true,
	"gopher": true, "imap": true, "mms": true, "nntp": true, "prospero": true, "rtsp": true,
	"rtsps": true, "rtspu": true, "sftp": true, "shttp": true, "svn": true, "svn+ssh": true, "wais": true,
}

// absolutePath reports whether rest, the text after the scheme of a name
// schemeRelative reads, is an absolute path where the name is resolved
// against a base URL: it begins with "/" or "\"; after "file:", with a
// Windows drive letter ("file:C:/x" and "file:C|/x" are file:///C:/x to
// a WHATWG URL parser, whatever the base's path: a letter, ':' or '|',
// then the end, '/', '\', '?' or '#'); after another of WHATWG's special
// schemes, it holds a '/' or '\': against a base of another scheme the
// parser reads the text up to it as a host and the rest as that host's
// absolute path ("https:store/prompts/admin" is
// https://store/prompts/admin against http://store/prompts/).
func absolutePath(name, rest string) bool {
	if strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, `\`) {
		return true
	}
	switch strings.ToLower(name[:len(name)-len(rest)]) {
	case "http:", "https:", "ws:", "wss:", "ftp:":
		return strings.ContainsAny(rest, `/\`)
	case "file:":
	default:
		return false
	}
	return windowsDrive(rest)
}

// windowsDrive reports whether s starts with a Windows drive letter as
// the WHATWG URL standard has it: an ASCII letter, ':' or '|', then the
// end, '/', '\', '?' or '#'.
func windowsDrive(s string) bool {
	if len(s) < 2 {
		return false
	}
	c := s[0] | 0x20
	return 'a' <= c && c <= 'z' && (s[1] == ':' || s[1] == '|') && (len(s) == 2 || strings.IndexByte(`/\?#`, s[2]) >= 0)
}

// schemeRelative returns what a name that begins with one of the
// relativeSchemes and a colon is read as when a server resolves it
// against a base URL of that scheme (the rest after the colon), and
// whether it begins so. Schemes are read without regard to ASCII case,
// as both parsers read them.
func schemeRelative(name string) (string, bool) {
	scheme, rest, ok := strings.Cut(name, ":")
	if !ok || !visibleASCII(scheme) || !relativeSchemes[strings.ToLower(scheme)] {
		return "", false
	}
	return rest, true
}

// decideCompletion decides a completion/complete by the prompt or
// resource its params.ref names, as prompts/get or resources/read of it
// would be: completions reveal what the prompt or resource offers. A
// resource template (RFC 6570, "file:///{path}") is decided by every rule
// an expansion could fall under (decideTemplate).
func (p *policy) decideCompletion(pr *principal, raw []byte) (decision, error) {
	ref, err := completionRef(raw)
	if err != nil {
		return decision{}, err
	}
	switch {
	case ref.Type == "ref/prompt" && ref.Name != nil && ref.URI == nil:
		return p.decidePrompt(pr, *ref.Name)
	case ref.Type == "ref/resource" && ref.URI != nil && ref.Name == nil:
		if literal, _, template := strings.Cut(*ref.URI, "{"); template {
			if err := completionValues(raw, inHost(literal), slashBeforeExpression(*ref.URI), templateScheme(literal)); err != nil {
				return decision{}, err
			}
		}
		d, err := p.decideTemplate(pr, *ref.URI)
		if err == nil {
			// The decision's target is what the audit event names: the
			// template the request completes, not the prefixes of the
			// rules it was decided by (the refusing one is its rule).
			d.target = *ref.URI
		}
		return d, err
	}
	return decision{}, errors.New(`params.ref must be {"type":"ref/prompt","name":...} or {"type":"ref/resource","uri":...}`)
}

// completionValues checks the values a completion of a resource template
// gives its variables (params.argument.value and the values of
// params.context.arguments), each found as looseMember finds it. An
// expansion puts them after the template's literal, whose rules decide
// the completion (decideTemplate), so a value with a dot segment
// ("../etc/", "%2e%2e", which a reserved expansion keeps) makes of
// file:///secret/{name} a URI outside every rule the template needs:
// file:///secret/../etc/ is file:///etc/ to every URL parser and file
// system, and a server that completes the value as a path lists what the
// caller may not read there. Such a value is refused, as a dot segment
// in a resource URI is (checkSegments); so is a value that is not a
// string, which a server could turn into one ([".."] is ".." to
// JavaScript). With host (the template's literal ends inside its host:
// "notes://all{+x}", decided as if the expansion continued the host's
// name), a value with '@' in any encoding is refused too: it makes the
// literal user information and moves the host after it
// ("notes://all@other/x" is on host other, whose rule the completion did
// not need; the gateway reads no URI with user information either). With
// slashed (an expression follows a '/' of the template's path:
// slashBeforeExpression), a value that begins with '/' or '\' in any of
// those readings, or is a URL of its own (absoluteValue), is refused too:
// a server that joins the value to the template's directory as a path
// (Python's os.path.join and pathlib, Java's Path.resolve, Node's
// path.resolve) reads "/etc/" as /etc/, not as file:///secret/etc/, and
// the expansion has an empty segment, which a resource URI may not have;
// one that resolves it as a URL reference reads "file:///etc/" as
// file:///etc/, and "https:other" as https://other/ when scheme, the
// template's, is not https.
func completionValues(raw []byte, host, slashed bool, scheme string) error {
	var msg struct {
		Params map[string]json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return errors.New("params is not an object")
	}
	object := func(m map[string]json.RawMessage, name, what string) (map[string]json.RawMessage, error) {
		v, ok, err := looseMember(m, name)
		if err != nil || !ok {
			return nil, err
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(v, &obj) != nil {
			return nil, errors.New(what + " is not an object")
		}
		return obj, nil
	}
	check := func(v json.RawMessage, what string) error {
		var s string
		if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
			return errors.New(what + " is not a string")
		}
		// The refusal names the value's place, not the value: it is an
		// argument's, which may be a secret, and the refusal is the audit
		// event's reason (as argument rules name only a pointer).
		if dotSegmentValue(s) {
			return errors.New(what + " has a dot segment, which expands the template outside its rules")
		}
		if driveInValue(s) {
			return errors.New(what + " has a segment that begins with a Windows drive, which a server joining the expansion to its directory reads as a path on that drive, outside its rules")
		}
		if slashed && absoluteValue(s, scheme) {
			return errors.New(what + " begins with a slash, a Windows drive or a URL after the template's '/', which a server joining it to the template's directory, as a path or as a URL reference, reads as an absolute path or another URL outside its rules")
		}
		if host && strings.IndexByte(decodedTwice(s), '@') >= 0 {
			return errors.New(what + " has '@', which makes the template's host user information and names another host")
		}
		return nil
	}
	arg, err := object(msg.Params, "argument", "params.argument")
	if err != nil {
		return err
	}
	if v, ok, err := looseMember(arg, "value"); err != nil {
		return err
	} else if ok {
		if err := check(v, "params.argument.value"); err != nil {
			return err
		}
	}
	ctx, err := object(msg.Params, "context", "params.context")
	if err != nil {
		return err
	}
	args, err := object(ctx, "arguments", "params.context.arguments")
	if err != nil {
		return err
	}
	for name, v := range args {
		if err := check(v, "params.context.arguments["+strconv.Quote(name)+"]"); err != nil {
			return err
		}
	}
	return nil
}

// dotSegmentValue reports whether a variable's value holds a segment of
// dots only, as checkSegments splits a path (and at '\', a separator to
// Windows): "..", "../x", "a/./b", "..;", dots beside spaces (Windows
// trims them: ". ." is ".."). The value is read as a server that decodes
// the expanded URI may read it, since a reserved expansion keeps its
// escapes: escapes decoded, twice ("%2e%2e%2fetc" and "..%252f" are
// "../etc" to a server that decodes once more), in NFKC ("\uff0e\uff0e"
// is ".."), without the characters that readers drop and a resource URI
// may not hold (checkEscape): tabs and line breaks (a WHATWG URL parser
// drops them anywhere: ".\t." is ".."), other controls, and invisible
// characters (IDNA mapping and NFKC_Casefold drop default-ignorable
// ones: ".\u200c." is ".."); and also up to a NUL, where a reader of C
// strings stops ("..\x00x" is "..").
func dotSegmentValue(v string) bool {
	v = decodedTwice(v)
	if cut, _, nul := strings.Cut(v, "\x00"); nul && dotSegmentText(cut) {
		return true
	}
	return dotSegmentText(v)
}

// decodedTwice is v with its percent escapes decoded twice, as a server
// that decodes a value once more than the gateway expects reads it
// (percentDecoded keeps a bad escape as text).
func decodedTwice(v string) string {
	for range 2 {
		if strings.IndexByte(v, '%') < 0 {
			break
		}
		v = percentDecoded(v)
	}
	return v
}

// absoluteValue reports whether a variable's value, read as
// dotSegmentValue reads it (escapes decoded twice, in NFKC, without the
// characters readers drop), begins with '/' or '\' or a Windows drive
// (driveValue), or is a URL outside the template's directory
// (urlValue): "/etc", "%2Fetc", "\uff0fetc" (a fullwidth solidus),
// "\u200b/etc", "C:/x" and "file:///etc" all do. scheme is the
// template's (templateScheme).
func absoluteValue(v, scheme string) bool {
	v = decodedTwice(v)
	for i := 0; i < len(v); i++ {
		if v[i] >= utf8.RuneSelf || !visibleRune(rune(v[i])) {
			v = strings.Map(func(r rune) rune {
				if r != ' ' && !visibleRune(r) {
					return -1
				}
				return r
			}, norm.NFKC.String(v))
			break
		}
	}
	return strings.HasPrefix(v, "/") || strings.HasPrefix(v, `\`) || driveValue(v) || urlValue(v, scheme)
}

// templateScheme is the scheme of a template's literal (the text before
// its first '{'), in lower case: "" when the literal names none.
func templateScheme(literal string) string {
	scheme, _, ok := strings.Cut(literal, ":")
	if !ok || !validScheme(scheme) {
		return ""
	}
	return strings.ToLower(scheme)
}

// urlValue reports whether v (read as absoluteValue reads it) is, to a
// server that resolves it against the template's directory as a URL
// reference (Node's new URL(v, base), Python's urljoin), a URL outside
// that directory: a scheme and ':' then '/' or '\' ("file:///etc/",
// "https://other/x", "file:/etc": the reference is absolute, whatever
// the base), or after a scheme the parser drops before a relative path
// (relativeSchemes) a path that absolutePath reads as absolute
// ("file:C:/x", "https:other/x") or that has a dot segment ("file:../x"
// is file:///etc/x against file:///secret/a/). A WHATWG URL parser
// drops the scheme only against a base of the same scheme: after one of
// its special schemes other than the template's (base), whatever
// follows is a URL of its own, "https:other" https://other/ against
// file:///secret/a/ and "file:etc" file:///etc against
// https://h/secret/a/. A parser skips the spaces before a URL.
func urlValue(v, base string) bool {
	v = strings.TrimLeft(v, " ")
	scheme, rest, ok := strings.Cut(v, ":")
	if !ok || !validScheme(scheme) {
		return false
	}
	if strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, `\`) {
		return true
	}
	scheme = strings.ToLower(scheme)
	if specialScheme(scheme) && scheme != base {
		return true
	}
	return relativeSchemes[scheme] && (absolutePath(v, rest) || dotSegmentValue(rest))
}

// specialScheme reports whether a WHATWG URL parser (Node's URL and
// fetch) reads scheme, in lower case, as one of its special schemes.
func specialScheme(scheme string) bool {
	switch scheme {
	case "http", "https", "ws", "wss", "ftp", "file":
		return true
	}
	return false
}

// driveValue reports whether v begins with a Windows drive: an ASCII
// letter and ':'. Joined to a directory on Windows such a value is a path
// on that drive ("C:/x", "C:\x"), or on another drive's current
// directory ("D:x"): os.path.join, Path.resolve and path.resolve discard
// the directory as they do before "/x".
func driveValue(v string) bool {
	return len(v) >= 2 && v[1] == ':' && ('a' <= v[0]|0x20 && v[0]|0x20 <= 'z')
}

// slashBeforeExpression reports whether an expression of template t
// follows a '/' of its path (not the "//" that begins its authority:
// "file://{path}" names the whole path), or expands to path segments
// ("{/x}"), so that its value is a name below a directory.
func slashBeforeExpression(t string) bool {
	authority := -1 // where the authority begins, after "scheme://"
	if i := strings.Index(t, "//"); i > 0 && !strings.ContainsAny(t[:i], "/?#{") {
		authority = i + 2
	}
	for i := 0; i < len(t); i++ {
		if t[i] != '{' {
			continue
		}
		if i+1 < len(t) && t[i+1] == '/' || i > 0 && t[i-1] == '/' && i != authority {
			return true
		}
	}
	return false
}

// dotSegmentText is dotSegmentValue for decoded text.
func dotSegmentText(v string) bool {
	// Split and judged as a resource URI's path is (checkSegments), '\'
	// a separator too and a space as the escape it stands for. (Neither
	// replacement makes what the other replaces; a strings.Replacer built
	// here cost some 6 KB and 10 µs per value, a body of values seconds.)
	return checkSegments(strings.ReplaceAll(valueText(v), " ", "%20")) != nil
}

// valueText is decoded text of a variable's value as a reader of the
// expanded URI may read it: in NFKC, without the characters readers drop
// (a resource URI may not hold them), '\' read as '/'.
func valueText(v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] >= utf8.RuneSelf {
			v = norm.NFKC.String(v)
			break
		}
	}
	v = strings.Map(func(r rune) rune {
		if r != ' ' && !visibleRune(r) {
			return -1 // dropped, as safeURIRune refuses it in a URI
		}
		return r
	}, v)
	return strings.ReplaceAll(v, `\`, "/")
}

// driveInValue reports whether a variable's value, read as
// dotSegmentValue reads it, has a segment after a '/' or '\' that begins
// with a Windows drive (driveValue): the expansion's path then has one,
// which a resource URI may not (driveSegment), and which a server on
// Windows joining the path, or its segments, to its directory reads as a
// path on that drive ("a/C:secret" is secret there). A value's first
// segment is a drive only after a '/' of the template (absoluteValue).
// (A reading cut at a NUL has no segment the whole text lacks: valueText
// drops the NUL.)
func driveInValue(v string) bool {
	_, rest, ok := strings.Cut(valueText(decodedTwice(v)), "/")
	return ok && driveSegment(rest)
}

// inHost reports whether a template's literal (its text before the first
// '{') ends inside a host it has begun to name: "notes://all" does,
// "notes://" (no host yet) and "notes://all/" do not.
func inHost(literal string) bool {
	_, auth, ok := strings.Cut(literal, "//")
	return ok && auth != "" && !strings.ContainsAny(auth, "/?#")
}

// percentDecoded is s with each "%" and two hex digits (either case)
// decoded; other text, a stray "%" among it, is kept.
func percentDecoded(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && unhex(s[i+1]) >= 0 && unhex(s[i+2]) >= 0 {
			b = append(b, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

// decideTemplate decides a resource URI or template (RFC 6570) by every
// rule an expansion could fall under: the rule of its literal prefix
// (the text before the first '{'), every rule whose prefix extends that
// prefix when case is ignored (hasTextPrefixFold), and the rule of each
// way an expansion can continue the prefix (continuations, continuedRule);
// its text after the prefix may not lead out of them (checkTemplateText).
// A URI without '{' is decided as a resources/read of it.
func (p *policy) decideTemplate(pr *principal, uri string) (decision, error) {
	literal, _, template := strings.Cut(uri, "{")
	if !template {
		return p.decideURI(pr, uri)
	}
	if err := checkTemplateText(uri); err != nil {
		return decision{}, err
	}
	uris := []string{literal}
	for i := range p.resources {
		if r := p.resources[i].Pattern; len(r) > len(literal) && hasTextPrefixFold(r, literal) {
			uris = append(uris, r)
		}
	}
	d, err := p.decideSubscriptions(pr, uris)
	if err != nil || !d.allow && !d.scopeOnly {
		return d, err
	}
	// As decideSubscriptions combines its URIs' decisions.
	for _, next := range continuations(uri[len(literal):]) {
		c := p.resourceDecision(pr, literal, p.continuedRule(literal, next))
		if !c.allow && !c.scopeOnly {
			return c, nil
		}
		required := sortedSet(append(slices.Clone(d.required), c.required...))
		if d.allow && !c.allow {
			d = c
		}
		d.required = required
	}
	return d, nil
}

// checkTemplateText refuses a resource template whose text after its
// first expression can take an expansion out of the rules its literal
// prefix is decided by (decideTemplate): "file:///secret/{name}/../../etc/{x}"
// expands to a URI under file:///, whatever the values. Read with each
// expression expanded to a letter (a digit where it is a port:
// "postgres://{host}:{port}/{db}"), the template must be a URI checkURI
// accepts, so its text has no dot segment in any spelling ("/../",
// "/%2e%2e/") nor anything else a server resolves or rewrites; and no
// segment may be ".." ("/secret/{a}.{b}./etc" is /etc then), which every
// resolver reads as the parent, when each expression expands to nothing
// (its variables undefined) but a '.' expression to a '.' for each of its
// variables that is an empty value, as many as it likes when exploded
// ("{.a,b}" and "{.list*}" are ".." then, "..{.a}" is ".." with a
// undefined: dotSegmentByEmpties). A single dot stays in its directory,
// which the rules that extend the literal cover; three dots or more are
// a name but to Windows, and "compare/{base}...{head}" (a range of
// commits) is a template servers publish.
func checkTemplateText(t string) error {
	var letter strings.Builder
	var in standIn
	for rest := t; rest != ""; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			letter.WriteString(rest)
			break
		}
		letter.WriteString(rest[:i])
		in.read(rest[:i])
		// An expression without its '}' runs to the end, as
		// continuations reads it.
		_, after, _ := strings.Cut(rest[i+1:], "}")
		c := in.next()
		letter.WriteByte(c)
		in.readByte(c)
		rest = after
	}
	if err := checkURI(letter.String()); err != nil {
		return fmt.Errorf("resource template %q, its expressions read as text: %w", shownURI(t), err)
	}
	if dotSegmentByEmpties(t) {
		return fmt.Errorf("resource template %q has a dot segment when its variables are undefined or empty", shownURI(t))
	}
	return nil
}

// dotSegmentByEmpties reports whether a segment of template t can expand
// to ".." (" %20" dropped) with its variables undefined or empty: a
// segment of literal dots and expressions only, its literal dots at most
// two, and its '.' expressions able to add the rest, one dot per
// variable ("{.a,b}" adds none, one or two), any number when exploded
// ("{.list*}"). A segment ends at a '/', '?', '#' or ';' of the text,
// and may end or begin at a '/', '?' or '#' expression, which expands to
// nothing (undefined) or to its operator first ("{/a}" with a empty is
// "/"): "d{/a}..{/b}..{/c}x" is "d/../../x" then, so each segment a
// segment may begin there is followed too (segments).
func dotSegmentByEmpties(t string) bool {
	var segs segments
	segs.begin()
	for i := 0; i <= len(t); i++ {
		switch {
		case i == len(t) || strings.IndexByte("/?#;", t[i]) >= 0:
			if segs.dots() {
				return true
			}
			segs.begin()
		case t[i] == '{':
			expr, _, ok := strings.Cut(t[i+1:], "}")
			if !ok {
				return false // runs to the end; checkURI refused it
			}
			switch {
			case strings.HasPrefix(expr, "."):
				segs.addDots(strings.Count(expr, ",")+1, strings.Contains(expr, "*"))
			case expr != "" && strings.IndexByte("/?#", expr[0]) >= 0:
				if segs.dots() {
					return true
				}
				segs.add(segment{})
			}
			i += len(expr) + 1
		case t[i] == '.':
			segs.addDot()
		case strings.HasPrefix(t[i:], "%20"):
			i += 2
		default:
			segs.other()
		}
	}
	return false
}

// segment is what dotSegmentByEmpties knows of a segment read so far,
// when it is of dots and expressions only: lit its literal dots, more the
// dots its '.' expressions can add (-1: any number).
type segment struct{ lit, more int }

// dots reports whether the segment can be "..".
func (s segment) dots() bool { return s.lit <= 2 && (s.more < 0 || s.lit+s.more >= 2) }

// segments are the segments a template's text read so far may end with,
// one for each place it may have begun, those that hold anything but dots
// and expressions or more than two literal dots left out (they cannot be
// ".."). There are at most a dozen apart (lit 0 to 2, more -1 to 2), so
// reading a template costs its length.
type segments struct{ s []segment }

func (g *segments) begin() { g.s = append(g.s[:0], segment{}) }

func (g *segments) add(s segment) {
	if !slices.Contains(g.s, s) {
		g.s = append(g.s, s)
	}
}

func (g *segments) dots() bool {
	return slices.ContainsFunc(g.s, segment.dots)
}

func (g *segments) other() { g.s = g.s[:0] }

func (g *segments) addDot() { g.update(func(s segment) segment { s.lit++; return s }) }

func (g *segments) addDots(n int, exploded bool) {
	g.update(func(s segment) segment {
		switch {
		case exploded:
			s.more = -1
		case s.more >= 0:
			s.more = min(s.more+n, 2)
		}
		return s
	})
}

// update applies f to each segment, keeping those that may still be ".."
// and each once.
func (g *segments) update(f func(segment) segment) {
	old := g.s
	g.s = g.s[:0]
	for _, s := range old {
		if s = f(s); s.lit <= 2 {
			g.add(s)
		}
	}
}

// standIn is what checkTemplateText reads an expression as after the
// text before it: a digit where it is a port (after a ':' in the
// authority, the text after the first "//" up to a '/', '?' or '#'), a
// letter elsewhere. It follows that text as it is read, so each
// expression costs nothing more: looking through the whole text before
// each made a template of many expressions ("x:{}{}…", 1 MiB) cost
// seconds.
type standIn struct {
	state int  // 0 before the first "//", 1 in the authority it begins, 2 after
	last  byte // the last byte read
}

// read follows text, the next bytes of the template as read.
func (s *standIn) read(text string) {
	for i := 0; i < len(text); i++ {
		s.readByte(text[i])
	}
}

// readByte follows the next byte of the template as read.
func (s *standIn) readByte(c byte) {
	switch {
	case s.state == 0 && c == '/' && s.last == '/':
		s.state = 1
	case s.state == 1 && (c == '/' || c == '?' || c == '#'):
		s.state = 2
	}
	s.last = c
}

// next is the stand-in for an expression after the text read so far.
func (s *standIn) next() byte {
	if s.state == 1 && s.last == ':' {
		return '1'
	}
	return 'x'
}

// continuations returns the characters an expansion of template (the
// text of a resource template from its first '{') can put right after
// the literal before it, as the rules no longer than that literal tell
// them apart (continuedRule): '/', '?' or '#', which end a name, and "a"
// for any character that continues it. An expression with the operator
// '/', '?' or '#' expands to nothing (its variables undefined) or to
// text beginning with the operator, so the part after it counts too; any
// other expression can begin with anything. An expansion that is only
// the literal is decided as the literal.
func continuations(template string) []string {
	var out []string
	add := func(c byte) {
		next := "a"
		if strings.IndexByte("/?#", c) >= 0 {
			next = string(c)
		}
		if !slices.Contains(out, next) {
			out = append(out, next)
		}
	}
	for template != "" {
		if template[0] != '{' {
			add(template[0])
			return out
		}
		expr, rest, ok := strings.Cut(template[1:], "}")
		if !ok || expr == "" || strings.IndexByte("/?#", expr[0]) < 0 {
			add('a')
			return out
		}
		add(expr[0])
		template = rest
	}
	return out
}

// continuedRule is the index of the rule that decides an expansion
// continuing literal with next (continuations), or -1 when none does,
// among the rules no longer than literal, or than literal and next
// when next ends a name ("file:///secret/" for "file:///secret" and
// "/"): longer ones are decided on their own by decideTemplate. The rule
// that decides literal itself may not decide such an expansion: one that
// names literal's authority ("notes://all") needs the authority to end
// there, and one that names a directory matches literal as that
// directory without its "/" ("file:///secret/"); then a broader rule
// ("notes://", "file:///") decides "notes://allsecret" and
// "file:///secretive", though not "notes://all?q=x" or "file:///secret/x".
func (p *policy) continuedRule(literal, next string) int {
	limit := len(literal)
	if next != "a" {
		limit += len(next)
	}
	return longestRule(p.resources, literal+next, func(uri string, r *compiledRule) int {
		if len(r.Pattern) > limit {
			return -1
		}
		return uriPrefixRank(uri, r)
	})
}

// reference is a completion's params.ref; Name and URI are nil when
// absent.
type reference struct {
	Type      string
	Name, URI *string
}

// completionRef reads params.ref of a completion/complete, each member
// found as looseMember finds it: a server that matches names without
// regard to case, '-' or '_' reads "na_me" as the name, and a second
// spelling beside the exact one is refused rather than guessed at.
func completionRef(raw []byte) (*reference, error) {
	errRef := errors.New("params.ref must be a prompt or resource reference")
	var msg struct {
		Params map[string]json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return nil, errRef
	}
	v, ok, err := looseMember(msg.Params, "ref")
	if err != nil {
		return nil, err
	}
	var members map[string]json.RawMessage
	if !ok || json.Unmarshal(v, &members) != nil || members == nil {
		return nil, errRef
	}
	// member is a string member of the ref, nil when absent.
	member := func(name string) (*string, error) {
		v, ok, err := looseMember(members, name)
		if err != nil || !ok {
			return nil, err
		}
		var s string
		if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
			return nil, fmt.Errorf("params.ref.%s is not a string", name)
		}
		return &s, nil
	}
	ref := new(reference)
	typ, err := member("type")
	if err != nil {
		return nil, err
	}
	if typ != nil {
		ref.Type = *typ
	}
	if ref.Name, err = member("name"); err != nil {
		return nil, err
	}
	if ref.URI, err = member("uri"); err != nil {
		return nil, err
	}
	return ref, nil
}

// decideMethod applies the first method rule whose glob matches a method
// the revision does not define; without one the method is not found.
func (p *policy) decideMethod(pr *principal, method string) (decision, error) {
	if visibleASCII(method) {
		for i := range p.methods {
			if globMatch(p.methods[i].Pattern, method) {
				r := &p.methods[i]
				return p.check(pr, decision{kind: kindMethod, target: method, rule: r.Pattern, required: r.required}, r), nil
			}
		}
	}
	return decision{}, errMethodNotFound
}

// decideRule decides name under rules[i] (i < 0: no rule).
func (p *policy) decideRule(pr *principal, kind string, rules []compiledRule, name string, i int) decision {
	if i < 0 {
		return decision{kind: kind, target: name, required: p.base, reason: "no rule"}
	}
	return p.check(pr, decision{kind: kind, target: name, rule: rules[i].Pattern, required: rules[i].required, args: rules[i].args}, &rules[i])
}

// decideCaseless decides name under its first rule, for a name an upstream might match
// loosely: without regard to case, or with '-', '.' and '/' read as '_'
// (as many tool registries and aggregating proxies do). With rules
// "delete_*" (admin) and "*", "Delete_all" or "delete-all" would be
// decided under "*" and run as delete_all. A name whose rule changes in
// the loose reading cannot be classified with certainty.
func (p *policy) decideCaseless(pr *principal, kind string, rules []compiledRule, name string) (decision, error) {
	i, stable := stableRule(rules, name)
	if !stable {
		return decision{}, fmt.Errorf("%s name %q falls under another rule when case and the separators - . / _ are ignored", kind, name)
	}
	if read, ok := windowsName(name); ok {
		if k, stable := stableRule(rules, read); k != i || !stable {
			return decision{}, fmt.Errorf("%s name %q falls under another rule when read as Windows reads a file name (a segment's trailing dots and ::$DATA or ::$INDEX_ALLOCATION stream suffix dropped)", kind, name)
		}
	}
	if others := len(rules) - min(i+1, 1); others > 0 && shortName(name) {
		return decision{}, fmt.Errorf("%s name %q may be a Windows 8.3 short name ('~' and a digit), which names a file of a longer name that may fall under another rule", kind, name)
	}
	return p.decideRule(pr, kind, rules, name, i), nil
}

// shortName reports whether name holds '~' and a digit, as the 8.3 short
// names Windows gives files do: "REPORT~1" (or "REPORT~1.MD") is
// report_q3 (or report_q3.md) to a server there that puts the name in a
// file path, and which longer name it is the gateway cannot know. Such a name is refused when some other rule than its own exists,
// which that longer name could fall under (as a resource URI's path may
// hold no '~' and digit: checkFilePath).
func shortName(name string) bool {
	for i := strings.IndexByte(name, '~'); i >= 0 && i+1 < len(name); i++ {
		if name[i] == '~' && '0' <= name[i+1] && name[i+1] <= '9' {
			return true
		}
	}
	return false
}

// windowsStreams are the stream suffixes by which NTFS names a file's or
// directory's own contents ("secrets::$DATA" is the file secrets,
// "team::$INDEX_ALLOCATION" the directory team), in any case.
var windowsStreams = [...]string{"::$DATA", "::$INDEX_ALLOCATION", ":$I30:$INDEX_ALLOCATION"}

// windowsName is name as Windows reads it in a file or URL path (a
// server putting the name in one): each segment between "/" or "\"
// without the dots it ends with and a stream suffix naming its own
// contents (windowsStreams), in either order ("delete_db.",
// "delete_db::$DATA" and "delete_db.::$DATA" are delete_db), "\" read
// as "/". ok is false, and nothing allocated, when no segment ends in a
// dot and the name holds no ":$" (tool names hold no colon).
func windowsName(name string) (read string, ok bool) {
	if !strings.HasSuffix(name, ".") && !strings.Contains(name, "./") && !strings.Contains(name, `.\`) && !strings.Contains(name, ":$") {
		return "", false
	}
	segs := strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' })
	for i, seg := range segs {
		seg = strings.TrimRight(seg, ".")
		for _, suffix := range windowsStreams {
			if len(seg) >= len(suffix) && strings.EqualFold(seg[len(seg)-len(suffix):], suffix) {
				seg = seg[:len(seg)-len(suffix)]
				break
			}
		}
		segs[i] = strings.TrimRight(seg, ".")
	}
	return strings.Join(segs, "/"), true
}

// stableRule is name's first rule, and whether name and its loose form
// match the same first rule when patterns are also read loosely.
func stableRule(rules []compiledRule, name string) (int, bool) {
	i := firstRule(rules, name, false)
	return i, i == firstRule(rules, looseName(name), true)
}

// urlPathReadings are the names a server that puts name in a URL's path
// may read (see decidePrompt): up to its first "?", "#" or ";", and
// without its path parameters (withoutPathParams), each also with "\"
// read as "/" when name holds one. dots reports a reading with a dot
// segment.
func urlPathReadings(name string) (reads []string, dots bool) {
	for _, n := range [2]string{name, strings.ReplaceAll(name, `\`, "/")} {
		if n == name && len(reads) > 0 {
			break
		}
		cut := n
		if j := strings.IndexAny(n, "?#;"); j >= 0 {
			cut = n[:j]
		}
		plain, d := withoutPathParams(n)
		reads, dots = append(reads, cut, plain), dots || d
	}
	return reads, dots
}

// withoutPathParams is name read as a servlet container reads a URL's
// path: ended at its first "?" or "#", each segment between "/" without
// its ";" and what follows. dots reports a segment that is then "." or
// "..", which the container resolves, or empty (of a name not empty
// altogether), which it merges with its neighbour: Tomcat reads
// "team//secrets" (from "team/;x/secrets") as team/secrets, and Spring
// MVC's trailing-slash match "report/" (from "report/;x" or "report/?x")
// as report.
func withoutPathParams(name string) (plain string, dots bool) {
	if j := strings.IndexAny(name, "?#"); j >= 0 {
		name = name[:j]
	}
	segs := strings.Split(name, "/")
	for i, seg := range segs {
		if j := strings.IndexByte(seg, ';'); j >= 0 {
			segs[i] = seg[:j]
		}
		if strings.Trim(segs[i], ".") == "" && (segs[i] != "" || len(segs) > 1) {
			dots = true
		}
	}
	return strings.Join(segs, "/"), dots
}

// looseName folds the case of s and turns '-', '.' and '/' into '_'. It returns
// s itself, without allocating, when nothing changes.
func looseName(s string) string {
	return strings.Map(looseRune, s)
}

func looseRune(r rune) rune {
	switch {
	case r == '-' || r == '.' || r == '/':
		return '_'
	case r < utf8.RuneSelf:
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	}
	// The lower case of the least member of r's simple case-fold class,
	// so that every member reads the same ("ς" as "σ", which a
	// case-folding upstream also does) and most lower-case letters read
	// as themselves; foldStable refuses names whose other case mappings
	// leave the class.
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return unicode.ToLower(least)
}

// firstRule is the index of the first rule whose glob (read loosely when
// loose is set) matches name, or -1.
func firstRule(rules []compiledRule, name string, loose bool) int {
	for i := range rules {
		pattern := rules[i].Pattern
		if loose {
			pattern = rules[i].loose
		}
		if globMatch(pattern, name) {
			return i
		}
	}
	return -1
}

// decideURI applies the rule with the longest prefix of uri, once
// checkURI found it one every reader reads alike. A URI whose rule changes
// when case is ignored cannot be classified with certainty: with rules
// "file:///srv/secret/" (admin) and "file:///srv/", a server on a
// case-insensitive file system reads "file:///srv/Secret/a" as the secret
// one.
func (p *policy) decideURI(pr *principal, uri string) (decision, error) {
	if err := checkURI(uri); err != nil {
		return decision{}, err
	}
	best := longestRule(p.resources, uri, uriPrefixRank)
	if longestRule(p.resources, uri, uriPrefixFoldRank) != best {
		return decision{}, fmt.Errorf("resource URI %q falls under another rule when case is ignored", uri)
	}
	return p.resourceDecision(pr, uri, best), nil
}

// resourceDecision decides uri by the resource rule of index i, -1 for
// none.
func (p *policy) resourceDecision(pr *principal, uri string, i int) decision {
	if i < 0 {
		return decision{kind: kindResource, target: uri, required: p.base, reason: "no rule"}
	}
	r := &p.resources[i]
	return p.check(pr, decision{kind: kindResource, target: uri, rule: r.Pattern, required: r.required}, r)
}

// decideSubscriptions decides a subscription to resources as
// resources/subscribe of each would be: the first refusal that more
// scope cannot cure stands, otherwise the decision needs the base scopes
// and every scope any URI needs.
func (p *policy) decideSubscriptions(pr *principal, uris []string) (decision, error) {
	if len(uris) == 0 {
		return p.check(pr, decision{kind: kindBase, required: p.base}, nil), nil
	}
	d := decision{kind: kindResource, target: strings.Join(uris, " "), required: slices.Clone(p.base)}
	var denied *decision
	for _, uri := range uris {
		u, err := p.decideURI(pr, uri)
		if err != nil {
			return decision{}, err
		}
		if !u.allow && !u.scopeOnly {
			return u, nil
		}
		if !u.allow && denied == nil {
			denied = &u
		}
		d.required = append(d.required, u.required...)
	}
	d.required = sortedSet(d.required)
	if denied != nil {
		denied.required = d.required
		return *denied, nil
	}
	return p.check(pr, d, nil), nil
}

// longestRule is the index of the first of the longest prefixes that
// match uri, or -1. rank says how long a rule's match is, -1 for none
// (uriPrefixRank).
func longestRule(rules []compiledRule, uri string, rank func(string, *compiledRule) int) int {
	best, longest := -1, -1
	for i := range rules {
		if n := rank(uri, &rules[i]); n > longest {
			best, longest = i, n
		}
	}
	return best
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// allowTool reports whether the principal may call the named tool; it is
// the filter for tools/list results.
func (p *policy) allowTool(pr *principal, name string) bool {
	if !validToolName(name) {
		return false
	}
	d, err := p.decideCaseless(pr, kindTool, p.tools, name)
	return err == nil && d.allow
}

// allowPrompt reports whether the principal may get the named prompt; it
// is the filter for prompts/list results. Names decidePrompt cannot
// classify (invalid, or under another rule when read loosely) are not
// shown.
func (p *policy) allowPrompt(pr *principal, name string) bool {
	d, err := p.decidePrompt(pr, name)
	return err == nil && d.allow
}

// allowTemplate reports whether the principal may complete the resource
// template (decideTemplate, as completion/complete decides it); it is
// the filter for resources/templates/list results.
func (p *policy) allowTemplate(pr *principal, template string) bool {
	d, err := p.decideTemplate(pr, template)
	return err == nil && d.allow
}

// check completes d: actor rules first (more scope cannot cure them), then
// scopes.
func (p *policy) check(pr *principal, d decision, r *compiledRule) decision {
	if r != nil {
		if reason := actorRefusal(r.Actor, pr); reason != "" {
			d.reason = reason
			return d
		}
	}
	for _, s := range d.required {
		if _, ok := pr.scopes[s]; !ok {
			d.reason = "insufficient scope: missing " + s
			d.scopeOnly = true
			return d
		}
	}
	d.allow = true
	return d
}

// actorRefusal returns why the actor rule refuses the principal, or "".
// Decisions use the top-level claims and the outermost act only (RFC 8693).
func actorRefusal(a ActorRule, pr *principal) string {
	agent := pr.agent()
	switch {
	case a.UserOnly && agent != "":
		return "actor rule: agents may not call"
	case a.UserOnly && !pr.isUser():
		return "actor rule: only users may call"
	case a.RequireUser && !pr.isUser():
		return "actor rule: a user principal is required"
	case a.RequireAgent && agent == "":
		return "actor rule: an agent is required"
	case a.MaxDepth > 0 && len(pr.actors) > a.MaxDepth:
		return fmt.Sprintf("actor rule: delegation depth %d exceeds %d", len(pr.actors), a.MaxDepth)
	case agent != "" && len(a.AllowedAgents) > 0 && !slices.Contains(a.AllowedAgents, agent):
		return "actor rule: agent " + agent + " is not allowed"
	}
	return ""
}

// globMatch matches name against pattern: '*' matches any run of
// characters ('/' included, unlike path.Match), '?' exactly one character,
// '\' makes the next character literal; everything else matches itself,
// byte for byte (no case folding or normalization).
func globMatch(pattern, name string) bool {
	px, nx := 0, 0
	starPx, starNx := -1, 0
	for nx < len(name) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starPx, starNx = px, nx
				px++
				continue
			case '?':
				_, size := utf8.DecodeRuneInString(name[nx:])
				px++
				nx += size
				continue
			case '\\':
				if px+1 < len(pattern) && pattern[px+1] == name[nx] {
					px += 2
					nx++
					continue
				}
			default:
				if c == name[nx] {
					px++
					nx++
					continue
				}
			}
		}
		if starPx < 0 {
			return false
		}
		// Let the last '*' swallow one more character and retry.
		_, size := utf8.DecodeRuneInString(name[starNx:])
		starNx += size
		px, nx = starPx+1, starNx
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// compileToolGlob checks a tool rule's glob (validGlob), refusing a pattern
// that no tool name the gateway lets through can match (validToolName):
// one holding a character outside SEP-986's, or longer than its 128
// characters. Such a rule would decide nothing, silently: a call to the
// tool it means is refused as a name no server may use ("tool fs:delete
// admin" then never holds, the operator believing it does).
func compileToolGlob(p string) (string, int, error) {
	if err := validGlob(p); err != nil {
		return "", 0, err
	}
	n := 0
	for _, t := range globTokens(p) {
		if t.star {
			continue
		}
		n++
		if t.any {
			continue
		}
		if c := t.r; c >= utf8.RuneSelf || !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == '/') {
			return "", 0, fmt.Errorf("pattern holds %q, which no tool name may (SEP-986: A-Z a-z 0-9 _ - . /): the rule would match no tool", t.r)
		}
	}
	if n > maxToolName {
		return "", 0, fmt.Errorf("pattern matches only names longer than %d characters, which no tool name may be (SEP-986): the rule would match no tool", maxToolName)
	}
	return p, 0, nil
}

// compilePromptGlob checks a prompt rule's glob (validGlob), refusing a pattern
// holding a character no prompt name the gateway lets through may hold
// (whitespace, controls, invisible characters: validPromptName), which
// would match no prompt.
func compilePromptGlob(p string) (string, int, error) {
	if err := validGlob(p); err != nil {
		return "", 0, err
	}
	for _, t := range globTokens(p) {
		if !t.star && !t.any && !visibleRune(t.r) {
			return "", 0, fmt.Errorf("pattern holds %q, which no prompt name may (no whitespace, controls or invisible characters): the rule would match no prompt", t.r)
		}
	}
	return p, 0, nil
}

func validGlob(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	if !utf8.ValidString(p) {
		return errors.New("pattern is not valid UTF-8")
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' {
			i++
			if i == len(p) {
				return errors.New(`pattern ends with a lone '\'`)
			}
		}
	}
	return nil
}

// ruleScope checks a scope the configuration requires of tokens.
// offline_access is no scope of the MCP server: it asks the authorization
// server for a refresh token, which a user's consent grants whatever the
// groups say, so requiring it would admit every client that stays
// connected, and put it in challenges that clients copy into their
// authorization requests.
func ruleScope(s string) error {
	switch {
	case !accesstoken.ValidScope(s):
		return fmt.Errorf("invalid scope token %q", s)
	case s == "offline_access":
		return errors.New(`"offline_access" is no scope of the MCP server (a client asks the authorization server for it to get a refresh token); it cannot be required`)
	case s == "openid" || s == "profile" || s == "email":
		// This project's issuer, as OpenID providers do, grants them to
		// every user who asks: a rule requiring one would admit anyone.
		return fmt.Errorf("%q is an OpenID Connect scope, for the user's identity, which the authorization server grants every user who signs in; it is no scope of the MCP server and cannot be required", s)
	}
	return nil
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
