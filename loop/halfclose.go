package loop

import (
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

// A client that half-closes (shutdown SHUT_WR) right after its request still gets its answer,
// as HAProxy does (nginx answers 499 and drops it).
//
// gnet closes a connection when a read returns EOF, and runs OnClose before it closes the fd. So
// in OnClose, when an answer is owed, we Dup the socket: gnet forgets its fd, and the dup carries
// the rest of the exchange outside gnet. The client's outq writes to the dup and the flush tick
// drains it; bytes gnet had already read (complete pipelined requests) move to held and are
// answered in turn; once nothing more is owed the dup is closed, after its queue drained, with a
// plain close (FIN; the client already sent its own, so there is nothing to linger for).
//
// Invariant: peerEOF is set exactly when cc.out.fd is a dup we own (or detachedFD while the plane
// has it); teardown closes it. The dup counts one fd in the budget while we hold it: from the
// dup in OnClose to closeOwnFD, minus the time it spends in the plane (which counts it itself).

// answerOwed says whether a client that just sent EOF is still owed bytes: an answer in flight or
// queued, or pipelined requests it sent before the EOF.
func (cc *clientConn) answerOwed() bool {
	switch cc.state {
	case stateAwaitingResponse, stateStreamingResponse, stateOffloaded:
		return true
	case stateForwardingBody:
		return cc.ex.respFinal // an early answer is streaming; the body itself will never end
	case stateReadingHead:
		return cc.out.pending() > 0 || cc.inboundLen() > 0
	case stateClosing:
		return cc.out.pending() > 0 // bytes already in the socket leave after our close anyway
	}
	return false
}

// present says whether the client socket is still ours to write to: held by gnet, or a dup after
// the client's EOF.
func (cc *clientConn) present() bool { return cc.c != nil || (cc.peerEOF && cc.out.fd >= 0) }

// closed runs from gnet's OnClose for the live client conn.
func (cc *clientConn) closed(err error) {
	c := cc.c
	if errors.Is(err, io.EOF) && cc.answerOwed() && !cc.truncated(err) {
		if fd, derr := c.Dup(); derr == nil {
			cc.srv.fds.Acquire(1) // the dup outlives OnClose, which released gnet's fd
			cc.holdInbound()
			cc.c = nil
			cc.out.fd = fd
			cc.peerEOF = true
			if cc.state == stateReadingHead {
				cc.process()
			}
			return
		}
	}
	cc.c = nil
	cc.teardown()
}

// closeOwnFD closes the dup of a half-closed client (teardown).
func (cc *clientConn) closeOwnFD() {
	if cc.peerEOF && cc.out.fd >= 0 {
		_ = unix.Close(cc.out.fd)
		cc.out.fd = -1
		cc.srv.fds.Release(1)
	}
}
