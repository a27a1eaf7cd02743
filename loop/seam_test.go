package loop

// Unit tests of the state machine through the seam (wire.go): no gnet, no listener, no timing.
// A fakeWire serves scripted inbound bytes the way gnet's buffer does, and its fd is one end of a
// non-blocking socketpair, so the write side (outq, shutdown, SO_LINGER, Dup) runs the real
// syscalls; the test reads what was written from the other end, or leaves it unread to make the
// queue grow. A fakeLoop closes conns the way gnet's EventLoop.Close does: the closed callback
// first, then the fd.

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type fakeWire struct {
	t      testing.TB
	in     []byte
	fd     int // ours: the state machine writes here
	peer   int // the test's end
	ctx    any
	closed bool
}

func (w *fakeWire) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(w.in) {
		n = len(w.in)
	}
	return w.in[:n], nil
}

func (w *fakeWire) Next(n int) ([]byte, error) {
	b, _ := w.Peek(n)
	w.in = w.in[len(b):]
	return b, nil
}

func (w *fakeWire) Discard(n int) (int, error) {
	if n <= 0 || n > len(w.in) {
		n = len(w.in)
	}
	w.in = w.in[n:]
	return n, nil
}

func (w *fakeWire) InboundBuffered() int { return len(w.in) }
func (w *fakeWire) Fd() int              { return w.fd }
func (w *fakeWire) Dup() (int, error)    { return unix.Dup(w.fd) }

// feed delivers bytes as one gnet read would, and runs the traffic callback.
func (w *fakeWire) feed(b string) {
	w.in = append(w.in, b...)
	onTraffic(w, w.ctx)
}

// readPeer returns everything written to the wire so far (non-blocking), and whether the
// write side was shut down or closed (EOF) or reset.
func (w *fakeWire) readPeer() (string, bool) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(w.peer, buf)
		if n > 0 {
			out = append(out, buf[:n]...)
			continue
		}
		if err == unix.EAGAIN {
			return string(out), false
		}
		return string(out), true // 0 = EOF; ECONNRESET and friends count as ended too
	}
}

type fakeLoop struct{ closes int }

func (l *fakeLoop) closeConn(w wire) {
	fw := w.(*fakeWire)
	if fw.closed {
		return
	}
	fw.closed = true
	l.closes++
	onClosed(fw, fw.ctx, nil)
	unix.Close(fw.fd)
}

type seam struct {
	t  *testing.T
	s  *Server
	ls *loopState
	fl *fakeLoop
}

func newSeam(t *testing.T, mod ...func(*Config)) *seam {
	cfg := DefaultConfig()
	cfg.Backend = "127.0.0.1:3000"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, m := range mod {
		m(&cfg)
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, backend: []byte(cfg.Backend), backendWarn: warnLimiter{interval: time.Second}}
	fl := &fakeLoop{}
	ls := &loopState{srv: s, loop: fl, clients: map[*clientConn]struct{}{}, queued: map[*clientConn]struct{}{}, scratch: make([]byte, 0, 4096)}
	return &seam{t: t, s: s, ls: ls, fl: fl}
}

// newWire makes a socketpair-backed wire; sndbuf > 0 shrinks our end's send buffer so a test can
// fill it.
func (sm *seam) newWire(sndbuf int) *fakeWire {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		sm.t.Fatal(err)
	}
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			sm.t.Fatal(err)
		}
	}
	if sndbuf > 0 {
		_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	w := &fakeWire{t: sm.t, fd: fds[0], peer: fds[1]}
	sm.t.Cleanup(func() {
		if !w.closed {
			unix.Close(w.fd)
		}
		unix.Close(w.peer)
	})
	return w
}

// client opens a client connection the way handler.OnOpen does.
func (sm *seam) client(sndbuf int) (*clientConn, *fakeWire) {
	w := sm.newWire(sndbuf)
	sm.s.conns.Add(1)
	cc := newClientConn(sm.ls, w, []byte("192.0.2.1"))
	w.ctx = cc
	return cc, w
}

// idleBackend puts a connected backend conn in the loop's pool, as if dialled earlier.
func (sm *seam) idleBackend() (*backendConn, *fakeWire) {
	w := sm.newWire(0)
	bc := &backendConn{srv: sm.s, ls: sm.ls, c: w, out: outq{fd: w.fd}}
	w.ctx = bc
	sm.ls.putIdle(bc)
	return bc, w
}

func (sm *seam) inPool(bc *backendConn) bool {
	for _, b := range sm.ls.pool {
		if b == bc {
			return true
		}
	}
	return false
}

func mustHave(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Fatalf("%s: %q does not contain %q", what, got, w)
		}
	}
}

// TestSeamKeepAliveAndPipelining: a GET is rewritten for the backend, the answer relayed with
// keep-alive, the backend conn pooled; a pipelined request is forwarded only after the answer
// before it is complete.
func TestSeamKeepAliveAndPipelining(t *testing.T) {
	sm := newSeam(t)
	bc, bw := sm.idleBackend()
	cc, cw := sm.client(0)
	cw.feed("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
	fwd, _ := bw.readPeer()
	mustHave(t, "forwarded head", fwd, "GET /a HTTP/1.1\r\nHost: h\r\n", "X-Forwarded-For: 192.0.2.1\r\n")
	if strings.Contains(fwd, "/b") {
		t.Fatalf("the pipelined request went to the backend before the first answer: %q", fwd)
	}
	if cc.state != stateAwaitingResponse || cc.ex.bc != bc || sm.inPool(bc) {
		t.Fatalf("state %d, exchange backend %p (want %p), pooled %v", cc.state, cc.ex.bc, bc, sm.inPool(bc))
	}
	bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	got, ended := cw.readPeer()
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "\r\n\r\nok") || ended {
		t.Fatalf("client got %q (ended %v)", got, ended)
	}
	mustHave(t, "relayed head", got, "Connection: keep-alive\r\n")
	// The second request took the same backend conn straight from the pool.
	fwd, _ = bw.readPeer()
	mustHave(t, "second forwarded head", fwd, "GET /b HTTP/1.1\r\n")
	bw.feed("HTTP/1.1 204 No Content\r\n\r\n")
	got, _ = cw.readPeer()
	if !strings.HasPrefix(got, "HTTP/1.1 204 No Content\r\n") {
		t.Fatalf("second answer %q", got)
	}
	if cc.state != stateReadingHead || !sm.inPool(bc) || bc.cc != nil {
		t.Fatalf("after both: state %d, backend pooled %v", cc.state, sm.inPool(bc))
	}
	if n := sm.s.requests.Load(); n != 2 {
		t.Fatalf("%d requests counted, want 2", n)
	}
}

// TestSeamQueueTowardSlowClient: what the client's socket does not take is queued in order and
// flushed by the tick once the client reads.
func TestSeamQueueTowardSlowClient(t *testing.T) {
	sm := newSeam(t)
	_, bw := sm.idleBackend()
	cc, cw := sm.client(4096)
	cw.feed("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16) // 64 KiB
	bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n" + string(body))
	if cc.out.pending() == 0 {
		t.Fatal("a 64 KiB answer into a 4 KiB socket buffer left nothing queued")
	}
	if _, ok := sm.ls.queued[cc]; !ok {
		t.Fatal("queued client not registered for the flush tick")
	}
	var got []byte
	for i := 0; i < 1000 && (cc.out.pending() > 0 || i == 0); i++ {
		b, ended := cw.readPeer()
		if ended {
			t.Fatal("client conn ended")
		}
		got = append(got, b...)
		sm.ls.flush()
	}
	b, _ := cw.readPeer()
	got = append(got, b...)
	i := bytes.Index(got, []byte("\r\n\r\n"))
	if i < 0 || !bytes.Equal(got[i+4:], body) {
		t.Fatalf("client got %d bytes, body not exact", len(got))
	}
	if cc.out.pending() != 0 || len(sm.ls.queued) != 0 {
		t.Fatalf("queue not drained: %d pending, %d queued conns", cc.out.pending(), len(sm.ls.queued))
	}
}
