package loop

import (
	"context"
	"net"
	"os"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/splice"
)

// detachedFD marks an outq whose socket is in the tunnel plane: writes queue, flushes wait.
const detachedFD = -2

// offloadRequest moves the rest of the request body to the tunnel plane, where readiness gives
// real backpressure. It reports false when the hand-off is not clean right now (the backend has
// started answering): the caller then keeps queueing up to a hard cap.
func (cc *clientConn) offloadRequest() bool {
	bc := cc.bc
	// Interim answers (100 Continue) already relayed are fine; a final one or unparsed response
	// bytes are not, since the response side cannot run while the backend fd is away.
	if cc.respFinal || bc.c.InboundBuffered() > 0 || cc.inboundLen() > 0 {
		return false
	}
	return cc.offload(true)
}

// offloadResponse moves the rest of the response body to the tunnel plane.
func (cc *clientConn) offloadResponse() bool {
	bc := cc.bc
	if !cc.reqDone || bc.out.pending() > 0 || bc.c.InboundBuffered() > 0 {
		return false
	}
	return cc.offload(false)
}

func (cc *clientConn) offload(req bool) bool {
	s, ls, bc := cc.srv, cc.ls, cc.bc
	cfd, err := cc.c.Dup()
	if err != nil {
		return false
	}
	bfd, err := bc.c.Dup()
	if err != nil {
		_ = unix.Close(cfd)
		return false
	}
	// Client bytes gnet already read (pipelined requests) must survive the close of gnet's copy.
	if cc.c.InboundBuffered() > 0 {
		if cc.held == nil {
			cc.held = bytebufferpool.Get()
		}
		b, _ := cc.c.Next(-1)
		cc.held.B = append(cc.held.B, b...)
	}
	x := splice.Transfer{IdleTimeout: s.cfg.IdleTimeout}
	framing, left, dec := cc.respFraming, cc.respLeft, &cc.respChunk
	q := &cc.out
	x.Src, x.Dst = bfd, cfd
	if req {
		framing, left, dec = cc.reqFraming, cc.reqLeft, &cc.reqChunk
		q = &bc.out
		x.Src, x.Dst = cfd, bfd
	}
	x.Pending = q.bytes()
	switch framing {
	case httpparse.FramingChunked:
		x.Length, x.Chunked = -1, dec
	case httpparse.FramingUntilClose:
		x.Length, x.Chunked = -1, untilClose{}
	default:
		x.Length = left
	}
	cc.state = stateOffloaded
	cc.offReq = req
	cc.offPending = 2
	cc.offFailed = false
	cc.offEOF = false
	cc.offExtra = nil
	cc.deadline = 0
	// gnet's copies go now, synchronously, so gnet never reads or writes these sockets again.
	// Our outqs are the only write path, so gnet's outbound buffers are empty and its close
	// drops nothing. OnClose sees c != v.c and leaves the exchange alone.
	oc, ob := cc.c, bc.c
	cc.c, bc.c = nil, nil
	cc.out.fd, bc.out.fd = detachedFD, detachedFD
	_ = ls.el.Close(oc)
	_ = ls.el.Close(ob)
	x.Done = func(r splice.TransferResult) { cc.transferDone(r) }
	if err := s.plane.Transfer(x); err != nil {
		// Ownership did not pass: the fds are still ours.
		s.log.Warn("body offload refused", "backend", s.cfg.Backend, "phase", "offload", "err", err)
		_ = unix.Close(cfd)
		_ = unix.Close(bfd)
		cc.bc, bc.cc = nil, nil
		cc.teardown()
		return true
	}
	q.release() // Transfer copied Pending
	s.offloads.Add(1)
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
	s := cc.srv
	cfd, bfd := r.Dst, r.Src
	if cc.offReq {
		cfd, bfd = r.Src, r.Dst
	}
	if r.Err != nil && !cc.offReq && cc.respFraming == httpparse.FramingUntilClose {
		// A close-delimited body ends when the backend closes; the plane drained everything to the
		// client before reporting the end. Only the client comes back, to be closed gracefully.
		_ = unix.Close(bfd)
		if bc := cc.bc; bc != nil {
			bc.cc, cc.bc = nil, nil
		}
		cc.offEOF = true
		cc.offPending = 1
		go s.reenroll(cc.ls, cfd, cc, cc)
		return
	}
	if r.Err != nil {
		s.log.Debug("body offload failed", "backend", s.cfg.Backend, "phase", "offloaded body", "err", r.Err)
		_ = unix.Close(cfd)
		_ = unix.Close(bfd)
		if bc := cc.bc; bc != nil {
			bc.cc, cc.bc = nil, nil
		}
		cc.teardown()
		return
	}
	cc.offExtra = r.Extra
	bc := cc.bc
	go s.reenroll(cc.ls, cfd, cc, cc)
	go s.reenroll(cc.ls, bfd, bc, cc)
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
		} else if res := <-ch; res.Err != nil {
			err = res.Err
		}
	}
	if err != nil {
		s.log.Debug("re-enroll after offload failed", "phase", "re-enroll", "err", err)
		_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			cc.offFailed = true
			cc.reattachDone()
			return nil
		}))
	}
}

// reattached is OnOpen for a client conn coming back from the tunnel plane.
func (cc *clientConn) reattached(c gnet.Conn) {
	cc.c = c
	cc.out.fd = c.Fd()
	cc.reattachDone()
}

// reattachDone counts the halves back; once both are, the exchange resumes.
func (cc *clientConn) reattachDone() {
	cc.offPending--
	if cc.offPending > 0 {
		return
	}
	bc := cc.bc
	if cc.offFailed || cc.c == nil || (bc == nil) != cc.offEOF || (bc != nil && bc.c == nil) {
		if bc != nil {
			cc.bc, bc.cc = nil, nil
			bc.close()
		}
		cc.abort()
		return
	}
	if len(cc.offExtra) > 0 {
		if cc.offReq {
			held := bytebufferpool.Get()
			held.B = append(held.B, cc.offExtra...)
			if cc.held != nil {
				held.B = append(held.B, cc.held.B[cc.heldOff:]...)
				bytebufferpool.Put(cc.held)
			}
			cc.held, cc.heldOff = held, 0
		} else {
			cc.backendReuse = false // the backend sent bytes beyond the body: the conn is out of sync
		}
	}
	cc.offExtra = nil
	if cc.offReq {
		cc.reqDone = true
		cc.reqLeft = 0
		cc.state = stateAwaitingResponse
		cc.deadline = cc.ls.now() + int64(cc.srv.cfg.ResponseTimeout)
		cc.noteQueued(&cc.out)
		bc.process()
		if cc.state != stateClosed {
			cc.process()
		}
		return
	}
	cc.state = stateStreamingResponse
	cc.respLeft = 0
	cc.noteQueued(&cc.out)
	cc.respComplete()
}

// untilClose frames a close-delimited body for the tunnel plane: every byte is body and only the
// backend's EOF ends it (the plane reports that as an error after draining to the client).
type untilClose struct{}

func (untilClose) Feed(p []byte) (int, bool, error) { return len(p), false, nil }
func (untilClose) DataLeft() int64                  { return 1 << 62 }
func (untilClose) Skip(int64)                       {}

// switchProtocols handles a 101. Only a verified WebSocket switch is tunnelled.
func (cc *clientConn) switchProtocols(bc *backendConn, resp *httpparse.Response, n int) {
	s, ls := cc.srv, cc.ls
	if !cc.upgrade || !resp.HasToken("Upgrade", "websocket") || !resp.HasToken("Connection", "upgrade") ||
		!httpparse.VerifyAccept(cc.wsKey, resp.Header("Sec-WebSocket-Accept")) {
		s.log.Debug("backend sent an unverified 101", "backend", s.cfg.Backend, "phase", "upgrade")
		cc.fail(502)
		return
	}
	o := respHeadOpts{backendHost: s.backend, clientHost: cc.host, websocket: true}
	head := appendResponseHead(ls.scratch[:0], resp, &o)
	ls.scratch = head[:0]
	_, _ = bc.c.Discard(n)

	// Everything gnet or our queues hold goes to the plane as pending, ahead of any spliced byte:
	// to the client, older queued bytes, the 101, frames the backend sent right behind it; to the
	// backend, any unsent request bytes, then frames the client sent before the 101.
	toClient := bytebufferpool.Get()
	toClient.B = append(toClient.B, cc.out.bytes()...)
	toClient.B = append(toClient.B, head...)
	if bc.c.InboundBuffered() > 0 {
		b, _ := bc.c.Next(-1)
		toClient.B = append(toClient.B, b...)
	}
	toBackend := bytebufferpool.Get()
	toBackend.B = append(toBackend.B, bc.out.bytes()...)
	toBackend.B = append(toBackend.B, cc.inbound()...)

	cfd, err := cc.c.Dup()
	if err != nil {
		bytebufferpool.Put(toClient)
		bytebufferpool.Put(toBackend)
		cc.fail(502)
		return
	}
	bfd, err := bc.c.Dup()
	if err != nil {
		_ = unix.Close(cfd)
		bytebufferpool.Put(toClient)
		bytebufferpool.Put(toBackend)
		cc.fail(502)
		return
	}
	oc, ob := cc.c, bc.c
	cc.c, bc.c = nil, nil
	cc.bc, bc.cc = nil, nil
	_ = ls.el.Close(oc)
	_ = ls.el.Close(ob)
	err = s.plane.Tunnel(splice.Tunnel{ClientFD: cfd, BackendFD: bfd, ToBackend: toBackend.B, ToClient: toClient.B})
	bytebufferpool.Put(toClient)
	bytebufferpool.Put(toBackend)
	if err != nil {
		s.log.Warn("tunnel refused", "backend", s.cfg.Backend, "phase", "tunnel", "err", err)
	} else {
		s.tunnelsTotal.Add(1)
	}
	cc.teardown()
}
