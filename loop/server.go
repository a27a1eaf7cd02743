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
	cfg     Config
	log     *slog.Logger
	h       *handler
	plane   *splice.Plane
	fds     *fdbudget.Budget // every fd the server owns (budget.go)
	guard   *guard           // one-instance lock of the listen address (listen.go)
	addr    string
	backend []byte
	dialer  net.Dialer
	dials   dialPool
	ctx     context.Context
	cancel  context.CancelFunc

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

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loopState

	tickDone chan struct{}
	stopOnce sync.Once
	stopErr  error

	conns, backendOpened, tunnelsTotal, requests, rejected, retries, offloads, idle atomic.Int64
	rejectedFDs                                                                     atomic.Int64

	// backendWarn rate-limits the Warn lines for failures the operator must see (backend down,
	// timing out, answering garbage).
	backendWarn warnLimiter
}

// loopState is touched only on its own event loop (the ticker only reads hasQueued).
type loopState struct {
	srv       *Server
	el        gnet.EventLoop
	clients   map[*clientConn]struct{}
	queued    map[*clientConn]struct{} // clients whose exchange has bytes waiting for a slow peer
	pool      []*backendConn           // idle backend conns, LIFO so the warmest is reused first
	req       httpparse.Request
	resp      httpparse.Response
	scratch   []byte      // response heads are built here and written at once
	hasQueued atomic.Bool // some outq on this loop holds bytes: the ticker must run flushes
	flushFn   gnet.RunnableFunc
	sweepFn   gnet.RunnableFunc
	inTraffic bool  // an OnTraffic callback is running: now() may reuse nowNs
	nowNs     int64 // the time read first in this OnTraffic, 0 until then
}

// now is the wall clock in unix nanos for deadlines. Inside one OnTraffic callback it is read
// once: a callback lasts microseconds and deadlines are enforced by a 200 ms sweep, while reading
// the clock four times per proxied request cost about 2% of the proxy's CPU (vdso + TSC read).
func (ls *loopState) now() int64 {
	if !ls.inTraffic {
		return time.Now().UnixNano()
	}
	if ls.nowNs == 0 {
		ls.nowNs = time.Now().UnixNano()
	}
	return ls.nowNs
}

func (ls *loopState) enterTraffic() { ls.inTraffic, ls.nowNs = true, 0 }
func (ls *loopState) leaveTraffic() { ls.inTraffic, ls.nowNs = false, 0 }

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
	}
}

func (s *Server) loopFor(el gnet.EventLoop) *loopState {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	ls := s.loops[el]
	if ls == nil {
		ls = &loopState{srv: s, el: el, clients: make(map[*clientConn]struct{}), queued: make(map[*clientConn]struct{}), scratch: make([]byte, 0, 4096)}
		ls.flushFn = func(context.Context) error { ls.tick(false); return nil }
		ls.sweepFn = func(context.Context) error { ls.tick(true); return nil }
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

// tick runs on the loop: flush queues toward slow peers, then (every sweepEvery) enforce timeouts.
func (ls *loopState) tick(sweep bool) {
	for cc := range ls.queued {
		if !cc.flushQueues() {
			delete(ls.queued, cc)
		}
	}
	ls.hasQueued.Store(len(ls.queued) > 0)
	if !sweep {
		return
	}
	now := time.Now().UnixNano()
	for cc := range ls.clients {
		if cc.deadline != 0 && now >= cc.deadline {
			cc.expire()
		}
	}
	idleLimit := now - int64(ls.srv.cfg.BackendIdleTimeout)
	for i := 0; i < len(ls.pool); {
		if bc := ls.pool[i]; bc.idleSince < idleLimit {
			ls.removeIdle(bc)
			bc.close()
			continue
		}
		i++
	}
}

func (ls *loopState) putIdle(bc *backendConn) {
	if bc.c == nil || len(ls.pool) >= ls.srv.cfg.BackendIdle {
		bc.close()
		return
	}
	bc.cc = nil
	bc.inPool = true
	bc.reused = true
	bc.idleSince = ls.now()
	ls.pool = append(ls.pool, bc)
	ls.srv.idle.Add(1)
}

func (ls *loopState) popIdle() *backendConn {
	for len(ls.pool) > 0 {
		bc := ls.pool[len(ls.pool)-1]
		ls.pool[len(ls.pool)-1] = nil
		ls.pool = ls.pool[:len(ls.pool)-1]
		ls.srv.idle.Add(-1)
		bc.inPool = false
		if bc.c != nil {
			return bc
		}
	}
	return nil
}

func (ls *loopState) removeIdle(bc *backendConn) {
	for i, b := range ls.pool {
		if b == bc {
			copy(ls.pool[i:], ls.pool[i+1:])
			ls.pool[len(ls.pool)-1] = nil
			ls.pool = ls.pool[:len(ls.pool)-1]
			ls.srv.idle.Add(-1)
			bc.inPool = false
			return
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
	case nil:
		s := h.s
		if !s.admit(overFDs) { // -max-conns (tunnels included) and the fd budget: budget.go
			return errorResponse(503), gnet.Close
		}
		newClientConn(s.loopFor(c.EventLoop()), c)
	}
	return nil, gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	switch v := c.Context().(type) {
	case *clientConn:
		if v.c == c {
			v.ls.enterTraffic()
			v.process()
			v.ls.leaveTraffic()
		}
	case *backendConn:
		if v.c == c {
			v.ls.enterTraffic()
			v.process()
			v.ls.leaveTraffic()
		}
	}
	return gnet.None
}

func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	h.s.fds.Release(1)
	switch v := c.Context().(type) {
	case *clientConn:
		if v.c == c {
			v.closed()
		}
	case *backendConn:
		if v.c == c {
			v.closed(err)
		}
	}
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
