// Package admin is wsgate's admin listener (-admin ADDR): /metrics, /healthz, /readyz and, with
// -admin-pprof, /debug/pprof/. It runs on net/http on its own address, never on the proxy
// listener: it is process plumbing, not the proxy plane.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"
)

// Config configures the admin listener.
type Config struct {
	Addr    string       // "127.0.0.1:9180"; port 0 picks a free port (see Server.Addr)
	Metrics http.Handler // served on /metrics (metrics.Registry.Handler); nil: /metrics is 404
	Pprof   bool         // serve /debug/pprof/ (-admin-pprof)
	Logger  *slog.Logger // default slog.Default()

	// Listener, when set, is served instead of listening on Addr: the listener a binary upgrade's
	// successor inherits from its predecessor (issue 12), so the admin address never stops
	// answering. Start owns it from the call on.
	Listener net.Listener
}

// Server is a running admin listener.
type Server struct {
	ln    net.Listener
	srv   *http.Server
	ready atomic.Bool
	done  chan struct{}
	err   error
}

// Start listens on cfg.Addr and serves in a goroutine. The server starts not ready: /readyz is
// 503 until SetReady(true) (the proxy listener may not be up yet).
func Start(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("admin listener %s: %w", cfg.Addr, err)
		}
	}
	s := &Server{ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.ready.Load() {
			plain(w, http.StatusOK, "ready\n")
		} else {
			plain(w, http.StatusServiceUnavailable, "not ready\n")
		}
	})
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	if cfg.Pprof {
		// Registered on this mux only: importing net/http/pprof also registers on
		// http.DefaultServeMux, which wsgate never serves.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		// No WriteTimeout: /debug/pprof/profile?seconds=30 writes after 30 s.
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
			cfg.Logger.Error("admin listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// Addr is the address the admin listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// File returns a duplicate of the listening socket, for a binary upgrade's successor (issue 12):
// it serves the same socket (Config.Listener) and the address never stops answering.
func (s *Server) File() (*os.File, error) {
	fl, ok := s.ln.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("admin listener %T cannot be passed on", s.ln)
	}
	return fl.File()
}

// SetReady sets what /readyz answers: 200 while wsgate accepts new work, 503 from the moment a
// drain starts (issue 12) or before the proxy listener is up.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Ready reports the current readiness.
func (s *Server) Ready() bool { return s.ready.Load() }

// Shutdown stops the listener and waits for requests in flight (a scrape) until ctx ends, then
// closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.done
	if err == nil {
		err = s.err
	}
	return err
}
