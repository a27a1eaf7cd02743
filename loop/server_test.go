package loop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startTestProxy(t testing.TB, backend string, mod ...func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Backend = backend
	cfg.Loops = 2
	cfg.Tunnel.Loops = 1
	cfg.Logger = quietLogger()
	for _, m := range mod {
		m(&cfg)
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

type client struct {
	net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial proxy %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{c, bufio.NewReader(c)}
}

func (c *client) roundTrip(t testing.TB, raw, method string) (*http.Response, []byte) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write request: %v", err)
	}
	return c.read(t, method)
}

func (c *client) read(t testing.TB, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

func TestProxyGETKeepAlive(t *testing.T) {
	var accepted atomic.Int64
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s host=%s xff=%s xfh=%s", r.URL.RequestURI(), r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"))
	}))
	be.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			accepted.Add(1)
		}
	}
	be.Start()
	defer be.Close()
	s := startTestProxy(t, be.Listener.Addr().String())
	c := dial(t, s.Addr())
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
	if n := accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for 3 keep-alive requests, want 1", n)
	}
	if st := s.Stats(); st.Requests != 3 || st.BackendConnsOpened != 1 || st.Conns != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestProxyPOSTChunked(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "te=%v len=%d body=%s trailer=%s", r.TransferEncoding, len(b), b, r.Trailer.Get("X-Sum"))
	}))
	defer be.Close()
	s := startTestProxy(t, be.Listener.Addr().String())
	c := dial(t, s.Addr())
	req := "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
		"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 42\r\n\r\n"
	// Split the request at every awkward place: the proxy parses resumably.
	for i := 0; i < len(req); i += 7 {
		end := min(i+7, len(req))
		if _, err := io.WriteString(c, req[i:end]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	resp, body := c.read(t, "POST")
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

// rawBackend accepts connections and hands each to serve.
func rawBackend(t testing.TB, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

func readHead(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return sb.String(), err
		}
		sb.WriteString(line)
		if line == "\r\n" {
			return sb.String(), nil
		}
	}
}

func accept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func headerOf(head, name string) string {
	for _, l := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

const wsKeyValue = "dGhlIHNhbXBsZSBub25jZQ=="

func wsRequest() string {
	return "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: " + wsKeyValue + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

func TestUpgradeVerified(t *testing.T) {
	got := make(chan string, 4)
	be := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		head, err := readHead(br)
		if err != nil {
			return
		}
		got <- head
		// Frames right behind the 101 must reach the client after it.
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+accept(headerOf(head, "Sec-WebSocket-Key"))+"\r\n\r\nbehind-101|")
		buf := make([]byte, 4096)
		for { // echo: the tunnel is bytes both ways
			n, err := br.Read(buf)
			if n > 0 {
				c.Write(bytes.ToUpper(buf[:n]))
			}
			if err != nil {
				return
			}
		}
	})
	s := startTestProxy(t, be)
	c := dial(t, s.Addr())
	// "early" is sent before the 101 can arrive: it must go to the backend as tunnel bytes.
	io.WriteString(c, wsRequest()+"early|")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != accept(wsKeyValue) {
		t.Fatalf("status %d accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	head := <-got
	if headerOf(head, "Upgrade") != "websocket" || headerOf(head, "Connection") != "Upgrade" {
		t.Errorf("backend saw head without the upgrade fields:\n%s", head)
	}
	want := "behind-101|EARLY|"
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != want {
		t.Fatalf("after 101 read %q, %v; want %q", buf, err, want)
	}
	io.WriteString(c, "ping")
	buf = buf[:4]
	if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != "PING" {
		t.Fatalf("echo through tunnel: %q, %v", buf, err)
	}
	if !waitUntil(2*time.Second, func() bool { st := s.Stats(); return st.TunnelsTotal == 1 && st.Conns == 0 }) {
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
			be := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				io.WriteString(c, tc.answer)
				// Whatever else arrives on this connection would be smuggled bytes.
				_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
				rest, _ := io.ReadAll(br)
				seen <- rest
			})
			s := startTestProxy(t, be)
			c := dial(t, s.Addr())
			smuggled := "GET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
			io.WriteString(c, wsRequest()+smuggled)
			resp, _ := c.read(t, "GET")
			if resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("status %d close %v, want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if extra, err := io.ReadAll(c.br); len(extra) != 0 {
				t.Errorf("after the answer got %q (%v), want EOF", extra, err)
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

func TestOffloadSlowDownload(t *testing.T) {
	size := 8 << 20
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length: chunked
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		w.Write(data)
	}))
	defer be.Close()
	s := startTestProxy(t, be.Listener.Addr().String(), func(c *Config) { c.BodyHighWater = 256 << 10 })
	c := dial(t, s.Addr())
	// All three requests are pipelined up front: the later ones wait in the proxy while the
	// earlier bodies are offloaded, and must survive the hand-off of the client socket.
	paths := []string{"/cl", "/chunked", "/cl"}
	for _, path := range paths {
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
	}
	for _, path := range paths {
		resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		// A slow reader: small reads with pauses so the proxy's queue passes the high-water mark.
		got := make([]byte, 0, size)
		buf := make([]byte, 64<<10)
		for i := 0; i < 100000; i++ {
			n, err := resp.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: read after %d bytes: %v", path, len(got), err)
			}
			if i%16 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		if !bytes.Equal(got, data) {
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
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	be := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
		c.Write(data)
	})
	s := startTestProxy(t, be, func(c *Config) { c.BodyHighWater = 256 << 10 })
	c := dial(t, s.Addr())
	io.WriteString(c, "GET /old HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Close || resp.ContentLength != -1 {
		t.Fatalf("close %v length %d: want a close-delimited response", resp.Close, resp.ContentLength)
	}
	// Read nothing for a while: the kernel buffers stay small (no receive autotuning without a
	// reader), so the proxy's queue passes high water however fast or loaded this machine is.
	time.Sleep(300 * time.Millisecond)
	got := make([]byte, 0, size)
	buf := make([]byte, 64<<10)
	for i := 0; i < 100000; i++ {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		if i%16 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, not byte-exact with the %d sent", len(got), size)
	}
	if st := s.Stats(); st.Offloads == 0 {
		t.Errorf("the close-delimited body was not offloaded: %+v", st)
	}
	c.Close()
	if !waitUntil(3*time.Second, func() bool { return s.Stats().Conns == 0 }) {
		t.Errorf("client conn still held after the close-delimited body: %+v", s.Stats())
	}
}

func TestOffloadFastUpload(t *testing.T) {
	size := int64(16 << 20)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		buf := make([]byte, 32<<10)
		time.Sleep(300 * time.Millisecond) // let the kernel buffers fill so the proxy's queue passes high water
		for i := 0; ; i++ {
			m, err := r.Body.Read(buf)
			n += int64(m)
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond) // a slow consumer: at most 32 KiB per ms
		}
		fmt.Fprintf(w, "%d", n)
	}))
	defer be.Close()
	s := startTestProxy(t, be.Listener.Addr().String(), func(c *Config) { c.BodyHighWater = 256 << 10 })
	c := dial(t, s.Addr())
	// First with Expect: 100-continue (curl's default for large bodies): the relayed 100 must not
	// keep the body from being offloaded.
	io.WriteString(c, "PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: "+strconv.FormatInt(size, 10)+"\r\n\r\n")
	if resp, _ := c.read(t, "PUT"); resp.StatusCode != 100 {
		t.Fatalf("want 100 Continue, got %d", resp.StatusCode)
	}
	go io.Copy(c, io.LimitReader(zeroReader{}, size))
	resp, body := c.read(t, "PUT")
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
	resp, body = c.read(t, "PUT")
	if resp.StatusCode != 200 || string(body) != strconv.FormatInt(size, 10) {
		t.Fatalf("upload: %d %q", resp.StatusCode, body)
	}
	// The request pipelined right behind the offloaded body comes back as Extra and is served.
	resp, body = c.read(t, "GET")
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
	resp, body = c.read(t, "POST")
	if resp.StatusCode != 200 || string(body) != strconv.FormatInt(want, 10) {
		t.Fatalf("chunked upload: %d %q, want %d", resp.StatusCode, body, want)
	}
	if st := s.Stats(); st.Offloads <= offloads {
		t.Errorf("the chunked upload was not offloaded: %+v", st)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestIdleKeepAliveClosed(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer be.Close()
	s := startTestProxy(t, be.Listener.Addr().String(), func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	c := dial(t, s.Addr())
	if resp, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
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
	be := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		n := conns.Add(1)
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(strconv.FormatInt(n, 10)))+"\r\n\r\n"+strconv.FormatInt(n, 10))
		// then close: the proxy's pooled conn goes stale
	})
	s := startTestProxy(t, be, func(c *Config) { c.Loops = 1 })
	c := dial(t, s.Addr())
	if _, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET"); string(body) != "1" {
		t.Fatalf("first: %q", body)
	}
	time.Sleep(100 * time.Millisecond)
	resp, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET")
	if resp.StatusCode != 200 || string(body) != "2" {
		t.Fatalf("second: %d %q", resp.StatusCode, body)
	}
}

func TestStopReleasesFDs(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer be.Close()
	be.Client() // warm up net/http's own fds
	before := countFDs(t)
	for i := 0; i < 3; i++ {
		cfg := DefaultConfig()
		cfg.Listen, cfg.Backend, cfg.Loops, cfg.Logger = "127.0.0.1:0", be.Listener.Addr().String(), 2, quietLogger()
		cfg.Tunnel.Loops = 1
		s, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, s.Addr())
		c.roundTrip(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET")
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		cancel()
	}
	be.CloseClientConnections()
	if !waitUntil(3*time.Second, func() bool { return countFDs(t) <= before }) {
		t.Errorf("fds: %d before, %d after three Start/Stop cycles", before, countFDs(t))
	}
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

func TestStartListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // no SO_REUSEPORT: wsgate cannot share it
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := DefaultConfig()
	cfg.Listen, cfg.Backend, cfg.Logger = ln.Addr().String(), "127.0.0.1:1", quietLogger()
	before := countFDs(t)
	if s, err := Start(cfg); err == nil {
		s.Stop(context.Background())
		t.Fatalf("Start on a taken port %s succeeded", cfg.Listen)
	}
	if !waitUntil(2*time.Second, func() bool { return countFDs(t) <= before }) {
		t.Errorf("fds: %d before the failed Start, %d after", before, countFDs(t))
	}
}
