package accesslog

import (
	"strconv"
	"unicode/utf8"
)

// text is what a field may be given as: wire bytes ([]byte, straight from the parser) or
// configuration strings (route names, backend addresses). Generic so that neither is converted
// (a string([]byte) conversion may allocate).
type text interface{ ~string | ~[]byte }

const hexDigits = "0123456789abcdef"

// decodeRune is utf8.DecodeRune for either type: the rune at s[i:] and its width, or
// (utf8.RuneError, 1) for a byte that does not start a valid, shortest-form, non-surrogate
// sequence (RFC 3629; the same acceptance as unicode/utf8, checked by FuzzDecodeRune).
func decodeRune[T text](s T, i int) (rune, int) {
	b0 := s[i]
	if b0 < utf8.RuneSelf {
		return rune(b0), 1
	}
	n := len(s) - i
	cont := func(k int, lo, hi byte) bool { return k < n && s[i+k] >= lo && s[i+k] <= hi }
	switch {
	case b0 >= 0xC2 && b0 <= 0xDF:
		if cont(1, 0x80, 0xBF) {
			return rune(b0&0x1F)<<6 | rune(s[i+1]&0x3F), 2
		}
	case b0 >= 0xE0 && b0 <= 0xEF:
		lo, hi := byte(0x80), byte(0xBF)
		if b0 == 0xE0 {
			lo = 0xA0 // no overlong forms
		} else if b0 == 0xED {
			hi = 0x9F // no surrogates
		}
		if cont(1, lo, hi) && cont(2, 0x80, 0xBF) {
			return rune(b0&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3
		}
	case b0 >= 0xF0 && b0 <= 0xF4:
		lo, hi := byte(0x80), byte(0xBF)
		if b0 == 0xF0 {
			lo = 0x90 // no overlong forms
		} else if b0 == 0xF4 {
			hi = 0x8F // nothing above U+10FFFF
		}
		if cont(1, lo, hi) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) {
			return rune(b0&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F), 4
		}
	}
	return utf8.RuneError, 1
}

// appendJSONString appends s as a JSON string literal whose decoded value gives back s exactly,
// whatever bytes s holds:
//
//   - valid UTF-8 is kept, with the JSON escapes for '"', control characters (\n, \r, \t,
//     else \u00XX), DEL (\u007f) and U+2028/U+2029 (which break JavaScript readers);
//   - a byte that is not part of valid UTF-8 becomes the four characters \xNN in the decoded
//     value (JSON cannot carry raw bytes, and encoding/json would turn it into U+FFFD);
//   - so that \xNN is unambiguous, a backslash in s becomes two backslashes in the decoded
//     value.
//
// Reading a value back: JSON-decode, then replace \\ by \ and \xNN by the byte NN
// (docs/observability.md; unescapeValue in the tests).
func appendJSONString[T text](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending raw output
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b < utf8.RuneSelf && b != '"' && b != '\\' && b != 0x7f {
			i++
			continue
		}
		r, w := decodeRune(s, i)
		if b >= utf8.RuneSelf && r != utf8.RuneError && r != '\u2028' && r != '\u2029' {
			i += w
			continue // valid multi-byte rune: raw
		}
		if b >= utf8.RuneSelf && r == utf8.RuneError && w == 3 {
			i += w // a genuine U+FFFD
			continue
		}
		dst = append(dst, s[start:i]...)
		switch {
		case b == '"':
			dst = append(dst, '\\', '"')
		case b == '\\':
			dst = append(dst, '\\', '\\', '\\', '\\')
		case b == '\n':
			dst = append(dst, '\\', 'n')
		case b == '\r':
			dst = append(dst, '\\', 'r')
		case b == '\t':
			dst = append(dst, '\\', 't')
		case b < 0x20 || b == 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
		case r == '\u2028':
			dst = append(dst, `\u2028`...)
		case r == '\u2029':
			dst = append(dst, `\u2029`...)
		default: // invalid UTF-8: \xNN in the decoded value, written \\xNN in JSON
			dst = append(dst, '\\', '\\', 'x', hexDigits[b>>4], hexDigits[b&0xF])
		}
		i += w
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendTextValue appends s as a logfmt value: bare when it is non-empty printable ASCII
// without ' ', '"', '=' or '\'; otherwise quoted exactly as strconv.Quote quotes it (Go
// syntax: strconv.Unquote gives back s byte for byte, invalid UTF-8 as \xNN).
func appendTextValue[T text](dst []byte, s T) []byte {
	if len(s) > 0 && bare(s) {
		return append(dst, s...)
	}
	return appendQuoted(dst, s)
}

func bare[T text](s T) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b <= ' ' || b >= 0x7f || b == '"' || b == '=' || b == '\\' {
			return false
		}
	}
	return true
}

// appendQuoted is strconv.AppendQuote for either type, without converting a []byte to a
// string (FuzzTextQuote checks it against strconv.Quote on every input).
func appendQuoted[T text](dst []byte, s T) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		if j := i; s[j] >= 0x20 && s[j] < 0x7f && s[j] != '"' && s[j] != '\\' {
			for j < len(s) && s[j] >= 0x20 && s[j] < 0x7f && s[j] != '"' && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...) // a run of printable ASCII: as is
			i = j
			continue
		}
		r, w := decodeRune(s, i)
		switch {
		case w == 1 && r == utf8.RuneError:
			b := s[i]
			dst = append(dst, '\\', 'x', hexDigits[b>>4], hexDigits[b&0xF])
		case r == '"' || r == '\\':
			dst = append(dst, '\\', byte(r))
		case strconv.IsPrint(r):
			dst = append(dst, s[i:i+w]...)
		case r == '\a':
			dst = append(dst, '\\', 'a')
		case r == '\b':
			dst = append(dst, '\\', 'b')
		case r == '\f':
			dst = append(dst, '\\', 'f')
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r == '\v':
			dst = append(dst, '\\', 'v')
		case r < ' ' || r == 0x7f:
			dst = append(dst, '\\', 'x', hexDigits[byte(r)>>4], hexDigits[byte(r)&0xF])
		case r < 0x10000:
			dst = append(dst, '\\', 'u')
			for sh := 12; sh >= 0; sh -= 4 {
				dst = append(dst, hexDigits[r>>uint(sh)&0xF])
			}
		default:
			dst = append(dst, '\\', 'U')
			for sh := 28; sh >= 0; sh -= 4 {
				dst = append(dst, hexDigits[r>>uint(sh)&0xF])
			}
		}
		i += w
	}
	return append(dst, '"')
}
