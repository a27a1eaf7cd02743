package splice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Tunnels leaving for a successor process, and tunnels arriving from a predecessor (binary
// upgrade, docs/lifecycle.md). The plane defines a tunnel's state; the hand-off (package
// handoff, driven by cmd/wsgate through loop) carries it with the tunnel's fds.
//
// Export, on the tunnel's loop: both sockets leave the loop's epoll set first (an epoll
// registration belongs to the open file, which the successor will hold too: left in place it
// would keep firing here), then the timer wheel and the slot; the conn is marked closed so that
// nothing of this loop touches it again. What it holds travels: bytes in a pipe stay in that
// pipe (its two fds go with the tunnel), bytes in a copy buffer go in the state. The conn waits,
// with its fds open, for the hand-off's verdict (ExportDone): gone (the successor has it: the
// hand-off closed our fds; the caller's OnClose hears ErrPassed) or still ours (it is attached to
// its loop again, exactly as it was: nothing moved meanwhile, the bytes that arrived wait in the
// sockets).
//
// Adoption, in the successor: PrepareAdopt decodes the state and reserves fds in the budget
// without touching the sockets (the hand-off may still cancel); CommitAdopt attaches the tunnel
// to a loop like a new one, with its timers, counters, half-close state and held bytes.
//
// Invariant: a tunnel's fds are registered in at most one epoll set, of at most one process, at
// any time; each is closed exactly once, by its last owner.
//
// State, version 1 (big-endian):
//
//	u8  version
//	u8  which direction finished first: 0 none yet, 1 flow 0, 2 flow 1 (the close reason's)
//	u8  flow 0 state, u8 flow 1 state: 1 EOF seen, 2 done (dst shut down), 4 copy only (splice
//	    refused the socket)
//	u8  pipes: 1 flow 0's pipe is passed (its read and write ends follow the two sockets),
//	    2 flow 1's (after flow 0's)
//	u32 idle timeout in ms (0: none): the tunnel's own or the old plane's Config's, kept as it is
//	u32 ms since the last byte moved
//	u32 ms left of the fin timeout (0: not armed)
//	u64 flow 0 bytes moved, u64 flow 1 bytes moved
//	u32 flow 0 bytes in its pipe, u32 flow 1 bytes in its pipe
//	u64 ms since the tunnel began (its lifetime goes on)
//	u32 n, flow 0's held bytes (taken from the client, not yet written to the backend)
//	u32 n, flow 1's held bytes
//	u16 n, the metrics route name (indexes are each process's own)
//
// FDs: client, backend, then the pipes flagged, each read end then write end. Flow 0 is
// client -> backend.

// tunnelStateVersion is the first byte of a tunnel's state; a successor refuses (and the old
// process keeps) a state whose version it does not know.
const tunnelStateVersion = 1

const exportHead = 1 + 1 + 2 + 1 + 4 + 4 + 4 + 8 + 8 + 4 + 4 + 8

const (
	expFlowEOF uint8 = 1
	expDone    uint8 = 2
	expCopy    uint8 = 4
)

// ErrPassed is the TunnelResult.Err of a tunnel that left for a successor process: it did not
// close, its sockets live on there.
var ErrPassed = errors.New("splice: tunnel passed to the successor process")

// Exported is a tunnel taken off its loop for a successor: its fds (still open, still ours until
// ExportDone) and its state.
type Exported struct {
	FDs   []int
	State []byte
	c     *conn
	l     *loop
}

// ExportTunnels takes up to n tunnels off their loops, as evenly over the loops as they allow.
// Each one must be given to ExportDone. Transfers are not exported (they are HTTP exchanges,
// which finish here), nor upgrades still being decided (Stats.Handshakes): they are exported
// once they are tunnels. TLS tunnels (Stats.TLSTunnels) stay: they finish here.
func (p *Plane) ExportTunnels(n int) []*Exported {
	if n <= 0 {
		return nil
	}
	share := (n + len(p.loops) - 1) / len(p.loops)
	results := make(chan []*Exported, len(p.loops))
	asked := 0
	for _, l := range p.loops {
		l := l
		if l.do(func() { results <- l.exportTunnels(share) }) {
			asked++
		}
	}
	var out []*Exported
	for ; asked > 0; asked-- {
		out = append(out, <-results...)
	}
	if len(out) > n {
		// More than asked (rounding up per loop): the rest go back at once.
		for _, e := range out[n:] {
			p.ExportDone(e, errors.New("not needed"))
		}
		out = out[:n]
	}
	return out
}

// exportTunnels detaches up to n of this loop's tunnels (on the loop).
func (l *loop) exportTunnels(n int) []*Exported {
	var out []*Exported
	for i := len(l.slots) - 1; i >= 0 && len(out) < n; i-- {
		c := l.slots[i]
		if c == nil || c.closed || c.x != nil || c.hs != nil || c.t != nil {
			// Transfers finish here; an upgrade still deciding goes once it is a tunnel; a TLS
			// tunnel's session does not travel: it stays and drains here.
			continue
		}
		out = append(out, l.export(c))
	}
	return out
}

func (l *loop) export(c *conn) *Exported {
	for i := range c.ends {
		l.poll.del(int(c.ends[i].fd)) // first: see above
	}
	l.disarm(c)
	l.slots[c.slot] = nil
	l.free = append(l.free, c.slot)
	c.slot = -1
	c.closed = true // events already collected for its slot, and the ready list, skip it
	l.st.tunnels.Add(-1)

	e := &Exported{c: c, l: l, FDs: []int{int(c.ends[0].fd), int(c.ends[1].fd)}}
	b := make([]byte, exportHead, exportHead+int(c.flows[0].lim-c.flows[0].off)+int(c.flows[1].lim-c.flows[1].off)+8)
	b[0] = tunnelStateVersion
	b[1] = c.first
	for i := range c.flows {
		f := &c.flows[i]
		var s uint8
		if f.state&flowEOF != 0 {
			s |= expFlowEOF
		}
		if f.state&flowDone != 0 {
			s |= expDone
		}
		if f.state&flowCopy != 0 {
			s |= expCopy
		}
		b[2+i] = s
		if f.inPipe > 0 {
			b[4] |= 1 << i
			e.FDs = append(e.FDs, int(f.pr), int(f.pw))
		} else if f.pr >= 0 {
			l.putPipe(f) // empty: back to the pool
		}
	}
	tick := l.p.tick
	ms := func(ticks uint32) uint32 { return uint32(time.Duration(ticks) * tick / time.Millisecond) }
	binary.BigEndian.PutUint32(b[5:], ms(c.idle))
	binary.BigEndian.PutUint32(b[9:], ms(l.now-c.active))
	if c.finAt != 0 {
		left := uint32(1)
		if after(c.finAt, l.now) {
			left = max(ms(c.finAt-l.now), 1)
		}
		binary.BigEndian.PutUint32(b[13:], left)
	}
	binary.BigEndian.PutUint64(b[17:], uint64(c.flows[0].moved))
	binary.BigEndian.PutUint64(b[25:], uint64(c.flows[1].moved))
	binary.BigEndian.PutUint32(b[33:], uint32(c.flows[0].inPipe))
	binary.BigEndian.PutUint32(b[37:], uint32(c.flows[1].inPipe))
	binary.BigEndian.PutUint64(b[41:], uint64(max(l.p.mono()-c.started, 0)/int64(time.Millisecond)))
	for i := range c.flows {
		f := &c.flows[i]
		var held []byte
		if f.buf != nil {
			held = (*f.buf)[f.off:f.lim]
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(held)))
		b = append(b, held...)
	}
	name := l.p.cfg.Metrics.RouteName(int(c.route))
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	e.State = append(b, name...)
	return e
}

// ExportDone is the hand-off's verdict on e. nil: the successor has the tunnel and the hand-off
// closed our copies of its fds; its OnClose hears ErrPassed with the byte counts so far.
// Otherwise the tunnel is still ours and carries on on its loop.
func (p *Plane) ExportDone(e *Exported, err error) {
	l, c := e.l, e.c
	if l.do(func() { l.exported(c, err == nil) }) {
		return
	}
	// The loop stopped meanwhile (Close): a tunnel still ours ends here.
	gone := err == nil
	if !gone {
		for _, fd := range e.FDs {
			unix.Close(fd)
		}
	}
	for i := range c.flows {
		if c.flows[i].pr >= 0 {
			l.st.pipesBusy.Add(-1)
			p.pipes.Add(-1)
			p.fds.Release(2)
		}
	}
	p.forgetExported(c, gone)
}

// exported runs on the loop with the verdict.
func (l *loop) exported(c *conn, gone bool) {
	if !gone {
		c.closed = false
		c.carried = true // its bytes were counted already
		l.attach(c)
		return
	}
	l.m.TunnelPassed(int(c.route))
	for i := range c.flows {
		f := &c.flows[i]
		if f.pr >= 0 { // passed with its bytes: the fds were closed by the hand-off
			f.pr, f.pw, f.inPipe = -1, -1, 0
			l.st.pipesBusy.Add(-1)
			l.p.pipes.Add(-1)
			l.p.fds.Release(2)
		}
		if f.buf != nil {
			l.dropBuf(f)
		}
	}
	l.p.forgetExported(c, true)
}

// forgetExported drops an exported tunnel from the plane's counts and tells its owner: passed to
// the successor, or closed (the plane closed before the verdict came).
func (p *Plane) forgetExported(c *conn, passed bool) {
	p.fds.Release(2)
	p.open.Add(-1)
	if c.onClose != nil {
		err := ErrPassed
		if !passed {
			err = ErrClosed
		}
		c.onClose(TunnelResult{ClientToBackend: c.flows[0].moved, BackendToClient: c.flows[1].moved, Err: err})
	}
}

// AdoptedTunnel is a tunnel from the predecessor between PrepareAdopt and CommitAdopt (or
// CancelAdopt).
type AdoptedTunnel struct {
	c       *conn
	ago     time.Duration // since the last byte moved
	finLeft time.Duration // of the fin timeout, 0: not armed
	nfds    int
	age     time.Duration // since the tunnel began
	route   string        // its metrics route name
	// OnClose runs when the adopted tunnel ends, as Tunnel.OnClose; set it before CommitAdopt.
	OnClose func(TunnelResult)
}

// BackendFD is the adopted tunnel's backend socket (for the caller to find its backend).
func (a *AdoptedTunnel) BackendFD() int { return int(a.c.ends[1].fd) }

// PrepareAdopt decodes a tunnel's state and reserves its fds in the budget, without touching
// them. An error refuses the tunnel (the old process keeps it).
func (p *Plane) PrepareAdopt(fds []int, state []byte) (*AdoptedTunnel, error) {
	if len(state) < exportHead || state[0] != tunnelStateVersion {
		v := -1
		if len(state) > 0 {
			v = int(state[0])
		}
		return nil, fmt.Errorf("tunnel state version %d (%d bytes): this binary knows %d", v, len(state), tunnelStateVersion)
	}
	pipes := state[4] & 3
	want := 2
	for i := 0; i < 2; i++ {
		if pipes&(1<<i) != 0 {
			want += 2
		}
	}
	if len(fds) != want {
		return nil, fmt.Errorf("tunnel with %d fds, its state says %d", len(fds), want)
	}
	if pipes != 0 && !p.spliceOK {
		return nil, errors.New("tunnel holds bytes in a pipe and splice(2) is not available here")
	}
	if state[1] > 2 {
		return nil, fmt.Errorf("tunnel state: direction %d finished first", state[1])
	}
	c := &conn{first: state[1], carried: true}
	c.ends[0].fd, c.ends[1].fd = int32(fds[0]), int32(fds[1])
	c.flows[0].init()
	c.flows[1].init()
	ms := func(off int) time.Duration {
		return time.Duration(binary.BigEndian.Uint32(state[off:])) * time.Millisecond
	}
	c.idle = p.ticks(ms(5))
	a := &AdoptedTunnel{c: c, ago: ms(9), finLeft: ms(13), nfds: want,
		age: time.Duration(binary.BigEndian.Uint64(state[41:])) * time.Millisecond}
	next := 2 // after the two sockets
	rest := state[exportHead:]
	for i := range c.flows {
		f := &c.flows[i]
		s := state[2+i]
		if s&expFlowEOF != 0 {
			f.state |= flowEOF
		}
		if s&expDone != 0 {
			f.state |= flowDone
		}
		if s&expCopy != 0 {
			f.state |= flowCopy
		}
		f.moved = int64(binary.BigEndian.Uint64(state[17+8*i:]))
		if pipes&(1<<i) != 0 {
			f.pr, f.pw = int32(fds[next]), int32(fds[next+1])
			next += 2
			f.inPipe = int32(binary.BigEndian.Uint32(state[33+4*i:]))
			if f.inPipe <= 0 {
				return nil, fmt.Errorf("flow %d: a pipe passed with %d bytes", i, f.inPipe)
			}
		}
		if len(rest) < 4 {
			return nil, errors.New("tunnel state truncated")
		}
		n := int(binary.BigEndian.Uint32(rest))
		if n > len(rest)-4 || n > 1<<30 {
			return nil, fmt.Errorf("flow %d: %d held bytes announced, %d present", i, n, len(rest)-4)
		}
		if n > 0 {
			if f.inPipe > 0 {
				return nil, fmt.Errorf("flow %d: bytes both in a pipe and held", i)
			}
			held := append([]byte(nil), rest[4:4+n]...)
			f.buf, f.off, f.lim = &held, 0, int32(n)
			f.state |= flowOwnBuf
		}
		rest = rest[4+n:]
	}
	if len(rest) < 2 || len(rest) != 2+int(binary.BigEndian.Uint16(rest)) {
		return nil, fmt.Errorf("tunnel state: %d bytes where the route name should end it", len(rest))
	}
	a.route = string(rest[2:])
	if !p.fds.TryAcquire(want) {
		return nil, errors.New("fd budget full")
	}
	return a, nil
}

// CommitAdopt makes the tunnel this process's: it joins a loop and carries on.
func (p *Plane) CommitAdopt(a *AdoptedTunnel) {
	c := a.c
	c.onClose = a.OnClose
	if a.route != "" {
		c.route = int32(p.cfg.Metrics.Route(a.route)) // registered here if this process does not have it
	}
	c.started = p.mono() - int64(a.age)
	p.open.Add(1)
	p.total.Add(1)
	pipes := 0
	for i := range c.flows {
		if c.flows[i].pr >= 0 {
			pipes++
		}
	}
	p.pipes.Add(int64(pipes)) // counted like the plane's own; the fds are in the budget already
	l := p.pick()
	if !l.do(func() { l.adopt(c, a.ago, a.finLeft) }) {
		// The plane is closing: the tunnel ends at once.
		c.closed = false
		for i := range c.flows {
			if c.flows[i].pr >= 0 {
				l.st.pipesBusy.Add(1)
			}
		}
		l.st.tunnels.Add(1)
		c.slot, c.tb = -1, -1
		l.finish(c, ErrClosed)
	}
}

// adopt attaches an adopted tunnel (on the loop) with its timers as they were.
func (l *loop) adopt(c *conn, ago, finLeft time.Duration) {
	for i := range c.flows {
		if c.flows[i].pr >= 0 {
			l.st.pipesBusy.Add(1)
		}
	}
	l.m.TunnelAdopted(int(c.route))
	l.attach(c)
	if c.closed {
		return
	}
	if t := l.p.ticks(ago); c.active == l.now && t > 0 {
		c.active = l.now - min(t, c.idle) // no byte moved at attach: the idle time runs on
	}
	if finLeft > 0 && c.finAt == 0 {
		c.finAt = l.now + l.p.ticks(finLeft)
	}
	l.arm(c)
}

// CancelAdopt drops a prepared tunnel (the hand-off closes its fds).
func (p *Plane) CancelAdopt(a *AdoptedTunnel) {
	p.fds.Release(a.nfds)
}
