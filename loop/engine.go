package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgate/wsgate/fdbudget"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
)

// Engine supervision. gnet stops its whole engine, every loop and every listener, when one loop
// returns an error: a single EMFILE (or ENFILE, ENOBUFS, ENOMEM) from accept(2) is enough
// (acceptor_unix.go returns ErrAcceptSocket, the poller gives up, the loop calls
// engine.shutdown). gnet.Run then returns nil, exactly as it does after Stop, and the process
// would go on with no listener. The fd budget (budget.go) keeps wsgate from causing EMFILE
// itself; this is the net under it. A supervisor goroutine owns every gnet.Run call: when one
// returns and Stop did not ask for it, the cause gnet logged is logged again at Error and the
// listeners are restarted on a fresh engine. Connections gnet held are gone with the old engine
// (gnet closes them), but tunnels and transfers in the tunnel plane are not gnet's and keep
// flowing. If the engine cannot be restarted, the server gives up: Done is closed and Err says
// why, and cmd/wsgate exits non-zero.
const (
	restartFirst   = 50 * time.Millisecond // first restart delay, doubled per failed attempt
	restartMax     = 2 * time.Second       // longest delay between attempts
	restartTries   = 8                     // attempts in a row before giving up (~7 s in all)
	restartHealthy = 10 * time.Second      // an engine that ran this long resets the count
	tickIdle       = time.Hour             // OnTick is only the "engine is up" signal
)

// engineRun is one gnet.Run call.
type engineRun struct {
	eng      gnet.Engine   // set by OnBoot (under Server.engMu)
	running  chan struct{} // closed by the first OnTick: every loop and listener is up
	exited   chan struct{} // closed when gnet.Run has returned; err is its error
	err      error
	started  time.Time
	tickOnce sync.Once
}

// Start listens on cfg.Listen and returns once the engine is running.
func Start(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	table, own, err := startTable(cfg)
	if err != nil {
		return nil, err
	}
	// Every failure below must close a table Start built itself.
	closeOwn := func() {
		if own {
			table.Close()
		}
	}
	s, err := start(cfg, table)
	if err != nil {
		closeOwn()
		return nil, err
	}
	if own {
		s.ownTable = table
	}
	return s, nil
}

// start is Start with the route table decided.
func start(cfg Config, table *route.Table) (*Server, error) {
	cfg.Routes = table
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("wsgate: listen address %q: %w", cfg.Listen, err)
	}
	// Port 0: pick the port now and run like any other port. gnet opens one SO_REUSEPORT
	// listener per loop, so ":0" would give each loop a different port; its single-listener
	// mode (main reactor) is no way out either: that reactor accepts in a loop until EAGAIN and
	// hands the conns to the loops asynchronously, so a burst holds any number of fds that no
	// OnOpen has counted yet, which defeats the fd budget. The reservation socket (SO_REUSEPORT,
	// bound, never listening) keeps the port ours until gnet's listeners hold it.
	var reserved *os.File
	if port == "0" {
		if port, reserved, err = reservePort(host); err != nil {
			return nil, fmt.Errorf("wsgate: listen %s: %w", cfg.Listen, err)
		}
		defer reserved.Close()
	}
	addr := net.JoinHostPort(host, port)
	g, err := takeGuard(addr, cfg.ListenLock)
	if err != nil {
		return nil, fmt.Errorf("wsgate: listen %s: %w", addr, err)
	}
	if cfg.ListenLock == nil && reserved == nil {
		if err := probeBind(addr); err != nil {
			g.close()
			return nil, fmt.Errorf("wsgate: listen %s: %w", addr, err)
		}
	}
	var plan fdPlan
	given := cfg.FDs != nil
	if !given {
		if plan, err = planFDs(cfg); err != nil {
			g.close()
			return nil, fmt.Errorf("wsgate: %w", err)
		}
		cfg.FDs = fdbudget.New(plan.limit)
	}
	cfg.Tunnel.FDs = cfg.FDs
	if cfg.Tunnel.Metrics == nil {
		cfg.Tunnel.Metrics = cfg.Metrics
	}
	upgradePlaneConfig(&cfg)
	plane, err := splice.NewPlane(cfg.Tunnel)
	if err != nil {
		g.close()
		return nil, fmt.Errorf("wsgate: tunnel plane: %w", err)
	}
	s := &Server{
		backendWarn: warnLimiter{interval: time.Second},
		tlsLog:      tlsLimiter{warnLimiter{interval: time.Second}},
		cfg:         cfg,
		log:         cfg.Logger,
		plane:       plane,
		fds:         cfg.FDs,
		guard:       g,
		addr:        addr,
		loops:       make(map[gnet.EventLoop]*loopState),
		tickDone:    make(chan struct{}),
		superDone:   make(chan struct{}),
		relistened:  make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	s.routes.Store(table)
	s.headerTimeout.Store(int64(cfg.HeaderTimeout))
	s.obs.init(&cfg, table)
	s.startObs()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.dials = dialPool{jobs: make(chan dialJob), ctx: s.ctx, run: s.runDial}
	s.h = &handler{s: s}
	if err := s.initUpgrades(); err != nil {
		s.cancel()
		_ = plane.Close()
		g.close()
		return nil, fmt.Errorf("wsgate: %w", err)
	}
	r, err := s.startRun()
	if err != nil {
		s.cancel()
		_ = plane.Close()
		g.close()
		return nil, fmt.Errorf("wsgate: listen %s: %w", s.addr, err)
	}
	go s.supervise(r)
	go s.ticker()
	logFDPlan(s.log, cfg, plan, given)
	s.log.Info("wsgate listening", "listen", s.addr, "routes", table.String(), "loops", cfg.Loops, "fd_budget", s.fds.Limit())
	return s, nil
}

// startRun starts one gnet.Run and waits until its engine is running or has failed.
func (s *Server) startRun() (*engineRun, error) {
	r := &engineRun{running: make(chan struct{}), exited: make(chan struct{}), started: time.Now()}
	s.engMu.Lock()
	restart := s.run != nil
	s.run = r
	s.engMu.Unlock()
	s.gnetErr.Store(nil)
	if restart && !s.guard.shared() {
		// A restart: our listeners are closed, so a bind that fails now means another program
		// took the port meanwhile, which SO_REUSEPORT would let us share without a word.
		if err := probeBind(s.addr); err != nil {
			return nil, err
		}
	}
	before := s.listenerInodes()
	go func() {
		r.err = gnet.Run(s.h, "tcp://"+s.addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.Loops),
			gnet.WithReusePort(true),
			gnet.WithReuseAddr(true), // lets the probe bind tell live listeners from leftovers (listen.go)
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithTCPKeepAlive(3*time.Minute),
			gnet.WithReadBufferCap(64<<10),
			gnet.WithTicker(true),
			gnet.WithLogger(gnetLogger{s.cfg.Logger, &s.gnetErr}),
		)
		close(r.exited)
	}()
	select {
	case <-r.running:
		s.recordListeners(before) // what StopAccepting closes (stopaccept_linux.go)
		return r, nil
	case <-r.exited:
	}
	err := r.err
	// gnet may report a failed bind as "setsockopt: bad file descriptor" (listen.go): ask the
	// kernel again for the real reason (not while a predecessor or successor shares the port:
	// the probe would fail on its listeners).
	if !s.guard.shared() {
		if perr := probeBind(s.addr); perr != nil {
			err = perr
		}
	}
	if err == nil {
		err = errors.New("engine stopped before it was running")
		if e := s.gnetErr.Load(); e != nil {
			err = errors.New(*e)
		}
	}
	return nil, err
}

// supervise owns the engine from Start to Stop: it restarts the listeners when gnet.Run returns
// on its own, and stops the engine when the server stops.
func (s *Server) supervise(r *engineRun) {
	defer close(s.superDone)
	tries := 0
	for {
		select {
		case <-s.ctx.Done():
			s.stopRun(r)
			s.stopRetired()
			return
		case <-s.relistened:
			// Relisten (relisten.go) started a new engine: supervise that one; the old one keeps
			// its connections, without listeners, until Stop.
			s.engMu.Lock()
			r = s.run
			s.engMu.Unlock()
			continue
		case <-r.exited:
		}
		if s.ctx.Err() != nil {
			s.stopRetired()
			return
		}
		cause := "gnet.Run returned"
		if e := s.gnetErr.Load(); e != nil {
			cause = *e
		}
		if s.noListen.Load() {
			// Draining or handing over: the listeners stay closed. Tunnels are not affected.
			s.log.Error("engine stopped unexpectedly while not accepting: client connections held by the event loops are closed; listeners not restarted (tunnels are not affected)",
				"listen", s.addr, "cause", cause)
			s.forgetLoops()
			return
		}
		s.log.Error("engine stopped unexpectedly: client connections held by the event loops are closed; restarting the listeners (tunnels are not affected)",
			"listen", s.addr, "cause", cause, "run_for", time.Since(r.started).Round(time.Millisecond))
		if time.Since(r.started) >= restartHealthy {
			tries = 0
		}
		s.forgetLoops()
		var err error
		for r = nil; r == nil; {
			if tries >= restartTries {
				s.giveUp(fmt.Errorf("listen %s: engine stopped (%s) and could not be restarted: %w", s.addr, cause, err))
				return
			}
			delay := min(restartFirst<<tries, restartMax)
			tries++
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(delay):
			}
			if r, err = s.startRun(); err != nil {
				s.log.Error("engine restart failed", "listen", s.addr, "attempt", tries, "err", err)
			}
		}
		s.restarts.Add(1)
		s.log.Warn("listeners restarted", "listen", s.addr, "restarts", s.restarts.Load(), "attempt", tries)
	}
}

// giveUp ends a server whose engine cannot run: Done is closed, Err returns err.
func (s *Server) giveUp(err error) {
	s.log.Error("giving up: no listener", "listen", s.addr, "err", err)
	s.errMu.Lock()
	s.err = err
	s.errMu.Unlock()
	s.doneOnce.Do(func() { close(s.done) })
}

// stopRun stops a running engine and waits for gnet.Run to return. Engine.Stop polls for
// completion every 500 ms; Run returning is the precise signal (loops done, conns and listeners
// closed), so it is waited for instead.
func (s *Server) stopRun(r *engineRun) {
	s.engMu.Lock()
	eng := r.eng
	s.engMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = eng.Stop(ctx) }()
	<-r.exited
	cancel()
}

// forgetLoops drops the per-loop state of a dead engine; the new engine's loops get new state.
func (s *Server) forgetLoops() {
	s.loopsMu.Lock()
	clear(s.loops)
	s.loopsMu.Unlock()
}

// Addr is the address the server listens on (with the real port when Listen asked for 0).
func (s *Server) Addr() string { return s.addr }

// Done is closed when the server has stopped serving for good: after Stop, or when its engine
// stopped and could not be restarted (Err then says why).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why the server gave up, or nil.
func (s *Server) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// ListenLock returns a duplicate of the one-instance guard's fd, for the successor process this
// one starts (issue 12): pass it as an extra file and give it to the successor's Start as
// Config.ListenLock. The caller closes it once passed.
func (s *Server) ListenLock() (*os.File, error) { return s.guard.dup() }

// Stop closes the listeners, every client and backend connection, and the tunnel plane.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.cancel()
		<-s.tickDone
		var err error
		select {
		case <-s.superDone:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if perr := s.plane.Close(); err == nil {
			err = perr
		}
		s.guard.close()
		if s.ownTable != nil {
			s.ownTable.Close()
		}
		s.stopErr = err
		s.doneOnce.Do(func() { close(s.done) })
	})
	return s.stopErr
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.s.engMu.Lock()
	h.s.run.eng = eng
	h.s.engMu.Unlock()
	return gnet.None
}

// OnTick runs first on gnet's ticker goroutine, which starts only after every loop and listener
// is up (OnBoot runs before gnet binds the other loops' listeners): it is Start's "running"
// signal. Housekeeping has its own ticker; this one sleeps an hour at a time.
func (h *handler) OnTick() (time.Duration, gnet.Action) {
	h.s.engMu.Lock()
	r := h.s.run
	h.s.engMu.Unlock()
	r.tickOnce.Do(func() { close(r.running) })
	return tickIdle, gnet.None
}
