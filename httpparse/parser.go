package httpparse

// MaxHeadersCap is the size of the fixed header table inside Request and
// Response; Limits.MaxHeaders is clamped to it.
const MaxHeadersCap = 256

// maxHeadCap bounds Limits.MaxHeadBytes so that offsets fit the parser's
// int32 fields.
const maxHeadCap = 1 << 30

// Limits bound what a peer may make the parser look at. Zero fields take
// the defaults of DefaultLimits; MaxHeadBytes is capped at 1 GiB.
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
	if head > maxHeadCap {
		head = maxHeadCap
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
//
// Every byte is judged when it arrives: the start line and each field line
// are checked as they grow, and each complete field line is applied at once
// (a second Host, a Content-Length that disagrees with an earlier one,
// Transfer-Encoding next to Content-Length, a Connection option naming a
// framing field...). A head that can no longer become valid is refused at
// its first impossible byte, not when the blank line arrives, which a
// client that stalls would otherwise postpone until the server's head
// timeout. The outcome never depends on how the bytes were split.
type Parser struct {
	Limits Limits

	// Offsets are int32: norm caps the head at 1 GiB, and a parser lives in
	// every connection twice (request and response side), so its size counts.
	scan     int32 // first byte not yet examined
	start    int32 // start of the request or status line (after skipped empty lines)
	hdrStart int32 // first byte after the start line; 0 while it is incomplete
	line     int32 // start of the field line being scanned
	hdrs     int32 // complete field lines seen
	plen     int32 // bytes in the current start-line phase (status line: bytes so far)
	mEnd     int32 // index of the SP after the method
	tEnd     int32 // index of the SP after the target
	colon    int32 // index of the current field line's colon
	code     int16 // status code digits so far
	minor    uint8
	phase    uint8 // request line: phMethod, phTarget or phVersion
	cr       bool  // the last byte was CR, so the next one must be LF
	fl       uint8 // field line: flStart, flName, flValue, flLF or flEndLF
	nameBits uint8 // tcharBit of the current name's bytes, and-ed
	ts       targetScan
	f        fieldScan
}

// Request-line phases.
const (
	phMethod uint8 = iota
	phTarget
	phVersion
)

// Field-line states.
const (
	flStart uint8 = iota // first byte of a field line, or CR of the blank line
	flName               // in the name
	flValue              // after the colon
	flLF                 // CR ended the value; LF must follow
	flEndLF              // CR of the blank line; LF ends the head
)

// Reset forgets any partial head.
func (p *Parser) Reset() {
	*p = Parser{Limits: p.Limits}
}

// scanHead validates buf up to the end of the head, resuming where the
// previous call stopped. It returns the head length, or 0 and no error kind
// when more bytes are needed. Every check fires at a fixed byte position, so
// the outcome does not depend on how the bytes were split across calls.
//
// Field lines completed by this call are stored in t at once; from is the
// number of lines completed by earlier calls, which the caller splits again
// at the end: t may have served another message in between (an event loop
// shares one), and the buffer may have moved.
func (p *Parser) scanHead(buf []byte, isReq bool, t *[MaxHeadersCap]Header) (end, from int, k errKind) {
	if int(p.scan) > len(buf) {
		p.Reset() // the caller handed over a different buffer
	}
	from = int(p.hdrs)
	maxHead, maxHeaders, maxTarget := p.Limits.norm()
	// Bytes at or past maxHead can never be part of an acceptable head, so
	// they are not even looked at: a megabyte read costs what 16 KiB does.
	limit := min(len(buf), maxHead)
	if int(p.scan) > limit { // Limits lowered while a head was in progress
		return 0, from, p.limitKind(isReq)
	}
	if p.hdrStart == 0 {
		if isReq {
			k = p.scanRequestLine(buf, limit, maxTarget)
		} else {
			k = p.scanStatusLine(buf, limit)
		}
		if k != 0 {
			return 0, from, k
		}
	}
	if p.hdrStart != 0 {
		if end, k = p.scanFields(buf, limit, maxHeaders, t); end != 0 || k != 0 {
			return end, from, k
		}
	}
	if len(buf) > maxHead {
		return 0, from, p.limitKind(isReq)
	}
	return 0, from, 0
}

func (p *Parser) limitKind(isReq bool) errKind {
	if isReq && p.hdrStart == 0 {
		return kLineTooLong
	}
	return kHeadTooLarge
}

const httpVersionPrefix = "HTTP/"

// scanRequestLine follows request-line = method SP request-target SP
// HTTP-version CRLF from p.scan to limit. Empty lines before it are skipped
// (RFC 9112 section 2.2: old clients send CRLF after a body).
func (p *Parser) scanRequestLine(buf []byte, limit, maxTarget int) errKind {
	for i := int(p.scan); i < limit; i++ {
		c := buf[i]
		if p.cr {
			if c != '\n' {
				return kBareCR
			}
			p.cr = false
			if p.phase == phMethod {
				p.start = int32(i + 1) // an empty line
				continue
			}
			p.scan, p.hdrStart, p.line = int32(i+1), int32(i+1), int32(i+1)
			p.f = fieldScan{req: true, minor: p.minor, authS: p.ts.authS, authE: p.ts.authE}
			return 0
		}
		if c == '\n' {
			return kBareLF
		}
		switch p.phase {
		case phMethod:
			switch {
			case isTchar[c]:
				p.plen++
			case c == ' ' && p.plen > 0:
				if string(buf[p.start:i]) == "CONNECT" {
					return kConnect
				}
				p.mEnd, p.phase, p.plen = int32(i), phTarget, 0
			case c == '\r' && p.plen == 0:
				p.cr = true
			case c == '\r':
				return kBadRequestLine
			default:
				return kBadMethod
			}
		case phTarget:
			switch {
			case c == ' ':
				if p.plen == 0 {
					return kBadTarget
				}
				if k := p.ts.end(i); k != 0 {
					return k
				}
				p.tEnd, p.phase, p.plen = int32(i), phVersion, 0
			case c == '\r':
				return kBadRequestLine
			case c < ' ' || c >= 0x7f:
				return kBadTarget
			case p.ts.st == tsPath:
				// Past the form-deciding prefix only the byte class matters:
				// step over the run of visible ASCII at once.
				j := i + 1
				for j < limit && buf[j] > ' ' && buf[j] < 0x7f {
					j++
				}
				if p.plen += int32(j - i); int(p.plen) > maxTarget {
					return kTargetTooLong
				}
				i = j - 1
			default:
				p.plen++
				if int(p.plen) > maxTarget {
					return kTargetTooLong
				}
				if k := p.ts.step(c, i); k != 0 {
					return k
				}
			}
		default:
			if c == '\r' {
				if p.plen != int32(len("HTTP/1.1")) {
					return kBadVersion
				}
				// Checked last so that the HTTP/2 preface ("PRI * HTTP/2.0")
				// is told it speaks the wrong version.
				if p.ts.st == tsStar && string(buf[p.start:p.mEnd]) != "OPTIONS" {
					return kAsterisk
				}
				p.cr = true
				continue
			}
			if !versionByteOK(int(p.plen), c) {
				return kBadVersion
			}
			if p.plen == 7 {
				if buf[i-2] != '1' || (c != '0' && c != '1') {
					return kVersion
				}
				p.minor = c - '0'
			}
			p.plen++
		}
	}
	p.scan = int32(limit)
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

// scanStatusLine follows status-line = HTTP-version SP 3DIGIT [ SP
// reason-phrase ] CRLF from p.scan to limit, accepting exactly what
// parseStatusLine accepts.
func (p *Parser) scanStatusLine(buf []byte, limit int) errKind {
	i := int(p.scan)
	// The common case has the whole fixed part at hand and valid: take it in
	// one step. Anything else goes byte by byte, which finds the same first
	// offending byte as ever.
	if p.plen == 0 && limit-i >= 12 {
		if minor, code, ok := statusPrefix(buf[i : i+12]); ok {
			p.minor, p.code, p.plen = minor, code, 12
			i += 12
		}
	}
	for ; i < limit; i++ {
		c := buf[i]
		if p.cr {
			if c != '\n' {
				return kBareCR
			}
			p.cr = false
			p.scan, p.hdrStart, p.line = int32(i+1), int32(i+1), int32(i+1)
			p.f = fieldScan{minor: p.minor}
			return 0
		}
		pos := int(p.plen)
		p.plen++
		switch {
		case c == '\n':
			return kBareLF
		case pos < 8:
			if !versionByteOK(pos, c) {
				return kBadStatusLine
			}
			if pos == 7 {
				if buf[i-2] != '1' || (c != '0' && c != '1') {
					return kVersion
				}
				p.minor = c - '0'
			}
		case pos == 8:
			if c != ' ' {
				return kBadStatusLine
			}
		case pos < 12:
			if c < '0' || c > '9' {
				return kBadStatusLine
			}
			p.code = p.code*10 + int16(c-'0')
			if pos == 11 && (p.code < 100 || p.code > 599) {
				return kBadStatus
			}
		case c == '\r':
			p.cr = true
		case pos == 12:
			if c != ' ' {
				return kBadStatusLine
			}
		case !isValueByte[c]:
			return kBadStatusLine
		default:
			// Reason phrase: step over the run of value bytes at once.
			j := skipValueBytes(buf[:limit], i+1)
			p.plen += int32(j - i - 1)
			i = j - 1
		}
	}
	p.scan = int32(limit)
	return 0
}

// statusPrefix accepts exactly the 12-byte prefixes "HTTP/1.x ddd" in which
// scanStatusLine would find no fault.
func statusPrefix(b []byte) (minor uint8, code int16, ok bool) {
	if string(b[:7]) != "HTTP/1." || (b[7] != '0' && b[7] != '1') || b[8] != ' ' {
		return 0, 0, false
	}
	d0, d1, d2 := b[9]-'0', b[10]-'0', b[11]-'0'
	if d0 > 9 || d1 > 9 || d2 > 9 {
		return 0, 0, false
	}
	code = int16(d0)*100 + int16(d1)*10 + int16(d2)
	if code < 100 || code > 599 {
		return 0, 0, false
	}
	return b[7] - '0', code, true
}

// scanFields follows the field lines from p.scan to limit and applies each
// complete one. It returns the head length once the blank line has ended.
// The states follow each other in line order, so a line that is all there
// goes through them in one pass of the loop. The progress is kept in locals
// and stored back when the bytes run out (after an error or a complete head
// the caller resets the parser anyway).
func (p *Parser) scanFields(buf []byte, limit, maxHeaders int, t *[MaxHeadersCap]Header) (int, errKind) {
	b := buf[:limit]
	i, fl, nameBits := int(p.scan), p.fl, p.nameBits
	for i < limit {
		if fl == flStart {
			switch c := b[i]; {
			case isTchar[c]:
				if int(p.hdrs) >= maxHeaders {
					return 0, kTooManyHeaders
				}
				fl, nameBits = flName, bitTchar|bitPlain
			case c == '\r':
				fl = flEndLF
				i++
			case c == ' ' || c == '\t':
				return 0, kObsFold
			case c == '\n':
				return 0, kBareLF
			default:
				return 0, kBadFieldName
			}
		}
		if fl == flName {
			var bits uint8
			i, bits = skipName(b, i)
			nameBits &= bits
			if i == limit {
				break
			}
			switch b[i] {
			case ':':
				p.colon, fl = int32(i), flValue
				i++
			case ' ', '\t':
				return 0, kSpaceBeforeColon
			case '\n':
				return 0, kBareLF
			default:
				return 0, kBadFieldName
			}
		}
		if fl == flValue {
			if i = skipValueBytes(b, i); i == limit {
				break
			}
			switch b[i] {
			case '\r':
				fl = flLF
				i++
			case '\n':
				return 0, kBareLF
			default:
				return 0, kBadFieldValue
			}
		}
		if i == limit {
			break
		}
		if fl == flEndLF {
			if b[i] != '\n' {
				return 0, kBareCR
			}
			return i + 1, 0
		}
		// flLF
		if b[i] != '\n' {
			return 0, kBareCR
		}
		if k := p.fieldLine(b, i-1, nameBits, t); k != 0 {
			return 0, k
		}
		p.hdrs++
		i++
		p.line, fl = int32(i), flStart
	}
	p.scan, p.fl, p.nameBits = int32(i), fl, nameBits
	return 0, 0
}

// fieldLine applies the complete field line from p.line to the CR at cr and
// stores it as entry p.hdrs of t (scanFields has checked that p.hdrs is
// below maxHeaders, itself at most the table size).
func (p *Parser) fieldLine(b []byte, cr int, nameBits uint8, t *[MaxHeadersCap]Header) errKind {
	vs, ve := trimValue(b, int(p.colon)+1, cr)
	if nameBits&bitPlain == 0 {
		p.f.odd++
	}
	h := &t[p.hdrs]
	h.Name, h.Value = b[p.line:p.colon:p.colon], b[vs:ve:ve]
	return p.f.field(b, h.Name, h.Value, vs)
}

// trimValue returns the bounds of b[vs:ve] without leading and trailing
// SP and HTAB.
func trimValue(b []byte, vs, ve int) (int, int) {
	for vs < ve && (b[vs] == ' ' || b[vs] == '\t') {
		vs++
	}
	for ve > vs && (b[ve-1] == ' ' || b[ve-1] == '\t') {
		ve--
	}
	return vs, ve
}
