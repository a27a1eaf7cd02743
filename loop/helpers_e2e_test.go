package loop_test

// Shared harness for the end-to-end tests: every test starts its own wsgate (loop.Start on a free
// loopback port, short timeouts) in front of its own backend, and talks to it through real sockets.

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
)

// ---------------------------------------------------------------------------------------------
// sizes and environment

// longRun enables the 1 GiB memory-bound transfers the issue quotes; they take too long for CI.
func longRun() bool { return os.Getenv("WSGATE_LONG") == "1" }

// pick returns small under -race or -short (same assertions, less data), long with WSGATE_LONG=1.
func pick(small, normal, long int64) int64 {
	switch {
	case longRun():
		return long
	case raceEnabled || testing.Short():
		return small
	}
	return normal
}

var nofileOnce sync.Once

// raiseNofile lifts RLIMIT_NOFILE's soft limit to the hard one: the load tests hold thousands of fds
// in this one process (client, wsgate's two sides and the backend: 4 per tunnel).
func raiseNofile(t testing.TB) uint64 {
	nofileOnce.Do(func() {
		var r unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
			return
		}
		if r.Cur < r.Max {
			r.Cur = r.Max
			_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
		}
	})
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	return uint64(r.Cur) // int64 on the BSDs
}

func testLogger() *slog.Logger {
	if os.Getenv("WSGATE_E2E_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// ---------------------------------------------------------------------------------------------
// wsgate under test

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// baseConfig: short timeouts so a hung peer fails a test in seconds, not minutes.
func baseConfig(backend string) loop.Config {
	cfg := loop.DefaultConfig()
	cfg.Backend = backend
	cfg.Loops = 2
	cfg.HeaderTimeout = 5 * time.Second
	cfg.IdleTimeout = 30 * time.Second
	cfg.DialTimeout = 2 * time.Second
	cfg.ResponseTimeout = 20 * time.Second
	cfg.BackendIdleTimeout = 30 * time.Second
	cfg.Tunnel.Loops = 2
	cfg.Tunnel.FinTimeout = 10 * time.Second
	cfg.Logger = testLogger()
	return cfg
}

// startProxy starts wsgate in front of backend and stops it when the test ends. It returns the
// address clients dial.
func startProxy(t testing.TB, backend string, opts ...func(*loop.Config)) (*loop.Server, string) {
	t.Helper()
	cfg := baseConfig(backend)
	for _, o := range opts {
		o(&cfg)
	}
	var (
		s   *loop.Server
		err error
	)
	// The free port can be taken by a parallel test between probe and bind: retry a few times.
	for i := 0; i < 5; i++ {
		cfg.Listen = freeAddr(t)
		if s, err = loop.Start(cfg); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("loop.Start(listen %s, backend %s): %v", cfg.Listen, backend, err)
	}
	t.Cleanup(func() { stopProxy(t, s) })
	addr := strings.TrimPrefix(s.Addr(), "tcp://")
	if _, port, err := net.SplitHostPort(addr); err != nil || port != portOf(cfg.Listen) {
		t.Errorf("Addr() = %q, want the listen address %q", s.Addr(), cfg.Listen)
		addr = cfg.Listen
	}
	return s, addr
}

var stopped sync.Map // *loop.Server -> *sync.Once

// stopProxy stops s once (tests that count fds stop it themselves before the cleanup runs).
func stopProxy(t testing.TB, s *loop.Server) {
	once, _ := stopped.LoadOrStore(s, new(sync.Once))
	once.(*sync.Once).Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("wsgate Stop: %v", err)
		}
	})
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func withSplice(on bool) func(*loop.Config) { return func(c *loop.Config) { c.Tunnel.Splice = on } }

// forEachSplice runs f once with the splice(2) tunnel path and once with the portable copy path.
func forEachSplice(t *testing.T, f func(t *testing.T, opt func(*loop.Config))) {
	for _, on := range []bool{true, false} {
		name := "splice"
		if !on {
			name = "copy"
		}
		t.Run(name, func(t *testing.T) { f(t, withSplice(on)) })
	}
}

// waitFor polls cond every 10ms for at most d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------------------------
// net/http backends

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// backend is a net/http server that counts accepted connections and requests (per path too), so
// tests can prove what did, and what did not, reach it.
type backend struct {
	srv      *httptest.Server
	Addr     string
	Accepted atomic.Int64
	Requests atomic.Int64
	paths    sync.Map // path -> *atomic.Int64
}

func (b *backend) count(path string) int64 {
	if v, ok := b.paths.Load(path); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

func newBackend(t testing.TB, h http.Handler) *backend {
	t.Helper()
	b := &backend{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("backend listen: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Requests.Add(1)
		v, _ := b.paths.LoadOrStore(r.URL.Path, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		h.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = countingListener{ln, &b.Accepted}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	b.srv = srv
	b.Addr = ln.Addr().String()
	t.Cleanup(func() {
		// Registered before wsgate's Stop, so it runs after it: every proxied conn must be gone by
		// now, otherwise httptest.Server.Close would wait forever for the handlers.
		srv.CloseClientConnections()
		done := make(chan struct{})
		go func() { srv.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("backend %s: handlers still running 10s after wsgate stopped (proxied conns not closed?)", b.Addr)
		}
	})
	return b
}

// newClient is a net/http client that goes straight to wsgate (no environment proxy), never follows
// redirects, and counts the TCP connections it dials.
func newClient(t testing.TB, dials *atomic.Int64) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   8,
		ResponseHeaderTimeout: 30 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ---------------------------------------------------------------------------------------------
// raw clients

type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial wsgate %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return &rawConn{Conn: c, br: bufio.NewReaderSize(c, 64<<10)}
}

func (c *rawConn) send(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		t.Fatalf("write to wsgate: %v", err)
	}
}

// response reads one response head (and leaves the body in the bufio.Reader).
func (c *rawConn) response(t testing.TB, method string) *http.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response to %s from wsgate: %v", method, err)
	}
	return resp
}

// fullResponse reads one response and its whole body.
func (c *rawConn) fullResponse(t testing.TB, method string) (*http.Response, []byte) {
	t.Helper()
	resp := c.response(t, method)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body of %s response (status %d): %v", method, resp.StatusCode, err)
	}
	return resp, body
}

// expectClosed asserts the peer closes the connection within d, returning what it still sent.
func (c *rawConn) expectClosed(t testing.TB, d time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	rest, err := io.ReadAll(c.br)
	if err != nil && !isReset(err) {
		t.Fatalf("wsgate did not close the connection within %v: %v (read %q)", d, err, trunc(rest))
	}
	return rest
}

// expectQuiet asserts nothing more arrives for d (no stray body bytes between responses).
func (c *rawConn) expectQuiet(t testing.TB, d time.Duration) {
	t.Helper()
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		t.Fatalf("unexpected bytes after the response: %q", trunc(b))
	}
	c.SetReadDeadline(time.Now().Add(d))
	var one [1]byte
	n, err := c.br.Read(one[:])
	if n > 0 {
		t.Fatalf("unexpected byte after the response: %q", one[:n])
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connection ended after the response (want it kept alive): %v", err)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
}

func isReset(err error) bool {
	return errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

func trunc(b []byte) []byte {
	if len(b) > 200 {
		return append(b[:200:200], "..."...)
	}
	return b
}

// ---------------------------------------------------------------------------------------------
// deterministic data

// gen is an endless deterministic byte stream (ChaCha8, not a short period pattern), so lost,
// duplicated or reordered blocks change the SHA-256.
func gen(seed uint64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

func genN(seed uint64, n int64) io.Reader { return io.LimitReader(gen(seed), n) }

func genBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	io.ReadFull(gen(seed), b)
	return b
}

func genSum(seed uint64, n int64) string {
	h := sha256.New()
	io.CopyBuffer(h, genN(seed, n), make([]byte, 32<<10))
	return fmt.Sprintf("%x", h.Sum(nil))
}

func sumOf(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// hashReader hashes everything read from r with a small buffer; returns (hex sum, bytes, err).
func hashReader(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 32<<10))
	return fmt.Sprintf("%x", h.Sum(nil)), n, err
}

// ---------------------------------------------------------------------------------------------
// memory (wsgate runs in-process)

func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

type memSample struct{ HeapInuse, Sys, RSS uint64 }

func readMem() memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{HeapInuse: ms.HeapInuse + ms.StackInuse, Sys: ms.Sys, RSS: vmRSS()}
}

// memWatch samples the process every interval and keeps the peaks, against a baseline taken after
// a GC with the heap returned to the OS.
type memWatch struct {
	base, peak memSample
	stop, done chan struct{}
}

func watchMem(interval time.Duration) *memWatch {
	runtime.GC()
	debug.FreeOSMemory()
	w := &memWatch{base: readMem(), stop: make(chan struct{}), done: make(chan struct{})}
	w.peak = w.base
	go func() {
		defer close(w.done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tk.C:
				m := readMem()
				w.peak.HeapInuse = max(w.peak.HeapInuse, m.HeapInuse)
				w.peak.Sys = max(w.peak.Sys, m.Sys)
				w.peak.RSS = max(w.peak.RSS, m.RSS)
			}
		}
	}()
	return w
}

// growth returns peak minus baseline for heap (+stacks), Go runtime Sys and VmRSS.
func (w *memWatch) growth() memSample {
	close(w.stop)
	<-w.done
	d := func(p, b uint64) uint64 {
		if p > b {
			return p - b
		}
		return 0
	}
	return memSample{d(w.peak.HeapInuse, w.base.HeapInuse), d(w.peak.Sys, w.base.Sys), d(w.peak.RSS, w.base.RSS)}
}

// ---------------------------------------------------------------------------------------------
// file descriptors

// countFDs counts this process's open fds, and among them pipes (splice's pool).
func countFDs(t testing.TB) (total, pipes int) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			pipes++
		}
	}
	return len(ents), pipes
}

// ---------------------------------------------------------------------------------------------
// WebSocket wire helpers (RFC 6455), for byte-exact checks gorilla would hide

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsKey() string {
	var k [16]byte
	for i := range k {
		k[i] = byte(rand.Uint32())
	}
	return base64.StdEncoding.EncodeToString(k[:])
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// upgradeRequest is a client handshake; extra lines (each ending in \r\n) are appended to the head.
func upgradeRequest(host, path, key, extra string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

func response101(key string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		wsAccept(key) + "\r\n\r\n"
}

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// appendFrame encodes one frame; clients must mask (masked=true), servers must not.
func appendFrame(dst []byte, fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	dst = append(dst, b0)
	var mbit byte
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, mbit|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, mbit|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, mbit|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if !masked {
		return append(dst, payload...)
	}
	key := [4]byte{byte(rand.Uint32()), 0x5a, byte(rand.Uint32()), 0xa5}
	dst = append(dst, key[:]...)
	for i, c := range payload {
		dst = append(dst, c^key[i&3])
	}
	return dst
}

type frame struct {
	fin     bool
	op      byte
	masked  bool
	payload []byte
}

func readFrame(r *bufio.Reader) (frame, error) {
	var f frame
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return f, err
	}
	f.fin, f.op, f.masked = h[0]&0x80 != 0, h[0]&0x0F, h[1]&0x80 != 0
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	if n > 64<<20 {
		return f, fmt.Errorf("frame of %d bytes", n)
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return f, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return f, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= key[i&3]
		}
	}
	return f, nil
}

// ---------------------------------------------------------------------------------------------
// raw backends (for answers net/http and gorilla would never give: a frame glued to the 101, a
// delayed 101 with client bytes already waiting, a 101 with a wrong Accept, ...)

type rawPeer struct {
	Conn *net.TCPConn
	R    *bufio.Reader // holds whatever arrived behind the request head
	Req  *http.Request
	Done <-chan struct{} // closed when the test ends
}

type rawBackend struct {
	Addr     string
	Accepted atomic.Int64
	ln       net.Listener
	wg       sync.WaitGroup
	done     chan struct{}
}

// newRawBackend runs serve for every accepted conn after reading its request head.
func newRawBackend(t testing.TB, serve func(p *rawPeer)) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("raw backend listen: %v", err)
	}
	b := &rawBackend{Addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	var mu sync.Mutex
	var conns []net.Conn
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.Accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(90 * time.Second))
				br := bufio.NewReaderSize(c, 64<<10)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				serve(&rawPeer{Conn: c.(*net.TCPConn), R: br, Req: req, Done: b.done})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		close(b.done)
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		done := make(chan struct{})
		go func() { b.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("raw backend %s: goroutines still running 10s after cleanup", b.Addr)
		}
	})
	return b
}

// rawTunnel opens a verified WebSocket upgrade through wsgate with raw sockets on both ends and
// returns the two tunnel ends. Bytes after the upgrade are opaque to wsgate, so tests may send any
// TCP bytes (bulk streams, half-close) without framing them.
type tunnelEnds struct {
	C  *rawConn // client side
	CT *net.TCPConn
	B  *rawPeer // backend side
}

// rawTunnelBackend answers every upgrade with a valid 101 and hands the conn to the test, keeping it
// open until the test ends (or the test closes it).
func rawTunnelBackend(t testing.TB) (*rawBackend, chan *rawPeer) {
	peers := make(chan *rawPeer, 64)
	be := newRawBackend(t, func(p *rawPeer) {
		key := p.Req.Header.Get("Sec-WebSocket-Key")
		if _, err := io.WriteString(p.Conn, response101(key)); err != nil {
			return
		}
		peers <- p
		<-p.Done
	})
	return be, peers
}

func openRawTunnel(t testing.TB, proxyAddr string, peers chan *rawPeer) tunnelEnds {
	t.Helper()
	c := dialRaw(t, proxyAddr)
	key := wsKey()
	c.send(t, upgradeRequest(proxyAddr, "/tunnel", key, ""))
	resp := c.response(t, "GET")
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade through wsgate: status %d, want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		t.Fatalf("upgrade through wsgate: Sec-WebSocket-Accept %q, want %q", got, wsAccept(key))
	}
	var p *rawPeer
	select {
	case p = <-peers:
	case <-time.After(5 * time.Second):
		t.Fatalf("backend never saw the upgrade")
	}
	return tunnelEnds{C: c, CT: c.Conn.(*net.TCPConn), B: p}
}

// describeSockets summarises this process's TCP socket fds by state and local/remote port, so a
// leak report says which side (client, wsgate, backend) still holds what.
func describeSockets(t testing.TB, ports map[string]string) string {
	inodes := map[string]bool{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	states := map[string]string{"01": "ESTABLISHED", "02": "SYN_SENT", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
		"06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
	counts := map[string]int{}
	b, _ := os.ReadFile("/proc/self/net/tcp")
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 10 || !inodes[f[9]] {
			continue
		}
		port := func(a string) string {
			i := strings.LastIndexByte(a, ':')
			p, _ := strconv.ParseUint(a[i+1:], 16, 32)
			ps := strconv.FormatUint(p, 10)
			if name, ok := ports[ps]; ok {
				return name
			}
			return "ephemeral"
		}
		counts[fmt.Sprintf("%s local=%s remote=%s", states[f[3]], port(f[1]), port(f[2]))]++
	}
	var out []string
	for k, v := range counts {
		out = append(out, fmt.Sprintf("%d x %s", v, k))
	}
	return strings.Join(out, "; ")
}

type hasher struct{ h hash.Hash }

func newHasher() *hasher         { return &hasher{sha256.New()} }
func (h *hasher) Write(p []byte) { h.h.Write(p) }
func (h *hasher) sum() string    { return fmt.Sprintf("%x", h.h.Sum(nil)) }
