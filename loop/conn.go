package loop

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/httpparse"
)

// state is where a client connection is in its exchange. The request side drives it; the
// response side's progress is respPhase, because a backend may answer before the body is in.
type state uint8

const (
	stateReadingHead       state = iota // waiting for / parsing a request head
	stateForwardingBody                 // request body bytes go to the backend as they arrive
	stateAwaitingResponse               // request sent; client bytes are the next pipelined request
	stateStreamingResponse              // final response head forwarded, body streaming
	stateUpgrading                      // WebSocket request sent; waiting for a verified 101
	stateOffloaded                      // a body is in the tunnel plane; gnet holds neither fd
	stateClosing                        // answer queued, then shutdown(SHUT_WR) and a short linger
	stateClosed
)

type respPhase uint8

const (
	respHead respPhase = iota // waiting for the (next) response head
	respBody                  // final head forwarded, body streaming
	respDone
)

// Caps on bytes we must hold because gnet cannot stop reading.
const (
	upgradeHoldCap  = 64 << 10 // client bytes sent before the 101 arrives
	pipelineHoldCap = 1 << 20  // pipelined requests behind the one in flight
	dialHoldFloor   = 8 << 20  // request body bytes held while the backend conn is being dialled
	lingerTime      = 2 * time.Second
	headScratchCap  = 32 << 10 // a response head and the body bytes behind it go out in one write up to this
)

var errBackendGone = errors.New("backend closed the connection")

// clientConn is one client connection's state machine. It lives in the gnet conn's context and,
// across an offload, in the context of the re-enrolled conn.
type clientConn struct {
	srv *Server
	ls  *loopState
	c   gnet.Conn // nil while offloaded or after close
	out outq
	ip  []byte

	state       state
	parser      httpparse.Parser
	headStarted bool
	deadline    int64 // unix nanos; what it means depends on state
	busy        bool  // process() is on the stack: nested calls just let it loop
	held        *bytebufferpool.ByteBuffer
	heldOff     int

	// the exchange in flight
	gen          uint32
	bc           *backendConn
	dialing      bool
	fwd          *bytebufferpool.ByteBuffer // forwarded head, kept for one retry until the first response byte
	isHEAD       bool
	idempotent   bool
	closeAfter   bool
	upgrade      bool
	retried      bool
	reqFraming   httpparse.Framing
	reqLeft      int64
	reqChunk     httpparse.ChunkedDecoder
	reqDone      bool
	reqBodySent  bool
	host         []byte
	wsKey        []byte
	respParser   httpparse.Parser
	respPhase    respPhase
	respStarted  bool // a byte arrived from the backend
	respFinal    bool // the final head went to the client
	respFraming  httpparse.Framing
	respLeft     int64
	respChunk    httpparse.ChunkedDecoder
	backendReuse bool

	// offload bookkeeping
	offReq     bool // the request body is offloaded (else the response body)
	offBackFD  int  // kept to pair fds when they come back
	offPending int  // conns still to re-enroll
	offFailed  bool
	offEOF     bool // a close-delimited body ended in the plane: only the client comes back
	offExtra   []byte
}

// backendConn is one backend connection; cc is the client it serves (nil when idle).
type backendConn struct {
	srv       *Server
	ls        *loopState
	c         gnet.Conn
	out       outq
	cc        *clientConn
	gen       uint32
	reused    bool
	inPool    bool
	idleSince int64
}

func newClientConn(ls *loopState, c gnet.Conn) *clientConn {
	s := ls.srv
	cc := &clientConn{srv: s, ls: ls, c: c, out: outq{fd: c.Fd()}}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		cc.ip = []byte(a.IP.String())
	}
	lim := httpparse.DefaultLimits()
	lim.MaxHeadBytes = s.cfg.MaxHeadBytes
	cc.parser.Limits = lim
	cc.respParser.Limits = httpparse.Limits{MaxHeadBytes: 64 << 10, MaxHeaders: httpparse.MaxHeadersCap}
	cc.deadline = ls.now() + int64(s.cfg.HeaderTimeout)
	c.SetContext(cc)
	ls.clients[cc] = struct{}{}
	return cc
}

// ---- client input --------------------------------------------------------------------------

// inbound returns the client bytes not yet consumed: bytes handed back by the tunnel plane first.
func (cc *clientConn) inbound() []byte {
	if cc.held != nil {
		if cc.c != nil && cc.c.InboundBuffered() > 0 {
			b, _ := cc.c.Next(-1)
			cc.held.B = append(cc.held.B, b...)
		}
		return cc.held.B[cc.heldOff:]
	}
	if cc.c == nil {
		return nil
	}
	b, _ := cc.c.Peek(-1)
	return b
}

func (cc *clientConn) inboundLen() int {
	n := 0
	if cc.held != nil {
		n = len(cc.held.B) - cc.heldOff
	}
	if cc.c != nil {
		n += cc.c.InboundBuffered()
	}
	return n
}

func (cc *clientConn) consume(n int) {
	if cc.held != nil {
		cc.heldOff += n
		if cc.heldOff >= len(cc.held.B) {
			bytebufferpool.Put(cc.held)
			cc.held, cc.heldOff = nil, 0
		}
		return
	}
	if cc.c != nil {
		_, _ = cc.c.Discard(n)
	}
}

func (cc *clientConn) discardInbound() {
	if cc.held != nil {
		bytebufferpool.Put(cc.held)
		cc.held, cc.heldOff = nil, 0
	}
	if cc.c != nil {
		_, _ = cc.c.Discard(-1)
	}
}

// process advances the client side as far as the bytes at hand allow.
func (cc *clientConn) process() {
	if cc.busy {
		return
	}
	cc.busy = true
	defer func() { cc.busy = false }()
	for {
		var more bool
		switch cc.state {
		case stateReadingHead:
			more = cc.readHead()
		case stateForwardingBody:
			more = cc.forwardBody()
		case stateAwaitingResponse, stateStreamingResponse:
			if cc.inboundLen() > pipelineHoldCap {
				cc.abort()
			}
		case stateUpgrading:
			// Frames sent before the 101 wait here; they become Tunnel.ToBackend, never a request.
			if cc.inboundLen() > upgradeHoldCap {
				cc.fail(502)
			}
		case stateClosing:
			cc.discardInbound()
		}
		if !more {
			return
		}
	}
}

func (cc *clientConn) readHead() bool {
	buf := cc.inbound()
	if len(buf) == 0 {
		return false
	}
	s := cc.srv
	if !cc.headStarted {
		cc.headStarted = true
		cc.deadline = cc.ls.now() + int64(s.cfg.HeaderTimeout)
	}
	req := &cc.ls.req
	n, err := cc.parser.ParseRequest(buf, req)
	if err == httpparse.ErrNeedMore {
		return false
	}
	cc.parser.Reset()
	if err != nil {
		cc.reject(err)
		return false
	}
	upgrade := false
	if req.IsWebSocketUpgrade() {
		if err := httpparse.CheckWebSocketRequest(req); err != nil {
			cc.reject(err)
			return false
		}
		if req.Framing != httpparse.FramingNone {
			cc.fail(400)
			return false
		}
		upgrade = true
	}
	cc.beginExchange(req, upgrade)
	cc.consume(n)
	s.requests.Add(1)
	if bc := cc.ls.popIdle(); bc != nil {
		cc.attach(bc)
	} else {
		cc.dial()
	}
	return cc.state != stateClosing && cc.state != stateClosed
}

func (cc *clientConn) beginExchange(req *httpparse.Request, upgrade bool) {
	s := cc.srv
	cc.gen++
	cc.isHEAD = httpparse.EqualFold(req.Method, "HEAD")
	cc.idempotent = isIdempotent(req.Method)
	cc.closeAfter = !req.KeepAlive
	cc.upgrade = upgrade
	cc.retried = false
	cc.reqFraming = req.Framing
	cc.reqLeft = req.ContentLength
	cc.reqChunk.Reset()
	cc.reqBodySent = false
	cc.reqDone = req.Framing == httpparse.FramingNone || (req.Framing == httpparse.FramingLength && req.ContentLength == 0)
	cc.respParser.Reset()
	cc.respPhase = respHead
	cc.respStarted, cc.respFinal, cc.backendReuse = false, false, false
	cc.host = append(cc.host[:0], req.Host...)
	if auth, _, ok := splitAbsolute(req.Target); ok {
		cc.host = append(cc.host[:0], auth...)
	}
	cc.wsKey = cc.wsKey[:0]
	if upgrade {
		cc.wsKey = append(cc.wsKey, req.Header("Sec-WebSocket-Key")...)
	}
	if cc.fwd == nil {
		cc.fwd = bytebufferpool.Get()
	}
	o := reqHeadOpts{backendHost: s.backend, clientIP: cc.ip, preserveHost: s.cfg.PreserveHost, forwarded: s.cfg.Forwarded, websocket: upgrade}
	cc.fwd.B = appendRequestHead(cc.fwd.B[:0], req, &o)
	cc.deadline = 0
	switch {
	case upgrade:
		cc.state = stateUpgrading
	case cc.reqDone:
		cc.state = stateAwaitingResponse
	default:
		cc.state = stateForwardingBody
		cc.deadline = cc.ls.now() + int64(s.cfg.IdleTimeout)
	}
}

func isIdempotent(m []byte) bool {
	switch string(m) { // the compiler does not allocate for a switch on string(bytes)
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE":
		return true
	}
	return false
}

// attach pairs the exchange with a connected backend and sends the head.
func (cc *clientConn) attach(bc *backendConn) {
	cc.dialing = false
	cc.bc = bc
	bc.cc = cc
	bc.gen = cc.gen
	if cc.reqDone {
		cc.deadline = cc.ls.now() + int64(cc.srv.cfg.ResponseTimeout)
	}
	if err := bc.out.write(cc.fwd.B); err != nil {
		bc.close() // closed() decides: retry on a fresh conn or 502
		return
	}
	cc.noteQueued(&bc.out)
}

// dial connects a fresh backend conn off the loop (dialPool) and enrolls it on this loop.
func (cc *clientConn) dial() {
	cc.dialing = true
	bc := &backendConn{srv: cc.srv, ls: cc.ls, cc: cc, gen: cc.gen, out: outq{fd: -1}}
	cc.srv.dials.start(dialJob{cc: cc, bc: bc, gen: cc.gen})
}

func (cc *clientConn) dialFailed(gen uint32, err error) {
	if cc.gen != gen || !cc.dialing || cc.state == stateClosed {
		return
	}
	cc.dialing = false
	status := dialStatus(err) // dialer.go: 503 fd budget, 504 timeout, 502 otherwise
	cc.srv.backendWarn.warn(cc.srv.log, time.Now().UnixNano(), "backend unavailable", "backend", cc.srv.cfg.Backend, "phase", "dial", "status", status, "err", err)
	cc.fail(status)
}

func (cc *clientConn) forwardBody() bool {
	bc := cc.bc
	if bc == nil || bc.c == nil {
		// Still dialling: gnet keeps reading the body into its inbound buffer, so bound it. A
		// loopback client can send megabytes during one dial, hence the floor.
		if cc.inboundLen() > max(4*cc.srv.cfg.BodyHighWater, dialHoldFloor) {
			cc.fail(503)
		}
		return false
	}
	buf := cc.inbound()
	if len(buf) == 0 {
		return false
	}
	var n int
	var done bool
	switch cc.reqFraming {
	case httpparse.FramingLength:
		n = len(buf)
		if int64(n) > cc.reqLeft {
			n = int(cc.reqLeft)
		}
		cc.reqLeft -= int64(n)
		done = cc.reqLeft == 0
	case httpparse.FramingChunked:
		var err error
		n, done, err = cc.reqChunk.Feed(buf)
		if err != nil {
			cc.abort() // the head is already at the backend: no clean answer is possible
			return false
		}
	}
	err := bc.out.write(buf[:n])
	cc.consume(n)
	cc.reqBodySent = true
	cc.deadline = cc.ls.now() + int64(cc.srv.cfg.IdleTimeout) // a body that stalls this long is dropped
	if err != nil {
		cc.srv.log.Debug("backend write failed", "backend", cc.srv.cfg.Backend, "phase", "request body", "err", err)
		if cc.respFinal {
			cc.abort()
		} else {
			cc.fail(502)
		}
		return false
	}
	cc.noteQueued(&bc.out)
	if done {
		cc.reqDone = true
		if cc.respPhase == respDone {
			cc.finishExchange()
			return true
		}
		if cc.respFinal {
			cc.state = stateStreamingResponse
		} else {
			cc.state = stateAwaitingResponse
			cc.deadline = cc.ls.now() + int64(cc.srv.cfg.ResponseTimeout)
		}
		return true
	}
	return !cc.pastHighWater(&bc.out, false)
}

// pastHighWater applies the bounded-memory rule to the queue a body just grew (gnet cannot pause
// reading; docs/architecture.md): past BodyHighWater the rest of the body moves to the tunnel
// plane, and when that cannot be done cleanly the queue may grow to 4x before the exchange is
// aborted. It reports whether q is past high water, so the caller stops feeding it.
func (cc *clientConn) pastHighWater(q *outq, response bool) bool {
	hw := cc.srv.cfg.BodyHighWater
	if q.pending() <= hw {
		return false
	}
	var offloaded bool
	if response {
		offloaded = cc.offloadResponse()
	} else {
		offloaded = cc.offloadRequest()
	}
	if !offloaded && q.pending() > 4*hw {
		cc.abort()
	}
	return true
}

// ---- backend input -------------------------------------------------------------------------

func (bc *backendConn) inbound() []byte {
	b, _ := bc.c.Peek(-1)
	return b
}

// opened runs when a conn we enrolled is registered: a fresh dial or an offload coming back.
func (bc *backendConn) opened(c gnet.Conn) {
	if bc.c == nil && bc.out.fd == -2 { // coming back from the tunnel plane
		bc.c = c
		bc.out.fd = c.Fd()
		if cc := bc.cc; cc != nil {
			cc.reattachDone()
		}
		return
	}
	bc.c = c
	bc.out.fd = c.Fd()
	cc := bc.cc
	if cc == nil || cc.gen != bc.gen || !cc.dialing || cc.state == stateClosed {
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
	ls, s := bc.ls, bc.srv
	for {
		buf := bc.inbound()
		if len(buf) == 0 {
			return
		}
		if !cc.respStarted {
			cc.respStarted = true
			if cc.fwd != nil {
				bytebufferpool.Put(cc.fwd)
				cc.fwd = nil
			}
		}
		switch cc.respPhase {
		case respHead:
			resp := &ls.resp
			n, err := cc.respParser.ParseResponse(buf, resp, cc.isHEAD)
			if err == httpparse.ErrNeedMore {
				return
			}
			cc.respParser.Reset()
			if err != nil {
				s.backendWarn.warn(s.log, time.Now().UnixNano(), "bad response from backend", "backend", s.cfg.Backend, "phase", "response head", "status", 502, "err", err)
				cc.fail(502)
				return
			}
			if resp.Status == 101 {
				cc.switchProtocols(bc, resp, n)
				return
			}
			o := respHeadOpts{backendHost: s.backend, clientHost: cc.host}
			if resp.Status < 200 {
				o.interim = true
				head := appendResponseHead(ls.scratch[:0], resp, &o)
				ls.scratch = head[:0]
				bc.c.Discard(n)
				if err := cc.out.write(head); err != nil {
					cc.abort()
					return
				}
				cc.noteQueued(&cc.out)
				continue
			}
			cc.closeAfter = cc.closeAfter || cc.upgrade || resp.Framing == httpparse.FramingUntilClose || !cc.reqDone
			cc.backendReuse = resp.KeepAlive && resp.Framing != httpparse.FramingUntilClose && !cc.upgrade
			o.close = cc.closeAfter
			head := appendResponseHead(ls.scratch[:0], resp, &o)
			bc.c.Discard(n)
			cc.respFinal = true
			cc.respFraming = resp.Framing
			cc.respLeft = resp.ContentLength
			cc.respChunk.Reset()
			cc.respPhase = respBody
			if cc.state == stateAwaitingResponse || cc.state == stateUpgrading {
				cc.state = stateStreamingResponse
				cc.deadline = 0
			}
			if resp.Framing == httpparse.FramingNone || (resp.Framing == httpparse.FramingLength && resp.ContentLength == 0) {
				if cc.out.write(head) != nil {
					cc.abort()
					return
				}
				cc.noteQueued(&cc.out)
				cc.respComplete()
				return
			}
			// Send the head together with the body bytes already here: one write per small response.
			body := bc.inbound()
			bn, done, ok := cc.frameResponse(body)
			if !ok {
				cc.abort()
				return
			}
			var werr error
			if len(head)+bn <= headScratchCap {
				head = append(head, body[:bn]...)
				werr = cc.out.write(head)
			} else if werr = cc.out.write(head); werr == nil {
				werr = cc.out.write(body[:bn])
			}
			ls.scratch = head[:0]
			bc.c.Discard(bn)
			if werr != nil {
				cc.abort()
				return
			}
			cc.noteQueued(&cc.out)
			if done {
				cc.respComplete()
				return
			}
			if cc.pastHighWater(&cc.out, true) {
				return
			}
		case respBody:
			n, done, ok := cc.frameResponse(buf)
			if !ok {
				cc.abort()
				return
			}
			err := cc.out.write(buf[:n])
			bc.c.Discard(n)
			if err != nil {
				cc.abort()
				return
			}
			cc.noteQueued(&cc.out)
			if done {
				cc.respComplete()
				return
			}
			if cc.pastHighWater(&cc.out, true) {
				return
			}
		default:
			bc.close()
			return
		}
	}
}

// frameResponse says how many bytes of buf belong to the response body and whether it ended.
// ok is false for a malformed chunked body.
func (cc *clientConn) frameResponse(buf []byte) (n int, done, ok bool) {
	switch cc.respFraming {
	case httpparse.FramingLength:
		n = len(buf)
		if int64(n) > cc.respLeft {
			n = int(cc.respLeft)
		}
		cc.respLeft -= int64(n)
		return n, cc.respLeft == 0, true
	case httpparse.FramingChunked:
		var err error
		n, done, err = cc.respChunk.Feed(buf)
		return n, done, err == nil
	case httpparse.FramingUntilClose:
		return len(buf), false, true
	}
	return 0, true, true
}

func (cc *clientConn) respComplete() {
	cc.respPhase = respDone
	if cc.reqDone || cc.closeAfter {
		cc.finishExchange()
	}
}

// finishExchange returns the backend to the pool (or closes it) and readies the client for the
// next request, or closes it.
func (cc *clientConn) finishExchange() {
	if bc := cc.bc; bc != nil {
		cc.bc = nil
		bc.cc = nil
		if cc.backendReuse && cc.reqDone && bc.c != nil && bc.c.InboundBuffered() == 0 && bc.out.pending() == 0 {
			cc.ls.putIdle(bc)
		} else {
			bc.close()
		}
	}
	if cc.fwd != nil {
		bytebufferpool.Put(cc.fwd)
		cc.fwd = nil
	}
	if !cc.reqDone {
		cc.closeAfter = true
	}
	if cc.closeAfter {
		cc.startClosing()
		return
	}
	cc.state = stateReadingHead
	cc.headStarted = false
	cc.deadline = cc.ls.now() + int64(cc.srv.cfg.IdleTimeout)
	cc.process() // pipelined requests already here (a no-op when called from inside process)
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
	bc.cc = nil
	cc.bc = nil
	switch {
	case cc.state == stateClosed || cc.state == stateClosing:
	case cc.respPhase == respBody && cc.respFraming == httpparse.FramingUntilClose:
		cc.backendReuse = false
		cc.closeAfter = true
		cc.respPhase = respDone
		cc.finishExchange()
	case !cc.respStarted && bc.reused && !cc.retried && cc.idempotent && !cc.reqBodySent && cc.fwd != nil:
		// A pooled conn the backend had already closed: resend once on a fresh one.
		cc.retried = true
		cc.srv.retries.Add(1)
		cc.dial()
	case !cc.respFinal:
		cc.srv.backendWarn.warn(cc.srv.log, time.Now().UnixNano(), "backend closed before the response", "backend", cc.srv.cfg.Backend, "phase", "response head", "status", 502, "err", err)
		cc.fail(502)
	default:
		// Mid-body: closing the client is the only way it can tell the body is truncated.
		cc.abort()
	}
}

func (bc *backendConn) close() {
	if bc.inPool {
		bc.ls.removeIdle(bc)
	}
	if bc.c != nil {
		_ = bc.ls.el.Close(bc.c)
	}
}

// ---- endings ---------------------------------------------------------------------------------

// fail answers status with Connection: close unless a final response head already went out, in
// which case the client is closed at once. Nothing more reaches the backend.
// reject answers a request the parser refused with its status and reason, and closes: nothing
// of it reaches the backend.
func (cc *clientConn) reject(err error) {
	if cc.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		cc.srv.log.Debug("request rejected", "client", string(cc.ip), "phase", "request head", "err", err)
	}
	cc.failResponse(rejectResponse(err))
}

func (cc *clientConn) fail(status int) {
	cc.failResponse(errorResponse(status))
}

func (cc *clientConn) failResponse(resp []byte) {
	if cc.state == stateClosed {
		return
	}
	cc.dialing = false
	if bc := cc.bc; bc != nil {
		cc.bc = nil
		bc.cc = nil
		bc.close()
	}
	if cc.respFinal && cc.state != stateReadingHead {
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
	cc.closeAfter = true
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
		_ = cc.ls.el.Close(cc.c) // -> closed() -> teardown()
		return
	}
	cc.teardown()
}

// closed runs from gnet's OnClose for the live client conn.
func (cc *clientConn) closed() {
	cc.c = nil
	cc.teardown()
}

func (cc *clientConn) teardown() {
	if cc.state == stateClosed {
		return
	}
	cc.state = stateClosed
	cc.dialing = false
	delete(cc.ls.clients, cc)
	delete(cc.ls.queued, cc)
	cc.srv.conns.Add(-1)
	if bc := cc.bc; bc != nil {
		cc.bc = nil
		bc.cc = nil
		bc.close()
	}
	if cc.c != nil {
		c := cc.c
		cc.c = nil
		_ = cc.ls.el.Close(c)
	}
	cc.out.release()
	cc.discardInbound()
	if cc.fwd != nil {
		bytebufferpool.Put(cc.fwd)
		cc.fwd = nil
	}
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
		if !cc.respFinal {
			cc.srv.backendWarn.warn(cc.srv.log, time.Now().UnixNano(), "backend response timeout", "backend", cc.srv.cfg.Backend, "phase", "response head", "status", 504, "timeout", cc.srv.cfg.ResponseTimeout)
			cc.fail(504)
		}
	case stateForwardingBody, stateClosing:
		cc.abort()
	}
}

// noteQueued tells the ticker this loop has bytes waiting for a slow peer.
func (cc *clientConn) noteQueued(q *outq) {
	if q.pending() > 0 {
		cc.ls.queued[cc] = struct{}{}
		cc.ls.hasQueued.Store(true)
	}
}

// flushQueues retries both queues of this client's exchange; true if bytes remain.
func (cc *clientConn) flushQueues() bool {
	if cc.state == stateOffloaded || cc.state == stateClosed {
		return false
	}
	left := false
	if cc.out.pending() > 0 {
		if err := cc.out.flush(); err != nil {
			cc.abort()
			return false
		}
		if cc.out.pending() > 0 {
			left = true
		} else if cc.state == stateClosing {
			cc.halfClose()
		}
	}
	if bc := cc.bc; bc != nil && bc.out.pending() > 0 {
		if err := bc.out.flush(); err != nil {
			bc.close()
			return left
		}
		left = left || bc.out.pending() > 0
	}
	return left
}
