package httpparse

// Byte classes as lookup tables: one load per byte beats a chain of
// comparisons in the hot loops, and the tables are shared read-only state.
var (
	// tchar (RFC 9110 section 5.6.2): method names, field names, codings.
	isTchar [256]bool
	// tcharBit holds bitTchar for tchar and also bitPlain for the bytes of
	// a plain field name ([A-Za-z0-9-]), so several lookups combine with &.
	tcharBit [256]uint8
	// field-vchar / SP / HTAB / obs-text (RFC 9110 section 5.5). CR is not
	// here: the parsers treat it as the end of the value and then demand LF.
	isValueByte [256]bool
	// unreserved and sub-delims (RFC 3986 section 3.2.2): the reg-name
	// characters of a host, pct-encoding aside.
	isRegName [256]bool
	// qdtext and obs-text inside quoted-string (RFC 9110 section 5.6.4).
	isQdtext [256]bool
)

func init() {
	for c := '0'; c <= '9'; c++ {
		isTchar[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		isTchar[c] = true
		isTchar[c-'a'+'A'] = true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		isTchar[c] = true
	}
	for c := range isTchar {
		if isTchar[c] {
			tcharBit[c] = bitTchar
		}
		if c == '-' || (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'z') {
			tcharBit[c] |= bitPlain
		}
	}
	for c := 0; c < 256; c++ {
		isValueByte[c] = c == '\t' || (c >= 0x20 && c != 0x7f)
		isQdtext[c] = c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
			(c >= 0x5d && c <= 0x7e) || c >= 0x80
	}
	for c := '0'; c <= '9'; c++ {
		isRegName[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		isRegName[c] = true
		isRegName[c-'a'+'A'] = true
	}
	for _, c := range []byte("-._~!$&'()*+,;=") {
		isRegName[c] = true
	}
}

const (
	bitTchar = 1 << iota // tchar
	bitPlain             // A-Z a-z 0-9 "-"
)

// IsToken reports whether b is a non-empty RFC 9110 token.
func IsToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTchar[c] {
			return false
		}
	}
	return true
}

// EqualFold reports whether b equals s under ASCII case folding. HTTP names
// and tokens are ASCII, so Unicode folding (strings.EqualFold) would be both
// slower and wrong: it would match "K" (Kelvin sign) to "k".
func EqualFold(b []byte, s string) bool { return equalFold(b, s) }

// EqualFoldBytes is EqualFold for two byte slices (a field name against a
// token from a Connection list, say), without a string conversion.
func EqualFoldBytes(a, b []byte) bool { return equalFold(a, b) }

// IsPlainName reports whether b is a non-empty field name made only of
// ASCII letters, digits and "-". Other tchar ("_", ".", "!", ...) are legal
// in a name, but CGI-style stacks fold "_" into "-" (X_Forwarded_For reads
// as X-Forwarded-For there), so a proxy may not want to forward them.
func IsPlainName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if tcharBit[c]&bitPlain == 0 {
			return false
		}
	}
	return true
}

func equalFold[A, B ~string | ~[]byte](a A, b B) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c, d := a[i], b[i]
		if c == d {
			continue
		}
		c |= 0x20
		if c != d|0x20 || c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// HasToken reports whether the comma-separated list contains token, compared
// case-insensitively, with optional whitespace around each element ignored.
// Elements are compared whole: "keep-alive" does not contain "alive".
func HasToken(list []byte, token string) bool {
	for len(list) > 0 {
		var elem []byte
		if i := indexComma(list); i >= 0 {
			elem, list = list[:i], list[i+1:]
		} else {
			elem, list = list, nil
		}
		if EqualFold(trimOWS(elem), token) {
			return true
		}
	}
	return false
}

// indexComma is bytes.IndexByte for the short lists in Connection and
// Upgrade values, where a plain loop beats the call overhead.
func indexComma(b []byte) int {
	for i, c := range b {
		if c == ',' {
			return i
		}
	}
	return -1
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
