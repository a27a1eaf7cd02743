package loop_test

// Issue 8 (edge hardening), the HTTP plane's state machine: each test names the class it covers
// and drives it through real loopback sockets.

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wsgate/wsgate/loop"
)

func oneLoop(c *loop.Config) { c.Loops = 1 }

// keepAliveBackend serves every request on a conn in turn: answer(req, conn) writes the answer.
func keepAliveBackend(t testing.TB, answer func(req *http.Request, p *rawPeer)) *rawBackend {
	return newRawBackend(t, func(p *rawPeer) {
		req := p.Req
		for i := 0; i < 100; i++ {
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
	// Bytes after a complete answer (here a whole second answer nobody asked for): the conn is
	// closed, never pooled.
	t.Run("bytes-after-response", func(t *testing.T) {
		be := keepAliveBackend(t, func(req *http.Request, p *rawPeer) {
			if req.URL.Path == "/first" {
				io.WriteString(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				io.WriteString(p.Conn, evil)
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
