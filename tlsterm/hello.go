package tlsterm

import (
	"errors"
	"fmt"
)

// MaxHello is the largest ClientHello handshake message accepted (its 4-byte
// header included), whatever the number of records it is split into.
const MaxHello = 16 << 10

// Errors of the ClientHello phase: the loop closes the connection (with an
// alert for ErrHelloTooLarge and ErrBadHello, without for the others, which
// are not TLS at all).
var (
	// ErrPlainHTTP: the first bytes are an HTTP request line: a client
	// speaking plain HTTP to the TLS port.
	ErrPlainHTTP = errors.New("plain HTTP request on the TLS port")
	// ErrNotTLS: the first byte is not a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrHelloTooLarge: the ClientHello is over MaxHello.
	ErrHelloTooLarge = fmt.Errorf("ClientHello larger than %d bytes", MaxHello)
)

// helloError is a malformed ClientHello.
type helloError string

func (e helloError) Error() string { return "malformed ClientHello: " + string(e) }

// ErrBadHello matches every malformed-ClientHello error with errors.Is.
var ErrBadHello error = helloError("")

func (e helloError) Is(target error) bool { _, ok := target.(helloError); return ok }

// Hello is what the driver reads from a ClientHello before any goroutine
// exists: enough to log, count and pick a certificate.
type Hello struct {
	Random     [32]byte // keys the secrets crypto/tls exports for this connection
	ServerName string   // SNI host_name, "" if none
	// Versions is the supported_versions extension ("" if absent), e.g.
	// "0304,0303"; ALPN the offered protocols, comma separated.
	Versions string
	ALPN     string
}

// scanHello looks for a complete ClientHello at the start of b (raw bytes
// from the socket). It returns done=false while more bytes are needed, and
// the number of bytes of b the records carrying the ClientHello occupy.
// scratch is used to reassemble a ClientHello split across records.
func scanHello(b []byte, scratch *[]byte) (h Hello, n int, done bool, err error) {
	if len(b) == 0 {
		return h, 0, false, nil
	}
	if b[0] != 22 {
		if looksLikeHTTP(b) {
			return h, 0, false, ErrPlainHTTP
		}
		return h, 0, false, ErrNotTLS
	}
	// Pass 1 walks the record headers only (cheap however often a dribbling
	// client makes us look); pass 2 reassembles once everything is in.
	var head [4]byte
	have, msgLen, off, records := 0, -1, 0, 0
	for {
		if len(b)-off < 5 {
			return h, 0, false, nil
		}
		hdr := b[off : off+5]
		if hdr[0] != 22 {
			return h, 0, false, helloError(fmt.Sprintf("record type %d inside the ClientHello", hdr[0]))
		}
		if hdr[1] != 3 {
			return h, 0, false, helloError(fmt.Sprintf("record version %d.%d", hdr[1], hdr[2]))
		}
		rlen := int(hdr[3])<<8 | int(hdr[4])
		if rlen == 0 || rlen > 1<<14 {
			return h, 0, false, helloError(fmt.Sprintf("record length %d", rlen))
		}
		if len(b)-off-5 < rlen {
			// Incomplete record: still refuse early when the message header
			// we can already see announces too much.
			if msgLen < 0 {
				frag := b[off+5:]
				for i := 0; have+i < 4 && i < len(frag); i++ {
					head[have+i] = frag[i]
				}
				if have+len(frag) >= 4 {
					if head[0] != 1 {
						return h, 0, false, helloError(fmt.Sprintf("first handshake message is type %d", head[0]))
					}
					if 4+(int(head[1])<<16|int(head[2])<<8|int(head[3])) > MaxHello {
						return h, 0, false, ErrHelloTooLarge
					}
				}
			}
			return h, 0, false, nil
		}
		frag := b[off+5 : off+5+rlen]
		for i := 0; have+i < 4 && i < len(frag); i++ {
			head[have+i] = frag[i]
		}
		have += rlen
		off += 5 + rlen
		records++
		if msgLen < 0 && have >= 4 {
			if head[0] != 1 {
				return h, 0, false, helloError(fmt.Sprintf("first handshake message is type %d", head[0]))
			}
			msgLen = 4 + (int(head[1])<<16 | int(head[2])<<8 | int(head[3]))
			if msgLen > MaxHello {
				return h, 0, false, ErrHelloTooLarge
			}
		}
		if msgLen >= 0 && have >= msgLen {
			if have > msgLen {
				// A second handshake message behind the ClientHello in its
				// records: a client may not send one before the ServerHello.
				return h, 0, false, helloError("data after the ClientHello in its record")
			}
			break
		}
		if records > MaxHello/64 {
			return h, 0, false, helloError("ClientHello in too many tiny records")
		}
	}
	msg := b[5:off]
	if records > 1 {
		*scratch = (*scratch)[:0]
		for p := 0; p < off; {
			rlen := int(b[p+3])<<8 | int(b[p+4])
			*scratch = append(*scratch, b[p+5:p+5+rlen]...)
			p += 5 + rlen
		}
		msg = *scratch
	}
	h, err = parseHello(msg[4:msgLen])
	return h, off, err == nil, err
}

// looksLikeHTTP: an uppercase method token then a space (GET, POST, PRI, ...).
func looksLikeHTTP(b []byte) bool {
	i := 0
	for i < len(b) && i < 16 && b[i] >= 'A' && b[i] <= 'Z' {
		i++
	}
	if i == len(b) {
		return i > 0 // all letters so far: do not wait for more, it is not TLS either
	}
	return i > 0 && b[i] == ' '
}

// reader is a bounds-checked cursor over a ClientHello body.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int(v[0])<<8 | int(v[1])
}

func (r *reader) vec8() []byte  { return r.take(r.u8()) }
func (r *reader) vec16() []byte { return r.take(r.u16()) }

// parseHello reads the fields a proxy needs from a ClientHello body
// (RFC 8446 section 4.1.2). crypto/tls parses it again, strictly.
func parseHello(body []byte) (Hello, error) {
	var h Hello
	r := reader{b: body}
	r.take(2) // legacy_version
	copy(h.Random[:], r.take(32))
	r.vec8()  // legacy_session_id
	r.vec16() // cipher_suites
	r.vec8()  // legacy_compression_methods
	if r.bad {
		return h, helloError("truncated before the extensions")
	}
	if len(r.b) == 0 {
		return h, nil // no extensions (TLS 1.2 and older clients)
	}
	exts := reader{b: r.vec16()}
	if r.bad || len(r.b) != 0 {
		return h, helloError("bad extensions length")
	}
	for len(exts.b) > 0 && !exts.bad {
		typ := exts.u16()
		data := reader{b: exts.vec16()}
		switch typ {
		case 0: // server_name
			list := reader{b: data.vec16()}
			for len(list.b) > 0 && !list.bad {
				kind := list.u8()
				name := list.vec16()
				if kind == 0 && h.ServerName == "" && !list.bad {
					h.ServerName = string(name)
				}
			}
			if list.bad || data.bad {
				return h, helloError("bad server_name extension")
			}
		case 43: // supported_versions
			list := reader{b: data.vec8()}
			var s []byte
			for len(list.b) >= 2 {
				if len(s) > 0 {
					s = append(s, ',')
				}
				s = fmt.Appendf(s, "%04x", list.u16())
			}
			h.Versions = string(s)
		case 16: // application_layer_protocol_negotiation
			list := reader{b: data.vec16()}
			var s []byte
			for len(list.b) > 0 && !list.bad {
				p := list.vec8()
				if len(s) > 0 {
					s = append(s, ',')
				}
				s = append(s, p...)
			}
			h.ALPN = string(s)
		}
	}
	if exts.bad {
		return h, helloError("truncated extension")
	}
	return h, nil
}
