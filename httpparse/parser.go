package httpparse

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// MaxHeadersCap is the size of the fixed header table inside Request and
// Response; Limits.MaxHeaders is clamped to it.
const MaxHeadersCap = 256

// Limits bound what a peer may make the parser look at. Zero fields take
// the defaults of DefaultLimits.
type Limits struct {
	MaxHeadBytes   int // default 16 << 10; head longer -> 431 (or 414 when the request line alone is too long)
	MaxHeaders     int // default 100, clamped to MaxHeadersCap; more -> 431
	MaxTargetBytes int // default 8 << 10; longer target -> 414
}

// DefaultLimits returns the limits used for zero Limits fields.
func DefaultLimits() Limits {
	return Limits{MaxHeadBytes: 16 << 10, MaxHeaders: 100, MaxTargetBytes: 8 << 10}
}

func (l *Limits) norm() (head, headers, target int) {
	head, headers, target = l.MaxHeadBytes, l.MaxHeaders, l.MaxTargetBytes
	if head <= 0 {
		head = 16 << 10
	}
	if headers <= 0 {
		headers = 100
	}
	if headers > MaxHeadersCap {
		headers = MaxHeadersCap
	}
	if target <= 0 {
		target = 8 << 10
	}
	return head, headers, target
}

// Header is one field line. Name and Value are sub-slices of the parsed
// buffer (capacity clipped, so an append cannot scribble over the input);
// Value has leading and trailing whitespace removed.
type Header struct{ Name, Value []byte }

// Framing says how the body of a message is delimited (RFC 9112 section 6.3).
type Framing uint8

const (
	FramingNone       Framing = iota // no body
	FramingLength                    // Content-Length bytes follow
	FramingChunked                   // chunked transfer coding (last coding)
	FramingUntilClose                // responses only: body ends when the backend closes
)

func (f Framing) String() string {
	switch f {
	case FramingNone:
		return "none"
	case FramingLength:
		return "length"
	case FramingChunked:
		return "chunked"
	case FramingUntilClose:
		return "until-close"
	}
	return "invalid"
}

// Parser scans one head at a time for one connection. It holds no buffer,
// only offsets into the caller's, so the caller must pass the same bytes
// again (with more appended) after ErrNeedMore, and call Reset if it moves
// or discards them before the head completes. The state resets itself after
// a complete head or an error; calling Reset then is harmless.
type Parser struct {
	Limits Limits

	scan     int // first byte not yet examined
	line     int // start of the line being scanned
	start    int // start of the request or status line (after skipped empty lines)
	hdrStart int // first byte after the start line; 0 while it is incomplete
	hdrs     int // complete field lines seen

	// Request-line progress, checked byte by byte as it arrives so that
	// garbage (a TLS ClientHello on the plain port, say) is refused at once
	// instead of waiting for a line end that never comes.
	phase uint8 // 0 method, 1 target, 2 version
	cr    bool  // the last byte was CR, so the next one must be LF
	plen  int   // bytes in the current phase
	mEnd  int   // index of the SP after the method
	tEnd  int   // index of the SP after the target
	minor int
}

// Reset forgets any partial head.
func (p *Parser) Reset() {
	*p = Parser{Limits: p.Limits}
}

// scanHead finds the end of the head in buf, resuming where the previous
// call stopped. It returns the head length, or 0 and no error kind when more
// bytes are needed. Every check fires at a fixed byte position, so the
// outcome does not depend on how the bytes were split across calls.
func (p *Parser) scanHead(buf []byte, isReq bool) (int, errKind) {
	if p.scan > len(buf) {
		p.Reset() // the caller handed over a different buffer
	}
	maxHead, maxHeaders, maxTarget := p.Limits.norm()
	// Bytes at or past maxHead can never be part of an acceptable head, so
	// they are not even looked at: a megabyte read costs what 16 KiB does.
	limit := min(len(buf), maxHead)
	if p.scan > limit { // Limits lowered while a head was in progress
		return 0, p.limitKind(isReq)
	}
	for {
		rest := buf[p.scan:limit]
		i := bytes.IndexByte(rest, '\n')
		if isReq && p.hdrStart == 0 {
			seg := rest
			if i >= 0 {
				seg = rest[:i]
			}
			if k := p.scanRequestLine(seg, maxTarget); k != 0 {
				return 0, k
			}
		}
		if i < 0 {
			if len(buf) > maxHead {
				return 0, p.limitKind(isReq)
			}
			p.scan = len(buf)
			return 0, 0
		}
		lf := p.scan + i
		if lf == 0 || buf[lf-1] != '\r' {
			return 0, kBareLF
		}
		p.scan = lf + 1
		empty := lf-1 == p.line
		switch {
		case p.hdrStart == 0 && empty:
			// RFC 9112 section 2.2: a server SHOULD ignore empty lines
			// before the request line (old clients send CRLF after a body).
			if !isReq {
				return 0, kBadStatusLine
			}
			p.line, p.start = lf+1, lf+1
			p.phase, p.plen, p.cr = 0, 0, false
		case p.hdrStart == 0:
			if isReq {
				if k := p.parseRequestLine(buf[p.start : lf-1]); k != 0 {
					return 0, k
				}
			}
			p.hdrStart, p.line = lf+1, lf+1
		case empty:
			return lf + 1, 0
		default:
			p.hdrs++
			if p.hdrs > maxHeaders {
				return 0, kTooManyHeaders
			}
			p.line = lf + 1
		}
	}
}

func (p *Parser) limitKind(isReq bool) errKind {
	if isReq && p.hdrStart == 0 {
		return kLineTooLong
	}
	return kHeadTooLarge
}

const httpVersionPrefix = "HTTP/"

// scanRequestLine checks request-line bytes as they arrive (the LF excluded).
func (p *Parser) scanRequestLine(seg []byte, maxTarget int) errKind {
	for _, c := range seg {
		if p.cr {
			return kBareCR
		}
		if c == '\r' {
			p.cr = true
			continue
		}
		switch p.phase {
		case 0:
			if c == ' ' {
				if p.plen == 0 {
					return kBadMethod
				}
				p.phase, p.plen = 1, 0
			} else if !isTchar[c] {
				return kBadMethod
			} else {
				p.plen++
			}
		case 1:
			if c == ' ' {
				if p.plen == 0 {
					return kBadTarget
				}
				p.phase, p.plen = 2, 0
			} else if c <= ' ' || c >= 0x7f {
				return kBadTarget
			} else {
				p.plen++
				if p.plen > maxTarget {
					return kTargetTooLong
				}
			}
		default:
			if !versionByteOK(p.plen, c) {
				return kBadVersion
			}
			p.plen++
		}
	}
	return 0
}

// versionByteOK checks byte pos of "HTTP/" DIGIT "." DIGIT.
func versionByteOK(pos int, c byte) bool {
	switch {
	case pos < len(httpVersionPrefix):
		return c == httpVersionPrefix[pos]
	case pos == 5 || pos == 7:
		return c >= '0' && c <= '9'
	case pos == 6:
		return c == '.'
	}
	return false
}

// parseRequestLine runs on the complete line (CRLF excluded); its bytes have
// passed scanRequestLine, so only the structure is left to check.
func (p *Parser) parseRequestLine(line []byte) errKind {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return kBadRequestLine
	}
	method, rest := line[:sp1], line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return kBadRequestLine
	}
	target, ver := rest[:sp2], rest[sp2+1:]
	if len(ver) != len("HTTP/1.1") {
		return kBadVersion
	}
	if ver[5] != '1' || (ver[7] != '0' && ver[7] != '1') {
		return kVersion
	}
	if k := targetFormKind(method, target); k != 0 {
		return k
	}
	p.mEnd = p.start + sp1
	p.tEnd = p.mEnd + 1 + sp2
	p.minor = int(ver[7] - '0')
	return 0
}

// targetFormKind checks the request-target form against the method (RFC
// 9112 section 3.2).
func targetFormKind(method, target []byte) errKind {
	switch {
	case string(method) == "CONNECT":
		return kConnect
	case target[0] == '/':
	case len(target) == 1 && target[0] == '*':
		if string(method) != "OPTIONS" {
			return kAsterisk
		}
	case !isAbsoluteForm(target):
		return kBadTargetForm
	}
	return 0
}

// targetAuthority returns the authority of an absolute-form target.
func targetAuthority(t []byte) []byte {
	i := bytes.Index(t, []byte("://"))
	if i < 0 {
		return nil
	}
	a := t[i+3:]
	for j, c := range a {
		if c == '/' || c == '?' || c == '#' {
			return a[:j]
		}
	}
	return a
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
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

// isAbsoluteForm accepts scheme "://" authority [path...]. Requiring the
// "//" keeps "host:port" (authority-form, CONNECT only) from passing as a
// URI with scheme "host".
func isAbsoluteForm(t []byte) bool {
	i := 0
	for ; i < len(t); i++ {
		c := t[i] | 0x20
		if c >= 'a' && c <= 'z' {
			continue
		}
		if i > 0 && ((t[i] >= '0' && t[i] <= '9') || t[i] == '+' || t[i] == '-' || t[i] == '.') {
			continue
		}
		break
	}
	if i == 0 || len(t) < i+4 || t[i] != ':' || t[i+1] != '/' || t[i+2] != '/' {
		return false
	}
	return t[i+3] != '/'
}

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

// Request is a parsed request head. Every slice points into the buffer given
// to ParseRequest and is valid until that buffer changes.
type Request struct {
	Method, Target []byte
	Minor          int      // HTTP/1.<Minor>, 0 or 1
	Headers        []Header // = table[:n]; valid until buf changes
	Host           []byte   // the single Host value (nil if absent, allowed for HTTP/1.0 only)
	Framing        Framing
	ContentLength  int64 // when Framing == FramingLength
	KeepAlive      bool  // persistent per version + Connection: close/keep-alive
	Expect100      bool  // Expect: 100-continue present

	table [MaxHeadersCap]Header
}

// Header returns the first value of the named field (ASCII case-insensitive),
// or nil if absent.
func (r *Request) Header(name string) []byte { return headerValue(r.Headers, name) }

// HasToken reports whether token appears in the comma lists of any field
// line called name, e.g. HasToken("Connection", "upgrade") for Firefox's
// "Connection: keep-alive, Upgrade".
func (r *Request) HasToken(name, token string) bool { return headersHaveToken(r.Headers, name, token) }

// IsWebSocketUpgrade reports whether the request asks to switch to WebSocket.
// CheckWebSocketRequest does the full handshake validation.
func (r *Request) IsWebSocketUpgrade() bool {
	return r.HasToken("Upgrade", "websocket") && r.HasToken("Connection", "upgrade")
}

// Response is a parsed response head; slices point into the parsed buffer.
type Response struct {
	Minor         int
	Status        int
	Reason        []byte
	Headers       []Header
	Framing       Framing // 1xx, 204, 304 and responses to HEAD: FramingNone
	ContentLength int64
	KeepAlive     bool // false whenever Framing is FramingUntilClose

	table [MaxHeadersCap]Header
}

// Header returns the first value of the named field, or nil if absent.
func (r *Response) Header(name string) []byte { return headerValue(r.Headers, name) }

// HasToken reports whether token appears in any field line called name.
func (r *Response) HasToken(name, token string) bool {
	return headersHaveToken(r.Headers, name, token)
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

// ParseRequest parses the head at the start of buf. Returns (headLen, nil)
// on success, where headLen counts the bytes through the final CRLFCRLF
// (including any empty lines skipped before the request line); (0,
// ErrNeedMore) when incomplete; (0, *Error) when malformed. Zero allocations.
func (p *Parser) ParseRequest(buf []byte, req *Request) (int, error) {
	if p.scan == 0 {
		if end := p.fastRequest(buf, req); end > 0 {
			return end, nil
		}
	}
	end, k := p.scanHead(buf, true)
	if k == 0 && end == 0 {
		return 0, ErrNeedMore
	}
	if k == 0 {
		k = p.finishRequest(buf[:end], req)
	}
	p.Reset()
	if k != 0 {
		return 0, reqErrs[k]
	}
	return end, nil
}

// fastRequest is the one-pass path for the common case, a complete and
// valid head in one read. It is at least as strict as the resumable path
// and gives up (returns 0) on anything unusual, incomplete or wrong, leaving
// the verdict to scanHead; so it can only ever make a success faster, never
// change an outcome.
func (p *Parser) fastRequest(buf []byte, req *Request) int {
	maxHead, maxHeaders, maxTarget := p.Limits.norm()
	b := buf
	if len(b) > maxHead {
		b = b[:maxHead]
	}
	i := 0
	for i < len(b) && isTchar[b[i]] {
		i++
	}
	if i == 0 || i >= len(b) || b[i] != ' ' {
		return 0
	}
	mEnd := i
	i++
	ts := i
	for i < len(b) && b[i] > ' ' && b[i] < 0x7f {
		i++
	}
	if i == ts || i-ts > maxTarget || i+11 > len(b) || b[i] != ' ' {
		return 0
	}
	tEnd := i
	v := b[i+1 : i+11]
	if string(v[:7]) != "HTTP/1." || (v[7] != '0' && v[7] != '1') || v[8] != '\r' || v[9] != '\n' {
		return 0
	}
	if targetFormKind(b[:mEnd], b[ts:tEnd]) != 0 {
		return 0
	}
	f := fieldScan{req: true}
	end, n := fastFields(b, i+11, &req.table, maxHeaders, &f)
	if end == 0 {
		return 0
	}
	minor := int(v[7] - '0')
	if setRequest(req, &f, minor, b[ts:tEnd]) != 0 {
		return 0
	}
	req.Headers = req.table[:n:n]
	req.Method = b[:mEnd:mEnd]
	req.Target = b[ts:tEnd:tEnd]
	return end
}

// fastFields parses field lines from i to the empty line, feeding each to
// f. It returns the head end and the field count, or 0 to give up.
func fastFields(b []byte, i int, t *[MaxHeadersCap]Header, maxHeaders int, f *fieldScan) (int, int) {
	n := 0
	for i < len(b) {
		if b[i] == '\r' {
			if i+1 < len(b) && b[i+1] == '\n' {
				return i + 2, n
			}
			return 0, 0
		}
		j := skipToken(b, i)
		if j == i || j >= len(b) || b[j] != ':' {
			return 0, 0
		}
		name := b[i:j:j]
		j++
		for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
			j++
		}
		vs := j
		j = skipValueBytes(b, j)
		if j+1 >= len(b) || b[j] != '\r' || b[j+1] != '\n' || n >= maxHeaders || n >= len(t) {
			return 0, 0
		}
		ve := j
		for ve > vs && (b[ve-1] == ' ' || b[ve-1] == '\t') {
			ve--
		}
		h := &t[n]
		h.Name, h.Value = name, b[vs:ve:ve]
		if f.field(name, h.Value) != 0 {
			return 0, 0
		}
		n++
		i = j + 2
	}
	return 0, 0
}

func (p *Parser) finishRequest(buf []byte, req *Request) errKind {
	n, k := parseFields(buf, p.hdrStart, &req.table)
	if k != 0 {
		return k
	}
	req.Headers = req.table[:n:n]
	f := fieldScan{req: true}
	if k := f.scan(req.Headers); k != 0 {
		return k
	}
	req.Method = buf[p.start:p.mEnd:p.mEnd]
	req.Target = buf[p.mEnd+1 : p.tEnd : p.tEnd]
	return setRequest(req, &f, p.minor, req.Target)
}

// setRequest derives Host, persistence and framing (RFC 9112 sections 3.2,
// 6.1, 6.3, 9.3) from the gathered fields.
func setRequest(req *Request, f *fieldScan, minor int, target []byte) errKind {
	req.Minor = minor
	req.Host = f.host
	// RFC 9112 section 3.2.2 makes the authority of an absolute-form target
	// win over Host. A proxy that routes or filters on Host while the
	// backend obeys the target could be steered around its own rules, so
	// the two must agree.
	if f.hosts == 1 && target[0] != '/' && target[0] != '*' && !equalFoldBytes(targetAuthority(target), f.host) {
		return kHostMismatch
	}
	req.Expect100 = f.expect100
	req.ContentLength = 0
	if minor == 1 {
		req.KeepAlive = !f.close
		if f.hosts == 0 {
			return kNoHost
		}
	} else {
		req.KeepAlive = f.keepAlive && !f.close
	}
	switch {
	case f.teSeen:
		switch {
		case minor == 0:
			return kTE10
		case f.clSeen:
			return kTEAndCL
		case f.teBad:
			return kBadTE
		case f.teElems != 1 || f.teChunked != 1:
			return kTEUnsupported
		}
		req.Framing = FramingChunked
	case f.clSeen:
		req.Framing = FramingLength
		req.ContentLength = f.cl
	default:
		req.Framing = FramingNone
	}
	return 0
}

// ParseResponse parses a backend's response head at the start of buf, the
// same way as ParseRequest. requestMethodHEAD makes the body FramingNone.
// Every malformed head is an *Error with Status 502.
func (p *Parser) ParseResponse(buf []byte, resp *Response, requestMethodHEAD bool) (int, error) {
	if p.scan == 0 {
		if end := p.fastResponse(buf, resp, requestMethodHEAD); end > 0 {
			return end, nil
		}
	}
	end, k := p.scanHead(buf, false)
	if k == 0 && end == 0 {
		return 0, ErrNeedMore
	}
	if k == 0 {
		k = p.finishResponse(buf[:end], resp, requestMethodHEAD)
	}
	p.Reset()
	if k != 0 {
		return 0, respErrs[k]
	}
	return end, nil
}

// fastResponse is fastRequest for responses: success only, else 0.
func (p *Parser) fastResponse(buf []byte, resp *Response, head bool) int {
	maxHead, maxHeaders, _ := p.Limits.norm()
	b := buf
	if len(b) > maxHead {
		b = b[:maxHead]
	}
	lf := bytes.IndexByte(b, '\n')
	if lf < 1 || b[lf-1] != '\r' {
		return 0
	}
	status, minor, reason, k := parseStatusLine(b[:lf-1])
	if k != 0 {
		return 0
	}
	var f fieldScan
	end, n := fastFields(b, lf+1, &resp.table, maxHeaders, &f)
	if end == 0 {
		return 0
	}
	if setResponse(resp, &f, status, minor, head) != 0 {
		return 0
	}
	resp.Headers = resp.table[:n:n]
	resp.Reason = reason
	return end
}

// parseStatusLine reads status-line = HTTP-version SP status-code SP
// [ reason-phrase ]; the second SP is often missing in the wild when the
// reason is empty, so it is optional.
func parseStatusLine(line []byte) (status, minor int, reason []byte, k errKind) {
	if len(line) < len("HTTP/1.1 200") || line[8] != ' ' {
		return 0, 0, nil, kBadStatusLine
	}
	for i := 0; i < 8; i++ {
		if !versionByteOK(i, line[i]) {
			return 0, 0, nil, kBadStatusLine
		}
	}
	if line[5] != '1' || (line[7] != '0' && line[7] != '1') {
		return 0, 0, nil, kVersion
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, nil, kBadStatusLine
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 || status > 599 {
		return 0, 0, nil, kBadStatus
	}
	reason = line[12:]
	if len(reason) > 0 {
		if reason[0] != ' ' {
			return 0, 0, nil, kBadStatusLine
		}
		reason = reason[1:]
		for _, c := range reason {
			if !isValueByte[c] {
				if c == '\r' {
					return 0, 0, nil, kBareCR
				}
				return 0, 0, nil, kBadStatusLine
			}
		}
	}
	return status, int(line[7] - '0'), reason[:len(reason):len(reason)], 0
}

func (p *Parser) finishResponse(buf []byte, resp *Response, head bool) errKind {
	status, minor, reason, k := parseStatusLine(buf[:p.hdrStart-2])
	if k != 0 {
		return k
	}
	n, k := parseFields(buf, p.hdrStart, &resp.table)
	if k != 0 {
		return k
	}
	resp.Headers = resp.table[:n:n]
	var f fieldScan
	if k := f.scan(resp.Headers); k != 0 {
		return k
	}
	resp.Reason = reason
	return setResponse(resp, &f, status, minor, head)
}

// setResponse derives framing and persistence (RFC 9112 section 6.3).
func setResponse(resp *Response, f *fieldScan, status, minor int, head bool) errKind {
	resp.Minor = minor
	resp.Status = status
	resp.ContentLength = 0
	switch {
	case f.teSeen:
		switch {
		case minor == 0:
			return kTE10
		case f.clSeen:
			return kTEAndCL
		case f.teBad:
			return kBadTE
		case f.teChunked > 1:
			return kChunkedTwice
		case f.teLast:
			resp.Framing = FramingChunked
		default:
			// Rule 4: chunked not last means the body runs until close.
			resp.Framing = FramingUntilClose
		}
	case f.clSeen:
		resp.Framing = FramingLength
		resp.ContentLength = f.cl
	default:
		resp.Framing = FramingUntilClose
	}
	if head || status < 200 || status == 204 || status == 304 {
		resp.Framing = FramingNone
		resp.ContentLength = 0
	}
	if minor == 1 {
		resp.KeepAlive = !f.close
	} else {
		resp.KeepAlive = f.keepAlive && !f.close
	}
	if resp.Framing == FramingUntilClose {
		resp.KeepAlive = false
	}
	return 0
}
