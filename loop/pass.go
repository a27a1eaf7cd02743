package loop

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/route"
	"github.com/wsgate/wsgate/splice"
)

// Passing connections to a successor process (binary upgrade, docs/lifecycle.md).
//
// The old process, once its successor listens and its own listeners are closed (StopAccepting),
// calls StartPassing and hands PassItems to the hand-off (package handoff, in cmd/wsgate). From
// then on a client connection leaves the moment it is at a request boundary: waiting for a head
// (stateReadingHead), nothing of its answers queued in user space, its socket still gnet's (not
// half-closed). Idle ones leave at once (the sweep); one with an exchange in flight leaves when
// the exchange ends (finishExchange), with whatever the client pipelined behind it. What leaves
// is a dup of the socket and the conn's state: the bytes gnet read and nobody parsed yet, the
// head deadline and the head timeout. gnet's copy is closed and the conn torn down here; the
// client sees nothing (its socket lives on in the successor, with every byte it sent since in
// the socket's receive queue).
//
// An exchange still running when the window ends (PassItems' wait) finishes here, and its
// connection then closes at its boundary with Connection: close (draining): such a client
// reconnects, to the successor. A connection the hand-off gives back (the successor refused it,
// or failed) is adopted again here, exactly as the successor would have.
//
// Tunnels go first and all of them (splice.Plane.ExportTunnels: sockets, pipes with bytes in
// flight, state), a chunk at a time as the hand-off asks for more; a tunnel born meanwhile (an
// upgrade that was in flight) goes in a later round. The successor finds the tunnel's backend
// member by the backend socket's peer address and counts the tunnel on it, as the old process
// stops counting it (the tunnel's OnClose hears splice.ErrPassed).
//
// Backend connections are not passed: the successor dials its own.
//
// Invariant: a client conn is passed only on its own loop, under pass.mu, while pass.on; once
// endPassing has set pass.on false no conn leaves, and every conn queued but not yet taken by the
// hand-off is adopted again here.

// PassKind says what a Passed is.
type PassKind uint8

const (
	PassIdleConn PassKind = 1 // a keep-alive client connection at a request boundary: 1 fd
	PassTunnel   PassKind = 2 // a tunnel: client and backend sockets, and pipes with bytes in flight
)

// passChunk is how many tunnels leave their loops at a time: about one hand-off batch (253 fds).
const passChunk = 126

// Passed is one thing leaving for the successor: its fds (ours until PassDone) and its state.
type Passed struct {
	Kind  PassKind
	FDs   []int
	State []byte
	t     *splice.Exported // PassTunnel
}

// passer is the Server's passing state.
type passer struct {
	active atomic.Bool // on, for the boundary's cheap check
	mu     sync.Mutex
	on     bool
	q      []*Passed
	notify chan struct{} // a conn was queued
}

// idleStateVersion is the first byte of an idle conn's state; a successor refuses (and the old
// process keeps) a state whose version it does not know.
const idleStateVersion = 1

// StartPassing starts moving client connections out at their request boundaries; PassItems
// yields them. Call it after StopAccepting.
func (s *Server) StartPassing() {
	s.pass.mu.Lock()
	s.pass.on = true
	s.pass.active.Store(true)
	if s.pass.notify == nil {
		s.pass.notify = make(chan struct{}, 1)
	}
	s.pass.mu.Unlock()
}

// PassItems yields what leaves for the successor: every client connection at a request
// boundary, and those still in an exchange as they reach one, until none is left or wait has
// passed (or ctx ends). When it returns, passing has ended: the connections still here finish
// their exchange and close with Connection: close. Every Passed it yields must be given back to
// PassDone.
func (s *Server) PassItems(ctx context.Context, wait time.Duration) iter.Seq[*Passed] {
	return func(yield func(*Passed) bool) {
		s.StartPassing()
		defer s.endPassing()
		deadline := time.Now().Add(wait)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		staying := 0 // client conns that never pass (TLS: their session does not travel), as last swept
		for sweep := true; ; {
			for {
				ex := s.plane.ExportTunnels(passChunk)
				if len(ex) == 0 {
					break
				}
				for i, e := range ex {
					if !yield(&Passed{Kind: PassTunnel, FDs: e.FDs, State: e.State, t: e}) {
						for _, r := range ex[i+1:] {
							s.plane.ExportDone(r, errors.New("the hand-off stopped taking items"))
						}
						return
					}
				}
			}
			if sweep {
				staying = s.sweepPass()
			}
			q := s.takePassed()
			for i, p := range q {
				if !yield(p) {
					for _, r := range q[i+1:] {
						s.PassDone(r, errors.New("the hand-off stopped taking items"))
					}
					return
				}
			}
			if ps := s.plane.Stats(); len(q) == 0 && s.conns.Load() <= int64(staying) && ps.Tunnels <= ps.TLSTunnels && ps.Handshakes == 0 {
				return // every client connection and every tunnel that can leave has left
			}
			if time.Now().After(deadline) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-s.pass.notify:
				sweep = false
			case <-tick.C:
				sweep = true
			}
		}
	}
}

// PassDone is the hand-off's verdict on p: nil, the successor has it (the hand-off closed the
// fds); otherwise p is still ours and is adopted here again.
func (s *Server) PassDone(p *Passed, err error) {
	if p.t != nil {
		s.plane.ExportDone(p.t, err) // the plane counts a tunnel's fds itself
		return
	}
	s.fds.Release(len(p.FDs)) // counted from the pass (passIdle) until now
	if err == nil {
		return
	}
	a, aerr := s.PrepareAdopt(p.Kind, p.FDs, p.State)
	if aerr != nil {
		s.log.Warn("a connection the successor did not take cannot be served again here; closed", "err", aerr, "handoff_err", err)
		for _, fd := range p.FDs {
			_ = unix.Close(fd)
		}
		return
	}
	s.CommitAdopt(a)
}

func (s *Server) takePassed() []*Passed {
	s.pass.mu.Lock()
	defer s.pass.mu.Unlock()
	q := s.pass.q
	s.pass.q = nil
	return q
}

// endPassing stops passing: what is still here drains (Connection: close at each boundary), and
// what was queued but not taken is adopted again.
func (s *Server) endPassing() {
	s.draining.Store(true)
	s.pass.mu.Lock()
	s.pass.on = false
	s.pass.active.Store(false)
	q := s.pass.q
	s.pass.q = nil
	s.pass.mu.Unlock()
	for _, p := range q {
		s.PassDone(p, errors.New("the hand-off ended"))
	}
	// Conns that reached a boundary while we were passing and are idle now close (draining).
	s.closeIdleConns()
}

// sweepPass passes, on every loop, the client conns at a boundary; it returns when the loops
// have done it, with the number of conns that never pass (they finish here).
func (s *Server) sweepPass() int {
	s.loopsMu.Lock()
	lss := make([]*loopState, 0, len(s.loops))
	for _, ls := range s.loops {
		lss = append(lss, ls)
	}
	s.loopsMu.Unlock()
	var wg sync.WaitGroup
	var staying atomic.Int64
	for _, ls := range lss {
		wg.Add(1)
		err := ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			defer wg.Done()
			for cc := range ls.clients {
				if !cc.pass() && cc.staysHere() {
					staying.Add(1)
				}
			}
			return nil
		}))
		if err != nil {
			wg.Done()
		}
	}
	wg.Wait()
	return int(staying.Load())
}

// staysHere: cc will never be passed, whatever it does next (a TLS client: its session does not
// travel). It finishes here and closes at its boundary once passing has ended.
func (cc *clientConn) staysHere() bool { return cc.tls != nil }

// passable: at a request boundary, with nothing of ours in flight, on a socket gnet holds as it
// is (a wire that is not the bare gnet.Conn, a TLS session, has state of its own that does not
// travel: such a conn finishes here and closes at its boundary).
func (cc *clientConn) passable() bool {
	if cc.state != stateReadingHead || cc.c == nil || cc.peerEOF || cc.out.pending() != 0 || cc.ex.bc != nil {
		return false
	}
	_, bare := cc.c.(gnet.Conn)
	return bare
}

// pass moves cc out if passing is on and cc is at a boundary (on cc's loop). It reports whether
// cc left; then cc is torn down and must not be touched.
func (cc *clientConn) pass() bool {
	s := cc.srv
	if !cc.passable() {
		return false
	}
	s.pass.mu.Lock()
	defer s.pass.mu.Unlock()
	if !s.pass.on {
		return false
	}
	fd, err := cc.c.Dup()
	if err != nil {
		return false
	}
	s.fds.Acquire(1) // the dup is ours until PassDone
	p := &Passed{Kind: PassIdleConn, FDs: []int{fd}, State: cc.encodeIdle()}
	oc := cc.c
	cc.c = nil
	cc.out.fd = -1
	cc.ls.loop.closeConn(oc) // OnClose sees cc.c != oc and leaves cc alone
	cc.teardown()
	s.pass.q = append(s.pass.q, p)
	select {
	case s.pass.notify <- struct{}{}:
	default:
	}
	return true
}

// encodeIdle is an idle conn's state, version 1:
//
//	u8 version, u8 flags (1: a head has started), u32 ms until the deadline (0: none),
//	u32 head timeout in ms, u32 n, n bytes read and not parsed (a partial head, or requests
//	pipelined behind the last exchange)
func (cc *clientConn) encodeIdle() []byte {
	in := cc.inbound()
	b := make([]byte, 0, 14+len(in))
	b = append(b, idleStateVersion, 0)
	if cc.headStarted {
		b[1] |= 1
	}
	left := uint32(0)
	if cc.deadline != 0 {
		left = uint32(max((cc.deadline-cc.ls.now())/int64(time.Millisecond), 1))
	}
	b = binary.BigEndian.AppendUint32(b, left)
	b = binary.BigEndian.AppendUint32(b, uint32(cc.headTimeout/time.Millisecond))
	b = binary.BigEndian.AppendUint32(b, uint32(len(in)))
	return append(b, in...)
}

// adoptedConn is an idle conn on its way into this process's event loops: the context gnet's
// OnOpen finds for it.
type adoptedConn struct {
	fd          int
	headStarted bool
	left        time.Duration // until the deadline; 0: none
	headTimeout time.Duration
	inbound     []byte
}

// Adopted is a passed item this process is taking: from PrepareAdopt to CommitAdopt or
// CancelAdopt.
type Adopted struct {
	kind   PassKind
	conn   *adoptedConn
	tunnel *splice.AdoptedTunnel
	member *route.Member // the tunnel's backend in this process's routes, if it has it
}

// PrepareAdopt decodes a passed item and reserves what it needs, without touching its fds (the
// hand-off may still cancel). An error refuses the item: the old process keeps it.
func (s *Server) PrepareAdopt(kind PassKind, fds []int, state []byte) (*Adopted, error) {
	switch kind {
	case PassIdleConn:
	case PassTunnel:
		return s.prepareTunnel(fds, state)
	default:
		return nil, fmt.Errorf("unknown kind %d", kind)
	}
	if len(fds) != 1 {
		return nil, fmt.Errorf("idle conn with %d fds, want 1", len(fds))
	}
	if len(state) < 14 || state[0] != idleStateVersion {
		return nil, fmt.Errorf("idle conn state version %d (%d bytes): this binary knows %d", firstByte(state), len(state), idleStateVersion)
	}
	n := binary.BigEndian.Uint32(state[10:])
	if int(n) != len(state)-14 {
		return nil, fmt.Errorf("idle conn state: %d inbound bytes announced, %d present", n, len(state)-14)
	}
	if !s.fds.TryAcquire(1) {
		return nil, errors.New("fd budget full")
	}
	a := &adoptedConn{
		fd:          fds[0],
		headStarted: state[1]&1 != 0,
		left:        time.Duration(binary.BigEndian.Uint32(state[2:])) * time.Millisecond,
		headTimeout: time.Duration(binary.BigEndian.Uint32(state[6:])) * time.Millisecond,
		inbound:     append([]byte(nil), state[14:]...),
	}
	return &Adopted{kind: kind, conn: a}, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// CommitAdopt makes the item this process's: the conn joins an event loop (OnOpen) and carries
// on where it was.
func (s *Server) CommitAdopt(a *Adopted) {
	if a.tunnel != nil {
		if a.member != nil {
			a.member.Acquire(route.Tunnel)
		}
		s.tunnelsTotal.Add(1)
		s.plane.CommitAdopt(a.tunnel)
		return
	}
	ac := a.conn
	f := os.NewFile(uintptr(ac.fd), "wsgate-adopted")
	nc, err := net.FileConn(f) // dups; the original is closed with f
	_ = f.Close()
	s.fds.Release(1) // PrepareAdopt's reservation: from here gnet's copy is counted by OnOpen
	if err != nil {
		s.log.Debug("adopting a connection failed", "phase", "adopt", "err", err)
		return
	}
	s.engMu.Lock()
	var eng gnet.Engine
	if s.run != nil {
		eng = s.run.eng
	}
	s.engMu.Unlock()
	if err := eng.Validate(); err != nil {
		_ = nc.Close()
		s.log.Debug("adopting a connection failed: no engine", "phase", "adopt", "err", err)
		return
	}
	ch, err := eng.Register(gnet.NewContext(gnet.NewNetConnContext(context.Background(), nc), ac))
	if err != nil {
		_ = nc.Close()
		s.log.Debug("adopting a connection failed", "phase", "enroll", "err", err)
		return
	}
	go func() {
		if res, ok := <-ch; !ok || res.Err != nil {
			s.log.Debug("adopting a connection failed", "phase", "enroll", "err", res.Err)
		}
	}()
}

// CancelAdopt drops a prepared item (the hand-off closes its fds).
func (s *Server) CancelAdopt(a *Adopted) {
	if a.tunnel != nil {
		s.plane.CancelAdopt(a.tunnel)
		return
	}
	s.fds.Release(1)
}

// prepareTunnel is PrepareAdopt for a tunnel: the plane decodes it; its backend member is found
// by the backend socket's peer address, so that it counts the tunnel (least-conn) from the
// commit until the tunnel ends.
func (s *Server) prepareTunnel(fds []int, state []byte) (*Adopted, error) {
	at, err := s.plane.PrepareAdopt(fds, state)
	if err != nil {
		return nil, err
	}
	m := s.memberAt(at.BackendFD())
	at.OnClose = func(splice.TunnelResult) {
		if m != nil {
			m.Release(route.Tunnel)
		}
	}
	return &Adopted{kind: PassTunnel, tunnel: at, member: m}, nil
}

// memberAt is the member of the route table in use whose address fd is connected to, or nil.
func (s *Server) memberAt(fd int) *route.Member {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return nil
	}
	var peer netip.AddrPort
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		peer = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		peer = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	default:
		return nil
	}
	for _, r := range s.routes.Load().Routes() {
		for _, m := range r.Pool.Members() {
			if d := r.Pool.Dialer(m); d != nil && d.AddrPort() == peer {
				return m
			}
		}
	}
	return nil
}

// adopted is OnOpen for a conn that came from the predecessor (or came back from the hand-off).
func (ls *loopState) adopted(c gnet.Conn, ac *adoptedConn) {
	s := ls.srv
	s.conns.Add(1) // an existing connection: not subject to -max-conns
	var ip []byte
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip = []byte(a.IP.String())
	}
	cc := newClientConn(ls, c, ip)
	if ac.headTimeout > 0 {
		cc.headTimeout = ac.headTimeout
	}
	cc.headStarted = ac.headStarted
	cc.deadline = 0
	if ac.left > 0 {
		cc.deadline = ls.now() + int64(ac.left)
	}
	if len(ac.inbound) > 0 {
		cc.held = bytebufferpool.Get()
		cc.held.B = append(cc.held.B, ac.inbound...)
	}
	c.SetContext(cc)
	if cc.inboundLen() > 0 {
		cc.process()
	}
}
