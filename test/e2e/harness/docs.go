package harness

import (
	"fmt"
	"regexp"
	"strings"
)

// CaddyfileBlock is a fenced Caddyfile block of a Markdown document.
type CaddyfileBlock struct {
	Line int // of the opening fence, 1-based
	// Syntax marks a synopsis (fence info string "caddyfile syntax"),
	// which shows the grammar with <placeholders> and | alternatives and
	// is not meant to be loaded. Every other Caddyfile block is a config.
	Syntax bool
	Text   string
}

// placeholder is a synopsis placeholder such as <url> or <scope...>.
var placeholder = regexp.MustCompile(`<[a-z][^<>\n]*>`)

// CaddyfileBlocks returns the Caddyfile blocks of markdown: those whose
// fence info string is "caddyfile" (a config) or "caddyfile syntax" (a
// synopsis). The classification is checked rather than trusted: a
// synopsis must contain a <placeholder>, and a config must contain none
// and no "..." elision, so a real config cannot be skipped by calling it
// a synopsis and a synopsis cannot pass for a config. Any other info
// string naming Caddyfile, or a fence left open, is an error too.
func CaddyfileBlocks(markdown string) ([]CaddyfileBlock, error) {
	var blocks []CaddyfileBlock
	var cur *CaddyfileBlock
	var body []string
	inOther := false
	for i, line := range strings.Split(markdown, "\n") {
		fence, info, isFence := strings.Cut(line, "```")
		isFence = isFence && strings.TrimSpace(fence) == ""
		switch {
		case cur != nil && isFence && strings.TrimSpace(info) == "":
			cur.Text = strings.Join(body, "\n") + "\n"
			if err := cur.check(); err != nil {
				return nil, err
			}
			blocks = append(blocks, *cur)
			cur, body = nil, nil
		case cur != nil:
			body = append(body, line)
		case inOther && isFence && strings.TrimSpace(info) == "":
			inOther = false
		case inOther || !isFence:
		default:
			info = strings.TrimSpace(info)
			switch {
			case info == "caddyfile":
				cur = &CaddyfileBlock{Line: i + 1}
			case info == "caddyfile syntax":
				cur = &CaddyfileBlock{Line: i + 1, Syntax: true}
			case strings.Contains(strings.ToLower(info), "caddyfile"):
				return nil, fmt.Errorf("line %d: fence %q: want caddyfile (a config) or caddyfile syntax (a synopsis)", i+1, info)
			default:
				inOther = true
			}
		}
	}
	if cur != nil || inOther {
		return nil, fmt.Errorf("a code fence is not closed")
	}
	return blocks, nil
}

func (b CaddyfileBlock) check() error {
	switch {
	case b.Syntax && !placeholder.MatchString(b.Text):
		return fmt.Errorf("line %d: a caddyfile syntax block without <placeholders> looks like a config: mark it caddyfile", b.Line)
	case !b.Syntax && placeholder.MatchString(b.Text):
		return fmt.Errorf("line %d: a caddyfile block with %s is a synopsis: mark it caddyfile syntax", b.Line, placeholder.FindString(b.Text))
	case !b.Syntax && strings.Contains(b.Text, "..."):
		return fmt.Errorf(`line %d: a caddyfile block with "..." does not load: show the whole config`, b.Line)
	}
	return nil
}

// BraceBlock is s up to the brace that closes its first opening one, or
// all of s when none closes it.
func BraceBlock(s string) string {
	depth := 0
	for i, c := range s {
		switch c {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return s[:i+1]
			}
		}
	}
	return s
}

// outputFile is a log block's `output file <path>` line.
var outputFile = regexp.MustCompile(`(?m)^(\s*output file )\S+`)

// AccessLogBlock is the `log` block of the access-log example of
// markdown (the README's: the config whose filter has `replace code
// REDACTED`), writing to path.
func AccessLogBlock(markdown, path string) (string, error) {
	blocks, err := CaddyfileBlocks(markdown)
	if err != nil {
		return "", err
	}
	for _, b := range blocks {
		if b.Syntax || !strings.Contains(b.Text, "replace code REDACTED") {
			continue
		}
		_, rest, _ := strings.Cut(b.Text, "\tlog {")
		return outputFile.ReplaceAllStringFunc(BraceBlock("log {"+rest), func(line string) string {
			return outputFile.FindStringSubmatch(line)[1] + path
		}), nil
	}
	return "", fmt.Errorf("no access-log example (replace code REDACTED)")
}
