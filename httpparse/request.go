package httpparse

// Request is a parsed request head. Every slice points into the buffer given
// to ParseRequest and is valid until that buffer changes.
type Request struct {
	Method, Target []byte
	// Authority is the authority of an absolute-form target
	// ("http://example.com:8080/x" -> "example.com:8080"), validated like a
	// Host value and never empty; nil for origin- and asterisk-form. When
	// Host is present too, the two are equal up to ASCII case.
	Authority []byte
	// Path is the target as an origin server wants it: Target itself for
	// origin- and asterisk-form, what follows the authority for absolute-form.
	// That part may be empty ("http://h") or start with "?" ("http://h?q"):
	// a proxy sends "/" in front of it then.
	Path          []byte
	Minor         int      // HTTP/1.<Minor>, 0 or 1
	Headers       []Header // = table[:n]; valid until buf changes
	Host          []byte   // the single Host value (nil if absent, allowed for HTTP/1.0 only)
	Framing       Framing
	ContentLength int64 // when Framing == FramingLength: the single value, however often it was sent
	KeepAlive     bool  // persistent per version + Connection: close/keep-alive
	Expect100     bool  // Expect: 100-continue present
	// OddNames counts field lines whose name holds a byte other than ASCII
	// letters, digits and "-" ("X_Forwarded_For", "X.Y"): legal tokens, but
	// CGI-style backends fold "_" into "-", so a proxy drops or refuses
	// them (see IsPlainName). Zero in the common case, so checking costs
	// nothing then.
	OddNames int

	table [MaxHeadersCap]Header
}

// MethodIs reports whether the method is exactly m. Methods are
// case-sensitive (RFC 9110 section 9.1): "head" is not HEAD, and a proxy
// that treats it as HEAD frames the response differently from the backend.
func (r *Request) MethodIs(m string) bool { return string(r.Method) == m }

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
	end, from, k := p.scanHead(buf, true, &req.table)
	if k == 0 && end == 0 {
		return 0, ErrNeedMore
	}
	if k == 0 {
		k = p.finishRequest(buf[:end], req, from)
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
	if i == 0 || i >= len(b) || b[i] != ' ' || string(b[:i]) == "CONNECT" {
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
	var t targetScan
	if t.feed(b, ts, tEnd) != 0 || t.end(tEnd) != 0 || (t.st == tsStar && string(b[:mEnd]) != "OPTIONS") {
		return 0
	}
	minor := int(v[7] - '0')
	f := fieldScan{req: true, minor: uint8(minor), authS: t.authS, authE: t.authE}
	end, n := fastFields(b, i+11, &req.table, maxHeaders, &f)
	if end == 0 {
		return 0
	}
	if setRequest(req, &f, b, minor, &t, tEnd) != 0 {
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
		// skipName, written out: a call per field line costs more than the scan.
		j, bits := i, uint8(bitTchar|bitPlain)
		for j+4 <= len(b) {
			a := tcharBit[b[j]] & tcharBit[b[j+1]] & tcharBit[b[j+2]] & tcharBit[b[j+3]]
			if a&bitTchar == 0 {
				break
			}
			bits &= a
			j += 4
		}
		for j < len(b) && tcharBit[b[j]]&bitTchar != 0 {
			bits &= tcharBit[b[j]]
			j++
		}
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
		if bits&bitPlain == 0 {
			f.odd++
		}
		h := &t[n]
		h.Name, h.Value = name, b[vs:ve:ve]
		if f.field(b, name, h.Value, vs) != 0 {
			return 0, 0
		}
		n++
		i = j + 2
	}
	return 0, 0
}

// finishRequest fills req from a head scanHead has accepted; the first from
// field lines were completed by earlier calls and are split again.
func (p *Parser) finishRequest(buf []byte, req *Request, from int) errKind {
	n := p.hdrs
	splitFields(buf, int(p.hdrStart), &req.table, from)
	req.Headers = req.table[:n:n]
	req.Method = buf[p.start:p.mEnd:p.mEnd]
	req.Target = buf[p.mEnd+1 : p.tEnd : p.tEnd]
	return setRequest(req, &p.f, buf, int(p.minor), &p.ts, int(p.tEnd))
}

// setRequest derives Host, Authority, Path, persistence and framing (RFC
// 9112 sections 3.2, 6.1, 6.3, 9.3) from the gathered fields. Every field
// line has been applied already; what is left can only be decided at the
// end of the head.
func setRequest(req *Request, f *fieldScan, buf []byte, minor int, t *targetScan, tEnd int) errKind {
	req.Minor = minor
	req.Host = nil
	if f.hosts == 1 {
		req.Host = buf[f.hostS:f.hostE:f.hostE]
	}
	req.Authority = nil
	if t.authE != 0 {
		req.Authority = buf[t.authS:t.authE:t.authE]
	}
	req.Path = buf[t.path:tEnd:tEnd]
	req.Expect100 = f.expect100
	req.OddNames = int(f.odd)
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
		req.Framing = FramingChunked
	case f.clSeen:
		req.Framing = FramingLength
		req.ContentLength = f.cl
	default:
		req.Framing = FramingNone
	}
	return 0
}
