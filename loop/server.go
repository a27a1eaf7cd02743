package loop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

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
	addr    string
	host    string
	backend []byte
	dialer  net.Dialer
	dials   dialPool
	ctx     context.Context
	cancel  context.CancelFunc

	engMu  sync.Mutex
	eng    gnet.Engine
	booted chan struct{}
	runErr chan error

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loopState

	tickDone chan struct{}
	stopOnce sync.Once
	stopErr  error

	conns, backendOpened, tunnelsTotal, requests, rejected, retries, offloads, idle atomic.Int64

	// backendWarn rate-limits the Warn lines for failures the operator must see (backend down,
	// timing out, answering garbage).
	backendWarn warnLimiter
}

// loopState is touched only on its own event loop (the ticker only reads hasQueued).
type loopState struct {
	srv       *Server
	el        gnet.EventLoop
	loop      netLoop // el as the state machine sees it (wire.go)
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

// Start listens on cfg.Listen and returns once the engine has booted.
func Start(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.Backend == "" {
		return nil, errors.New("wsgate: no backend address")
	}
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("wsgate: listen address %q: %w", cfg.Listen, err)
	}
	// gnet opens one SO_REUSEPORT listener per loop on the same address, so ":0" would give each
	// loop a different port. For port 0 run a single listener (gnet's main-reactor mode) and read
	// the port the kernel picked back from it in OnBoot.
	reusePort := port != "0"
	plane, err := splice.NewPlane(cfg.Tunnel)
	if err != nil {
		return nil, fmt.Errorf("wsgate: tunnel plane: %w", err)
	}
	s := &Server{
		backendWarn: warnLimiter{interval: time.Second},
		cfg:         cfg,
		log:         cfg.Logger,
		plane:       plane,
		addr:        net.JoinHostPort(host, port),
		host:        host,
		backend:     []byte(cfg.Backend),
		dialer:      net.Dialer{Timeout: cfg.DialTimeout},
		booted:      make(chan struct{}),
		runErr:      make(chan error, 1),
		loops:       make(map[gnet.EventLoop]*loopState),
		tickDone:    make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.dials = dialPool{jobs: make(chan dialJob), ctx: s.ctx, run: s.runDial}
	s.h = &handler{s: s}
	go func() {
		s.runErr <- gnet.Run(s.h, "tcp://"+s.addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(cfg.Loops),
			gnet.WithReusePort(reusePort),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithTCPKeepAlive(3*time.Minute),
			gnet.WithReadBufferCap(64<<10),
			gnet.WithLogger(gnetLogger{cfg.Logger}),
		)
	}()
	select {
	case <-s.booted:
	case err := <-s.runErr:
		s.cancel()
		_ = plane.Close()
		if err == nil {
			err = errors.New("engine exited before boot")
		}
		return nil, fmt.Errorf("wsgate: listen %s: %w", s.addr, err)
	}
	go s.ticker()
	s.log.Info("wsgate listening", "listen", s.addr, "backend", cfg.Backend, "loops", cfg.Loops)
	return s, nil
}

// Addr is the address the server listens on (with the real port when Listen asked for 0).
func (s *Server) Addr() string { return s.addr }

// Stop closes the listeners, every client and backend connection, and the tunnel plane.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.cancel()
		<-s.tickDone
		s.engMu.Lock()
		eng := s.eng
		s.engMu.Unlock()
		// Engine.Stop polls for completion every 500ms; Run returning is the precise signal
		// (event loops done, conns and listeners closed), so wait for that instead.
		stopCtx, stopCancel := context.WithCancel(ctx)
		go func() { _ = eng.Stop(stopCtx) }()
		var err error
		select {
		case <-s.runErr:
		case <-ctx.Done():
			err = ctx.Err()
		}
		stopCancel()
		if perr := s.plane.Close(); err == nil {
			err = perr
		}
		s.stopErr = err
	})
	return s.stopErr
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
		ls = &loopState{srv: s, el: el, loop: gnetLoop{el}, clients: make(map[*clientConn]struct{}), queued: make(map[*clientConn]struct{}), scratch: make([]byte, 0, 4096)}
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

// handler adapts gnet's callbacks to the per-connection state machines.
type handler struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.s.engMu.Lock()
	h.s.eng = eng
	h.s.engMu.Unlock()
	if strings.HasSuffix(h.s.addr, ":0") {
		if fd, err := eng.Dup(); err == nil {
			if sa, err := unix.Getsockname(fd); err == nil {
				switch a := sa.(type) {
				case *unix.SockaddrInet4:
					h.s.addr = net.JoinHostPort(h.s.host, strconv.Itoa(a.Port))
				case *unix.SockaddrInet6:
					h.s.addr = net.JoinHostPort(h.s.host, strconv.Itoa(a.Port))
				}
			}
			_ = unix.Close(fd)
		}
	}
	close(h.s.booted)
	return gnet.None
}

func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	switch v := c.Context().(type) {
	case *clientConn:
		v.reattached(c)
	case *backendConn:
		v.opened(c)
	case nil:
		s := h.s
		if s.conns.Add(1) > int64(s.cfg.MaxConns) {
			s.conns.Add(-1)
			s.rejected.Add(1)
			return errorResponse(503), gnet.Close
		}
		var ip []byte
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = []byte(a.IP.String())
		}
		c.SetContext(newClientConn(s.loopFor(c.EventLoop()), c, ip))
	}
	return nil, gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	onTraffic(c, c.Context())
	return gnet.None
}

func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	onClosed(c, c.Context(), err)
	return gnet.None
}

// gnetLogger routes gnet's logging to slog; gnet's chatty Info lines become Debug.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.log(slog.LevelDebug, f, a) }
func (g gnetLogger) Infof(f string, a ...any)  { g.log(slog.LevelDebug, f, a) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.log(slog.LevelWarn, f, a) }
func (g gnetLogger) Errorf(f string, a ...any) { g.log(slog.LevelError, f, a) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.log(slog.LevelError, f, a) }

func (g gnetLogger) log(lv slog.Level, f string, a []any) {
	if g.l.Enabled(context.Background(), lv) {
		g.l.Log(context.Background(), lv, fmt.Sprintf(f, a...), "component", "gnet")
	}
}
