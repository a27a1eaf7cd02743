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

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
)

// options is the parsed command line, with the config file applied.
type options struct {
	cfg         loop.Config
	level       slog.Level
	memEvery    time.Duration
	version     bool
	headerNames *string
	tls         tlsOptions // -tls-*, -ktls, -redirect-http (tls.go)

	routeFlag      config.RouteFlag // -route, the command line's own
	configFile     string           // -config
	checkConfig    bool             // -check-config
	healthPath     string
	healthInterval time.Duration
	balance        string
	routes         []route.Spec // what to serve: config.Load's composition of -route, -backend and the file
	origins        []string     // per route: where it was written
	file           *config.Config

	// The drain (SIGTERM; lifecycle.go, docs/lifecycle.md).
	drainDelay, drainTimeout, closeSpread time.Duration

	// values is every flag's value as text once the command line and the file are applied: a
	// reload compares them with the running ones (reload.go).
	values map[string]string

	// Observability (docs/observability.md).
	admin      string           // -admin: the admin listener's address, "" = off
	adminPprof bool             // -admin-pprof
	accessLog  string           // -access-log: off, stdout, stderr or a file path
	logFormat  accesslog.Format // -log-format, for the access log and wsgate's own log
	formatName *string
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
-memory-return: no limit; -drain-delay, -drain-timeout, -close-spread: no wait); every other count
or timeout must be more than 0.`

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

	fs.StringVar(&o.configFile, "config", "", "read settings and routes from the TOML `FILE` (docs/routing.md); flags on the command line override it")
	fs.BoolVar(&o.checkConfig, "check-config", false, "validate -config FILE and the flags, print every error (file:line), exit 0 if good or 1")
	fs.StringVar(&c.Listen, "listen", c.Listen, "address to accept clients on (host:port; no host = every address)")
	fs.Var(&o.routeFlag, "route", "a route `[HOST]/PREFIX=ADDR[,ADDR...]`: requests whose host and path match go to that backend pool; repeatable: -route /=127.0.0.1:3000 -route /loki/=127.0.0.1:3100,127.0.0.1:3101 (longest prefix wins, a host route beats a host-less one, no match: 404)")
	fs.StringVar(&c.Backend, "backend", c.Backend, "shorthand for -route /=ADDR: the backend for everything, host:port or http://host[:port]")
	fs.StringVar(&o.balance, "balance", route.LeastConn.String(), "how a pool picks a member unless its route says: least-conn (requests in flight + open tunnels), round-robin or client-hash")
	fs.StringVar(&o.healthPath, "health-path", "", "active health checks: GET this path on every backend, 2xx/3xx is up (empty = off; a route's health_path overrides)")
	fs.DurationVar(&o.healthInterval, "health-interval", route.DefaultHealthInterval, "time between active health checks of a backend")
	fs.IntVar(&c.Loops, "loops", c.Loops, "gnet event loops for HTTP")
	fs.BoolVar(&c.PreserveHost, "preserve-host", c.PreserveHost, "pass the client's Host to the backend (Grafana checks Origin against it)")
	fs.BoolVar(&c.Forwarded, "forwarded", c.Forwarded, "set X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host")
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", c.HeaderTimeout, "time a client has to send a complete request head (then 408)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close idle client keep-alive connections after this long")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "backend connect timeout (then 504)")
	fs.DurationVar(&c.ResponseTimeout, "response-timeout", c.ResponseTimeout, "time the backend has to send a response head (then 504)")
	fs.IntVar(&c.BackendIdle, "backend-idle", c.BackendIdle, "idle keep-alive connections kept per backend and event loop (0 = none: a new connection per request)")
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
	fs.DurationVar(&o.drainDelay, "drain-delay", 0, "on SIGTERM, keep accepting this long after /readyz turned 503, so a load balancer can take wsgate out first (0 = close the listeners at once)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, once the listeners are closed, tunnels may stay this long (0 = no wait: start closing them at once)")
	fs.DurationVar(&o.closeSpread, "close-spread", 10*time.Second, "on SIGTERM, the tunnels left after -drain-timeout are closed evenly over this long, so their clients do not reconnect all at once (0 = no wait: all at once)")
	fs.DurationVar(&o.memEvery, "memory-return", o.memEvery, "once the heap is quiet, hand freed memory back to the OS at most this often (0 = leave it to the Go runtime)")
	o.headerNames = fs.String("header-names", c.HeaderNames.String(), "request field names with bytes other than A-Z a-z 0-9 and - (X_Forwarded_For): drop them, or reject the request with 400")
	o.tls.flags(fs)
	levelName := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.admin, "admin", "", "admin listener serving /metrics, /healthz, /readyz (and /debug/pprof/ with -admin-pprof), e.g. 127.0.0.1:9180; empty = off; never the -listen address")
	fs.BoolVar(&o.adminPprof, "admin-pprof", false, "also serve /debug/pprof/ on the -admin listener")
	fs.StringVar(&o.accessLog, "access-log", "stderr", "one line per request and per tunnel to: off, stdout, stderr or a file path (appended to, reopened on SIGUSR1)")
	o.formatName = fs.String("log-format", "text", "format of the access log and of wsgate's own log: text (logfmt) or json")
	fs.BoolVar(&o.version, "version", false, "print the version and build information, then exit")
	return fs, levelName
}

// parseFlags is parseCommandLine's loop.Config and log level (tests).
func parseFlags(args []string, _ io.Writer) (loop.Config, slog.Level, error) {
	o, err := parseCommandLine(args)
	return o.cfg, o.level, err
}

// parseCommandLine parses args into options and applies the -config file. Every error of the
// command line is one line (no usage dump): the flag package's own messages, a flag given twice,
// a stray argument, or a value the rules refuse. Errors in the file are configErrors, one line
// per problem, each naming the file and line.
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
	if o.checkConfig && o.configFile == "" {
		return o, errors.New("-check-config needs -config FILE")
	}
	cmdline := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { cmdline[f.Name] = true })
	if cmdline["backend"] {
		// http://host[:port] becomes host:port before -backend becomes the route /=ADDR.
		var err error
		if o.cfg.Backend, err = checkBackend(o.cfg.Backend); err != nil {
			return o, err
		}
	}
	// The file is applied to the flags the command line did not set (config.Load); the
	// once-only wrappers are for the command line alone.
	unwrapOnce(fs)
	c, err := config.Load(o.configFile, fs)
	if err != nil {
		return o, configErrors{err}
	}
	o.file, o.routes, o.origins = c, c.Routes, c.RouteOrigins
	if err := o.applyValues(fs, levelName); err != nil {
		var fe *flagError
		if errors.As(err, &fe) && c.Lines[fe.flag] > 0 {
			// The value came from the file: say where.
			msg := strings.TrimPrefix(fe.msg, "-"+fe.flag+" ") // "loops: 0: want 1 or more"
			return o, configErrors{&config.Error{File: c.File, Line: c.Lines[fe.flag], Key: strings.ReplaceAll(fe.flag, "-", "_"), Msg: msg}}
		}
		return o, err
	}
	o.values = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { o.values[f.Name] = f.Value.String() })
	return o, nil
}

// applyValues turns the flags' text into the options and checks every value.
func (o *options) applyValues(fs *flag.FlagSet, levelName *string) error {
	if err := o.level.UnmarshalText([]byte(*levelName)); err != nil {
		return badValue("log-level", "-log-level %q: want debug, info, warn or error", *levelName)
	}
	if err := o.cfg.HeaderNames.UnmarshalText([]byte(*o.headerNames)); err != nil {
		return badValue("header-names", "-header-names %q: want drop or reject", *o.headerNames)
	}
	var ferr error
	if o.logFormat, ferr = accesslog.ParseFormat(*o.formatName); ferr != nil {
		return badValue("log-format", "-log-format %q: want text or json", *o.formatName)
	}
	set := map[string]bool{} // on the command line or in the file
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["max-conns"] && !set["max-pipes"] {
		o.cfg.Tunnel.MaxPipes = o.cfg.MaxConns / 4
	}
	if err := validate(o); err != nil {
		return err
	}
	return o.tls.validate(o.cfg.Listen)
}

// routeDefaults are what every route falls back to: the loop's settings and the global health
// and balance flags.
func (o *options) routeDefaults(logger *slog.Logger) route.Defaults {
	cfg := o.cfg
	cfg.Logger = logger
	d := cfg.RouteDefaults()
	d.HealthPath = o.healthPath
	d.HealthInterval = o.healthInterval
	d.Balance, _ = route.ParseBalance(o.balance) // validated
	return d
}

// configErrors are errors in the -config file (or in the routes as a whole): one line each,
// every one naming the file and line where it has one.
type configErrors struct{ err error }

func (e configErrors) Error() string { return e.err.Error() }

// lines returns one message per problem.
func (e configErrors) lines() []string {
	return strings.Split(e.err.Error(), "\n")
}

// flagError is a value the rules refuse, for the flag it names (without the dash).
type flagError struct{ flag, msg string }

func (e *flagError) Error() string { return e.msg }

func badValue(flag, format string, args ...any) error {
	return &flagError{flag: flag, msg: fmt.Sprintf(format, args...)}
}

// unwrapOnce removes onlyOnce's wrappers, so that config.Load sees each flag's own Value (its
// type says how a file's value converts) and may set the flags the command line did not.
func unwrapOnce(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := f.Value.(*onceValue); ok {
			f.Value = v.Value
		}
	})
}

// validate checks every value and turns the flags' zeros into the Config's "none" values.
func validate(o *options) error {
	c := &o.cfg
	var err error
	if c.Listen, err = checkListen(c.Listen); err != nil {
		return &flagError{"listen", err.Error()}
	}
	if c.Backend, err = checkBackend(c.Backend); err != nil {
		return &flagError{"backend", err.Error()}
	}
	if err := checkAdmin(o.admin, c.Listen, o.adminPprof); err != nil {
		return &flagError{"admin", err.Error()}
	}
	if o.accessLog == "" {
		return badValue("access-log", `-access-log "": want off, stdout, stderr or a file path`)
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
			return badValue(v.name[1:], "%s %d: want %s", v.name, v.val, v.what)
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
			return badValue(d.name[1:], "%s %v: want more than 0 (this timeout cannot be turned off)", d.name, d.val)
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
			return badValue(d.name[1:], "%s %v: want 0 (no limit) or more", d.name, d.val)
		}
	}
	for _, d := range []struct {
		name string
		val  time.Duration
	}{
		{"-drain-delay", o.drainDelay}, {"-drain-timeout", o.drainTimeout}, {"-close-spread", o.closeSpread},
	} {
		if d.val < 0 {
			return badValue(d.name[1:], "%s %v: want 0 (no wait) or more", d.name, d.val)
		}
	}
	if _, err := route.ParseBalance(o.balance); err != nil {
		return badValue("balance", "-balance %q: want least-conn, round-robin or client-hash", o.balance)
	}
	if p := o.healthPath; p != "" && (p[0] != '/' || strings.ContainsAny(p, " \t\r\n?#")) {
		return badValue("health-path", "-health-path %q: want a path starting with '/' (empty = no active health checks)", p)
	}
	if o.healthInterval < 10*time.Millisecond {
		return badValue("health-interval", "-health-interval %v: want 10ms or more", o.healthInterval)
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

// checkAdmin accepts an empty -admin (off) or host:port like -listen, but never an address the
// proxy listener also covers: the same port on the same host, or on every address.
func checkAdmin(admin, listen string, pprof bool) error {
	if admin == "" {
		if pprof {
			return errors.New("-admin-pprof needs -admin (the admin listener to serve it on)")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(admin)
	if err != nil {
		return fmt.Errorf("-admin %q: want host:port (e.g. 127.0.0.1:9180)", admin)
	}
	if _, ok := parsePort(port, 0); !ok {
		return fmt.Errorf("-admin %q: port %q is not a number from 0 to 65535", admin, port)
	}
	if host != "" && !validHost(host) {
		return fmt.Errorf("-admin %q: %q is not an IP address or host name", admin, host)
	}
	lhost, lport, _ := net.SplitHostPort(listen)
	p, _ := parsePort(port, 0)
	lp, _ := parsePort(lport, 0)
	if p != 0 && p == lp && (anyHost(host) || anyHost(lhost) || lowerASCII(host) == lowerASCII(lhost)) {
		return fmt.Errorf("-admin %q: the proxy listens there (-listen %q); the admin listener needs its own address", admin, listen)
	}
	return nil
}

// anyHost: a listen host that means every address.
func anyHost(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" || h == "[::]" }

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

// onlyOnce makes every single-value flag of fs refuse a second value: "-listen a -listen b" is an
// error, not "the last one wins" (-route is repeatable). The returned error is set when that
// happened.
func onlyOnce(fs *flag.FlagSet) *error {
	dup := new(error)
	fs.VisitAll(func(f *flag.Flag) {
		if r, ok := f.Value.(config.Repeatable); ok && r.Repeatable() {
			return // -route A -route B, -tls-cert/-tls-key pairs: one value per occurrence
		}
		f.Value = &onceValue{Value: f.Value, name: f.Name, dup: dup}
	})
	return dup
}

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
	fmt.Fprintf(w, "Usage: wsgate -listen ADDR -backend HOST:PORT [flags]\n")
	fmt.Fprintf(w, "       wsgate -listen ADDR -route [HOST]/PREFIX=ADDR[,ADDR...] [-route ...] [flags]\n")
	fmt.Fprintf(w, "       wsgate -config FILE [flags]      (flags override the file; wsgate -check-config -config FILE checks it)\n")
	fmt.Fprintf(w, "       wsgate upgrade -listen ADDR      (binary upgrade of the wsgate serving ADDR; see wsgate upgrade -h)\n\n")
	fmt.Fprintf(w, "HTTP/1.1 and WebSocket edge reverse proxy. Exit status: 0 clean stop, 1 failure, 2 bad command line.\n")
	fmt.Fprintf(w, "Signals: SIGTERM/SIGINT drain, then exit 0 (a second one exits at once); SIGHUP reloads -config, the\n")
	fmt.Fprintf(w, "routes and the -tls-cert/-tls-key files in one go (anything bad refuses all of it, and what runs stays);\n")
	fmt.Fprintf(w, "SIGUSR2 upgrades to the binary now at this path, keeping every plain tunnel and connection (TLS ones\n")
	fmt.Fprintf(w, "finish in the old process) (wsgate upgrade -listen ADDR does the same and prints the outcome); SIGUSR1\n")
	fmt.Fprintf(w, "reopens the -access-log file. docs/lifecycle.md has the timelines.\n\n")
	fmt.Fprintf(w, "%s\n\n", zeroRule)
	fs.SetOutput(w)
	fs.PrintDefaults()
}
