package splice

import (
	"errors"
	"testing"
	"time"
)

// CloseTunnels closes exactly the number asked, over every loop, with ErrDrained (which counts
// as ErrClosed), and leaves the others carrying bytes; transfers are not touched.
func TestCloseTunnels(t *testing.T) {
	modes(t, func(t *testing.T, spliceOn bool) {
		p := newPlane(t, Config{Loops: 3, Splice: spliceOn})
		ln := listen(t)
		const n = 12
		ends := make([]*tunnelEnds, n)
		for i := range ends {
			ends[i] = openTunnel(t, p, ln, nil, nil)
		}
		if !waitFor(5*time.Second, func() bool { return p.Stats().Tunnels == n }) {
			t.Fatalf("%d tunnels attached, want %d", p.Stats().Tunnels, n)
		}
		if got := p.CloseTunnels(0); got != 0 {
			t.Fatalf("CloseTunnels(0) = %d", got)
		}
		if got := p.CloseTunnels(5); got != 5 {
			t.Fatalf("CloseTunnels(5) = %d, want 5", got)
		}
		closedSet := map[int]bool{}
		for i, e := range ends {
			select {
			case r := <-e.res:
				if !errors.Is(r.Err, ErrDrained) || !errors.Is(r.Err, ErrClosed) {
					t.Fatalf("tunnel %d ended with %v, want ErrDrained (an ErrClosed)", i, r.Err)
				}
				closedSet[i] = true
			default:
			}
		}
		if len(closedSet) != 5 {
			t.Fatalf("%d OnClose calls after CloseTunnels(5)", len(closedSet))
		}
		if got := p.OpenTunnels(); got != n-5 {
			t.Fatalf("OpenTunnels = %d, want %d", got, n-5)
		}
		// The closed ones are closed on the wire; the others still relay both ways.
		for i, e := range ends {
			if closedSet[i] {
				if _, err := expectEOF(t, e.client, 5*time.Second); err != nil {
					t.Fatalf("closed tunnel %d: client side: %v", i, err)
				}
				continue
			}
			if _, err := e.client.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if got := string(readN(t, e.backend, 4, 5*time.Second)); got != "ping" {
				t.Fatalf("tunnel %d: backend read %q", i, got)
			}
			if _, err := e.backend.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if got := string(readN(t, e.client, 4, 5*time.Second)); got != "pong" {
				t.Fatalf("tunnel %d: client read %q", i, got)
			}
		}
		// More than are open: all of the rest, and no more.
		if got := p.CloseTunnels(100); got != n-5 {
			t.Fatalf("CloseTunnels(100) = %d, want %d", got, n-5)
		}
		if got := p.OpenTunnels(); got != 0 {
			t.Fatalf("OpenTunnels = %d after closing all", got)
		}
		if got := p.CloseTunnels(1); got != 0 {
			t.Fatalf("CloseTunnels on an empty plane = %d", got)
		}
	})
}

// A command queued while the plane closes gets its answer instead of blocking its caller.
func TestCloseTunnelsAfterClose(t *testing.T) {
	p := newPlane(t, Config{Loops: 2})
	ln := listen(t)
	openTunnel(t, p, ln, nil, nil)
	p.Close()
	done := make(chan int, 1)
	go func() { done <- p.CloseTunnels(3) }()
	select {
	case n := <-done:
		if n != 0 {
			t.Fatalf("CloseTunnels after Close = %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CloseTunnels after Close blocked")
	}
}
