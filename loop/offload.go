package loop

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/splice"
)

// Offloading a body to the tunnel plane and taking both sockets back.
//
// Invariant: while a body is offloaded gnet holds neither socket and the exchange is frozen
// (stateOffloaded); it resumes only when every socket the plane hands back is enrolled again on
// this loop, and a socket that cannot resume the exchange is closed, never left behind.

// detachedFD marks an outq whose socket is in the tunnel plane: writes queue, flushes wait.
const detachedFD = -2

// offloadState is an exchange's bookkeeping while a body is in the tunnel plane.
type offloadState struct {
	req        bool // the request body is offloaded (else the response body)
	pending    int  // conns still to re-enroll
	failed     bool
	clientOnly bool  // only the client comes back (the backend conn was closed)
	answer     error // with clientOnly: refuse the request with this (a bad chunked body), else finish
	extra      []byte
}

// offloadRequest moves the rest of the request body to the tunnel plane, where readiness gives
// real backpressure. It reports false when the hand-off is not clean right now (the backend has
// started answering): the caller then keeps queueing up to a hard cap.
func (cc *clientConn) offloadRequest() bool {
	bc := cc.ex.bc
	// Interim answers (100 Continue) already relayed are fine; a final one or unparsed response
	// bytes are not, since the response side cannot run while the backend fd is away.
	if cc.ex.respFinal || bc.c.InboundBuffered() > 0 || cc.inboundLen() > 0 {
		return false
	}
	return cc.offload(true)
}

// offloadResponse moves the rest of the response body to the tunnel plane.
func (cc *clientConn) offloadResponse() bool {
	bc := cc.ex.bc
	if !cc.ex.reqDone || bc.out.pending() > 0 || bc.c.InboundBuffered() > 0 {
		return false
	}
	return cc.offload(false)
}

func (cc *clientConn) offload(req bool) bool {
	s, ls, ex := cc.srv, cc.ls, &cc.ex
	bc := ex.bc
	var cfd int
	if cc.c != nil {
		var err error
		if cfd, err = cc.c.Dup(); err != nil {
			return false
		}
	} else if cc.peerEOF {
		cfd = cc.out.fd // a half-closed client's socket is our dup already: it goes as it is
	} else {
		return false
	}
	bfd, err := bc.c.Dup()
	if err != nil {
		if !cc.peerEOF {
			_ = unix.Close(cfd)
		}
		return false
	}
	// Client bytes gnet already read (pipelined requests) must survive the close of gnet's copy.
	cc.holdInbound()
	// Only write stalls end a response body in the plane (a quiet backend is a streamed or
	// long-poll body); an upload also ends when the client stops sending, as in the loop.
	x := splice.Transfer{StallTimeout: s.cfg.IdleTimeout}
	if req {
		x.SrcIdleTimeout = s.cfg.IdleTimeout
	}
	framing, left, dec := ex.respFraming, ex.respLeft, &ex.respChunk
	q := &cc.out
	x.Src, x.Dst = bfd, cfd
	if req {
		framing, left, dec = ex.reqFraming, ex.reqLeft, &ex.reqChunk
		q = &bc.out
		x.Src, x.Dst = cfd, bfd
	}
	x.Pending = q.bytes()
	if cc.tls != nil {
		// The plane opens the client's records (upload) or seals toward it (download); the
		// session is the plane's until Done. Pending toward a TLS client is records already.
		if req {
			x.SrcTLS = cc.tls.rec
		} else {
			x.DstTLS = cc.tls.rec
		}
	}
	switch framing {
	case httpparse.FramingChunked:
		x.Length, x.Chunked = -1, dec
	case httpparse.FramingUntilClose:
		x.Length, x.Chunked = -1, untilClose{}
	default:
		x.Length = left
	}
	cc.state = stateOffloaded
	ex.off = offloadState{req: req, pending: 2}
	cc.deadline = 0
	// gnet's copies go now, synchronously, so gnet never reads or writes these sockets again.
	// Our outqs are the only write path, so gnet's outbound buffers are empty and its close
	// drops nothing. OnClose sees c != v.c and leaves the exchange alone.
	oc, ob := cc.c, bc.c
	cc.c, bc.c = nil, nil
	cc.out.fd, bc.out.fd = detachedFD, detachedFD
	if oc != nil {
		ls.loop.closeConn(oc)
	}
	ls.loop.closeConn(ob)
	x.Done = func(r splice.TransferResult) { cc.transferDone(r) }
	if cc.peerEOF {
		s.fds.Release(1) // the dup is the plane's (and counted by it) or closed below
	}
	if err := s.plane.Transfer(x); err != nil {
		// Ownership did not pass: the fds are still ours.
		s.log.Warn("body offload refused", "backend", memberName(ex.member), "phase", "offload", "err", err)
		_ = unix.Close(cfd) // (a half-closed client's dup too: out.fd is detached)
		_ = unix.Close(bfd)
		ex.bc, bc.cc = nil, nil
		cc.teardown()
		return true
	}
	q.release() // Transfer copied Pending
	s.offloads.Add(1)
	ls.m.BodyOffloaded()
	return true
}

// transferDone runs on a tunnel-plane goroutine: hop to the owning loop.
func (cc *clientConn) transferDone(r splice.TransferResult) {
	err := cc.ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		cc.afterTransfer(r)
		return nil
	}))
	if err != nil { // engine stopped: nobody will take the fds back
		_ = unix.Close(r.Src)
		_ = unix.Close(r.Dst)
	}
}

func (cc *clientConn) afterTransfer(r splice.TransferResult) {
	s, ex := cc.srv, &cc.ex
	cc.noteTransfer(r)
	cfd, bfd := r.Dst, r.Src
	if ex.off.req {
		cfd, bfd = r.Src, r.Dst
	}
	var pe *httpparse.Error
	switch {
	case !ex.off.req && ex.respFraming == httpparse.FramingUntilClose && errors.Is(r.Err, splice.ErrUnexpectedEOF):
		// A close-delimited body ends when the backend closes; the plane drained everything to the
		// client before reporting the end. Only the client comes back, to be closed gracefully.
		cc.clientOnlyBack(cfd, bfd, nil)
		return
	case r.Err != nil && ex.off.req && !ex.respFinal && errors.As(r.Err, &pe):
		// The request body broke its chunked framing in the plane, which relayed nothing of the
		// offending bytes: the client comes back alone to be told why.
		s.log.Debug("request body refused", "client", string(cc.ip), "phase", "offloaded request body", "err", r.Err)
		cc.clientOnlyBack(cfd, bfd, pe)
		return
	}
	if r.Err != nil {
		s.log.Debug("body offload failed", "backend", memberName(ex.member), "phase", "offloaded body", "err", r.Err)
		resetOnClose(cfd)   // the body is cut short: it must not look complete
		_ = unix.Close(cfd) // (for a half-closed client this is our dup: out.fd stays detached)
		_ = unix.Close(bfd)
		if bc := ex.bc; bc != nil {
			bc.cc, ex.bc = nil, nil
		}
		cc.teardown()
		return
	}
	ex.off.extra = r.Extra
	if r.ReadClosed && cc.tls != nil {
		cc.tls.eof = true // the client's close_notify arrived in the plane
	}
	bc := ex.bc
	bc.cleanAfterOffload = !ex.off.req && len(r.Extra) == 0 && ex.backendReuse && ex.reqKeepAlive && ex.reqDone
	go s.reenroll(cc.ls, bfd, bc, cc)
	cc.clientBack(cfd)
}

// clientOnlyBack closes the backend's fd and re-enrolls only the client's; answer, if set, is
// the error the request is refused with once it is back.
func (cc *clientConn) clientOnlyBack(cfd, bfd int, answer error) {
	ex := &cc.ex
	_ = unix.Close(bfd)
	if bc := ex.bc; bc != nil {
		bc.cc, ex.bc = nil, nil
	}
	ex.off.clientOnly = true
	ex.off.answer = answer
	ex.off.pending = 1
	cc.clientBack(cfd)
}

// clientBack returns the client's socket from the plane: to gnet, or, for a client that
// half-closed, straight to its outq (it never goes back to gnet, which would only read the EOF).
func (cc *clientConn) clientBack(cfd int) {
	if cc.peerEOF {
		cc.srv.fds.Acquire(1) // ours again (the plane released it at the hand-back)
		cc.out.fd = cfd
		cc.reattachDone()
		return
	}
	go cc.srv.reenroll(cc.ls, cfd, cc, cc)
}

// reenroll gives an fd back to gnet on the same loop; OnOpen re-attaches v.
func (s *Server) reenroll(ls *loopState, fd int, v any, cc *clientConn) {
	f := os.NewFile(uintptr(fd), "wsgate-reenroll")
	nc, err := net.FileConn(f) // dups; the original is closed with f
	_ = f.Close()
	if err == nil {
		var ch <-chan gnet.RegisteredResult
		if ch, err = ls.el.Enroll(gnet.NewContext(context.Background(), v), nc); err != nil {
			_ = nc.Close()
		} else if res, ok := <-ch; !ok || res.Err != nil || res.Conn == nil {
			// A closed channel without a result means gnet's worker gave up (it recovers a
			// panic, e.g. on a socket whose peer is already gone): no OnOpen will come.
			err = res.Err
			if err == nil {
				err = errors.New("gnet enroll ended without a result")
			}
		}
	}
	if err != nil {
		s.log.Debug("re-enroll after offload failed", "phase", "re-enroll", "err", err)
		_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if cc.state != stateOffloaded {
				return nil // the client left meanwhile; the fd is closed already
			}
			cc.ex.off.failed = true
			cc.reattachDone()
			return nil
		}))
	}
}

// reattached is OnOpen for a client conn coming back from the tunnel plane.
func (cc *clientConn) reattached(c wire) {
	cc.c = cc.wrapWire(c)
	cc.out.fd = c.Fd()
	cc.reattachDone()
}

// reattachDone counts the halves back; once both are, the exchange resumes.
func (cc *clientConn) reattachDone() {
	ex := &cc.ex
	ex.off.pending--
	if ex.off.pending > 0 {
		return
	}
	bc := ex.bc
	if ex.off.failed || !cc.present() || (bc == nil) != ex.off.clientOnly || (bc != nil && bc.c == nil) {
		if bc != nil {
			ex.bc, bc.cc = nil, nil
			bc.close()
		}
		cc.abort()
		return
	}
	if len(ex.off.extra) > 0 {
		if ex.off.req {
			held := bytebufferpool.Get()
			held.B = append(held.B, ex.off.extra...)
			if cc.held != nil {
				held.B = append(held.B, cc.held.B[cc.heldOff:]...)
				bytebufferpool.Put(cc.held)
			}
			cc.held, cc.heldOff = held, 0
		} else {
			ex.backendReuse = false // the backend sent bytes beyond the body: the conn is out of sync
		}
	}
	ex.off.extra = nil
	if ex.off.answer != nil {
		cc.state = stateAwaitingResponse
		cc.failResponse(rejectResponse(ex.off.answer), accesslog.ParseError, parseDetail(ex.off.answer))
		return
	}
	if ex.off.req {
		ex.reqDone = true
		ex.reqLeft = 0
		cc.state = stateAwaitingResponse
		cc.deadline = cc.ls.now() + int64(cc.responseTimeout())
		cc.noteQueued(&cc.out)
		bc.process()
		if cc.state != stateClosed {
			cc.process()
		}
		return
	}
	cc.state = stateStreamingResponse
	ex.respLeft = 0
	cc.noteQueued(&cc.out)
	cc.respComplete()
}

// untilClose frames a close-delimited body for the tunnel plane: every byte is body and only the
// backend's EOF ends it (the plane reports that as an error after draining to the client).
type untilClose struct{}

func (untilClose) Feed(p []byte) (int, bool, error) { return len(p), false, nil }
func (untilClose) DataLeft() int64                  { return 1 << 62 }
func (untilClose) Skip(int64)                       {}
