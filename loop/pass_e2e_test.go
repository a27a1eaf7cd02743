package loop_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
)

// Client connections move from one Server to another at their request boundaries, as in a
// binary upgrade (the hand-off between processes is package handoff's; here the fds are dup'ed
// in-process): an idle keep-alive conn, one with half a head sent, one with a slow request in
// flight (answered by the old server without Connection: close, then moved) and one with a
// request pipelined behind a slow one (carried in the state, answered by the new server). The
// new server was started with the old one's listen lock and binds next to it; once the old one's
// listeners are closed, new connections reach the new one. Nothing is left in the old server.
func TestPassIdleConns(t *testing.T) {
	slowA := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(700 * time.Millisecond)
		}
		io.WriteString(w, "a")
	}))
	b := nameOnly(t, "b")
	old, addr := startProxy(t, slowA.Addr)
	lock, err := old.ListenLock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()

	idle := dialRaw(t, addr)
	if code, body := idle.get(t, "x", "/"); code != 200 || body != "a" {
		t.Fatalf("idle: %d %q", code, body)
	}
	half := dialRaw(t, addr)
	if code, body := half.get(t, "x", "/"); code != 200 || body != "a" {
		t.Fatalf("half: %d %q", code, body)
	}
	busy := dialRaw(t, addr)
	busy.send(t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	piped := dialRaw(t, addr)
	piped.send(t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(100 * time.Millisecond) // the slow requests are in flight
	half.send(t, "GET /half HTTP/1.1\r\nHost:")

	cfg := baseConfig(b.Addr)
	cfg.Listen = addr
	cfg.ListenLock = lock
	succ, err := loop.Start(cfg)
	if err != nil {
		t.Fatalf("successor: %v", err)
	}
	t.Cleanup(func() { stopProxy(t, succ) })
	if n, acc, err := old.StopAccepting(false); err != nil || n != 2 || acc != 0 {
		t.Fatalf("StopAccepting: %d listeners, %d accepted, %v", n, acc, err)
	}
	// New connections now reach the successor only.
	for i := 0; i < 4; i++ {
		c := dialRaw(t, addr)
		if code, body := c.get(t, "x", "/"); code != 200 || body != "b" {
			t.Fatalf("new connection after the old listeners closed: %d %q", code, body)
		}
	}

	moved := 0
	for p := range old.PassItems(context.Background(), 5*time.Second) {
		nfd, err := unix.FcntlInt(uintptr(p.FDs[0]), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		a, err := succ.PrepareAdopt(p.Kind, []int{nfd}, p.State)
		if err != nil {
			t.Fatalf("PrepareAdopt: %v", err)
		}
		succ.CommitAdopt(a)
		unix.Close(p.FDs[0]) // what the hand-off does once the successor has it
		old.PassDone(p, nil)
		moved++
	}
	if moved != 4 {
		t.Fatalf("%d connections moved, want 4", moved)
	}
	if st := old.Stats(); st.Conns != 0 {
		t.Fatalf("old server still holds %d client conns", st.Conns)
	}

	// The slow requests were answered by the old server, keep-alive.
	for _, c := range []*rawConn{busy, piped} {
		resp, body := c.fullResponse(t, "GET")
		if resp.StatusCode != 200 || string(body) != "a" || resp.Close {
			t.Fatalf("request in flight during the pass: %d %q close %v", resp.StatusCode, body, resp.Close)
		}
	}
	// The pipelined request, carried in the state, is answered by the successor.
	if resp, body := piped.fullResponse(t, "GET"); resp.StatusCode != 200 || string(body) != "b /second" {
		t.Fatalf("pipelined request: %d %q", resp.StatusCode, body)
	}
	half.send(t, " x\r\n\r\n")
	if resp, body := half.fullResponse(t, "GET"); resp.StatusCode != 200 || string(body) != "b /half" {
		t.Fatalf("head finished after the pass: %d %q", resp.StatusCode, body)
	}
	for _, c := range []*rawConn{idle, busy, piped, half} {
		if code, body := c.get(t, "x", "/next"); code != 200 || body != "b /next" {
			t.Fatalf("next request after the pass: %d %q", code, body)
		}
		c.expectQuiet(t, 20*time.Millisecond)
	}
	if st := succ.Stats(); st.Conns < 4 {
		t.Fatalf("successor holds %d client conns", st.Conns)
	}
	// The old server's fd budget counts nothing of the passed conns any more: only its pooled
	// backend conns.
	if st := old.Stats(); st.FDsUsed != st.BackendIdle {
		t.Fatalf("old server: %d fds counted, %d pooled backend conns", st.FDsUsed, st.BackendIdle)
	}
}

// nameOnly answers "<name> <path>" ("<name>" for /).
func nameOnly(t *testing.T, name string) *backend {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			io.WriteString(w, name)
			return
		}
		io.WriteString(w, name+" "+r.URL.Path)
	}))
}

// Relisten after StopAccepting (an upgrade whose successor died after READY): new connections
// are served again, by a new engine; a keep-alive conn of the old engine carries on; Stop ends
// both.
func TestRelisten(t *testing.T) {
	b := nameOnly(t, "b")
	srv, addr := startProxy(t, b.Addr)
	kept := dialRaw(t, addr)
	if code, body := kept.get(t, "x", "/"); code != 200 || body != "b" {
		t.Fatalf("%d %q", code, body)
	}
	if n, _, err := srv.StopAccepting(false); err != nil || n != 2 {
		t.Fatalf("StopAccepting: %d %v", n, err)
	}
	if n, _, err := srv.StopAccepting(false); err != nil || n != 0 {
		t.Fatalf("StopAccepting again: %d %v, want a no-op", n, err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("accepted with the listeners closed")
	}
	if err := srv.Relisten(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		c := dialRaw(t, addr)
		if code, body := c.get(t, "x", "/"); code != 200 || body != "b" {
			t.Fatalf("after Relisten: %d %q", code, body)
		}
	}
	if code, body := kept.get(t, "x", "/k"); code != 200 || body != "b /k" {
		t.Fatalf("keep-alive conn of the old engine: %d %q", code, body)
	}
	kept.expectQuiet(t, 20*time.Millisecond)
	// Closing again closes the new engine's listeners.
	if n, _, err := srv.StopAccepting(false); err != nil || n != 2 {
		t.Fatalf("StopAccepting after Relisten: %d %v", n, err)
	}
	stopProxy(t, srv)
	kept.expectClosed(t, 5*time.Second)
}

// Tunnels move to the successor with everything in flight; the old server's member stops
// counting them, the successor's member (found by the backend's address) counts them; both ends
// keep relaying.
func TestPassTunnels(t *testing.T) {
	tb, peers := rawTunnelBackend(t)
	old, addr := startProxy(t, tb.Addr)
	const n = 5
	ends := make([]tunnelEnds, n)
	for i := range ends {
		ends[i] = openRawTunnel(t, addr, peers)
	}
	lock, err := old.ListenLock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	cfg := baseConfig(tb.Addr)
	cfg.Listen, cfg.ListenLock = addr, lock
	succ, err := loop.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProxy(t, succ) })
	if _, _, err := old.StopAccepting(false); err != nil {
		t.Fatal(err)
	}
	// Bytes in flight both ways while the tunnels move.
	for i, e := range ends {
		e.C.send(t, "up "+string(rune('a'+i)))
		e.B.Conn.Write([]byte("down " + string(rune('a'+i))))
	}
	moved := 0
	for p := range old.PassItems(context.Background(), 5*time.Second) {
		if p.Kind != loop.PassTunnel {
			t.Fatalf("kind %d passed, want only tunnels", p.Kind)
		}
		fds := make([]int, len(p.FDs))
		for i, fd := range p.FDs {
			if fds[i], err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
				t.Fatal(err)
			}
		}
		a, err := succ.PrepareAdopt(p.Kind, fds, p.State)
		if err != nil {
			t.Fatal(err)
		}
		succ.CommitAdopt(a)
		for _, fd := range p.FDs {
			unix.Close(fd)
		}
		old.PassDone(p, nil)
		moved++
	}
	if moved != n {
		t.Fatalf("%d tunnels moved, want %d", moved, n)
	}
	for i, e := range ends {
		want := "up " + string(rune('a'+i))
		e.B.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := readFull(e.B.R, len(want)); err != nil || string(b) != want {
			t.Fatalf("tunnel %d: backend read %q %v", i, b, err)
		}
		want = "down " + string(rune('a'+i))
		e.C.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := readFull(e.C.br, len(want)); err != nil || string(b) != want {
			t.Fatalf("tunnel %d: client read %q %v", i, b, err)
		}
		e.C.send(t, "again")
		if b, err := readFull(e.B.R, 5); err != nil || string(b) != "again" {
			t.Fatalf("tunnel %d after the move: %q %v", i, b, err)
		}
	}
	if _, tunnels := old.Routes().Members()[0].Load(); tunnels != 0 {
		t.Fatalf("the old server's member still counts %d tunnels", tunnels)
	}
	if _, tunnels := succ.Routes().Members()[0].Load(); tunnels != n {
		t.Fatalf("the successor's member counts %d tunnels, want %d", tunnels, n)
	}
	if st := old.Stats(); st.Tunnels != 0 {
		t.Fatalf("old server: %d tunnels", st.Tunnels)
	}
	if st := succ.Stats(); st.Tunnels != n {
		t.Fatalf("successor: %d tunnels, want %d", st.Tunnels, n)
	}
}
