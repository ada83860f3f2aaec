package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// canonicalJSON returns the canonical form of one JSON value: RFC 8785
// (JCS) serialization (no whitespace, object members sorted by the UTF-16
// code units of their names, strings with only the escapes JCS writes),
// except numbers, which are kept exact rather than rounded to float64: a
// number is written as the shortest decimal of its exact value (1e2, 100
// and 100.0 are 100; 9007199254740993 stays itself). So two spellings of
// the same value have one canonical form, and two different values never
// share one. The input is read strictly: duplicate member names, invalid
// UTF-8 and lone surrogates are errors.
func canonicalJSON(v []byte) ([]byte, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(v))
	out, err := appendCanonical(nil, dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.ReadToken(); err == nil {
		return nil, errors.New("canonical json: more than one value")
	}
	return out, nil
}

// definitionHash is the hex SHA-256 of a canonical definition.
func definitionHash(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:])
}

func appendCanonical(dst []byte, dec *jsontext.Decoder) ([]byte, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	switch tok.Kind() {
	case 'n', 't', 'f':
		return append(dst, tok.String()...), nil
	case '"':
		return appendCanonicalString(dst, tok.String()), nil
	case '0':
		return appendCanonicalNumber(dst, tok.String())
	case '[':
		dst = append(dst, '[')
		for n := 0; dec.PeekKind() != ']'; n++ {
			if n > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendCanonical(dst, dec); err != nil {
				return nil, err
			}
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, fmt.Errorf("canonical json: %w", err)
		}
		return append(dst, ']'), nil
	case '{':
		type member struct {
			name  string
			value []byte
		}
		var members []member
		for dec.PeekKind() != '}' {
			nt, err := dec.ReadToken()
			if err != nil {
				return nil, fmt.Errorf("canonical json: %w", err)
			}
			name := nt.String() // before the decoder moves on
			v, err := appendCanonical(nil, dec)
			if err != nil {
				return nil, err
			}
			members = append(members, member{name, v})
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, fmt.Errorf("canonical json: %w", err)
		}
		slices.SortFunc(members, func(a, b member) int { return compareUTF16(a.name, b.name) })
		dst = append(dst, '{')
		for i, m := range members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendCanonicalString(dst, m.name)
			dst = append(dst, ':')
			dst = append(dst, m.value...)
		}
		return append(dst, '}'), nil
	}
	return nil, fmt.Errorf("canonical json: unexpected %v", tok.Kind())
}

// compareUTF16 orders strings by their UTF-16 code units (RFC 8785 §3.2.3),
// which differs from code point order only for characters beyond the BMP
// against U+E000..U+FFFF.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return cmpUnit(ra) - cmpUnit(rb)
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// cmpUnit is the first UTF-16 code unit of r.
func cmpUnit(r rune) int {
	if r >= 0x10000 {
		hi, _ := utf16.EncodeRune(r)
		return int(hi)
	}
	return int(r)
}

// appendCanonicalString writes s as JCS does (ECMAScript JSON.stringify):
// only '"', '\\' and control characters are escaped, the usual five with
// their short forms.
func appendCanonicalString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// maxExponent bounds a number's decimal exponent; beyond it a definition
// is refused rather than normalized.
const maxExponent = 1 << 20

// appendCanonicalNumber writes the exact value of a JSON number literal
// (already validated by the decoder): sign, significant digits without
// leading or trailing zeros, and the decimal point placed as ECMAScript
// would place it (plain notation from 1e-7 up to 1e21, else
// d.ddde±n), so integers look like integers. Zero is 0 (and -0 is 0, as
// in JCS).
func appendCanonicalNumber(dst []byte, lit string) ([]byte, error) {
	neg := strings.HasPrefix(lit, "-")
	lit = strings.TrimPrefix(lit, "-")
	mant, exp := lit, int64(0)
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		e, err := strconv.ParseInt(strings.TrimPrefix(lit[i+1:], "+"), 10, 64)
		if err != nil || e > maxExponent || e < -maxExponent {
			return nil, fmt.Errorf("canonical json: number %q: exponent out of range", lit)
		}
		mant, exp = lit[:i], e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= int64(len(frac))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	digits = trimmed
	if digits == "" {
		return append(dst, '0'), nil
	}
	if neg {
		dst = append(dst, '-')
	}
	// The value is 0.digits × 10^point.
	point := int64(len(digits)) + exp
	switch {
	case point > 21 || point < -5:
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if point-1 >= 0 {
			dst = append(dst, '+')
		}
		return strconv.AppendInt(dst, point-1, 10), nil
	case point <= 0:
		dst = append(dst, "0."...)
		dst = append(dst, strings.Repeat("0", int(-point))...)
		return append(dst, digits...), nil
	case point >= int64(len(digits)):
		dst = append(dst, digits...)
		return append(dst, strings.Repeat("0", int(point)-len(digits))...), nil
	}
	dst = append(dst, digits[:point]...)
	dst = append(dst, '.')
	return append(dst, digits[point:]...), nil
}
