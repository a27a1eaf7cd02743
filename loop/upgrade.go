package loop

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
)

// WebSocket upgrades. An upgrade request leaves gnet as soon as its head is parsed, checked and
// routed: the client socket goes to the tunnel plane once (dup, gnet's copy closed), with the
// rewritten head and an upgradeJudge; the plane dials the exchange's member itself (non-blocking
// connect on its own loop, from the member's next source address, no goroutine and no thread per
// dial), sends the head, and hands the answer to the judge, which runs on the plane's loop
// thread and reads it with httpparse. The plane knows nothing of HTTP; the judge knows nothing
// of sockets.
//
// Invariant: a connection becomes a tunnel only after a 101 whose Upgrade, Connection and
// Sec-WebSocket-Accept match the client's request. Until then nothing the client sent behind its
// head reaches the backend (the plane does not even read the client's socket; the bytes gnet had
// already read go as Upgrade.Pending, written only after the switch), and nothing is ever parsed
// from it. Any other final answer is relayed with Connection: close and its body, then both
// connections close; a 101 that fails the check is 502.
//
// The member's count (routes.go): the exchange's Request count passes to the judge at the
// hand-off; upgradeDone turns it into a Tunnel count on a switch (released by the tunnel's
// OnClose, one closure per member and loop) and releases it otherwise, and feeds the connect's
// outcome to the member's passive health.

// upgradeState is the server's part of the upgrade path.
type upgradeState struct {
	onResult func(splice.UpgradeResult) // s.upgradeDone, bound once so an upgrade allocates no closure
	judges   *judgeSlab
	results  [nUpgradeResults]atomic.Int64

	// names holds the addresses of members written as host names (route.Dialer.AddrPort is
	// invalid for them): the plane dials an address, not a name. Resolved when a table is
	// started or set, and again, off the loops, after a failed dial to that member.
	names     atomic.Pointer[map[string]netip.AddrPort]
	namesMu   sync.Mutex
	resolving map[string]bool
}

// Upgrade results, the label set of issue 11's wsgate_websocket_upgrades_total{result}.
type upgradeResult uint8

const (
	resultOK            upgradeResult = iota // a verified 101: a tunnel
	resultRefused                            // the backend answered something else, relayed
	resultBadAccept                          // a 101 that failed verification: 502
	resultUpstreamError                      // dial refused or timed out, no or a malformed answer: 502/503/504
	resultClientGone                         // the client left before the answer
	nUpgradeResults
)

var upgradeResultNames = [nUpgradeResults]string{"ok", "refused", "bad_accept", "upstream_error", "client_gone"}

func (r upgradeResult) String() string { return upgradeResultNames[r] }

// UpgradeStats counts decided upgrades by result since Start.
type UpgradeStats struct {
	OK, Refused, BadAccept, UpstreamError, ClientGone int64
}

// UpgradeStats returns the upgrade counters.
func (s *Server) UpgradeStats() UpgradeStats {
	r := &s.up.results
	return UpgradeStats{OK: r[resultOK].Load(), Refused: r[resultRefused].Load(), BadAccept: r[resultBadAccept].Load(),
		UpstreamError: r[resultUpstreamError].Load(), ClientGone: r[resultClientGone].Load()}
}

// upgradePlaneConfig gives the tunnel plane the server's upgrade timeouts (its defaults for
// Plane.Upgrade, and they set its timer wheel's tick).
func upgradePlaneConfig(cfg *Config) {
	cfg.Tunnel.DialTimeout = cfg.DialTimeout
	cfg.Tunnel.ResponseTimeout = cfg.ResponseTimeout
}

// initUpgrades prepares the upgrade path for the table Start serves.
func (s *Server) initUpgrades() error {
	s.up.onResult = s.upgradeDone
	s.up.judges = newJudgeSlab()
	s.up.names.Store(&map[string]netip.AddrPort{})
	s.resolveNames(s.routes.Load())
	return nil
}

// resolveNames resolves the members of t written as host names (each with the dial timeout) and
// adds them to the names the plane dials. A name that does not
// resolve is logged; its upgrades get 502 and try again in the background.
func (s *Server) resolveNames(t *route.Table) {
	if t == nil {
		return
	}
	for _, r := range t.Routes() {
		for _, m := range r.Pool.Members() {
			if d := r.Pool.Dialer(m); d == nil || d.AddrPort().IsValid() {
				continue
			}
			if _, ok := (*s.up.names.Load())[m.Addr()]; ok {
				continue
			}
			if err := s.resolveName(m.Addr()); err != nil {
				s.log.Warn("backend name does not resolve: its WebSocket upgrades get 502 until it does", "backend", m.Addr(), "phase", "resolve", "err", err)
			}
		}
	}
}

// resolveName looks addr ("host:port") up and stores its first address.
func (s *Server) resolveName(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	as, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return err
	}
	if len(as) == 0 {
		return &net.DNSError{Err: "no address", Name: host, IsNotFound: true}
	}
	// One address is kept (the goroutine dialer tries them all): the first IPv4 one if there is
	// one, as a backend behind a name usually listens on IPv4 (localhost may list ::1 first).
	a := as[0].Unmap()
	for _, x := range as {
		if x.Unmap().Is4() {
			a = x.Unmap()
			break
		}
	}
	s.up.namesMu.Lock()
	defer s.up.namesMu.Unlock()
	next := make(map[string]netip.AddrPort, len(*s.up.names.Load())+1)
	for k, v := range *s.up.names.Load() {
		next[k] = v
	}
	next[addr] = netip.AddrPortFrom(a, uint16(p))
	s.up.names.Store(&next)
	return nil
}

// resolveLater resolves addr again on a goroutine of its own (one per name at a time): the name
// did not resolve, or a dial to its address failed (the backend may have moved).
func (s *Server) resolveLater(addr string) {
	s.up.namesMu.Lock()
	if s.up.resolving == nil {
		s.up.resolving = map[string]bool{}
	}
	if s.up.resolving[addr] {
		s.up.namesMu.Unlock()
		return
	}
	s.up.resolving[addr] = true
	s.up.namesMu.Unlock()
	go func() {
		err := s.resolveName(addr)
		s.up.namesMu.Lock()
		delete(s.up.resolving, addr)
		s.up.namesMu.Unlock()
		if err != nil {
			s.log.Debug("backend name does not resolve", "backend", addr, "phase", "resolve", "err", err)
		}
	}()
}

// upgradeTarget is the address the plane dials for m: the member's own when it is an IP
// literal, else the resolved name (invalid when it has not resolved).
func (s *Server) upgradeTarget(d *route.Dialer, m *route.Member) netip.AddrPort {
	if ap := d.AddrPort(); ap.IsValid() {
		return ap
	}
	return (*s.up.names.Load())[m.Addr()]
}

// startUpgrade hands an upgrade request whose head is parsed, checked, routed and rewritten
// (ex.fwd) to the tunnel plane, with the exchange's member (counted: takeMember). The client
// socket leaves gnet here; what gnet already read behind the head goes along as pending bytes for
// the backend (sent only after a verified 101).
func (cc *clientConn) startUpgrade() {
	s, ex := cc.srv, &cc.ex
	r, m := ex.route, ex.member
	if cc.c == nil {
		// The client half-closed right behind its upgrade request: it could never send a frame,
		// and a client that half-closed is not owed a tunnel (halfclose.go).
		cc.fail(502, accesslog.TunnelFailed)
		return
	}
	d := r.Pool.Dialer(m)
	target := s.upgradeTarget(d, m)
	if !target.IsValid() {
		s.resolveLater(m.Addr())
		s.backendWarn.warn(s.log, nanotime(), "backend name not resolved", "route", routeLabel{r}, "backend", m.Addr(), "phase", "resolve", "status", 502)
		cc.failUpstream(502, accesslog.ConnectFailed, metrics.UpstreamUnreachable)
		return
	}
	cfd, err := cc.c.Dup()
	if err != nil {
		s.log.Warn("upgrade: dup of the client socket failed", "client", string(cc.ip), "phase", "upgrade", "err", err)
		cc.fail(503, accesslog.Overloaded)
		return
	}
	j := s.getJudge(ex.wsKey, ex.host)
	j.route, j.member = r, m
	j.backendHost, j.stripped = cc.ls.memberHost(m), strippedPrefix(r)
	j.https = cc.https()
	src := d.NextSource()
	j.source = src
	cc.upgradeObs(j)
	err = s.plane.Upgrade(splice.Upgrade{
		ClientFD:        cfd,
		Backend:         target,
		Source:          src,
		Head:            ex.fwd.B,
		Pending:         cc.inbound(),
		Judge:           j,
		DialTimeout:     d.Timeout(),
		ResponseTimeout: cc.responseTimeout(),
		IdleTimeout:     tunnelIdle(r),
		OnResult:        s.up.onResult,
		OnClose:         cc.tunnelOnClose(m),
		Route:           ex.obs.route,
		ToClient:        cc.out.bytes(),  // the end of an earlier answer still queued: it goes first
		ClientTLS:       cc.handOffTLS(), // WSS: the plane seals its answers and the tunnel (tlswire.go)
	})
	if err != nil {
		// The plane closed cfd and will not call OnResult; gnet's copy is still ours to answer
		// on, and the exchange still holds the member's count (fail releases it).
		s.putJudge(j)
		s.log.Warn("upgrade refused by the tunnel plane", "route", routeLabel{r}, "backend", m.Addr(), "phase", "upgrade", "err", err)
		cc.fail(503, accesslog.TunnelFailed)
		return
	}
	ex.holding = false // the member's Request count is the judge's now (upgradeDone)
	cc.handedOff()     // its count and line too: upgradeDone writes them
	// gnet's copy goes now, synchronously: gnet never reads or writes this socket again (its
	// outbound buffer is empty, our outq is the only write path), and OnClose sees c != cc.c.
	oc := cc.c
	cc.c = nil
	cc.ls.loop.closeConn(oc)
	cc.teardown()
}

// tunnelClose is the tunnel OnClose for m on this loop: it gives back the Tunnel count a switch
// took. One closure per member and loop, made once, so a tunnel costs no allocation for it.
func (ls *loopState) tunnelClose(m *route.Member) func(splice.TunnelResult) {
	id := m.ID()
	if id >= len(ls.onTunnelClose) {
		ls.onTunnelClose = append(ls.onTunnelClose, make([]func(splice.TunnelResult), id+1-len(ls.onTunnelClose))...)
	}
	f := ls.onTunnelClose[id]
	if f == nil {
		f = func(splice.TunnelResult) { m.Release(route.Tunnel) }
		ls.onTunnelClose[id] = f
	}
	return f
}

// upgradeDone runs on a tunnel-plane loop when an upgrade is decided; it is the plane's last use
// of the judge. The member's count and passive health are settled here; metrics and access-log
// lines (issue 11) hook in here too.
func (s *Server) upgradeDone(r splice.UpgradeResult) {
	j := r.Judge.(*upgradeJudge)
	m := j.member
	res := j.result
	switch r.Outcome {
	case splice.UpgradeSwitched:
		res = resultOK
		m.Upgraded() // the Request count becomes a Tunnel count, released by the tunnel's OnClose
		s.tunnelsTotal.Add(1)
	case splice.UpgradeRefused:
		res = resultRefused
	case splice.UpgradeClientGone, splice.UpgradeClosed:
		res = resultClientGone
	case splice.UpgradeRejected:
		// the judge said why (bad_accept or upstream_error)
	default:
		res = resultUpstreamError
	}
	if r.Outcome != splice.UpgradeSwitched {
		m.Release(route.Request)
	}
	// Passive health: a connect that completed is a success, a refused or timed-out one a
	// failure; the fd budget's refusal and the plane's own shutdown are not the backend's doing.
	switch {
	case r.Connected:
		s.reportDialSuccess(m)
	case r.Outcome == splice.UpgradeDialFailed || r.Outcome == splice.UpgradeDialTimeout:
		s.reportDialFailure(m, &route.DialError{Addr: m.Addr(), Source: j.source, Err: r.Err}, nanotime())
		if !j.route.Pool.Dialer(m).AddrPort().IsValid() {
			s.resolveLater(m.Addr()) // a name: the backend may have moved
		}
	}
	s.up.results[res].Add(1)
	s.upgradeObsDone(r, j, res)
	if res == resultUpstreamError || res == resultBadAccept {
		phase := "response head"
		switch r.Outcome {
		case splice.UpgradeDialFailed, splice.UpgradeDialTimeout, splice.UpgradeNoFD:
			phase = "dial"
		}
		if res == resultBadAccept {
			phase = "upgrade"
		}
		s.backendWarn.warn(s.log, nanotime(), "backend upgrade failed", "route", routeLabel{j.route}, "backend", m.Addr(), "phase", phase,
			"result", res.String(), "status", r.Status, "err", r.Err)
	}
	s.putJudge(j)
}

// upgradeJudge is one upgrade's part of the handshake: the client's key and Host. It runs on a
// plane loop's thread; everything large (the parsed answer's header table, the head it writes)
// lives in that loop's Scratch, so judging allocates nothing.
type upgradeJudge struct {
	srv         *Server
	obs         upgradeObs // the exchange's count and log line, finished by upgradeDone (observe.go)
	route       *route.Route
	member      *route.Member
	source      netip.Addr // the source address the plane dialled from (invalid: the kernel's)
	backendHost []byte     // the member's address as Location values name it (loopState.memberHost: read-only)
	stripped    string     // the route's stripped prefix, put back into Location values
	key         [24]byte   // Sec-WebSocket-Key (httpparse.CheckWebSocketRequest: exactly 24 bytes)
	host        []byte     // the Host the client used, for Location rewrites in a refusal: hostBuf or its own array
	hostBuf     [96]byte
	chunk       httpparse.ChunkedDecoder
	result      upgradeResult // what Judge decided, for a rejection's result label
	slab        bool          // one of judgeSlab's, returned to it when done
	https       bool          // the client came over TLS: Locations rewritten to https://
}

// judgeSlab holds the judges of the upgrades in flight, allocated once per server: a steady
// stream of upgrades allocates none, a storm's surplus (more than judgeSlabSize in flight) is
// allocated and becomes garbage. One contiguous allocation, not a pool of heap objects, for the
// reason splice's hsSlab gives: pooled survivors of a storm pin the storm's spans.
type judgeSlab struct {
	free   chan *upgradeJudge
	judges [judgeSlabSize]upgradeJudge
}

const judgeSlabSize = 64

func newJudgeSlab() *judgeSlab {
	s := &judgeSlab{free: make(chan *upgradeJudge, judgeSlabSize)}
	for i := range s.judges {
		s.judges[i].slab = true
		s.free <- &s.judges[i]
	}
	return s
}

func (s *Server) getJudge(key, host []byte) *upgradeJudge {
	var j *upgradeJudge
	select {
	case j = <-s.up.judges.free:
	default:
		j = new(upgradeJudge)
	}
	j.srv = s
	copy(j.key[:], key) // 24 bytes: checked by httpparse.CheckWebSocketRequest
	if len(host) <= len(j.hostBuf) {
		j.host = j.hostBuf[:copy(j.hostBuf[:], host)]
	} else {
		j.host = append([]byte(nil), host...)
	}
	j.chunk.Reset()
	j.result = resultOK
	return j
}

func (s *Server) putJudge(j *upgradeJudge) {
	if !j.slab {
		return
	}
	j.srv, j.host, j.route, j.member, j.backendHost = nil, nil, nil, nil, nil
	s.up.judges.free <- j // never blocks: only the slab's own judges come back
}

// judgeScratch is a plane loop's scratch for judging: one Response (its 256-entry header table is
// why it is per loop, not per upgrade) and the buffer rewritten heads are built in.
type judgeScratch struct {
	resp httpparse.Response
	head []byte
}

func scratchOf(s *splice.Scratch) *judgeScratch {
	js, _ := s.Value.(*judgeScratch)
	if js == nil {
		js = &judgeScratch{head: make([]byte, 0, 4096)}
		s.Value = js
	}
	return js
}

// Judge reads the backend's answer so far. A head that is not complete yet needs more; a
// malformed one is 502. A 101 is checked (Upgrade: websocket, Connection: upgrade, the accept
// value of the client's key) and switches with the rebuilt head, or is 502. Other 1xx are
// relayed; any other final answer is a refusal, relayed with Connection: close and its body.
func (j *upgradeJudge) Judge(s *splice.Scratch, ans []byte) splice.Verdict {
	js := scratchOf(s)
	resp := &js.resp
	p := httpparse.Parser{Limits: respLimits}
	n, err := p.ParseResponse(ans, resp, false)
	if err == httpparse.ErrNeedMore {
		return splice.Verdict{Action: splice.NeedMore}
	}
	if err != nil {
		j.result = resultUpstreamError
		j.obs.answer(len(errorResponse(502)))
		return splice.Verdict{Action: splice.Reject, ToClient: errorResponse(502), Status: 502}
	}
	o := respHeadOpts{backendHost: j.backendHost, clientHost: j.host, stripped: j.stripped, https: j.https}
	switch {
	case resp.Status == 101:
		if !resp.HasToken("Upgrade", "websocket") || !resp.HasToken("Connection", "upgrade") ||
			!httpparse.VerifyAccept(j.key[:], resp.Header("Sec-WebSocket-Accept")) {
			j.result = resultBadAccept
			j.obs.answer(len(errorResponse(502)))
			return splice.Verdict{Action: splice.Reject, ToClient: errorResponse(502), Status: 502}
		}
		o.websocket = true
		js.head = appendResponseHead(js.head[:0], resp, &o)
		j.obs.answer(len(js.head))
		return splice.Verdict{Action: splice.Switch, Consumed: n, ToClient: js.head, Status: 101}
	case resp.Status < 200:
		o.interim = true
		js.head = appendResponseHead(js.head[:0], resp, &o)
		j.obs.answer(len(js.head))
		return splice.Verdict{Action: splice.Interim, Consumed: n, ToClient: js.head, Status: resp.Status}
	}
	o.close = true
	js.head = appendResponseHead(js.head[:0], resp, &o)
	v := splice.Verdict{Action: splice.Refuse, Consumed: n, ToClient: js.head, Status: resp.Status}
	j.obs.answer(len(js.head))
	switch resp.Framing {
	case httpparse.FramingLength:
		v.Body = resp.ContentLength
		j.obs.answer(int(resp.ContentLength)) // relayed by the plane: counted as declared
	case httpparse.FramingChunked:
		j.chunk.Reset()
		v.Body, v.Framer = splice.BodyChunked, &j.chunk
	case httpparse.FramingUntilClose:
		v.Body = splice.BodyUntilClose
	}
	return v
}

// Failed is the answer when the plane ends the handshake itself.
func (j *upgradeJudge) Failed(_ *splice.Scratch, why splice.UpgradeOutcome) ([]byte, int) {
	j.result = resultUpstreamError
	status := 502
	switch why {
	case splice.UpgradeDialTimeout, splice.UpgradeResponseTimeout:
		status = 504
	case splice.UpgradeNoFD:
		status = 503
	}
	j.obs.answer(len(errorResponse(status)))
	return errorResponse(status), status
}

// switchProtocols handles a 101 that reaches the HTTP plane: upgrades leave gnet before their
// head is sent, so this answers a plain request, and nothing but a verified WebSocket switch is
// tunnelled: 502.
func (cc *clientConn) switchProtocols(bc *backendConn, resp *httpparse.Response, n int) {
	s := cc.srv
	s.backendWarn.warn(s.log, nanotime(), "backend switched protocols on a plain request", "route", routeLabel{cc.ex.route}, "backend", memberName(cc.ex.member), "phase", "response head", "status", 502)
	cc.failUpstream(502, accesslog.BadResponse, metrics.UpstreamBadResponse)
}
