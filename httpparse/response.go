package httpparse

import "bytes"

// Response is a parsed response head; slices point into the parsed buffer.
type Response struct {
	Minor         int
	Status        int
	Reason        []byte
	Headers       []Header
	Framing       Framing // 1xx, 204, 304 and responses to HEAD: FramingNone
	ContentLength int64   // body length when Framing == FramingLength, else 0
	// DeclaredLength is the Content-Length value as sent (one value however
	// often it was repeated), or -1 without one. It is kept when the
	// response has no body: the Content-Length of an answer to HEAD or of a
	// 304 describes the representation (RFC 9110 section 8.6) and a proxy
	// relays it unchanged.
	DeclaredLength int64
	KeepAlive      bool // false whenever Framing is FramingUntilClose

	table [MaxHeadersCap]Header
}

// Header returns the first value of the named field, or nil if absent.
func (r *Response) Header(name string) []byte { return headerValue(r.Headers, name) }

// HasToken reports whether token appears in any field line called name.
func (r *Response) HasToken(name, token string) bool {
	return headersHaveToken(r.Headers, name, token)
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
	end, from, k := p.scanHead(buf, false, &resp.table)
	if k == 0 && end == 0 {
		return 0, ErrNeedMore
	}
	if k == 0 {
		k = p.finishResponse(buf[:end], resp, requestMethodHEAD, from)
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
	f := fieldScan{minor: uint8(minor)}
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

// finishResponse is finishRequest for a response head.
func (p *Parser) finishResponse(buf []byte, resp *Response, head bool, from int) errKind {
	// scanStatusLine has checked the line and kept the version and the code;
	// the reason phrase is what follows "HTTP/1.1 200 ".
	line := buf[p.start : p.hdrStart-2]
	status, minor, reason := int(p.code), int(p.minor), line[min(len(line), 13):len(line):len(line)]
	n := p.hdrs
	splitFields(buf, int(p.hdrStart), &resp.table, from)
	resp.Headers = resp.table[:n:n]
	resp.Reason = reason
	return setResponse(resp, &p.f, status, minor, head)
}

// setResponse derives framing and persistence (RFC 9112 section 6.3) from
// the gathered fields; every field line has been applied already.
func setResponse(resp *Response, f *fieldScan, status, minor int, head bool) errKind {
	resp.Minor = minor
	resp.Status = status
	resp.ContentLength = 0
	resp.DeclaredLength = -1
	if f.clSeen {
		resp.DeclaredLength = f.cl
	}
	switch {
	case f.teSeen && f.teLast:
		resp.Framing = FramingChunked
	case f.teSeen:
		// Rule 4: chunked not last means the body runs until close.
		resp.Framing = FramingUntilClose
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
