package loop

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
)

// Metrics and the access log (docs/observability.md).
//
// Invariant: every event is counted on the loop it happens on, into that loop's own shard and
// access-log writer (loopObs): no lock, no allocation, no label lookup per event. Routes and
// backends are small integers chosen when a route table is installed (registerTable: at Start
// and in SetRoutes); an exchange finds them by the *route.Route and *route.Member it already
// has, through slices indexed by Route.Index and Member.ID(), and their names only to write a log
// line, in slices nobody writes while loops read them. An exchange is counted and
// logged exactly once: by finishExchange, by the answer wsgate gives itself (failResponse), by
// the switch to a tunnel, or by teardown when the client leaves or is reset mid-exchange.

// serverObs is the Server's part: the registry, the log and the names behind the indices.
type serverObs struct {
	reg  *metrics.Registry // cfg.Metrics; nil: metrics off (shards are nil and ignore every call)
	alog *accesslog.Log    // cfg.AccessLog; nil: no access log

	// names hands out route and backend indices: the metrics registry itself, or, with metrics
	// off, a private one that is never scraped, so that indices mean the same either way.
	names    *metrics.Registry
	namesMu  sync.Mutex
	routes   atomic.Pointer[[]string] // route names by index; replaced, never written in place
	backends atomic.Pointer[[]string] // backend addresses by index

	// tables maps the routes of the table in use to their indices; members maps member IDs
	// (dense across a table and the tables built from it) to theirs. Both are replaced whole.
	tables  atomic.Pointer[tableIndex]
	members atomic.Pointer[[]memberIndex]
	tableMu sync.Mutex // one registerTable at a time

	// tunnelLogs and tunnelShards are one access-log writer and one metrics shard per tunnel
	// loop, for what the HTTP plane counts and logs from callbacks the tunnel plane runs on its
	// loops (an upgrade's result, a tunnel's close): each has that loop as its only producer.
	tunnelLogs   []*accesslog.Writer
	tunnelShards []*metrics.Shard
}

// tableIndex is one route table's routes as metrics indices, by Route.Index.
type tableIndex struct {
	table  *route.Table
	routes []int32
}

// memberIndex is the metrics index of the member that had this ID when it was registered.
type memberIndex struct {
	m   *route.Member
	idx int32
}

func (o *serverObs) init(cfg *Config, t *route.Table) {
	o.reg, o.alog = cfg.Metrics, cfg.AccessLog
	o.names = o.reg
	if o.names == nil {
		o.names = metrics.NewRegistry()
	}
	o.routes.Store(&[]string{metrics.NoRouteName})
	o.backends.Store(&[]string{})
	o.members.Store(&[]memberIndex{})
	o.registerTable(t)
}

// registerTable names t's routes ([HOST]/PREFIX) and members (their addresses) for the metrics
// and the log, at configuration time. A name keeps its index across tables, so a reload keeps
// the series of what it keeps.
func (o *serverObs) registerTable(t *route.Table) {
	if o.names == nil {
		return // never initialised (a unit test's Server)
	}
	o.tableMu.Lock()
	defer o.tableMu.Unlock()
	ti := &tableIndex{table: t, routes: make([]int32, len(t.Routes()))}
	for _, r := range t.Routes() {
		if r.Index < len(ti.routes) {
			ti.routes[r.Index] = int32(o.route(r.String()))
		}
	}
	ms := slices.Clone(*o.members.Load())
	for _, m := range t.Members() {
		if id := m.ID(); id >= 0 {
			if id >= len(ms) {
				ms = append(ms, make([]memberIndex, id+1-len(ms))...)
			}
			ms[id] = memberIndex{m, int32(o.backend(m.Addr()))}
		}
	}
	o.members.Store(&ms)
	o.tables.Store(ti)
}

// routeIndex is r's metrics index: metrics.NoRoute for none. A route of the table in use is
// found by its Index; one of a table replaced since the exchange matched it, by name (rare: only
// across a reload).
func (o *serverObs) routeIndex(r *route.Route) int {
	if r == nil {
		return metrics.NoRoute
	}
	if ti := o.tables.Load(); ti != nil {
		if rs := ti.table.Routes(); r.Index < len(rs) && rs[r.Index] == r {
			return int(ti.routes[r.Index])
		}
	}
	return o.route(r.String())
}

// backendIndex is m's metrics index, -1 for none (a shard ignores it).
func (o *serverObs) backendIndex(m *route.Member) int {
	if m == nil {
		return -1
	}
	if p := o.members.Load(); p != nil && uint(m.ID()) < uint(len(*p)) && (*p)[m.ID()].m == m {
		return int((*p)[m.ID()].idx)
	}
	return o.backend(m.Addr())
}

// route registers a route name (at configuration time) and returns its index. A serverObs that
// was never initialised (a Server built by a unit test without Start) names nothing.
func (o *serverObs) route(name string) int {
	if o.names == nil {
		return metrics.NoRoute
	}
	o.namesMu.Lock()
	defer o.namesMu.Unlock()
	return register(o.names.Route(name), name, &o.routes)
}

// backend registers a backend address and returns its index.
func (o *serverObs) backend(addr string) int {
	if o.names == nil {
		return -1
	}
	o.namesMu.Lock()
	defer o.namesMu.Unlock()
	return register(o.names.Backend(addr), addr, &o.backends)
}

func register(i int, name string, names *atomic.Pointer[[]string]) int {
	old := *names.Load()
	if i < len(old) {
		return i
	}
	grown := make([]string, i+1)
	copy(grown, old)
	grown[i] = name
	names.Store(&grown)
	return i
}

func nameOf(names *atomic.Pointer[[]string], i int) string {
	if p := names.Load(); p != nil && uint(i) < uint(len(*p)) {
		return (*p)[i]
	}
	return ""
}

func (o *serverObs) routeName(i int) string   { return nameOf(&o.routes, i) }
func (o *serverObs) backendName(i int) string { return nameOf(&o.backends, i) }

// start runs at Start once the plane exists: one log writer per tunnel loop, and the server's
// own counters as gauges.
func (s *Server) startObs() {
	o := &s.obs
	if o.alog != nil {
		o.tunnelLogs = make([]*accesslog.Writer, s.plane.Loops())
		for i := range o.tunnelLogs {
			o.tunnelLogs[i] = o.alog.NewWriter()
		}
	}
	if o.reg != nil {
		o.tunnelShards = make([]*metrics.Shard, s.plane.Loops())
		for i := range o.tunnelShards {
			o.tunnelShards[i] = o.reg.NewShard()
		}
	}
	o.reg.SetServerStats(func() metrics.ServerStats {
		st := s.Stats()
		return metrics.ServerStats{FDsUsed: st.FDsUsed, FDsLimit: st.FDsLimit, EngineRestarts: st.EngineRestarts,
			QueuedBytes: st.QueuedBytes, BackendIdle: st.BackendIdle, Retries: st.Retries}
	})
}

// loopObs is one event loop's part, touched only on that loop.
type loopObs struct {
	m   *metrics.Shard
	log *accesslog.Writer
	rec accesslog.Request // the line being written; reused

	// The wall clock of log lines, derived from the monotonic nanotime the loop reads anyway:
	// wallAt was the time at monoAt; the sweep refreshes the pair, so a stepped clock shows in
	// the log within a sweep interval, and a line costs no clock read.
	wallAt time.Time
	monoAt int64
}

func (ls *loopState) initObs() {
	o := &ls.srv.obs
	ls.m = o.reg.NewShard()
	ls.log = o.alog.NewWriter()
	ls.syncWall()
}

func (ls *loopState) syncWall() { ls.wallAt, ls.monoAt = time.Now(), nanotime() }

func (ls *loopState) wall(ns int64) time.Time { return ls.wallAt.Add(time.Duration(ns - ls.monoAt)) }

// exchangeObs is what an exchange keeps for its count and its log line. Its backend is the
// exchange's member when the line is written (a retry may have moved it).
type exchangeObs struct {
	open           bool   // begun and not yet counted
	status         int    // final status sent to the client (0: none yet)
	start          int64  // nanotime of the head's first byte
	in             int64  // bytes received from the client for this exchange
	out            int64  // bytes a transfer moved to the client (the outq counts the rest)
	outAt          uint64 // the client outq's wrote count when the exchange began
	connect        int64  // ns to connect a fresh backend conn for it; 0 for a pooled one
	route          int    // metrics index of its route (metrics.NoRoute: none matched)
	method, target []byte // copies, only while the access log is on; capacity carries over
}

// beginObs starts the record of the exchange for req on route r (nil: none matched); the caller
// stores it in the new exchange.
func (cc *clientConn) beginObs(req *httpparse.Request, r *route.Route) exchangeObs {
	prev := &cc.ex.obs
	x := exchangeObs{open: true, start: cc.headAt, outAt: cc.out.wrote, method: prev.method[:0], target: prev.target[:0],
		route: cc.srv.obs.routeIndex(r)}
	if cc.ls.log != nil {
		x.method = append(x.method, req.Method...)
		x.target = append(x.target, req.Target...)
	}
	return x
}

// noteResponse records the final status relayed to the client; an upgrade answered with anything
// else than a switch was refused by the backend.
func (cc *clientConn) noteResponse(status int) {
	cc.ex.obs.status = status
	if cc.ex.upgrade {
		cc.ls.m.Upgrade(cc.ex.obs.route, metrics.UpgradeRefused)
	}
}

// noteTransfer adds the body bytes an offload moved to the exchange's counts.
func (cc *clientConn) noteTransfer(r splice.TransferResult) {
	if cc.ex.off.req {
		cc.ex.obs.in += r.Moved
	} else {
		cc.ex.obs.out += r.Moved
	}
}

// endRequest counts and logs the exchange in flight, once; answer is the size of an answer
// wsgate is about to queue itself. Before an exchange began (a head refused by the parser, a
// head that timed out) the line describes what the client sent: the request line as received,
// route "none".
func (cc *clientConn) endRequest(status int, why accesslog.Why, detail string, answer int) {
	ls, x := cc.ls, &cc.ex.obs
	now := ls.now()
	if !x.open {
		if cc.state != stateReadingHead || !cc.headStarted {
			return
		}
		d := time.Duration(now - cc.headAt)
		ls.m.Request(metrics.NoRoute, status, d)
		if ls.log != nil {
			buf := cc.inbound()
			method, target := requestLine(buf, cc.srv.cfg.MaxHeadBytes)
			ls.rec = accesslog.Request{Time: ls.wall(now), Client: cc.addr, Method: method, Target: target,
				Status: status, BytesIn: int64(len(buf)), BytesOut: int64(answer), Duration: d,
				Route: metrics.NoRouteName, Answered: why, Detail: detail}
			ls.log.Request(&ls.rec)
		}
		return
	}
	x.open = false
	d := time.Duration(now - x.start)
	ls.m.Request(x.route, status, d)
	if ls.log != nil {
		o := &cc.srv.obs
		ls.rec = accesslog.Request{Time: ls.wall(now), Client: cc.addr, Method: x.method, Target: x.target,
			Status: status, BytesIn: x.in, BytesOut: int64(cc.out.wrote-x.outAt) + x.out + int64(answer), Duration: d,
			Route: o.routeName(x.route), Backend: o.backendName(o.backendIndex(cc.ex.member)),
			Connect: time.Duration(x.connect), Answered: why, Detail: detail}
		ls.log.Request(&ls.rec)
	}
}

// failUpstream answers status because of the backend (why), counting the failure against the
// exchange's backend, and against the upgrade if the request was one.
func (cc *clientConn) failUpstream(status int, why accesslog.Why, r metrics.UpstreamReason) {
	cc.countUpstream(r)
	cc.fail(status, why)
}

// countUpstream counts a backend failure of the exchange in flight against its member (none:
// no backend to blame), and against the upgrade if the request was one.
func (cc *clientConn) countUpstream(r metrics.UpstreamReason) {
	ls := cc.ls
	ls.m.UpstreamError(cc.srv.obs.backendIndex(cc.ex.member), r)
	cc.countUpgradeError()
}

func (cc *clientConn) countUpgradeError() {
	if cc.ex.upgrade && !cc.ex.respFinal {
		cc.ls.m.Upgrade(cc.ex.obs.route, metrics.UpgradeUpstreamError)
	}
}

// countDialFailure counts a failed connect against the member it was for, whether or not the
// exchange goes on to another member; a refusal by our own fd budget is not the backend's.
func (cc *clientConn) countDialFailure(m *route.Member, err error) {
	if errors.Is(err, errFDBudget) {
		return
	}
	r := metrics.UpstreamUnreachable
	switch {
	case dialStatus(err) == 504:
		r = metrics.UpstreamTimeout
	case errors.Is(err, unix.ECONNREFUSED):
		r = metrics.UpstreamRefused
	}
	cc.ls.m.UpstreamError(cc.srv.obs.backendIndex(m), r)
}

// countClosedBeforeAnswer counts a fresh backend conn that closed before any response byte as a
// reset of its member, even when the request is then retried elsewhere; a pooled conn closed
// while idle is the keep-alive race every proxy retries, not a failure.
func (cc *clientConn) countClosedBeforeAnswer(bc *backendConn) {
	if !bc.reused {
		cc.ls.m.UpstreamError(cc.srv.obs.backendIndex(bc.member), metrics.UpstreamReset)
	}
}

// failDial answers the last failed backend dial of an exchange (countDialFailure counted it):
// 503 when the fd budget had no room (not the backend's fault), 504 on a timeout, 502 for a
// refusal or anything else.
func (cc *clientConn) failDial(status int, err error) {
	why := accesslog.ConnectFailed
	switch {
	case status == 503:
		cc.fail(503, accesslog.Overloaded)
		return
	case status == 504:
		why = accesslog.ConnectTimeout
	case errors.Is(err, unix.ECONNREFUSED):
		why = accesslog.ConnectRefused
	}
	cc.countUpgradeError()
	cc.fail(status, why)
}

// connected counts a fresh backend connection's connect time (runs in OnOpen, on the loop).
func (bc *backendConn) connected() {
	d := nanotime() - bc.dialAt
	bc.ls.m.UpstreamConnected(bc.ls.srv.obs.backendIndex(bc.member), time.Duration(d))
	if cc := bc.cc; cc != nil && cc.gen == bc.gen && cc.ex.dialing {
		cc.ex.obs.connect = d
	}
}

// statusOf reads the status of one of wsgate's canned answers ("HTTP/1.1 503 ...").
func statusOf(resp []byte) int {
	if len(resp) < 12 {
		return 0
	}
	return int(resp[9]-'0')*100 + int(resp[10]-'0')*10 + int(resp[11]-'0')
}

// requestLine returns the method and target of the request line at the start of buf as
// received, for the log line of a head the parser refused: the bytes up to the first space, and
// the bytes up to the next space or the end of the line (never past max bytes).
func requestLine(buf []byte, max int) (method, target []byte) {
	if len(buf) > max {
		buf = buf[:max]
	}
	for i, c := range buf {
		if c == '\n' {
			buf = buf[:i]
			break
		}
	}
	if n := len(buf); n > 0 && buf[n-1] == '\r' {
		buf = buf[:n-1]
	}
	for i, c := range buf {
		if c == ' ' {
			method, buf = buf[:i], buf[i+1:]
			for j, c := range buf {
				if c == ' ' {
					return method, buf[:j]
				}
			}
			return method, buf
		}
	}
	return buf, nil
}

// parseDetail is the parser's reason for a refused head, for the log line's detail field.
func parseDetail(err error) string {
	var pe *httpparse.Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// clientAddr is the client's address and port, read once at accept.
func clientAddr(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// rejected counts a client refused at accept and logs the answer it got.
func (ls *loopState) rejected(r metrics.RejectReason, addr netip.AddrPort, answer []byte) {
	ls.m.Rejected(r)
	if ls.log == nil {
		return
	}
	why := accesslog.Overloaded
	if r == metrics.RejectDraining {
		why = accesslog.Draining
	}
	now := ls.now()
	ls.rec = accesslog.Request{Time: ls.wall(now), Client: addr, Status: statusOf(answer), BytesOut: int64(len(answer)),
		Route: metrics.NoRouteName, Answered: why}
	ls.log.Request(&ls.rec)
}

// The tunnel's access-log line is written when it closes, on the tunnel loop, from what the
// HTTP loop knew at the switch. That record lives as long as the tunnel, so it is packed into one
// string held by the OnClose closure (32 bytes): the client's IP (16 bytes, IPv4 mapped), its port
// (2), whether it is valid and IPv4 (1), the route and backend indices (4 each), then the upgrade
// request's target. An idle tunnel with a 12-byte target carries 48 + 32 bytes for its line, and
// nothing when the access log is off.
const tunnelRecHead = 16 + 2 + 1 + 4 + 4

func packTunnelRec(addr netip.AddrPort, route, backend int, target []byte) string {
	b := make([]byte, tunnelRecHead, tunnelRecHead+len(target))
	ip := addr.Addr().As16()
	copy(b, ip[:])
	binary.BigEndian.PutUint16(b[16:], addr.Port())
	if addr.IsValid() {
		b[18] = 2
		if addr.Addr().Is4() {
			b[18] |= 1
		}
	}
	binary.BigEndian.PutUint32(b[19:], uint32(route))
	binary.BigEndian.PutUint32(b[23:], uint32(backend))
	return string(append(b, target...))
}

func unpackTunnelRec(rec string) (addr netip.AddrPort, route, backend int, target string) {
	if len(rec) < tunnelRecHead {
		return
	}
	var ip [16]byte
	copy(ip[:], rec)
	a := netip.AddrFrom16(ip)
	if rec[18]&1 != 0 {
		a = a.Unmap()
	}
	u32 := func(s string) int { return int(uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3])) }
	if rec[18]&2 != 0 {
		addr = netip.AddrPortFrom(a, uint16(rec[16])<<8|uint16(rec[17]))
	}
	return addr, u32(rec[19:]), u32(rec[23:]), rec[tunnelRecHead:]
}

// tunnelOnClose is the OnClose of the tunnel cc's upgrade may become: without an access log the
// loop's shared closure for m (it gives m's Tunnel count back); with one, a closure of this
// tunnel's own that also writes its line from its packed record.
func (cc *clientConn) tunnelOnClose(m *route.Member) func(splice.TunnelResult) {
	s := cc.srv
	if s.obs.tunnelLogs == nil {
		return cc.ls.tunnelClose(m)
	}
	rec := packTunnelRec(cc.addr, cc.ex.obs.route, s.obs.backendIndex(m), cc.ex.obs.target)
	return func(r splice.TunnelResult) {
		m.Release(route.Tunnel)
		s.tunnelClosed(r, rec)
	}
}

// upgradeObs is an upgrade's count and log line in the making, carried by its judge from the
// hand-off to the tunnel plane until upgradeDone, which runs on a tunnel loop.
type upgradeObs struct {
	client         netip.AddrPort
	start          int64 // nanotime of the head's first byte
	in, out        int64 // bytes from the client (the head); answer bytes the judge produced
	route          int
	method, target []byte // copies while the access log is on; the judge's, capacity kept
}

func (u *upgradeObs) answer(n int) { u.out += int64(max(n, 0)) }

// upgradeObs moves the exchange's record into the judge that takes the upgrade over.
func (cc *clientConn) upgradeObs(j *upgradeJudge) {
	x, u := &cc.ex.obs, &j.obs
	u.client, u.start, u.in, u.out, u.route = cc.addr, x.start, x.in, 0, x.route
	u.method = append(u.method[:0], x.method...)
	u.target = append(u.target[:0], x.target...)
}

// handedOff: the tunnel plane has the upgrade. Its count and line are upgradeDone's now, and the
// client stays in the HTTP plane's count until then (upgradeObsDone moves or removes it).
func (cc *clientConn) handedOff() {
	cc.ex.obs.open = false
	cc.tunneled = true
}

// upgradeObsDone counts a decided upgrade and writes its line, on the tunnel loop r.Loop with that
// loop's shard and writer (upgradeDone calls it).
func (s *Server) upgradeObsDone(r splice.UpgradeResult, j *upgradeJudge, res upgradeResult) {
	o := &s.obs
	sh := o.tunnelShard(r.Loop)
	u := &j.obs
	be := o.backendIndex(j.member)
	why := accesslog.Relayed
	switch res {
	case resultOK:
		sh.Upgrade(u.route, metrics.UpgradeOK)
	case resultRefused:
		sh.Upgrade(u.route, metrics.UpgradeRefused)
	case resultBadAccept:
		sh.Upgrade(u.route, metrics.UpgradeBadAccept)
		sh.UpstreamError(be, metrics.UpstreamBadResponse)
		why = accesslog.BadUpgrade
	case resultUpstreamError:
		sh.Upgrade(u.route, metrics.UpgradeUpstreamError)
		reason := metrics.UpstreamBadResponse
		why = accesslog.BadResponse
		switch r.Outcome {
		case splice.UpgradeDialFailed:
			reason, why = metrics.UpstreamUnreachable, accesslog.ConnectFailed
			if errors.Is(r.Err, unix.ECONNREFUSED) {
				reason, why = metrics.UpstreamRefused, accesslog.ConnectRefused
			}
		case splice.UpgradeDialTimeout:
			reason, why = metrics.UpstreamTimeout, accesslog.ConnectTimeout
		case splice.UpgradeResponseTimeout:
			reason, why = metrics.UpstreamResponseTimeout, accesslog.ResponseTimeout
		case splice.UpgradeBackendClosed:
			reason, why = metrics.UpstreamReset, accesslog.BackendReset
		case splice.UpgradeNoFD:
			reason, why = noUpstreamError, accesslog.Overloaded // our fd budget, not the backend
		}
		if reason != noUpstreamError {
			sh.UpstreamError(be, reason)
		}
	case resultClientGone:
		if r.Outcome == splice.UpgradeClosed {
			why = accesslog.Draining
		}
	}
	if r.Connected {
		sh.UpstreamConnected(be, r.Connect)
	}
	now := nanotime()
	d := time.Duration(now - u.start)
	sh.Request(u.route, r.Status, d)
	if r.Outcome == splice.UpgradeSwitched {
		sh.TunnelOpened(u.route)
	} else {
		sh.Closed()
	}
	if w := o.tunnelLog(r.Loop); w != nil {
		w.Request(&accesslog.Request{Time: time.Now(), Client: u.client, Method: u.method, Target: u.target,
			Status: r.Status, BytesIn: u.in, BytesOut: u.out, Duration: d, Route: o.routeName(u.route),
			Backend: o.backendName(be), Connect: r.Connect, Answered: why})
	}
}

// noUpstreamError marks an upgrade failure that is not the backend's (upgradeObsDone).
const noUpstreamError = metrics.UpstreamReason(255)

func (o *serverObs) tunnelShard(loop int) *metrics.Shard {
	if uint(loop) < uint(len(o.tunnelShards)) {
		return o.tunnelShards[loop]
	}
	return nil
}

func (o *serverObs) tunnelLog(loop int) *accesslog.Writer {
	if uint(loop) < uint(len(o.tunnelLogs)) {
		return o.tunnelLogs[loop]
	}
	return nil
}

// tunnelClosed writes a closed tunnel's line with the writer of the tunnel loop it runs on.
func (s *Server) tunnelClosed(r splice.TunnelResult, rec string) {
	o := &s.obs
	if uint(r.Loop) >= uint(len(o.tunnelLogs)) {
		return
	}
	addr, route, backend, target := unpackTunnelRec(rec)
	w := o.tunnelLogs[r.Loop]
	w.Tunnel(&accesslog.Tunnel{Time: time.Now(), Client: addr, Target: unsafeBytes(target),
		Route: o.routeName(route), Backend: o.backendName(backend), Duration: r.Duration,
		BytesUp: r.ClientToBackend, BytesDown: r.BackendToClient, Reason: r.Reason.String()})
}

// endObs runs in teardown: an exchange still open ends with the client (gone, or reset by us);
// a client still in the HTTP plane leaves it (one that became a tunnel left at the switch).
func (cc *clientConn) endObs() {
	if cc.ex.obs.open {
		cc.endRequest(cc.ex.obs.status, accesslog.Relayed, "", 0)
	}
	if !cc.tunneled {
		cc.ls.m.Closed()
	}
}

// unsafeBytes views s as bytes for a call that only reads them (accesslog copies the target
// into its line).
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
