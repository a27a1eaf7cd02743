// Command wsgate-demo is the backend that `make run` puts behind wsgate. It imitates the shape of
// Grafana and Loki closely enough to exercise what matters to the proxy:
//
//   - GET /                        a self-contained live-tail page (HTML + inline JS/CSS)
//   - WS  /loki/api/v1/tail        Loki's tail stream: a synthetic log line every -interval,
//     client text messages echoed into the stream, Origin checked against Host (Grafana 8.0.4+
//     answers 403 when they differ, which is why the proxy must preserve Host)
//   - WS  /api/live/ws             a plain echo, standing in for Grafana Live
//   - GET /api/health              JSON health document
//   - GET /api/headers             the request head as the backend saw it (X-Forwarded-*, Host)
//   - GET /api/redirect            302 to this backend's own address (ProxyPassReverse rewrites it)
//   - POST /api/echo               the request body streamed back chunked, with trailers
//   - GET /api/big?bytes=N         exactly N bytes with Content-Length
//   - GET /api/slow?ms=N           answers after N ms (meets the proxy's -response-timeout)
//   - GET /loki/api/v1/labels      Loki's label list (JSON)
//   - GET /ready                   Loki's readiness (what wsgate's health_path probes)
//
// -role splits it the way the real services are split: grafana serves the page, /api/* and
// /api/live/ws; loki serves /loki/api/v1/* and /ready; all (the default) serves everything on one
// address. Every answer names the process in X-Demo-Server.
//
// Usage:
//
//	wsgate-demo -listen 127.0.0.1:3000 -interval 500ms
//	wsgate-demo -role grafana -listen 127.0.0.1:3000 & wsgate-demo -role loki -listen 127.0.0.1:3100 &
//
// cmd/wsgate-demo/run.sh (make run) starts a grafana and a loki process behind wsgate's two routes
// (/ and /loki/); browsercheck.sh loads the page in headless Chromium and asserts that lines
// stream through the proxy from the Loki-like process.
//
// The demo uses net/http and gorilla/websocket on purpose: it is a well-behaved stock peer, not part
// of the proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run serves until SIGINT/SIGTERM. Exit codes: 0 clean stop, 1 runtime failure, 2 bad command line.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsgate-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:3000", "address to serve the demo backend on")
	interval := fs.Duration("interval", 500*time.Millisecond, "pause between synthetic log lines on a tail")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	role := fs.String("role", roleAll, "which backend to imitate: all (the page, /api/* and Loki's /loki/api/v1/* on one address), grafana (the page, /api/*, /api/live/ws) or loki (/loki/api/v1/tail, /loki/api/v1/labels, /ready); make run starts a grafana and a loki process behind two wsgate routes")
	genDir := fs.String("gen-tls", "", "write a local CA and a certificate for -tls-names into this directory (ca.pem, cert.pem, key.pem; kept while valid), print its SPKI hash and exit (make run TLS=1)")
	tlsNames := fs.String("tls-names", "localhost,127.0.0.1", "names (DNS names, IP addresses) of the -gen-tls certificate")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: wsgate-demo [-listen ADDR] [-interval DURATION]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wsgate-demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *genDir != "" {
		if err := genTLS(*genDir, *tlsNames, os.Stdout); err != nil {
			fmt.Fprintf(stderr, "wsgate-demo: %v\n", err)
			return 1
		}
		return 0
	}
	if *role != roleAll && *role != roleGrafana && *role != roleLoki {
		fmt.Fprintf(stderr, "wsgate-demo: -role %q: want all, grafana or loki\n", *role)
		return 2
	}
	if *interval <= 0 {
		fmt.Fprintf(stderr, "wsgate-demo: -interval must be positive, got %v\n", *interval)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "wsgate-demo: bad -log-level %q: %v\n", *logLevel, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error("listen failed (is the port already in use?)", "listen", *listen, "err", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDemo(ctx, ln.Addr().String(), *interval, logger)
	d.role = *role
	srv := &http.Server{
		Handler:           d.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("wsgate-demo listening", "listen", ln.Addr().String(), "role", *role, "interval", *interval)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		logger.Info("stopping", "signal", s.String())
	case err := <-served:
		logger.Error("serve failed", "listen", ln.Addr().String(), "err", err)
		return 1
	}
	// Hijacked WebSocket connections are invisible to Shutdown: cancelling ctx makes every socket
	// handler send a 1001 close frame, and Shutdown waits for plain requests.
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Error("shutdown", "err", err)
		return 1
	}
	d.wait(sctx)
	return 0
}
