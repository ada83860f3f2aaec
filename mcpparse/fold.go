package mcpparse

import (
	"bytes"
	"unicode"
	"unicode/utf8"
)

// appendFolded appends the case-folded form of name to dst: two names have
// the same folded form exactly when encoding/json v1 would match one
// against the other (its foldName), which is also when bytes.EqualFold
// reports them equal. Each rune becomes the smallest rune of its simple
// case-folding orbit, so "K", "k" and the Kelvin sign U+212A all become "K",
// and "s", "S" and U+017F (long s) all become "S". The folded form ends
// at the first NUL ("\u0000" once unescaped): decoders that keep names as
// C strings (cJSON) read "method\u0000x" as "method".
func appendFolded(dst, name []byte) []byte {
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	for i := 0; i < len(name); {
		c := name[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(name[i:])
		dst = utf8.AppendRune(dst, foldRune(r))
		i += n
	}
	return dst
}

// appendLooseFolded is appendFolded without '-' and '_': Go's json/v2,
// when it matches names case-insensitively (MatchCaseInsensitiveNames,
// or a field's case:ignore), also ignores them, so "c_c", "C-C" and "cc"
// read as one name there.
func appendLooseFolded(dst, name []byte) []byte {
	start := len(dst)
	dst = appendFolded(dst, name)
	out := dst[:start]
	for _, c := range dst[start:] {
		if c != '-' && c != '_' {
			out = append(out, c)
		}
	}
	return out
}

// foldRune returns the smallest rune in r's simple case-folding orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// SameLooseName is SameName for decoders that also ignore '-' and '_'
// (appendLooseFolded): "c_c", "C-C" and "cc\u0000x" read as "cc".
func SameLooseName(a, b string) bool {
	var x, y [64]byte
	return bytes.Equal(appendLooseFolded(x[:0], []byte(a)), appendLooseFolded(y[:0], []byte(b)))
}

// LooseFold is the form SameLooseName compares: a and b are the same
// loose name exactly when LooseFold(a) == LooseFold(b), so a reader
// comparing one name with many members folds each member once.
func LooseFold(name string) string {
	var x [64]byte
	return string(appendLooseFolded(x[:0], []byte(name)))
}

// SameName reports whether a JSON decoder may read member names a and b
// as one: equal once case-folded as encoding/json folds them (see
// appendFolded), "tasks" and "Taſks" say.
func SameName(a, b string) bool {
	var x, y [64]byte
	return bytes.Equal(appendFolded(x[:0], []byte(a)), appendFolded(y[:0], []byte(b)))
}
