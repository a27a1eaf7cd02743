package splice

import (
	"github.com/wsgate/wsgate/tlsrecord"

	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The upgrade path: a client whose upgrade request the HTTP plane has parsed
// and checked comes to the plane with its socket, the rewritten request head
// and a judge. The plane dials the backend itself (non-blocking connect, no
// goroutine and no thread per dial), writes the head, reads the answer head
// and asks the judge what it means; only a verified switch becomes a tunnel.
// The plane knows nothing of HTTP: the judge (the HTTP plane's code, run on
// the plane's loop thread) reads the answer and says what to send.
//
// Invariant: until the judge says Switch, no client byte reaches the
// backend. The client's socket is not read while the handshake is pending
// (its readiness is only remembered), so whatever the client sends waits in
// the kernel, unparsed; bytes the HTTP plane had already read behind the
// request head (Upgrade.Pending) are held and written to the backend only
// after the switch, before anything read from the client later. On every
// other verdict they are dropped and the client's socket is only drained.

// Upgrade asks the plane to complete a WebSocket (or any) upgrade.
type Upgrade struct {
	// ClientFD is the client's socket, non-blocking (a dup of a non-blocking
	// socket is: the flag belongs to the open file); the plane owns it from
	// the call on and closes it on every path (Upgrade's error return
	// included).
	ClientFD int
	// Backend is the address to dial; Source, when valid, is the local
	// address to bind first (with IP_BIND_ADDRESS_NO_PORT on Linux).
	Backend netip.AddrPort
	Source  netip.Addr
	// Head is the request head to send (copied before Upgrade returns).
	Head []byte
	// Pending is what the client sent behind the head and the HTTP plane
	// already read: sent to the backend only after a switch (copied).
	Pending []byte
	// Judge reads the backend's answer. Required.
	Judge Handshake
	// Timeouts: from the dial's start to connected, then from the head's
	// write to a verdict. Zero takes the plane's Config defaults.
	DialTimeout, ResponseTimeout time.Duration
	// OnResult runs once, on the plane's loop, when the handshake is over: at
	// a switch (before any tunnel byte moves), when a refusal's body has been
	// relayed, when an answer of the plane's own is queued, or when the
	// client left or the plane closed. It is the plane's last use of Judge
	// (UpgradeResult.Judge), which the caller may then recycle. It must not
	// block. Optional.
	OnResult func(UpgradeResult)
	// OnClose runs when the tunnel a switch made ends (as Tunnel.OnClose).
	OnClose func(TunnelResult)
	// IdleTimeout is the tunnel's, as Tunnel.IdleTimeout: 0 = the Config's,
	// negative = never.
	IdleTimeout time.Duration
	// Route is the metrics route index of the tunnel a switch makes, as
	// Tunnel.Route.
	Route int

	// ToClient is what the HTTP plane still had queued toward the client
	// (the end of an earlier answer): written before anything of the
	// upgrade's (copied; records already, for a TLS client).
	ToClient []byte
	// ClientTLS, when set, is the client's TLS record layer (WSS, issue 9):
	// every answer the plane gives the client (the switch, a refusal and its
	// body, an answer of its own) is sealed, close_notify goes before the
	// linger's shutdown, and after a switch the tunnel is decrypt-and-forward
	// as with Tunnel.ClientTLS (tls.go). Pending is plaintext. The plane owns
	// the session from the call on.
	ClientTLS tlsrecord.RecordLayer
}

// Handshake is the HTTP plane's part of an upgrade. Its methods run on a
// plane loop's thread, one call at a time per loop: s is that loop's scratch,
// whose Value the judge may fill with its own state (parsers, head buffers)
// on first use and keep, so that judging allocates nothing.
type Handshake interface {
	// Judge reads answer, the backend's bytes so far (the start of its
	// answer, beginning at a head), and says what they mean.
	Judge(s *Scratch, answer []byte) Verdict
	// Failed gives the answer for the client when the plane ends the
	// handshake itself (why: UpgradeDialFailed, UpgradeDialTimeout,
	// UpgradeResponseTimeout, UpgradeBackendClosed, UpgradeNoFD) and the
	// status it carries, for UpgradeResult.
	Failed(s *Scratch, why UpgradeOutcome) (answer []byte, status int)
}

// Scratch is one plane loop's scratch for Handshake calls.
type Scratch struct {
	Value any
}

// Action is what a Verdict tells the plane to do.
type Action uint8

const (
	// NeedMore: the answer's head is not complete yet; read more.
	NeedMore Action = iota
	// Interim: an interim answer (1xx other than the switch): send ToClient,
	// drop Consumed bytes, and judge what follows.
	Interim
	// Switch: a verified switch. ToClient (the rewritten switch answer) goes
	// to the client, then the backend's bytes behind the Consumed head, then
	// the tunnel runs.
	Switch
	// Refuse: a final answer that is not a switch. ToClient (the rewritten
	// head, which should say the connection closes) goes to the client, then
	// the answer's body as Body says; then both sockets close, the client's
	// after a lingering close. Client bytes never reach the backend.
	Refuse
	// Reject: an answer the plane must not relay (a switch that fails
	// verification, a malformed head). ToClient (the plane's own answer,
	// e.g. 502) goes to the client, the backend is closed, the client after
	// a lingering close.
	Reject
)

// Body lengths for a refusal's Verdict.Body besides a byte count.
const (
	BodyChunked    int64 = -1 // Framer finds the end (fed with nothing yet)
	BodyUntilClose int64 = -2 // the body ends when the backend closes
)

// Verdict is Handshake.Judge's answer.
type Verdict struct {
	Action   Action
	Consumed int    // answer bytes of the head this verdict covers (Interim, Switch, Refuse)
	ToClient []byte // what the client gets; may point into the Scratch: the plane writes or copies it before the next Judge
	Body     int64  // Refuse: body bytes behind the head, or BodyChunked, or BodyUntilClose
	Framer   Framer // Refuse with BodyChunked: the body's decoder
	Status   int    // the status of ToClient, reported in UpgradeResult
}

// UpgradeOutcome says how a handshake ended.
type UpgradeOutcome uint8

const (
	UpgradeSwitched        UpgradeOutcome = iota // verified switch: a tunnel now
	UpgradeRefused                               // a final non-switch answer was relayed (Verdict Refuse)
	UpgradeRejected                              // the judge rejected the answer (Verdict Reject)
	UpgradeDialFailed                            // connect failed (refused, unreachable, no route)
	UpgradeDialTimeout                           // no connection within the dial timeout
	UpgradeResponseTimeout                       // no verdict within the response timeout
	UpgradeBackendClosed                         // the backend closed or failed before a complete answer head
	UpgradeNoFD                                  // the fd budget had no room for the backend socket
	UpgradeClientGone                            // the client closed or failed while the handshake was pending
	UpgradeClosed                                // the plane closed
)

var outcomeNames = [...]string{"switched", "refused", "rejected", "dial failed", "dial timeout",
	"response timeout", "backend closed", "no fd", "client gone", "plane closed"}

func (o UpgradeOutcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// UpgradeResult reports a decided handshake.
type UpgradeResult struct {
	Judge     Handshake // Upgrade.Judge: OnResult is the plane's last use of it
	Outcome   UpgradeOutcome
	Status    int           // status of the answer the client got (0: none was sent)
	Connected bool          // the backend connection was established (for passive health: a success)
	Connect   time.Duration // from the dial's start to the first byte of the head accepted
	Err       error         // what failed, naming the backend and the phase; nil for Switched and Refused
	// Loop is the index of the tunnel loop OnResult runs on (0 <= Loop <
	// Plane.Loops()): state kept per loop may be used without a lock.
	Loop int
}

// ErrUpgradeAnswerTooLarge: the judge kept asking for more beyond maxAnswer.
var errAnswerTooLarge = errors.New("answer head too large")

// maxAnswer bounds the answer bytes a plane keeps while the judge says
// NeedMore, whatever the judge's own limit.
const maxAnswer = 256 << 10

// lingerTime: after the plane answered a client itself (refusal, 502, 504)
// it shuts the client's socket for writing and reads and drops what it
// still sends for this long without progress, because closing a socket with
// unread input sends RST, which can destroy the answer in flight.
const lingerTime = 2 * time.Second

// hsPhase is where a pending handshake is.
type hsPhase uint8

const (
	hsConnecting hsPhase = iota // connect in progress, or the head not written yet (the client is not read)
	hsAwaiting                  // head written; reading the answer head (the client is not read)
	hsRelaying                  // refused: the answer's body goes to the client (c.x frames it); the client is not read
	hsLinger                    // the answer is out (or going): client shut for writing, its bytes read and dropped
)

// handshake is a conn's state while its upgrade is pending; nil afterwards.
type handshake struct {
	phase     hsPhase
	connected bool
	reported  bool
	shut      bool // linger: shutdown(SHUT_WR) done
	headOff   int
	head      []byte            // copy of Upgrade.Head until written, nil afterwards
	slab      *[hsSlabHead]byte // a slab state's head room (hsSlab), nil for a surplus one
	pending   []byte            // Upgrade.Pending (exact-size copy), for the backend after a switch
	answer    []byte            // answer bytes kept across reads while the judge needs more
	judge     Handshake
	onResult  func(UpgradeResult)
	backend   netip.AddrPort
	source    netip.Addr
	dialTO    uint32 // ticks
	respTO    uint32
	deadline  uint32 // tick at which the current phase times out
	untilEOF  bool   // relaying a body that ends at the backend's close
	status    int    // a refusal's status, reported when its body has been relayed
	t0        time.Time
	connDur   time.Duration
}

// hsSlab holds the handshake states of the upgrades in flight, allocated
// once per plane, each with room for a typical request head: a steady stream
// of upgrades allocates none, and a reconnect storm's surplus (more than
// hsSlabSize in flight) is allocated and becomes garbage as it finishes.
// Neither a sync.Pool nor a bounded free list of heap objects: both keep
// states picked at random from a storm's thousands, scattered over the
// storm's spans, and every span holding one stays in use after the storm
// (measured: ~200 B per idle tunnel of heap in use but unallocated after a
// 6,000-upgrade storm, pools of 256 states, judges and head buffers). A slab
// is one contiguous allocation whatever happens.
type hsSlab struct {
	free   chan *handshake
	states [hsSlabSize]handshake
	heads  [hsSlabSize][hsSlabHead]byte
}

const (
	hsSlabSize = 64
	hsSlabHead = 2 << 10 // request heads up to this are copied into the slab
)

func newHSSlab() *hsSlab {
	s := &hsSlab{free: make(chan *handshake, hsSlabSize)}
	for i := range s.states {
		s.states[i].slab = &s.heads[i]
		s.free <- &s.states[i]
	}
	return s
}

// get returns a handshake state holding a copy of head.
func (s *hsSlab) get(head []byte) *handshake {
	var hs *handshake
	select {
	case hs = <-s.free:
	default:
		hs = &handshake{}
	}
	if hs.slab != nil && len(head) <= len(hs.slab) {
		hs.head = hs.slab[:copy(hs.slab[:], head)]
	} else {
		hs.head = append([]byte(nil), head...)
	}
	return hs
}

// put takes back a state nothing refers to any more.
func (s *hsSlab) put(hs *handshake) {
	if hs.slab == nil {
		return // a storm's surplus: garbage
	}
	*hs = handshake{slab: hs.slab}
	s.free <- hs // never blocks: only the slab's own states come back
}

// Upgrade hands the client socket to a loop, which dials the backend and
// runs the handshake (see type Upgrade). On error the client socket has been
// closed and OnResult never runs.
func (p *Plane) Upgrade(u Upgrade) error {
	if u.ClientFD < 0 {
		return fmt.Errorf("splice: upgrade: bad client fd %d", u.ClientFD)
	}
	// The plane owns the client fd from here on: count it in the fd budget,
	// and the upgrade as a connection (OpenTunnels, for -max-conns), until
	// it is closed or the tunnel it becomes ends.
	p.fds.Acquire(1)
	p.open.Add(1)
	fail := func(err error) error {
		unix.Close(u.ClientFD)
		p.fds.Release(1)
		p.open.Add(-1)
		if u.ClientTLS != nil {
			u.ClientTLS.Close()
		}
		return err
	}
	if u.Judge == nil {
		return fail(errors.New("splice: upgrade: no Handshake"))
	}
	if !u.Backend.IsValid() {
		return fail(fmt.Errorf("splice: upgrade: invalid backend address %v", u.Backend))
	}
	hs := p.hs.get(u.Head)
	hs.judge = u.Judge
	hs.onResult = u.OnResult
	hs.backend = u.Backend
	hs.source = u.Source
	hs.dialTO = p.ticks(cmp0(u.DialTimeout, p.cfg.DialTimeout))
	hs.respTO = p.ticks(cmp0(u.ResponseTimeout, p.cfg.ResponseTimeout))
	if len(u.Pending) > 0 {
		hs.pending = append([]byte(nil), u.Pending...)
	}
	c := &conn{onClose: u.OnClose, hs: hs, idle: p.tunnelIdle(u.IdleTimeout), route: int32(u.Route)}
	if u.ClientTLS != nil {
		c.t = &tlsEnd{rec: u.ClientTLS, end: 0}
	}
	c.ends[0].fd = int32(u.ClientFD)
	c.ends[1].fd = -1
	c.flows[0].init()
	c.flows[1].init()
	if len(u.ToClient) > 0 {
		// Before the conn reaches a loop nothing else writes to the client: what the kernel does
		// not take waits in flows[1], ahead of the upgrade's own answer (toClient appends).
		p.pick().writePending(&c.flows[1], u.ClientFD, u.ToClient)
	}
	if !p.pick().submit(c) {
		p.hs.put(hs)
		return fail(ErrClosed)
	}
	return nil
}

func cmp0(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// startHandshake runs on the loop when an upgrade conn is attached: dial,
// register both sockets, and try the head at once (loopback connects are
// often complete when connect(2) returns).
func (l *loop) startHandshake(c *conn) {
	hs := c.hs
	l.st.handshakes.Add(1)
	hs.t0 = time.Now()
	hs.deadline = l.now + hs.dialTO + 1
	// The client is registered once, with the tunnel's interest: while the
	// handshake is pending its readiness is only remembered in end.ev, never
	// acted on (no read: its bytes wait in the kernel), except that a hang-up
	// is noticed at once. A hang-up-only registration switched to the full
	// interest at the switch costs one more epoll_ctl per upgrade, and
	// edge-triggered epoll reports nothing more while nothing is read.
	if err := l.poll.add(int(c.ends[0].fd), c.slot, 0); err != nil {
		l.hsEnd(c, UpgradeClientGone, &OpError{Dir: "upgrade", Op: "register client", Err: err})
		return
	}
	// The backend socket is created only if the fd budget has room for it.
	if !l.p.fds.TryAcquire(1) {
		l.hsFail(c, UpgradeNoFD, l.dialErr(hs, fmt.Errorf("fd budget exhausted (%d of %d in use)", l.p.fds.Used(), l.p.fds.Limit())))
		return
	}
	fd, err := dialNonblock(hs.backend, hs.source)
	if err != nil {
		l.p.fds.Release(1)
		l.hsFail(c, UpgradeDialFailed, l.dialErr(hs, err))
		return
	}
	c.ends[1].fd = int32(fd)
	if err := l.poll.add(fd, c.slot, 1); err != nil {
		l.hsFail(c, UpgradeDialFailed, l.dialErr(hs, err))
		return
	}
	c.ends[1].ev = evOut // optimistic: the head's write tells
	l.arm(c)
	l.hsStep(c)
}

// dialErr names the backend (and the source) of a failed connect.
func (l *loop) dialErr(hs *handshake, err error) error {
	s := "backend " + hs.backend.String() + ": connect"
	if hs.source.IsValid() {
		s += " from " + hs.source.String()
	}
	return fmt.Errorf("%s: %w", s, err)
}

// hsStep advances a pending handshake as far as its sockets allow.
func (l *loop) hsStep(c *conn) {
	hs := c.hs
	cl := &c.ends[0]
	if hs.phase <= hsRelaying && cl.ev&(evErr|evHup) != 0 {
		// The client hung up while we wait for the backend. A client that
		// shut down its side after sending bytes is still waiting for the
		// answer; one with nothing left to read is gone.
		if clientGone(int(cl.fd), cl.ev&evErr != 0) {
			l.hsEnd(c, UpgradeClientGone, &OpError{Dir: "upgrade", Op: "client closed before the answer", Err: unix.ECONNRESET})
			return
		}
		cl.ev &^= evErr | evHup
	}
	switch hs.phase {
	case hsConnecting, hsAwaiting:
		if hs.head != nil && !l.hsWriteHead(c) {
			return
		}
		if hs.head == nil {
			l.hsReadAnswer(c)
		}
	case hsRelaying:
		l.move(c, 1) // finish -> relayDone when the body is over
	case hsLinger:
		l.linger(c)
	}
}

// clientGone peeks at a client that hung up: gone if an error is pending or
// nothing is left to read.
func clientGone(fd int, errSeen bool) bool {
	if errSeen {
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && v != 0 {
			return true
		}
	}
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return false
		}
		return err != nil || n == 0
	}
}

// hsWriteHead writes the request head; the first write also reveals the
// connect's outcome. It returns false when the conn is gone or must wait.
func (l *loop) hsWriteHead(c *conn) bool {
	hs := c.hs
	be := &c.ends[1]
	for be.ev&evOut != 0 {
		b := hs.head[hs.headOff:]
		n, err := rawWrite(int(be.fd), b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			be.ev &^= evOut
			return false
		case err != nil:
			if !hs.connected {
				l.hsFail(c, UpgradeDialFailed, l.dialErr(hs, err))
			} else {
				l.hsFail(c, UpgradeBackendClosed, &OpError{Dir: "upgrade", Op: "write request head to backend " + hs.backend.String(), Err: err})
			}
			return false
		}
		if !hs.connected {
			hs.connected = true
			hs.connDur = time.Since(hs.t0)
		}
		hs.headOff += n
		if hs.headOff == len(hs.head) {
			hs.head = nil
			hs.phase = hsAwaiting
			hs.deadline = l.now + hs.respTO + 1
			l.arm(c)
			return true
		}
	}
	if be.ev&evErr != 0 && !hs.connected {
		// A refused connect reports EPOLLERR (with EPOLLOUT); the next write
		// attempt (evOut is set with it) gives the errno. Nothing else to do.
		return false
	}
	return false
}

// hsReadAnswer reads the backend's answer and asks the judge.
func (l *loop) hsReadAnswer(c *conn) {
	hs := c.hs
	be := &c.ends[1]
	for be.ev&evIn != 0 {
		n, err := rawRead(int(be.fd), l.small)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			be.ev &^= evIn
			return
		case err != nil:
			l.hsFail(c, UpgradeBackendClosed, &OpError{Dir: "upgrade", Op: "read answer head from backend " + hs.backend.String(), Err: err})
			return
		case n == 0:
			l.hsFail(c, UpgradeBackendClosed, &OpError{Dir: "upgrade", Op: "read answer head from backend " + hs.backend.String(), Err: errBackendEOF})
			return
		}
		if n < len(l.small) && be.ev&evHup == 0 {
			be.ev &^= evIn // drained: a new edge comes with the next byte
		}
		ans := l.small[:n]
		if hs.answer != nil {
			if len(hs.answer)+n > maxAnswer {
				l.hsFail(c, UpgradeBackendClosed, &OpError{Dir: "upgrade", Op: "read answer head from backend " + hs.backend.String(), Err: errAnswerTooLarge})
				return
			}
			hs.answer = append(hs.answer, ans...)
			ans = hs.answer
		}
		if !l.hsJudge(c, ans) {
			return
		}
	}
}

// hsJudge asks the judge about ans (which may point into l.small) until it
// needs more bytes or decides. It returns false once the handshake is
// decided (the conn moved on or is gone).
func (l *loop) hsJudge(c *conn, ans []byte) bool {
	hs := c.hs
	for {
		v := hs.judge.Judge(&l.scratch, ans)
		if v.Action != NeedMore && v.Action != Reject && (v.Consumed <= 0 || v.Consumed > len(ans)) {
			// A judge that decides without consuming a head would loop or
			// slice out of range: treat it as a rejection of the answer.
			bad := fmt.Errorf("verdict %d consumed %d of %d bytes", v.Action, v.Consumed, len(ans))
			out, status := hs.judge.Failed(&l.scratch, UpgradeBackendClosed)
			l.hsAnswer(c, UpgradeRejected, out, status, &OpError{Dir: "upgrade", Op: "judge answer", Err: bad})
			return false
		}
		switch v.Action {
		case NeedMore:
			if hs.answer == nil || &hs.answer[0] != &ans[0] {
				hs.answer = append(make([]byte, 0, len(ans)+512), ans...)
			}
			return true
		case Interim:
			l.toClient(c, v.ToClient)
			ans = ans[v.Consumed:]
			if len(ans) == 0 {
				hs.answer = nil
				return true
			}
		case Switch:
			l.hsSwitch(c, v, ans[v.Consumed:])
			return false
		case Refuse:
			l.hsRefuse(c, v, ans[v.Consumed:])
			return false
		default: // Reject
			l.hsAnswer(c, UpgradeRejected, v.ToClient, v.Status, &OpError{Dir: "upgrade", Op: "answer from backend " + hs.backend.String(), Err: errRejected})
			return false
		}
	}
}

var (
	errBackendEOF = errors.New("closed before a complete answer head")
	errRejected   = errors.New("rejected by the handshake judge")
)

// toClient queues b for the client behind whatever flows[1] still holds (sealed first toward a
// TLS client: the answer, a refusal's body bytes glued to it, the plane's own answers).
func (l *loop) toClient(c *conn, b []byte) {
	if c.t != nil && len(b) > 0 {
		b = l.sealAnswer(c, b)
	}
	f := &c.flows[1]
	if f.buf != nil {
		s := append((*f.buf)[f.off:f.lim:f.lim], b...)
		f.buf, f.off, f.lim = &s, 0, int32(len(s))
		return
	}
	l.writePending(f, int(c.ends[0].fd), b)
}

// hsSwitch turns a verified switch into a tunnel: the switch answer and the
// backend's bytes behind it go to the client, the held client bytes to the
// backend, and only then does the client's socket get read.
func (l *loop) hsSwitch(c *conn, v Verdict, rest []byte) {
	hs := c.hs
	l.toClient(c, v.ToClient)
	if len(rest) > 0 {
		l.toClient(c, rest)
	}
	l.writePending(&c.flows[0], int(c.ends[1].fd), hs.pending)
	hs.pending, hs.answer = nil, nil
	l.report(c, UpgradeSwitched, v.Status, nil)
	c.hs = nil
	l.p.hs.put(hs)
	c.started = l.p.mono() // a tunnel from here: its lifetime and its bytes count
	l.countPending(c)
	l.st.tunnels.Add(1)
	if c.t != nil {
		l.tlsCount(c) // a WSS tunnel from here on: decrypt-and-forward (tls.go)
	}
	l.p.total.Add(1)
	c.active = l.now // c.idle: set by Upgrade, armed from here
	for i := range c.flows {
		if e := c.flows[i].werr; e != 0 {
			l.failWrite(c, i, unix.Errno(e))
			return
		}
	}
	c.ends[0].ev |= evOut
	l.arm(c)
	l.pump(c)
}

// hsRefuse relays a refusal: its head and the body bytes that came with it
// now, the rest of the body framed as Body says, then a lingering close.
func (l *loop) hsRefuse(c *conn, v Verdict, rest []byte) {
	hs := c.hs
	hs.pending = nil
	x := &xfer{remaining: v.Body, framer: v.Framer}
	take := len(rest)
	done := false
	switch {
	case v.Body >= 0:
		take = int(min(int64(len(rest)), v.Body))
		x.remaining -= int64(take)
		done = x.remaining == 0
	case v.Body == BodyChunked && v.Framer != nil:
		x.remaining = -1
		used := 0
		for used < len(rest) {
			n, fin, err := v.Framer.Feed(rest[used:])
			if err != nil {
				l.hsAnswerErr(c, v, &OpError{Dir: "upgrade", Op: "refusal body from backend " + hs.backend.String() + ": chunked framing", Err: err})
				return
			}
			used += n
			if fin {
				done = true
				break
			}
			if n == 0 {
				break
			}
		}
		take = used
	default: // until the backend closes
		x.remaining = -1
		x.framer = untilClose{}
		hs.untilEOF = true
	}
	l.toClient(c, v.ToClient)
	if take > 0 {
		l.toClient(c, rest[:take])
	}
	hs.answer = nil
	hs.status = v.Status
	if done {
		l.report(c, UpgradeRefused, v.Status, nil)
		l.closeBackend(c)
		l.startLinger(c)
		return
	}
	hs.phase = hsRelaying
	hs.deadline = l.now + hs.respTO + 1
	c.x = x
	c.flows[0].state = flowDone // the client's bytes go nowhere
	c.ends[0].ev |= evOut
	l.arm(c)
	l.hsStep(c)
}

// hsAnswerErr: a refusal whose body cannot be framed ends like a truncated
// body: both sockets close at once.
func (l *loop) hsAnswerErr(c *conn, v Verdict, err error) {
	l.report(c, UpgradeRefused, v.Status, err)
	l.hsEnd(c, UpgradeRefused, err)
}

// relayDone runs from finish when a refusal's body is over (or failed).
func (l *loop) relayDone(c *conn, err error) {
	hs := c.hs
	if err != nil && !(hs.untilEOF && errors.Is(err, ErrUnexpectedEOF)) {
		l.report(c, UpgradeRefused, hs.status, err)
		l.hsEnd(c, UpgradeRefused, err) // a body cut short: the client must see the close at once
		return
	}
	l.report(c, UpgradeRefused, hs.status, nil)
	c.x = nil
	l.closeBackend(c)
	l.startLinger(c)
}

// hsFail ends a handshake with the judge's answer for why.
func (l *loop) hsFail(c *conn, why UpgradeOutcome, err error) {
	ans, status := c.hs.judge.Failed(&l.scratch, why)
	l.hsAnswer(c, why, ans, status, err)
}

// hsAnswer sends the client an answer of the plane's own (or the judge's
// rejection), closes the backend and lingers on the client.
func (l *loop) hsAnswer(c *conn, why UpgradeOutcome, ans []byte, status int, err error) {
	c.hs.pending, c.hs.answer = nil, nil
	l.closeBackend(c)
	l.toClient(c, ans)
	l.report(c, why, status, err)
	l.startLinger(c)
}

func (l *loop) report(c *conn, why UpgradeOutcome, status int, err error) {
	hs := c.hs
	if hs.reported {
		return
	}
	hs.reported = true
	l.st.handshakes.Add(-1)
	if hs.onResult != nil {
		hs.onResult(UpgradeResult{Judge: hs.judge, Outcome: why, Status: status, Connected: hs.connected, Connect: hs.connDur, Err: err,
			Loop: l.id})
	}
}

func (l *loop) closeBackend(c *conn) {
	if fd := c.ends[1].fd; fd >= 0 {
		l.poll.del(int(fd))
		rawClose(int(fd))
		l.p.fds.Release(1)
		c.ends[1].fd = -1
	}
	f := &c.flows[0]
	l.putPipe(f)
	if f.buf != nil {
		l.dropBuf(f)
	}
	f.state |= flowDone
	c.hs.head = nil
}

// startLinger: the answer is queued in flows[1] (or written); from here the
// client's socket is read and dropped until it closes or goes quiet.
func (l *loop) startLinger(c *conn) {
	hs := c.hs
	hs.phase = hsLinger
	hs.deadline = l.now + l.p.ticks(lingerTime) + 1
	c.ends[0].ev |= evOut | evIn
	l.arm(c)
	l.linger(c)
}

// linger flushes the answer, shuts the client's socket for writing, and
// reads and drops what the client still sends until it closes.
func (l *loop) linger(c *conn) {
	hs := c.hs
	cl := &c.ends[0]
	f := &c.flows[1]
	for f.buf != nil {
		if cl.ev&evOut == 0 {
			return
		}
		n, err := rawWrite(int(cl.fd), (*f.buf)[f.off:f.lim])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			cl.ev &^= evOut
			return
		}
		if err != nil {
			l.hsEnd(c, UpgradeClosed, nil)
			return
		}
		f.off += int32(n)
		f.moved += int64(n)
		l.st.copied.Add(int64(n))
		hs.deadline = l.now + l.p.ticks(lingerTime) + 1 // progress
		if f.off == f.lim {
			l.dropBuf(f)
		}
	}
	if f.inPipe > 0 || f.werr != 0 {
		l.hsEnd(c, UpgradeClosed, nil)
		return
	}
	if !hs.shut && c.t != nil && c.t.flags&tlsBye == 0 {
		// TLS: close_notify goes out ahead of the shutdown, like any answer.
		c.t.flags |= tlsBye
		if bye := l.closeNotify(c); len(bye) > 0 {
			l.toClientRecords(c, bye)
			l.linger(c)
			return
		}
	}
	if !hs.shut {
		hs.shut = true
		if err := rawShutdown(int(cl.fd), unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
			l.hsEnd(c, UpgradeClosed, nil)
			return
		}
		l.arm(c)
	}
	for cl.ev&evIn != 0 {
		n, err := rawRead(int(cl.fd), l.small)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			cl.ev &^= evIn
			return
		case err != nil || n == 0:
			l.hsEnd(c, UpgradeClosed, nil)
			return
		}
	}
}

// hsTimeout fires when a phase's deadline passed.
func (l *loop) hsTimeout(c *conn) {
	hs := c.hs
	switch hs.phase {
	case hsConnecting:
		if hs.connected {
			// Connected, but the backend never took the whole head.
			l.hsFail(c, UpgradeResponseTimeout, &OpError{Dir: "upgrade", Op: "write request head to backend " + hs.backend.String(), Err: errResponseTimeout})
			return
		}
		l.hsFail(c, UpgradeDialTimeout, l.dialErr(hs, errDialTimeout))
	case hsAwaiting:
		l.hsFail(c, UpgradeResponseTimeout, &OpError{Dir: "upgrade", Op: "answer head from backend " + hs.backend.String(), Err: errResponseTimeout})
	default:
		// Relaying a refusal's body or lingering: out of time, close.
		l.hsEnd(c, UpgradeClosed, nil)
	}
}

var (
	errDialTimeout     = timeoutError("dial timeout")
	errResponseTimeout = timeoutError("response head timeout")
)

type timeoutError string

func (e timeoutError) Error() string { return string(e) }
func (e timeoutError) Timeout() bool { return true }

// hsEnd closes whatever a handshake conn still holds. Nothing more is sent.
func (l *loop) hsEnd(c *conn, why UpgradeOutcome, err error) {
	if c.closed {
		return
	}
	l.report(c, why, 0, err)
	c.closed = true
	l.disarm(c)
	if c.slot >= 0 && int(c.slot) < len(l.slots) && l.slots[c.slot] == c {
		l.slots[c.slot] = nil
		l.free = append(l.free, c.slot)
	}
	for i := range c.ends {
		if fd := c.ends[i].fd; fd >= 0 {
			l.poll.del(int(fd))
			rawClose(int(fd))
			l.p.fds.Release(1)
			c.ends[i].fd = -1
		}
	}
	l.p.open.Add(-1)
	for i := range c.flows {
		f := &c.flows[i]
		l.putPipe(f)
		if f.buf != nil {
			l.dropBuf(f)
		}
	}
	hs := c.hs
	c.hs = nil
	l.p.hs.put(hs)
	if c.t != nil {
		l.tlsForget(c)
		c.t.rec.Close() // wipe the keys, return a borrowed record buffer
	}
}

// untilClose frames a body that ends when its sender closes: every byte is
// body, and the end never comes from the framer.
type untilClose struct{}

func (untilClose) Feed(p []byte) (int, bool, error) { return len(p), false, nil }
func (untilClose) DataLeft() int64                  { return 1 << 62 }
func (untilClose) Skip(int64)                       {}
