package tlsterm

import (
	"net"
	"sync"
	"time"
)

// maxRecordWire is the largest record crypto/tls accepts from a peer
// (TLS 1.2 allows 2^14+2048 of ciphertext) plus its header.
const maxRecordWire = 5 + 1<<14 + 2048

// pipe is the net.Conn crypto/tls runs over. The loop appends ciphertext
// from the socket (feed) and collects what crypto/tls wrote (take); crypto/tls
// reads and writes it from its own goroutine during the handshake, and from
// the loop's goroutine afterwards (TLS 1.2).
//
// During the handshake a Read hands crypto/tls at most one record, and only
// when crypto/tls asks for more bytes, so it can never read ahead of the
// record it is processing: when Handshake returns after the client's
// Finished, every byte after that record is still here (nothing under the
// client's application key was consumed).
//
// In non-blocking mode (a TLS 1.2 session after its handshake) Read returns
// every pending byte, or errWouldBlock when there is none; crypto/tls keeps a
// partial record and tries again on the next Read (a Temporary net.Error does
// not poison its input side).
type pipe struct {
	mu       sync.Mutex
	cond     sync.Cond
	pend     []byte // ciphertext from the socket not yet handed to crypto/tls
	poff     int
	cur      []byte // the unread part of what was handed over
	records  int    // records handed over during the handshake
	consumed int64  // bytes crypto/tls read
	nonblock bool
	closed   bool
	out      []byte // written by crypto/tls, not yet taken by the loop
	acct     *outAcct
	wake     func()
}

func newPipe(wake func()) *pipe {
	p := &pipe{wake: wake}
	p.cond.L = &p.mu
	return p
}

// recordLen frames the next record in b: its total length if complete, 0 if
// not. An impossible length frames the header alone, which crypto/tls then
// rejects with the right alert.
func recordLen(b []byte) int {
	if len(b) < 5 {
		return 0
	}
	n := 5 + (int(b[3])<<8 | int(b[4]))
	if n > maxRecordWire {
		return 5
	}
	if len(b) < n {
		return 0
	}
	return n
}

func (p *pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.cur) == 0 {
		if p.closed {
			return 0, net.ErrClosed
		}
		rest := p.pend[p.poff:]
		if p.nonblock {
			if len(rest) == 0 {
				p.pend, p.poff = p.pend[:0], 0
				return 0, errWouldBlock
			}
			p.cur, p.poff = rest, len(p.pend)
			break
		}
		if n := recordLen(rest); n > 0 {
			p.cur = rest[:n]
			p.poff += n
			p.records++
			break
		}
		p.cond.Wait()
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	p.consumed += int64(n)
	return n, nil
}

// feed appends bytes from the socket. It reports false when that would hold
// more than limit bytes.
func (p *pipe) feed(b []byte, limit int) bool {
	if len(b) == 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cur) == 0 && p.poff > 0 {
		// Nothing handed over is unread: drop the consumed prefix.
		n := copy(p.pend, p.pend[p.poff:])
		p.pend, p.poff = p.pend[:n], 0
	}
	if len(p.pend)-p.poff+len(b) > limit {
		return false
	}
	p.pend = append(p.pend, b...)
	p.cond.Signal()
	return true
}

// take returns what crypto/tls wrote since the last take (ownership passes
// to the caller).
func (p *pipe) take() []byte {
	p.mu.Lock()
	out := p.out
	p.out = nil
	p.mu.Unlock()
	return out
}

func (p *pipe) Write(b []byte) (int, error) {
	if p.acct != nil {
		p.acct.scan(b) // handshake goroutine only
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, net.ErrClosed
	}
	p.out = append(p.out, b...)
	wake := p.wake
	p.mu.Unlock()
	if wake != nil {
		wake()
	}
	return len(b), nil
}

func (p *pipe) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	return nil
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "tlsterm" }
func (pipeAddr) String() string  { return "tlsterm" }

func (p *pipe) LocalAddr() net.Addr              { return pipeAddr{} }
func (p *pipe) RemoteAddr() net.Addr             { return pipeAddr{} }
func (p *pipe) SetDeadline(time.Time) error      { return nil }
func (p *pipe) SetReadDeadline(time.Time) error  { return nil }
func (p *pipe) SetWriteDeadline(time.Time) error { return nil }

// errWouldBlock is the non-blocking pipe's "no input": a Temporary net.Error,
// which crypto/tls's record reader returns without poisoning the connection.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsterm: no input (would block)" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }
