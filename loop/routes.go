package loop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
)

// Routing on the HTTP plane: which route and member serve an exchange, and the member's
// bookkeeping (package route; docs/routing.md).
//
// Invariant: an exchange holds one Request count on its member (route.Member.Acquire) from the
// moment it takes the member until it ends, and releases it exactly once (exchange.holding):
// finishExchange, failResponse and teardown release it; a verified 101 turns it into a Tunnel
// count instead, which the tunnel plane's OnClose releases. ex.route and ex.member stay set after
// the release, until the next exchange starts, so every site that labels an answer (metrics, the
// access log) sees them: ex.route is nil for a 404 (no route matched), ex.member is nil for a 404
// and for a 502 answered because the pool had no usable member.

// clockBaseUnix turns nanotime (monotonic, since start) into the unix nanoseconds that package
// route's passive health compares. Every caller of Pool.Pick and Member.ReportFailure must use
// the same clock; other planes use time.Now().UnixNano().
var clockBaseUnix = clockBase.UnixNano()

// routeNow is the loop's clock (ls.now(), nanotime()) in route's terms.
func routeNow(mono int64) int64 { return clockBaseUnix + mono }

// startTable returns the table a new Server serves: Config.Routes, or one built from
// Config.Backend ("/=Backend"), started here and owned (closed) by the Server.
func startTable(cfg Config) (t *route.Table, own bool, err error) {
	if cfg.Routes != nil {
		return cfg.Routes, false, nil
	}
	if cfg.Backend == "" {
		return nil, false, errors.New("wsgate: no routes and no backend address")
	}
	t, err = route.NewTable([]route.Spec{{Prefix: "/", Backends: []string{cfg.Backend}}}, cfg.RouteDefaults(), nil)
	if err != nil {
		return nil, false, fmt.Errorf("wsgate: %w", err)
	}
	t.Start()
	return t, true, nil
}

// SetRoutes makes t the route table of the exchanges that start from now on (a reload): an
// exchange in flight finishes on the route it matched. The caller Starts t before and Closes the
// previous table after. The sweep closes idle connections to members t no longer has.
func (s *Server) SetRoutes(t *route.Table) {
	if t != nil {
		s.obs.registerTable(t) // metrics and log names, before any exchange can match t's routes
		s.resolveNames(t)      // members written as names, for the tunnel plane's dials (upgrade.go)
		s.routes.Store(t)
	}
}

// SetHeaderTimeout changes the global request head timeout (-header-timeout) for heads that
// start from now on (a reload); a route's own header timeout still applies after its exchanges.
func (s *Server) SetHeaderTimeout(d time.Duration) {
	if d > 0 {
		s.headerTimeout.Store(int64(d))
	}
}

// Routes returns the route table in use.
func (s *Server) Routes() *route.Table { return s.routes.Load() }

// describeMembers says why each member of a pool cannot be picked, for the 502 log line.
func describeMembers(p *route.Pool, now int64) string {
	var b strings.Builder
	for i, m := range p.Members() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(m.Addr())
		h := m.Health()
		switch {
		case h.ActiveDown:
			b.WriteString(" (failing its health check)")
		case h.DownUntil > now:
			fmt.Fprintf(&b, " (refused or timed out %d times, retried in %v)", h.Fails, time.Duration(h.DownUntil-now).Round(time.Millisecond))
		}
	}
	return b.String()
}

// poolHealth logs a pool's members and why each is out; the text is made only when a line is
// written (a log argument is evaluated at every call, and a rate-limited line is usually not).
type poolHealth struct{ p *route.Pool }

func (h poolHealth) LogValue() slog.Value {
	return slog.StringValue(describeMembers(h.p, time.Now().UnixNano()))
}

// routeLabel logs a route as [HOST]/PREFIX, made only when a line is written ("" for none).
type routeLabel struct{ r *route.Route }

func (l routeLabel) LogValue() slog.Value { return slog.StringValue(routeName(l.r)) }

// memberName is a member's address for log lines ("" for none).
func memberName(m *route.Member) string {
	if m == nil {
		return ""
	}
	return m.Addr()
}

// routeName is a route's [HOST]/PREFIX for log lines ("" for none).
func routeName(r *route.Route) string {
	if r == nil {
		return ""
	}
	return r.String()
}

// memberHost is m's address as bytes, made once per member and loop: the Host sent when the
// client's is not preserved, and what Location values naming the backend start with.
func (ls *loopState) memberHost(m *route.Member) []byte {
	id := m.ID()
	if id >= len(ls.hosts) {
		ls.hosts = append(ls.hosts, make([][]byte, id+1-len(ls.hosts))...)
	}
	h := ls.hosts[id]
	if h == nil {
		h = []byte(m.Addr())
		ls.hosts[id] = h
	}
	return h
}

// idleOf is this loop's list of idle connections to m.
func (ls *loopState) idleOf(m *route.Member) *[]*backendConn {
	id := m.ID()
	if id >= len(ls.idle) {
		ls.idle = append(ls.idle, make([][]*backendConn, id+1-len(ls.idle))...)
	}
	return &ls.idle[id]
}

// Answers wsgate gives itself, nothing forwarded. A 404 may keep the connection (the client's
// next request can match another route); its HEAD form has no body.
var (
	notFoundDetail   = "no route for this host and path"
	notFoundKeep     = buildLocalAnswer(404, notFoundDetail, false)
	notFoundKeepHEAD = buildLocalAnswer(404, notFoundDetail, true)
	notFoundClose    = buildErrorResponse(404, notFoundDetail)
	upgradeForbidden = buildErrorResponse(403, "WebSocket upgrades are not allowed on this path")
)

// buildLocalAnswer is a complete keep-alive answer of wsgate's own.
func buildLocalAnswer(code int, detail string, head bool) []byte {
	body := strconv.Itoa(code) + " " + statusTexts[code] + ": " + detail + "\n"
	s := "HTTP/1.1 " + strconv.Itoa(code) + " " + statusTexts[code] + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nConnection: keep-alive\r\n\r\n"
	if !head {
		s += body
	}
	return []byte(s)
}

// answerLocal answers a request that no backend will see: 404 when no route matches, 403 for an
// upgrade on a route with websocket = false (r is that route). The exchange starts anew (route
// r, no member) so the answer is labelled like any other. A 404 to a request without a body on
// a persistent connection keeps it; everything else closes, as for any refused request (a body
// we will not read, an upgrade whose client may already be sending frames). It reports whether
// the client side may go on parsing.
func (cc *clientConn) answerLocal(req *httpparse.Request, n int, upgrade bool, status int, r *route.Route) bool {
	cc.releaseMember()
	cc.gen++
	cc.ex = exchange{
		route:      r,
		isHEAD:     req.MethodIs("HEAD"),
		upgrade:    upgrade,
		reqFraming: req.Framing,
		host:       append(cc.ex.host[:0], requestHost(req)...),
		wsKey:      cc.ex.wsKey[:0],
		respPhase:  respDone,
		obs:        cc.beginObs(req, r),
	}
	cc.consume(n)
	if status != 404 || upgrade || !req.KeepAlive || req.Framing != httpparse.FramingNone || cc.srv.draining.Load() {
		resp, why := notFoundClose, accesslog.NoRoute
		if status == 403 {
			resp, why = upgradeForbidden, accesslog.WebSocketRefused
			cc.ls.m.Upgrade(cc.ex.obs.route, metrics.UpgradeRefused) // the route refuses upgrades
		}
		cc.failResponse(resp, why, "")
		return false
	}
	cc.ex.reqDone = true
	resp := notFoundKeep
	if cc.ex.isHEAD {
		resp = notFoundKeepHEAD
	}
	if err := cc.out.write(resp); err != nil {
		cc.abort()
		return false
	}
	cc.noteQueued(&cc.out)
	cc.endRequest(404, accesslog.NoRoute, "", 0)
	cc.state = stateReadingHead
	cc.headStarted = false
	cc.headTimeout = time.Duration(cc.srv.headerTimeout.Load())
	cc.deadline = cc.ls.now() + int64(cc.srv.cfg.IdleTimeout)
	return true
}

// takeMember makes m the exchange's member and counts the request on it.
func (cc *clientConn) takeMember(m *route.Member) {
	cc.ex.member, cc.ex.holding = m, true
	m.Acquire(route.Request)
}

// releaseMember gives the exchange's Request count back, once; ex.member stays set.
func (cc *clientConn) releaseMember() {
	if ex := &cc.ex; ex.holding {
		ex.holding = false
		ex.member.Release(route.Request)
	}
}

// otherMember picks a usable member of the exchange's pool other than its current one, for the
// one retry; nil when there is none.
func (cc *clientConn) otherMember() *route.Member {
	ex := &cc.ex
	if ex.route == nil || ex.member == nil {
		return nil
	}
	return ex.route.Pool.Pick(routeNow(cc.ls.now()), cc.clientHash, ex.member)
}

// switchMember moves the exchange to m: the count moves with it, and the forwarded head's Host
// is rewritten when it named the previous member (preserve_host off, or no Host from the client).
func (cc *clientConn) switchMember(m *route.Member) {
	ex := &cc.ex
	old := ex.member
	cc.releaseMember()
	cc.takeMember(m)
	if ex.hostAt >= 0 && ex.fwd != nil {
		oh, nh := cc.ls.memberHost(old), cc.ls.memberHost(m)
		ex.fwd.B = slices.Replace(ex.fwd.B, ex.hostAt, ex.hostAt+len(oh), nh...)
	}
}

// connect sends the exchange to its member: on an idle pooled connection of this loop if there
// is one, else on a fresh dial.
func (cc *clientConn) connect() {
	if bc := cc.ls.popIdle(cc.ex.member); bc != nil {
		cc.attach(bc)
	} else {
		cc.dial()
	}
}

// noMember answers 502 at once: every member of the route's pool is out (passive back-off or
// active health), so no dial is attempted.
func (cc *clientConn) noMember() {
	s, r := cc.srv, cc.ex.route
	s.backendWarn.warn(s.log, nanotime(), "no healthy backend", "route", routeLabel{r}, "backends", poolHealth{r.Pool}, "status", 502)
	cc.failUpstream(502, accesslog.NoBackend, metrics.UpstreamUnreachable) // no member: only an upgrade counts it
}

// reportDialFailure feeds a failed connect to m's passive health: refused, unreachable and timed
// out connects count (route.DialError); a refusal by our own fd budget, a gnet registration
// failure or our own shutdown are not the backend's doing.
func (s *Server) reportDialFailure(m *route.Member, err error, now int64) {
	var de *route.DialError
	if m == nil || !errors.As(err, &de) || errors.Is(err, context.Canceled) {
		return
	}
	rn := routeNow(now)
	if m.ReportFailure(rn) {
		h := m.Health()
		s.log.Warn("backend down", "backend", m.Addr(), "check", "passive", "fails", h.Fails,
			"skipped_for", time.Duration(h.DownUntil-rn).Round(time.Millisecond), "err", err)
	}
}

// reportDialSuccess feeds a connect that succeeded to m's passive health.
func (s *Server) reportDialSuccess(m *route.Member) {
	if m != nil && m.ReportSuccess() {
		s.log.Info("backend up", "backend", m.Addr(), "check", "passive")
	}
}

// tunnelIdle is a route's tunnel idle timeout as splice.Tunnel.IdleTimeout takes it (a route's 0
// is "never", the plane's is "its default").
func tunnelIdle(r *route.Route) time.Duration {
	if r == nil {
		return 0
	}
	if r.TunnelIdleTimeout <= 0 {
		return -1
	}
	return r.TunnelIdleTimeout
}

// strippedPrefix is the prefix a strip_prefix route removes from forwarded targets (to be put
// back into Location values), or "" when it removes nothing.
func strippedPrefix(r *route.Route) string {
	if r == nil || !r.StripPrefix || r.Prefix == "/" {
		return ""
	}
	return r.Prefix
}

// appendUnstripped writes a path the backend sent (rest: "/x", "", "?q", "#f") in the client's
// terms for a strip_prefix route, the removed prefix back in front, as Apache's
// ProxyPassReverse /loki/ http://backend/ does: with prefix "/loki/", "/x" becomes "/loki/x"
// and "" becomes "/loki/"; with "/loki", "/x" becomes "/loki/x" and "?q" "/loki?q".
func appendUnstripped(dst, rest []byte, prefix string) []byte {
	if len(rest) > 0 && rest[0] == '/' && prefix[len(prefix)-1] == '/' {
		prefix = prefix[:len(prefix)-1]
	}
	dst = append(dst, prefix...)
	return append(dst, rest...)
}
