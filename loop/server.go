package loop

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgate/wsgate/fdbudget"
	"github.com/wsgate/wsgate/httpparse"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
)

// tickEvery paces the per-loop housekeeping: flushing queues toward slow peers (gnet has no
// "writable" callback) and, every sweepEvery ticks, the timeout sweep.
const (
	tickEvery  = 5 * time.Millisecond
	sweepEvery = 40
)

// Server is a running wsgate HTTP plane.
type Server struct {
	cfg    Config
	log    *slog.Logger
	h      *handler
	plane  *splice.Plane
	fds    *fdbudget.Budget // every fd the server owns (budget.go)
	guard  *guard           // one-instance lock of the listen address (listen.go)
	addr   string
	dials  dialPool
	ctx    context.Context
	cancel context.CancelFunc

	// routes is the table in use (routes.go); an exchange loads it once and keeps its route.
	routes   atomic.Pointer[route.Table]
	ownTable *route.Table // built by Start from Config.Backend; closed by Stop

	// headerTimeout is -header-timeout (nanoseconds): the first head of a conn, and the next
	// one after a local answer, run under it; a reload may change it (SetHeaderTimeout).
	headerTimeout atomic.Int64

	// engine supervision (engine.go)
	engMu     sync.Mutex
	run       *engineRun             // the current gnet.Run
	gnetErr   atomic.Pointer[string] // the first error gnet logged in the current run
	superDone chan struct{}          // the supervisor has returned
	done      chan struct{}          // Done()
	doneOnce  sync.Once
	errMu     sync.Mutex
	err       error
	restarts  atomic.Int64

	// Closing and re-opening the listeners (stopaccept_linux.go, relisten.go).
	noListen   atomic.Bool   // the listeners were closed on purpose (drain, upgrade): never restart them
	listeners  []listenerID  // the current engine's listening sockets, under engMu
	lnErr      error         // why they could not be found
	relistened chan struct{} // Relisten replaced run
	retired    []*engineRun  // engines whose listeners were closed before a Relisten, under engMu

	// draining (drain.go): every response says Connection: close and every client conn ends at
	// its next response boundary.
	draining atomic.Bool
	pass     passer // passing client conns to a successor (pass.go)

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loopState

	tickDone chan struct{}
	stopOnce sync.Once
	stopErr  error

	conns, backendOpened, tunnelsTotal, requests, rejected, retries, offloads, idle atomic.Int64
	rejectedFDs                                                                     atomic.Int64

	// queuedBytes counts every byte queued toward a peer in an outq (both directions, all loops).
	queuedBytes atomic.Int64

	// backendWarn rate-limits the Warn lines for failures the operator must see (backend down,
	// timing out, answering garbage).
	backendWarn warnLimiter
	// tlsLog rate-limits TLS failure lines (scanners, plain HTTP on the TLS port, bad records).
	tlsLog tlsLimiter

	up  upgradeState // upgrades: judges, resolved member names, results (upgrade.go)
	obs serverObs    // metrics and access log (observe.go)
}

// loopState is touched only on its own event loop (the ticker only reads hasQueued).
type loopState struct {
	srv       *Server
	el        gnet.EventLoop
	loop      netLoop // el as the state machine sees it (wire.go)
	clients   map[*clientConn]struct{}
	queued    map[*clientConn]struct{} // clients whose exchange has bytes waiting for a slow peer
	idle      [][]*backendConn         // idle backend conns per member (by Member.ID), LIFO so the warmest is reused first
	hosts     [][]byte                 // each member's address as bytes (by Member.ID), for Host and Location
	req       httpparse.Request
	resp      httpparse.Response
	scratch   []byte      // response heads are built here and written at once
	sealBuf   []byte      // records sealed toward TLS clients, before their write(2) (tlswire.go)
	hasQueued atomic.Bool // some outq on this loop holds bytes: the ticker must run flushes
	flushFn   gnet.RunnableFunc
	sweepFn   gnet.RunnableFunc
	inTraffic bool  // an OnTraffic callback is running: now() may reuse nowNs
	nowNs     int64 // the time read first in this OnTraffic, 0 until then
	loopObs         // this loop's metrics shard and access-log writer (observe.go)

	onTunnelClose []func(splice.TunnelResult) // per member (by Member.ID): an upgraded tunnel's OnClose (upgrade.go)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	ps := s.plane.Stats()
	return Stats{
		Conns:              s.conns.Load(),
		BackendConnsOpened: s.backendOpened.Load(),
		Tunnels:            ps.Tunnels,
		TunnelsTotal:       s.tunnelsTotal.Load(),
		Requests:           s.requests.Load(),
		Rejected:           s.rejected.Load(),
		RejectedFDs:        s.rejectedFDs.Load(),
		FDsUsed:            int64(s.fds.Used()),
		FDsLimit:           int64(s.fds.Limit()),
		EngineRestarts:     s.restarts.Load(),
		Retries:            s.retries.Load(),
		Offloads:           s.offloads.Load(),
		BackendIdle:        s.idle.Load(),
		QueuedBytes:        s.queuedBytes.Load(),
	}
}

func (s *Server) loopFor(el gnet.EventLoop) *loopState {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	ls := s.loops[el]
	if ls == nil {
		ls = &loopState{srv: s, el: el, loop: gnetLoop{el}, clients: make(map[*clientConn]struct{}), queued: make(map[*clientConn]struct{}), scratch: make([]byte, 0, 4096)}
		ls.flushFn = func(context.Context) error { ls.tick(false); return nil }
		ls.sweepFn = func(context.Context) error { ls.tick(true); return nil }
		ls.initObs()
		s.loops[el] = ls
	}
	return ls
}

// ticker drives every loop's housekeeping with one goroutine: no timer per request.
func (s *Server) ticker() {
	defer close(s.tickDone)
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	var lss []*loopState
	n := 0
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		n++
		lss = lss[:0]
		s.loopsMu.Lock()
		for _, ls := range s.loops {
			lss = append(lss, ls)
		}
		s.loopsMu.Unlock()
		for _, ls := range lss {
			if n%sweepEvery == 0 {
				_ = ls.el.Execute(s.ctx, ls.sweepFn)
			} else if ls.hasQueued.Load() {
				_ = ls.el.Execute(s.ctx, ls.flushFn)
			}
		}
	}
}

// handler adapts gnet's callbacks to the per-connection state machines.
type handler struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	overFDs := h.s.fds.Acquire(1) // every conn gnet holds is counted from OnOpen to OnClose
	switch v := c.Context().(type) {
	case *clientConn:
		v.reattached(c)
	case *backendConn:
		v.opened(c)
	case *adoptedConn: // from the predecessor, or back from the hand-off (pass.go)
		h.s.loopFor(c.EventLoop()).adopted(c, v)
	case nil:
		s := h.s
		ls := s.loopFor(c.EventLoop())
		if why, ok := s.admit(overFDs); !ok { // -max-conns (tunnels included) and the fd budget: budget.go
			if s.cfg.TLS != nil {
				ls.rejected(why, clientAddr(c.RemoteAddr()), nil)
				return nil, gnet.Close // no session yet to say 503 in
			}
			ls.rejected(why, clientAddr(c.RemoteAddr()), errorResponse(503))
			return errorResponse(503), gnet.Close
		}
		var ip []byte
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = []byte(a.IP.String())
		}
		cc := newClientConn(ls, c, ip)
		cc.addr = clientAddr(c.RemoteAddr())
		ls.m.Accepted()
		if s.cfg.TLS != nil {
			cc.startTLS(c, func() { _ = c.Wake(nil) })
		}
		c.SetContext(cc)
	}
	return nil, gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	onTraffic(c, c.Context())
	return gnet.None
}

func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	h.s.fds.Release(1) // every conn gnet holds is counted from OnOpen to OnClose
	onClosed(c, c.Context(), err)
	return gnet.None
}

// gnetLogger routes gnet's logging to slog; gnet's chatty Info lines become Debug. The first
// error gnet reports in a run is kept: when the engine stops on its own, that is the cause.
type gnetLogger struct {
	l     *slog.Logger
	first *atomic.Pointer[string]
}

func (g gnetLogger) Debugf(f string, a ...any) { g.log(slog.LevelDebug, f, a) }
func (g gnetLogger) Infof(f string, a ...any)  { g.log(slog.LevelDebug, f, a) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.log(slog.LevelWarn, f, a) }
func (g gnetLogger) Errorf(f string, a ...any) { g.log(slog.LevelError, f, a) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.log(slog.LevelError, f, a) }

func (g gnetLogger) log(lv slog.Level, f string, a []any) {
	if lv >= slog.LevelError && g.first != nil && g.first.Load() == nil {
		msg := fmt.Sprintf(f, a...)
		g.first.CompareAndSwap(nil, &msg)
	}
	if g.l.Enabled(context.Background(), lv) {
		g.l.Log(context.Background(), lv, fmt.Sprintf(f, a...), "component", "gnet")
	}
}
