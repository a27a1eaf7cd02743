package loop_test

// Issue 9: WebSocket over TLS (wss) and bodies offloaded from TLS connections: after the 101 a TLS
// tunnel is decrypt-and-forward in the tunnel plane, with the same backpressure, half-close and
// timeout rules as a plain one.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/tlsrecord"
)

func wssDial(t testing.TB, addr, path string, cfg *tls.Config) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: cfg}
	c, resp, err := d.Dial("wss://localhost:"+portOf(addr)+path, nil)
	if err != nil {
		st := 0
		if resp != nil {
			st = resp.StatusCode
		}
		t.Fatalf("wss dial through wsgate %s%s: %v (status %d)", addr, path, err, st)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadLimit(16 << 20)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	return c
}

// TestTLSWebSocketEcho: gorilla/websocket over wss through wsgate, TLS 1.3 and 1.2, messages from
// 1 B to 4 MiB both ways; the upgrade's 101 is sealed, the tunnel lives in the plane.
func TestTLSWebSocketEcho(t *testing.T) {
	wb := newWSBackend(t)
	srv, addr, _ := startTLSProxy(t, wb.Addr)
	for _, v := range []struct {
		name string
		mod  func(*tls.Config)
	}{{"tls13", tls13}, {"tls12", tls12}} {
		t.Run(v.name, func(t *testing.T) {
			c := wssDial(t, addr, "/echo", clientTLS(t, v.mod))
			for i, n := range []int{1, 125, 126, 16 << 10, 65537, 4 << 20} {
				mt := websocket.BinaryMessage
				msg := genBytes(uint64(i), n)
				if i%2 == 0 {
					mt, msg = websocket.TextMessage, textBytes(uint64(i), n)
				}
				if err := c.WriteMessage(mt, msg); err != nil {
					t.Fatalf("write %d bytes: %v", n, err)
				}
				gt, got, err := c.ReadMessage()
				if err != nil || gt != mt || !bytes.Equal(got, msg) {
					t.Fatalf("echo of %d bytes: type %d/%d, %d bytes back, err %v", n, gt, mt, len(got), err)
				}
			}
			if st := srv.Stats(); st.Tunnels < 1 {
				t.Fatalf("no tunnel in the plane: %+v", st)
			}
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(3*time.Second))
			if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 4001) {
				t.Fatalf("close handshake through the TLS tunnel: %v", err)
			}
		})
	}
	if !waitFor(10*time.Second, func() bool { return srv.Stats().Tunnels == 0 }) {
		t.Fatalf("tunnels left open: %+v", srv.Stats())
	}
}

// TestTLSWebSocketManyConcurrent: several wss tunnels moving data at once on few plane loops.
func TestTLSWebSocketManyConcurrent(t *testing.T) {
	wb := newWSBackend(t)
	_, addr, _ := startTLSProxy(t, wb.Addr)
	const conns = 8
	errs := make(chan error, conns)
	for k := 0; k < conns; k++ {
		go func(k int) {
			d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: clientTLS(t)}
			c, _, err := d.Dial("wss://localhost:"+portOf(addr)+"/echo", nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			for i := 0; i < 20; i++ {
				msg := genBytes(uint64(k*100+i), 1000+i*3000)
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					errs <- err
					return
				}
				_, got, err := c.ReadMessage()
				if err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("conn %d message %d: %d bytes, err %v", k, i, len(got), err)
					return
				}
			}
			errs <- nil
		}(k)
	}
	for k := 0; k < conns; k++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// tlsTunnelPair opens a wss tunnel from a record-level client to a raw backend peer.
func tlsTunnelPair(t *testing.T) (*recordClient, *rawPeer, *loop.Server) {
	t.Helper()
	rb, peers := rawTunnelBackend(t)
	srv, addr, _ := startTLSProxy(t, rb.Addr)
	c := dialRecordClient(t, addr)
	key := wsKey()
	c.send(upgradeRequest("h", "/t", key, ""))
	if !c.readUntil(10*time.Second, func() bool { return bytes.Contains(c.app, []byte("\r\n\r\n")) }) {
		t.Fatalf("no 101: %q err %v", c.app, c.err)
	}
	if !strings.HasPrefix(string(c.app), "HTTP/1.1 101 ") || !strings.Contains(string(c.app), wsAccept(key)) {
		t.Fatalf("upgrade answer %q", c.app)
	}
	c.app = c.app[bytes.Index(c.app, []byte("\r\n\r\n"))+4:]
	var p *rawPeer
	select {
	case p = <-peers:
	case <-time.After(10 * time.Second):
		t.Fatal("backend got no tunnel")
	}
	return c, p, srv
}

// TestTLSTunnelKeyUpdate: the client updates its key mid-tunnel, with and without asking wsgate
// to update too; bytes keep flowing both ways, and when asked wsgate's own KeyUpdate arrives
// before its next data (the client's record layer follows it).
func TestTLSTunnelKeyUpdate(t *testing.T) {
	for _, requested := range []bool{false, true} {
		t.Run(fmt.Sprintf("update_requested=%v", requested), func(t *testing.T) {
			c, p, _ := tlsTunnelPair(t)
			c.send("before")
			expectPeer(t, p, "before")
			ku, err := c.sess.AppendKeyUpdate(nil, requested)
			if err != nil {
				t.Fatal(err)
			}
			c.write(append(ku, c.seal("after")...))
			expectPeer(t, p, "after")
			// wsgate -> client after the update: its KeyUpdate (when asked) comes first.
			p.Conn.Write([]byte("down"))
			if !c.readUntil(10*time.Second, func() bool { return bytes.Contains(c.app, []byte("down")) }) {
				t.Fatalf("no data from the backend after the KeyUpdate: %q err %v", c.app, c.err)
			}
			if got := c.sawEvent(tlsrecord.EventKeyUpdate); got != requested {
				t.Fatalf("wsgate sent a KeyUpdate: %v, want %v (events %v)", got, requested, c.evs)
			}
		})
	}
}

func expectPeer(t *testing.T, p *rawPeer, want string) {
	t.Helper()
	p.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(p.R, got); err != nil || string(got) != want {
		t.Fatalf("backend got %q (%v), want %q", got, err, want)
	}
}

// TestTLSTunnelCloseNotify: close_notify each way is the tunnel's half-close. The client's
// close_notify becomes the backend's EOF (data behind it never reaches the backend); the backend's
// EOF becomes our close_notify, and the other direction keeps flowing until it ends too.
func TestTLSTunnelCloseNotify(t *testing.T) {
	t.Run("client-first", func(t *testing.T) {
		c, p, srv := tlsTunnelPair(t)
		last := c.seal("last")
		bye, _ := c.sess.AppendCloseNotify(nil)
		c.write(append(append(last, bye...), []byte("ignored after close_notify")...))
		expectPeer(t, p, "last")
		p.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := p.R.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("backend read after the client's close_notify: %d, %v (want EOF)", n, err)
		}
		// The other direction still flows.
		p.Conn.Write([]byte("still here"))
		if !c.readUntil(10*time.Second, func() bool { return bytes.Contains(c.app, []byte("still here")) }) {
			t.Fatalf("backend->client after the client's half-close: %q err %v", c.app, c.err)
		}
		p.Conn.CloseWrite()
		if !c.readUntil(10*time.Second, func() bool { return c.eof }) || !c.sawEvent(tlsrecord.EventCloseNotify) {
			t.Fatalf("the end: eof %v events %v err %v", c.eof, c.evs, c.err)
		}
		if !waitFor(10*time.Second, func() bool { return srv.Stats().Tunnels == 0 }) {
			t.Fatalf("tunnel left open: %+v", srv.Stats())
		}
	})
	t.Run("backend-first", func(t *testing.T) {
		c, p, _ := tlsTunnelPair(t)
		p.Conn.Write([]byte("from backend"))
		p.Conn.CloseWrite()
		if !c.readUntil(10*time.Second, func() bool { return c.sawEvent(tlsrecord.EventCloseNotify) }) {
			t.Fatalf("no close_notify after the backend's EOF: %q events %v err %v", c.app, c.evs, c.err)
		}
		if string(c.app) != "from backend" {
			t.Fatalf("client got %q", c.app)
		}
		c.send("late")
		expectPeer(t, p, "late")
	})
}

// TestTLSTunnelBadRecord: a tampered record mid-tunnel gets bad_record_mac and both sides are
// closed; nothing of it reaches the backend.
func TestTLSTunnelBadRecord(t *testing.T) {
	c, p, srv := tlsTunnelPair(t)
	c.send("good")
	expectPeer(t, p, "good")
	rec := c.seal("evil bytes")
	rec[len(rec)-3] ^= 0x80
	c.write(rec)
	c.readUntil(10*time.Second, func() bool { return c.eof })
	var pe *tlsrecord.PeerAlertError
	if !errors.As(c.err, &pe) || pe.Alert != tlsrecord.AlertBadRecordMAC || !c.eof {
		t.Fatalf("client: err %v eof %v, want bad_record_mac then close", c.err, c.eof)
	}
	p.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(p.R); len(b) != 0 {
		t.Fatalf("backend got %q after the bad record (err %v)", b, err)
	}
	if !waitFor(10*time.Second, func() bool { return srv.Stats().Tunnels == 0 }) {
		t.Fatalf("tunnel left open: %+v", srv.Stats())
	}
}

// TestTLSOffloadSlowDownload: a body larger than the high-water mark toward a TLS client that
// reads slowly moves to the tunnel plane (sealed there) and arrives whole; the connection serves
// the next request afterwards.
func TestTLSOffloadSlowDownload(t *testing.T) {
	b := newBackend(t, http.HandlerFunc(dataHandler))
	srv, addr := startProxy(t, b.Addr, withTLS(newTLSServer(t)), func(c *loop.Config) { c.BodyHighWater = 64 << 10 })
	for _, v := range []struct {
		name string
		mod  func(*tls.Config)
	}{{"tls13", tls13}, {"tls12", tls12}} {
		t.Run(v.name, func(t *testing.T) {
			before := srv.Stats().Offloads
			c := dialTLS(t, addr, clientTLS(t, v.mod))
			n := int64(8 << 20)
			for _, mode := range []string{"cl", "chunked"} {
				c.send(t, fmt.Sprintf("GET /d?n=%d&seed=3&mode=%s HTTP/1.1\r\nHost: h\r\n\r\n", n, mode))
				time.Sleep(300 * time.Millisecond) // let the queue pass the high-water mark
				resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
				if err != nil {
					t.Fatal(err)
				}
				sum, got, err := hashReader(slowReader{resp.Body})
				if err != nil || got != n || sum != genSum(3, n) {
					t.Fatalf("%s: %d bytes, err %v, sum ok %v", mode, got, err, sum == genSum(3, n))
				}
			}
			if srv.Stats().Offloads == before {
				t.Fatalf("no body was offloaded (high water 64 KiB, 8 MiB bodies)")
			}
			c.send(t, "GET /d?n=5 HTTP/1.1\r\nHost: h\r\n\r\n")
			if resp, body := c.fullResponse(t, "GET"); resp.StatusCode != 200 || len(body) != 5 {
				t.Fatalf("after the offload: %d %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}

// slowReader reads in small steps with pauses at first, so the queue toward the client grows.
type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) {
	if len(p) > 32<<10 {
		p = p[:32<<10]
	}
	return s.r.Read(p)
}

// TestTLSOffloadFastUpload: a large upload from a TLS client to a backend that reads slowly moves to
// the tunnel plane (opened there); the backend gets every byte; a pipelined request behind the
// body is answered after it.
func TestTLSOffloadFastUpload(t *testing.T) {
	b := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		dataHandler(w, r)
	}))
	srv, addr := startProxy(t, b.Addr, withTLS(newTLSServer(t)), func(c *loop.Config) { c.BodyHighWater = 64 << 10 })
	for _, v := range []struct {
		name string
		mod  func(*tls.Config)
	}{{"tls13", tls13}, {"tls12", tls12}} {
		t.Run(v.name, func(t *testing.T) {
			before := srv.Stats().Offloads
			c := dialTLS(t, addr, clientTLS(t, v.mod))
			n := 8 << 20
			up := genBytes(9, n)
			go func() {
				io.WriteString(c.Conn, fmt.Sprintf("POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", n))
				c.Conn.Write(up)
				io.WriteString(c.Conn, "GET /d?n=3 HTTP/1.1\r\nHost: h\r\n\r\n")
			}()
			resp, _ := c.fullResponse(t, "POST")
			if resp.StatusCode != 200 || resp.Header.Get("X-Req-Sum") != sumOf(up) || resp.Header.Get("X-Req-Len") != fmt.Sprint(n) {
				t.Fatalf("upload: %d len %s sum ok %v", resp.StatusCode, resp.Header.Get("X-Req-Len"), resp.Header.Get("X-Req-Sum") == sumOf(up))
			}
			if resp, body := c.fullResponse(t, "GET"); resp.StatusCode != 200 || len(body) != 3 {
				t.Fatalf("pipelined request after the upload: %d %d bytes", resp.StatusCode, len(body))
			}
			if srv.Stats().Offloads == before {
				t.Fatalf("the upload was not offloaded")
			}
		})
	}
}

// TestTLSUpgradeRefusedSealed: the tunnel plane's answers toward a TLS client are sealed: a
// backend that refuses the upgrade (403 with a body) is relayed as records, then close_notify and
// the close; the frames the client sent behind its upgrade request never reach the backend. A
// backend that cannot be reached gets the plane's own 502, sealed too.
func TestTLSUpgradeRefusedSealed(t *testing.T) {
	var got atomic.Int64
	be := newRawBackend(t, func(p *rawPeer) {
		io.WriteString(p.Conn, "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden")
		p.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := io.Copy(io.Discard, p.R)
		got.Add(n)
	})
	_, addr, _ := startTLSProxy(t, be.Addr)
	c := dialRecordClient(t, addr)
	c.write(append(c.seal(upgradeRequest("h", "/ws", wsKey(), "")), c.seal("FRAMES BEHIND THE REQUEST")...))
	if !c.readUntil(10*time.Second, func() bool { return c.eof }) {
		t.Fatalf("no close after the refusal: %q events %v err %v", c.app, c.evs, c.err)
	}
	rs := c.responses("GET")
	if len(rs) != 1 || rs[0].StatusCode != 403 || !rs[0].Close {
		t.Fatalf("refusal as the TLS client read it: %q", c.app)
	}
	if body, _ := io.ReadAll(rs[0].Body); string(body) != "forbidden" {
		t.Fatalf("refusal body %q", body)
	}
	if !c.sawEvent(tlsrecord.EventCloseNotify) || c.err != nil {
		t.Fatalf("no close_notify before the close: events %v err %v", c.evs, c.err)
	}
	time.Sleep(100 * time.Millisecond)
	if got.Load() != 0 {
		t.Fatalf("the backend got %d bytes behind the refused upgrade", got.Load())
	}

	t.Run("backend-down", func(t *testing.T) {
		_, addr, _ := startTLSProxy(t, freeAddr(t)) // nothing listens there
		c := dialRecordClient(t, addr)
		c.send(upgradeRequest("h", "/ws", wsKey(), ""))
		c.readUntil(10*time.Second, func() bool { return c.eof })
		if rs := c.responses("GET"); len(rs) != 1 || rs[0].StatusCode != 502 || !c.sawEvent(tlsrecord.EventCloseNotify) {
			t.Fatalf("plane's own answer over TLS: %q events %v err %v", c.app, c.evs, c.err)
		}
	})
}

// TestUpgradeBehindQueuedAnswer: an upgrade pipelined behind a GET whose answer is not yet read by
// the client: that answer reaches the client whole and before the 101 (what the HTTP plane still
// had queued goes to the plane as Upgrade.ToClient; splice's TestUpgradeToClientFirst forces that
// case), over plain HTTP and over TLS, where the order is also the records' sequence.
func TestUpgradeBehindQueuedAnswer(t *testing.T) {
	const n = 256 << 10
	rb := newRawBackend(t, func(p *rawPeer) {
		if p.Req.URL.Path == "/big" {
			io.WriteString(p.Conn, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", n))
			p.Conn.Write(genBytes(5, n))
			req, err := http.ReadRequest(p.R)
			if err != nil {
				return
			}
			p.Req = req
		}
		io.WriteString(p.Conn, response101(p.Req.Header.Get("Sec-WebSocket-Key")))
		io.Copy(p.Conn, p.R) // echo
	})
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			var addr string
			if useTLS {
				_, addr, _ = startTLSProxy(t, rb.Addr)
			} else {
				_, addr = startProxy(t, rb.Addr)
			}
			key := wsKey()
			reqs := "GET /big HTTP/1.1\r\nHost: h\r\n\r\n" + upgradeRequest("h", "/ws", key, "")
			var rd io.Reader
			var wr io.Writer
			if useTLS {
				c := dialTLS(t, addr, clientTLS(t))
				c.NetConn().(*net.TCPConn).SetReadBuffer(8 << 10)
				wr, rd = c.Conn, c.br
			} else {
				c := dialRaw(t, addr)
				c.Conn.(*net.TCPConn).SetReadBuffer(8 << 10)
				wr, rd = c.Conn, c.br
			}
			io.WriteString(wr, reqs)
			time.Sleep(300 * time.Millisecond) // the answer queues: the client reads nothing yet
			br := bufio.NewReader(rd)
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			sum, got, err := hashReader(resp.Body)
			if err != nil || got != n || sum != genSum(5, n) {
				t.Fatalf("the answer before the upgrade: %d bytes, err %v", got, err)
			}
			resp, err = http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
				t.Fatalf("the 101 behind it: %v %v", resp, err)
			}
			io.WriteString(wr, "ping")
			echo := make([]byte, 4)
			if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "ping" {
				t.Fatalf("through the tunnel: %q %v", echo, err)
			}
		})
	}
}
