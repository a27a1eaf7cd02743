package loop

import (
	"errors"
	"io"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
)

// Backend connections and the per-loop idle pools, one per member.
//
// Invariant: a backend conn serves at most one exchange at a time (bc.cc), lives on its client's
// loop, belongs to one member for its whole life, and is in its member's pool only with no
// client, nothing queued and nothing unread.

// backendConn is one backend connection; cc is the client it serves (nil when idle).
type backendConn struct {
	srv       *Server
	ls        *loopState
	c         wire
	out       outq
	cc        *clientConn
	member    *route.Member // the backend it is connected to
	gen       uint32
	reused    bool
	inPool    bool
	idleSince int64
	dialAt    int64 // nanotime the dial started, for the connect time

	// cleanAfterOffload: the offloaded response body ended exactly at its framing boundary and
	// the exchange allows reuse, so the conn may be pooled even if its client is gone by the time
	// it is enrolled again.
	cleanAfterOffload bool
}

func (bc *backendConn) inbound() []byte {
	b, _ := bc.c.Peek(-1)
	return b
}

// opened runs when a conn we enrolled is registered: a fresh dial or an offload coming back.
func (bc *backendConn) opened(c wire) {
	if bc.c == nil && bc.out.fd == detachedFD { // coming back from the tunnel plane
		bc.c = c
		bc.out.fd = c.Fd()
		if cc := bc.cc; cc != nil && cc.state == stateOffloaded {
			cc.reattachDone()
			return
		}
		// The client left while the conn was in the plane: nobody will resume the exchange, so
		// the conn goes to the pool if the body ended exactly at its boundary, else it is closed.
		bc.cc = nil
		if bc.cleanAfterOffload {
			bc.ls.putIdle(bc)
		} else {
			bc.close()
		}
		return
	}
	bc.c = c
	bc.out.fd = c.Fd()
	bc.srv.reportDialSuccess(bc.member) // a fresh connect succeeded: passive health
	bc.connected()
	cc := bc.cc
	if cc == nil || cc.gen != bc.gen || !cc.ex.dialing || cc.state == stateClosed {
		bc.cc = nil
		bc.ls.putIdle(bc) // the client left while we dialled: the conn is still good
		return
	}
	cc.attach(bc)
	if cc.state == stateForwardingBody {
		cc.process()
	}
}

// process advances the response side.
func (bc *backendConn) process() {
	cc := bc.cc
	if cc == nil {
		bc.close() // a backend may not talk on an idle connection; we cannot frame what it says
		return
	}
	if cc.state == stateOffloaded {
		return // the client half is still coming back from the tunnel plane
	}
	cc.relayResponse(bc)
}

// closed runs from gnet's OnClose for the live backend conn.
func (bc *backendConn) closed(err error) {
	bc.c = nil
	bc.out.release()
	if bc.inPool {
		bc.ls.removeIdle(bc)
		return
	}
	cc := bc.cc
	if cc == nil {
		return
	}
	ex := &cc.ex
	bc.cc = nil
	ex.bc = nil
	switch {
	case cc.state == stateClosed || cc.state == stateClosing:
	case ex.respPhase == respBody && ex.respFraming == httpparse.FramingUntilClose && errors.Is(err, io.EOF):
		// The backend's EOF is the end of a close-delimited body; any other end (a reset, our own
		// close after a failure) is a truncation and falls through to the reset below.
		ex.backendReuse = false
		ex.closeAfter = true
		ex.respPhase = respDone
		cc.finishExchange()
	case !ex.respStarted && !ex.retried && ex.idempotent && !ex.reqBodySent && ex.fwd != nil && (bc.reused || cc.otherMember() != nil):
		// Closed before any response byte: an idempotent request without a body is resent once,
		// on another member when the pool has one (the member may have died), else on a fresh
		// conn to the same member when this one came from the pool (the backend closed it while
		// idle).
		ex.retried = true
		cc.srv.retries.Add(1)
		cc.countClosedBeforeAnswer(bc)
		cc.retryAfterClose()
	case !ex.respFinal:
		cc.srv.backendWarn.warn(cc.srv.log, nanotime(), "backend closed before the response", "backend", memberName(bc.member), "phase", "response head", "status", 502, "err", err)
		cc.failUpstream(502, accesslog.BackendReset, metrics.UpstreamReset)
	default:
		// Mid-body: a reset is the only way the client can tell the body is truncated.
		cc.countUpstream(metrics.UpstreamReset)
		cc.abort()
	}
}

func (bc *backendConn) close() {
	if bc.inPool {
		bc.ls.removeIdle(bc)
	}
	if bc.c != nil {
		bc.ls.loop.closeConn(bc.c)
	}
}

// retryAfterClose resends a request whose conn closed before answering: to another usable member
// of its pool if there is one, else on a fresh conn to the same member.
func (cc *clientConn) retryAfterClose() {
	if m := cc.otherMember(); m != nil {
		cc.switchMember(m)
		cc.connect()
		return
	}
	cc.dial()
}

// putIdle pools bc with its member's idle conns on this loop, or closes it when that pool is full
// (BackendIdle per member and loop).
func (ls *loopState) putIdle(bc *backendConn) {
	if bc.c == nil || bc.member == nil {
		bc.close()
		return
	}
	idle := ls.idleOf(bc.member)
	if len(*idle) >= ls.srv.cfg.BackendIdle {
		bc.close()
		return
	}
	bc.cc = nil
	bc.inPool = true
	bc.reused = true
	bc.idleSince = ls.now()
	*idle = append(*idle, bc)
	ls.srv.idle.Add(1)
}

// popIdle takes the warmest pooled conn to m (LIFO) that is still quiet, or nil. A conn on which
// the backend sent anything (or closed) while idle is closed instead: gnet may not have read
// those bytes yet (their event can come after the new request's in the same batch), and
// forwarding the next request on it would make them that client's answer.
func (ls *loopState) popIdle(m *route.Member) *backendConn {
	if m.ID() >= len(ls.idle) {
		return nil
	}
	pool := &ls.idle[m.ID()]
	for len(*pool) > 0 {
		p := *pool
		bc := p[len(p)-1]
		p[len(p)-1] = nil
		*pool = p[:len(p)-1]
		ls.srv.idle.Add(-1)
		bc.inPool = false
		if bc.c == nil {
			continue
		}
		if bc.c.InboundBuffered() > 0 || !socketQuiet(bc.out.fd) {
			bc.close()
			continue
		}
		return bc
	}
	return nil
}

// socketQuiet reports whether nothing (not even an EOF) waits to be read on fd: a one-byte
// non-blocking MSG_PEEK that finds EAGAIN. Raw, like rawWrite: the socket never blocks.
func socketQuiet(fd int) bool {
	var b [1]byte
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e == unix.EAGAIN
}

func (ls *loopState) removeIdle(bc *backendConn) {
	pool := ls.idleOf(bc.member)
	p := *pool
	for i, b := range p {
		if b == bc {
			copy(p[i:], p[i+1:])
			p[len(p)-1] = nil
			*pool = p[:len(p)-1]
			ls.srv.idle.Add(-1)
			bc.inPool = false
			return
		}
	}
}
