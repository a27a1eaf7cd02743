// Command wsgate is an HTTP/1.1 and WebSocket edge reverse proxy: ordinary requests are proxied
// with keep-alive and streamed bodies, WebSocket upgrades become splice(2) tunnels once the
// backend has answered a verified 101.
//
//	wsgate -listen :8080 -backend 127.0.0.1:3000
//
// is the Apache "ProxyPass / ProxyPassReverse / ProxyPreserveHost On" + mod_proxy_wstunnel vhost;
// with -tls-cert/-tls-key (and -redirect-http :80) it is the <VirtualHost *:443> with SSLEngine
// On. Several backends go behind one port with routes (host and longest path prefix, pools with
// balancing and health; docs/routing.md), on the command line or in a TOML file:
//
//	wsgate -listen :8080 -route /=127.0.0.1:3000 -route /loki/=127.0.0.1:3100,127.0.0.1:3101
//	wsgate -config /etc/wsgate.toml
//	wsgate -check-config -config /etc/wsgate.toml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/admin"
	"github.com/wsgate/wsgate/handoff"
	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/sdnotify"
	"github.com/wsgate/wsgate/tlsterm"
)

func main() {
	os.Exit(runIO(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0 // clean stop, -h, -version
	exitFailure = 1 // could not start, or the server failed while running
	exitUsage   = 2 // bad command line: one line on stderr
)

// stopTimeout bounds a stop: listeners, connections and tunnels are closed within it.
const stopTimeout = 10 * time.Second

// run is runIO with stdout and stderr on one writer (tests).
func run(args []string, out io.Writer) int { return runIO(args, out, out) }

// runIO parses args and serves until SIGINT/SIGTERM, or until the server fails for good.
func runIO(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "upgrade" {
		return runUpgradeCommand(args[1:], stdout, stderr) // control.go
	}
	// A successor started by a binary upgrade (upgrade.go) checks the hand-off socket it
	// inherited before anything else; nil for an ordinary start.
	succ, err := handoff.Inherited()
	if err != nil {
		fmt.Fprintf(stderr, "wsgate: binary upgrade: %v\n", err)
		return exitFailure
	}
	code := serveIO(args, stdout, stderr, succ)
	if succ != nil && code != exitOK {
		// Never READY: the predecessor keeps serving; FAIL tells it why instead of an EOF.
		succ.Fail(fmt.Errorf("the successor exited with status %d before taking over (see its log)", code))
	}
	return code
}

// serveIO is runIO once the hand-off socket, if any, is checked; succ is non-nil in a successor.
func serveIO(args []string, stdout, stderr io.Writer, succ *handoff.Receiver) int {
	o, err := parseCommandLine(args)
	var ce configErrors
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout)
		return exitOK
	case errors.As(err, &ce):
		printLines(stderr, ce.lines())
		if o.checkConfig {
			return exitFailure
		}
		return exitUsage
	case err != nil:
		fmt.Fprintf(stderr, "wsgate: %v\n", err)
		var fe *flagError
		if o.checkConfig && errors.As(err, &fe) {
			return exitFailure // a value the rules refuse: -check-config's "not good"
		}
		return exitUsage
	case o.version:
		printVersion(stdout)
		return exitOK
	case o.checkConfig:
		// Nothing listens and no probe starts: NewTable is pure.
		t, err := route.NewTable(o.routes, o.routeDefaults(slog.New(slog.DiscardHandler)), nil)
		if err != nil {
			printLines(stderr, strings.Split(err.Error(), "\n"))
			return exitFailure
		}
		if o.tls.enabled() {
			if _, _, err := o.tls.load(); err != nil { // the certificate files are part of the configuration
				printLines(stderr, []string{err.Error()})
				return exitFailure
			}
		}
		fmt.Fprintf(stdout, "wsgate: %s: ok: %d routes, %d backends\n", o.configFile, len(t.Routes()), len(t.Members()))
		for i, r := range t.Routes() {
			fmt.Fprintf(stdout, "  %-28s -> %s (%s)\n", r.String(), membersOf(r), o.origins[i])
		}
		return exitOK
	}
	cfg := o.cfg
	var certs *tlsterm.CertStore
	if o.tls.enabled() {
		// A certificate or key that cannot be used is a configuration error, like a bad flag.
		if certs, cfg.TLS, err = o.tls.load(); err != nil {
			fmt.Fprintf(stderr, "wsgate: %v\n", err)
			return exitUsage
		}
	}
	// wsgate's own log and an access log on the same stream share one lock, so that their lines
	// never interleave within a write.
	stdout, stderr = &lockedWriter{w: stdout}, &lockedWriter{w: stderr}
	level := new(slog.LevelVar) // a reload may change it
	level.Set(o.level)
	logger := slog.New(accesslog.NewHandler(stderr, o.logFormat, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)
	cfg.Logger = logger
	cfg.Tunnel.Logger = logger

	table, err := route.NewTable(o.routes, o.routeDefaults(logger), nil)
	if err != nil {
		printLines(stderr, strings.Split(err.Error(), "\n"))
		return exitUsage
	}
	table.Start() // active health probes, off the event loops
	cfg.Routes = table
	if succ != nil {
		cfg.ListenLock = succ.File("lock") // binds beside the predecessor (upgrade.go)
	}
	if o.file.File != "" {
		logger.Info("config", "file", o.file.File, "from_file", strings.Join(o.file.FromFile, ","), "overridden_by_flags", strings.Join(o.file.Overridden, ","))
	}

	raiseNoFile(logger)
	if certs != nil {
		o.tls.logKTLS(logger)
	}
	reserveProcs(&cfg, logger) // procs.go: the tunnel plane's loops need Ps gnet's waiting loops do not hold

	// Before Start: a signal that arrives while it runs is acted on, not fatal.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sig)

	// The access log, the metrics and the admin listener. Closed after the server has stopped
	// (deferred), so the lines of the last exchanges and tunnels are written.
	alog, err := openAccessLog(o, stdout, stderr, logger)
	if err != nil {
		logger.Error("start failed", "access_log", o.accessLog, "err", err)
		return exitFailure
	}
	defer func() {
		if err := alog.Close(); err != nil {
			logger.Error("access log", "err", err)
		}
	}()
	cfg.AccessLog = alog
	var reg *metrics.Registry
	var adm *admin.Server
	defer func() {
		if adm != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = adm.Shutdown(ctx)
		}
	}()
	startAdmin := func() error {
		if o.admin == "" {
			return nil
		}
		var ln net.Listener
		if succ != nil {
			ln = inheritedTCP(succ, "admin", o.admin, logger) // upgrade.go: the predecessor's, when it is the same address
		}
		var err error
		adm, err = admin.Start(admin.Config{Addr: o.admin, Listener: ln, Metrics: reg.Handler(), Pprof: o.adminPprof, Logger: logger})
		if err != nil {
			logger.Error("start failed", "admin", o.admin, "err", err)
			return err
		}
		logger.Info("admin listening", "admin", adm.Addr(), "pprof", o.adminPprof)
		return nil
	}
	if o.admin != "" {
		reg = metrics.NewRegistry()
		reg.SetAccessLogDropped(alog.Dropped)
		cfg.Metrics = reg
		// /readyz answers 503 until the proxy listens. A successor starts its admin listener
		// only once it listens: it may share the predecessor's admin socket, and must not say
		// "not ready" there meanwhile.
		if succ == nil && startAdmin() != nil {
			return exitFailure
		}
	}

	srv, err := loop.Start(cfg)
	if cfg.ListenLock != nil {
		cfg.ListenLock.Close() // the guard holds its own copy
	}
	if err != nil {
		table.Close()
		logger.Error("start failed", "listen", cfg.Listen, "err", err)
		return exitFailure
	}
	if succ != nil && startAdmin() != nil {
		stop(srv, sig, logger)
		return exitFailure
	}
	if adm != nil {
		adm.SetReady(true) // the proxy listens: /readyz says so until a drain starts
	}
	defer startMemoryPolicy(o.memEvery, logger)()
	var redirect *redirectServer
	if o.tls.redirect != "" {
		var ln net.Listener
		if succ != nil {
			ln = inheritedTCP(succ, "redirect", o.tls.redirect, logger) // upgrade.go: the predecessor's socket
		}
		if redirect, err = startRedirect(o.tls.redirect, srv.Addr(), ln, cfg.HeaderTimeout, cfg.IdleTimeout, logger); err != nil {
			logger.Error("start failed", "listen", o.tls.redirect, "err", err)
			stop(srv, sig, logger)
			return exitFailure
		}
	}
	if certs != nil {
		logger.Info("serving TLS", "listen", srv.Addr(), "names", strings.Join(certs.Names(), ","), "min_version", o.tls.minVersion, "handshakes", o.tls.handshakes)
	}
	logger.Debug("config", "loops", cfg.Loops, "tunnel_loops", cfg.Tunnel.Loops, "splice", cfg.Tunnel.Splice,
		"addr", srv.Addr())

	lc := &lifecycle{args: args, o: o, srv: srv, table: table, log: logger, level: level, notify: sdnotify.FromEnv(), sig: sig,
		ctl: make(chan controlRequest), alog: alog, adm: adm, reg: reg, certs: certs, redirect: redirect}
	if adm != nil {
		lc.setReady = adm.SetReady
	}
	defer func() { lc.table.Close() }() // the one in use after the last reload
	defer lc.closeRedirect()
	var inheritedCtl *os.File
	if succ != nil {
		inheritedCtl = succ.File("control")
	}
	if lc.ctlLn, err = listenControl(srv.Addr(), inheritedCtl, logger); err != nil {
		logger.Warn("no control socket: `wsgate upgrade` cannot reach this process (SIGUSR2 still upgrades)", "err", err)
	}
	defer lc.closeControl()
	if succ != nil {
		if !lc.takeOver(succ) {
			stop(srv, sig, logger)
			return exitOK
		}
	} else {
		lc.started()
	}
	if lc.ctlLn != nil {
		go serveControl(lc.ctlLn, lc.ctl, logger)
	}
	return lc.serve()
}

// openAccessLog opens -access-log: nil for off, the process' stdout or stderr (the writers runIO
// was given), or a file.
func openAccessLog(o options, stdout, stderr io.Writer, logger *slog.Logger) (*accesslog.Log, error) {
	cfg := accesslog.Config{Format: o.logFormat, Logger: logger}
	switch o.accessLog {
	case "off":
		return nil, nil
	case "stdout":
		return accesslog.New(stdout, cfg), nil
	case "stderr":
		return accesslog.New(stderr, cfg), nil
	}
	return accesslog.Open(o.accessLog, cfg)
}

// reopenAccessLog is SIGUSR1: logrotate renamed the file; lines accepted so far go to the old
// one, the rest to a new file at the same path.
func reopenAccessLog(dest string, alog *accesslog.Log, logger *slog.Logger) {
	switch dest {
	case "off", "stdout", "stderr":
		logger.Info("SIGUSR1: the access log is not a file; nothing to reopen", "access_log", dest)
		return
	}
	if err := alog.Reopen(); err != nil {
		logger.Error("SIGUSR1: reopening the access log failed; still writing to the old file", "access_log", dest, "err", err)
		return
	}
	logger.Info("SIGUSR1: access log reopened", "access_log", dest)
}

// lockedWriter serialises the writes of wsgate's own log and of an access log sharing a stream.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stop stops srv within stopTimeout; a second SIGINT or SIGTERM meanwhile exits at once.
func stop(srv *loop.Server, sig <-chan os.Signal, logger *slog.Logger) int {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Stop(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				logger.Error("stop", "err", err)
				return exitFailure
			}
			return exitOK
		case s := <-sig:
			if s == syscall.SIGINT || s == syscall.SIGTERM {
				logger.Warn("second "+signalName(s)+" while stopping: exiting now", "signal", signalName(s))
				return exitFailure
			}
		}
	}
}

// printLines writes each message on its own line, prefixed like every wsgate error.
func printLines(w io.Writer, lines []string) {
	for _, l := range lines {
		if l != "" {
			fmt.Fprintf(w, "wsgate: %s\n", l)
		}
	}
}

// membersOf lists a route's backends for -check-config's summary.
func membersOf(r *route.Route) string {
	var s []string
	for _, m := range r.Pool.Members() {
		s = append(s, m.Addr())
	}
	return strings.Join(s, ",") + " " + r.Pool.Balance().String()
}

func signalName(s os.Signal) string {
	if n := unix.SignalName(s.(syscall.Signal)); n != "" {
		return n
	}
	return s.String()
}

// raiseNoFile lifts RLIMIT_NOFILE's soft limit to the hard limit: every tunnel costs two fds
// and an edge host holds thousands of them. loop.Start sizes its fd budget from the result and
// warns when it cannot cover -max-conns.
func raiseNoFile(logger *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		logger.Warn("getrlimit NOFILE", "err", err)
		return
	}
	soft := lim.Cur
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			logger.Warn("raise RLIMIT_NOFILE", "soft", soft, "hard", lim.Max, "err", err)
			return
		}
	}
	logger.Info("RLIMIT_NOFILE", "soft_was", soft, "soft", lim.Cur, "hard", lim.Max)
}
