package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/splice"
)

// options is the parsed command line.
type options struct {
	cfg         loop.Config
	level       slog.Level
	memEvery    time.Duration
	version     bool
	headerNames *string
	tls         tlsOptions // -tls-*, -ktls, -redirect-http (tls.go)
}

// The zero-value rule, one for every flag (README "Flags", -h): where the flag's text says what
// 0 means, 0 turns that thing off: -backend-idle, -pipe-pool-max and -max-pipes keep none,
// -pipe-size 0 is the kernel's default pipe size, -tunnel-idle-timeout, -tunnel-fin-timeout and
// -memory-return 0 mean no limit. Every other count or timeout refuses 0 with one line (a
// request head timeout of "none" would let any client hold a connection forever). The packages'
// Config types read 0 as "default" (so a zero Config works), so an explicit 0 is passed on as
// their "none" value, -1.
const zeroRule = `A value of 0 means "none" only where the flag says so (-backend-idle, -pipe-pool-max,
-max-pipes: keep none; -pipe-size: the kernel's default; -tunnel-idle-timeout, -tunnel-fin-timeout,
-memory-return: no limit); every other count or timeout must be more than 0.`

// flagSet builds the flag set over o with the documented defaults.
func flagSet(o *options) (*flag.FlagSet, *string) {
	cfg := loop.DefaultConfig()
	// Show operators the effective values in -h rather than the zero values the packages
	// interpret as "default".
	cfg.Listen, cfg.Backend = "127.0.0.1:8080", "127.0.0.1:3000"
	cfg.Tunnel.Loops = runtime.GOMAXPROCS(0)
	cfg.Tunnel.PipeSize = splice.DefaultPipeSize
	cfg.Tunnel.PipePoolMax = splice.DefaultPipePoolMax
	cfg.Tunnel.MaxPipes = cfg.MaxConns / 4
	cfg.Tunnel.FinTimeout = splice.DefaultFinTimeout
	o.cfg = cfg
	o.memEvery = 10 * time.Second
	c := &o.cfg

	fs := flag.NewFlagSet("wsgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are ours to print, in one line; -h prints usage on stdout
	fs.Usage = func() {}

	fs.StringVar(&c.Listen, "listen", c.Listen, "address to accept clients on (host:port; no host = every address)")
	fs.StringVar(&c.Backend, "backend", c.Backend, "backend for HTTP and WebSocket traffic: host:port or http://host[:port]")
	fs.IntVar(&c.Loops, "loops", c.Loops, "gnet event loops for HTTP")
	fs.BoolVar(&c.PreserveHost, "preserve-host", c.PreserveHost, "pass the client's Host to the backend (Grafana checks Origin against it)")
	fs.BoolVar(&c.Forwarded, "forwarded", c.Forwarded, "set X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host")
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", c.HeaderTimeout, "time a client has to send a complete request head (then 408)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close idle client keep-alive connections after this long")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "backend connect timeout (then 504)")
	fs.DurationVar(&c.ResponseTimeout, "response-timeout", c.ResponseTimeout, "time the backend has to send a response head (then 504)")
	fs.IntVar(&c.BackendIdle, "backend-idle", c.BackendIdle, "idle keep-alive backend connections kept per event loop (0 = none: a new connection per request)")
	fs.DurationVar(&c.BackendIdleTimeout, "backend-idle-timeout", c.BackendIdleTimeout, "close pooled backend connections idle this long")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "client connections and tunnels at once; more get 503")
	fs.IntVar(&c.MaxHeadBytes, "max-head-bytes", c.MaxHeadBytes, "largest request head accepted (then 431)")
	fs.IntVar(&c.BodyHighWater, "body-high-water", c.BodyHighWater, "bytes queued toward a slow peer before a body moves to the tunnel plane")
	fs.IntVar(&c.Tunnel.Loops, "tunnel-loops", c.Tunnel.Loops, "tunnel-plane epoll loops")
	fs.BoolVar(&c.Tunnel.Splice, "splice", c.Tunnel.Splice, "join tunnels with splice(2); false copies through pooled buffers")
	fs.IntVar(&c.Tunnel.PipeSize, "pipe-size", c.Tunnel.PipeSize, "pipe capacity in bytes for spliced transfers (F_SETPIPE_SZ; 0 = the kernel's default, 64 KiB)")
	fs.IntVar(&c.Tunnel.PipePoolMax, "pipe-pool-max", c.Tunnel.PipePoolMax, "idle pipes kept per tunnel loop (0 = none)")
	fs.IntVar(&c.Tunnel.MaxPipes, "max-pipes", c.Tunnel.MaxPipes, "pipes the tunnel plane may hold, busy and idle; past it tunnels copy (0 = no pipes; unset: a quarter of -max-conns)")
	fs.DurationVar(&c.Tunnel.IdleTimeout, "tunnel-idle-timeout", c.Tunnel.IdleTimeout, "close a tunnel quiet both ways this long (0 = never: tails are quiet for hours)")
	fs.DurationVar(&c.Tunnel.FinTimeout, "tunnel-fin-timeout", c.Tunnel.FinTimeout, "after one side of a tunnel finished, the other gets this long (0 = no limit)")
	fs.DurationVar(&o.memEvery, "memory-return", o.memEvery, "once the heap is quiet, hand freed memory back to the OS at most this often (0 = leave it to the Go runtime)")
	o.headerNames = fs.String("header-names", c.HeaderNames.String(), "request field names with bytes other than A-Z a-z 0-9 and - (X_Forwarded_For): drop them, or reject the request with 400")
	o.tls.flags(fs)
	levelName := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&o.version, "version", false, "print the version and build information, then exit")
	return fs, levelName
}

// parseFlags is parseCommandLine's loop.Config and log level (tests).
func parseFlags(args []string, _ io.Writer) (loop.Config, slog.Level, error) {
	o, err := parseCommandLine(args)
	return o.cfg, o.level, err
}

// parseCommandLine parses args into options. Every error is one line (no usage dump): the flag
// package's own messages, a flag given twice, a stray argument, or a value the rules refuse.
func parseCommandLine(args []string) (options, error) {
	var o options
	fs, levelName := flagSet(&o)
	dup := onlyOnce(fs)
	if err := fs.Parse(args); err != nil {
		if *dup != nil {
			return o, *dup
		}
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%v (see wsgate -h)", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (flags only; see wsgate -h)", fs.Arg(0))
	}
	if o.version {
		return o, nil
	}
	if err := o.level.UnmarshalText([]byte(*levelName)); err != nil {
		return o, fmt.Errorf("-log-level %q: want debug, info, warn or error", *levelName)
	}
	if err := o.cfg.HeaderNames.UnmarshalText([]byte(*o.headerNames)); err != nil {
		return o, fmt.Errorf("-header-names %q: want drop or reject", *o.headerNames)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["max-conns"] && !set["max-pipes"] {
		o.cfg.Tunnel.MaxPipes = o.cfg.MaxConns / 4
	}
	if err := validate(&o); err != nil {
		return o, err
	}
	if err := o.tls.validate(o.cfg.Listen); err != nil {
		return o, err
	}
	return o, nil
}

// validate checks every value and turns the flags' zeros into the Config's "none" values.
func validate(o *options) error {
	c := &o.cfg
	var err error
	if c.Listen, err = checkListen(c.Listen); err != nil {
		return err
	}
	if c.Backend, err = checkBackend(c.Backend); err != nil {
		return err
	}
	for _, v := range []struct {
		name     string
		val, min int
		what     string
	}{
		{"-loops", c.Loops, 1, "1 or more"},
		{"-tunnel-loops", c.Tunnel.Loops, 1, "1 or more"},
		{"-max-conns", c.MaxConns, 1, "1 or more"},
		{"-max-head-bytes", c.MaxHeadBytes, 1024, "1024 or more"},
		{"-body-high-water", c.BodyHighWater, 4096, "4096 or more"},
		{"-backend-idle", c.BackendIdle, 0, "0 (none) or more"},
		{"-pipe-size", c.Tunnel.PipeSize, 0, "0 (kernel default) or more"},
		{"-pipe-pool-max", c.Tunnel.PipePoolMax, 0, "0 (none) or more"},
		{"-max-pipes", c.Tunnel.MaxPipes, 0, "0 (none) or more"},
	} {
		if v.val < v.min {
			return fmt.Errorf("%s %d: want %s", v.name, v.val, v.what)
		}
	}
	for _, d := range []struct {
		name string
		val  time.Duration
	}{
		{"-header-timeout", c.HeaderTimeout}, {"-idle-timeout", c.IdleTimeout},
		{"-dial-timeout", c.DialTimeout}, {"-response-timeout", c.ResponseTimeout},
		{"-backend-idle-timeout", c.BackendIdleTimeout},
	} {
		if d.val <= 0 {
			return fmt.Errorf("%s %v: want more than 0 (this timeout cannot be turned off)", d.name, d.val)
		}
	}
	for _, d := range []struct {
		name string
		val  time.Duration
	}{
		{"-tunnel-idle-timeout", c.Tunnel.IdleTimeout}, {"-tunnel-fin-timeout", c.Tunnel.FinTimeout},
		{"-memory-return", o.memEvery},
	} {
		if d.val < 0 {
			return fmt.Errorf("%s %v: want 0 (no limit) or more", d.name, d.val)
		}
	}
	// loop.Config and splice.Config read 0 as "the default"; the flags' 0 means none.
	none := func(v *int) {
		if *v == 0 {
			*v = -1
		}
	}
	none(&c.BackendIdle)
	none(&c.Tunnel.PipeSize)
	none(&c.Tunnel.PipePoolMax)
	none(&c.Tunnel.MaxPipes)
	if c.Tunnel.FinTimeout == 0 {
		c.Tunnel.FinTimeout = -1
	}
	return nil
}

// checkListen accepts host:port with a port from 0 to 65535 (0: any free port) and an empty,
// IP or DNS-name host.
func checkListen(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("-listen %q: want host:port (e.g. :8080 or 127.0.0.1:8080)", s)
	}
	if _, ok := parsePort(port, 0); !ok {
		return "", fmt.Errorf("-listen %q: port %q is not a number from 0 to 65535", s, port)
	}
	if host != "" && !validHost(host) {
		return "", fmt.Errorf("-listen %q: %q is not an IP address or host name", s, host)
	}
	return s, nil
}

// checkBackend accepts host:port, and http://host[:port][/] which it normalises to host:port
// (port 80 when none is given). Anything else is one line naming what is wrong.
func checkBackend(s string) (string, error) {
	orig := s
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("-backend %q: %s (want host:port or http://host:port)", orig, why)
	}
	if s == "" {
		return bad("empty")
	}
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		switch lowerASCII(scheme) {
		case "http":
		case "https", "wss":
			return bad("TLS to the backend is not supported")
		default:
			return bad("scheme " + strconv.Quote(scheme) + " is not supported")
		}
		rest = strings.TrimSuffix(rest, "/")
		if i := strings.IndexAny(rest, "/?#@"); i >= 0 {
			return bad("a backend is an address: no path, query or user")
		}
		s = rest
		if _, _, err := net.SplitHostPort(s); err != nil {
			if strings.HasSuffix(s, "]") || !strings.Contains(s, ":") {
				s = net.JoinHostPort(strings.Trim(s, "[]"), "80")
			}
		}
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return bad("no port")
	}
	if host == "" {
		return bad("no host")
	}
	if !validHost(host) {
		return bad(strconv.Quote(host) + " is not an IP address or host name")
	}
	p, ok := parsePort(port, 1)
	if !ok {
		return bad("port " + strconv.Quote(port) + " is not a number from 1 to 65535")
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func parsePort(s string, min int) (int, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	p, err := strconv.Atoi(s)
	return p, err == nil && p >= min && p <= 65535
}

// validHost: an IP literal, or a DNS name of letters, digits, '-', '_' and '.'.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if ip, zone, ok := strings.Cut(h, "%"); ok && zone != "" && net.ParseIP(ip) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// onlyOnce makes every flag of fs refuse a second value: "-listen a -listen b" is an error, not
// "the last one wins". The returned error is set when that happened.
func onlyOnce(fs *flag.FlagSet) *error {
	dup := new(error)
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(repeatable); ok {
			return // -tls-cert, -tls-key: one value per pair
		}
		f.Value = &onceValue{Value: f.Value, name: f.Name, dup: dup}
	})
	return dup
}

// repeatable marks a flag that takes a list, one value per use.
type repeatable interface{ repeatable() }

type onceValue struct {
	flag.Value
	name  string
	first string
	set   bool
	dup   *error
}

func (v *onceValue) Set(s string) error {
	if v.set {
		*v.dup = fmt.Errorf("-%s given twice (%q, then %q): a flag takes one value", v.name, v.first, s)
		return *v.dup
	}
	v.set, v.first = true, s
	return v.Value.Set(s)
}

func (v *onceValue) String() string {
	if v == nil || v.Value == nil {
		return ""
	}
	return v.Value.String()
}

func (v *onceValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// printUsage writes -h's text: what wsgate is, the zero-value rule, signals, every flag.
func printUsage(w io.Writer) {
	var o options
	fs, _ := flagSet(&o)
	fmt.Fprintf(w, "Usage: wsgate -listen ADDR -backend HOST:PORT [flags]\n\n")
	fmt.Fprintf(w, "HTTP/1.1 and WebSocket edge reverse proxy. Exit status: 0 clean stop, 1 failure, 2 bad command line.\n")
	fmt.Fprintf(w, "Signals: SIGTERM/SIGINT stop (a second one exits at once); SIGHUP re-reads the TLS certificates (-tls-cert/-tls-key); SIGUSR1, SIGUSR2 are logged and ignored.\n\n")
	fmt.Fprintf(w, "%s\n\n", zeroRule)
	fs.SetOutput(w)
	fs.PrintDefaults()
}
