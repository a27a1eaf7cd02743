package httpparse

// Bounds on the parts of a chunked body the decoder walks byte by byte. The
// decoder stores nothing, but an endless extension or trailer would keep a
// connection busy forever without ever producing a chunk boundary.
const (
	maxChunkLine    = 4 << 10  // size digits, extensions and CRLF of one chunk
	maxTrailerBytes = 16 << 10 // whole trailer section, final CRLF included
	maxChunkSize    = 1 << 62  // sizes at or above this are refused as overflow
)

const (
	stSizeStart    uint8 = iota // first hex digit of a chunk size
	stSize                      // more hex digits, or what follows them
	stExtBWS                    // whitespace before ";"
	stExtName0                  // after ";": whitespace, then the extension name
	stExtName                   // inside the name
	stExtNameBWS                // whitespace after the name, before "=" or ";"
	stExtVal0                   // after "=": whitespace, then token or quoted-string
	stExtVal                    // inside a token value
	stExtQuoted                 // inside a quoted-string value
	stExtQuotedEsc              // after a backslash in a quoted-string
	stExtValEnd                 // after the closing quote
	stSizeLF                    // CR of the size line seen
	stData                      // inside chunk data (left bytes to go)
	stDataCR                    // CR after chunk data
	stDataLF                    // LF after chunk data
	stTrailerStart              // start of a trailer line or the final CRLF
	stTrailerName               // inside a trailer field name
	stTrailerValue              // inside a trailer field value
	stTrailerLF                 // CR of a trailer line seen
	stFinalLF                   // CR of the final empty line seen
	stDone                      // message complete
)

// ChunkedDecoder follows the chunked transfer coding (RFC 9112 section 7.1)
// of one message body as it streams past. It never copies or stores data:
// it only says where the message ends. The zero value is ready to use.
type ChunkedDecoder struct {
	state uint8
	left  int64 // stData: data bytes still to come; size states: the size so far
	line  int   // bytes of the current size line, or of the whole trailer section
	err   error // sticky
}

// Reset prepares the decoder for the next message body.
func (d *ChunkedDecoder) Reset() { *d = ChunkedDecoder{} }

// Done reports whether the last chunk and the trailer section have ended.
func (d *ChunkedDecoder) Done() bool { return d.state == stDone }

// DataLeft returns how many bytes of the current chunk's data are still to
// come: 0 while in a size line, a CRLF or the trailers. A caller may move
// that many bytes in bulk without inspecting them and then call Skip.
func (d *ChunkedDecoder) DataLeft() int64 {
	if d.state == stData && d.err == nil {
		return d.left
	}
	return 0
}

// Skip records that n (<= DataLeft()) data bytes went by without Feed. A
// larger n is a caller bug; it makes the decoder fail every later Feed.
func (d *ChunkedDecoder) Skip(n int64) {
	if n == 0 || d.err != nil {
		return
	}
	if n < 0 || d.state != stData || n > d.left {
		d.err = errChunkSkip
		return
	}
	d.left -= n
	if d.left == 0 {
		d.state = stDataCR
	}
}

// Feed scans p (the next body bytes). n = bytes of p that belong to the
// message; done = the last chunk and trailers ended at p[n-1]; bytes after n
// belong to the next message. On error n is the number of bytes accepted
// before the offending one, and the error (*Error, Status 400) is sticky.
// Chunk data is stepped over in one move, so the cost is O(len(p)) at worst
// and O(framing bytes) in practice; nothing is allocated.
func (d *ChunkedDecoder) Feed(p []byte) (n int, done bool, err error) {
	if d.err != nil {
		return 0, false, d.err
	}
	if d.state == stDone {
		return 0, true, nil
	}
	i := 0
	for i < len(p) {
		if d.state == stData {
			k := int64(len(p) - i)
			if k >= d.left {
				k = d.left
				d.state = stDataCR
			}
			d.left -= k
			i += int(k)
			continue
		}
		c := p[i]
		var e *Error
		e, done = d.step(c)
		if e != nil {
			d.err = e
			return i, false, e
		}
		i++
		if done {
			d.state = stDone
			return i, true, nil
		}
	}
	return i, false, nil
}

// step advances the state machine over one framing byte.
func (d *ChunkedDecoder) step(c byte) (*Error, bool) {
	d.line++
	if d.state >= stTrailerStart {
		if d.line > maxTrailerBytes {
			return errTrailerTooLong, false
		}
	} else if d.line > maxChunkLine {
		return errChunkLine, false
	}
	switch d.state {
	case stSizeStart:
		v, ok := unhex(c)
		if !ok {
			return errChunkSize, false
		}
		d.left, d.state = int64(v), stSize
	case stSize:
		if v, ok := unhex(c); ok {
			if d.left >= maxChunkSize>>4 {
				return errChunkOverflow, false
			}
			d.left = d.left<<4 | int64(v)
			return nil, false
		}
		switch c {
		case ';':
			d.state = stExtName0
		case ' ', '\t':
			d.state = stExtBWS
		case '\r':
			d.state = stSizeLF
		default:
			return errChunkSize, false
		}
	case stExtBWS:
		switch c {
		case ' ', '\t':
		case ';':
			d.state = stExtName0
		default:
			return errChunkExt, false
		}
	case stExtName0:
		switch {
		case c == ' ' || c == '\t':
		case isTchar[c]:
			d.state = stExtName
		default:
			return errChunkExt, false
		}
	case stExtName:
		switch {
		case isTchar[c]:
		case c == ' ' || c == '\t':
			d.state = stExtNameBWS
		case c == '=':
			d.state = stExtVal0
		case c == ';':
			d.state = stExtName0
		case c == '\r':
			d.state = stSizeLF
		default:
			return errChunkExt, false
		}
	case stExtNameBWS:
		switch c {
		case ' ', '\t':
		case '=':
			d.state = stExtVal0
		case ';':
			d.state = stExtName0
		default:
			return errChunkExt, false
		}
	case stExtVal0:
		switch {
		case c == ' ' || c == '\t':
		case c == '"':
			d.state = stExtQuoted
		case isTchar[c]:
			d.state = stExtVal
		default:
			return errChunkExt, false
		}
	case stExtVal:
		switch {
		case isTchar[c]:
		case c == ' ' || c == '\t':
			d.state = stExtBWS
		case c == ';':
			d.state = stExtName0
		case c == '\r':
			d.state = stSizeLF
		default:
			return errChunkExt, false
		}
	case stExtQuoted:
		switch {
		case c == '"':
			d.state = stExtValEnd
		case c == '\\':
			d.state = stExtQuotedEsc
		case isQdtext[c]:
		default:
			return errChunkExt, false
		}
	case stExtQuotedEsc:
		// quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
		if c != '\t' && (c < ' ' || c == 0x7f) {
			return errChunkExt, false
		}
		d.state = stExtQuoted
	case stExtValEnd:
		switch c {
		case ' ', '\t':
			d.state = stExtBWS
		case ';':
			d.state = stExtName0
		case '\r':
			d.state = stSizeLF
		default:
			return errChunkExt, false
		}
	case stSizeLF:
		if c != '\n' {
			return errChunkBareLF, false
		}
		if d.left == 0 {
			d.state, d.line = stTrailerStart, 0
		} else {
			d.state = stData
		}
	case stDataCR:
		if c != '\r' {
			return errChunkCRLF, false
		}
		d.state = stDataLF
	case stDataLF:
		if c != '\n' {
			return errChunkCRLF, false
		}
		d.state, d.line = stSizeStart, 0
	case stTrailerStart:
		switch {
		case c == '\r':
			d.state = stFinalLF
		case isTchar[c]:
			d.state = stTrailerName
		default:
			return errTrailer, false
		}
	case stTrailerName:
		switch {
		case isTchar[c]:
		case c == ':':
			d.state = stTrailerValue
		default:
			return errTrailer, false
		}
	case stTrailerValue:
		switch {
		case isValueByte[c]:
		case c == '\r':
			d.state = stTrailerLF
		default:
			return errTrailer, false
		}
	case stTrailerLF:
		if c != '\n' {
			return errChunkBareLF, false
		}
		d.state = stTrailerStart
	case stFinalLF:
		if c != '\n' {
			return errChunkBareLF, false
		}
		return nil, true
	}
	return nil, false
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
