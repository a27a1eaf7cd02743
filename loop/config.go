// Package loop is wsgate's HTTP plane: a gnet engine whose event loops run one explicit state
// machine per client connection, keep backend connections on the client's own loop, and hand long
// bodies and upgraded WebSocket connections to the splice tunnel plane. docs/architecture.md has
// the design and the reasons behind it.
package loop

import (
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/fdbudget"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
	"github.com/wsgate/wsgate/tlsterm"
)

// Config configures a Server. Zero fields take the DefaultConfig values, except PreserveHost and
// Forwarded, which are plain booleans: start from DefaultConfig to get them on. Where a zero would
// be meaningful (no pooling), a negative value asks for it: BackendIdle < 0 pools nothing, and
// splice.Config documents the same rule for its fields. Timeouts here cannot be turned off.
type Config struct {
	Listen string // "127.0.0.1:8080"; a Listen port of 0 picks a free port

	// Routes is the route table: which backend pool serves a request (host and longest path
	// prefix), each pool's members, balancing and health (package route, docs/routing.md). The
	// caller builds it (route.NewTable with RouteDefaults), Starts its probes, and Closes it after
	// Stop; Server.SetRoutes swaps it on a reload.
	Routes *route.Table
	// Backend is the shorthand for a table of one route, "/=Backend" (host:port), used only when
	// Routes is nil: Start then builds that table with RouteDefaults, starts it and closes it at
	// Stop.
	Backend string

	Loops              int           // gnet event loops, default GOMAXPROCS
	PreserveHost       bool          // default true
	Forwarded          bool          // X-Forwarded-For/Proto/Host, default true
	HeaderTimeout      time.Duration // default 10s: slow head -> 408
	IdleTimeout        time.Duration // client keep-alive idle, default 60s
	DialTimeout        time.Duration // default 5s -> 504 on timeout, 502 on refused
	ResponseTimeout    time.Duration // backend response head, default 60s -> 504
	BackendIdle        int           // idle pooled backend conns per loop, default 64; negative = none
	BackendIdleTimeout time.Duration // default 90s
	MaxConns           int           // client connections held by gnet + tunnels in the plane, default 10000; over -> 503 + close
	MaxHeadBytes       int           // default 16 KiB
	BodyHighWater      int           // bytes queued toward a slow peer before the body moves to the tunnel plane, default 1 MiB
	Tunnel             splice.Config // tunnel plane config (-tunnel-loops, -splice, -pipe-size, ...); Tunnel.MaxPipes 0 = MaxConns/4
	Logger             *slog.Logger

	// HeaderNames is what happens to a request field whose name holds a byte outside
	// [A-Za-z0-9-]: HeaderNamesDrop (the zero value and default) leaves the field out,
	// HeaderNamesReject answers 400 (-header-names).
	HeaderNames HeaderNamePolicy

	// FDs is the fd budget every fd the server owns is counted against (budget.go). nil: Start
	// sizes one from RLIMIT_NOFILE, less a reserve for the fds it cannot count. Servers sharing a
	// process can share one budget; Start never changes a budget it is given.
	FDs *fdbudget.Budget

	// TLS, when set, makes Listen a TLS listener (issue 9): every client does a TLS handshake
	// (tlsterm: ClientHello in the loop, crypto/tls on a bounded goroutine), then its records are
	// opened and sealed on the loop and in the tunnel plane. nil: plain HTTP.
	TLS *tlsterm.Server

	// ListenLock is the one-instance guard of Listen inherited from the wsgate process that
	// started this one (Server.ListenLock, passed as an extra file): with it Start skips the
	// guard and binds next to its predecessor's listeners. nil: Start takes the guard itself and
	// fails if another wsgate serves Listen. See listen.go and docs/architecture.md.
	ListenLock *os.File

	// Metrics, when set, gives every event loop and every tunnel loop its own shard (Tunnel.Metrics
	// follows it unless set), registers the route and backend names, and reads Stats at scrape
	// time (docs/observability.md). AccessLog, when set, gets one line per exchange and one per
	// tunnel, each loop writing through its own Writer. nil: off.
	Metrics   *metrics.Registry
	AccessLog *accesslog.Log
}

// DefaultConfig returns the documented defaults with Listen, Routes and Backend empty.
func DefaultConfig() Config {
	return Config{
		Loops:              runtime.GOMAXPROCS(0),
		PreserveHost:       true,
		Forwarded:          true,
		HeaderTimeout:      10 * time.Second,
		IdleTimeout:        60 * time.Second,
		DialTimeout:        5 * time.Second,
		ResponseTimeout:    60 * time.Second,
		BackendIdle:        64,
		BackendIdleTimeout: 90 * time.Second,
		MaxConns:           10000,
		MaxHeadBytes:       16 << 10,
		BodyHighWater:      1 << 20,
		Tunnel:             splice.Config{Splice: true},
	}
}

// withDefaults fills zero durations and sizes; a negative BackendIdle disables pooling.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Loops <= 0 {
		c.Loops = d.Loops
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = d.HeaderTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = d.ResponseTimeout
	}
	if c.BackendIdle == 0 {
		c.BackendIdle = d.BackendIdle
	}
	if c.BackendIdle < 0 {
		c.BackendIdle = 0
	}
	if c.BackendIdleTimeout <= 0 {
		c.BackendIdleTimeout = d.BackendIdleTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = d.MaxConns
	}
	if c.Tunnel.MaxPipes == 0 {
		// HAProxy's maxpipes default: a quarter of maxconn. A pipe is held only while a
		// tunnel's bytes are in flight, so a quarter of the connections busy at once is generous.
		c.Tunnel.MaxPipes = max(c.MaxConns/4, 1)
	}
	if c.MaxHeadBytes <= 0 {
		c.MaxHeadBytes = d.MaxHeadBytes
	}
	if c.BodyHighWater <= 0 {
		c.BodyHighWater = d.BodyHighWater
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Tunnel.RecordTimeout == 0 {
		c.Tunnel.RecordTimeout = c.HeaderTimeout // a TLS record half-received is bounded like a slow head
	}
	if c.Tunnel.Logger == nil {
		c.Tunnel.Logger = c.Logger
	}
	return c
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	Conns              int64 // client connections held by the event loops now
	BackendConnsOpened int64 // backend connections dialled since Start
	Tunnels            int64 // WebSocket tunnels open in the tunnel plane now
	TunnelsTotal       int64 // WebSocket tunnels handed to the tunnel plane since Start
	Requests           int64 // request heads forwarded since Start
	Rejected           int64 // connections refused with 503 over MaxConns (tunnels included)
	RejectedFDs        int64 // connections and backend dials refused with 503 because the fd budget was full
	FDsUsed, FDsLimit  int64 // the fd budget: fds counted now, and its limit
	EngineRestarts     int64 // times the gnet engine stopped on its own and its listeners were restarted
	Retries            int64 // requests retried: resent after a backend conn closed before answering, or dialled again on another member
	Offloads           int64 // bodies moved to the tunnel plane since Start
	BackendIdle        int64 // idle pooled backend connections now
	QueuedBytes        int64 // bytes queued in user space toward slow peers now (both directions)
}

// RouteDefaults are the route options this Config gives every route that does not set its own
// (route.Defaults): PreserveHost, the header and response timeouts, the tunnel idle timeout, the
// dial timeout and the logger. The caller adds the global health and balance settings.
func (c Config) RouteDefaults() route.Defaults {
	c = c.withDefaults()
	return route.Defaults{
		PreserveHost:      c.PreserveHost,
		HeaderTimeout:     c.HeaderTimeout,
		ResponseTimeout:   c.ResponseTimeout,
		TunnelIdleTimeout: max(c.Tunnel.IdleTimeout, 0),
		DialTimeout:       c.DialTimeout,
		Logger:            c.Logger,
	}
}
