package route

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// maxHost is the longest host name Match looks up (RFC 1035: 253 characters plus a trailing dot).
// A longer Host header can only match host-less routes.
const maxHost = 255

// lower folds ASCII upper case only. Unicode folding is never applied to wire data: with
// strings.EqualFold the Kelvin sign (U+212A) would equal "k" and "ſ" (U+017F) would equal "s".
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// trimHost reduces a Host header value (or an absolute-form authority) to the part route hosts
// are compared with: userinfo and port removed, and one trailing dot. An IPv6 literal keeps its
// brackets ("[::1]:8080" -> "[::1]"). upper reports an ASCII upper-case letter in what is left
// (only then does Match copy it to fold it). ok is false when nothing is left or the name is
// longer than maxHost: then only host-less routes can match. It returns a sub-slice.
func trimHost(h []byte) (host []byte, upper, ok bool) {
	// httpparse refuses '@' in Host (and an absolute-form authority must equal Host), so this
	// is for other callers; IndexByte is vectorised and costs little when there is none.
	if bytes.IndexByte(h, '@') >= 0 {
		h = h[bytes.LastIndexByte(h, '@')+1:] // userinfo cannot hold an unencoded '@'
	}
	if len(h) > 0 && h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 0 {
			return nil, false, false
		}
		h = h[:end+1]
	} else {
		if i := bytes.IndexByte(h, ':'); i >= 0 {
			h = h[:i]
		}
		if n := len(h); n > 0 && h[n-1] == '.' {
			h = h[:n-1]
		}
	}
	return h, hasUpper(h), len(h) > 0 && len(h) <= maxHost
}

// hasUpper reports an ASCII upper-case letter in h, eight bytes at a time.
func hasUpper(h []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(h) >= 8 {
		x := binary.LittleEndian.Uint64(h)
		// A byte b < 0x80 is in 'A'..'Z' when b+(0x80-'A') has bit 7 set and b+(0x80-'Z'-1)
		// does not; bytes >= 0x80 are masked out by &^x.
		low := x &^ highs
		if ((low+ones*(0x80-'A'))&^(low+ones*(0x80-'Z'-1)))&^x&highs != 0 {
			return true
		}
		h = h[8:]
	}
	for _, c := range h {
		if 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// ParseHost validates the host part of a route and returns it in stored form: ASCII lower case,
// without a trailing dot. Accepted: a DNS name ("grafana.example.com", labels of letters,
// digits, '-' and '_'), a wildcard whose first label is "*" ("*.example.com" matches exactly one
// label in its place), an IPv4 literal, or an IPv6 literal in brackets ("[::1]"). A port is
// refused (ports are ignored for matching, so it would be misleading), and so is any non-ASCII
// byte: internationalized names must be written in punycode ("xn--..."), which is also what
// clients send.
func ParseHost(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty host")
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return "", fmt.Errorf("host %q: non-ASCII byte (write internationalized names in punycode, xn--...)", s)
		}
	}
	h := strings.Map(func(r rune) rune { return rune(lower(byte(r))) }, s)
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", fmt.Errorf("host %q: unterminated IPv6 literal", s)
		}
		if end != len(h)-1 {
			return "", fmt.Errorf("host %q: nothing may follow the IPv6 literal (a port is ignored for matching, leave it out)", s)
		}
		lit := h[1:end]
		if lit == "" {
			return "", fmt.Errorf("host %q: empty IPv6 literal", s)
		}
		if strings.IndexByte(lit, ':') < 0 {
			return "", fmt.Errorf("host %q: not an IPv6 literal", s)
		}
		for i := 0; i < len(lit); i++ {
			c := lit[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == ':' || c == '.') {
				return "", fmt.Errorf("host %q: %q is not allowed in an IPv6 literal", s, c)
			}
		}
		return h, nil
	}
	if strings.IndexByte(h, ':') >= 0 {
		return "", fmt.Errorf("host %q: a port is ignored for matching, leave it out (IPv6 literals go in brackets)", s)
	}
	h = strings.TrimSuffix(h, ".")
	if len(h) > 253 {
		return "", fmt.Errorf("host %q: longer than 253 characters", s)
	}
	name := h
	if strings.HasPrefix(h, "*.") {
		name = h[2:]
	}
	if name == "" {
		return "", fmt.Errorf("host %q: empty name", s)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return "", fmt.Errorf("host %q: empty label", s)
		}
		if label == "*" || strings.IndexByte(label, '*') >= 0 {
			return "", fmt.Errorf("host %q: '*' is only allowed as the whole first label (*.example.com); leave the host out to match every host", s)
		}
		if len(label) > 63 {
			return "", fmt.Errorf("host %q: label longer than 63 characters", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("host %q: %q is not allowed in a host name", s, c)
			}
		}
	}
	return h, nil
}
