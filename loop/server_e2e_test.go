package loop_test

// The first end-to-end tests of the HTTP plane (keep-alive, chunked uploads, verified upgrades,
// offloads, idle close, retry, Start/Stop), on the one shared harness (helpers_e2e_test.go).

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/loop"
)

// roundTrip sends raw and reads one whole response.
func (c *rawConn) roundTrip(t testing.TB, raw, method string) (*http.Response, []byte) {
	t.Helper()
	c.send(t, raw)
	return c.fullResponse(t, method)
}

func TestProxyGETKeepAlive(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s host=%s xff=%s xfh=%s", r.URL.RequestURI(), r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"))
	}))
	s, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	for i := 0; i < 3; i++ {
		resp, body := c.roundTrip(t, "GET /x?i="+strconv.Itoa(i)+" HTTP/1.1\r\nHost: front.example\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", "GET")
		want := "path=/x?i=" + strconv.Itoa(i) + " host=front.example xff=1.2.3.4, 127.0.0.1 xfh=front.example"
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
		if resp.Close {
			t.Fatalf("request %d: proxy announced close on a keep-alive exchange", i)
		}
	}
	if n := be.Accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for 3 keep-alive requests, want 1", n)
	}
	if st := s.Stats(); st.Requests != 3 || st.BackendConnsOpened != 1 || st.Conns != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestProxyPOSTChunked(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "te=%v len=%d body=%s trailer=%s", r.TransferEncoding, len(b), b, r.Trailer.Get("X-Sum"))
	}))
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	req := "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
		"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 42\r\n\r\n"
	// Split the request at every awkward place: the proxy parses resumably.
	for i := 0; i < len(req); i += 7 {
		c.send(t, req[i:min(i+7, len(req))])
		time.Sleep(time.Millisecond)
	}
	resp, body := c.fullResponse(t, "POST")
	want := "te=[chunked] len=11 body=hello world trailer=42"
	if resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	// The connection is still good for a Content-Length request.
	resp, body = c.roundTrip(t, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", "POST")
	if want := "te=[] len=3 body=abc trailer="; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("second: %d %q, want %q", resp.StatusCode, body, want)
	}
}

func TestUpgradeVerified(t *testing.T) {
	got := make(chan http.Header, 4)
	key := wsKey()
	be := newRawBackend(t, func(p *rawPeer) {
		got <- p.Req.Header.Clone()
		// Frames right behind the 101 must reach the client after it.
		io.WriteString(p.Conn, response101(p.Req.Header.Get("Sec-WebSocket-Key"))+"behind-101|")
		buf := make([]byte, 4096)
		for { // echo: the tunnel is bytes both ways
			n, err := p.R.Read(buf)
			if n > 0 {
				p.Conn.Write(bytes.ToUpper(buf[:n]))
			}
			if err != nil {
				return
			}
		}
	})
	s, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	// "early" is sent before the 101 can arrive: it must go to the backend as tunnel bytes.
	c.send(t, upgradeRequest("h", "/ws", key, "")+"early|")
	resp := c.response(t, "GET")
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("status %d accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	h := <-got
	if h.Get("Upgrade") != "websocket" || h.Get("Connection") != "Upgrade" {
		t.Errorf("backend saw a head without the upgrade fields: %v", h)
	}
	want := "behind-101|EARLY|"
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != want {
		t.Fatalf("after 101 read %q, %v; want %q", buf, err, want)
	}
	c.send(t, "ping")
	buf = buf[:4]
	if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != "PING" {
		t.Fatalf("echo through tunnel: %q, %v", buf, err)
	}
	if !waitFor(2*time.Second, func() bool { st := s.Stats(); return st.TunnelsTotal == 1 && st.Conns == 0 }) {
		t.Errorf("stats after hand-off: %+v", s.Stats())
	}
}

func TestUpgradeRefusedOrBadAccept(t *testing.T) {
	cases := []struct {
		name, answer string
		status       int
	}{
		{"403", "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope", 403},
		{"bad accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n", 502},
		{"missing accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan []byte, 1)
			be := newRawBackend(t, func(p *rawPeer) {
				io.WriteString(p.Conn, tc.answer)
				// Whatever else arrives on this connection would be smuggled bytes.
				p.Conn.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
				rest, _ := io.ReadAll(p.R)
				seen <- rest
			})
			s, addr := startProxy(t, be.Addr)
			c := dialRaw(t, addr)
			smuggled := "GET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
			c.send(t, upgradeRequest("h", "/ws", wsKey(), "")+smuggled)
			resp, _ := c.fullResponse(t, "GET")
			if resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("status %d close %v, want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			if extra := c.expectClosed(t, 3*time.Second); len(extra) != 0 {
				t.Errorf("after the answer got %q, want EOF", extra)
			}
			if rest := <-seen; len(rest) != 0 {
				t.Errorf("backend received %q after the refused upgrade", rest)
			}
			if st := s.Stats(); st.TunnelsTotal != 0 || st.Requests != 1 {
				t.Errorf("stats %+v: want no tunnel and one request", st)
			}
		})
	}
}

func randomBytes(seed uint64, size int) []byte {
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	return data
}

// slowRead reads body in small steps with pauses, so the proxy's queue passes the high-water mark.
func slowRead(t *testing.T, what string, body io.Reader, size int) []byte {
	t.Helper()
	got := make([]byte, 0, size)
	buf := make([]byte, 64<<10)
	for i := 0; i < 100000; i++ {
		n, err := body.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: read after %d bytes: %v", what, len(got), err)
		}
		if i%16 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return got
}

func TestOffloadSlowDownload(t *testing.T) {
	size := 8 << 20
	data := randomBytes(1, size)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length: chunked
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		w.Write(data)
	}))
	s, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.BodyHighWater = 256 << 10 })
	c := dialRaw(t, addr)
	// All three requests are pipelined up front: the later ones wait in the proxy while the
	// earlier bodies are offloaded, and must survive the hand-off of the client socket.
	paths := []string{"/cl", "/chunked", "/cl"}
	for _, path := range paths {
		c.send(t, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
	}
	for _, path := range paths {
		resp := c.response(t, "GET")
		if got := slowRead(t, path, resp.Body, size); !bytes.Equal(got, data) {
			t.Fatalf("%s: got %d bytes, not byte-exact with the %d sent", path, len(got), size)
		}
	}
	if st := s.Stats(); st.Offloads == 0 {
		t.Errorf("no body was offloaded to the tunnel plane: %+v", st)
	}
}

// TestOffloadCloseDelimited: an HTTP/1.0-style body that ends at the backend's close is offloaded
// too; the client gets every byte, then EOF (its only end-of-body signal).
func TestOffloadCloseDelimited(t *testing.T) {
	size := 8 << 20
	data := randomBytes(3, size)
	be := newRawBackend(t, func(p *rawPeer) {
		io.WriteString(p.Conn, "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
		p.Conn.Write(data)
	})
	s, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.BodyHighWater = 256 << 10 })
	c := dialRaw(t, addr)
	c.send(t, "GET /old HTTP/1.1\r\nHost: h\r\n\r\n")
	resp := c.response(t, "GET")
	if !resp.Close || resp.ContentLength != -1 {
		t.Fatalf("close %v length %d: want a close-delimited response", resp.Close, resp.ContentLength)
	}
	// Read nothing for a while: the kernel buffers stay small (no receive autotuning without a
	// reader), so the proxy's queue passes high water however fast or loaded this machine is.
	time.Sleep(300 * time.Millisecond)
	if got := slowRead(t, "close-delimited", resp.Body, size); !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, not byte-exact with the %d sent", len(got), size)
	}
	if st := s.Stats(); st.Offloads == 0 {
		t.Errorf("the close-delimited body was not offloaded: %+v", st)
	}
	c.Close()
	if !waitFor(3*time.Second, func() bool { return s.Stats().Conns == 0 }) {
		t.Errorf("client conn still held after the close-delimited body: %+v", s.Stats())
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestOffloadFastUpload(t *testing.T) {
	size := int64(16 << 20)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		buf := make([]byte, 32<<10)
		time.Sleep(300 * time.Millisecond) // let the kernel buffers fill so the proxy's queue passes high water
		for {
			m, err := r.Body.Read(buf)
			n += int64(m)
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond) // a slow consumer: at most 32 KiB per ms
		}
		fmt.Fprintf(w, "%d", n)
	}))
	s, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.BodyHighWater = 256 << 10 })
	c := dialRaw(t, addr)
	// First with Expect: 100-continue (curl's default for large bodies): the relayed 100 must not
	// keep the body from being offloaded.
	c.send(t, "PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: "+strconv.FormatInt(size, 10)+"\r\n\r\n")
	if resp, _ := c.fullResponse(t, "PUT"); resp.StatusCode != 100 {
		t.Fatalf("want 100 Continue, got %d", resp.StatusCode)
	}
	go io.Copy(c, io.LimitReader(zeroReader{}, size))
	resp, body := c.fullResponse(t, "PUT")
	if resp.StatusCode != 200 || string(body) != strconv.FormatInt(size, 10) {
		t.Fatalf("upload with 100-continue: %d %q", resp.StatusCode, body)
	}
	offloads := s.Stats().Offloads
	if offloads == 0 {
		t.Errorf("the 100-continue upload was not offloaded: %+v", s.Stats())
	}
	go func() {
		io.WriteString(c, "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: "+strconv.FormatInt(size, 10)+"\r\n\r\n")
		io.Copy(c, io.LimitReader(zeroReader{}, size))
		io.WriteString(c, "GET /after HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok")
	}()
	resp, body = c.fullResponse(t, "PUT")
	if resp.StatusCode != 200 || string(body) != strconv.FormatInt(size, 10) {
		t.Fatalf("upload: %d %q", resp.StatusCode, body)
	}
	// The request pipelined right behind the offloaded body comes back as Extra and is served.
	resp, body = c.fullResponse(t, "GET")
	if resp.StatusCode != 200 || string(body) != "2" {
		t.Fatalf("after upload: %d %q", resp.StatusCode, body)
	}
	if st := s.Stats(); st.Offloads <= offloads {
		t.Errorf("the plain upload was not offloaded: %+v", st)
	}
	offloads = s.Stats().Offloads
	// A chunked upload: the plane frames it with the request's ChunkedDecoder.
	go func() {
		io.WriteString(c, "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := make([]byte, 100<<10)
		for sent := int64(0); sent < size; sent += int64(len(chunk)) {
			fmt.Fprintf(c, "%x\r\n", len(chunk))
			c.Write(chunk)
			io.WriteString(c, "\r\n")
		}
		io.WriteString(c, "0\r\n\r\n")
	}()
	want := (size + 100<<10 - 1) / (100 << 10) * (100 << 10)
	resp, body = c.fullResponse(t, "POST")
	if resp.StatusCode != 200 || string(body) != strconv.FormatInt(want, 10) {
		t.Fatalf("chunked upload: %d %q, want %d", resp.StatusCode, body, want)
	}
	if st := s.Stats(); st.Offloads <= offloads {
		t.Errorf("the chunked upload was not offloaded: %+v", st)
	}
}

func TestIdleKeepAliveClosed(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	_, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.IdleTimeout = 300 * time.Millisecond })
	c := dialRaw(t, addr)
	if resp, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.br.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Fatalf("idle conn: read %d, %v; want EOF", n, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("idle keep-alive closed after %v, want about 300ms", d)
	}
}

func TestRetryOnStalePooledConn(t *testing.T) {
	var conns atomic.Int64
	be := newRawBackend(t, func(p *rawPeer) {
		n := strconv.FormatInt(conns.Add(1), 10)
		io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(n))+"\r\n\r\n"+n)
		// then close: the proxy's pooled conn goes stale
	})
	_, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.Loops = 1 })
	c := dialRaw(t, addr)
	if _, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET"); string(body) != "1" {
		t.Fatalf("first: %q", body)
	}
	time.Sleep(100 * time.Millisecond)
	resp, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET")
	if resp.StatusCode != 200 || string(body) != "2" {
		t.Fatalf("second: %d %q", resp.StatusCode, body)
	}
}

// A refused request is answered with the parser's status and reason, so whoever sent it can tell
// what to fix, and the backend sees nothing.
func TestRejectNamesTheReason(t *testing.T) {
	be := newRawBackend(t, func(p *rawPeer) {})
	_, addr := startProxy(t, be.Addr)
	for _, tc := range []struct{ req, status, reason string }{
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400 Bad Request", "Host"},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505 HTTP Version Not Supported", "version"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "400 Bad Request", "Content-Length"},
	} {
		c := dialRaw(t, addr)
		resp, body := c.roundTrip(t, tc.req, "GET")
		if resp.Status != tc.status || !resp.Close {
			t.Fatalf("%q: got %q close=%v, want %q and close", tc.req, resp.Status, resp.Close, tc.status)
		}
		if !bytes.HasPrefix(body, []byte(tc.status+": ")) || !strings.Contains(strings.ToLower(string(body)), strings.ToLower(tc.reason)) {
			t.Fatalf("%q: body %q does not name the reason (%q)", tc.req, body, tc.reason)
		}
	}
	if n := be.Accepted.Load(); n != 0 {
		t.Fatalf("backend accepted %d connections for refused requests", n)
	}
}

func TestStopReleasesFDs(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	before, _ := countFDs(t)
	for i := 0; i < 3; i++ {
		cfg := baseConfig(be.Addr)
		cfg.Listen = "127.0.0.1:0"
		s, err := loop.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := dialRaw(t, s.Addr())
		c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET")
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		cancel()
	}
	be.srv.CloseClientConnections()
	if !waitFor(3*time.Second, func() bool { n, _ := countFDs(t); return n <= before }) {
		n, _ := countFDs(t)
		t.Errorf("fds: %d before, %d after three Start/Stop cycles", before, n)
	}
}

func TestStartListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // no SO_REUSEPORT: wsgate cannot share it
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := loop.DefaultConfig()
	cfg.Listen, cfg.Backend, cfg.Logger = ln.Addr().String(), "127.0.0.1:1", testLogger()
	before, _ := countFDs(t)
	if s, err := loop.Start(cfg); err == nil {
		s.Stop(context.Background())
		t.Fatalf("Start on a taken port %s succeeded", cfg.Listen)
	}
	if !waitFor(2*time.Second, func() bool { n, _ := countFDs(t); return n <= before }) {
		n, _ := countFDs(t)
		t.Errorf("fds: %d before the failed Start, %d after", before, n)
	}
}
