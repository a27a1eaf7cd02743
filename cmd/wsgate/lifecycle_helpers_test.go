package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The backends and clients of the lifecycle tests (drain, reload, systemd): real sockets, the
// real binary.

// lcServer is a backend named name: "/" answers its name, /slow?ms=N answers its name after N
// ms, /download?size=N&step=MS sends N bytes of pattern(size) in 64 KiB pieces every step,
// /upload answers the SHA-256 of the body, and a WebSocket upgrade gets a 101 and then an echo
// of every byte (wsgate does not look past the 101, so tests need no framing).
type lcServer struct {
	name     string
	addr     string
	requests atomic.Int64
	mu       sync.Mutex
	hijacked []net.Conn
}

func newLCServer(t *testing.T, name string) *lcServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lcServer{name: name, addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(s.serve)}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		s.mu.Lock()
		for _, c := range s.hijacked {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func (s *lcServer) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		c, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.hijacked = append(s.hijacked, c)
		s.mu.Unlock()
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
		bw.Flush()
		go func() {
			defer c.Close()
			io.Copy(c, bw.Reader) // echo: what the client sent after the request, then the rest
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}()
		return
	}
	q := r.URL.Query()
	switch r.URL.Path {
	case "/slow":
		ms, _ := strconv.Atoi(q.Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		io.WriteString(w, s.name)
	case "/download":
		size, _ := strconv.Atoi(q.Get("size"))
		step, _ := strconv.Atoi(q.Get("step"))
		body := pattern(size)
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for off := 0; off < size; off += 64 << 10 {
			if _, err := w.Write(body[off:min(off+64<<10, size)]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(time.Duration(step) * time.Millisecond)
		}
	case "/upload":
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			w.WriteHeader(500)
			return
		}
		fmt.Fprintf(w, "%x", h.Sum(nil))
	default:
		io.WriteString(w, s.name)
	}
}

// pattern is n bytes that differ from one offset to the next.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// tunnel is a client's end of a WebSocket upgraded through wsgate.
type tunnel struct {
	net.Conn
	br *bufio.Reader
}

func openTunnel(t *testing.T, addr string) *tunnel {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial wsgate: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("upgrade through wsgate: %v %v", err, resp)
	}
	c.SetDeadline(time.Time{})
	return &tunnel{Conn: c, br: br}
}

// echo sends msg and expects it back within d.
func (tn *tunnel) echo(msg string, d time.Duration) error {
	tn.SetDeadline(time.Now().Add(d))
	defer tn.SetDeadline(time.Time{})
	if _, err := io.WriteString(tn, msg); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(tn.br, b); err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("echo %q, want %q", b, msg)
	}
	return nil
}

// kaClient is a keep-alive HTTP/1.1 connection to wsgate.
type kaClient struct {
	net.Conn
	br *bufio.Reader
}

func dialKA(t *testing.T, addr string) *kaClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial wsgate: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &kaClient{Conn: c, br: bufio.NewReader(c)}
}

// send writes one GET for target.
func (k *kaClient) send(target string) error {
	k.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := fmt.Fprintf(k, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", target)
	return err
}

// read reads one response: its status, its body and whether it said Connection: close.
func (k *kaClient) read() (int, string, bool, error) {
	k.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, "", false, err
	}
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Close, err
}

func (k *kaClient) get(target string) (int, string, bool, error) {
	if err := k.send(target); err != nil {
		return 0, "", false, err
	}
	return k.read()
}

// expectEOF: the connection ends within d without another byte.
func (k *kaClient) expectEOF(d time.Duration) error {
	k.SetReadDeadline(time.Now().Add(d))
	b, err := k.br.ReadByte()
	if err == nil {
		return fmt.Errorf("byte %q instead of the close", b)
	}
	if err == io.EOF {
		return nil
	}
	return err
}

// load runs GETs against addr until stop is closed: one goroutine on a keep-alive connection
// (reconnecting when wsgate says Connection: close), one with a new connection per request. Every
// answer must be 200 with a known backend name; anything else is counted as failed.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	names      map[string]int
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(addr string, target string, pause time.Duration, valid func(string) bool) *load {
	l := &load{stop: make(chan struct{}), names: map[string]int{}}
	fail := func(err error) {
		l.failed.Add(1)
		l.mu.Lock()
		if len(l.errs) < 10 {
			l.errs = append(l.errs, err.Error())
		}
		l.mu.Unlock()
	}
	record := func(code int, body string, err error) {
		switch {
		case err != nil:
			fail(err)
		case code != 200 || !valid(body):
			fail(fmt.Errorf("status %d body %q", code, body))
		default:
			l.ok.Add(1)
			l.mu.Lock()
			l.names[body]++
			l.mu.Unlock()
		}
	}
	stopped := func() bool {
		select {
		case <-l.stop:
			return true
		case <-time.After(pause):
			return false
		}
	}
	l.wg.Add(2)
	go func() { // keep-alive
		defer l.wg.Done()
		var k *kaClient
		for !stopped() {
			if k == nil {
				c, err := net.DialTimeout("tcp", addr, 3*time.Second)
				if err != nil {
					fail(err)
					continue
				}
				k = &kaClient{Conn: c, br: bufio.NewReader(c)}
			}
			code, body, closing, err := k.get(target)
			record(code, body, err)
			if closing || err != nil {
				k.Close()
				k = nil
			}
		}
		if k != nil {
			k.Close()
		}
	}()
	go func() { // a new connection per request
		defer l.wg.Done()
		for !stopped() {
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				fail(err)
				continue
			}
			k := &kaClient{Conn: c, br: bufio.NewReader(c)}
			code, body, _, err := k.get(target)
			record(code, body, err)
			c.Close()
		}
	}()
	return l
}

func (l *load) finish() (ok, failed int64, errs []string, names map[string]int) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed.Load(), l.errs, l.names
}
