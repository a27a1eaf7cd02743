package splice

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTunnelEcho(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 2})
		if got := p.Stats().SpliceAvailable; got != on {
			t.Fatalf("SpliceAvailable = %v, want %v", got, on)
		}
		ln := listen(t)
		e := openTunnel(t, p, ln, nil, nil)
		for _, size := range []int{1, 7, 1 << 10, 64 << 10, 1<<20 + 3} {
			up := bytes.Repeat([]byte{'u'}, size)
			up[0], up[size-1] = 'A', 'Z'
			go e.client.Write(up)
			if got := readN(t, e.backend, size, 10*time.Second); !bytes.Equal(got, up) {
				t.Fatalf("size %d: backend got different bytes", size)
			}
			down := bytes.Repeat([]byte{'d'}, size)
			go e.backend.Write(down)
			if got := readN(t, e.client, size, 10*time.Second); !bytes.Equal(got, down) {
				t.Fatalf("size %d: client got different bytes", size)
			}
		}
		e.client.Close()
		e.backend.Close()
		r := e.result(t, 5*time.Second)
		want := int64(1 + 7 + 1<<10 + 64<<10 + 1<<20 + 3)
		if r.ClientToBackend != want || r.BackendToClient != want {
			t.Fatalf("counts %d/%d, want %d each", r.ClientToBackend, r.BackendToClient, want)
		}
		s := p.Stats()
		if on && s.BytesSpliced == 0 {
			t.Fatal("splice mode spliced nothing")
		}
		if !on && s.BytesSpliced != 0 {
			t.Fatalf("copy mode spliced %d bytes", s.BytesSpliced)
		}
	})
}

// bulkSize: 256 MiB each way (about 2s per mode with -race here), 32 MiB
// with -short.
func bulkSize() int64 {
	if testing.Short() {
		return 32 << 20
	}
	return 256 << 20
}

func TestTunnelBulkBothWays(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 2})
		e := openTunnel(t, p, listen(t), nil, nil)
		n := bulkSize()
		bulk(t, e, n, 120*time.Second)
		r := e.result(t, 5*time.Second)
		if r.Err != nil || r.ClientToBackend != n || r.BackendToClient != n {
			t.Fatalf("result %+v, want clean close with %d each way", r, n)
		}
		if s := p.Stats(); s.PipesBusy != 0 || s.Tunnels != 0 {
			t.Fatalf("after tunnel: %+v", s)
		}
	})
}

func TestTunnelPendingFirst(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1, BufferSize: 4 << 10})
		ln := listen(t)
		// Larger than BufferSize to cover the exact-size pending buffer.
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<12)
		for _, pend := range [][]byte{[]byte("PENDING-TO-BACKEND|"), big} {
			toClient := []byte("pending-to-client|")
			cfd, bfd := 0, 0
			var client, backend *net.TCPConn
			client, cfd = tcpPair(t, ln)
			backend, bfd = tcpPair(t, ln)
			// Bytes already queued in the sockets must come after the pending ones.
			client.Write([]byte("after-c"))
			backend.Write([]byte("after-b"))
			time.Sleep(10 * time.Millisecond)
			if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ToBackend: pend, ToClient: toClient}); err != nil {
				t.Fatal(err)
			}
			// The plane copied the slices: scribbling on them must not matter.
			orig := append([]byte(nil), pend...)
			for i := range pend {
				if &pend[0] != &big[0] {
					pend[i] = 'X'
				}
			}
			got := readN(t, backend, len(orig)+7, 5*time.Second)
			if want := append(orig, "after-c"...); !bytes.Equal(got, want) {
				t.Fatalf("backend got %q..., want %q...", got[:min(40, len(got))], want[:40])
			}
			if got := readN(t, client, len(toClient)+7, 5*time.Second); string(got) != "pending-to-client|after-b" {
				t.Fatalf("client got %q", got)
			}
			client.Close()
			backend.Close()
		}
	})
}

func TestTunnelHalfClose(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 2})
		ln := listen(t)
		for _, clientFirst := range []bool{true, false} {
			t.Run(fmt.Sprintf("clientFirst=%v", clientFirst), func(t *testing.T) {
				e := openTunnel(t, p, ln, nil, nil)
				first, second := e.client, e.backend
				if !clientFirst {
					first, second = e.backend, e.client
				}
				first.Write([]byte("request"))
				first.CloseWrite()
				second.SetReadDeadline(time.Now().Add(5 * time.Second))
				got, err := io.ReadAll(second)
				if err != nil || string(got) != "request" {
					t.Fatalf("after CloseWrite the peer read %q, %v; want request then EOF", got, err)
				}
				// The other direction still works after the first one finished.
				second.Write([]byte("answer"))
				if got := readN(t, first, 6, 5*time.Second); string(got) != "answer" {
					t.Fatalf("reply after half-close: %q", got)
				}
				second.CloseWrite()
				if _, err := expectEOF(t, first, 5*time.Second); err != nil {
					t.Fatalf("second half-close: %v", err)
				}
				r := e.result(t, 5*time.Second)
				if r.Err != nil {
					t.Fatalf("clean half-close ended with %v", r.Err)
				}
				c2b, b2c := int64(7), int64(6)
				if !clientFirst {
					c2b, b2c = b2c, c2b
				}
				if r.ClientToBackend != c2b || r.BackendToClient != b2c {
					t.Fatalf("counts %+v", r)
				}
			})
		}
	})
}

func TestTunnelReset(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 2})
		ln := listen(t)
		for _, resetClient := range []bool{true, false} {
			t.Run(fmt.Sprintf("resetClient=%v", resetClient), func(t *testing.T) {
				e := openTunnel(t, p, ln, nil, nil)
				e.client.Write([]byte("ping"))
				readN(t, e.backend, 4, 5*time.Second)
				victim, other, name := e.client, e.backend, "client"
				if !resetClient {
					victim, other, name = e.backend, e.client, "backend"
				}
				victim.SetLinger(0)
				victim.Close() // RST
				// The other side is closed promptly even though it is
				// quiet and the tunnel has no fin or idle timeout.
				took, _ := expectEOF(t, other, 3*time.Second)
				if took > 2*time.Second {
					t.Fatalf("other side closed after %v", took)
				}
				r := e.result(t, 3*time.Second)
				if r.Err == nil || !strings.Contains(r.Err.Error(), name) || !errors.Is(r.Err, unix.ECONNRESET) {
					t.Fatalf("err %v, want a connection reset naming the %s", r.Err, name)
				}
				t.Logf("reset reported as: %v", r.Err)
			})
		}
	})
}

func TestTunnelResetWhileStalled(t *testing.T) {
	// client->backend is stalled on a backend that never reads; the client
	// then resets. The plane must notice via EPOLLERR, not wait forever.
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := openTunnel(t, p, listen(t), nil, nil)
		junk := make([]byte, 1<<20)
		e.client.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		for i := 0; i < 64; i++ {
			if _, err := e.client.Write(junk); err != nil {
				break // buffers full: the stall is in place
			}
		}
		e.client.SetLinger(0)
		e.client.Close()
		r := e.result(t, 5*time.Second)
		if r.Err == nil {
			t.Fatal("reset of a stalled tunnel reported no error")
		}
		t.Logf("stalled reset: %v", r.Err)
	})
}

func TestTunnelIdleTimeout(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		const idle = time.Second
		p := newPlane(t, Config{Splice: on, Loops: 1, IdleTimeout: idle})
		ln := listen(t)
		busy := openTunnel(t, p, ln, nil, nil)
		quiet := openTunnel(t, p, ln, nil, nil)
		start := time.Now()
		// busy: a byte every 50ms for 1.5 idle periods keeps it alive (the
		// wide margin to the timeout absorbs a loaded CI machine; the
		// failure message shows the largest gap the test itself caused).
		last, maxGap := time.Now(), time.Duration(0)
		for i := 0; i < 30; i++ {
			maxGap = max(maxGap, time.Since(last))
			last = time.Now()
			busy.client.Write([]byte{byte(i)})
			busy.backend.SetReadDeadline(time.Now().Add(2 * time.Second))
			var got [1]byte
			if _, err := io.ReadFull(busy.backend, got[:]); err != nil || got[0] != byte(i) {
				select {
				case r := <-busy.res:
					t.Fatalf("busy tunnel byte %d: %v; tunnel ended after %v (largest gap between writes %v): %+v",
						i, err, time.Since(start), maxGap, r)
				default:
					t.Fatalf("busy tunnel byte %d = %d, %v", i, got[0], err)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		r := quiet.result(t, 3*time.Second)
		took := time.Since(start)
		if !errors.Is(r.Err, ErrIdleTimeout) {
			t.Fatalf("quiet tunnel ended with %v, want idle timeout", r.Err)
		}
		if _, err := expectEOF(t, quiet.client, 2*time.Second); err != nil {
			t.Logf("client saw %v", err)
		}
		if took < idle {
			t.Fatalf("idle timeout fired after %v, before %v", took, idle)
		}
		select {
		case r := <-busy.res:
			t.Fatalf("busy tunnel was closed: %+v", r)
		default:
		}
		// Now let busy go quiet too.
		r = busy.result(t, 3*time.Second)
		if !errors.Is(r.Err, ErrIdleTimeout) {
			t.Fatalf("busy tunnel ended with %v", r.Err)
		}
	})
}

func TestTunnelFinTimeout(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		const fin = 300 * time.Millisecond
		p := newPlane(t, Config{Splice: on, Loops: 1, FinTimeout: fin})
		e := openTunnel(t, p, listen(t), nil, nil)
		start := time.Now() // the plane arms the timer after this
		e.client.CloseWrite()
		if _, err := expectEOF(t, e.backend, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		// The backend never closes its side: the fin timeout ends it.
		expectEOF(t, e.client, 5*time.Second)
		took := time.Since(start)
		r := e.result(t, 2*time.Second)
		if !errors.Is(r.Err, ErrFinTimeout) {
			t.Fatalf("ended with %v, want fin timeout", r.Err)
		}
		if took < fin || took > 4*time.Second {
			t.Fatalf("fin timeout after %v, want about %v", took, fin)
		}
		t.Logf("fin timeout %v fired after %v", fin, took)
	})
}

func TestTunnelNoPipesFallsBackToCopy(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1, PipePoolMax: -1})
		var tries sync.Map
		p.pipe2 = func(fds []int, flags int) error {
			tries.Store("x", true)
			return unix.EMFILE
		}
		e := openTunnel(t, p, listen(t), []byte("pend"), nil)
		if got := readN(t, e.backend, 4, 5*time.Second); string(got) != "pend" {
			t.Fatalf("pending: %q", got)
		}
		bulk(t, e, 8<<20, 60*time.Second)
		r := e.result(t, 5*time.Second)
		if r.Err != nil || r.ClientToBackend != 8<<20+4 {
			t.Fatalf("result %+v", r)
		}
		s := p.Stats()
		if s.BytesSpliced != 0 || s.BytesCopied < 16<<20 || s.PipesBusy != 0 || s.PipesIdle != 0 {
			t.Fatalf("stats %+v", s)
		}
		if _, tried := tries.Load("x"); tried != on {
			t.Fatalf("pipe creation tried = %v with splice = %v", tried, on)
		}
	})
}

func TestTunnelNoLeaks(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		ln := listen(t)
		before := countFDs(t)
		const poolMax = 3
		p, err := NewPlane(Config{Splice: on, Loops: 2, PipePoolMax: poolMax})
		if err != nil {
			t.Fatal(err)
		}
		var ends []*tunnelEnds
		for i := 0; i < 8; i++ {
			ends = append(ends, openTunnel(t, p, ln, nil, nil))
		}
		var wg sync.WaitGroup
		for i, e := range ends {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%3 == 2 {
					e.client.SetLinger(0)
					e.client.Close()
					return
				}
				bulk(t, e, 2<<20, 30*time.Second)
			}()
		}
		wg.Wait()
		for _, e := range ends {
			e.result(t, 5*time.Second)
			e.close()
		}
		s := p.Stats()
		if s.Tunnels != 0 || s.PipesBusy != 0 || s.PipesIdle > 2*poolMax {
			t.Fatalf("after all tunnels ended: %+v", s)
		}
		if on && s.PipesIdle == 0 {
			t.Fatalf("no pipe returned to the pool: %+v", s)
		}
		p.Close()
		if s := p.Stats(); s.PipesIdle != 0 || s.PipesBusy != 0 {
			t.Fatalf("after Close: %+v", s)
		}
		var after int
		if !waitFor(2*time.Second, func() bool { after = countFDs(t); return after == before }) {
			t.Fatalf("fd leak: %d fds before, %d after", before, after)
		}
	})
}

func TestTunnelMany(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		n := 2000
		p := newPlane(t, Config{Splice: on})
		ln := listen(t)
		ends := make([]*tunnelEnds, n)
		for i := range ends {
			ends[i] = openTunnel(t, p, ln, nil, nil)
		}
		if !waitFor(5*time.Second, func() bool { return p.Stats().Tunnels == int64(n) }) {
			t.Fatalf("active tunnels %d, want %d", p.Stats().Tunnels, n)
		}
		errs := make(chan error, n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 256)
		for i, e := range ends {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				dl := time.Now().Add(20 * time.Second)
				e.client.SetDeadline(dl)
				e.backend.SetDeadline(dl)
				msg := fmt.Sprintf("hello from client %d", i)
				if _, err := e.client.Write([]byte(msg)); err != nil {
					errs <- err
					return
				}
				b := make([]byte, len(msg))
				if _, err := io.ReadFull(e.backend, b); err != nil || string(b) != msg {
					errs <- fmt.Errorf("tunnel %d: backend got %q, %v", i, b, err)
					return
				}
				reply := fmt.Sprintf("reply %d", i)
				e.backend.Write([]byte(reply))
				b = make([]byte, len(reply))
				if _, err := io.ReadFull(e.client, b); err != nil || string(b) != reply {
					errs <- fmt.Errorf("tunnel %d: client got %q, %v", i, b, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, e := range ends {
			e.close()
		}
		if !waitFor(10*time.Second, func() bool { return p.Stats().Tunnels == 0 }) {
			t.Fatalf("tunnels left: %+v", p.Stats())
		}
		if s := p.Stats(); s.PipesBusy != 0 || s.TunnelsTotal != int64(n) {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestPlaneCloseEndsTunnels(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p, err := NewPlane(Config{Splice: on, Loops: 2})
		if err != nil {
			t.Fatal(err)
		}
		ln := listen(t)
		e1 := openTunnel(t, p, ln, nil, nil)
		e2 := openTunnel(t, p, ln, []byte("x"), nil)
		readN(t, e2.backend, 1, 5*time.Second)
		p.Close()
		for _, e := range []*tunnelEnds{e1, e2} {
			if r := e.result(t, 2*time.Second); !errors.Is(r.Err, ErrClosed) {
				t.Fatalf("close reported %v", r.Err)
			}
			expectEOF(t, e.client, 2*time.Second)
			expectEOF(t, e.backend, 2*time.Second)
		}
		c, cfd := tcpPair(t, ln)
		b, bfd := tcpPair(t, ln)
		defer c.Close()
		defer b.Close()
		if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Tunnel after Close: %v", err)
		}
		// The plane owned and closed both fds despite the error.
		expectEOF(t, c, 2*time.Second)
		expectEOF(t, b, 2*time.Second)
	})
}

// TestTunnelZeroAllocs proves the data path allocates nothing per byte:
// AllocsPerRun counts mallocs of the whole process, loop goroutines
// included, while 64 KiB round trips through an established tunnel.
func TestTunnelZeroAllocs(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := openTunnel(t, p, listen(t), nil, nil)
		msg := make([]byte, 64<<10)
		buf := make([]byte, 64<<10)
		round := func() {
			if _, err := e.client.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(e.backend, buf); err != nil {
				t.Fatal(err)
			}
			if _, err := e.backend.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(e.client, buf); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 20; i++ {
			round() // warm the pools
		}
		allocs := testing.AllocsPerRun(200, round)
		t.Logf("allocs per 128 KiB round trip: %v", allocs)
		if allocs > 0 {
			t.Fatalf("data path allocates: %v allocs per round trip", allocs)
		}
	})
}

// A socket that answers splice with EINVAL (as some socket types and
// sandboxes do) makes that direction copy, without losing a byte.
func TestTunnelSpliceEINVALFallsBackToCopy(t *testing.T) {
	if !spliceSupported {
		t.Skip("splice(2) is Linux-only: there is no splice call to refuse here")
	}
	p := newPlane(t, Config{Splice: true, Loops: 1})
	var calls atomic.Int32
	p.spliceIn = func(in, out, n int) (int, error) {
		calls.Add(1)
		return 0, unix.EINVAL
	}
	e := openTunnel(t, p, listen(t), []byte("pending|"), nil)
	if got := readN(t, e.backend, 8, 5*time.Second); string(got) != "pending|" {
		t.Fatalf("pending: %q", got)
	}
	bulk(t, e, 4<<20, 60*time.Second)
	if r := e.result(t, 5*time.Second); r.Err != nil {
		t.Fatal(r.Err)
	}
	s := p.Stats()
	if s.BytesSpliced != 0 || s.BytesCopied != 8<<20+8 || s.PipesBusy != 0 {
		t.Fatalf("stats %+v", s)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("splice tried on %d sockets, want 2 (once per direction)", n)
	}
}

// A pending far bigger than the socket buffers, towards a reader that is
// not reading yet: Tunnel writes what the kernel takes inline and keeps the
// rest, and every pending byte still reaches the backend, in order, before
// the bytes the client had already sent and the ones it sends afterwards.
func TestTunnelLargePendingSlowReader(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		n := 8 << 20
		if testing.Short() {
			n = 2 << 20
		}
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		pend := make([]byte, n)
		for i := range pend {
			pend[i] = byte(i * 7 / 3)
		}
		client, cfd := tcpPair(t, ln)
		backend, bfd := tcpPair(t, ln)
		defer client.Close()
		defer backend.Close()
		client.Write([]byte("queued-before|"))
		res := make(chan TunnelResult, 1)
		if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ToBackend: pend, ToClient: []byte("101|"),
			OnClose: func(r TunnelResult) { res <- r }}); err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(pend)
		for i := range pend {
			pend[i] = 'X' // the plane must have copied or written them already
		}
		if _, err := client.Write([]byte("sent-after")); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, client, 4, 5*time.Second); string(got) != "101|" {
			t.Fatalf("client got %q", got)
		}
		time.Sleep(100 * time.Millisecond) // the backend is slow to start reading
		want = append(want, "queued-before|sent-after"...)
		backend.SetReadDeadline(time.Now().Add(30 * time.Second))
		got := make([]byte, len(want))
		for off := 0; off < len(got); {
			m, err := backend.Read(got[off:min(off+64<<10, len(got))])
			if err != nil {
				t.Fatalf("backend read after %d bytes: %v", off, err)
			}
			off += m
			if off < len(want)/2 && off%(1<<20) < m {
				time.Sleep(5 * time.Millisecond) // keep the plane's side stalled now and then
			}
		}
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("backend stream differs at byte %d of %d: got %q want %q", i, len(want),
				got[i:min(i+16, len(got))], want[i:min(i+16, len(want))])
		}
		client.Close()
		backend.Close()
		var r TunnelResult
		select {
		case r = <-res:
		case <-time.After(5 * time.Second):
			t.Fatal("tunnel did not end")
		}
		if r.ClientToBackend != int64(len(want)) || r.BackendToClient != 4 {
			t.Fatalf("result %+v, want %d/4", r, len(want))
		}
		if s := p.Stats(); s.BytesCopied+s.BytesSpliced != int64(len(want))+4 || s.PipesBusy != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// resetPeer makes c's peer socket (the plane's fd) see an RST and waits for
// it to arrive.
func resetPeer(t *testing.T, c *net.TCPConn, fd int) {
	t.Helper()
	c.SetLinger(0)
	c.Close()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		if _, err := unix.Poll(pfd, 100); err == nil && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
			return
		}
	}
	t.Fatal("RST did not arrive")
}

// A pending write that fails inline (the backend already reset) is reported
// through OnClose like any write error on that direction, and the plane
// still owns and closes both fds.
func TestTunnelPendingWriteError(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		before := countFDs(t)
		client, cfd := tcpPair(t, ln)
		backend, bfd := tcpPair(t, ln)
		defer client.Close()
		resetPeer(t, backend, bfd)
		res := make(chan TunnelResult, 1)
		if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ToBackend: []byte("GET / HTTP/1.1\r\n\r\n"),
			OnClose: func(r TunnelResult) { res <- r }}); err != nil {
			t.Fatalf("Tunnel returned %v; a write error belongs in OnClose", err)
		}
		var r TunnelResult
		select {
		case r = <-res:
		case <-time.After(5 * time.Second):
			t.Fatal("no OnClose")
		}
		var oe *OpError
		if !errors.As(r.Err, &oe) || oe.Dir != "client->backend" || oe.Op != "write to backend" ||
			!(errors.Is(r.Err, unix.ECONNRESET) || errors.Is(r.Err, unix.EPIPE)) {
			t.Fatalf("OnClose err = %v", r.Err)
		}
		if r.ClientToBackend != 0 {
			t.Fatalf("result %+v", r)
		}
		if _, err := expectEOF(t, client, 5*time.Second); err != nil && !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("client: %v", err)
		}
		client.Close()
		if !waitFor(2*time.Second, func() bool { return countFDs(t) <= before }) {
			t.Fatalf("fds: %d before, %d after", before, countFDs(t))
		}
	})
}

// A loop keeps no more spare copy buffers than its flows recently held:
// after 8 tunnels copied both ways at once on one loop (up to 16 buffers
// out), the quiet loop is back to bufKeep spares, not 16 x 64 KiB forever.
func TestTunnelSpareBuffersShrink(t *testing.T) {
	p := newPlane(t, Config{Splice: false, Loops: 1})
	ln := listen(t)
	n := 8
	ends := make([]*tunnelEnds, n)
	for i := range ends {
		ends[i] = openTunnel(t, p, ln, nil, nil)
	}
	var wg sync.WaitGroup
	for _, e := range ends {
		wg.Add(1)
		go func() { defer wg.Done(); bulk(t, e, 4<<20, 60*time.Second) }()
	}
	wg.Wait()
	for _, e := range ends {
		if r := e.result(t, 5*time.Second); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	s := p.Stats()
	t.Logf("after the burst: %+v", s)
	if s.Tunnels != 0 || s.BuffersIdle < 1 || s.BuffersIdle > bufKeep {
		t.Fatalf("loop keeps %d spare buffers, want 1..%d", s.BuffersIdle, bufKeep)
	}
	if s.BytesCopied != int64(n)*8<<20 {
		t.Fatalf("copied %d bytes, want %d", s.BytesCopied, int64(n)*8<<20)
	}
}

// Splice requested where splice(2) does not exist: the plane says so in
// Stats and every byte takes the copy path. On Linux the same request must
// splice.
func TestTunnelSpliceRequestPortable(t *testing.T) {
	p := newPlane(t, Config{Splice: true, Loops: 1})
	if got := p.Stats().SpliceAvailable; got != spliceSupported {
		t.Fatalf("SpliceAvailable = %v, want %v", got, spliceSupported)
	}
	e := openTunnel(t, p, listen(t), nil, nil)
	bulk(t, e, 1<<20, 30*time.Second)
	if r := e.result(t, 5*time.Second); r.Err != nil || r.ClientToBackend != 1<<20 {
		t.Fatalf("result %+v", r)
	}
	s := p.Stats()
	if spliceSupported && s.BytesSpliced == 0 {
		t.Fatalf("splice requested on Linux but nothing spliced: %+v", s)
	}
	if !spliceSupported && (s.BytesSpliced != 0 || s.BytesCopied < 1<<20 || s.PipesBusy+s.PipesIdle != 0) {
		t.Fatalf("no splice(2) here, yet stats %+v", s)
	}
}
