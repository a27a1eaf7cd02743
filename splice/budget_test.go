package splice

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/fdbudget"
)

// With MaxPipes 1, a tunnel whose direction holds the only pipe (its destination does not read)
// forces every other direction onto the copy path: the plane never holds a second pipe, and the
// other tunnel's bytes still arrive intact both ways.
func TestPipeCapFallsBackToCopy(t *testing.T) {
	if !spliceSupported {
		t.Skip("no splice(2): the plane never creates pipes here")
	}
	p := newPlane(t, Config{Splice: true, Loops: 1, MaxPipes: 1})
	ln := listen(t)
	stuck := openTunnel(t, p, ln, nil, nil)
	// Fill stuck's client->backend direction: the backend does not read, so the pipe that
	// direction borrowed stays attached to it with bytes in flight.
	const stuckBytes = 8 << 20
	sent := make(chan [32]byte, 1)
	go func() {
		s, err := stream(stuck.client, 7, stuckBytes)
		if err != nil {
			t.Errorf("stuck client write: %v", err)
		}
		sent <- s
	}()
	if !waitFor(10*time.Second, func() bool { return p.Stats().PipesBusy == 1 }) {
		t.Fatalf("the stalled direction never held a pipe: %+v", p.Stats())
	}

	var over atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the cap is global: busy + idle never pass it
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if s := p.Stats(); s.PipesBusy+s.PipesIdle > 1 {
				over.Store(s.PipesBusy + s.PipesIdle)
			}
		}
	}()
	other := openTunnel(t, p, ln, nil, nil)
	before := p.Stats()
	bulk(t, other, 4<<20, 60*time.Second)
	close(stop)
	wg.Wait()
	after := p.Stats()
	if n := over.Load(); n > 0 {
		t.Fatalf("the plane held %d pipes with MaxPipes 1", n)
	}
	// Some of its bytes were copied: the only pipe is the stalled direction's, except when that
	// direction drains it into a growing socket buffer and lends it out for a while (loopback
	// autotuning can grow that buffer by megabytes, so how much is copied varies from run to run;
	// what must hold is the cap above and that the fallback happened at all).
	if after.PipeFallbacks == 0 || after.BytesCopied == before.BytesCopied {
		t.Fatalf("the second tunnel did not copy: before %+v after %+v", before, after)
	}
	if r := other.result(t, 5*time.Second); r.Err != nil || r.ClientToBackend != 4<<20 || r.BackendToClient != 4<<20 {
		t.Fatalf("second tunnel result %+v", r)
	}

	// The stalled direction still delivers all its bytes once the backend reads.
	got, n, err := drain(stuck.backend)
	if err != nil || n != stuckBytes || got != <-sent {
		t.Fatalf("stuck tunnel: %d bytes, err %v, digest match %v", n, err, got == <-sent)
	}
}

// MaxPipes < 0 means no pipes at all: every byte is copied, even with Splice on.
func TestNegativeMaxPipesNeverSplices(t *testing.T) {
	p := newPlane(t, Config{Splice: true, Loops: 1, MaxPipes: -1})
	e := openTunnel(t, p, listen(t), nil, nil)
	bulk(t, e, 2<<20, 30*time.Second)
	e.result(t, 5*time.Second)
	if s := p.Stats(); s.BytesSpliced != 0 || s.PipesBusy+s.PipesIdle != 0 || s.SpliceAvailable {
		t.Fatalf("stats %+v", s)
	}
}

// The plane's fd count matches the kernel's: every tunnel's two sockets and every pipe's two ends
// are counted while the plane owns them, and the count returns to zero when it closes.
func TestPlaneCountsItsFDs(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		ln := listen(t)
		b := fdbudget.New(1 << 20)
		p := newPlane(t, Config{Splice: on, Loops: 2, PipePoolMax: 4, FDs: b})
		base := countFDs(t)
		const tunnels = 5
		var ends []*tunnelEnds
		for i := 0; i < tunnels; i++ {
			ends = append(ends, openTunnel(t, p, ln, nil, nil))
		}
		if p.OpenTunnels() != tunnels {
			t.Fatalf("OpenTunnels %d, want %d", p.OpenTunnels(), tunnels)
		}
		for _, e := range ends[:2] {
			bulk(t, e, 1<<20, 30*time.Second)
			e.result(t, 5*time.Second)
		}
		// Quiescent: 3 tunnels open, the pool holds whatever pipes came back.
		check := func(when string, open, testHeld int) {
			t.Helper()
			s := p.Stats()
			want := 2*open + 2*int(s.PipesBusy+s.PipesIdle)
			if !waitFor(2*time.Second, func() bool { return b.Used() == want }) {
				t.Fatalf("%s: budget counts %d fds, want %d (open %d, %+v)", when, b.Used(), want, open, s)
			}
			// The kernel agrees: past what the test holds itself (its net.Conn ends), the
			// growth is exactly the plane's.
			if real := countFDs(t) - base; real-testHeld != want {
				t.Fatalf("%s: %d fds above the baseline, %d of them the test's: the plane holds %d, the budget says %d",
					when, real, testHeld, real-testHeld, want)
			}
		}
		check("after two tunnels ended", tunnels-2, 2*tunnels)
		if on && p.Stats().PipesIdle == 0 {
			t.Fatalf("no pipe pooled: %+v", p.Stats())
		}
		for _, e := range ends[2:] {
			e.close()
			e.result(t, 5*time.Second)
		}
		check("after all tunnels ended", 0, 2*2) // the test closed its ends of the last three
		if p.OpenTunnels() != 0 {
			t.Fatalf("OpenTunnels %d after every tunnel ended", p.OpenTunnels())
		}
		p.Close()
		if b.Used() != 0 {
			t.Fatalf("budget %d after Close", b.Used())
		}
	})
}

// A transfer's fds are counted from Transfer until Done hands them back.
func TestTransferCountsItsFDs(t *testing.T) {
	ln := listen(t)
	b := fdbudget.New(1 << 20)
	p := newPlane(t, Config{Splice: true, Loops: 1, FDs: b, PipePoolMax: -1})
	src, srcFD := tcpPair(t, ln)
	dst, dstFD := tcpPair(t, ln)
	defer src.Close()
	defer dst.Close()
	done := make(chan TransferResult, 1)
	var usedAtDone atomic.Int64
	if err := p.Transfer(Transfer{Src: srcFD, Dst: dstFD, Length: 5, Done: func(r TransferResult) {
		usedAtDone.Store(int64(b.Used()))
		done <- r
	}}); err != nil {
		t.Fatal(err)
	}
	if got := b.Used(); got != 2 {
		t.Fatalf("during the transfer the budget counts %d, want 2", got)
	}
	src.Write([]byte("hello"))
	r := <-done
	if r.Err != nil || string(readN(t, dst, 5, 5*time.Second)) != "hello" {
		t.Fatalf("transfer: %+v", r)
	}
	if usedAtDone.Load() != 0 || b.Used() != 0 {
		t.Fatalf("budget at Done %d, after %d: the handed-back fds are the caller's", usedAtDone.Load(), b.Used())
	}
	unix.Close(r.Src)
	unix.Close(r.Dst)
}

// With no room left in the fd budget the plane creates no pipe and copies.
func TestFDBudgetFullCopies(t *testing.T) {
	if !spliceSupported {
		t.Skip("no splice(2)")
	}
	b := fdbudget.New(2) // exactly one tunnel's sockets
	p := newPlane(t, Config{Splice: true, Loops: 1, FDs: b})
	e := openTunnel(t, p, listen(t), nil, nil)
	bulk(t, e, 2<<20, 30*time.Second)
	e.result(t, 5*time.Second)
	s := p.Stats()
	if s.BytesSpliced != 0 || s.PipeFallbacks == 0 || s.PipesIdle+s.PipesBusy != 0 {
		t.Fatalf("stats %+v", s)
	}
	if b.Used() != 0 {
		t.Fatalf("budget %d after the tunnel closed", b.Used())
	}
}
