// Command wsgate is an HTTP/1.1 and WebSocket edge reverse proxy: ordinary requests are proxied
// with keep-alive and streamed bodies, WebSocket upgrades become splice(2) tunnels once the
// backend has answered a verified 101.
//
//	wsgate -listen :8080 -backend 127.0.0.1:3000
//
// is the Apache "ProxyPass / ProxyPassReverse / ProxyPreserveHost On" + mod_proxy_wstunnel vhost;
// with -tls-cert/-tls-key (and -redirect-http :80) it is the <VirtualHost *:443> with SSLEngine On.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
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
	o, err := parseCommandLine(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout)
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "wsgate: %v\n", err)
		return exitUsage
	case o.version:
		printVersion(stdout)
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
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.level}))
	slog.SetDefault(logger)
	cfg.Logger = logger
	cfg.Tunnel.Logger = logger

	raiseNoFile(logger)
	if certs != nil {
		o.tls.logKTLS(logger)
	}

	// Before Start: a signal that arrives while it runs is acted on, not fatal.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sig)

	srv, err := loop.Start(cfg)
	if err != nil {
		logger.Error("start failed", "listen", cfg.Listen, "backend", cfg.Backend, "err", err)
		return exitFailure
	}
	defer startMemoryPolicy(o.memEvery, logger)()
	if o.tls.redirect != "" {
		stopRedirect, err := startRedirect(o.tls.redirect, srv.Addr(), cfg.HeaderTimeout, cfg.IdleTimeout, logger)
		if err != nil {
			logger.Error("start failed", "listen", o.tls.redirect, "err", err)
			stop(srv, sig, logger)
			return exitFailure
		}
		defer stopRedirect()
	}
	if certs != nil {
		logger.Info("serving TLS", "listen", srv.Addr(), "names", strings.Join(certs.Names(), ","), "min_version", o.tls.minVersion, "handshakes", o.tls.handshakes)
	}
	logger.Debug("config", "loops", cfg.Loops, "tunnel_loops", cfg.Tunnel.Loops, "splice", cfg.Tunnel.Splice,
		"addr", srv.Addr())

	for {
		select {
		case s := <-sig:
			switch s {
			case syscall.SIGHUP:
				if certs != nil {
					reloadCerts(certs, logger) // established connections keep what they have; flags stay
					continue
				}
				logger.Info("SIGHUP: configuration reload is not supported yet; ignored (restart wsgate to change flags)")
				continue
			case syscall.SIGUSR1, syscall.SIGUSR2:
				logger.Info(signalName(s) + ": not used yet; ignored")
				continue
			}
			logger.Info("stopping", "signal", signalName(s))
			return stop(srv, sig, logger)
		case <-srv.Done():
			logger.Error("the server failed and stops", "listen", srv.Addr(), "err", srv.Err())
			stop(srv, sig, logger)
			return exitFailure
		}
	}
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
