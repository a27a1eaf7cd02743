package accesslog

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

var escapeSeeds = []string{"", "plain", `"quoted"`, `back\slash`, `\x41`, "\x00\x01\x1f\x7f", "\xff\xfe",
	"\xe2\x80\xa8\xe2\x80\xa9", "é☃\U0001F600", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xef\xbf\xbd",
	"\xe0\x80", "a\nb\rc\td", "\\\\x", "%2e%2e/", "\U0010FFFF"}

// FuzzJSONEscape: for any bytes, a JSON line carrying them as the target (and method) parses
// with encoding/json, is one line, and the decoded value, unescaped as documented, gives back
// the bytes exactly.
func FuzzJSONEscape(f *testing.F) {
	for _, s := range escapeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := relayed
		r.Target, r.Method = b, b
		line := format(JSON, &r, nil)
		if strings.IndexByte(line, '\n') != len(line)-1 || !utf8.ValidString(line) {
			t.Fatalf("not one valid UTF-8 line: %q", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		for _, k := range []string{"target", "method"} {
			s, ok := m[k].(string)
			if !ok {
				t.Fatalf("%s: %T", k, m[k])
			}
			back, err := unescapeValue(s)
			if err != nil {
				t.Fatalf("%s %q: %v", k, s, err)
			}
			if string(back) != string(b) {
				t.Fatalf("%s: round trip %q -> %q -> %q", k, b, s, back)
			}
		}
		// Valid UTF-8 without backslashes reads back with no unescaping at all.
		if utf8.Valid(b) && !strings.Contains(string(b), `\`) && m["target"] != string(b) {
			t.Fatalf("plain value changed: %q -> %q", b, m["target"])
		}
	})
}

// FuzzTextQuote: the text format's quoting is strconv.Quote, byte for byte, for []byte and
// string input alike; unquoting gives back the bytes; a bare value is only ever safe bytes.
func FuzzTextQuote(f *testing.F) {
	for _, s := range escapeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := strconv.Quote(string(b))
		if got := string(appendQuoted(nil, b)); got != want {
			t.Fatalf("appendQuoted(%q) = %s, strconv.Quote = %s", b, got, want)
		}
		if got := string(appendQuoted(nil, string(b))); got != want {
			t.Fatalf("appendQuoted(string %q) = %s, strconv.Quote = %s", b, got, want)
		}
		v := string(appendTextValue(nil, b))
		if v != want {
			if v != string(b) || !bare(b) || len(b) == 0 {
				t.Fatalf("bare value %q for %q", v, b)
			}
		} else if back, err := strconv.Unquote(v); err != nil || back != string(b) {
			t.Fatalf("unquote %s: %q, %v", v, back, err)
		}
		r := relayed
		r.Target = b
		if _, vals, err := parseLogfmt(format(Text, &r, nil)); err != nil || vals["target"] != string(b) {
			t.Fatalf("line with target %q: %v, %q", b, err, vals["target"])
		}
	})
}

// FuzzDecodeRune: decodeRune accepts exactly what unicode/utf8 accepts.
func FuzzDecodeRune(f *testing.F) {
	for _, s := range escapeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for i := 0; i < len(b); {
			r, w := decodeRune(b, i)
			wr, ww := utf8.DecodeRune(b[i:])
			if r != wr || w != ww {
				t.Fatalf("at %d of %q: %U/%d, utf8 says %U/%d", i, b, r, w, wr, ww)
			}
			if sr, sw := decodeRune(string(b), i); sr != r || sw != w {
				t.Fatalf("string and []byte disagree at %d of %q", i, b)
			}
			i += w
		}
	})
}
