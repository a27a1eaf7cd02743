package loop_test

// Issue 8 (edge hardening), the HTTP plane's state machine: each test names the class it covers
// and drives it through real loopback sockets.

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/loop"
)

func oneLoop(c *loop.Config) { c.Loops = 1 }

// keepAliveBackend serves every request on a conn in turn: answer(req, conn) writes the answer.
func keepAliveBackend(t testing.TB, answer func(req *http.Request, p *rawPeer)) *rawBackend {
	return newRawBackend(t, func(p *rawPeer) {
		req := p.Req
		for i := 0; i < 1_000_000; i++ {
			io.Copy(io.Discard, req.Body)
			answer(req, p)
			var err error
			if req, err = http.ReadRequest(p.R); err != nil {
				return
			}
		}
	})
}

const evil = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"

// TestE2EPoolNoCrossTalk (class: a backend conn is pooled only at an exact framing boundary; no
// byte of one client's exchange reaches another client). The next client on the same loop must
// get its own answer.
func TestE2EPoolNoCrossTalk(t *testing.T) {
	t.Parallel()
	// "head" is not HEAD: its answer has a body, which arrives late. Treating it as HEAD would
	// pool the conn at the end of the head and hand the body to the next client as its answer.
	t.Run("head-with-body", func(t *testing.T) {
		be := keepAliveBackend(t, func(req *http.Request, p *rawPeer) {
			if req.Method == "head" {
				io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(evil))+"\r\n\r\n")
				time.Sleep(150 * time.Millisecond)
				io.WriteString(p.Conn, evil)
				return
			}
			io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
		})
		_, addr := startProxy(t, be.Addr, oneLoop)
		a := dialRaw(t, addr)
		a.send(t, "head / HTTP/1.1\r\nHost: a\r\n\r\n")
		ra := a.response(t, "head")
		b := dialRaw(t, addr)
		b.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := b.fullResponse(t, "GET"); string(body) != "mine" {
			t.Fatalf("second client got %q, want its own answer \"mine\"", body)
		}
		if body, err := io.ReadAll(ra.Body); err != nil || string(body) != evil {
			t.Fatalf("\"head\" client: body %q, %v; want the %d-byte body relayed", body, err, len(evil))
		}
	})
	// Bytes after a complete answer (here a whole second answer nobody asked for), sent before
	// the next client's request (bytes that come after it cannot be told from its answer): the
	// conn is closed, never pooled, whether gnet has read the stray bytes yet or not.
	t.Run("bytes-after-response", func(t *testing.T) {
		strayOut := make(chan struct{}, 1)
		be := keepAliveBackend(t, func(req *http.Request, p *rawPeer) {
			if req.URL.Path == "/first" {
				io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				io.WriteString(p.Conn, evil)
				strayOut <- struct{}{}
				return
			}
			io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
		})
		s, addr := startProxy(t, be.Addr, oneLoop)
		for i := 0; i < 20; i++ {
			a := dialRaw(t, addr)
			a.send(t, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
			if _, body := a.fullResponse(t, "GET"); string(body) != "ok" {
				t.Fatalf("round %d: first client got %q", i, body)
			}
			<-strayOut
			b := dialRaw(t, addr)
			b.send(t, "GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
			if _, body := b.fullResponse(t, "GET"); string(body) != "mine" {
				t.Fatalf("round %d: second client got %q, want its own answer \"mine\"", i, body)
			}
			a.Close()
			b.Close()
		}
		if n := s.Stats().BackendIdle; n > 1 {
			t.Errorf("%d idle backend conns, want at most the one that served /second", n)
		}
	})
}

// recordingBackend reads everything a conn sends after the request head until EOF (or 20 s),
// after waiting delay (so a fast client fills wsgate's queue), and reports it. It never answers.
func recordingBackend(t testing.TB, delay time.Duration) (*rawBackend, chan []byte) {
	got := make(chan []byte, 4)
	be := newRawBackend(t, func(p *rawPeer) {
		p.Conn.SetReadBuffer(16 << 10)
		time.Sleep(delay)
		p.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, _ := io.ReadAll(p.R)
		got <- b
	})
	return be, got
}

// TestE2EBadChunkedRequestBody (class: a request body whose chunked framing is invalid, before
// any answer went out): the client gets 400, the backend conn is closed (never pooled), and the
// invalid bytes (here a smuggled request behind them) never reach the backend.
func TestE2EBadChunkedRequestBody(t *testing.T) {
	t.Parallel()
	const bad = "zz\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	check := func(t *testing.T, s *loop.Server, c *rawConn, got chan []byte) {
		t.Helper()
		resp, body := c.fullResponse(t, "POST")
		if resp.StatusCode != 400 || !resp.Close {
			t.Fatalf("status %d close %v (body %q), want 400 and close", resp.StatusCode, resp.Close, body)
		}
		c.expectClosed(t, 5*time.Second)
		select {
		case b := <-got:
			if strings.Contains(string(b), "zz") || strings.Contains(string(b), "smuggled") {
				t.Fatalf("the invalid bytes reached the backend: ...%q", trunc(b[max(0, len(b)-100):]))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the backend conn was not closed")
		}
		if n := s.Stats().BackendIdle; n != 0 {
			t.Errorf("%d idle backend conns: the conn holding a partial body was pooled", n)
		}
	}
	t.Run("in-loop", func(t *testing.T) {
		be, got := recordingBackend(t, 0)
		s, addr := startProxy(t, be.Addr)
		c := dialRaw(t, addr)
		c.send(t, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		time.Sleep(50 * time.Millisecond) // the valid part is relayed first
		c.send(t, bad)
		check(t, s, c, got)
	})
	t.Run("offloaded", func(t *testing.T) {
		// A slow backend and a low high-water mark: the body moves to the tunnel plane, which
		// meets the invalid chunk.
		be, got := recordingBackend(t, 300*time.Millisecond)
		s, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.BodyHighWater = 64 << 10 })
		c := dialRaw(t, addr)
		chunk := strings.Repeat("x", 64<<10)
		go func() {
			c.Write([]byte("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"))
			for i := 0; i < 256; i++ { // 16 MiB
				if _, err := c.Write([]byte("10000\r\n" + chunk + "\r\n")); err != nil {
					return
				}
			}
			c.Write([]byte(bad))
		}()
		check(t, s, c, got)
		if s.Stats().Offloads == 0 {
			t.Errorf("the body was never offloaded: the plane's framing check is untested")
		}
	})
}

// readSlowly reads r in steps of step bytes with pause between them until EOF or an error.
func readSlowly(r io.Reader, step int, pause time.Duration) (string, int64, error) {
	h := newHasher()
	buf := make([]byte, step)
	var n int64
	for {
		k, err := r.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if err == io.EOF {
			return h.sum(), n, nil
		}
		if err != nil {
			return h.sum(), n, err
		}
		time.Sleep(pause)
	}
}

// TestE2ESlowClientTail (class: the tail of an answer queued toward a slow client is never
// dropped by the idle or linger timers; only a write stall ends it). IdleTimeout is 1 s; the
// client reads a 16 MiB answer steadily for several seconds, so the answer sits in wsgate's queue
// long after the exchange ended (keep-alive: the idle timer runs; Connection: close: the linger
// timer, 2 s + IdleTimeout/4 on main).
// BodyHighWater is high so the queue stays in the loop instead of moving to the tunnel plane.
func TestE2ESlowClientTail(t *testing.T) {
	t.Parallel()
	const n = 16 << 20
	be := newBackend(t, http.HandlerFunc(dataHandler))
	s, addr := startProxy(t, be.Addr, func(c *loop.Config) {
		c.IdleTimeout = time.Second
		c.BodyHighWater = 64 << 20
	})
	for _, mode := range []string{"keep-alive", "close"} {
		t.Run(mode, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)
			extra := ""
			if mode == "close" {
				extra = "Connection: close\r\n"
			}
			c.send(t, "GET /data?n="+strconv.Itoa(n)+"&seed=71 HTTP/1.1\r\nHost: a\r\n"+extra+"\r\n")
			resp := c.response(t, "GET")
			start := time.Now()
			sum, got, err := readSlowly(resp.Body, 64<<10, 5*time.Millisecond)
			if err != nil || got != n || sum != genSum(71, n) {
				t.Fatalf("slow reader got %d of %d bytes in %v (sum ok %v), err %v", got, n, time.Since(start), sum == genSum(71, n), err)
			}
			t.Logf("%d bytes read in %v", got, time.Since(start))
			if mode == "close" {
				c.expectClosed(t, 5*time.Second)
			}
		})
	}
	// A client that stops reading altogether is a write stall: after IdleTimeout without progress
	// it is reset (never a clean close: the answer is cut short).
	t.Run("stalled", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)
		c.send(t, "GET /data?n="+strconv.Itoa(n)+"&seed=73 HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := c.response(t, "GET")
		// The kernel buffers are full and wsgate queues the rest: from here no byte moves.
		if !waitFor(30*time.Second, func() bool { return s.Stats().QueuedBytes > 0 }) {
			t.Fatal("nothing ever queued toward the client that does not read")
		}
		time.Sleep(3 * time.Second)
		_, got, err := readSlowly(resp.Body, 64<<10, 0)
		if got >= n || !isReset(err) {
			t.Fatalf("stalled reader: %d of %d bytes, err %v; want a reset before the end", got, n, err)
		}
		if !waitFor(5*time.Second, func() bool { return s.Stats().Conns == 0 }) {
			t.Errorf("conns still held: %+v", s.Stats())
		}
	})
}

// TestE2EOffloadedBodyQuietBackend (class: an offloaded response body is not idle-timed-out):
// the body moves to the tunnel plane, then the backend is quiet for several IdleTimeouts (a
// streamed answer, a long poll) before it sends the rest.
func TestE2EOffloadedBodyQuietBackend(t *testing.T) {
	t.Parallel()
	first, last := genBytes(81, 16<<20), genBytes(82, 1000)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.Write(first)
		w.(http.Flusher).Flush()
		time.Sleep(2500 * time.Millisecond)
		w.Write(last)
	}))
	s, addr := startProxy(t, be.Addr, lowWater, func(c *loop.Config) { c.IdleTimeout = 800 * time.Millisecond })
	c := dialRaw(t, addr)
	c.Conn.(*net.TCPConn).SetReadBuffer(32 << 10)
	c.send(t, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
	resp := c.response(t, "GET")
	time.Sleep(200 * time.Millisecond) // the queue passes BodyHighWater: the body moves to the plane
	body, err := io.ReadAll(resp.Body)
	if err != nil || sumOf(body) != sumOf(append(first, last...)) {
		t.Fatalf("streamed body: %d of %d bytes, err %v", len(body), len(first)+len(last), err)
	}
	if s.Stats().Offloads == 0 {
		t.Errorf("the body never moved to the tunnel plane: untested")
	}
}

// TestE2ECloseDelimitedReset (class: a close-delimited body ends cleanly only at the backend's
// EOF; every other failure is a reset, or the client would take a truncated body as complete).
func TestE2ECloseDelimitedReset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		n    int
		opt  func(*loop.Config)
	}{
		{"in-loop", 1000, func(*loop.Config) {}},
		{"offloaded", 8 << 20, lowWater},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newRawBackend(t, func(p *rawPeer) {
				io.WriteString(p.Conn, "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
				p.Conn.Write(genBytes(91, tc.n))
				time.Sleep(300 * time.Millisecond)
				p.Conn.SetLinger(0) // then the deferred Close resets the conn
			})
			s, addr := startProxy(t, be.Addr, tc.opt)
			c := dialRaw(t, addr)
			c.Conn.(*net.TCPConn).SetReadBuffer(32 << 10)
			c.send(t, "GET /old HTTP/1.1\r\nHost: a\r\n\r\n")
			resp := c.response(t, "GET")
			if resp.ContentLength != -1 || !resp.Close {
				t.Fatalf("not a close-delimited answer: length %d close %v", resp.ContentLength, resp.Close)
			}
			time.Sleep(100 * time.Millisecond)
			_, got, err := readSlowly(resp.Body, 32<<10, 0)
			if err == nil {
				t.Fatalf("the backend reset mid-body, the client read %d bytes and a clean end", got)
			}
			if tc.name == "offloaded" && s.Stats().Offloads == 0 {
				t.Errorf("the body never moved to the tunnel plane: untested")
			}
		})
	}
}

// maxQueued samples Stats.QueuedBytes every few ms until stop is closed, and returns the peak.
func maxQueued(s *loop.Server, stop chan struct{}) chan int64 {
	res := make(chan int64, 1)
	go func() {
		var peak int64
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		for {
			peak = max(peak, s.Stats().QueuedBytes)
			select {
			case <-stop:
				res <- peak
				return
			case <-tk.C:
			}
		}
	}()
	return res
}

// TestE2EPipelineFloodBounded (class: every byte queued toward a peer counts against one memory
// bound): a client pipelines small requests and never reads. wsgate must stop parsing its
// requests once the answers queued for it pass the bound, instead of queueing one more answer per
// request without limit, and the conn must end (pipeline hold cap, or the write-stall rule).
// Not parallel: the heap is measured.
func TestE2EPipelineFloodBounded(t *testing.T) {
	const hw = 256 << 10
	answer := "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("a", 1024)
	be := keepAliveBackend(t, func(req *http.Request, p *rawPeer) { io.WriteString(p.Conn, answer) })
	s, addr := startProxy(t, be.Addr, func(c *loop.Config) {
		c.BodyHighWater = hw
		c.IdleTimeout = 2 * time.Second
	})
	c := dialRaw(t, addr)
	c.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	w := watchMem(20 * time.Millisecond)
	stop := make(chan struct{})
	peak := maxQueued(s, stop)
	// Paced, so wsgate keeps up and the unparsed backlog stays under the pipeline hold cap (a
	// burst would only meet that cap): on main every request was answered into the queue.
	batch := []byte(strings.Repeat("GET /p HTTP/1.1\r\nHost: a\r\n\r\n", 50))
	sent := 0
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(batch); err != nil {
			break // reset by wsgate (pipeline cap), or the write blocked: both end the flood
		}
		sent += 50
		time.Sleep(2 * time.Millisecond)
	}
	closed := waitFor(10*time.Second, func() bool { return s.Stats().Conns == 0 })
	close(stop)
	g := w.growth()
	p := <-peak
	t.Logf("sent %d requests; peak queued %d bytes; heap growth %.1f MiB", sent, p, float64(g.HeapInuse)/(1<<20))
	if p > hw+64<<10 {
		t.Errorf("peak %d bytes queued toward a client that never reads, bound %d", p, hw)
	}
	if g.HeapInuse >= memBound {
		t.Errorf("heap grew %.1f MiB while a client pipelined without reading (bound %d MiB)", float64(g.HeapInuse)/(1<<20), memBound>>20)
	}
	if !closed {
		t.Errorf("the flooding client's conn was never ended: %+v", s.Stats())
	}
	if q := s.Stats().QueuedBytes; q != 0 {
		t.Errorf("%d bytes still counted as queued after the conn ended", q)
	}
}

// TestE2EInterimFlood (class: interim 1xx answers count against the same bound): a backend floods
// 100 Continue toward a client that is not reading. wsgate must close the backend conn once its
// queue passes the bound and answer 502 (nothing final was sent). Not parallel: memory.
func TestE2EInterimFlood(t *testing.T) {
	const hw = 256 << 10
	const flood = 16 << 20
	cut := make(chan int, 1)
	be := newRawBackend(t, func(p *rawPeer) {
		batch := []byte(strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 1000))
		n := 0
		for n < flood {
			p.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			k, err := p.Conn.Write(batch)
			n += k
			if err != nil {
				cut <- n
				return
			}
		}
		cut <- n
		io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		<-p.Done
	})
	s, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.BodyHighWater = hw })
	c := dialRaw(t, addr)
	c.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	stop := make(chan struct{})
	peak := maxQueued(s, stop)
	c.send(t, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	var wrote int
	select {
	case wrote = <-cut:
	case <-time.After(20 * time.Second):
		t.Fatal("backend flood neither finished nor was cut")
	}
	close(stop)
	if wrote >= flood {
		t.Errorf("the backend wrote its whole %d-byte flood of 100 Continue: never cut off", wrote)
	}
	if p := <-peak; p > hw+64<<10 {
		t.Errorf("peak %d bytes queued, bound %d", p, hw)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	all, err := io.ReadAll(c.br)
	if err != nil && !isReset(err) {
		t.Fatalf("reading the answers: %v after %d bytes", err, len(all))
	}
	last := string(all[max(0, strings.LastIndex(string(all), "HTTP/1.1 ")):])
	if !strings.HasPrefix(last, "HTTP/1.1 502 ") {
		t.Fatalf("final answer %q, want 502", trunc([]byte(last)))
	}
}

// TestE2EBadChunkedResponse (class: a response whose chunked framing is broken before anything
// of it was sent gets 502, not an empty close).
func TestE2EBadChunkedResponse(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(p *rawPeer) {
		io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
		<-p.Done
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := c.fullResponse(t, "GET")
	if resp.StatusCode != 502 || !resp.Close {
		t.Fatalf("status %d close %v body %q, want 502 and close", resp.StatusCode, resp.Close, body)
	}
	c.expectClosed(t, 5*time.Second)
}

// TestE2EOffloadClientLeaves (class: a backend conn coming back from an offload after its client
// left is closed or pooled, never orphaned). Clients fetch a body that moves to the tunnel plane
// and leave: right after the last byte (the client's socket comes back from the plane already at
// EOF, often before the backend's does), or in the middle. Afterwards every backend conn still
// open at the backend must be one wsgate keeps in its pool.
func TestE2EOffloadClientLeaves(t *testing.T) {
	t.Parallel()
	const n = 4 << 20
	body := strings.Repeat("b", n)
	var open atomic.Int64
	be := newRawBackend(t, func(p *rawPeer) {
		open.Add(1)
		defer open.Add(-1)
		req := p.Req
		for {
			io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n"+body)
			var err error
			if req, err = http.ReadRequest(p.R); err != nil {
				return
			}
			_ = req
		}
	})
	s, addr := startProxy(t, be.Addr, lowWater, oneLoop)
	for i := 0; i < 40; i++ {
		c := dialRaw(t, addr)
		c.Conn.(*net.TCPConn).SetReadBuffer(32 << 10)
		before := s.Stats().Offloads
		c.send(t, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := c.response(t, "GET")
		// Not reading: the queue passes BodyHighWater and the body moves to the plane.
		waitFor(2*time.Second, func() bool { return s.Stats().Offloads > before })
		want := int64(n)
		if i%4 == 3 {
			want = n / 2 // leave in the middle
		}
		got, _ := io.CopyN(io.Discard, resp.Body, want)
		if got != want {
			t.Fatalf("client %d: read %d of %d bytes", i, got, want)
		}
		c.Close()
	}
	t.Logf("%d of 40 bodies offloaded", s.Stats().Offloads)
	if s.Stats().Offloads == 0 {
		t.Fatal("no body moved to the tunnel plane: untested")
	}
	settled := waitFor(10*time.Second, func() bool {
		st := s.Stats()
		return st.Conns == 0 && open.Load() == st.BackendIdle
	})
	if !settled {
		t.Errorf("%d backend conns open at the backend, %d in wsgate's pool, %d clients: conns orphaned",
			open.Load(), s.Stats().BackendIdle, s.Stats().Conns)
	}
}

// TestE2EHalfClose (class: a client that half-closes right after a complete request still gets
// its full answer, as with HAProxy; gnet closes on EOF, so the answer leaves through a dup of the
// socket). Small and 8 MiB bodies, keep-alive and not, a body that moves to the tunnel plane
// after the EOF, and pipelined requests sent before it.
func TestE2EHalfClose(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.HandlerFunc(dataHandler))
	noIdlePipes := func(c *loop.Config) { c.Tunnel.PipePoolMax = -1 } // so the fd count below is conns only
	s, addr := startProxy(t, be.Addr, noIdlePipes)
	lowS, lowAddr := startProxy(t, be.Addr, lowWater, noIdlePipes)
	run := func(t *testing.T, addr string, reqs []string, sizes []int, seed uint64, pause time.Duration) {
		c := dialRaw(t, addr)
		c.send(t, strings.Join(reqs, ""))
		if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(pause) // a slow reader: the answer queues up (and, with lowWater, moves to the plane)
		for i, n := range sizes {
			resp := c.response(t, "GET")
			sum, got, err := hashReader(resp.Body)
			if err != nil || resp.StatusCode != 200 || got != int64(n) || sum != genSum(seed+uint64(i), int64(n)) {
				t.Fatalf("answer %d after the client's EOF: status %d, %d of %d bytes, err %v", i, resp.StatusCode, got, n, err)
			}
		}
		if rest := c.expectClosed(t, 5*time.Second); len(rest) > 0 {
			t.Fatalf("bytes after the last answer: %q", trunc(rest))
		}
	}
	get := func(n int, seed uint64, extra string) string {
		return "GET /data?n=" + strconv.Itoa(n) + "&seed=" + strconv.FormatUint(seed, 10) + " HTTP/1.1\r\nHost: a\r\n" + extra + "\r\n"
	}
	for _, n := range []int{5, 8 << 20} {
		for _, mode := range []string{"keep-alive", "close"} {
			extra := ""
			if mode == "close" {
				extra = "Connection: close\r\n"
			}
			t.Run(strconv.Itoa(n)+"/"+mode, func(t *testing.T) {
				run(t, addr, []string{get(n, 100, extra)}, []int{n}, 100, 0)
			})
		}
	}
	t.Run("offloaded", func(t *testing.T) {
		run(t, lowAddr, []string{get(8<<20, 200, "")}, []int{8 << 20}, 200, 300*time.Millisecond)
		if lowS.Stats().Offloads == 0 {
			t.Errorf("the answer never moved to the tunnel plane: untested")
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		run(t, addr, []string{get(3, 300, ""), get(70000, 301, ""), get(4, 302, "")}, []int{3, 70000, 4}, 300, 50*time.Millisecond)
	})
	// Every dup was closed and given back to the fd budget: what is left counted is the pool.
	for _, s := range []*loop.Server{s, lowS} {
		if !waitFor(5*time.Second, func() bool { st := s.Stats(); return st.Conns == 0 && st.FDsUsed == st.BackendIdle }) {
			t.Errorf("after the half-closed clients: %+v", s.Stats())
		}
	}
}
