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
	"os"
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
	fw := rawWire(w).(*fakeWire) // a TLS conn closes its socket
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
	table, _, err := startTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(table.Close)
	s := &Server{cfg: cfg, log: cfg.Logger, backendWarn: warnLimiter{interval: time.Second}}
	s.routes.Store(table)
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
	bc := &backendConn{srv: sm.s, ls: sm.ls, c: w, member: sm.s.routes.Load().Members()[0], out: outq{fd: w.fd, acct: &sm.s.queuedBytes}}
	w.ctx = bc
	sm.ls.putIdle(bc)
	return bc, w
}

func (sm *seam) inPool(bc *backendConn) bool {
	for _, b := range *sm.ls.idleOf(bc.member) {
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

// TestSeamHeadIsCaseSensitive: "head" is not HEAD (RFC 9110 9.1), so its answer's body is
// relayed as a body, and the backend conn is pooled only because it ended exactly there.
func TestSeamHeadIsCaseSensitive(t *testing.T) {
	sm := newSeam(t)
	bc, bw := sm.idleBackend()
	_, cw := sm.client(0)
	cw.feed("head / HTTP/1.1\r\nHost: h\r\n\r\n")
	bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	got, _ := cw.readPeer()
	if !strings.HasSuffix(got, "\r\n\r\nhello") {
		t.Fatalf("answer to \"head\": %q, want the 5-byte body relayed", got)
	}
	if !sm.inPool(bc) {
		t.Fatal("backend conn not pooled after an exactly framed answer")
	}
	// A real HEAD: the Content-Length describes a body that is not sent.
	cw.feed("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
	bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
	got, _ = cw.readPeer()
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "\r\n\r\n") {
		t.Fatalf("answer to HEAD: %q", got)
	}
	if !sm.inPool(bc) {
		t.Fatal("backend conn not pooled after HEAD")
	}
}

// TestSeamNoPoolAfterStrayBytes: a backend conn that has anything unread after the response
// (a body sent to a HEAD, bytes past Content-Length) is closed, never pooled, and the stray
// bytes reach nobody.
func TestSeamNoPoolAfterStrayBytes(t *testing.T) {
	for _, tc := range []struct{ name, req, resp string }{
		{"body after HEAD", "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"},
		{"bytes past the length", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"},
		{"HTTP/1.0 request", "GET / HTTP/1.0\r\nHost: h\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sm := newSeam(t)
			bc, bw := sm.idleBackend()
			_, cw := sm.client(0)
			cw.feed(tc.req)
			bw.feed(tc.resp)
			got, _ := cw.readPeer()
			if strings.Contains(got, "EVIL") {
				t.Fatalf("stray backend bytes reached the client: %q", got)
			}
			if sm.inPool(bc) || !bw.closed {
				t.Fatalf("backend conn pooled %v, closed %v: want closed", sm.inPool(bc), bw.closed)
			}
		})
	}
}

// TestSeamStaleIdleConnSkipped: bytes a backend sent on an idle conn that the event loop has not
// read yet are caught when the conn is taken from the pool: it is closed, and the request goes to
// the next one.
func TestSeamStaleIdleConnSkipped(t *testing.T) {
	sm := newSeam(t)
	good, gw := sm.idleBackend()
	stale, sw := sm.idleBackend() // LIFO: taken first
	if _, err := unix.Write(sw.peer, []byte("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")); err != nil {
		t.Fatal(err)
	}
	_, cw := sm.client(0)
	cw.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if !sw.closed || sm.inPool(stale) {
		t.Fatal("the idle conn with unread bytes was not closed")
	}
	fwd, _ := gw.readPeer()
	mustHave(t, "request on the quiet conn", fwd, "GET / HTTP/1.1\r\n")
	gw.feed("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
	got, _ := cw.readPeer()
	if !strings.HasSuffix(got, "mine") || strings.Contains(got, "EVIL") {
		t.Fatalf("client got %q", got)
	}
	if !sm.inPool(good) {
		t.Fatal("quiet conn not pooled again")
	}
}

// TestSeamBadChunkedRequestBody: the chunk that breaks the framing is not relayed, the backend
// conn (holding a partial body) is closed, and the client is told 400 with the reason.
func TestSeamBadChunkedRequestBody(t *testing.T) {
	sm := newSeam(t)
	bc, bw := sm.idleBackend()
	cc, cw := sm.client(0)
	cw.feed("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	cw.feed("5\r\nworldXX\r\n0\r\n\r\n")
	fwd, _ := bw.readPeer()
	if !strings.HasSuffix(fwd, "\r\n\r\n5\r\nhello\r\n") {
		t.Fatalf("backend got %q, want the head and the valid chunk only", fwd)
	}
	if !bw.closed || sm.inPool(bc) {
		t.Fatal("backend conn with a partial body not closed")
	}
	got, _ := cw.readPeer()
	if !strings.HasPrefix(got, "HTTP/1.1 400 Bad Request\r\n") || !strings.Contains(got, "Connection: close\r\n") {
		t.Fatalf("client got %q, want 400 and close", got)
	}
	if cc.state != stateClosing {
		t.Fatalf("state %d, want a lingering close", cc.state)
	}
}

// TestSeamWriteStallRule: an answer queued toward a client that reads slowly outlives the idle
// timer (keep-alive) and the linger timer (close); only a queue with no progress for IdleTimeout
// is dropped, with a reset.
func TestSeamWriteStallRule(t *testing.T) {
	const sec = int64(time.Second)
	body := strings.Repeat("x", 512<<10)
	for _, mode := range []string{"keep-alive", "close"} {
		t.Run(mode, func(t *testing.T) {
			sm := newSeam(t, func(c *Config) { c.IdleTimeout, c.BackendIdleTimeout = time.Second, time.Hour })
			_, bw := sm.idleBackend()
			cc, cw := sm.client(4096)
			req := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
			if mode == "close" {
				req = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
			}
			cw.feed(req)
			bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 524288\r\n\r\n" + body)
			if cc.out.pending() == 0 {
				t.Fatal("nothing queued")
			}
			now := nanotime()
			got := 0
			sm.ls.sweep(now) // the idle deadline is IdleTimeout from here
			// Sweeps far past every timer, with a little progress between them: nothing is dropped.
			for i := 1; cc.out.pending() > 0; i++ {
				if i > 10000 {
					t.Fatal("queue never drained")
				}
				b, _ := cw.readPeer()
				got += len(b)
				sm.ls.flush()
				if cc.out.pending() == 0 {
					break
				}
				sm.ls.sweep(now + int64(i)*2*sec)
				if cw.closed {
					t.Fatalf("sweep %d dropped the conn with %d bytes still queued", i, cc.out.pending())
				}
			}
			b, ended := cw.readPeer()
			got += len(b)
			if got < len(body) || !strings.HasSuffix(b, "xxxx") {
				t.Fatalf("client got %d bytes, want the whole answer", got)
			}
			if mode == "close" {
				if !ended || cc.state != stateClosing {
					t.Fatalf("drained close: half-closed %v, state %d", ended, cc.state)
				}
				sm.ls.sweep(nanotime() + int64(lingerTime) + sec)
				if !cw.closed {
					t.Fatal("linger never ended")
				}
				return
			}
			if cc.state != stateReadingHead || cw.closed {
				t.Fatalf("keep-alive: state %d closed %v", cc.state, cw.closed)
			}
			// Now a second answer that the client never reads: a write stall.
			cw.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
			bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 524288\r\n\r\n" + body)
			now = nanotime()
			sm.ls.sweep(now)         // the stall clock starts
			sm.ls.sweep(now + sec/2) // no progress yet, under the limit
			if cw.closed {
				t.Fatal("closed before IdleTimeout without progress")
			}
			sm.ls.sweep(now + sec + 1)
			if !cw.closed || cc.state != stateClosed {
				t.Fatal("a queue without progress for IdleTimeout was kept")
			}
		})
	}
}

// TestSeamPipelinedAnswersBounded: a client that pipelines requests and does not read gets no
// more requests parsed once its queued answers pass the bound; when it reads, parsing resumes.
func TestSeamPipelinedAnswersBounded(t *testing.T) {
	const hw = 16 << 10
	sm := newSeam(t, func(c *Config) { c.BodyHighWater = hw })
	_, bw := sm.idleBackend()
	cc, cw := sm.client(4096)
	answer := "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("a", 1000)
	cw.feed(strings.Repeat("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 200))
	answered := 0
	for answered < 200 {
		fwd, _ := bw.readPeer()
		n := strings.Count(fwd, "GET / ")
		if n == 0 {
			break
		}
		for i := 0; i < n; i++ {
			bw.feed(answer)
			answered++
		}
	}
	if answered >= 200 {
		t.Fatalf("all %d pipelined requests were forwarded to a client that reads nothing", answered)
	}
	if q := sm.s.queuedBytes.Load(); q > hw+int64(len(answer))+1024 || q != int64(cc.out.pending()) {
		t.Fatalf("%d bytes queued (outq %d), bound %d + one answer", q, cc.out.pending(), hw)
	}
	if cc.state != stateReadingHead || cc.inboundLen() == 0 {
		t.Fatalf("state %d with %d unparsed bytes: want parsing paused", cc.state, cc.inboundLen())
	}
	// The client reads: the tick resumes parsing, the rest is answered in order.
	for i := 0; i < 100000 && answered < 200; i++ {
		cw.readPeer()
		sm.ls.flush()
		fwd, _ := bw.readPeer()
		for n := strings.Count(fwd, "GET / "); n > 0; n-- {
			bw.feed(answer)
			answered++
		}
	}
	if answered != 200 {
		t.Fatalf("%d of 200 answered after the client read", answered)
	}
}

// TestSeamInterimFlood: interim answers count against the same bound; a backend flooding them
// toward a client that does not read has its conn closed, and the client gets 502 behind them.
func TestSeamInterimFlood(t *testing.T) {
	const hw = 16 << 10
	sm := newSeam(t, func(c *Config) { c.BodyHighWater = hw })
	_, bw := sm.idleBackend()
	cc, cw := sm.client(4096)
	cw.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	bw.feed(strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 4000)) // 100 KB
	if !bw.closed {
		t.Fatal("backend conn flooding interim answers not closed")
	}
	if q := cc.out.pending(); q > hw+1024 {
		t.Fatalf("%d bytes queued, bound %d", q, hw)
	}
	var got string
	for i := 0; i < 1000; i++ {
		b, ended := cw.readPeer()
		got += b
		sm.ls.flush()
		if ended {
			break
		}
	}
	if i := strings.LastIndex(got, "HTTP/1.1 "); i < 0 || !strings.HasPrefix(got[i:], "HTTP/1.1 502 ") {
		t.Fatalf("last answer %q, want 502", got[max(0, len(got)-200):])
	}
}

// TestSeamBadChunkedResponse: an answer whose chunked framing is broken before anything of it
// went out becomes a 502, not an empty close.
func TestSeamBadChunkedResponse(t *testing.T) {
	sm := newSeam(t)
	_, bw := sm.idleBackend()
	_, cw := sm.client(0)
	cw.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	bw.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
	got, _ := cw.readPeer()
	if !strings.HasPrefix(got, "HTTP/1.1 502 ") || strings.Contains(got, "hello") {
		t.Fatalf("client got %q, want 502", got)
	}
	if !bw.closed {
		t.Fatal("backend conn not closed")
	}
}

// eof delivers the client's EOF the way gnet does: OnClose with io.EOF, then gnet closes its fd.
func (l *fakeLoop) eof(w *fakeWire) {
	w.closed = true
	onClosed(w, w.ctx, os.NewSyscallError("read", io.EOF))
	unix.Close(w.fd)
}

// TestSeamHalfClose: the answer to a request followed by the client's EOF still goes out, through
// a dup of the socket, and so do the answers to requests pipelined before the EOF; then the dup is
// closed.
func TestSeamHalfClose(t *testing.T) {
	sm := newSeam(t)
	_, bw := sm.idleBackend()
	cc, cw := sm.client(0)
	cw.feed("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
	sm.fl.eof(cw)
	if cc.state == stateClosed || !cc.peerEOF {
		t.Fatalf("state %d peerEOF %v: the exchange did not survive the EOF", cc.state, cc.peerEOF)
	}
	bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
	fwd, _ := bw.readPeer()
	mustHave(t, "pipelined request forwarded after the EOF", fwd, "GET /b HTTP/1.1\r\n")
	bw.feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
	got, ended := cw.readPeer()
	if strings.Count(got, "HTTP/1.1 200 OK") != 2 || !strings.HasSuffix(got, "\r\n\r\nb") || !ended {
		t.Fatalf("client got %q (closed %v), want both answers, then the close", got, ended)
	}
	if cc.state != stateClosed || sm.s.conns.Load() != 0 {
		t.Fatalf("state %d, conns %d after the last answer", cc.state, sm.s.conns.Load())
	}
}
