package httpparse

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// splitFields stores the first n field lines of a head that scanFields has
// validated, starting at i, in t. Validation is done, so only the colon and
// the CR are looked for.
func splitFields(buf []byte, i int, t *[MaxHeadersCap]Header, n int) {
	for k := range n {
		j := i + bytes.IndexByte(buf[i:], ':')
		cr := j + bytes.IndexByte(buf[j:], '\r')
		vs, ve := trimValue(buf, j+1, cr)
		t[k] = Header{Name: buf[i:j:j], Value: buf[vs:ve:ve]}
		i = cr + 2
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
	j, _ = skipName(b, j)
	return j
}

// skipName is skipToken that also returns the tcharBit bits common to every
// byte it stepped over (bitTchar|bitPlain when none), which says at no extra
// branch whether a field name is plain letters, digits and "-".
func skipName(b []byte, j int) (int, uint8) {
	acc := uint8(bitTchar | bitPlain)
	for j+4 <= len(b) {
		a := tcharBit[b[j]] & tcharBit[b[j+1]] & tcharBit[b[j+2]] & tcharBit[b[j+3]]
		if a&bitTchar == 0 {
			break
		}
		acc &= a
		j += 4
	}
	for j < len(b) && isTchar[b[j]] {
		acc &= tcharBit[b[j]]
		j++
	}
	return j, acc
}

// fieldScan gathers what framing and connection management need from the
// field lines, shared by requests and responses, and refuses a line as soon
// as it contradicts an earlier one. Positions are indexes into the buffer
// being parsed, because a resumed parse may be handed the same bytes at a
// new address.
type fieldScan struct {
	cl           int64
	authS, authE int32 // authority of an absolute-form target; authE == 0 when none
	hostS, hostE int32 // the Host value
	hosts        int32
	teElems      int32
	teChunked    int32
	odd          int32 // field names with a byte outside [A-Za-z0-9-]
	minor        uint8 // HTTP/1.<minor> of the message
	req          bool  // Host and Expect only mean something in a request
	clSeen       bool
	teSeen       bool
	teLast       bool // last coding seen is chunked
	close        bool
	keepAlive    bool
	expect100    bool
}

// field applies one field line of buf: its name, and its trimmed value,
// which starts at buf[vs]. Names are told apart by length first, so the
// common uninteresting field costs one switch.
func (f *fieldScan) field(buf, name, value []byte, vs int) errKind {
	switch len(name) {
	case 4:
		if f.req && EqualFold(name, "host") {
			f.hosts++
			switch {
			case f.hosts > 1:
				return kMultiHost
			case !validHost(value):
				return kBadHost
			// RFC 9112 section 3.2.2 makes the authority of an
			// absolute-form target win over Host. A proxy that routes or
			// filters on Host while the backend obeys the target could be
			// steered around its own rules, so the two must agree.
			case f.authE != 0 && !equalFold(buf[f.authS:f.authE], value):
				return kHostMismatch
			}
			f.hostS, f.hostE = int32(vs), int32(vs+len(value))
		}
	case 6:
		if f.req && EqualFold(name, "expect") && EqualFold(value, "100-continue") {
			f.expect100 = true
		}
	case 10:
		if EqualFold(name, "connection") {
			return f.connection(value)
		}
	case 14:
		if EqualFold(name, "content-length") {
			v, ok := parseContentLength(value)
			switch {
			case !ok:
				return kBadCL
			case f.teSeen:
				return kTEAndCL
			case f.clSeen && v != f.cl:
				return kCLMismatch
			}
			f.cl, f.clSeen = v, true
		}
	case 17:
		if EqualFold(name, "transfer-encoding") {
			return f.transferEncoding(value)
		}
	}
	return 0
}

// connection reads one Connection line. close and keep-alive decide
// persistence. A connection option is the name of a field the next hop must
// remove (RFC 9110 section 7.6.1): naming Host, Content-Length or
// Transfer-Encoding asks a proxy to drop the very fields that delimit the
// message, after which the body would reach the backend as a request of its
// own. Such a message is refused (HAProxy likewise acts only on close,
// keep-alive and upgrade).
func (f *fieldScan) connection(v []byte) errKind {
	for len(v) > 0 {
		var e []byte
		if i := indexComma(v); i >= 0 {
			e, v = v[:i], v[i+1:]
		} else {
			e, v = v, nil
		}
		e = trimOWS(e)
		switch len(e) {
		case 4:
			if EqualFold(e, "host") {
				return kConnFraming
			}
		case 5:
			f.close = f.close || EqualFold(e, "close")
		case 10:
			f.keepAlive = f.keepAlive || EqualFold(e, "keep-alive")
		case 14:
			if EqualFold(e, "content-length") {
				return kConnFraming
			}
		case 17:
			if EqualFold(e, "transfer-encoding") {
				return kConnFraming
			}
		}
	}
	return 0
}

// transferEncoding reads one Transfer-Encoding line. Everything that makes
// the message unacceptable is decidable on the line itself: a request may
// only ever carry a single chunked, in all its Transfer-Encoding lines
// together.
func (f *fieldScan) transferEncoding(v []byte) errKind {
	switch {
	case f.minor == 0:
		return kTE10
	case f.clSeen:
		return kTEAndCL
	}
	f.teSeen = true
	if !f.addTE(v) {
		return kBadTE
	}
	switch {
	case f.req && (f.teElems != 1 || f.teChunked != 1):
		return kTEUnsupported
	case f.teChunked > 1:
		return kChunkedTwice
	}
	return 0
}

// addTE records the codings of one Transfer-Encoding line. Empty elements
// and codings with parameters are refused rather than skipped: a proxy that
// reads a coding list differently from its backend is a smuggling hole, so
// only the plain form is let through.
func (f *fieldScan) addTE(v []byte) bool {
	if len(v) == 0 {
		return false
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
			return false
		}
		f.teElems++
		f.teLast = EqualFold(e, "chunked")
		if f.teLast {
			f.teChunked++
		}
		if i < 0 {
			return true
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
