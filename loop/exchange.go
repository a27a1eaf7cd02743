package loop

import (
	"errors"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
)

// The exchange: one request and its response, relayed between the client and a backend conn.
//
// Invariant: bytes are relayed only inside their message's framing (Content-Length countdown or
// the chunked decoder), so what reaches a peer is exactly one message per exchange; an exchange
// ends when both the request and the response are done, and only then can the client's next
// request be parsed and the backend conn be reused.

type respPhase uint8

const (
	respHead respPhase = iota // waiting for the (next) response head
	respBody                  // final head forwarded, body streaming
	respDone
)

// respLimits bound a backend's response head.
var respLimits = httpparse.Limits{MaxHeadBytes: 64 << 10, MaxHeaders: httpparse.MaxHeadersCap}

// exchange is the per-request state of a client connection. A new exchange starts from a zero
// value (clientConn.beginExchange), so nothing of the previous one can leak into it.
type exchange struct {
	// route and member serve this exchange (routes.go): set when it starts and kept until the
	// next one starts, for every site that labels the exchange (metrics, access log); route is
	// nil for a 404, member nil for a 404 and for a 502 without a usable member. holding: the
	// exchange holds a Request count on member (released exactly once when it ends).
	route   *route.Route
	member  *route.Member
	holding bool
	hostAt  int // offset of the member's address in fwd (the Host sent), -1 when the client's Host went

	bc         *backendConn
	dialing    bool
	fwd        *bytebufferpool.ByteBuffer // forwarded head, kept for one retry until the first response byte
	isHEAD     bool
	idempotent bool
	closeAfter bool
	upgrade    bool
	retried    bool   // resent once after its backend conn closed before answering
	redialed   bool   // dialled once more, on another member, after a failed dial
	host       []byte // the Host the client used (for Location rewrites); capacity carries over
	wsKey      []byte // Sec-WebSocket-Key of an upgrade; capacity carries over

	// request framing
	reqFraming   httpparse.Framing
	reqLeft      int64
	reqChunk     httpparse.ChunkedDecoder
	reqDone      bool
	reqBodySent  bool
	reqKeepAlive bool // the request as forwarded lets the backend keep the conn open

	// response framing
	respParser   httpparse.Parser
	respPhase    respPhase
	respStarted  bool // a byte arrived from the backend
	respFinal    bool // the final head went to the client
	respFraming  httpparse.Framing
	respLeft     int64
	respChunk    httpparse.ChunkedDecoder
	backendReuse bool

	off offloadState
	obs exchangeObs // its count and access-log line (observe.go)
}

// frameRequest says how many bytes of buf belong to the request body and whether it ended.
func (ex *exchange) frameRequest(buf []byte) (n int, done bool, err error) {
	switch ex.reqFraming {
	case httpparse.FramingLength:
		n = len(buf)
		if int64(n) > ex.reqLeft {
			n = int(ex.reqLeft)
		}
		ex.reqLeft -= int64(n)
		return n, ex.reqLeft == 0, nil
	case httpparse.FramingChunked:
		return ex.reqChunk.Feed(buf)
	}
	return 0, true, nil
}

// frameResponse says how many bytes of buf belong to the response body and whether it ended.
// ok is false for a malformed chunked body.
func (ex *exchange) frameResponse(buf []byte) (n int, done, ok bool) {
	switch ex.respFraming {
	case httpparse.FramingLength:
		n = len(buf)
		if int64(n) > ex.respLeft {
			n = int(ex.respLeft)
		}
		ex.respLeft -= int64(n)
		return n, ex.respLeft == 0, true
	case httpparse.FramingChunked:
		var err error
		n, done, err = ex.respChunk.Feed(buf)
		return n, done, err == nil
	case httpparse.FramingUntilClose:
		return len(buf), false, true
	}
	return 0, true, true
}

// startResponse records a final response head's framing and decides what happens to both
// connections after it. respFinal is set by the caller once the head is queued to the client:
// until then a failure can still be answered with 502.
func (ex *exchange) startResponse(resp *httpparse.Response) {
	ex.closeAfter = ex.closeAfter || ex.upgrade || resp.Framing == httpparse.FramingUntilClose || !ex.reqDone
	ex.backendReuse = resp.KeepAlive && resp.Framing != httpparse.FramingUntilClose && !ex.upgrade
	ex.respFraming = resp.Framing
	ex.respLeft = resp.ContentLength
	ex.respPhase = respBody
}

// poolable says whether bc may serve another client after this exchange: only when the response
// is known to have ended exactly at its framing boundary with nothing unread, nothing is queued
// toward the backend, the request was sent whole, and both messages are persistent. Anything else
// could put one client's bytes in front of another's answer, so the conn is closed instead.
func (ex *exchange) poolable(bc *backendConn) bool {
	return ex.backendReuse && ex.reqKeepAlive && ex.reqDone && ex.respPhase == respDone &&
		bc.c != nil && bc.c.InboundBuffered() == 0 && bc.out.pending() == 0
}

// releaseHead returns the forwarded head's buffer once no retry can need it.
func (ex *exchange) releaseHead() {
	if ex.fwd != nil {
		bytebufferpool.Put(ex.fwd)
		ex.fwd = nil
	}
}

// attach pairs the exchange with a connected backend and sends the head.
func (cc *clientConn) attach(bc *backendConn) {
	ex := &cc.ex
	ex.dialing = false
	ex.bc = bc
	bc.cc = cc
	bc.gen = cc.gen
	if ex.reqDone {
		cc.deadline = cc.ls.now() + int64(cc.responseTimeout())
	}
	if err := bc.out.write(ex.fwd.B); err != nil {
		bc.close() // closed() decides: retry on a fresh conn or 502
		return
	}
	cc.noteQueued(&bc.out)
}

// responseTimeout is the exchange's route's wait for a response head.
func (cc *clientConn) responseTimeout() time.Duration {
	if r := cc.ex.route; r != nil {
		return r.ResponseTimeout
	}
	return cc.srv.cfg.ResponseTimeout
}

// dial connects a fresh backend conn to the exchange's member off the loop (dialPool) and
// enrolls it on this loop.
func (cc *clientConn) dial() {
	ex := &cc.ex
	ex.dialing = true
	bc := &backendConn{srv: cc.srv, ls: cc.ls, cc: cc, gen: cc.gen, member: ex.member, out: outq{fd: -1, acct: &cc.srv.queuedBytes}, dialAt: nanotime()}
	cc.srv.dials.start(dialJob{cc: cc, bc: bc, gen: cc.gen, d: ex.route.Pool.Dialer(ex.member)})
}

// dialFailed runs on the loop when a dial for exchange gen failed. A refused, unreachable or timed
// out connect counts against the member's passive health; since nothing was sent, the exchange
// is dialled once more on another usable member of its pool, whatever the request.
func (cc *clientConn) dialFailed(gen uint32, err error) {
	if cc.gen != gen || !cc.ex.dialing || cc.state == stateClosed {
		return
	}
	ex := &cc.ex
	ex.dialing = false
	now := nanotime()
	failed := ex.member
	cc.srv.reportDialFailure(failed, err, now)
	cc.countDialFailure(failed, err)
	if !ex.redialed && !errors.Is(err, errFDBudget) {
		if m := cc.otherMember(); m != nil {
			ex.redialed = true
			cc.srv.retries.Add(1)
			cc.srv.log.Debug("dial failed, trying another member", "route", routeLabel{ex.route}, "backend", memberName(failed), "next", m.Addr(), "err", err)
			cc.switchMember(m)
			cc.connect()
			return
		}
	}
	status := dialStatus(err) // dialer.go: 503 fd budget, 504 timeout, 502 otherwise
	cc.srv.backendWarn.warn(cc.srv.log, now, "backend unavailable", "route", routeLabel{ex.route}, "backend", memberName(failed), "phase", "dial", "status", status, "err", err)
	cc.failDial(status, err)
}

func (cc *clientConn) forwardBody() bool {
	ex := &cc.ex
	bc := ex.bc
	if bc == nil || bc.c == nil {
		// Still dialling: gnet keeps reading the body into its inbound buffer, so bound it. A
		// loopback client can send megabytes during one dial, hence the floor.
		if cc.inboundLen() > max(4*cc.srv.cfg.BodyHighWater, dialHoldFloor) {
			cc.fail(503, accesslog.ClientOverflow)
		}
		return false
	}
	buf := cc.inbound()
	if len(buf) == 0 {
		return false
	}
	n, done, err := ex.frameRequest(buf)
	if err != nil {
		cc.badRequestBody(err)
		return false
	}
	err = bc.out.write(buf[:n])
	cc.consume(n)
	ex.reqBodySent = true
	cc.deadline = cc.ls.now() + int64(cc.srv.cfg.IdleTimeout) // a body that stalls this long is dropped
	if err != nil {
		cc.srv.log.Debug("backend write failed", "backend", memberName(ex.member), "phase", "request body", "err", err)
		if ex.respFinal {
			cc.countUpstream(metrics.UpstreamReset)
			cc.abort()
		} else {
			cc.failUpstream(502, accesslog.BackendReset, metrics.UpstreamReset)
		}
		return false
	}
	cc.noteQueued(&bc.out)
	if done {
		ex.reqDone = true
		if ex.respPhase == respDone {
			cc.finishExchange()
			return true
		}
		if ex.respFinal {
			cc.state = stateStreamingResponse
		} else {
			cc.state = stateAwaitingResponse
			cc.deadline = cc.ls.now() + int64(cc.responseTimeout())
		}
		return true
	}
	return !cc.pastHighWater(&bc.out, false)
}

// badRequestBody ends an exchange whose request body broke its chunked framing. None of the
// offending bytes were relayed; the backend conn, which holds a partial body, is closed; the
// client gets 400 with the decoder's reason if no final answer went out yet.
func (cc *clientConn) badRequestBody(err error) {
	cc.srv.log.Debug("request body refused", "client", string(cc.ip), "phase", "request body", "err", err)
	cc.failResponse(rejectResponse(err), accesslog.ParseError, parseDetail(err))
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

// relayResponse advances the response side with the bytes bc has read.
func (cc *clientConn) relayResponse(bc *backendConn) {
	ls, s, ex := cc.ls, cc.srv, &cc.ex
	for {
		buf := bc.inbound()
		if len(buf) == 0 {
			return
		}
		if !ex.respStarted {
			ex.respStarted = true
			ex.releaseHead()
		}
		switch ex.respPhase {
		case respHead:
			resp := &ls.resp
			n, err := ex.respParser.ParseResponse(buf, resp, ex.isHEAD)
			if err == httpparse.ErrNeedMore {
				return
			}
			ex.respParser.Reset()
			if err != nil {
				s.backendWarn.warn(s.log, nanotime(), "bad response from backend", "backend", memberName(ex.member), "phase", "response head", "status", 502, "err", err)
				cc.failUpstream(502, accesslog.BadResponse, metrics.UpstreamBadResponse)
				return
			}
			if resp.Status == 101 {
				cc.switchProtocols(bc, resp, n)
				return
			}
			o := respHeadOpts{backendHost: ls.memberHost(ex.member), clientHost: ex.host, stripped: strippedPrefix(ex.route), https: cc.https()}
			if resp.Status < 200 {
				o.interim = true
				head := appendResponseHead(ls.scratch[:0], resp, &o)
				ls.scratch = head[:0]
				_, _ = bc.c.Discard(n)
				if err := cc.out.write(head); err != nil {
					cc.abort()
					return
				}
				cc.noteQueued(&cc.out)
				if cc.answersPastBound() {
					// Interim answers count against the same bound as everything queued toward
					// the client: a backend flooding them while the client does not read gets
					// its conn closed, the client a 502.
					s.backendWarn.warn(s.log, nanotime(), "backend flooded interim responses", "backend", memberName(ex.member), "phase", "response head", "status", 502, "queued", cc.out.pending())
					cc.failUpstream(502, accesslog.BadResponse, metrics.UpstreamBadResponse)
					return
				}
				continue
			}
			ex.startResponse(resp)
			ex.closeAfter = ex.closeAfter || s.draining.Load() // drain.go: Connection: close from now on
			cc.noteResponse(resp.Status)
			o.close = ex.closeAfter
			head := appendResponseHead(ls.scratch[:0], resp, &o)
			_, _ = bc.c.Discard(n)
			if cc.state == stateAwaitingResponse {
				cc.state = stateStreamingResponse
				cc.deadline = 0
			}
			if resp.Framing == httpparse.FramingNone || (resp.Framing == httpparse.FramingLength && resp.ContentLength == 0) {
				ex.respFinal = true
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
			bn, done, ok := ex.frameResponse(body)
			if !ok {
				// Broken chunked framing and nothing of this answer sent yet: still a clean 502.
				s.backendWarn.warn(s.log, nanotime(), "bad response from backend", "backend", memberName(ex.member), "phase", "response body", "status", 502)
				cc.failUpstream(502, accesslog.BadResponse, metrics.UpstreamBadResponse)
				return
			}
			ex.respFinal = true
			var werr error
			if len(head)+bn <= headScratchCap {
				head = append(head, body[:bn]...)
				werr = cc.out.write(head)
			} else if werr = cc.out.write(head); werr == nil {
				werr = cc.out.write(body[:bn])
			}
			ls.scratch = head[:0]
			_, _ = bc.c.Discard(bn)
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
			n, done, ok := ex.frameResponse(buf)
			if !ok {
				cc.countUpstream(metrics.UpstreamBadResponse)
				cc.abort()
				return
			}
			err := cc.out.write(buf[:n])
			_, _ = bc.c.Discard(n)
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

func (cc *clientConn) respComplete() {
	cc.ex.respPhase = respDone
	if cc.ex.reqDone || cc.ex.closeAfter {
		cc.finishExchange()
	}
}

// finishExchange returns the backend to the pool (or closes it) and readies the client for the
// next request, or closes it.
func (cc *clientConn) finishExchange() {
	ex := &cc.ex
	cc.endRequest(ex.obs.status, accesslog.Relayed, "", 0)
	if bc := ex.bc; bc != nil {
		ex.bc = nil
		bc.cc = nil
		if ex.poolable(bc) {
			cc.ls.putIdle(bc)
		} else {
			bc.close()
		}
	}
	ex.releaseHead()
	cc.releaseMember()
	if !ex.reqDone {
		ex.closeAfter = true
	}
	if ex.closeAfter || (cc.srv.draining.Load() && cc.inboundLen() == 0) {
		// Draining (drain.go): the conn ends at this boundary; a request the client pipelined
		// behind this one is served first, with Connection: close.
		cc.startClosing()
		return
	}
	cc.state = stateReadingHead
	cc.headStarted = false
	if ex.route != nil {
		cc.headTimeout = ex.route.HeaderTimeout // a route's header timeout applies to the next head
	}
	cc.deadline = cc.ls.now() + int64(cc.srv.cfg.IdleTimeout)
	if cc.srv.pass.active.Load() && cc.pass() {
		return // a binary upgrade took the conn at this boundary (pass.go)
	}
	cc.process() // pipelined requests already here (a no-op when called from inside process)
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
		paused := cc.state == stateReadingHead && cc.answersPastBound()
		if err := cc.out.flush(); err != nil {
			cc.abort()
			return false
		}
		if cc.out.pending() > 0 {
			left = true
		} else if cc.state == stateClosing {
			cc.halfClose()
		}
		if paused && !cc.answersPastBound() {
			cc.process() // the client reads again: parse what it pipelined meanwhile
			if cc.state == stateClosed || cc.state == stateOffloaded {
				return false
			}
			left = cc.out.pending() > 0
		}
	}
	if bc := cc.ex.bc; bc != nil && bc.out.pending() > 0 {
		if err := bc.out.flush(); err != nil {
			bc.close()
			return left
		}
		left = left || bc.out.pending() > 0
	}
	return left
}
