package splice

import (
	"errors"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/metrics"
)

// passAll moves every tunnel of from to to as a hand-off between processes would: the state
// and a copy of each fd reach the adopter, which takes them (PrepareAdopt, CommitAdopt); then
// the sender closes its copies and hears its verdict. results collects the adopted tunnels'
// OnClose.
func passAll(t *testing.T, from, to *Plane, results chan TunnelResult) (tunnels, pipes int) {
	t.Helper()
	for {
		ex := from.ExportTunnels(64)
		if len(ex) == 0 {
			return
		}
		for _, e := range ex {
			fds := make([]int, len(e.FDs))
			for i, fd := range e.FDs {
				nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				fds[i] = nfd
			}
			a, err := to.PrepareAdopt(fds, e.State)
			if err != nil {
				t.Fatalf("PrepareAdopt: %v", err)
			}
			a.OnClose = func(r TunnelResult) { results <- r }
			to.CommitAdopt(a)
			for _, fd := range e.FDs {
				unix.Close(fd)
			}
			from.ExportDone(e, nil)
			tunnels++
			pipes += (len(e.FDs) - 2) / 2
		}
	}
}

// Tunnels move between planes while both ends stream as fast as they can, several times back
// and forth (repeated upgrades): every byte arrives once and in order, bytes held in a pipe or a
// buffer at the moment of the move go first, the byte counters carry on, the half-closes at the
// end still propagate, and the planes' fd counts come back to zero.
func TestExportAdoptUnderTraffic(t *testing.T) {
	modes(t, func(t *testing.T, spliceOn bool) {
		cfg := Config{Loops: 2, Splice: spliceOn, FDs: nil}
		a := newPlane(t, cfg)
		b := newPlane(t, cfg)
		ln := listen(t)
		const n = 6
		const size = 24 << 20
		ends := make([]*tunnelEnds, n)
		results := make(chan TunnelResult, 64*n)
		for i := range ends {
			ends[i] = openTunnel(t, a, ln, []byte("to-backend "), []byte("to-client "))
			ends[i].res = results
		}
		var wg sync.WaitGroup
		for i, e := range ends {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The pending bytes first, then the streams.
				if got := string(readN(t, e.backend, 11, 5*time.Second)); got != "to-backend " {
					t.Errorf("tunnel %d: backend got %q first", i, got)
				}
				if got := string(readN(t, e.client, 10, 5*time.Second)); got != "to-client " {
					t.Errorf("tunnel %d: client got %q first", i, got)
				}
				bulk(t, e, size, 60*time.Second)
			}()
		}
		moves, movedTotal := 0, 0
		pipes := 0
		planes := [2]*Plane{a, b}
		deadline := time.Now().Add(20 * time.Second)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
	moving:
		for moves < 6 && time.Now().Before(deadline) {
			select {
			case <-done:
				break moving
			case <-time.After(20 * time.Millisecond):
			}
			from, to := planes[moves%2], planes[(moves+1)%2]
			got, p := passAll(t, from, to, results)
			pipes += p
			movedTotal += got
			moves++
			if got != n {
				// Only when the streams just ended (their tunnels closed on their own).
				select {
				case <-done:
					moves--
					break moving
				case <-time.After(10 * time.Second):
					t.Fatalf("move %d: %d tunnels moved, want %d", moves, got, n)
				}
			}
		}
		<-done
		t.Logf("%d moves of %d tunnels while streaming %d MiB each way; %d pipes with bytes moved along", moves, n, size>>20, pipes)
		if moves < 2 {
			t.Fatalf("the streams ended after %d moves: too fast to test", moves)
		}
		// Every tunnel ended where it was last, cleanly, with all its bytes counted (the
		// pending bytes included); the passed ones said ErrPassed where they left.
		passedResults, final := 0, 0
		for final < n {
			select {
			case r := <-results:
				if errors.Is(r.Err, ErrPassed) {
					passedResults++
					continue
				}
				if r.Err != nil {
					t.Fatalf("a tunnel ended with %v", r.Err)
				}
				if r.ClientToBackend != size+11 || r.BackendToClient != size+10 {
					t.Fatalf("tunnel moved %d / %d bytes, want %d / %d", r.ClientToBackend, r.BackendToClient, size+11, size+10)
				}
				final++
			case <-time.After(10 * time.Second):
				t.Fatalf("%d of %d tunnels reported their end", final, n)
			}
		}
		for len(results) > 0 {
			if r := <-results; errors.Is(r.Err, ErrPassed) {
				passedResults++
			}
		}
		if passedResults != movedTotal {
			t.Fatalf("%d OnClose with ErrPassed, want one per tunnel moved (%d)", passedResults, movedTotal)
		}
		for _, p := range planes {
			if p.OpenTunnels() != 0 || p.Stats().Tunnels != 0 {
				t.Fatalf("a plane still holds %d tunnels (%d attached)", p.OpenTunnels(), p.Stats().Tunnels)
			}
		}
	})
}

// A tunnel the hand-off gives back (the successor refused it) carries on where it was.
func TestExportGivenBack(t *testing.T) {
	modes(t, func(t *testing.T, spliceOn bool) {
		p := newPlane(t, Config{Loops: 1, Splice: spliceOn})
		ln := listen(t)
		e := openTunnel(t, p, ln, nil, nil)
		if _, err := e.client.Write([]byte("before")); err != nil {
			t.Fatal(err)
		}
		if got := string(readN(t, e.backend, 6, 5*time.Second)); got != "before" {
			t.Fatalf("%q", got)
		}
		ex := p.ExportTunnels(10)
		if len(ex) != 1 || p.Stats().Tunnels != 0 || p.OpenTunnels() != 1 {
			t.Fatalf("exported %d, attached %d, open %d", len(ex), p.Stats().Tunnels, p.OpenTunnels())
		}
		// Detached: bytes wait in the sockets.
		e.client.Write([]byte("during"))
		e.backend.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var one [1]byte
		if n, _ := e.backend.Read(one[:]); n != 0 {
			t.Fatal("a detached tunnel relayed a byte")
		}
		p.ExportDone(ex[0], errors.New("the successor refused it"))
		if got := string(readN(t, e.backend, 6, 5*time.Second)); got != "during" {
			t.Fatalf("after it came back: %q", got)
		}
		e.backend.Write([]byte("reply"))
		if got := string(readN(t, e.client, 5, 5*time.Second)); got != "reply" {
			t.Fatalf("after it came back: client got %q", got)
		}
		e.client.CloseWrite()
		e.backend.CloseWrite()
		if r := e.result(t, 5*time.Second); r.Err != nil || r.ClientToBackend != 12 || r.BackendToClient != 5 {
			t.Fatalf("%+v", r)
		}
	})
}

// A state this binary does not know is refused, and the fds are left alone.
func TestAdoptRefusesUnknownState(t *testing.T) {
	p := newPlane(t, Config{Loops: 1})
	for _, st := range [][]byte{nil, {2}, make([]byte, exportHead-1), append([]byte{1}, make([]byte, exportHead)...)} {
		if _, err := p.PrepareAdopt([]int{100, 101}, st); err == nil {
			t.Fatalf("state % x accepted", st)
		}
	}
}

// A half-closed tunnel moves with its half-close and its fin timer: the open direction still
// relays, and the fin timeout fires when it would have where the tunnel was, not a full timeout
// after the move.
func TestExportHalfClosedKeepsFinTimer(t *testing.T) {
	const fin = 3 * time.Second
	a := newPlane(t, Config{Loops: 1, FinTimeout: fin})
	b := newPlane(t, Config{Loops: 1, FinTimeout: fin})
	ln := listen(t)
	e := openTunnel(t, a, ln, nil, nil)
	e.client.Write([]byte("last words"))
	e.client.CloseWrite()
	start := time.Now()
	if got := string(readN(t, e.backend, 10, 5*time.Second)); got != "last words" {
		t.Fatalf("%q", got)
	}
	if _, err := expectEOF(t, e.backend, 5*time.Second); err != nil {
		t.Fatalf("the client's half-close did not reach the backend: %v", err)
	}
	time.Sleep(fin / 2)
	results := make(chan TunnelResult, 4)
	if n, _ := passAll(t, a, b, results); n != 1 {
		t.Fatalf("%d moved", n)
	}
	if r := e.result(t, 5*time.Second); !errors.Is(r.Err, ErrPassed) || r.ClientToBackend != 10 {
		t.Fatalf("the old plane's OnClose: %+v, want ErrPassed and the counts so far", r)
	}
	e.backend.Write([]byte("answer"))
	if got := string(readN(t, e.client, 6, 5*time.Second)); got != "answer" {
		t.Fatalf("the open direction after the move: %q", got)
	}
	select {
	case r := <-results:
		took := time.Since(start)
		if !errors.Is(r.Err, ErrFinTimeout) || r.ClientToBackend != 10 || r.BackendToClient != 6 {
			t.Fatalf("%+v", r)
		}
		// A timer restarted by the move would fire at fin/2 + fin.
		if took > fin+fin/3 {
			t.Fatalf("fin timeout fired %v after the half-close, want about %v", took, fin)
		}
		t.Logf("fin timeout fired %v after the half-close (timeout %v, moved at %v)", took.Round(time.Millisecond), fin, fin/2)
	case <-time.After(3 * fin):
		t.Fatal("no fin timeout after the move")
	}
}

// A tunnel that moves is not a close: the old process's tunnels_active drops without a close
// counted; the new one's rises, under the route's name (indexes are each registry's own), and
// counts only the bytes moved there; the lifetime runs on.
func TestExportAdoptMetrics(t *testing.T) {
	regA, regB := metrics.NewRegistry(), metrics.NewRegistry()
	regB.Route("/other") // the route gets another index there
	route := regA.Route("/r")
	a := newPlane(t, Config{Loops: 1, Metrics: regA})
	b := newPlane(t, Config{Loops: 1, Metrics: regB})
	ln := listen(t)
	e := &tunnelEnds{res: make(chan TunnelResult, 1)}
	var cfd, bfd int
	e.client, cfd = tcpPair(t, ln)
	e.backend, bfd = tcpPair(t, ln)
	t.Cleanup(e.close)
	if err := a.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, Route: route, OnClose: func(r TunnelResult) { e.res <- r }}); err != nil {
		t.Fatal(err)
	}
	regA.NewShard().TunnelOpened(route) // what the HTTP plane does
	e.client.Write(make([]byte, 1000))
	readN(t, e.backend, 1000, 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	results := make(chan TunnelResult, 1)
	if n, _ := passAll(t, a, b, results); n != 1 {
		t.Fatalf("%d moved", n)
	}
	if r := e.result(t, 5*time.Second); !errors.Is(r.Err, ErrPassed) {
		t.Fatalf("%+v", r)
	}
	e.backend.Write(make([]byte, 300))
	readN(t, e.client, 300, 5*time.Second)
	var fa, fb map[string]*dto.MetricFamily
	waitFor(5*time.Second, func() bool {
		fb = scrapeText(t, regB)
		return sample(t, fb, metrics.NameTunnelBytes, "direction=down,route=/r") == 300
	})
	fa = scrapeText(t, regA)
	for _, c := range []struct {
		f           map[string]*dto.MetricFamily
		name, label string
		want        float64
	}{
		{fa, metrics.NameTunnelsActive, "route=/r", 0},
		{fa, metrics.NameTunnelBytes, "direction=up,route=/r", 1000},
		{fb, metrics.NameTunnelsActive, "route=/r", 1},
		{fb, metrics.NameTunnelBytes, "direction=up,route=/r", 0}, // counted where it moved
		{fb, metrics.NameTunnelBytes, "direction=down,route=/r", 300},
	} {
		if got := sample(t, c.f, c.name, c.label); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.label, got, c.want)
		}
	}
	for _, reason := range []string{"client", "backend", "drain", "error", "reset"} {
		if got := sample(t, fa, metrics.NameTunnelCloses, "reason="+reason+",route=/r"); got != 0 {
			t.Errorf("old registry counted a %s close of a tunnel that moved", reason)
		}
	}
	e.client.CloseWrite()
	e.backend.CloseWrite()
	select {
	case r := <-results:
		if r.Err != nil || r.ClientToBackend != 1000 || r.BackendToClient != 300 || r.Duration < 50*time.Millisecond {
			t.Fatalf("adopted tunnel's end: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the adopted tunnel did not end")
	}
	waitFor(5*time.Second, func() bool {
		return sample(t, scrapeText(t, regB), metrics.NameTunnelsActive, "route=/r") == 0
	})
	if got := sample(t, scrapeText(t, regB), metrics.NameTunnelCloses, "reason=client,route=/r"); got != 1 {
		t.Fatalf("new registry: %v client closes", got)
	}
}
