package httpparse

import (
	"encoding/binary"
	"math/bits"
)

// parseFields splits the field lines of a complete head (starting at i,
// ending with the final CRLF) into t. The scanner has already guaranteed
// that every LF is preceded by CR, that the head ends with CRLFCRLF and that
// the line count fits the table.
func parseFields(buf []byte, i int, t *[MaxHeadersCap]Header) (int, errKind) {
	n := 0
	for {
		c := buf[i]
		if c == '\r' {
			if buf[i+1] != '\n' {
				return 0, kBareCR
			}
			return n, 0
		}
		if c == ' ' || c == '\t' {
			return 0, kObsFold
		}
		j := i
		for isTchar[buf[j]] {
			j++
		}
		if buf[j] != ':' {
			if j > i && (buf[j] == ' ' || buf[j] == '\t') {
				return 0, kSpaceBeforeColon
			}
			return 0, kBadFieldName
		}
		if j == i {
			return 0, kBadFieldName
		}
		name := buf[i:j:j]
		j++
		for buf[j] == ' ' || buf[j] == '\t' {
			j++
		}
		vs := j
		j = skipValueBytes(buf, j)
		if buf[j] != '\r' {
			return 0, kBadFieldValue
		}
		if buf[j+1] != '\n' {
			return 0, kBareCR
		}
		ve := j
		for ve > vs && (buf[ve-1] == ' ' || buf[ve-1] == '\t') {
			ve--
		}
		if n >= len(t) {
			return 0, kTooManyHeaders
		}
		h := &t[n]
		h.Name, h.Value = name, buf[vs:ve:ve]
		n++
		i = j + 2
	}
}

// skipValueBytes returns the index of the first byte at or after j that is
// not allowed inside a field value. Eight bytes at a time: a word with no
// byte below 0x20 and no 0x7f is all field-vchar, SP or obs-text, which is
// what long Cookie and User-Agent values are made of.
func skipValueBytes(buf []byte, j int) int {
	const lo = 0x0101010101010101
	const hi = 0x8080808080808080
	for j+8 <= len(buf) {
		w := binary.LittleEndian.Uint64(buf[j:])
		// A byte < 0x20 or == 0x7f sets its high bit in m. Bytes >= 0x80
		// are excluded by &^w (a classic "has less than" test). Borrows
		// can only flag bytes after a true hit, so the lowest set bit is
		// exact and names the first byte that is not plain value text.
		x := w ^ (0x7f * lo)
		m := ((w-0x20*lo)&^w | (x-lo)&^x) & hi
		if m == 0 {
			j += 8
			continue
		}
		k := j + bits.TrailingZeros64(m)>>3
		if buf[k] != '\t' {
			return k
		}
		j = k + 1
	}
	for j < len(buf) && isValueByte[buf[j]] {
		j++
	}
	return j
}

// skipToken returns the index of the first non-tchar byte at or after j.
// Four table loads are combined per branch: names end at a different length
// every line, and one mispredicted exit per four bytes is the cheap part.
func skipToken(b []byte, j int) int {
	for j+4 <= len(b) {
		if tcharBit[b[j]]&tcharBit[b[j+1]]&tcharBit[b[j+2]]&tcharBit[b[j+3]] == 0 {
			break
		}
		j += 4
	}
	for j < len(b) && isTchar[b[j]] {
		j++
	}
	return j
}

// fieldScan gathers what framing and connection management need from the
// field lines, shared by requests and responses.
type fieldScan struct {
	req       bool // Host and Expect only mean something in a request
	hosts     int
	host      []byte
	cl        int64
	clSeen    bool
	teSeen    bool
	teBad     bool
	teElems   int
	teChunked int
	teLast    bool // last coding seen is chunked
	close     bool
	keepAlive bool
	expect100 bool
}

func (f *fieldScan) scan(hs []Header) errKind {
	for i := range hs {
		if k := f.field(hs[i].Name, hs[i].Value); k != 0 {
			return k
		}
	}
	return 0
}

// field looks at one field line; names are told apart by length first so
// the common uninteresting field costs one switch.
func (f *fieldScan) field(name, value []byte) errKind {
	switch len(name) {
	case 4:
		if f.req && EqualFold(name, "host") {
			f.hosts++
			if f.hosts > 1 {
				return kMultiHost
			}
			if !validHost(value) {
				return kBadHost
			}
			f.host = value
		}
	case 6:
		if f.req && EqualFold(name, "expect") && EqualFold(value, "100-continue") {
			f.expect100 = true
		}
	case 10:
		if EqualFold(name, "connection") {
			f.close = f.close || HasToken(value, "close")
			f.keepAlive = f.keepAlive || HasToken(value, "keep-alive")
		}
	case 14:
		if EqualFold(name, "content-length") {
			v, ok := parseContentLength(value)
			if !ok {
				return kBadCL
			}
			if f.clSeen && v != f.cl {
				return kCLMismatch
			}
			f.cl, f.clSeen = v, true
		}
	case 17:
		if EqualFold(name, "transfer-encoding") {
			f.addTE(value)
		}
	}
	return 0
}

// addTE records one Transfer-Encoding line. Empty elements and codings with
// parameters are refused rather than skipped: a proxy that reads a coding
// list differently from its backend is a smuggling hole, so only the plain
// form is let through.
func (f *fieldScan) addTE(v []byte) {
	f.teSeen = true
	if len(v) == 0 {
		f.teBad = true
		return
	}
	for {
		var e []byte
		i := indexComma(v)
		if i >= 0 {
			e = trimOWS(v[:i])
		} else {
			e = trimOWS(v)
		}
		if !IsToken(e) {
			f.teBad = true
			return
		}
		f.teElems++
		f.teLast = EqualFold(e, "chunked")
		if f.teLast {
			f.teChunked++
		}
		if i < 0 {
			return
		}
		v = v[i+1:]
	}
}

// parseContentLength accepts 1*DIGIT, or a list of identical values
// ("5, 5", which some intermediaries produce when merging lines). Signs,
// inner spaces, empty elements and values beyond int64 are refused.
func parseContentLength(v []byte) (int64, bool) {
	var first int64 = -1
	for {
		i := indexComma(v)
		e := v
		if i >= 0 {
			e = v[:i]
		}
		e = trimOWS(e)
		if len(e) == 0 {
			return 0, false
		}
		var n int64
		for _, c := range e {
			if c < '0' || c > '9' {
				return 0, false
			}
			d := int64(c - '0')
			if n > (1<<63-1-d)/10 {
				return 0, false
			}
			n = n*10 + d
		}
		if first >= 0 && n != first {
			return 0, false
		}
		first = n
		if i < 0 {
			return first, true
		}
		v = v[i+1:]
	}
}

func validHost(v []byte) bool {
	for _, c := range v {
		if !isHostByte[c] {
			return false
		}
	}
	return true
}

func headerValue(hs []Header, name string) []byte {
	for i := range hs {
		if EqualFold(hs[i].Name, name) {
			return hs[i].Value
		}
	}
	return nil
}

func headersHaveToken(hs []Header, name, token string) bool {
	for i := range hs {
		if EqualFold(hs[i].Name, name) && HasToken(hs[i].Value, token) {
			return true
		}
	}
	return false
}
