// Command wsgate is an HTTP/1.1 and WebSocket edge reverse proxy: ordinary requests are proxied
// with keep-alive and streamed bodies, WebSocket upgrades become splice(2) tunnels once the
// backend has answered a verified 101.
//
//	wsgate -listen :8080 -backend 127.0.0.1:3000
//
// is the Apache "ProxyPass / ProxyPassReverse / ProxyPreserveHost On" + mod_proxy_wstunnel vhost
// without TLS.
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
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/splice"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run parses args and serves until SIGINT/SIGTERM. Exit codes: 0 clean stop, 1 runtime failure,
// 2 bad command line.
func run(args []string, stderr io.Writer) int {
	cfg, level, memEvery, err := parseCommandLine(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "wsgate: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)
	cfg.Logger = logger
	cfg.Tunnel.Logger = logger

	raiseNoFile(logger)

	srv, err := loop.Start(cfg)
	if err != nil {
		logger.Error("start failed", "listen", cfg.Listen, "backend", cfg.Backend, "err", err)
		return 1
	}
	defer startMemoryPolicy(memEvery, logger)()
	logger.Debug("config", "loops", cfg.Loops, "tunnel_loops", cfg.Tunnel.Loops, "splice", cfg.Tunnel.Splice,
		"addr", srv.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	logger.Info("stopping", "signal", s.String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		logger.Error("stop", "err", err)
		return 1
	}
	return 0
}

// parseFlags builds a loop.Config from the command line. Every flag's default is the
// operator-facing default documented in README.md; a bad value is one line and exit code 2.
func parseFlags(args []string, stderr io.Writer) (loop.Config, slog.Level, error) {
	cfg, level, _, err := parseCommandLine(args, stderr)
	return cfg, level, err
}

// parseCommandLine is parseFlags plus the process-wide settings that are not part of loop.Config.
func parseCommandLine(args []string, stderr io.Writer) (loop.Config, slog.Level, time.Duration, error) {
	cfg := loop.DefaultConfig()
	// Show operators the effective values in -h rather than the zero values the packages
	// interpret as "default".
	cfg.Listen, cfg.Backend = "127.0.0.1:8080", "127.0.0.1:3000"
	cfg.Tunnel.Loops = runtime.GOMAXPROCS(0)
	cfg.Tunnel.PipeSize = splice.DefaultPipeSize
	cfg.Tunnel.PipePoolMax = splice.DefaultPipePoolMax
	cfg.Tunnel.FinTimeout = splice.DefaultFinTimeout
	fs := flag.NewFlagSet("wsgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: wsgate -listen ADDR -backend HOST:PORT [flags]\n\n")
		fs.PrintDefaults()
	}

	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to accept clients on (host:port)")
	fs.StringVar(&cfg.Backend, "backend", cfg.Backend, "backend address (host:port) for HTTP and WebSocket traffic")
	fs.IntVar(&cfg.Loops, "loops", cfg.Loops, "gnet event loops for HTTP")
	fs.BoolVar(&cfg.PreserveHost, "preserve-host", cfg.PreserveHost, "pass the client's Host to the backend (Grafana checks Origin against it)")
	fs.BoolVar(&cfg.Forwarded, "forwarded", cfg.Forwarded, "set X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", cfg.HeaderTimeout, "time a client has to send a complete request head (then 408)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "close idle client keep-alive connections after this long")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", cfg.DialTimeout, "backend connect timeout (then 504)")
	fs.DurationVar(&cfg.ResponseTimeout, "response-timeout", cfg.ResponseTimeout, "time the backend has to send a response head (then 504)")
	fs.IntVar(&cfg.BackendIdle, "backend-idle", cfg.BackendIdle, "idle keep-alive backend connections kept per event loop")
	fs.DurationVar(&cfg.BackendIdleTimeout, "backend-idle-timeout", cfg.BackendIdleTimeout, "close pooled backend connections idle this long")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "client connections served at once; more get 503")
	fs.IntVar(&cfg.MaxHeadBytes, "max-head-bytes", cfg.MaxHeadBytes, "largest request head accepted (then 431)")
	fs.IntVar(&cfg.BodyHighWater, "body-high-water", cfg.BodyHighWater, "bytes queued toward a slow peer before a body moves to the tunnel plane")
	fs.IntVar(&cfg.Tunnel.Loops, "tunnel-loops", cfg.Tunnel.Loops, "tunnel-plane epoll loops")
	fs.BoolVar(&cfg.Tunnel.Splice, "splice", cfg.Tunnel.Splice, "join tunnels with splice(2); false copies through pooled buffers")
	fs.IntVar(&cfg.Tunnel.PipeSize, "pipe-size", cfg.Tunnel.PipeSize, "pipe capacity in bytes for spliced transfers (F_SETPIPE_SZ)")
	fs.IntVar(&cfg.Tunnel.PipePoolMax, "pipe-pool-max", cfg.Tunnel.PipePoolMax, "idle pipes kept per tunnel loop")
	fs.DurationVar(&cfg.Tunnel.IdleTimeout, "tunnel-idle-timeout", cfg.Tunnel.IdleTimeout, "close a tunnel quiet both ways this long (0 = never: tails are quiet for hours)")
	fs.DurationVar(&cfg.Tunnel.FinTimeout, "tunnel-fin-timeout", cfg.Tunnel.FinTimeout, "after one side of a tunnel finished, the other gets this long (0 = no limit)")
	headerNames := fs.String("header-names", cfg.HeaderNames.String(), "request field names with bytes other than A-Z a-z 0-9 and - (X_Forwarded_For): drop them, or reject the request with 400")
	levelName := fs.String("log-level", "info", "log level: debug, info, warn, error")
	memEvery := fs.Duration("memory-return", 10*time.Second, "once the heap is quiet, hand freed memory back to the OS at most this often (0 = leave it to the Go runtime)")

	if err := fs.Parse(args); err != nil {
		return cfg, 0, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, 0, fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*levelName)); err != nil {
		return cfg, 0, 0, fmt.Errorf("-log-level %q: want debug, info, warn or error", *levelName)
	}
	if err := cfg.HeaderNames.UnmarshalText([]byte(*headerNames)); err != nil {
		return cfg, 0, 0, fmt.Errorf("-header-names %q: want drop or reject", *headerNames)
	}
	if err := validate(cfg); err != nil {
		return cfg, 0, 0, err
	}
	if *memEvery < 0 {
		return cfg, 0, 0, fmt.Errorf("-memory-return %v: must not be negative", *memEvery)
	}
	// splice.Config reads 0 as "use the default"; an operator's explicit 0 means none.
	if cfg.Tunnel.PipePoolMax == 0 {
		cfg.Tunnel.PipePoolMax = -1
	}
	if cfg.Tunnel.FinTimeout == 0 {
		cfg.Tunnel.FinTimeout = -1
	}
	return cfg, level, *memEvery, nil
}

func validate(cfg loop.Config) error {
	switch {
	case cfg.Listen == "":
		return errors.New("-listen is empty")
	case cfg.Backend == "":
		return errors.New("-backend is empty")
	case cfg.Loops < 1:
		return fmt.Errorf("-loops %d: want 1 or more", cfg.Loops)
	case cfg.Tunnel.Loops < 1:
		return fmt.Errorf("-tunnel-loops %d: want 1 or more", cfg.Tunnel.Loops)
	case cfg.MaxConns < 1:
		return fmt.Errorf("-max-conns %d: want 1 or more", cfg.MaxConns)
	case cfg.BackendIdle < 0:
		return fmt.Errorf("-backend-idle %d: want 0 or more", cfg.BackendIdle)
	case cfg.MaxHeadBytes < 1024:
		return fmt.Errorf("-max-head-bytes %d: want 1024 or more", cfg.MaxHeadBytes)
	case cfg.BodyHighWater < 4096:
		return fmt.Errorf("-body-high-water %d: want 4096 or more", cfg.BodyHighWater)
	case cfg.Tunnel.PipeSize < 0:
		return fmt.Errorf("-pipe-size %d: want 0 (kernel default) or more", cfg.Tunnel.PipeSize)
	case cfg.Tunnel.PipePoolMax < 0:
		return fmt.Errorf("-pipe-pool-max %d: want 0 or more", cfg.Tunnel.PipePoolMax)
	}
	for name, d := range map[string]time.Duration{
		"-header-timeout": cfg.HeaderTimeout, "-idle-timeout": cfg.IdleTimeout,
		"-dial-timeout": cfg.DialTimeout, "-response-timeout": cfg.ResponseTimeout,
		"-backend-idle-timeout": cfg.BackendIdleTimeout,
		"-tunnel-idle-timeout":  cfg.Tunnel.IdleTimeout, "-tunnel-fin-timeout": cfg.Tunnel.FinTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("%s %v: must not be negative", name, d)
		}
	}
	return nil
}

// raiseNoFile lifts RLIMIT_NOFILE's soft limit to the hard limit: every tunnel costs two fds
// and an edge host holds thousands of them.
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
