package loop

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// The drain (SIGTERM, docs/lifecycle.md): stop taking new work, let the work in hand finish, then
// close the tunnels that are left a few at a time, so that their clients do not all reconnect in
// the same second.
//
//	t = 0                   Drain is called (the caller has turned /readyz to 503)
//	t = Delay               listeners close (stopaccept_linux.go; what waits in their accept
//	                        queues is accepted first and served); from now on every response
//	                        says Connection: close and every client conn ends at its next
//	                        response boundary; idle keep-alive conns end now
//	t = Delay+Timeout       the tunnels still open are closed, spread evenly over Spread
//	t = Delay+Timeout+Spread  what is left (tunnels opened meanwhile, exchanges still running)
//	                        is left to Stop, which closes it
//
// Drain returns as soon as nothing is left: no client connection (exchanges in flight and bodies
// offloaded to the tunnel plane included) and no tunnel.
//
// Invariant: draining is only ever switched on. Every exchange that starts after it is on gets
// closeAfter; every exchange that ends after it is on ends its conn (finishExchange), unless the
// client already pipelined its next request, which is then served with Connection: close.

// DrainOptions is the drain's timeline.
type DrainOptions struct {
	Delay   time.Duration // before the listeners close (a load balancer's deregistration time)
	Timeout time.Duration // after that, how long tunnels may stay
	Spread  time.Duration // the tunnels left at Timeout are closed evenly over this long
	// ListenersClosed, when set, runs once the listeners are closed (or failed to close).
	ListenersClosed func(listeners, accepted int, err error)
}

// DrainReport says how a drain went.
type DrainReport struct {
	Listeners, Accepted int   // listeners closed, connections accepted from their queues first
	ListenErr           error // closing the listeners failed (the drain went on: Stop closes them)
	TunnelsAtTimeout    int   // tunnels open when Timeout ran out
	TunnelsClosed       int   // tunnels the spread closed
	Empty               bool  // nothing was left when Drain returned
	Conns, Tunnels      int64 // what was left otherwise (Stop closes it)
	Took                time.Duration
}

// drainPoll is how often the drain looks whether anything is left, and its spread's tick.
const drainPoll = 10 * time.Millisecond

// Drain runs the drain's timeline and returns when nothing is left, when the window is over, or
// when ctx ends (a second signal). The caller then calls Stop.
func (s *Server) Drain(ctx context.Context, o DrainOptions) (rep DrainReport) {
	start := time.Now()
	defer func() {
		rep.Conns, rep.Tunnels = s.conns.Load(), s.plane.OpenTunnels()
		rep.Empty = rep.Conns == 0 && rep.Tunnels == 0
		rep.Took = time.Since(start)
	}()
	if !sleepCtx(ctx, o.Delay) {
		return rep
	}
	s.draining.Store(true)
	rep.Listeners, rep.Accepted, rep.ListenErr = s.StopAccepting(true)
	if o.ListenersClosed != nil {
		o.ListenersClosed(rep.Listeners, rep.Accepted, rep.ListenErr)
	}
	s.closeIdleConns()
	msg := "draining: listeners closed; requests in flight finish, connections close at their next response, tunnels stay"
	if rep.Listeners == 0 && rep.ListenErr == nil {
		msg = "draining (no listener left to close); requests in flight finish, connections close at their next response, tunnels stay"
	}
	s.log.Info(msg, "listen", s.addr, "listeners", rep.Listeners, "accepted_from_queue", rep.Accepted,
		"conns", s.conns.Load(), "tunnels", s.plane.OpenTunnels(), "tunnels_until", o.Timeout)

	timeout := time.NewTimer(o.Timeout)
	defer timeout.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for !s.drained() {
		select {
		case <-ctx.Done():
			return rep
		case <-timeout.C:
			rep.TunnelsAtTimeout = int(s.plane.OpenTunnels())
			rep.TunnelsClosed = s.spreadCloses(ctx, tick, o.Spread, rep.TunnelsAtTimeout)
			return rep
		case <-tick.C:
		}
	}
	return rep
}

// spreadCloses closes n tunnels evenly over spread: the k-th (from 1) at (k-1)*spread/n, so the
// first goes at once and the last a step before the end; at the end whatever is still open
// (tunnels opened meanwhile) goes too. It returns how many it closed.
func (s *Server) spreadCloses(ctx context.Context, tick *time.Ticker, spread time.Duration, n int) int {
	s.log.Info("drain timeout: closing the tunnels left, spread out", "tunnels", n, "spread", spread, "conns", s.conns.Load())
	start := time.Now()
	closed := 0
	for {
		el := time.Since(start)
		if el >= spread {
			return closed + s.plane.CloseTunnels(int(s.plane.OpenTunnels()))
		}
		// Tunnels due by now: ceil(n * el / spread), at least the first.
		due := max(int((int64(n)*int64(el)+int64(spread)-1)/int64(spread)), 1)
		if due > closed {
			closed += s.plane.CloseTunnels(due - closed)
		}
		if s.drained() {
			return closed
		}
		select {
		case <-ctx.Done():
			return closed
		case <-tick.C:
		}
	}
}

// drained: no client connection and no tunnel left.
func (s *Server) drained() bool { return s.conns.Load() == 0 && s.plane.OpenTunnels() == 0 }

// Draining reports whether a drain has closed the listeners.
func (s *Server) Draining() bool { return s.draining.Load() }

// closeIdleConns ends, on every loop, the client conns that wait for a request and have not
// started one: a lingering close (closing.go), as for any conn that closes after an answer.
func (s *Server) closeIdleConns() {
	s.loopsMu.Lock()
	lss := make([]*loopState, 0, len(s.loops))
	for _, ls := range s.loops {
		lss = append(lss, ls)
	}
	s.loopsMu.Unlock()
	for _, ls := range lss {
		_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			for cc := range ls.clients {
				if cc.state == stateReadingHead && !cc.headStarted && cc.inboundLen() == 0 {
					cc.startClosing()
				}
			}
			return nil
		}))
	}
}

// sleepCtx sleeps d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
