package splice

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/metrics"
)

const (
	evIn  uint8 = 1 << iota // src may have bytes (or EOF / error)
	evOut                   // dst may take bytes
	evErr                   // EPOLLERR seen
	evHup                   // the peer shut down its side (EPOLLRDHUP/EPOLLHUP): an EOF may wait behind the data
)

// Slots poller.event reports for events that are not a conn's.
const (
	wakeSlot   int32 = -1 // the wake-up fd: the queue has conns
	ignoreSlot int32 = -2 // an fd deregistered earlier in this batch
)

const (
	flowEOF    uint8 = 1 << iota // read returned 0: drain, then shutdown dst
	flowDone                     // finished (shut down, or inactive for a transfer)
	flowCopy                     // splice refused this socket (EINVAL): copy from now on
	flowOwnBuf                   // buf is an exact-size pending remainder, not pooled: dropped when drained
	flowBulk                     // the last read filled the small buffer: read through a pipe (or a pooled buffer) until a read comes back small
)

const (
	turnBytes = 1 << 20 // fairness: bytes a direction moves per turn before the others go
	wheelSize = 512
	maxEvents = 256

	// smallSize is the per-loop buffer the small-message path reads into
	// (HAProxy's splice-auto idea): a read that fits is written straight
	// out and the direction holds nothing, one recv and one send per
	// message instead of a pipe borrowed, two splices and a third that
	// finds the socket empty. A read that fills it marks the direction bulk.
	smallSize = 16 << 10
)

// end is one socket of a conn.
type end struct {
	fd int32
	ev uint8
}

// flow is one direction, src -> dst. While idle it holds nothing: pipe
// fds are -1 and buf is nil.
type flow struct {
	pr, pw int32   // borrowed pipe, -1 when none
	inPipe int32   // bytes sitting in the pipe
	off    int32   // buf[off:lim] still to write
	lim    int32   //
	state  uint8   //
	smalls uint8   // bulk: small reads in a row; smallsToDecay of them end bulk mode
	werr   uint16  // errno of a failed inline pending write, reported on attach
	buf    *[]byte // borrowed copy buffer (or pending remainder), nil when none
	moved  int64   // bytes written to dst
}

func (f *flow) init() { f.pr, f.pw = -1, -1 }

// smallsToDecay: a bulk direction goes back to the small-message path after
// this many reads in a row came back smaller than the small buffer. One is
// too few: a bulk stream whose reader keeps up reads less than 16 KiB now and
// then (an ACK-clocked segment), and every such read would send the next 16
// KiB through a copy (+30% plane CPU per GB in BenchmarkPerfBulk).
const smallsToDecay = 4

// decay counts a bulk-path read of n bytes toward leaving bulk mode.
func (f *flow) decay(n int) {
	if n >= smallSize {
		f.smalls = 0
		return
	}
	if f.smalls++; f.smalls >= smallsToDecay {
		f.smalls = 0
		f.state &^= flowBulk // small again: the next read goes through l.small
	}
}

// holds reports bytes taken from src (in the pipe or the buffer) still waiting for dst.
func (f *flow) holds() bool { return f.buf != nil || f.inPipe > 0 }

// conn is a tunnel (two flows) or a transfer (flows[0] only, x != nil). It is
// the whole per-tunnel state: 168 bytes (the 176-byte size class).
type conn struct {
	ends  [2]end
	flows [2]flow

	slot     int32 // index in loop.slots; the poller's event carries it
	tb       int16 // wheel bucket (< wheelSize) or -1; 16 bits keep the conn in the 160-byte size class
	closed   bool
	ready    bool   // on loop.ready: budget ran out with work left
	deadline uint32 // wheel tick at which to look again
	active   uint32 // tick of the last byte moved
	idle     uint32 // idle timeout in ticks, 0 = none
	finAt    uint32 // tick at which the fin timeout fires, 0 = none
	route    int32  // tunnel: metrics route index (Tunnel.Route, Upgrade.Route)
	first    uint8  // tunnel: 1 + the direction that finished first (0: none yet), for the close reason
	carried  bool   // tunnel: its byte counts were counted before (adopted or given back, export.go): attach does not count them again
	started  int64  // tunnel: Plane.mono() when it became one (Tunnel, or the switch), for the lifetime
	tnext    int32  // wheel neighbours as slots (-1: none): two int32s rather than two pointers keep
	tprev    int32  // the conn in its size class with the TLS pointer below (tls.go)

	onClose func(TunnelResult)
	x       *xfer
	hs      *handshake // an upgrade still being decided (upgrade.go); nil for tunnels and transfers
	t       *tlsEnd    // a TLS end: records opened and sealed on the way (tls.go); nil for plain conns
}

type xfer struct {
	remaining int64  // body bytes still to read from src; -1 = chunked
	quiet     uint32 // SrcIdleTimeout in ticks, 0 = none (the stall timeout is conn.idle)
	pending   int64
	framer    Framer
	chunkDone bool
	extra     []byte
	done      func(TransferResult)
}

type loopStats struct {
	tunnels, transfers   atomic.Int64
	handshakes           atomic.Int64 // upgrades connecting or waiting for their answer
	pipesIdle, pipesBusy atomic.Int64
	bufsIdle             atomic.Int64
	spliced, copied      atomic.Int64
	pipeFallbacks        atomic.Int64
	tlsTunnels           atomic.Int64 // tunnels with a TLS end (tls.go)
	tlsShrunk            atomic.Int64 // ... whose session dropped its AEADs (idle)
	tlsStaying           atomic.Int64 // ... that a binary upgrade cannot export (TLS 1.2)
	tlsPartial           atomic.Int64 // conns with a TLS record half-received (a borrowed buffer)
}

type pipePair struct{ r, w int32 }

type loop struct {
	p    *Plane
	id   int
	poll poller

	mu       sync.Mutex
	queue    []*conn
	cmds     []func() // run on the loop after the queued conns attach (control.go)
	stopping bool

	// Owned by the loop goroutine.
	slots    []*conn
	free     []int32
	pipes    []pipePair
	bufs     []*[]byte // loop-local spares: sync.Pool drops its items at GC
	bufsOut  int       // pooled buffers held by flows right now
	ready    []*conn
	spare    []*conn
	wheel    [wheelSize]int32 // slot of each bucket's first conn, -1 = empty
	armed    int
	start    time.Time
	now      uint32
	lastTick uint32
	budget   int
	warned   bool    // a pipe2 failure was logged
	capped   bool    // reaching MaxPipes or the fd budget was logged
	small    []byte  // smallSize: the small-message path reads here and writes straight out
	scratch  Scratch // the upgrade judges' per-loop state
	st       loopStats
	m        *metrics.Shard // this loop's metrics (nil: off); only the loop goroutine writes it

	tlsScratch []byte // answers sealed toward TLS clients on the upgrade path (tls.go)
}

func newLoop(p *Plane, id int) (*loop, error) {
	l := &loop{p: p, id: id, start: time.Now(), small: make([]byte, smallSize), m: p.cfg.Metrics.NewShard()}
	for i := range l.wheel {
		l.wheel[i] = -1
	}
	if err := l.poll.open(); err != nil {
		return nil, err
	}
	// A turn moves about 1 MiB whatever the pipe size (at least one pipe
	// or buffer full), so a bigger pipe means fewer syscalls per turn, not
	// a longer wait for the other conns on the loop.
	l.budget = max(turnBytes, p.cfg.PipeSize, p.cfg.BufferSize)
	return l, nil
}

// submit queues c for the loop; the poller is woken only when the queue
// was empty, since a non-empty queue already has a wake-up pending.
func (l *loop) submit(c *conn) bool {
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		return false
	}
	wake := len(l.queue) == 0 && len(l.cmds) == 0
	l.queue = append(l.queue, c)
	l.mu.Unlock()
	if wake {
		l.poll.wake()
	}
	return true
}

func (l *loop) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

func (l *loop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.poll.wake()
}

func (l *loop) run() {
	defer l.p.wg.Done()
	defer l.shutdown()
	var pending []*conn
	for {
		timeout := -1
		if len(l.ready) > 0 {
			timeout = 0
		} else if l.armed > 0 {
			timeout = l.msToNextTick()
		}
		n, err := l.poll.wait(timeout)
		if err != nil && err != unix.EINTR {
			l.p.log.Error("splice: poller wait failed, loop stops", "loop", l.id, "err", err)
			return
		}
		l.now = uint32(time.Since(l.start) / l.p.tick)
		woken := false
		for i := 0; i < n; i++ {
			slot, side, ev := l.poll.event(i)
			if slot < 0 {
				woken = woken || slot == wakeSlot
				continue
			}
			c := l.slots[slot]
			if c == nil || c.closed {
				continue
			}
			c.ends[side].ev |= ev
			l.pump(c)
		}
		if len(l.ready) > 0 {
			// Conns that used up their budget go again after everyone
			// else with pending events had a turn.
			batch := l.ready
			l.ready = l.spare[:0]
			for i, c := range batch {
				batch[i] = nil
				c.ready = false
				if !c.closed {
					l.pump(c)
				}
			}
			l.spare = batch[:0]
		}
		l.advance()
		if woken {
			l.poll.drainWake()
			l.mu.Lock()
			pending, l.queue = l.queue, pending[:0]
			cmds := l.cmds
			l.cmds = nil
			stopping := l.stopping
			l.mu.Unlock()
			for i, c := range pending {
				pending[i] = nil
				l.attach(c)
			}
			pending = pending[:0]
			for _, f := range cmds {
				f()
			}
			if stopping {
				return
			}
		}
	}
}

func (l *loop) msToNextTick() int {
	el := time.Since(l.start)
	d := (el/l.p.tick+1)*l.p.tick - el
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

// attach registers a new conn's sockets and starts it moving.
func (l *loop) attach(c *conn) {
	if len(l.free) > 0 {
		c.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
	} else {
		c.slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.slots[c.slot] = c
	c.tb = -1
	c.active = l.now
	if c.hs != nil {
		l.startHandshake(c)
		return
	}
	if c.x != nil {
		l.st.transfers.Add(1)
	} else {
		l.st.tunnels.Add(1) // c.idle was set by Tunnel (its own or the Config's)
		if !c.carried {
			l.countPending(c)
		}
		if c.t != nil {
			l.tlsCount(c)
		}
	}
	for i := range c.flows {
		if e := c.flows[i].werr; e != 0 {
			// The inline pending write (writePending) failed before the
			// conn got here.
			l.failWrite(c, i, unix.Errno(e))
			return
		}
	}
	for i := range c.ends {
		if err := l.poll.add(int(c.ends[i].fd), c.slot, i); err != nil {
			l.fail(c, &OpError{Dir: c.name(0) + "->" + c.name(1), Op: "register " + c.name(i), Err: err})
			return
		}
	}
	// Optimistically writable so pending bytes go out at once; readable
	// waits for the edge the poller reports at registration.
	c.ends[0].ev = evOut
	c.ends[1].ev = evOut
	l.arm(c)
	l.pump(c)
}

func (c *conn) name(i int) string {
	if c.x != nil && c.hs == nil {
		if i == 0 {
			return "src"
		}
		return "dst"
	}
	if i == 0 {
		return "client"
	}
	return "backend"
}

func (c *conn) dir(i int) string {
	if c.x != nil && c.hs == nil {
		return "src->dst"
	}
	if i == 0 {
		return "client->backend"
	}
	return "backend->client"
}

// pump advances both directions, then reports a socket error nobody
// tripped over (e.g. an RST on a side whose directions are both stalled).
func (l *loop) pump(c *conn) {
	if c.hs != nil {
		l.hsStep(c)
		return
	}
	if !l.move(c, 0) {
		return
	}
	if !l.move(c, 1) {
		return
	}
	for i := range c.ends {
		if c.ends[i].ev&evErr == 0 {
			continue
		}
		c.ends[i].ev &^= evErr
		if v, err := unix.GetsockoptInt(int(c.ends[i].fd), unix.SOL_SOCKET, unix.SO_ERROR); err == nil && v != 0 {
			l.fail(c, &OpError{Dir: c.dir(i), Op: "error on " + c.name(i), Err: unix.Errno(v)})
			return
		}
	}
	if c.flows[0].state&flowDone != 0 && c.flows[1].state&flowDone != 0 && c.x == nil {
		l.finish(c, nil)
	}
}

// move runs direction i (ends[i] -> ends[1-i]) until it has to wait or its
// budget is spent. It returns false when the conn is gone.
func (l *loop) move(c *conn, i int) bool {
	if c.t != nil {
		return l.moveTLS(c, i) // decrypt-and-forward through copy buffers (tls.go)
	}
	f := &c.flows[i]
	src, dst := &c.ends[i], &c.ends[1-i]
	budget := l.budget
	for {
		if f.state&flowDone != 0 {
			return true
		}
		// Bytes already taken from src go out first, in order.
		if f.buf != nil {
			if dst.ev&evOut == 0 {
				return true
			}
			n, err := l.writeHeld(f, dst)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				return l.writeFailed(c, i, err)
			}
			if c.x == nil {
				l.m.TunnelBytes(int(c.route), metrics.Direction(i), n)
			}
			c.active = l.now
			if budget -= n; budget <= 0 {
				l.defer_(c)
				return true
			}
			continue
		}
		if f.inPipe > 0 {
			if dst.ev&evOut == 0 {
				return true
			}
			n, err := spliceMove(int(f.pr), int(dst.fd), int(f.inPipe))
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				return l.writeFailed(c, i, err)
			}
			f.inPipe -= int32(n)
			f.moved += int64(n)
			l.st.spliced.Add(int64(n))
			if c.x == nil {
				l.m.TunnelBytes(int(c.route), metrics.Direction(i), n)
			}
			c.active = l.now
			if f.inPipe == 0 {
				l.putPipe(f)
			}
			if budget -= n; budget <= 0 {
				l.defer_(c)
				return true
			}
			continue
		}
		// Drained. Is this direction over?
		if x := c.x; x != nil && (x.remaining == 0 || x.chunkDone) {
			l.finish(c, nil)
			return false
		}
		if f.state&flowEOF != 0 {
			if c.x != nil {
				l.finish(c, &OpError{Dir: c.dir(i), Op: "read from src", Err: ErrUnexpectedEOF})
				return false
			}
			if err := rawShutdown(int(dst.fd), unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
				l.fail(c, &OpError{Dir: c.dir(i), Op: "shutdown " + c.name(1-i), Err: err})
				return false
			}
			f.state |= flowDone
			if c.first == 0 {
				c.first = uint8(i) + 1 // which side finished first names a clean close
			}
			l.halfDone(c)
			return true
		}
		if src.ev&evIn == 0 {
			return true
		}
		if c.x == nil && f.state&flowBulk == 0 {
			// Small-message path. Read only what can be written now: with
			// dst full the bytes stay in src's socket (backpressure) and
			// dst's EPOLLOUT edge brings us back.
			if dst.ev&evOut == 0 {
				return true
			}
			n, ok := l.relaySmall(c, i, f, src, dst)
			if !ok {
				return false
			}
			if budget -= n; budget <= 0 {
				l.defer_(c)
				return true
			}
			continue
		}
		if !l.fill(c, i, f, src) {
			return false
		}
	}
}

// relaySmall is one round of the small-message path: one read into the
// loop's small buffer, written straight to dst. What dst does not take is
// kept in an exact-size slice the flow owns (as writePending does), so a
// direction never holds a buffer after its bytes left, and the hot path
// allocates nothing.
//
// A read that comes back shorter than the buffer drained the socket: the
// next byte to arrive raises a new edge, so the third syscall that would
// only find EAGAIN is skipped. Not when the peer already shut down its side
// (evHup): the edge that reported the data also reported the FIN, and no new
// edge will come for the EOF behind the data. A read that fills the buffer
// marks the direction bulk: fill takes over with a pipe (or a pooled
// buffer) until a read comes back small again.
func (l *loop) relaySmall(c *conn, i int, f *flow, src, dst *end) (int, bool) {
	b := l.small
	var n int
	for {
		var err error
		n, err = rawRead(int(src.fd), b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			src.ev &^= evIn
			return 0, true
		case err != nil:
			l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i), Err: err})
			return 0, false
		case n == 0:
			f.state |= flowEOF
			return 0, true
		}
		break
	}
	if n == len(b) {
		f.state |= flowBulk
	} else if src.ev&evHup == 0 {
		src.ev &^= evIn
	}
	c.active = l.now
	off := 0
	for off < n {
		m, err := rawWrite(int(dst.fd), b[off:n])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			dst.ev &^= evOut
			break
		}
		if err != nil {
			f.moved += int64(off)
			l.st.copied.Add(int64(off))
			l.tunnelBytes(c, i, off)
			l.failWrite(c, i, err)
			return off, false
		}
		off += m
	}
	f.moved += int64(off)
	l.st.copied.Add(int64(off))
	l.tunnelBytes(c, i, off)
	if off < n {
		s := make([]byte, n-off)
		copy(s, b[off:n])
		f.buf, f.off, f.lim = &s, 0, int32(len(s))
		f.state |= flowOwnBuf
	}
	return n, true
}

// fill takes the next bytes from src into a borrowed pipe, or into a pooled
// buffer when splice is off, refused, or no pipe can be had. It only runs
// when the direction holds nothing, so an EAGAIN from splice means src is
// empty, not that the pipe is full.
func (l *loop) fill(c *conn, i int, f *flow, src *end) bool {
	want := l.p.cfg.PipeSize
	if want == 0 {
		want = 64 << 10
	}
	x := c.x
	useSplice := l.p.spliceOK && f.state&flowCopy == 0
	if x != nil {
		if x.remaining > 0 {
			want = int(min(int64(want), x.remaining))
		} else if x.remaining < 0 {
			// Chunked: only chunk data is spliced blind; size lines and
			// trailers go through the framer on the copy path.
			left := x.framer.DataLeft()
			if left <= 0 {
				useSplice = false
			} else {
				want = int(min(int64(want), left))
			}
		}
	}
	if useSplice && l.getPipe(f) {
		for {
			n, err := l.p.spliceIn(int(src.fd), int(f.pw), want)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				src.ev &^= evIn
				l.putPipe(f)
				return true
			case err == unix.EINVAL || err == unix.ENOSYS:
				// Not a spliceable socket: this direction copies from now on.
				f.state |= flowCopy
				l.putPipe(f)
				return true
			case err != nil:
				l.putPipe(f)
				l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i), Err: err})
				return false
			case n == 0:
				f.state |= flowEOF
				l.putPipe(f)
				return true
			}
			f.inPipe = int32(n)
			f.decay(n)
			c.active = l.now // progress: a stall is measured from here
			if x != nil {
				if x.remaining > 0 {
					x.remaining -= int64(n)
				} else {
					x.framer.Skip(int64(n))
				}
			}
			return true
		}
	}
	bp := l.getBuf()
	b := *bp
	if x != nil && x.remaining > 0 && int64(len(b)) > x.remaining {
		b = b[:x.remaining]
	}
	for {
		n, err := rawRead(int(src.fd), b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			src.ev &^= evIn
			l.putBuf(bp)
			return true
		case err != nil:
			l.putBuf(bp)
			l.fail(c, &OpError{Dir: c.dir(i), Op: "read from " + c.name(i), Err: err})
			return false
		case n == 0:
			f.state |= flowEOF
			l.putBuf(bp)
			return true
		}
		f.buf, f.off, f.lim = bp, 0, int32(n)
		f.decay(n)
		c.active = l.now
		if x != nil {
			if x.remaining > 0 {
				x.remaining -= int64(n)
			} else if x.remaining < 0 {
				if !l.frame(c, i, f) {
					return false
				}
			}
		}
		return true
	}
}

// frame feeds freshly read bytes to the chunked framer and trims what lies
// beyond the body into Extra.
func (l *loop) frame(c *conn, i int, f *flow) bool {
	x := c.x
	p := (*f.buf)[:f.lim]
	used := 0
	for used < len(p) {
		n, done, err := x.framer.Feed(p[used:])
		if err != nil {
			l.finish(c, &OpError{Dir: c.dir(i), Op: "read from src: chunked framing", Err: err})
			return false
		}
		used += n
		if done {
			x.chunkDone = true
			break
		}
		if n == 0 {
			break
		}
	}
	if !x.chunkDone && used < len(p) {
		l.finish(c, &OpError{Dir: c.dir(i), Op: "read from src: chunked framing", Err: errFramerStalled})
		return false
	}
	if used < len(p) {
		x.extra = append([]byte(nil), p[used:]...)
	}
	f.lim = int32(used)
	if f.lim == 0 {
		l.putBuf(f.buf)
		f.buf = nil
	}
	return true
}

// halfDone arms the fin timeout once the first direction has finished.
func (l *loop) halfDone(c *conn) {
	if c.finAt == 0 && l.p.cfg.FinTimeout > 0 && c.x == nil {
		c.finAt = l.now + l.p.ticks(l.p.cfg.FinTimeout) + 1
		l.arm(c)
	}
}

func (l *loop) defer_(c *conn) {
	if !c.ready {
		c.ready = true
		l.ready = append(l.ready, c)
	}
}

// getPipe gives f a pipe from the loop's free list, or a new one. It returns
// false, and the caller copies that round instead (never stall, never drop),
// when the plane already holds MaxPipes pipes, when the fd budget has no room
// for two more fds, or when pipe2 fails (EMFILE/ENFILE, EPERM past
// pipe-user-pages-hard).
func (l *loop) getPipe(f *flow) bool {
	if f.pr >= 0 {
		return true
	}
	if n := len(l.pipes); n > 0 {
		pp := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		f.pr, f.pw = pp.r, pp.w
		l.st.pipesIdle.Add(-1)
		l.st.pipesBusy.Add(1)
		l.m.Pipes(metrics.PipeIdle, -1)
		l.m.Pipes(metrics.PipeBusy, 1)
		return true
	}
	p := l.p
	if p.pipes.Add(1) > p.maxPipes && p.maxPipes > 0 {
		p.pipes.Add(-1)
		l.noPipe("splice: pipe cap reached (-max-pipes), copying until pipes are free", nil)
		return false
	}
	if !p.fds.TryAcquire(2) {
		p.pipes.Add(-1)
		l.noPipe("splice: fd budget exhausted, copying instead of creating a pipe", nil)
		return false
	}
	var fds [2]int
	if err := p.pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		p.pipes.Add(-1)
		p.fds.Release(2)
		l.noPipe("", err)
		return false
	}
	if sz := p.cfg.PipeSize; sz > 0 {
		setPipeSize(fds[1], sz)
	}
	f.pr, f.pw = int32(fds[0]), int32(fds[1])
	l.st.pipesBusy.Add(1)
	l.m.Pipes(metrics.PipeBusy, 1)
	return true
}

// noPipe counts a round that copies for want of a pipe and says so once per
// loop: at Info for a limit wsgate set itself, at Warn for a kernel refusal.
func (l *loop) noPipe(msg string, err error) {
	l.st.pipeFallbacks.Add(1)
	if err != nil {
		if !l.warned {
			l.warned = true
			l.p.log.Warn("splice: cannot create pipe, copying through buffers", "loop", l.id, "err", err)
		}
		return
	}
	if !l.capped {
		l.capped = true
		l.p.log.Info(msg, "loop", l.id, "max_pipes", l.p.maxPipes, "fd_budget", l.p.fds.Limit())
	}
}

// putPipe returns f's pipe to the free list if it is empty, closes it
// otherwise (bytes of a dead tunnel must not leak into the next one).
func (l *loop) putPipe(f *flow) {
	if f.pr < 0 {
		return
	}
	l.st.pipesBusy.Add(-1)
	l.m.Pipes(metrics.PipeBusy, -1)
	if f.inPipe == 0 && len(l.pipes) < l.p.cfg.PipePoolMax {
		l.pipes = append(l.pipes, pipePair{f.pr, f.pw})
		l.st.pipesIdle.Add(1)
		l.m.Pipes(metrics.PipeIdle, 1)
	} else {
		l.closePipe(f.pr, f.pw)
	}
	f.pr, f.pw, f.inPipe = -1, -1, 0
}

// closePipe closes a pipe and takes it off the plane's pipe and fd counts.
func (l *loop) closePipe(r, w int32) {
	rawClose(int(r))
	rawClose(int(w))
	l.p.pipes.Add(-1)
	l.p.fds.Release(2)
}

// bufKeep is the floor of the loop-local spare buffers: a loop keeps no
// more spares than max(bufKeep, buffers its flows hold right now), so a
// busy copy-path loop recycles its working set without touching sync.Pool,
// and a loop whose tunnels went quiet keeps 2 x 64 KiB instead of the
// 16 x 64 KiB (2 MiB with 2 loops, most of an idle plane's heap) it used to
// keep forever. The rest goes back to the plane's sync.Pool, which the GC
// empties.
const bufKeep = 2

func (l *loop) getBuf() *[]byte {
	l.bufsOut++
	if n := len(l.bufs); n > 0 {
		bp := l.bufs[n-1]
		l.bufs[n-1] = nil
		l.bufs = l.bufs[:n-1]
		l.st.bufsIdle.Add(-1)
		return bp
	}
	return l.p.bufs.Get().(*[]byte)
}

// putBuf takes back a buffer from getBuf.
func (l *loop) putBuf(bp *[]byte) {
	l.bufsOut--
	if cap(*bp) == l.p.cfg.BufferSize && len(l.bufs) < max(bufKeep, l.bufsOut) {
		*bp = (*bp)[:l.p.cfg.BufferSize]
		l.bufs = append(l.bufs, bp)
		l.st.bufsIdle.Add(1)
		return
	}
	l.p.putBuf(bp)
	// Shrink to the working set once it fell: a burst's extra spares go
	// back to sync.Pool as the loop quiets down.
	for len(l.bufs) > max(bufKeep, l.bufsOut) {
		n := len(l.bufs) - 1
		l.p.putBuf(l.bufs[n])
		l.bufs[n] = nil
		l.bufs = l.bufs[:n]
		l.st.bufsIdle.Add(-1)
	}
}

// dropBuf releases f's buffer: a pending remainder goes to the GC, a pooled
// buffer back to the pool.
func (l *loop) dropBuf(f *flow) {
	if f.state&flowOwnBuf != 0 {
		f.state &^= flowOwnBuf
	} else {
		l.putBuf(f.buf)
	}
	f.buf = nil
}

func (l *loop) fail(c *conn, err error) { l.finish(c, err) }

// writeFailed handles an error writing direction i's bytes (from a buffer or a pipe) to its
// destination: EAGAIN parks the direction until the destination is writable again, anything
// else ends the conn. It returns what move returns: false when the conn is gone.
func (l *loop) writeFailed(c *conn, i int, err error) bool {
	if err == unix.EAGAIN {
		c.ends[1-i].ev &^= evOut
		return true
	}
	l.failWrite(c, i, err)
	return false
}

// failWrite ends the conn with an error naming direction i and its destination.
func (l *loop) failWrite(c *conn, i int, err error) {
	l.fail(c, &OpError{Dir: c.dir(i), Op: "write to " + c.name(1-i), Err: err})
}

// finish ends a conn: deregisters both sockets, returns pipe and buffers,
// then closes the sockets (tunnel) or hands them back (transfer).
func (l *loop) finish(c *conn, err error) {
	if c.closed {
		return
	}
	if c.hs != nil {
		if c.hs.phase == hsRelaying && err != ErrClosed {
			l.relayDone(c, err)
		} else {
			l.hsEnd(c, UpgradeClosed, err)
		}
		return
	}
	c.closed = true
	l.disarm(c)
	if c.slot >= 0 && int(c.slot) < len(l.slots) && l.slots[c.slot] == c {
		l.slots[c.slot] = nil
		l.free = append(l.free, c.slot)
	}
	for i := range c.ends {
		l.poll.del(int(c.ends[i].fd))
	}
	if c.t != nil {
		l.tlsForget(c)
	}
	for i := range c.flows {
		f := &c.flows[i]
		l.putPipe(f)
		if f.buf != nil {
			l.dropBuf(f)
		}
	}
	if x := c.x; x != nil {
		l.st.transfers.Add(-1)
		// The fds go back to the caller: they leave the plane's count now.
		l.p.fds.Release(2)
		res := TransferResult{
			Src:   int(c.ends[0].fd),
			Dst:   int(c.ends[1].fd),
			Moved: max(c.flows[0].moved-x.pending, 0),
			Extra: x.extra,
			Err:   err,
		}
		if c.t != nil {
			res.ReadClosed = c.t.readClosed // the session goes back to the caller with the fds
		}
		x.done(res)
		return
	}
	l.st.tunnels.Add(-1)
	if c.t != nil {
		c.t.rec.Close() // wipe the keys, return a borrowed record buffer
	}
	rawClose(int(c.ends[0].fd))
	rawClose(int(c.ends[1].fd))
	l.p.fds.Release(2)
	l.p.open.Add(-1)
	reason := closeReason(c, err)
	dur := time.Duration(l.p.mono() - c.started)
	l.m.TunnelClosed(int(c.route), reason, dur)
	if c.onClose != nil {
		c.onClose(TunnelResult{ClientToBackend: c.flows[0].moved, BackendToClient: c.flows[1].moved, Err: err,
			Reason: reason, Duration: dur, Loop: l.id})
	}
}

// closeReason classifies a tunnel's end from what finish knows: the error that ended it, or,
// for a clean close, which direction finished first (flows[0] is the client's).
func closeReason(c *conn, err error) metrics.CloseReason {
	switch {
	case err == nil:
		if c.first == 2 {
			return metrics.CloseBackend
		}
		return metrics.CloseClient
	case errors.Is(err, ErrIdleTimeout):
		return metrics.CloseIdleTimeout
	case errors.Is(err, ErrFinTimeout):
		return metrics.CloseFinTimeout
	case errors.Is(err, ErrClosed):
		return metrics.CloseDrain
	case errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.EPIPE):
		return metrics.CloseReset
	}
	return metrics.CloseError
}

// writeHeld writes the bytes f holds toward dst, once, and accounts for what went: the plain and
// the TLS copy loops share it (each then marks the conn active its own way). f's buffer goes
// back to the loop as soon as it is empty, so an idle direction holds none.
func (l *loop) writeHeld(f *flow, dst *end) (int, error) {
	n, err := rawWrite(int(dst.fd), (*f.buf)[f.off:f.lim])
	if err != nil {
		return 0, err
	}
	f.off += int32(n)
	f.moved += int64(n)
	l.st.copied.Add(int64(n))
	if f.off == f.lim {
		l.dropBuf(f)
	}
	return n, nil
}

// tunnelBytes counts n bytes moved in direction i of c if c is a tunnel (not a transfer, not a
// refusal being relayed).
func (l *loop) tunnelBytes(c *conn, i, n int) {
	if c.x == nil && c.hs == nil {
		l.m.TunnelBytes(int(c.route), metrics.Direction(i), n)
	}
}

// countPending counts the bytes Plane.Tunnel wrote inline on the HTTP loop's goroutine, before
// this loop owned the conn: the first thing the loop does with a tunnel (attach, or shutdown for
// one that never got attached).
func (l *loop) countPending(c *conn) {
	for i := range c.flows {
		if n := c.flows[i].moved; n > 0 {
			l.m.TunnelBytes(int(c.route), metrics.Direction(i), int(n))
		}
	}
}

// shutdown runs when the plane closes: every conn still here ends with
// ErrClosed, queued ones too, and the pool's pipes are closed.
func (l *loop) shutdown() {
	l.mu.Lock()
	l.stopping = true
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, c := range q {
		// Never attached: count it so finish's accounting balances.
		c.slot, c.tb = -1, -1
		if c.hs != nil {
			l.st.handshakes.Add(1)
		} else if c.x != nil {
			l.st.transfers.Add(1)
		} else {
			l.st.tunnels.Add(1)
			l.countPending(c)
		}
		l.finish(c, ErrClosed)
	}
	for _, c := range l.slots {
		if c != nil {
			l.finish(c, ErrClosed)
		}
	}
	for _, pp := range l.pipes {
		l.closePipe(pp.r, pp.w)
	}
	l.st.pipesIdle.Add(-int64(len(l.pipes)))
	l.m.Pipes(metrics.PipeIdle, -len(l.pipes))
	l.pipes = nil
	l.st.bufsIdle.Add(-int64(len(l.bufs)))
	l.bufs = nil
	// Commands queued before the loop stopped still run (do refuses new ones): whoever waits
	// for one gets its answer, against an empty loop.
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, f := range cmds {
		f()
	}
	l.poll.close()
}
