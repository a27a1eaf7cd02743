package route

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// healthBackend answers every connection with the current status line (or closes at once when
// status is 0, or stays silent when status is -1) and counts the requests it read.
type healthBackend struct {
	ln       net.Listener
	status   atomic.Int32
	requests atomic.Int32
	lastReq  atomic.Value
	wg       sync.WaitGroup
}

func newHealthBackend(t *testing.T, addr string, status int32) *healthBackend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &healthBackend{ln: ln}
	b.status.Store(status)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *healthBackend) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	b.requests.Add(1)
	b.lastReq.Store(head.String())
	switch s := b.status.Load(); s {
	case 0:
		return
	case -1:
		time.Sleep(2 * time.Second)
	case -2:
		c.Write([]byte("SSH-2.0-OpenSSH\r\n"))
	default:
		c.Write([]byte("HTTP/1.1 " + strconv.Itoa(int(s)) + " X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	}
}

func (b *healthBackend) close() {
	b.ln.Close()
	b.wg.Wait()
}

func TestProbe(t *testing.T) {
	b := newHealthBackend(t, "127.0.0.1:0", 200)
	d := NewDialer(b.ln.Addr().String(), nil, time.Second)
	ctx := context.Background()
	for _, tc := range []struct {
		status int32
		err    string
	}{
		{200, ""}, {204, ""}, {302, ""},
		{500, "health /ready: status 500"},
		{404, "health /ready: status 404"},
		{101, "health /ready: status 101"},
		{0, "health /ready: status line: EOF"},
		{-2, "not an HTTP/1.x status line"},
		{-1, "health /ready: status line: read tcp"},
	} {
		b.status.Store(tc.status)
		err := Probe(ctx, d, "/ready", 300*time.Millisecond)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("status %d: %v", tc.status, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("status %d: %v, want %q", tc.status, err, tc.err)
		case err != nil && !strings.HasPrefix(err.Error(), "backend "+b.ln.Addr().String()+": health /ready: "):
			t.Errorf("status %d: error does not name the backend and phase: %v", tc.status, err)
		}
	}
	req, _ := b.lastReq.Load().(string)
	if want := "GET /ready HTTP/1.1\r\nHost: " + b.ln.Addr().String() + "\r\nUser-Agent: wsgate-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"; req != want {
		t.Errorf("probe request %q, want %q", req, want)
	}
	addr := b.ln.Addr().String()
	b.close()
	if err := Probe(ctx, NewDialer(addr, nil, time.Second), "/ready", time.Second); err == nil || !strings.HasPrefix(err.Error(), "backend "+addr+": health /ready: connect: ") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("refused: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Active health against real loopback listeners: a member answering 500 is taken out and
// comes back when it answers 200; a member that refuses is taken out and comes back when it
// listens again. Pick follows.
func TestActiveHealth(t *testing.T) {
	good := newHealthBackend(t, "127.0.0.1:0", 200)
	flaky := newHealthBackend(t, "127.0.0.1:0", 200)
	path, iv := "/ready", 20*time.Millisecond
	sp := Spec{Prefix: "/", Backends: []string{good.ln.Addr().String(), flaky.ln.Addr().String()}}
	sp.HealthPath, sp.HealthInterval = &path, &iv
	tb, err := NewTable([]Spec{sp}, Defaults{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tb.Start()
	defer tb.Close()
	p := tb.Routes()[0].Pool
	g, f := p.Members()[0], p.Members()[1]
	waitFor(t, "probes to reach both members", func() bool { return good.requests.Load() >= 2 && flaky.requests.Load() >= 2 })
	if g.Health().ActiveDown || f.Health().ActiveDown {
		t.Fatal("healthy members marked down")
	}

	flaky.status.Store(500)
	waitFor(t, "the 500 member to go down", func() bool { return f.Health().ActiveDown })
	for i := 0; i < 20; i++ {
		if m := p.Pick(time.Now().UnixNano(), 0, nil); m != g {
			t.Fatalf("picked %v while it answers 500", m)
		}
	}
	flaky.status.Store(200)
	waitFor(t, "the member to come back", func() bool { return !f.Health().ActiveDown })

	// Refusing: close the listener, then listen on the same port again.
	addr := flaky.ln.Addr().String()
	flaky.close()
	waitFor(t, "the refusing member to go down", func() bool { return f.Health().ActiveDown })
	if g.Health().ActiveDown {
		t.Fatal("the good member went down too")
	}
	again := newHealthBackend(t, addr, 200)
	waitFor(t, "the member to come back after listening again", func() bool { return !f.Health().ActiveDown })
	waitFor(t, "probes of the new listener", func() bool { return again.requests.Load() > 0 })

	// Both down: Pick says none at once.
	good.status.Store(500)
	again.status.Store(503)
	waitFor(t, "both members down", func() bool { return g.Health().ActiveDown && f.Health().ActiveDown })
	if m := p.Pick(time.Now().UnixNano(), 0, nil); m != nil {
		t.Fatalf("Pick = %v with every member down", m)
	}

	// Close stops the probes.
	tb.Close()
	n1, n2 := good.requests.Load(), again.requests.Load()
	time.Sleep(10 * iv)
	if good.requests.Load() != n1 || again.requests.Load() != n2 {
		t.Error("probes went on after Close")
	}
}

// A reload to a table without health_path clears the active state and silences the old prober.
func TestActiveHealthReload(t *testing.T) {
	b := newHealthBackend(t, "127.0.0.1:0", 500)
	path, iv := "/ready", 20*time.Millisecond
	sp := Spec{Prefix: "/", Backends: []string{b.ln.Addr().String()}}
	sp.HealthPath, sp.HealthInterval = &path, &iv
	t1, err := NewTable([]Spec{sp}, Defaults{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t1.Start()
	defer t1.Close()
	m := t1.Members()[0]
	waitFor(t, "member down", func() bool { return m.Health().ActiveDown })
	if t1.HealthPath(m) != "/ready" {
		t.Fatalf("HealthPath = %q", t1.HealthPath(m))
	}

	t2, err := NewTable([]Spec{{Prefix: "/", Backends: []string{b.ln.Addr().String()}}}, Defaults{}, t1)
	if err != nil {
		t.Fatal(err)
	}
	if t2.Members()[0] != m || !m.Health().ActiveDown {
		t.Fatal("NewTable changed the running member (it must be pure)")
	}
	t2.Start()
	defer t2.Close()
	if m.Health().ActiveDown {
		t.Fatal("still down after a reload without health checks")
	}
	time.Sleep(10 * iv) // the old prober keeps probing until t1.Close but may not write
	if m.Health().ActiveDown {
		t.Fatal("the old table's prober took the member down after the reload")
	}
}
