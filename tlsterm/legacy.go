package tlsterm

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/wsgate/wsgate/tlsrecord"
)

// Legacy is an established TLS 1.2 connection. It stays on its crypto/tls.Conn
// (we do not reimplement TLS 1.2 record protection), which now runs on the
// loop's goroutine over the same in-memory pipe in non-blocking mode: Feed
// queues ciphertext, Read decrypts what complete records there are and says
// ErrWouldBlock otherwise (crypto/tls keeps a partial record across that
// Temporary error), Write seals into the pipe and Output drains it.
//
// Cost: the crypto/tls.Conn and its buffers stay with the connection (about
// 7.5 KB idle, more after large records: see docs/tls.md).
type Legacy struct {
	conn *tls.Conn
	p    *pipe
}

// ErrWouldBlock is Legacy.Read's "no complete record yet".
var ErrWouldBlock = errors.New("tlsterm: no complete record yet")

// Feed queues ciphertext read from the socket (copied).
func (l *Legacy) Feed(in []byte) {
	l.p.mu.Lock()
	if len(l.p.cur) == 0 && l.p.poff > 0 {
		n := copy(l.p.pend, l.p.pend[l.p.poff:])
		l.p.pend, l.p.poff = l.p.pend[:n], 0
	}
	l.p.pend = append(l.p.pend, in...)
	l.p.mu.Unlock()
}

// Read decrypts into b. It returns ErrWouldBlock when no complete record is
// queued, io.EOF after the client's close_notify, and any other error as
// fatal (crypto/tls has then queued its alert: write Output before closing).
func (l *Legacy) Read(b []byte) (int, error) {
	n, err := l.conn.Read(b)
	if n > 0 {
		return n, nil
	}
	if err == errWouldBlock {
		return 0, ErrWouldBlock
	}
	if err == nil {
		return 0, ErrWouldBlock
	}
	if errors.Is(err, io.EOF) {
		return 0, io.EOF
	}
	return 0, err
}

// Write seals p (never blocks: the records go to the pipe; take them with
// Output).
func (l *Legacy) Write(p []byte) (int, error) { return l.conn.Write(p) }

// CloseWrite seals close_notify.
func (l *Legacy) CloseWrite() error { return l.conn.CloseWrite() }

// Output appends the records crypto/tls wrote since the last call to dst.
func (l *Legacy) Output(dst []byte) []byte {
	l.p.mu.Lock()
	dst = append(dst, l.p.out...)
	l.p.out = nil // an idle connection keeps no output buffer
	l.p.mu.Unlock()
	return dst
}

// Buffered reports queued ciphertext not yet decrypted.
func (l *Legacy) Buffered() int {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return len(l.p.pend) - l.p.poff + len(l.p.cur)
}

// Close drops the connection's state (it does not send anything).
func (l *Legacy) Close() { l.p.Close() }

// Layer adapts l to tlsrecord.RecordLayer, so the event loop and the tunnel plane drive TLS 1.2
// and TLS 1.3 connections through one interface. Open feeds the ciphertext it is given and
// returns decrypted bytes one Read at a time from a buffer it borrows from a pool while records
// are being read (returned when Read finds no complete record); crypto/tls keeps a partial record
// in its own input buffer. Seal, Flush, AppendCloseNotify and AppendAlert append what crypto/tls
// wrote into the pipe. TLS 1.2 has no KeyUpdate; Shrink does nothing (the tls.Conn keeps its
// buffers: see docs/tls.md).
func (l *Legacy) Layer() tlsrecord.RecordLayer {
	a := &legacyLayer{l: l}
	// Records that arrived behind the client's Finished wait in the pipe: frame them too.
	l.p.mu.Lock()
	a.track(l.p.cur)
	a.track(l.p.pend[l.p.poff:])
	l.p.mu.Unlock()
	return a
}

type legacyLayer struct {
	l      *Legacy
	buf    *[]byte // borrowed while Open returns plaintext
	eof    bool    // close_notify reported
	failed error

	// Record framing of the bytes fed, so Partial is exact although crypto/tls keeps a partial
	// record inside its own input buffer, out of sight: the header seen so far, and the body
	// bytes still to come of the current record.
	hdr  [5]byte
	hlen int
	left int
}

// track walks the record headers of freshly fed ciphertext.
func (a *legacyLayer) track(p []byte) {
	for len(p) > 0 {
		if a.left > 0 {
			k := min(a.left, len(p))
			a.left -= k
			p = p[k:]
			continue
		}
		k := copy(a.hdr[a.hlen:], p)
		a.hlen += k
		p = p[k:]
		if a.hlen == len(a.hdr) {
			a.left = int(a.hdr[3])<<8 | int(a.hdr[4])
			a.hlen = 0
		}
	}
}

const legacyReadSize = 16 << 10

var legacyBufs = sync.Pool{New: func() any { b := make([]byte, legacyReadSize); return &b }}

func (a *legacyLayer) release() {
	if a.buf != nil {
		legacyBufs.Put(a.buf)
		a.buf = nil
	}
}

func (a *legacyLayer) Open(in []byte) (int, []byte, tlsrecord.Event, error) {
	if a.failed != nil {
		a.release()
		return 0, nil, tlsrecord.EventNone, a.failed
	}
	n := len(in)
	if a.eof {
		a.release()
		return n, nil, tlsrecord.EventNone, nil // after close_notify everything is ignored
	}
	if n > 0 {
		a.l.Feed(in)
		a.track(in)
	}
	if a.buf == nil {
		a.buf = legacyBufs.Get().(*[]byte)
	}
	k, err := a.l.Read(*a.buf)
	if k > 0 {
		return n, (*a.buf)[:k], tlsrecord.EventNone, nil
	}
	a.release()
	switch {
	case err == ErrWouldBlock:
		return n, nil, tlsrecord.EventNone, nil
	case errors.Is(err, io.EOF):
		a.eof = true
		return n, nil, tlsrecord.EventCloseNotify, nil
	}
	a.failed = fmt.Errorf("tls 1.2 record: %w", err)
	return n, nil, tlsrecord.EventNone, a.failed
}

func (a *legacyLayer) Seal(dst, p []byte) ([]byte, error) {
	if len(p) > 0 {
		if _, err := a.l.Write(p); err != nil {
			return dst, err
		}
	}
	return a.l.Output(dst), nil
}

func (a *legacyLayer) Flush(dst []byte) ([]byte, error) { return a.l.Output(dst), nil }

func (a *legacyLayer) AppendCloseNotify(dst []byte) ([]byte, error) {
	err := a.l.CloseWrite()
	return a.l.Output(dst), err
}

// AppendAlert appends what crypto/tls queued: after a failed Read that is its own alert (the
// right one for the failure); crypto/tls offers no way to send another.
func (a *legacyLayer) AppendAlert(dst []byte, _ tlsrecord.Alert) ([]byte, error) {
	return a.l.Output(dst), nil
}

func (a *legacyLayer) KeyUpdatePending() bool { return false }
func (a *legacyLayer) Partial() bool          { return a.hlen > 0 || a.left > 0 }
func (a *legacyLayer) Shrink()                {}

func (a *legacyLayer) Close() {
	a.release()
	a.l.Close()
}
