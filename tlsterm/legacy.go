package tlsterm

import (
	"crypto/tls"
	"errors"
	"io"
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
