package loop

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/metrics"
)

// Endings of a client connection: answers that close, lingering closes, resets, and timeouts.
//
// Invariant: a client conn ends exactly once (teardown), and takes its backend conn with it unless
// the exchange ended cleanly and the conn went back to the pool first. It ends in one of three
// ways: a lingering close once a complete answer has drained (closeAfter, errors we answer), a
// plain close when nothing is in flight (an idle keep-alive conn), or a reset (SO_LINGER 0) when
// an answer cannot be completed, so that a truncated body never looks complete, not even a
// close-delimited one, whose only end marker is a clean close.

const lingerTime = 2 * time.Second

// reject answers a request the parser refused with its status and reason, and closes: nothing
// of it reaches the backend.
func (cc *clientConn) reject(err error) {
	if cc.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		cc.srv.log.Debug("request rejected", "client", string(cc.ip), "phase", "request head", "err", err)
	}
	cc.failResponse(rejectResponse(err), accesslog.ParseError, parseDetail(err))
}

// fail answers status with Connection: close unless a final response head already went out, in
// which case the client is reset. Nothing more reaches the backend. why is the reason the access
// log gives.
func (cc *clientConn) fail(status int, why accesslog.Why) {
	cc.failResponse(errorResponse(status), why, "")
}

func (cc *clientConn) failResponse(resp []byte, why accesslog.Why, detail string) {
	if cc.state == stateClosed {
		return
	}
	ex := &cc.ex
	ex.dialing = false
	cc.dropBackend()
	cc.releaseMember()
	if ex.respFinal && cc.state != stateReadingHead {
		cc.endRequest(ex.obs.status, why, detail, 0)
		cc.abort() // part of an answer went out: it cannot be completed
		return
	}
	if cc.out.fd < 0 {
		cc.endRequest(0, why, detail, 0)
		cc.teardown()
		return
	}
	cc.endRequest(statusOf(resp), why, detail, len(resp))
	if err := cc.out.write(resp); err != nil {
		cc.abort()
		return
	}
	ex.closeAfter = true
	cc.startClosing()
}

// dropBackend closes the exchange's backend conn, whatever it was doing.
func (cc *clientConn) dropBackend() {
	if bc := cc.ex.bc; bc != nil {
		cc.ex.bc = nil
		bc.cc = nil
		bc.close()
	}
}

// startClosing lets the queued answer drain (under the write-stall rule, however long that
// takes), then half-closes and lingers briefly reading and discarding: closing a socket with
// unread input sends RST, which can destroy the answer in flight.
func (cc *clientConn) startClosing() {
	if cc.state == stateClosed {
		return
	}
	cc.state = stateClosing
	cc.discardInbound()
	cc.deadline = 0 // the linger timer starts at the half-close
	if cc.out.fd < 0 {
		cc.teardown()
		return
	}
	cc.goodbye() // TLS: close_notify before the shutdown (tlswire.go)
	if err := cc.out.flush(); err != nil {
		cc.abort()
		return
	}
	if cc.out.pending() == 0 {
		cc.halfClose()
	} else {
		cc.noteQueued(&cc.out)
	}
}

// halfClose runs once a closing conn's queue is empty.
func (cc *clientConn) halfClose() {
	if cc.peerEOF {
		cc.closeNow() // the client sent its FIN already: nothing to linger for
		return
	}
	_ = unix.Shutdown(cc.out.fd, unix.SHUT_WR)
	cc.deadline = cc.ls.now() + int64(lingerTime)
}

// abort ends the client now with a reset (SO_LINGER 0, then close), dropping anything queued,
// and closes its backend: for every ending where an answer is cut short.
func (cc *clientConn) abort() {
	if cc.state == stateClosed {
		return
	}
	cc.out.release()
	if cc.out.fd >= 0 {
		resetOnClose(cc.out.fd)
	}
	cc.closeNow()
}

// closeNow closes the client socket now (and its backend), dropping anything queued.
func (cc *clientConn) closeNow() {
	if cc.c != nil {
		cc.out.release()
		cc.ls.loop.closeConn(cc.c) // -> closed() -> teardown()
		return
	}
	cc.teardown()
}

// resetOnClose makes the coming close of fd send RST instead of FIN.
func resetOnClose(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

func (cc *clientConn) teardown() {
	if cc.state == stateClosed {
		return
	}
	cc.state = stateClosed
	cc.endObs()
	ex := &cc.ex
	ex.dialing = false
	delete(cc.ls.clients, cc)
	delete(cc.ls.queued, cc)
	cc.srv.conns.Add(-1)
	cc.dropBackend()
	cc.releaseMember()
	if cc.c != nil {
		c := cc.c
		cc.c = nil
		cc.ls.loop.closeConn(c)
	}
	cc.out.release()
	cc.closeOwnFD()
	cc.discardInbound()
	ex.releaseHead()
	if cc.tls != nil {
		cc.tls.close()
	}
}

// expire runs from the sweep when cc.deadline has passed.
func (cc *clientConn) expire(now int64) {
	switch cc.state {
	case stateReadingHead:
		switch {
		case cc.headStarted && cc.inboundLen() > 0:
			cc.fail(408, accesslog.HeaderTimeout)
		case cc.out.pending() > 0 || cc.kernelDraining():
			// Not idle while an answer drains: that is the write-stall rule's business.
			cc.deadline = now + int64(cc.srv.cfg.IdleTimeout)
		default:
			cc.closeIdle() // idle keep-alive (or a conn that never spoke): nothing to answer
		}
	case stateAwaitingResponse:
		if !cc.ex.respFinal {
			cc.srv.backendWarn.warn(cc.srv.log, now, "backend response timeout", "route", routeLabel{cc.ex.route}, "backend", memberName(cc.ex.member), "phase", "response head", "status", 504, "timeout", cc.responseTimeout())
			cc.failUpstream(504, accesslog.ResponseTimeout, metrics.UpstreamResponseTimeout)
		}
	case stateForwardingBody:
		cc.abort() // the client stopped sending its body
	case stateClosing:
		if cc.kernelDraining() {
			cc.deadline = now + int64(lingerTime)
			return
		}
		cc.closeNow() // the linger after the half-close is over
	}
}

// kernelDraining reports whether the client's socket still holds answer bytes the client has not
// acknowledged and took some since the last look. The idle and linger timers wait for that: the
// answer has left our queue, but a slow reader is still receiving it. A socket whose backlog does
// not move is a stall, and the timers go ahead.
func (cc *clientConn) kernelDraining() bool {
	if cc.out.fd < 0 {
		return false
	}
	n := unsentBytes(cc.out.fd)
	moving := n > 0 && n != cc.unsent
	cc.unsent = n
	return moving
}

// writeStalled: the client took no byte of its queued answer for IdleTimeout.
func (cc *clientConn) writeStalled() {
	cc.srv.log.Debug("client stopped reading", "client", string(cc.ip), "phase", "response", "queued", cc.out.pending(), "timeout", cc.srv.cfg.IdleTimeout)
	cc.abort()
}

// backendStalled: the backend took no byte of the queued request for IdleTimeout.
func (cc *clientConn) backendStalled() {
	s := cc.srv
	s.backendWarn.warn(s.log, nanotime(), "backend stopped reading the request", "backend", memberName(cc.ex.member), "phase", "request", "status", 504, "timeout", s.cfg.IdleTimeout)
	cc.failUpstream(504, accesslog.ResponseTimeout, metrics.UpstreamResponseTimeout)
}
