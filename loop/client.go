package loop

import (
	"net/netip"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/route"
)

// The client connection: reading request heads and starting exchanges.
//
// Invariant: one exchange is in flight per client connection, and the client's bytes are parsed
// only in stateReadingHead, and only while the answers queued toward it are under the memory
// bound. Everything else that arrives meanwhile (pipelined requests) stays in gnet's inbound
// buffer or in held, untouched, under a cap, so answers leave in request order and a client that
// does not read cannot make wsgate queue without bound. An upgrade request leaves gnet as soon as
// its head is checked (upgrade.go): nothing sent behind it is ever read as a request.

// state is where a client connection is in its exchange. The request side drives it; the
// response side's progress is exchange.respPhase, because a backend may answer before the body
// is in.
type state uint8

const (
	stateReadingHead       state = iota // waiting for / parsing a request head
	stateForwardingBody                 // request body bytes go to the backend as they arrive
	stateAwaitingResponse               // request sent; client bytes are the next pipelined request
	stateStreamingResponse              // final response head forwarded, body streaming
	stateOffloaded                      // a body is in the tunnel plane; gnet holds neither fd
	stateClosing                        // answer queued, then shutdown(SHUT_WR) and a short linger
	stateClosed
)

// Caps on bytes we must hold because gnet cannot stop reading.
const (
	pipelineHoldCap = 1 << 20  // pipelined requests behind the one in flight
	dialHoldFloor   = 8 << 20  // request body bytes held while the backend conn is being dialled
	headScratchCap  = 32 << 10 // a response head and the body bytes behind it go out in one write up to this
)

// clientConn is one client connection's state machine. It lives in the gnet conn's context and,
// across an offload, in the context of the re-enrolled conn.
type clientConn struct {
	srv *Server
	ls  *loopState
	c   wire // nil while offloaded or after close
	out outq
	ip  []byte

	clientHash  uint64        // route.HashClient(ip), for client-hash pools
	headTimeout time.Duration // for the next head: the global value, or the last exchange's route's

	state       state
	parser      httpparse.Parser
	headStarted bool
	deadline    int64 // nanotime; what it means depends on state
	unsent      int   // the socket's unacknowledged bytes at the last timer expiry (kernelDraining)
	peerEOF     bool  // the client half-closed; out.fd is our dup of its socket (halfclose.go)
	busy        bool  // process() is on the stack: nested calls just let it loop
	held        *bytebufferpool.ByteBuffer
	heldOff     int
	tls         *tlsConn // TLS listener: the handshake, then the session (tlswire.go); nil for plain HTTP

	gen uint32   // exchange generation: a dial result for an older exchange is ignored
	ex  exchange // the exchange in flight; a new one starts from a zero value

	addr     netip.AddrPort // the client's address, for the access log
	headAt   int64          // nanotime of the current head's first byte
	tunneled bool           // handed to the tunnel plane: counted out of the HTTP plane already
}

func newClientConn(ls *loopState, c wire, ip []byte) *clientConn {
	s := ls.srv
	cc := &clientConn{srv: s, ls: ls, c: c, out: outq{fd: c.Fd(), acct: &s.queuedBytes}, ip: ip,
		clientHash: route.HashClient(ip), headTimeout: time.Duration(s.headerTimeout.Load())}
	lim := httpparse.DefaultLimits()
	lim.MaxHeadBytes = s.cfg.MaxHeadBytes
	cc.parser.Limits = lim
	cc.deadline = ls.now() + int64(cc.headTimeout)
	ls.clients[cc] = struct{}{}
	return cc
}

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
	cc.ex.obs.in += int64(n)
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

// holdInbound moves the bytes gnet has buffered for this client into held, so they survive the
// close of gnet's copy of the socket (offload, half-close).
func (cc *clientConn) holdInbound() {
	if cc.c == nil || cc.c.InboundBuffered() == 0 {
		return
	}
	if cc.held == nil {
		cc.held = bytebufferpool.Get()
	}
	b, _ := cc.c.Next(-1)
	cc.held.B = append(cc.held.B, b...)
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
			if cc.answersPastBound() {
				// The answers already queued for this client passed the bound: parse nothing
				// more until it reads them (flushQueues resumes us), or each small pipelined
				// request would queue one more answer without limit. What it sends meanwhile
				// waits unparsed, under the pipeline cap; a client that never reads meets the
				// write-stall rule.
				if cc.inboundLen() > pipelineHoldCap {
					cc.abort()
				}
				return
			}
			if cc.inputEnded() && cc.inboundLen() == 0 {
				cc.startClosing() // a half-closed client sent nothing more: drain, then close
				return
			}
			more = cc.readHead()
		case stateForwardingBody:
			more = cc.forwardBody()
		case stateAwaitingResponse, stateStreamingResponse:
			if cc.inboundLen() > pipelineHoldCap {
				cc.abort()
			}
		case stateClosing:
			cc.discardInbound()
		}
		if !more {
			return
		}
	}
}

// answersPastBound: bytes queued toward the client exceed the memory bound (BodyHighWater).
func (cc *clientConn) answersPastBound() bool {
	return cc.out.pending() > cc.srv.cfg.BodyHighWater
}

func (cc *clientConn) readHead() bool {
	buf := cc.inbound()
	if len(buf) == 0 {
		return false
	}
	s := cc.srv
	if !cc.headStarted {
		cc.headStarted = true
		cc.headAt = cc.ls.now()
		cc.deadline = cc.headAt + int64(cc.headTimeout)
	}
	req := &cc.ls.req
	n, err := cc.parser.ParseRequest(buf, req)
	if err == httpparse.ErrNeedMore {
		if cc.inputEnded() {
			cc.parser.Reset()
			cc.startClosing() // a head cut by the client's EOF can never complete
		}
		return false
	}
	cc.parser.Reset()
	if err == nil {
		err = checkFieldNames(req, s.cfg.HeaderNames)
	}
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
			cc.failResponse(errorResponse(400), accesslog.ParseError, "WebSocket upgrade request with a body")
			return false
		}
		upgrade = true
	}
	// The route: host and longest prefix (docs/routing.md). Nothing of a request without one, or
	// of an upgrade its route refuses, reaches a backend.
	r := s.routes.Load().Match(requestHost(req), req.Path)
	if r == nil {
		return cc.answerLocal(req, n, upgrade, 404, nil)
	}
	if upgrade && !r.WebSocket {
		return cc.answerLocal(req, n, upgrade, 403, r)
	}
	m := r.Pool.Pick(routeNow(cc.ls.now()), cc.clientHash, nil)
	cc.beginExchange(req, upgrade, r, m)
	cc.consume(n)
	if m == nil {
		cc.noMember() // every member is out: 502 now rather than a dial that must fail
		return false
	}
	s.requests.Add(1)
	cc.takeMember(m)
	if upgrade {
		cc.startUpgrade() // the client leaves gnet; the tunnel plane dials the member (upgrade.go)
		return false
	}
	cc.connect()
	return cc.state != stateClosing && cc.state != stateClosed
}

// beginExchange starts the exchange for req on route r and member m (nil: none is usable, the
// head is not built) from a zero value; only the buffers whose capacity is worth keeping (host,
// wsKey) carry over.
func (cc *clientConn) beginExchange(req *httpparse.Request, upgrade bool, r *route.Route, m *route.Member) {
	s := cc.srv
	cc.releaseMember() // the previous exchange released it already; never carry a count over
	cc.gen++
	host := append(cc.ex.host[:0], requestHost(req)...)
	wsKey := cc.ex.wsKey[:0]
	if upgrade {
		wsKey = append(wsKey, req.Header("Sec-WebSocket-Key")...)
	}
	cc.ex = exchange{
		isHEAD:       string(req.Method) == "HEAD", // methods are case-sensitive (RFC 9110 9.1): "head" has a body
		idempotent:   isIdempotent(req.Method),
		closeAfter:   !req.KeepAlive || s.draining.Load(), // drain.go: Connection: close
		upgrade:      upgrade,
		reqFraming:   req.Framing,
		reqLeft:      req.ContentLength,
		reqDone:      req.Framing == httpparse.FramingNone || (req.Framing == httpparse.FramingLength && req.ContentLength == 0),
		reqKeepAlive: req.Minor == 1, // the client's Connection field is never forwarded
		host:         host,
		wsKey:        wsKey,
		respParser:   httpparse.Parser{Limits: respLimits},
		route:        r,
		member:       m,
		hostAt:       -1,
		obs:          cc.beginObs(req, r),
	}
	ex := &cc.ex
	if m != nil {
		ex.fwd = bytebufferpool.Get()
		o := reqHeadOpts{backendHost: cc.ls.memberHost(m), clientIP: cc.ip, preserveHost: r.PreserveHost,
			forwarded: s.cfg.Forwarded, websocket: upgrade, route: r, https: cc.https()}
		ex.fwd.B = appendRequestHead(ex.fwd.B[:0], req, &o)
		ex.hostAt = o.backendHostAt
	}
	cc.deadline = 0
	switch {
	case ex.reqDone: // an upgrade too: it leaves gnet at once (startUpgrade)
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
