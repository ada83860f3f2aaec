package upgrade

import (
	"os"
	"strings"
	"testing"
)

// TestREADMENamesPreviousRelease: README's Upgrading names as the
// previous release the one TestUpgradeFromPreviousRelease upgrades from,
// in both places it names it, so that its promise that what that release
// stored works as before is the one the test checks.
func TestREADMENamesPreviousRelease(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, want := range []string{
		"What the previous release, " + previousRelease + ", stored works as before",
		"from " + previousRelease + ", those of this release only",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README's Upgrading lacks %q: the previous release TestUpgradeFromPreviousRelease runs from is %s", want, previousRelease)
		}
	}
}

// TestREADMEUpgradingParagraphsOnce: no change is described twice in
// README's Upgrading list. A fix that rewrites a paragraph of its
// release, picked where the paragraph it rewrote had been picked too,
// left both, the outdated one first ("HFS+ drop default-ignorable
// characters" beside the paragraph that took HFS+ back out), so an
// operator read two answers to one question.
func TestREADMEUpgradingParagraphsOnce(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, upgrading, ok := strings.Cut(string(b), "\n## Upgrading\n")
	if !ok {
		t.Fatal("README has no Upgrading section")
	}
	upgrading, _, _ = strings.Cut(upgrading, "\n## ")
	// Paragraphs of one change begin alike past their release's words
	// and the refusal they name; two changes part well before this.
	const same = 200
	seen := map[string]int{}
	for i, p := range strings.Split(upgrading, "\n\n") {
		if !strings.HasPrefix(p, "**Since ") || len(p) < same {
			continue
		}
		if j, dup := seen[p[:same]]; dup {
			t.Errorf("Upgrading paragraphs %d and %d begin alike, one change described twice:\n%s", j, i, p[:same])
		}
		seen[p[:same]] = i
	}
}

// TestREADMETablesWhole: every table of README (a run of lines starting
// with "|", outside code blocks) has its header and delimiter rows, and
// names each row once. A cherry-pick's conflict resolution left a blank
// line inside the mcp_auth options table followed by second copies of
// its user and group rows, one of each outdated: the rows after the
// blank line (client, agent, resource, identity_provider, ...) were no
// table to a Markdown reader, and an operator read two answers to
// which names and which group scopes load.
func TestREADMETablesWhole(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	fenced := false
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(lines[i], "|") {
			continue
		}
		start := i
		for i < len(lines) && strings.HasPrefix(lines[i], "|") {
			i++
		}
		rows := lines[start:i]
		if len(rows) < 2 || strings.Trim(rows[1], "|-: ") != "" {
			t.Errorf("README line %d: a table without its header and delimiter rows (a blank line inside a table?): %.60s", start+1, rows[0])
			continue
		}
		seen := map[string]int{}
		for n, r := range rows[2:] {
			cells := strings.Split(r, "|")
			if len(cells) < 3 {
				continue
			}
			name := strings.TrimSpace(cells[1])
			if prev, dup := seen[name]; dup {
				t.Errorf("README lines %d and %d: row %s twice in one table", prev, start+3+n, name)
			}
			seen[name] = start + 3 + n
		}
	}
}

// TestREADMEParagraphsWhole: no paragraph of README's prose stops in the
// middle of a sentence, and none begins in one, but where a code block
// or a list between them carries the sentence on ("Point an MCP client
// at", the URL, "and sign in as"). A cherry-pick's conflict resolution left a
// sentence of the gateway's prompt-name rules ending on "Names", a blank
// line, and the other side's version of its end ("is `report` to
// Tomcat) or an empty one ...") as a paragraph of its own: a reader met
// half a sentence twice, and the rule for empty segments in neither.
func TestREADMEParagraphsWhole(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// Blocks are separated by blank lines; a fenced or indented code
	// block is one block whatever it holds.
	type block struct {
		line        int
		first, last string
		text        string
		code        bool
	}
	var blocks []block
	var cur *block
	fenced := false
	for i, l := range strings.Split(string(b), "\n") {
		fence := strings.HasPrefix(l, "```")
		code := fence || fenced || strings.HasPrefix(l, "    ") || strings.HasPrefix(l, "\t")
		if fence {
			fenced = !fenced
		}
		if cur != nil && (cur.code != code || !code && strings.TrimSpace(l) == "") {
			blocks, cur = append(blocks, *cur), nil
		}
		if cur == nil && strings.TrimSpace(l) == "" && !code {
			continue
		}
		if cur == nil {
			cur = &block{line: i + 1, first: l, code: code}
		}
		cur.last = l
		cur.text += l + "\n"
	}
	if cur != nil {
		blocks = append(blocks, *cur)
	}
	prose := func(b block) bool {
		return !b.code && !strings.HasPrefix(b.first, "#") && !strings.HasPrefix(b.first, "|") && !strings.HasPrefix(b.first, "- ")
	}
	for n, p := range blocks {
		if !prose(p) {
			continue
		}
		if c := p.first[0]; c >= 'a' && c <= 'z' && n > 0 && prose(blocks[n-1]) {
			t.Errorf("README line %d: a paragraph begins in the middle of a sentence (a merge's leftover?): %.60s", p.line, p.first)
		}
		// A paragraph that closes a parenthesis it never opened begins
		// in the middle of a sentence, whatever its first character: a
		// leftover of a paragraph whose rewrite went in beside it began
		// "`idp_state`, `idp_error`, …: `TestIdPSignInAnswers`), the
		// server log a provider …", the end of a sentence of the
		// paragraph before it, said twice.
		if unopenedParen(p.text) {
			t.Errorf("README line %d: a paragraph closes a parenthesis it never opened (a merge's leftover?): %.60s", p.line, p.first)
		}
		last := strings.TrimRight(p.last, " ")
		if !strings.ContainsAny(last[len(last)-1:], ".:)!?`*|") && (n+1 == len(blocks) || !blocks[n+1].code && !strings.HasPrefix(blocks[n+1].first, "- ")) {
			t.Errorf("README paragraph at line %d stops in the middle of a sentence (a merge's leftover?): …%s", p.line, last[max(0, len(last)-60):])
		}
	}
}

// unopenedParen reports whether prose closes a parenthesis before opening
// one, code spans aside.
func unopenedParen(prose string) bool {
	depth := 0
	for i, part := range strings.Split(prose, "`") {
		if i%2 == 1 {
			continue
		}
		for _, c := range part {
			switch c {
			case '(':
				depth++
			case ')':
				if depth--; depth < 0 {
					return true
				}
			}
		}
	}
	return false
}
