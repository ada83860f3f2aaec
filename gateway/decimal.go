package gateway

import (
	"errors"
	"strings"
)

// decimal is the exact value of a JSON number: 0.d₁d₂… × 10^exp, with
// digits free of leading and trailing zeros ("" for zero, whatever its
// sign). 1e2, 100, 100.0 and 1.00e+2 are one decimal; -0 is 0; digits are
// never rounded, so 9007199254740993 stays above 9007199254740992.
//
// The digits are kept as the two runs of the literal they come from
// (before and after the point), so reading a number allocates nothing.
type decimal struct {
	neg        bool
	intd, frac string // significant digits: intd without leading zeros, frac without trailing ones
	exp        int64
}

// expLimit bounds exponents: beyond it every number compares as if its
// exponent were the limit. Configured numbers stay far inside it (see
// parseConfigNumber), so an argument's saturated exponent never changes
// how it compares with them.
const expLimit = 1 << 40

// parseDecimal reads a JSON number literal (RFC 8259 grammar).
func parseDecimal(s string) (decimal, error) {
	var d decimal
	bad := errors.New("not a JSON number")
	i := 0
	if i < len(s) && s[i] == '-' {
		d.neg = true
		i++
	}
	start := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[start:i]
	if intPart == "" || (len(intPart) > 1 && intPart[0] == '0') {
		return d, bad
	}
	frac := ""
	if i < len(s) && s[i] == '.' {
		i++
		start = i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if frac = s[start:i]; frac == "" {
			return d, bad
		}
	}
	var e int64
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		if i == len(s) {
			return d, bad
		}
		for ; i < len(s); i++ {
			if !isDigit(s[i]) {
				return d, bad
			}
			e = min(e*10+int64(s[i]-'0'), expLimit)
		}
		if eneg {
			e = -e
		}
	}
	if i != len(s) {
		return d, bad
	}
	intPart = strings.TrimLeft(intPart, "0")
	frac = strings.TrimRight(frac, "0")
	d.exp = e + int64(len(intPart))
	if intPart == "" {
		// 0.00123: the leading zeros of the fraction move the point.
		lead := len(frac) - len(strings.TrimLeft(frac, "0"))
		frac = frac[lead:]
		d.exp -= int64(lead)
	} else if frac == "" {
		intPart = strings.TrimRight(intPart, "0")
	}
	d.intd, d.frac = intPart, frac
	d.exp = max(-expLimit, min(d.exp, expLimit))
	if d.isZero() {
		return decimal{}, nil
	}
	return d, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (d decimal) isZero() bool { return d.intd == "" && d.frac == "" }

func (d decimal) digits() int { return len(d.intd) + len(d.frac) }

// digit is the i-th significant digit, '0' past the end.
func (d decimal) digit(i int) byte {
	switch {
	case i < len(d.intd):
		return d.intd[i]
	case i-len(d.intd) < len(d.frac):
		return d.frac[i-len(d.intd)]
	}
	return '0'
}

// cmp compares two decimals exactly: -1, 0 or +1.
func (d decimal) cmp(o decimal) int {
	sign := func(x decimal) int {
		switch {
		case x.isZero():
			return 0
		case x.neg:
			return -1
		}
		return 1
	}
	ds, os := sign(d), sign(o)
	if ds != os || ds == 0 {
		return compare(ds, os)
	}
	c := compare(d.exp, o.exp)
	if c == 0 {
		for i := range max(d.digits(), o.digits()) {
			if c = compare(d.digit(i), o.digit(i)); c != 0 {
				break
			}
		}
	}
	return c * ds
}

// isInteger reports whether d has no fractional part (1.0 and 1e2 are
// integers, as in JSON Schema).
func (d decimal) isInteger() bool { return d.isZero() || int64(d.digits()) <= d.exp }

func compare[T int | int64 | byte](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// maxConfigExp bounds the exponent of a configured number, so that
// arguments' exponents, saturated at expLimit, still compare correctly.
const maxConfigExp = 1 << 20

// parseConfigNumber reads a number written in the configuration.
func parseConfigNumber(s string) (decimal, error) {
	d, err := parseDecimal(s)
	if err != nil {
		return d, err
	}
	if d.exp > maxConfigExp || d.exp < -maxConfigExp {
		return d, errors.New("exponent out of range")
	}
	return d, nil
}
