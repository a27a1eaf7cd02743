package loop

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"
)

// Endings of a client connection: answers that close, lingering closes, aborts, and timeouts.
//
// Invariant: a client conn ends exactly once (teardown), and it takes its backend conn with it
// unless the exchange ended cleanly and the conn went back to the pool first.

const lingerTime = 2 * time.Second

// reject answers a request the parser refused with its status and reason, and closes: nothing
// of it reaches the backend.
func (cc *clientConn) reject(err error) {
	if cc.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		cc.srv.log.Debug("request rejected", "client", string(cc.ip), "phase", "request head", "err", err)
	}
	cc.failResponse(rejectResponse(err))
}

// fail answers status with Connection: close unless a final response head already went out, in
// which case the client is closed at once. Nothing more reaches the backend.
func (cc *clientConn) fail(status int) {
	cc.failResponse(errorResponse(status))
}

func (cc *clientConn) failResponse(resp []byte) {
	if cc.state == stateClosed {
		return
	}
	ex := &cc.ex
	ex.dialing = false
	if bc := ex.bc; bc != nil {
		ex.bc = nil
		bc.cc = nil
		bc.close()
	}
	if ex.respFinal && cc.state != stateReadingHead {
		cc.abort()
		return
	}
	if cc.c == nil {
		cc.teardown()
		return
	}
	if err := cc.out.write(resp); err != nil {
		cc.abort()
		return
	}
	ex.closeAfter = true
	cc.startClosing()
}

// startClosing lets queued bytes drain, half-closes, and lingers briefly reading and discarding:
// closing a socket with unread input sends RST, which can destroy the answer in flight.
func (cc *clientConn) startClosing() {
	if cc.state == stateClosed {
		return
	}
	cc.state = stateClosing
	cc.discardInbound()
	cc.deadline = cc.ls.now() + int64(lingerTime+cc.srv.cfg.IdleTimeout/4)
	if cc.c == nil {
		cc.teardown()
		return
	}
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

func (cc *clientConn) halfClose() {
	_ = unix.Shutdown(cc.out.fd, unix.SHUT_WR)
	cc.deadline = cc.ls.now() + int64(lingerTime)
}

// abort closes the client now (and its backend), dropping anything queued.
func (cc *clientConn) abort() {
	if cc.c != nil {
		cc.out.release()
		cc.ls.loop.closeConn(cc.c) // -> closed() -> teardown()
		return
	}
	cc.teardown()
}

// closed runs from gnet's OnClose for the live client conn.
func (cc *clientConn) closed(err error) {
	cc.c = nil
	cc.teardown()
}

func (cc *clientConn) teardown() {
	if cc.state == stateClosed {
		return
	}
	cc.state = stateClosed
	ex := &cc.ex
	ex.dialing = false
	delete(cc.ls.clients, cc)
	delete(cc.ls.queued, cc)
	cc.srv.conns.Add(-1)
	if bc := ex.bc; bc != nil {
		ex.bc = nil
		bc.cc = nil
		bc.close()
	}
	if cc.c != nil {
		c := cc.c
		cc.c = nil
		cc.ls.loop.closeConn(c)
	}
	cc.out.release()
	cc.discardInbound()
	ex.releaseHead()
}

// expire runs from the sweep when cc.deadline has passed.
func (cc *clientConn) expire() {
	switch cc.state {
	case stateReadingHead:
		if cc.headStarted && cc.inboundLen() > 0 {
			cc.fail(408)
		} else {
			cc.abort() // idle keep-alive (or a conn that never spoke): nothing to answer
		}
	case stateAwaitingResponse, stateUpgrading:
		if !cc.ex.respFinal {
			cc.srv.backendWarn.warn(cc.srv.log, nanotime(), "backend response timeout", "backend", cc.srv.cfg.Backend, "phase", "response head", "status", 504, "timeout", cc.srv.cfg.ResponseTimeout)
			cc.fail(504)
		}
	case stateForwardingBody, stateClosing:
		cc.abort()
	}
}
