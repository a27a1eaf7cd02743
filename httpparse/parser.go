package httpparse

import "bytes"

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
