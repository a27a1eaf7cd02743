package loop_test

// Issue 4, "Done means": WebSocket upgrades and the tunnel plane, through real loopback sockets, with
// gorilla/websocket on both ends (raw sockets where the test needs bytes gorilla would never send
// or accept), each run with splice(2) on and with the portable copy path.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/loop"
)

// wsBackend is a gorilla/websocket server:
//
//	/echo       echoes every message with its type
//	/fragout    sends one binary message in several fragments, then echoes
//	/srvping    pings the client, answers "pong:<payload>" when the pong arrives
//	/srvclose   starts the close handshake with 4002 "srv bye"
//
// Close codes it receives are sent on closes.
type wsBackend struct {
	*backend
	closes chan int
}

// noteClose records a close frame's code; never blocks (a handler stuck here would hold its conn and
// look like a leak in wsgate). 1006 is gorilla's code for "TCP closed without a close frame".
func (wb *wsBackend) noteClose(err error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
		select {
		case wb.closes <- ce.Code:
		default:
		}
	}
}

func newWSBackend(t testing.TB) *wsBackend {
	wb := &wsBackend{closes: make(chan int, 16)}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, ReadBufferSize: 4096, WriteBufferSize: 4096}
	small := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, ReadBufferSize: 512, WriteBufferSize: 512}
	echo := func(c *websocket.Conn) {
		for {
			mt, r, err := c.NextReader()
			if err != nil {
				wb.noteClose(err)
				return
			}
			w, err := c.NextWriter(mt)
			if err != nil {
				return
			}
			if _, err := io.Copy(w, r); err != nil {
				return
			}
			if w.Close() != nil {
				return
			}
		}
	}
	wb.backend = newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := &up
		if r.URL.Path == "/fragout" {
			u = &small
		}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadLimit(16 << 20)
		switch r.URL.Path {
		case "/fragout":
			w, _ := c.NextWriter(websocket.BinaryMessage)
			for i := 0; i < 4; i++ {
				w.Write(genBytes(uint64(i), 500))
			}
			if w.Close() != nil {
				return
			}
		case "/srvping":
			c.SetPongHandler(func(p string) error { return c.WriteMessage(websocket.TextMessage, []byte("pong:"+p)) })
			if c.WriteControl(websocket.PingMessage, []byte("s-ping"), time.Now().Add(3*time.Second)) != nil {
				return
			}
		case "/srvclose":
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, "srv bye"), time.Now().Add(3*time.Second))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					wb.noteClose(err)
					return
				}
			}
		}
		echo(c)
	}))
	return wb
}

func wsDial(t testing.TB, addr, path string, bufSize int) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: bufSize, WriteBufferSize: bufSize}
	c, resp, err := d.Dial("ws://"+addr+path, nil)
	if err != nil {
		st := 0
		if resp != nil {
			st = resp.StatusCode
		}
		t.Fatalf("websocket dial through wsgate %s%s: %v (status %d)", addr, path, err, st)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadLimit(16 << 20)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	return c
}

func textBytes(seed uint64, n int) []byte {
	b := genBytes(seed, n)
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return b
}

// TestE2ETunnelEcho: text and binary messages from 1 B to 4 MiB, echoed through the tunnel.
func TestE2ETunnelEcho(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		wb := newWSBackend(t)
		s, addr := startProxy(t, wb.Addr, opt)
		c := wsDial(t, addr, "/echo", 4096)
		if !waitFor(3*time.Second, func() bool { return s.Stats().Tunnels == 1 }) {
			t.Errorf("Stats().Tunnels = %d with one open WebSocket, want 1 (not handed to the tunnel plane?)", s.Stats().Tunnels)
		}
		for _, n := range []int{1, 125, 126, 65535, 65536, 1 << 20, 4 << 20} {
			for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
				msg := genBytes(uint64(n), n)
				if mt == websocket.TextMessage {
					msg = textBytes(uint64(n), n)
				}
				if err := c.WriteMessage(mt, msg); err != nil {
					t.Fatalf("write %d B: %v", n, err)
				}
				gt, got, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("read echo of %d B: %v", n, err)
				}
				if gt != mt || !bytes.Equal(got, msg) {
					t.Fatalf("echo of %d B type %d: got %d B type %d (sha %s, want %s)", n, mt, len(got), gt, sumOf(got), sumOf(msg))
				}
			}
		}
	})
}

// TestE2ETunnelFragmented: fragmented messages both ways, and a ping between fragments.
func TestE2ETunnelFragmented(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		wb := newWSBackend(t)
		_, addr := startProxy(t, wb.Addr, opt)
		t.Run("gorilla-nextwriter", func(t *testing.T) {
			c := wsDial(t, addr, "/echo", 512) // 512 B write buffer: each message leaves as many frames
			w, err := c.NextWriter(websocket.BinaryMessage)
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			for i := 0; i < 10; i++ {
				p := genBytes(uint64(100+i), 1000)
				want = append(want, p...)
				w.Write(p)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.ReadMessage()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("fragmented echo: %d B err %v, want %d B", len(got), err, len(want))
			}
		})
		t.Run("raw-fin0-with-ping", func(t *testing.T) {
			c := dialRaw(t, addr)
			key := wsKey()
			wire := []byte(upgradeRequest(addr, "/echo", key, ""))
			c.send(t, string(wire))
			if resp := c.response(t, "GET"); resp.StatusCode != 101 {
				t.Fatalf("upgrade: %d", resp.StatusCode)
			}
			var f []byte
			f = appendFrame(f, false, opText, []byte("Hel"), true)
			f = appendFrame(f, true, opPing, []byte("mid"), true)
			f = appendFrame(f, false, opCont, []byte("lo, "), true)
			c.send(t, string(f))
			time.Sleep(20 * time.Millisecond) // the last fragment in a separate segment
			c.send(t, string(appendFrame(nil, true, opCont, []byte("world"), true)))
			var pong, text bool
			for i := 0; i < 6 && !(pong && text); i++ {
				fr, err := readFrame(c.br)
				if err != nil {
					t.Fatalf("reading frames: %v", err)
				}
				if fr.masked {
					t.Errorf("server frame arrived masked")
				}
				switch {
				case fr.op == opPong && string(fr.payload) == "mid":
					pong = true
				case fr.op == opText && fr.fin && string(fr.payload) == "Hello, world":
					text = true
				default:
					t.Fatalf("unexpected frame op %x fin %v %q", fr.op, fr.fin, fr.payload)
				}
			}
			if !pong || !text {
				t.Fatalf("pong %v, reassembled echo %v", pong, text)
			}
		})
		t.Run("backend-fragments", func(t *testing.T) {
			c := dialRaw(t, addr)
			c.send(t, upgradeRequest(addr, "/fragout", wsKey(), ""))
			if resp := c.response(t, "GET"); resp.StatusCode != 101 {
				t.Fatalf("upgrade: %d", resp.StatusCode)
			}
			var msg []byte
			frames := 0
			for i := 0; i < 100; i++ {
				fr, err := readFrame(c.br)
				if err != nil {
					t.Fatalf("frame %d: %v", frames, err)
				}
				if (frames == 0) != (fr.op == opBinary) || (frames > 0 && fr.op != opCont) {
					t.Fatalf("frame %d op %x", frames, fr.op)
				}
				frames++
				msg = append(msg, fr.payload...)
				if fr.fin {
					break
				}
			}
			var want []byte
			for i := 0; i < 4; i++ {
				want = append(want, genBytes(uint64(i), 500)...)
			}
			if frames < 2 || !bytes.Equal(msg, want) {
				t.Fatalf("%d frames, %d B (want several frames, %d B)", frames, len(msg), len(want))
			}
		})
	})
}

// TestE2ETunnelPingPong: pings from either side are answered through the tunnel.
func TestE2ETunnelPingPong(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		wb := newWSBackend(t)
		_, addr := startProxy(t, wb.Addr, opt)
		t.Run("client-pings", func(t *testing.T) {
			c := wsDial(t, addr, "/echo", 4096)
			pongs := make(chan string, 1)
			c.SetPongHandler(func(p string) error { pongs <- p; return nil })
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
			if err := c.WriteControl(websocket.PingMessage, []byte("c-ping"), time.Now().Add(3*time.Second)); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-pongs:
				if p != "c-ping" {
					t.Errorf("pong payload %q", p)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no pong within 5s")
			}
		})
		t.Run("backend-pings", func(t *testing.T) {
			c := wsDial(t, addr, "/srvping", 4096) // gorilla's default ping handler answers
			_, msg, err := c.ReadMessage()
			if err != nil || string(msg) != "pong:s-ping" {
				t.Fatalf("backend got no pong: %q %v", msg, err)
			}
		})
	})
}

// TestE2ETunnelCloseHandshake: close started by either side completes, then the TCP conns close.
func TestE2ETunnelCloseHandshake(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		wb := newWSBackend(t)
		_, addr := startProxy(t, wb.Addr, opt)
		expectEOF := func(t *testing.T, c *websocket.Conn) {
			nc := c.NetConn()
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, nc); err != nil && !isReset(err) {
				t.Errorf("TCP conn not closed after the close handshake: %v", err)
			}
		}
		t.Run("client-starts", func(t *testing.T) {
			c := wsDial(t, addr, "/echo", 4096)
			if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye")); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4001 {
				t.Fatalf("client: %v, want the backend's close 4001", err)
			}
			select {
			case code := <-wb.closes:
				if code != 4001 {
					t.Errorf("backend got close %d, want 4001", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("backend never saw the close frame")
			}
			expectEOF(t, c)
		})
		t.Run("backend-starts", func(t *testing.T) {
			c := wsDial(t, addr, "/srvclose", 4096)
			_, _, err := c.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4002 || ce.Text != "srv bye" {
				t.Fatalf("client: %v, want close 4002 \"srv bye\"", err)
			}
			select {
			case code := <-wb.closes:
				if code != 4002 {
					t.Errorf("backend got close %d back, want 4002", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("backend never got the client's close reply")
			}
			expectEOF(t, c)
		})
	})
}

// TestE2ETunnelFrameBehind101: the backend writes 101 and a frame in one write; the frame must
// reach the client (it sat in gnet's buffer at the hand-off).
func TestE2ETunnelFrameBehind101(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		got := make(chan string, 1)
		be := newRawBackend(t, func(p *rawPeer) {
			key := p.Req.Header.Get("Sec-WebSocket-Key")
			wire := append([]byte(response101(key)), appendFrame(nil, true, opText, []byte("early"), false)...)
			if _, err := p.Conn.Write(wire); err != nil {
				return
			}
			fr, err := readFrame(p.R)
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			got <- string(fr.payload)
			p.Conn.Write(appendFrame(nil, true, opText, []byte("done"), false))
			<-p.Done
		})
		_, addr := startProxy(t, be.Addr, opt)
		c := wsDial(t, addr, "/x", 4096)
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "early" {
			t.Fatalf("frame glued to the 101: %q %v, want \"early\"", msg, err)
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte("after")); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-got:
			if s != "after" {
				t.Fatalf("backend got %q, want \"after\"", s)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("backend got nothing")
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "done" {
			t.Fatalf("%q %v", msg, err)
		}
	})
}

// TestE2ETunnelFrameBefore101: the client writes its handshake and a frame in one write while the
// backend delays the 101; the frame must arrive after the switch, once, in order.
func TestE2ETunnelFrameBefore101(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		got := make(chan string, 2)
		be := newRawBackend(t, func(p *rawPeer) {
			time.Sleep(200 * time.Millisecond)
			if _, err := io.WriteString(p.Conn, response101(p.Req.Header.Get("Sec-WebSocket-Key"))); err != nil {
				return
			}
			for i := 0; i < 2; i++ {
				fr, err := readFrame(p.R)
				if err != nil {
					got <- "error: " + err.Error()
					return
				}
				got <- string(fr.payload)
				p.Conn.Write(appendFrame(nil, true, opText, append([]byte("seen:"), fr.payload...), false))
			}
			<-p.Done
		})
		_, addr := startProxy(t, be.Addr, opt)
		c := dialRaw(t, addr)
		key := wsKey()
		wire := append([]byte(upgradeRequest(addr, "/x", key, "")), appendFrame(nil, true, opText, []byte("before"), true)...)
		c.send(t, string(wire))
		resp := c.response(t, "GET")
		if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
			t.Fatalf("upgrade: %d accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
		}
		c.send(t, string(appendFrame(nil, true, opText, []byte("second"), true)))
		for _, want := range []string{"before", "second"} {
			select {
			case s := <-got:
				if s != want {
					t.Fatalf("backend got %q, want %q", s, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("backend never got %q", want)
			}
			fr, err := readFrame(c.br)
			if err != nil || string(fr.payload) != "seen:"+want {
				t.Fatalf("client: %q %v", fr.payload, err)
			}
		}
	})
}

// TestE2ETunnelBulk: 256 MiB each way at once (64 MiB under -race/-short), SHA-256 compared. After
// a verified upgrade the tunnel carries any bytes, so raw TCP streams are fine here.
func TestE2ETunnelBulk(t *testing.T) {
	n := pick(64<<20, 256<<20, 256<<20)
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		be, peers := rawTunnelBackend(t)
		_, pipes0 := countFDs(t)
		_, addr := startProxy(t, be.Addr, opt)
		e := openRawTunnel(t, addr, peers)
		e.CT.SetDeadline(time.Now().Add(3 * time.Minute))
		e.B.Conn.SetDeadline(time.Now().Add(3 * time.Minute))
		start := time.Now()
		type result struct {
			sum string
			n   int64
			err error
		}
		c2b, b2c := make(chan result, 1), make(chan result, 1)
		werr := make(chan error, 2)
		go func() { _, err := io.CopyBuffer(e.CT, genN(21, n), make([]byte, 64<<10)); werr <- err }()
		go func() { _, err := io.CopyBuffer(e.B.Conn, genN(22, n), make([]byte, 64<<10)); werr <- err }()
		go func() { s, k, err := hashReader(io.LimitReader(e.B.R, n)); c2b <- result{s, k, err} }()
		go func() { s, k, err := hashReader(io.LimitReader(e.C.br, n)); b2c <- result{s, k, err} }()
		// Pipe fds in flight tell whether bytes really went through splice(2): the copy path
		// must borrow none, the splice path must borrow some while the transfer runs.
		stopSampling := make(chan struct{})
		maxPipes := make(chan int, 1)
		go func() {
			m := 0
			for {
				select {
				case <-stopSampling:
					maxPipes <- m
					return
				case <-time.After(20 * time.Millisecond):
					_, p := countFDs(t)
					m = max(m, p)
				}
			}
		}()
		for i := 0; i < 2; i++ {
			if err := <-werr; err != nil {
				t.Fatalf("bulk write: %v", err)
			}
		}
		r1, r2 := <-c2b, <-b2c
		d := time.Since(start)
		close(stopSampling)
		peak := <-maxPipes
		t.Logf("pipe fds: %d before wsgate started, %d at most during the transfer", pipes0, peak)
		if splice := strings.HasSuffix(t.Name(), "/splice"); splice && peak <= pipes0 {
			t.Errorf("splice mode moved %d MiB without borrowing a pipe: not spliced", n>>20)
		} else if !splice && peak > pipes0 {
			t.Errorf("copy mode (Splice=false) borrowed %d pipe fds", peak-pipes0)
		}
		if r1.err != nil || r1.n != n || r1.sum != genSum(21, n) {
			t.Errorf("client->backend: %d of %d B, err %v, sha ok %v", r1.n, n, r1.err, r1.sum == genSum(21, n))
		}
		if r2.err != nil || r2.n != n || r2.sum != genSum(22, n) {
			t.Errorf("backend->client: %d of %d B, err %v, sha ok %v", r2.n, n, r2.err, r2.sum == genSum(22, n))
		}
		t.Logf("%d MiB each way in %v (%.0f MB/s total)", n>>20, d.Round(time.Millisecond), float64(2*n)/1e6/d.Seconds())
	})
}

// TestE2ETunnelHalfClose: FIN one way; the other way keeps flowing until it ends too.
func TestE2ETunnelHalfClose(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		be, peers := rawTunnelBackend(t)
		_, addr := startProxy(t, be.Addr, opt)
		first, late := genBytes(31, 64<<10), genBytes(32, 1<<20)
		// a writes first then shuts down its write side; b reads to EOF, then b answers late and closes.
		run := func(t *testing.T, aw *net.TCPConn, ar io.Reader, bw *net.TCPConn, br io.Reader) {
			aw.SetDeadline(time.Now().Add(20 * time.Second))
			bw.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := aw.Write(first); err != nil {
				t.Fatal(err)
			}
			if err := aw.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(br)
			if err != nil || !bytes.Equal(got, first) {
				t.Fatalf("before EOF: %d B (want %d), err %v", len(got), len(first), err)
			}
			if _, err := bw.Write(late); err != nil {
				t.Fatalf("writing after the peer's FIN: %v", err)
			}
			bw.CloseWrite()
			got, err = io.ReadAll(ar)
			if err != nil || !bytes.Equal(got, late) {
				t.Fatalf("after our FIN: got %d B (want %d), err %v", len(got), len(late), err)
			}
		}
		t.Run("client-fin-first", func(t *testing.T) {
			e := openRawTunnel(t, addr, peers)
			run(t, e.CT, e.C.br, e.B.Conn, e.B.R)
		})
		t.Run("backend-fin-first", func(t *testing.T) {
			e := openRawTunnel(t, addr, peers)
			run(t, e.B.Conn, e.B.R, e.CT, e.C.br)
		})
	})
}

// TestE2ETunnelReset: an RST on one side closes the other promptly.
func TestE2ETunnelReset(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		be, peers := rawTunnelBackend(t)
		s, addr := startProxy(t, be.Addr, opt)
		run := func(t *testing.T, reset *net.TCPConn, resetR io.Reader, other *net.TCPConn, otherR io.Reader) {
			// prove the tunnel works, then reset mid-stream
			if _, err := other.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			reset.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(resetR, buf); err != nil {
				t.Fatal(err)
			}
			go func() { // keep bytes in flight toward the side that resets
				for i := 0; i < 100; i++ {
					if _, err := other.Write(make([]byte, 32<<10)); err != nil {
						return
					}
				}
			}()
			time.Sleep(20 * time.Millisecond)
			reset.SetLinger(0)
			reset.Close()
			start := time.Now()
			other.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := io.Copy(io.Discard, otherR)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("other side still open 3s after the reset")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("other side closed %v after the reset, want promptly", d)
			}
		}
		t.Run("backend-resets", func(t *testing.T) {
			e := openRawTunnel(t, addr, peers)
			run(t, e.B.Conn, e.B.R, e.CT, e.C.br)
		})
		t.Run("client-resets", func(t *testing.T) {
			e := openRawTunnel(t, addr, peers)
			run(t, e.CT, e.C.br, e.B.Conn, e.B.R)
		})
		if !waitFor(3*time.Second, func() bool { return s.Stats().Tunnels == 0 }) {
			t.Errorf("Stats().Tunnels = %d after both tunnels were reset", s.Stats().Tunnels)
		}
	})
}

// TestE2ETunnelRefusedUpgrade: a backend answering 403, 426 or 200 to an upgrade is never tunnelled;
// a request smuggled behind the handshake must never reach it, and the client gets the answer then
// a close (the websocket-smuggle scenarios, CVE-2019-17567).
func TestE2ETunnelRefusedUpgrade(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		var status atomic.Int64
		be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/admin" {
				io.WriteString(w, "SECRET admin page")
				return
			}
			st := int(status.Load())
			if st == 426 {
				w.Header().Set("Sec-WebSocket-Version", "13")
				w.Header().Set("Upgrade", "websocket")
				w.Header().Set("Connection", "Upgrade")
			}
			w.WriteHeader(st)
			io.WriteString(w, "refused")
		}))
		_, addr := startProxy(t, be.Addr, opt)
		smuggled := "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
		for _, st := range []int{403, 426, 200} {
			for _, mode := range []string{"same-write", "after-answer"} {
				t.Run(fmt.Sprintf("%d/%s", st, mode), func(t *testing.T) {
					status.Store(int64(st))
					c := dialRaw(t, addr)
					hs := upgradeRequest(addr, "/ws", wsKey(), "")
					if mode == "same-write" {
						c.send(t, hs+smuggled)
					} else {
						c.send(t, hs)
					}
					resp, body := c.fullResponse(t, "GET")
					if resp.StatusCode != st || string(body) != "refused" {
						t.Fatalf("status %d body %q, want %d \"refused\"", resp.StatusCode, body, st)
					}
					if !resp.Close {
						t.Errorf("refused upgrade answered without Connection: close")
					}
					if mode == "after-answer" {
						c.Write([]byte(smuggled)) // may fail: the conn is closing
					}
					if rest := c.expectClosed(t, 3*time.Second); len(rest) > 0 {
						t.Errorf("bytes after the refusal: %q", trunc(rest))
					}
				})
			}
		}
		t.Run("bad-version", func(t *testing.T) {
			status.Store(426)
			c := dialRaw(t, addr)
			c.send(t, strings.Replace(upgradeRequest(addr, "/ws", wsKey(), ""), "Version: 13", "Version: 1337", 1)+smuggled)
			resp, _ := c.fullResponse(t, "GET")
			if resp.StatusCode != 426 {
				t.Errorf("Sec-WebSocket-Version 1337: status %d, want 426", resp.StatusCode)
			}
			c.expectClosed(t, 3*time.Second)
		})
		time.Sleep(100 * time.Millisecond)
		if n := be.count("/admin"); n != 0 {
			t.Errorf("the smuggled GET /admin reached the backend %d times", n)
		}
	})
}

// TestE2ETunnelBad101: a 101 whose Accept does not match (or is missing) becomes 502, and nothing
// of either side crosses.
func TestE2ETunnelBad101(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		for _, tc := range []struct{ name, accept string }{
			{"wrong-accept", "Sec-WebSocket-Accept: " + wsAccept("not the client's key") + "\r\n"},
			{"no-accept", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				leaked := make(chan int, 1)
				be := newRawBackend(t, func(p *rawPeer) {
					io.WriteString(p.Conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+tc.accept+"\r\n")
					p.Conn.Write(appendFrame(nil, true, opText, []byte("backend frame"), false))
					p.Conn.SetReadDeadline(time.Now().Add(time.Second))
					b, _ := io.ReadAll(p.R)
					leaked <- len(b)
				})
				_, addr := startProxy(t, be.Addr, opt)
				c := dialRaw(t, addr)
				c.send(t, upgradeRequest(addr, "/ws", wsKey(), "")+"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, _ := c.fullResponse(t, "GET")
				if resp.StatusCode != 502 {
					t.Fatalf("status %d, want 502", resp.StatusCode)
				}
				if rest := c.expectClosed(t, 3*time.Second); len(rest) > 0 {
					t.Errorf("backend bytes reached the client after the 502: %q", trunc(rest))
				}
				select {
				case n := <-leaked:
					if n != 0 {
						t.Errorf("%d client bytes reached the backend after its bad 101", n)
					}
				case <-time.After(5 * time.Second):
					t.Error("backend still reading")
				}
			})
		}
	})
}

// TestE2ETunnelConnectionTokens: the upgrade is recognised in any case, list position and across
// repeated Connection lines.
func TestE2ETunnelConnectionTokens(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		wb := newWSBackend(t)
		_, addr := startProxy(t, wb.Addr, opt)
		for _, conn := range []string{
			"Connection: keep-alive, Upgrade",
			"Connection: Upgrade, keep-alive",
			"Connection: keep-alive\r\nConnection: upgrade",
			"Connection: UPGRADE",
		} {
			t.Run(conn, func(t *testing.T) {
				c := dialRaw(t, addr)
				key := wsKey()
				req := strings.Replace(upgradeRequest(addr, "/echo", key, ""), "Connection: Upgrade", conn, 1)
				req = strings.Replace(req, "Upgrade: websocket", "Upgrade: WebSocket", 1)
				c.send(t, req)
				resp := c.response(t, "GET")
				if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
					t.Fatalf("status %d accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
				}
				c.send(t, string(appendFrame(nil, true, opText, []byte("hi"), true)))
				fr, err := readFrame(c.br)
				if err != nil || fr.op != opText || string(fr.payload) != "hi" {
					t.Fatalf("echo: %+v %v", fr, err)
				}
			})
		}
	})
}

// TestE2ETunnelOtherUpgradesStripped: h2c and other non-websocket upgrades are proxied as plain HTTP
// without the Upgrade header.
func TestE2ETunnelOtherUpgradesStripped(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Upgrade", strings.Join(r.Header.Values("Upgrade"), "|"))
		w.Header().Set("X-Got-Settings", r.Header.Get("Http2-Settings"))
		w.Header().Set("X-Got-Connection", strings.Join(r.Header.Values("Connection"), "|"))
		io.WriteString(w, "plain")
	}))
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	for _, extra := range []string{
		"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
		"Connection: Upgrade\r\nUpgrade: TLS/1.0\r\n",
		"Connection: keep-alive\r\nUpgrade: websocket\r\n", // no upgrade token in Connection
	} {
		c.send(t, "GET /h HTTP/1.1\r\nHost: a\r\n"+extra+"\r\n")
		resp, body := c.fullResponse(t, "GET")
		if resp.StatusCode != 200 || string(body) != "plain" {
			t.Fatalf("%q: status %d %q, want a plain 200", extra, resp.StatusCode, body)
		}
		if u := resp.Header.Get("X-Got-Upgrade"); u != "" {
			t.Errorf("%q: backend saw Upgrade %q", extra, u)
		}
		if s := resp.Header.Get("X-Got-Settings"); s != "" {
			t.Errorf("%q: backend saw HTTP2-Settings %q", extra, s)
		}
		if cn := strings.ToLower(resp.Header.Get("X-Got-Connection")); strings.Contains(cn, "upgrade") {
			t.Errorf("%q: backend saw Connection %q", extra, cn)
		}
	}
	c.expectQuiet(t, 20*time.Millisecond)
}

// TestE2ETunnelMany: 2,000 concurrent tunnels exchanging messages, then no fd or pipe left behind.
// Not parallel: it counts this process's fds.
func TestE2ETunnelMany(t *testing.T) {
	N := 2000
	if v, err := strconv.Atoi(os.Getenv("WSGATE_E2E_TUNNELS")); err == nil && v > 0 {
		N = v // for bisecting a failure by scale
	}
	if lim := raiseNofile(t); lim < uint64(4*N+500) {
		t.Fatalf("RLIMIT_NOFILE %d < %d needed for %d tunnels in one process", lim, 4*N+500, N)
	}
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		wb := newWSBackend(t)
		fd0, pipes0 := countFDs(t)
		s, addr := startProxy(t, wb.Addr, opt, func(c *loop.Config) { c.Tunnel.PipePoolMax = 4 })
		conns := make([]*websocket.Conn, N)
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		idx := make(chan int)
		d := websocket.Dialer{HandshakeTimeout: 20 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
		for w := 0; w < 32; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range idx {
					c, resp, err := d.Dial("ws://"+addr+"/echo", nil)
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							st := 0
							var b []byte
							if resp != nil {
								st = resp.StatusCode
								b, _ = io.ReadAll(resp.Body)
							}
							firstErr = fmt.Errorf("dial %d: %w (status %d %q)", i, err, st, b)
						}
						mu.Unlock()
						continue
					}
					conns[i] = c
				}
			}()
		}
		for i := 0; i < N; i++ {
			idx <- i
		}
		close(idx)
		wg.Wait()
		defer func() {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
		}()
		if firstErr != nil {
			t.Fatalf("opening %d tunnels: %v", N, firstErr)
		}
		if !waitFor(5*time.Second, func() bool { return s.Stats().Tunnels == int64(N) }) {
			t.Errorf("Stats().Tunnels = %d with %d open WebSockets", s.Stats().Tunnels, N)
		}
		// every tunnel talks, all at once
		errs := make(chan error, N)
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.NetConn().SetDeadline(time.Now().Add(60 * time.Second))
				for k := 0; k < 3; k++ {
					msg := fmt.Sprintf("tunnel %d message %d", i, k)
					if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
						errs <- fmt.Errorf("tunnel %d write: %w", i, err)
						return
					}
					if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
						errs <- fmt.Errorf("tunnel %d: got %q err %v, want %q", i, got, err, msg)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		nerr := 0
		for err := range errs {
			if nerr++; nerr <= 3 {
				t.Error(err)
			}
		}
		if nerr > 0 {
			t.Fatalf("%d of %d tunnels failed", nerr, N)
		}
		for i, c := range conns {
			c.Close()
			conns[i] = nil
		}
		if !waitFor(10*time.Second, func() bool { return s.Stats().Tunnels == 0 }) {
			t.Errorf("Stats().Tunnels = %d 10s after every client closed; sockets: %s", s.Stats().Tunnels,
				describeSockets(t, map[string]string{portOf(addr): "wsgate", portOf(wb.Addr): "backend"}))
		}
		checkNoLeak(t, s, fd0, pipes0, 4, map[string]string{portOf(addr): "wsgate", portOf(wb.Addr): "backend"})
	})
}

// checkNoLeak: with every tunnel gone, wsgate may keep only its pooled pipes (<= loops*poolMax);
// after Stop, the process is back to the fds it had before wsgate started.
func checkNoLeak(t *testing.T, s *loop.Server, fd0, pipes0, poolMax int, ports map[string]string) {
	t.Helper()
	maxPipes := pipes0 + 2*2*poolMax // 2 tunnel loops, 2 fds per pipe
	var fd, pipes int
	ok := waitFor(5*time.Second, func() bool { fd, pipes = countFDs(t); return pipes <= maxPipes && fd < fd0+200 })
	if !ok {
		t.Errorf("all tunnels closed, wsgate running: %d fds (%d before start), %d pipe fds (bound %d); sockets: %s",
			fd, fd0, pipes, maxPipes, describeSockets(t, ports))
	}
	stopProxy(t, s)
	ok = waitFor(5*time.Second, func() bool { fd, pipes = countFDs(t); return fd <= fd0 && pipes <= pipes0 })
	if !ok {
		t.Errorf("after Stop: %d fds (%d before start), %d pipe fds (%d before): fd leak; sockets: %s",
			fd, fd0, pipes, pipes0, describeSockets(t, ports))
	}
}

// TestE2ETunnelNoLeak: tunnels that end every way (clean close, half-close, reset mid-transfer,
// both directions busy) leave no fd and no borrowed pipe behind. Not parallel: counts fds.
func TestE2ETunnelNoLeak(t *testing.T) {
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		be, peers := rawTunnelBackend(t)
		fd0, pipes0 := countFDs(t)
		s, addr := startProxy(t, be.Addr, opt, func(c *loop.Config) { c.Tunnel.PipePoolMax = 2 })
		const N = 16
		var ends []tunnelEnds
		for i := 0; i < N; i++ {
			ends = append(ends, openRawTunnel(t, addr, peers))
		}
		var wg sync.WaitGroup
		for i, e := range ends {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.CT.SetDeadline(time.Now().Add(20 * time.Second))
				e.B.Conn.SetDeadline(time.Now().Add(20 * time.Second))
				go io.Copy(e.CT, genN(uint64(i), 4<<20))
				go io.Copy(e.B.Conn, genN(uint64(i), 4<<20))
				time.Sleep(time.Duration(i) * 5 * time.Millisecond)
				switch i % 4 {
				case 0: // clean close both ends
					e.CT.Close()
					e.B.Conn.Close()
				case 1: // client resets mid-transfer
					e.CT.SetLinger(0)
					e.CT.Close()
				case 2: // backend resets mid-transfer
					e.B.Conn.SetLinger(0)
					e.B.Conn.Close()
				case 3: // drain everything, then half-close both ways
					go io.Copy(io.Discard, e.B.R)
					io.Copy(io.Discard, io.LimitReader(e.C.br, 4<<20))
					e.CT.CloseWrite()
					e.B.Conn.CloseWrite()
				}
				io.Copy(io.Discard, e.C.br)
				e.CT.Close()
				e.B.Conn.Close()
			}()
		}
		wg.Wait()
		if !waitFor(10*time.Second, func() bool { return s.Stats().Tunnels == 0 }) {
			t.Errorf("Stats().Tunnels = %d after every tunnel ended", s.Stats().Tunnels)
		}
		checkNoLeak(t, s, fd0, pipes0, 2, map[string]string{portOf(addr): "wsgate", portOf(be.Addr): "backend"})
	})
}
