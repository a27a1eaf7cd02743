package loop_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/tlsrecord"
)

// mixedBackend answers upgrades with a 101 (the conn goes to peers) and other requests, keep-alive,
// with "<name> <path>".
func mixedBackend(t *testing.T, name string) (*rawBackend, chan *rawPeer) {
	peers := make(chan *rawPeer, 16)
	be := newRawBackend(t, func(p *rawPeer) {
		for req := p.Req; ; {
			if req.Header.Get("Upgrade") != "" {
				if _, err := io.WriteString(p.Conn, response101(req.Header.Get("Sec-WebSocket-Key"))); err != nil {
					return
				}
				peers <- p
				<-p.Done
				return
			}
			body := name + " " + req.URL.Path
			if _, err := fmt.Fprintf(p.Conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
			var err error
			if req, err = http.ReadRequest(p.R); err != nil {
				return
			}
		}
	})
	return be, peers
}

// recordUpgrade opens a WSS tunnel with the record-level client and returns the backend's end.
func recordUpgrade(t *testing.T, c *recordClient, peers chan *rawPeer) *rawPeer {
	t.Helper()
	key := wsKey()
	c.send(upgradeRequest("h", "/t", key, ""))
	if !c.readUntil(10*time.Second, func() bool { return bytes.Contains(c.app, []byte("\r\n\r\n")) }) {
		t.Fatalf("no 101: %q err %v", c.app, c.err)
	}
	if !strings.HasPrefix(string(c.app), "HTTP/1.1 101 ") {
		t.Fatalf("upgrade answer %q", c.app)
	}
	c.app = c.app[bytes.Index(c.app, []byte("\r\n\r\n"))+4:]
	select {
	case p := <-peers:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("backend got no tunnel")
	}
	return nil
}

// TLS clients in a binary upgrade (here between two Servers in one process; the fds are dup'ed as
// the hand-off would): a TLS 1.3 keep-alive connection and a TLS 1.3 WSS tunnel pass with their
// session (keys, sequence numbers, a half-received record, bytes in flight both ways) and carry
// on in the successor, where a KeyUpdate each way still works; a TLS 1.2 connection and a TLS 1.2
// WSS tunnel stay: the idle connection is closed with close_notify once passing ends, the tunnel
// keeps relaying in the old server until it closes. The hand-off does not wait for what stays, nor
// for a client stuck in the middle of its ClientHello.
func TestPassTLS(t *testing.T) {
	ab, aPeers := mixedBackend(t, "a")
	b := nameOnly(t, "b")
	old, addr, ts := startTLSProxy(t, ab.Addr)

	idle13 := dialTLS(t, addr, clientTLS(t, tls13))
	idle13.send(t, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := idle13.fullResponse(t, "GET"); resp.StatusCode != 200 || string(body) != "a /1" {
		t.Fatalf("idle13: %d %q", resp.StatusCode, body)
	}
	part13 := dialRecordClient(t, addr)
	part13.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if !part13.readUntil(10*time.Second, func() bool { return len(part13.responses("GET")) == 1 }) {
		t.Fatalf("part13: %q %v", part13.app, part13.err)
	}
	idle12 := dialTLS(t, addr, clientTLS(t, tls12))
	idle12.send(t, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := idle12.fullResponse(t, "GET"); resp.StatusCode != 200 || string(body) != "a /1" {
		t.Fatalf("idle12: %d %q", resp.StatusCode, body)
	}
	wss13 := dialRecordClient(t, addr)
	peer13 := recordUpgrade(t, wss13, aPeers)
	wss13.send("before")
	expectPeer(t, peer13, "before")
	wss12 := dialTLS(t, addr, clientTLS(t, tls12))
	key := wsKey()
	wss12.send(t, upgradeRequest("h", "/t12", key, ""))
	if resp, _ := wss12.fullResponse(t, "GET"); resp.StatusCode != 101 {
		t.Fatalf("wss12: %d", resp.StatusCode)
	}
	var peer12 *rawPeer
	select {
	case peer12 = <-aPeers:
	case <-time.After(10 * time.Second):
		t.Fatal("no TLS 1.2 tunnel at the backend")
	}
	if !waitFor(5*time.Second, func() bool { return old.Stats().Tunnels == 2 }) {
		t.Fatalf("old: %d tunnels before, want 2", old.Stats().Tunnels)
	}

	// A client that connected and sent half a ClientHello: its handshake has not started, and
	// the hand-off must not wait for it.
	slow := dialRaw(t, addr)
	slow.send(t, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")

	// In flight while the successor takes over: half a record of part13's next request, bytes
	// both ways in the TLS 1.3 tunnel.
	nextReq := part13.seal("GET /part HTTP/1.1\r\nHost: x\r\n\r\n")
	part13.write(nextReq[:7])
	wss13.send("up-in-flight")
	peer13.Conn.Write([]byte("down-in-flight"))
	time.Sleep(100 * time.Millisecond) // let the loops see them: the half record is in the session

	lock, err := old.ListenLock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	cfg := baseConfig(b.Addr)
	cfg.Listen, cfg.ListenLock, cfg.TLS = addr, lock, ts
	succ, err := loop.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProxy(t, succ) })
	if _, _, err := old.StopAccepting(false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	kinds := map[loop.PassKind]int{}
	for p := range old.PassItems(context.Background(), 5*time.Second) {
		fds := make([]int, len(p.FDs))
		for i, fd := range p.FDs {
			if fds[i], err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
				t.Fatal(err)
			}
		}
		a, err := succ.PrepareAdopt(p.Kind, fds, p.State)
		if err != nil {
			t.Fatalf("PrepareAdopt (kind %d): %v", p.Kind, err)
		}
		succ.CommitAdopt(a)
		for _, fd := range p.FDs {
			unix.Close(fd)
		}
		old.PassDone(p, nil)
		kinds[p.Kind]++
	}
	if took := time.Since(start); kinds[loop.PassIdleConn] != 2 || kinds[loop.PassTunnel] != 1 || took > 3*time.Second {
		t.Fatalf("passed %d conns and %d tunnels in %v, want 2 and 1 without waiting for the TLS 1.2 ones and the half handshake", kinds[loop.PassIdleConn], kinds[loop.PassTunnel], took)
	}

	// The TLS 1.3 connections carry on in the successor.
	idle13.send(t, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := idle13.fullResponse(t, "GET"); resp.StatusCode != 200 || string(body) != "b /2" || resp.Close {
		t.Fatalf("idle13 after the pass: %d %q close %v", resp.StatusCode, body, resp.Close)
	}
	part13.write(nextReq[7:])
	if !part13.readUntil(10*time.Second, func() bool { return len(part13.responses("GET")) == 2 }) {
		t.Fatalf("part13 after the pass: %q %v", part13.app, part13.err)
	}
	if resp := part13.responses("GET")[1]; resp.StatusCode != 200 {
		t.Fatalf("part13's half-sent request: %d", resp.StatusCode)
	} else if body, _ := io.ReadAll(resp.Body); string(body) != "b /part" {
		t.Fatalf("part13's half-sent request answered %q", body)
	}
	expectPeer(t, peer13, "up-in-flight")
	if !wss13.readUntil(10*time.Second, func() bool { return bytes.Contains(wss13.app, []byte("down-in-flight")) }) {
		t.Fatalf("wss13: %q %v", wss13.app, wss13.err)
	}
	ku, err := wss13.sess.AppendKeyUpdate(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	wss13.write(append(ku, wss13.seal("after-ku")...))
	expectPeer(t, peer13, "after-ku")
	peer13.Conn.Write([]byte("down-after-ku"))
	if !wss13.readUntil(10*time.Second, func() bool { return bytes.Contains(wss13.app, []byte("down-after-ku")) }) {
		t.Fatalf("wss13 after the KeyUpdate: %q %v", wss13.app, wss13.err)
	}
	if !wss13.sawEvent(tlsrecord.EventKeyUpdate) {
		t.Fatalf("the successor did not answer the KeyUpdate (events %v)", wss13.evs)
	}

	// The TLS 1.2 ones stayed: the tunnel relays in the old server, the idle conn was closed.
	if st := old.Stats(); st.Tunnels != 1 {
		t.Fatalf("old: %d tunnels after the pass, want the TLS 1.2 one", st.Tunnels)
	}
	if !waitFor(5*time.Second, func() bool { return succ.Stats().Tunnels == 1 }) {
		t.Fatalf("successor: %d tunnels, want the TLS 1.3 one", succ.Stats().Tunnels)
	}
	wss12.send(t, "up12")
	expectPeer(t, peer12, "up12")
	peer12.Conn.Write([]byte("down12"))
	wss12.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := readFull(wss12.br, 6); err != nil || string(got) != "down12" {
		t.Fatalf("wss12 in the old server: %q %v", got, err)
	}
	idle12.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle12.br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle TLS 1.2 conn after the pass: read %d, %v; want close_notify (EOF)", n, err)
	}
	wss12.Close() // close_notify: the backend sees EOF and closes too
	peer12.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := peer12.R.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("backend of the TLS 1.2 tunnel after the client's close: read %d, %v; want EOF", n, err)
	}
	peer12.Conn.Close()
	slow.Close()
	if !waitFor(5*time.Second, func() bool { st := old.Stats(); return st.Tunnels == 0 && st.Conns == 0 }) {
		st := old.Stats()
		t.Fatalf("old server still holds %d conns and %d tunnels", st.Conns, st.Tunnels)
	}
}

// gatedConn lets a TLS client's first flight through and holds its next writes (its Finished)
// until open is closed: the server is mid-handshake meanwhile.
type gatedConn struct {
	net.Conn
	writes atomic.Int32
	open   chan struct{}
}

func (c *gatedConn) Write(b []byte) (int, error) {
	if c.writes.Add(1) > 1 {
		<-c.open
	}
	return c.Conn.Write(b)
}

// A drain that closes the listeners while a TLS client is in the middle of its handshake does not
// cut it (it is not an idle keep-alive connection): the handshake completes and its first request
// is answered, with Connection: close. Before, the drain's idle sweep closed it and the client's
// handshake failed with EOF.
func TestDrainKeepsTLSHandshakes(t *testing.T) {
	b := nameOnly(t, "b")
	srv, addr, _ := startTLSProxy(t, b.Addr)
	nc, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	g := &gatedConn{Conn: nc, open: make(chan struct{})}
	c := tls.Client(g, clientTLS(t, tls13))
	hs := make(chan error, 1)
	go func() { hs <- c.Handshake() }()
	// The server has the ClientHello and answered: it waits for the client's Finished.
	if !waitFor(5*time.Second, func() bool { return srv.Stats().Conns == 1 && g.writes.Load() >= 2 }) {
		t.Fatalf("the handshake did not get to the client's second flight: %+v", srv.Stats())
	}
	drained := make(chan loop.DrainReport, 1)
	go func() {
		drained <- srv.Drain(context.Background(), loop.DrainOptions{Timeout: 5 * time.Second, Spread: time.Second})
	}()
	if !waitFor(5*time.Second, srv.Draining) {
		t.Fatal("the drain did not close the listeners")
	}
	time.Sleep(100 * time.Millisecond) // the idle sweep has run
	close(g.open)
	if err := <-hs; err != nil {
		t.Fatalf("handshake across the drain's start: %v", err)
	}
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the first request of a conn whose handshake spanned the drain's start: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "b /first" || !resp.Close {
		t.Fatalf("answer %d %q, Connection: close %v; want 200 with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if rep := <-drained; !rep.Empty {
		t.Fatalf("drain: %+v", rep)
	}
}
