// Package splice is wsgate's tunnel plane: a few epoll loops (goroutines
// that park in Go's netpoller on their epoll fd) that join pairs of sockets
// and move their bytes: small messages with one read and one write through
// a per-loop buffer, bulk streams with splice(2) through a small pool of
// pipes (HAProxy's src/pipe.c model: a pipe is borrowed only while bytes are
// in flight). Where splice is off or unavailable the same loops copy bulk
// through pooled buffers with the same backpressure and half-close rules.
//
// A Tunnel joins a client and a backend socket for the rest of their lives;
// an Upgrade dials the backend for a client whose upgrade request the HTTP
// plane has checked, lets the HTTP plane's Handshake judge the answer, and
// becomes a Tunnel only on a verified switch; a Transfer moves one HTTP
// message body from Src to Dst with real backpressure and then hands both
// sockets back.
package splice

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/fdbudget"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/tlsrecord"
)

// Config tunes a Plane. The zero value is usable; NewPlane fills defaults. Where 0 means "the
// default", a negative value asks for the zero the field would otherwise mean (no pipes pooled,
// the kernel's pipe size, no fin timeout).
type Config struct {
	Loops       int           // tunnel loops, default runtime.GOMAXPROCS(0)
	Splice      bool          // use splice(2) when available; false = portable copy path
	PipeSize    int           // F_SETPIPE_SZ for pooled pipes, default 256 KiB; negative = kernel default (64 KiB)
	PipePoolMax int           // idle pipes kept per loop, default 256; negative keeps none
	MaxPipes    int           // pipes the whole plane may hold, busy and pooled (HAProxy's maxpipes); 0 = no cap, negative = none (always copy)
	BufferSize  int           // copy-path buffer size, default 64 KiB
	IdleTimeout time.Duration // tunnel: no byte either way for this long -> close both; 0 = never
	FinTimeout  time.Duration // tunnel: after one direction finished, the other gets this long; default 30s, negative = never
	Logger      *slog.Logger  // nil = slog.Default()

	// RecordTimeout: a TLS record half-received for this long closes its conn (a partial record
	// borrows a 16 KiB buffer; a client must not pin it forever). Default 10s, negative = never.
	RecordTimeout time.Duration

	// FDs, when set, counts every fd the plane owns: a tunnel's two sockets from Tunnel until
	// the plane closes them, a transfer's two from Transfer until Done hands them back, and two
	// per pipe from its creation to its close. A pipe is created only if the budget has room
	// (otherwise that round copies); sockets are counted unconditionally, since they already exist.
	FDs *fdbudget.Budget

	// Upgrade defaults (Plane.Upgrade): the backend connect, then the
	// answer head. Default 5s and 60s.
	DialTimeout, ResponseTimeout time.Duration

	// Metrics, when set, gives every tunnel loop its own shard: tunnel bytes as they move, closes
	// by reason with their lifetime, pipes by state. nil: metrics are off.
	Metrics *metrics.Registry
}

// Defaults applied by NewPlane. DefaultPipeSize is 256 KiB rather than the
// kernel's 64 KiB: each splice pair then moves four times as much, and the
// loops' own CPU per GB falls by about a third (BenchmarkPerfBulk); 1 MiB
// saves little more while each busy direction could pin four times as many
// socket pages and an unprivileged user would reach pipe-user-pages-soft
// (16384 pages) after 64 pipes instead of 256.
const (
	DefaultPipeSize    = 256 << 10
	DefaultPipePoolMax = 256
	DefaultBufferSize  = 64 << 10
	DefaultFinTimeout  = 30 * time.Second

	DefaultDialTimeout     = 5 * time.Second
	DefaultResponseTimeout = 60 * time.Second

	DefaultRecordTimeout = 10 * time.Second
)

// Stats is a snapshot of the plane's counters.
type Stats struct {
	Tunnels, Transfers        int64 // active now
	Handshakes                int64 // upgrades dialling or waiting for their answer now
	TunnelsTotal              int64
	PipesIdle, PipesBusy      int64 // pool accounting
	BuffersIdle               int64 // copy-path spares the loops keep (BufferSize each)
	BytesSpliced, BytesCopied int64
	PipeFallbacks             int64 // rounds that copied because no pipe could be had (MaxPipes, fd budget, pipe2 error)
	SpliceAvailable           bool
	// TLS (issue 9): tunnels with a TLS end now, how many of them are idle with their session
	// shrunk (no AEAD state), and conns holding a half-received record (a borrowed 16 KiB buffer).
	TLSTunnels, TLSShrunk, TLSPartial int64
	// TLSStaying: TLS tunnels a binary upgrade cannot export (TLS 1.2: crypto/tls keeps their
	// keys); they finish in this process (export.go).
	TLSStaying int64
}

// Tunnel joins two connected, non-blocking TCP sockets for the rest of their
// lives. The plane owns both fds from the call on (it closes them, even when
// it returns an error). The pending slices are written to their sockets, or
// what the kernel did not take copied, before Tunnel returns; they reach the
// peer before any spliced byte. A failed pending write is reported through
// OnClose, not returned.
type Tunnel struct {
	ClientFD, BackendFD int
	ToBackend, ToClient []byte
	OnClose             func(TunnelResult) // optional; runs on the tunnel loop, must not block
	// IdleTimeout overrides Config.IdleTimeout for this tunnel (a route's own): no byte either way
	// for this long closes it; 0 = the Config's value, negative = never. The timer's resolution
	// is the plane's wheel tick (an eighth of the shortest Config timeout, at most 250ms).
	IdleTimeout time.Duration

	// Route is the metrics route index the tunnel's bytes, close and lifetime count under
	// (metrics.Registry.Route; metrics.NoRoute when unknown). It lives in the padding of the
	// plane's per-tunnel state: naming a route costs an idle tunnel nothing.
	Route int

	// ClientTLS, when set, is the client's TLS record layer (a WSS tunnel): what the client sends
	// is opened before it reaches the backend, what the backend sends is sealed, close_notify is
	// the half-close each way, KeyUpdate is honoured. ToClient must already be records (sealed by
	// the caller), ToBackend plaintext. The plane owns the session from the call on (it wipes its
	// keys when the tunnel ends). Such a tunnel always copies (tls.go).
	ClientTLS tlsrecord.RecordLayer
}

// TunnelResult reports how a tunnel ended. The byte counts include the
// pending bytes written on the tunnel's behalf.
type TunnelResult struct {
	ClientToBackend, BackendToClient int64
	Err                              error // names the peer and phase; nil on a clean close

	// Reason classifies the end, as wsgate_tunnel_closes_total{reason} counts it: which side
	// finished first on a clean close, else the timeout, the plane's close, a reset or an error.
	Reason metrics.CloseReason
	// Duration is the tunnel's lifetime, from the Tunnel call to the close of its sockets.
	Duration time.Duration
	// Loop is the index (0 <= Loop < Plane.Loops()) of the tunnel loop OnClose runs on: state
	// kept per loop (an access-log writer) may be used from OnClose without a lock.
	Loop int
}

// Transfer moves one message body from Src to Dst with real backpressure,
// then hands both fds back. Ownership of Src and Dst passes to the plane
// until Done runs; Done runs exactly once on the plane's loop (must not
// block). If Plane.Transfer returns an error, Done never runs and the fds
// stay the caller's.
type Transfer struct {
	Src, Dst int
	Pending  []byte // written to Dst first (written or copied before Transfer returns; a write error goes to Done)
	Length   int64  // body bytes still to move from Src after Pending; -1 => use Chunked
	Chunked  Framer // when Length == -1: decoder state already fed with Pending
	Done     func(TransferResult)

	// StallTimeout: bytes wait for Dst and none moved for this long -> Done with ErrStallTimeout
	// (Dst is not reading). 0 = none.
	StallTimeout time.Duration
	// SrcIdleTimeout: nothing waits for Dst and Src sent nothing for this long -> Done with
	// ErrIdleTimeout. 0 = none: a quiet source is legitimate for streamed and long-poll response
	// bodies, so only a caller that wants to bound a stalling sender (an upload) sets it.
	SrcIdleTimeout time.Duration

	// SrcTLS or DstTLS (at most one) is the record layer of a TLS end: the body from a TLS client
	// is opened (Length and the framer count plaintext; Extra is plaintext), the body toward a
	// TLS client is sealed (Pending must already be records). The session is the plane's until
	// Done, then the caller's again, with any partial record it holds.
	SrcTLS, DstTLS tlsrecord.RecordLayer
}

// Framer finds the end of a chunked body; *httpparse.ChunkedDecoder
// satisfies it.
type Framer interface {
	Feed(p []byte) (n int, done bool, err error)
	DataLeft() int64
	Skip(n int64)
}

// TransferResult reports how a Transfer ended.
type TransferResult struct {
	Src, Dst int    // handed back to the caller (still open, still non-blocking) -- caller closes on Err
	Moved    int64  // bytes written to Dst from Src (excluding Pending)
	Extra    []byte // bytes read from Src beyond the body end (caller's, newly allocated), usually nil
	Err      error  // nil when the whole body arrived at Dst
	// ReadClosed: a TLS Src sent close_notify (its input is over; Extra holds what came before).
	ReadClosed bool
}

// Errors reported in TunnelResult.Err and TransferResult.Err.
var (
	ErrClosed       = errors.New("splice: plane closed")
	ErrIdleTimeout  = errors.New("splice: idle timeout")
	ErrStallTimeout = errors.New("splice: write stalled")
	ErrFinTimeout   = errors.New("splice: fin timeout after one direction finished")
	// ErrUnexpectedEOF: a Transfer's Src closed before the body's end. For a body that ends at
	// the sender's close (a Framer that never reports done) it is the normal end, reported after
	// every byte reached Dst.
	ErrUnexpectedEOF = errors.New("unexpected EOF before the end of the body")
)

// OpError names the direction and the phase that failed, e.g.
// "splice: backend->client: write to client: connection reset by peer".
type OpError struct {
	Dir string // "client->backend", "backend->client" or "src->dst"
	Op  string // "read from client", "write to backend", "shutdown backend", ...
	Err error
}

func (e *OpError) Error() string { return "splice: " + e.Dir + ": " + e.Op + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// Plane owns the tunnel loops.
type Plane struct {
	cfg      Config
	log      *slog.Logger
	loops    []*loop
	next     atomic.Uint32
	total    atomic.Int64
	open     atomic.Int64 // tunnels owned now: from Tunnel until their fds are closed
	pipes    atomic.Int64 // pipes that exist now, busy and pooled (the MaxPipes count)
	maxPipes int64        // 0 = no cap
	fds      *fdbudget.Budget
	spliceOK bool
	hs       *hsSlab   // handshake states of the upgrades in flight (upgrade.go)
	bufs     sync.Pool // *[]byte of cfg.BufferSize
	tick     time.Duration
	epoch    time.Time // tunnel lifetimes are measured on its monotonic clock

	shrinkTicks, recordTicks uint32 // TLS conns: idle before the session shrinks, RecordTimeout

	closeOnce sync.Once
	wg        sync.WaitGroup

	// pipe2 creates pipes and spliceIn moves socket -> pipe; tests swap
	// them before the first tunnel to simulate EMFILE / pipe-user-pages
	// exhaustion and a socket that refuses splice (EINVAL).
	pipe2    func(p []int, flags int) error
	spliceIn func(in, out, n int) (int, error)
}

// NewPlane starts cfg.Loops loop goroutines, each with its own epoll set and
// eventfd.
func NewPlane(cfg Config) (*Plane, error) {
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.PipeSize == 0 {
		cfg.PipeSize = DefaultPipeSize
	}
	if cfg.PipeSize < 0 {
		cfg.PipeSize = 0 // kernel default
	}
	if cfg.PipePoolMax == 0 {
		cfg.PipePoolMax = DefaultPipePoolMax
	}
	if cfg.PipePoolMax < 0 {
		cfg.PipePoolMax = 0
	}
	maxPipes := int64(cfg.MaxPipes)
	if cfg.MaxPipes < 0 {
		// No pipes at all: every direction takes the copy path.
		cfg.Splice = false
		maxPipes = 0
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.FinTimeout == 0 {
		cfg.FinTimeout = DefaultFinTimeout
	}
	if cfg.FinTimeout < 0 {
		cfg.FinTimeout = 0
	}
	if cfg.IdleTimeout < 0 {
		cfg.IdleTimeout = 0
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ResponseTimeout <= 0 {
		cfg.ResponseTimeout = DefaultResponseTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RecordTimeout == 0 {
		cfg.RecordTimeout = DefaultRecordTimeout
	}
	if cfg.RecordTimeout < 0 {
		cfg.RecordTimeout = 0
	}
	p := &Plane{cfg: cfg, log: cfg.Logger, pipe2: sysPipe2, spliceIn: spliceMove, maxPipes: maxPipes, fds: cfg.FDs, hs: newHSSlab(), epoch: time.Now()}
	size := cfg.BufferSize
	p.bufs.New = func() any { b := make([]byte, size); return &b }
	p.tick = wheelTick(cfg.IdleTimeout, cfg.FinTimeout, cfg.DialTimeout, cfg.ResponseTimeout)
	p.shrinkTicks = max(p.ticks(shrinkAfter), 1)
	p.recordTicks = p.ticks(cfg.RecordTimeout)
	if cfg.Splice {
		if err := probeSplice(); err != nil {
			p.log.Warn("splice: splice(2) unavailable, using the copy path", "err", err)
		} else {
			p.spliceOK = true
		}
	}
	for i := 0; i < cfg.Loops; i++ {
		l, err := newLoop(p, i)
		if err != nil {
			for _, o := range p.loops {
				o.shutdown() // never started: just release its epoll and eventfd
			}
			return nil, fmt.Errorf("splice: start loop %d: %w", i, err)
		}
		p.loops = append(p.loops, l)
	}
	for _, l := range p.loops {
		p.wg.Add(1)
		go l.run()
	}
	return p, nil
}

// wheelTick picks the timer wheel resolution: an eighth of the shortest
// configured timeout, between 1ms and 250ms, so the default 30s FinTimeout
// costs four wake-ups per second per loop, and only while some conn has a
// timer armed. Transfer timeouts shorter than a tick fire within two.
func wheelTick(ts ...time.Duration) time.Duration {
	tick := 250 * time.Millisecond
	for _, t := range ts {
		if t > 0 && t/8 < tick {
			tick = t / 8
		}
	}
	return max(tick, time.Millisecond)
}

// Close stops the loops and closes every fd the plane owns: tunnels end
// with ErrClosed, transfers hand their fds back with ErrClosed, pooled pipes
// are closed. Safe to call more than once.
func (p *Plane) Close() error {
	p.closeOnce.Do(func() {
		for _, l := range p.loops {
			l.stop()
		}
		p.wg.Wait()
	})
	return nil
}

// Stats sums the loops' counters.
func (p *Plane) Stats() Stats {
	s := Stats{TunnelsTotal: p.total.Load(), SpliceAvailable: p.spliceOK}
	for _, l := range p.loops {
		s.Tunnels += l.st.tunnels.Load()
		s.Transfers += l.st.transfers.Load()
		s.Handshakes += l.st.handshakes.Load()
		s.PipesIdle += l.st.pipesIdle.Load()
		s.PipesBusy += l.st.pipesBusy.Load()
		s.BuffersIdle += l.st.bufsIdle.Load()
		s.BytesSpliced += l.st.spliced.Load()
		s.BytesCopied += l.st.copied.Load()
		s.PipeFallbacks += l.st.pipeFallbacks.Load()
		s.TLSTunnels += l.st.tlsTunnels.Load()
		s.TLSShrunk += l.st.tlsShrunk.Load()
		s.TLSStaying += l.st.tlsStaying.Load()
		s.TLSPartial += l.st.tlsPartial.Load()
	}
	return s
}

// Loops is the number of tunnel loops (TunnelResult.Loop and UpgradeResult.Loop are below it).
func (p *Plane) Loops() int { return len(p.loops) }

// mono is the plane's monotonic clock in nanoseconds, for tunnel lifetimes.
func (p *Plane) mono() int64 { return int64(time.Since(p.epoch)) }

// OpenTunnels is the number of client connections the plane owns right now: tunnels from the
// Tunnel call until their fds are closed, and upgrades from the Upgrade call until they are
// closed or the tunnel they become ends. One atomic load, cheap enough to check on every accepted
// connection.
func (p *Plane) OpenTunnels() int64 { return p.open.Load() }

func (p *Plane) pick() *loop {
	return p.loops[int(p.next.Add(1))%len(p.loops)]
}

// Tunnel hands both fds to a tunnel loop. See type Tunnel.
func (p *Plane) Tunnel(t Tunnel) error {
	counted := false
	fail := func(err error) error {
		if t.ClientFD >= 0 {
			unix.Close(t.ClientFD)
		}
		if t.BackendFD >= 0 && t.BackendFD != t.ClientFD {
			unix.Close(t.BackendFD)
		}
		if counted {
			p.fds.Release(2)
			p.open.Add(-1)
		}
		if t.ClientTLS != nil {
			t.ClientTLS.Close()
		}
		return err
	}
	if t.ClientFD < 0 || t.BackendFD < 0 || t.ClientFD == t.BackendFD {
		return fail(fmt.Errorf("splice: tunnel: bad fds client=%d backend=%d", t.ClientFD, t.BackendFD))
	}
	// The plane owns both fds from here on: count them, and the tunnel, until finish closes them.
	p.fds.Acquire(2)
	p.open.Add(1)
	counted = true
	if err := unix.SetNonblock(t.ClientFD, true); err != nil {
		return fail(&OpError{Dir: "tunnel", Op: "set client non-blocking", Err: err})
	}
	if err := unix.SetNonblock(t.BackendFD, true); err != nil {
		return fail(&OpError{Dir: "tunnel", Op: "set backend non-blocking", Err: err})
	}
	c := &conn{onClose: t.OnClose, idle: p.tunnelIdle(t.IdleTimeout), route: int32(t.Route), started: p.mono()}
	if t.ClientTLS != nil {
		c.t = &tlsEnd{rec: t.ClientTLS, end: 0}
	}
	c.ends[0].fd = int32(t.ClientFD)
	c.ends[1].fd = int32(t.BackendFD)
	c.flows[0].init()
	c.flows[1].init()
	l := p.pick()
	l.writePending(&c.flows[0], t.BackendFD, t.ToBackend)
	l.writePending(&c.flows[1], t.ClientFD, t.ToClient)
	if !l.submit(c) {
		return fail(ErrClosed)
	}
	p.total.Add(1)
	return nil
}

// Transfer hands Src and Dst to a loop until the body has moved. See type
// Transfer.
func (p *Plane) Transfer(x Transfer) error {
	if x.Src < 0 || x.Dst < 0 || x.Src == x.Dst {
		return fmt.Errorf("splice: transfer: bad fds src=%d dst=%d", x.Src, x.Dst)
	}
	if x.Done == nil {
		return errors.New("splice: transfer: Done is nil")
	}
	if x.SrcTLS != nil && x.DstTLS != nil {
		return errors.New("splice: transfer: SrcTLS and DstTLS both set")
	}
	if x.Length < -1 || (x.Length == -1 && x.Chunked == nil) {
		return fmt.Errorf("splice: transfer: bad length %d (chunked framer set: %v)", x.Length, x.Chunked != nil)
	}
	if err := unix.SetNonblock(x.Src, true); err != nil {
		return &OpError{Dir: "src->dst", Op: "set src non-blocking", Err: err}
	}
	if err := unix.SetNonblock(x.Dst, true); err != nil {
		return &OpError{Dir: "src->dst", Op: "set dst non-blocking", Err: err}
	}
	c := &conn{x: &xfer{
		remaining: x.Length,
		framer:    x.Chunked,
		done:      x.Done,
		pending:   int64(len(x.Pending)),
	}}
	if x.Length == -1 {
		c.x.remaining = -1
		// A decoder that already saw the end in Pending (httpparse's has
		// Done) must not be fed the next message.
		if d, ok := x.Chunked.(interface{ Done() bool }); ok && d.Done() {
			c.x.chunkDone = true
		}
	}
	switch {
	case x.SrcTLS != nil:
		c.t = &tlsEnd{rec: x.SrcTLS, end: 0}
	case x.DstTLS != nil:
		c.t = &tlsEnd{rec: x.DstTLS, end: 1}
	}
	c.idle = p.ticks(x.StallTimeout)
	c.x.quiet = p.ticks(x.SrcIdleTimeout)
	c.ends[0].fd = int32(x.Src)
	c.ends[1].fd = int32(x.Dst)
	c.flows[0].init()
	c.flows[1].init()
	c.flows[1].state = flowDone // only Src -> Dst is active
	l := p.pick()
	if l.isStopping() {
		// Nothing written yet: the fds really are still the caller's.
		return ErrClosed
	}
	// Src and Dst are the plane's until finish hands them back: count them meanwhile.
	p.fds.Acquire(2)
	l.writePending(&c.flows[0], x.Dst, x.Pending)
	if !l.submit(c) {
		p.fds.Release(2)
		return ErrClosed
	}
	return nil
}

// tunnelIdle is a tunnel's idle timeout in ticks: its own (Tunnel.IdleTimeout,
// Upgrade.IdleTimeout) when set, negative meaning never, else the Config's.
func (p *Plane) tunnelIdle(d time.Duration) uint32 {
	if d == 0 {
		d = p.cfg.IdleTimeout
	}
	return p.ticks(d) // 0 (never) for a negative value
}

// ticks converts a timeout into wheel ticks, rounding up so a timeout never
// fires early.
func (p *Plane) ticks(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	n := (d + p.tick - 1) / p.tick
	if n > 1<<30 {
		n = 1 << 30
	}
	return uint32(n)
}

// writePending writes a direction's pending bytes straight to its fresh,
// non-blocking destination before the conn reaches a loop: nothing else
// writes to that socket yet, and the kernel usually takes all of it (a 101
// response, maybe a first frame), so no buffer is held at all. Only what the
// kernel did not take is kept, in an exact-size slice the flow owns
// (flowOwnBuf) and drops when drained, instead of a 64 KiB pooled buffer: a
// burst of upgrades used to park one pooled buffer per tunnel until the
// loop got round to them, and the loop's spare list kept them afterwards.
// A write error is not returned: it is parked in the flow (f.werr) and the
// loop reports it on attach like any other write error on that direction,
// so the fd ownership contract does not change. The bytes count as copied,
// as they did when the loop wrote them.
func (l *loop) writePending(f *flow, dst int, b []byte) {
	for len(b) > 0 {
		n, err := rawWrite(dst, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err != unix.EAGAIN {
				if errno, ok := err.(unix.Errno); ok && errno < 1<<16 {
					f.werr = uint16(errno)
				} else {
					f.werr = uint16(unix.EIO)
				}
				return
			}
			break
		}
		b = b[n:]
		f.moved += int64(n)
		l.st.copied.Add(int64(n))
	}
	if len(b) == 0 {
		return
	}
	s := make([]byte, len(b))
	copy(s, b)
	f.buf, f.off, f.lim = &s, 0, int32(len(s))
	f.state |= flowOwnBuf
}

func (p *Plane) putBuf(bp *[]byte) {
	if cap(*bp) == p.cfg.BufferSize {
		*bp = (*bp)[:p.cfg.BufferSize]
		p.bufs.Put(bp)
	}
}
