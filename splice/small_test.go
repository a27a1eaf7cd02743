package splice

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The small-message path: tunnels carrying small messages take one read and
// one write per message through the loop's small buffer, borrow no pipe and
// hold nothing between messages; a direction that turns bulk switches to the
// pipe (splice) and comes back after its first small read.

// TestSmallMessagesNoPipe: 2,000 echoes of 1-4,000 B each way through one
// tunnel arrive intact and in order, splice on and off, and with splice on
// not one byte of them is spliced (no pipe is borrowed for a small message).
func TestSmallMessagesNoPipe(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := openTunnel(t, p, listen(t), nil, nil)
		var sent int64
		for i := 0; i < 2000; i++ {
			size := 1 + (i*997)%4000
			msg := bytes.Repeat([]byte{byte('a' + i%26)}, size)
			msg[0], msg[size-1] = byte(i), byte(i>>8)
			if _, err := e.client.Write(msg); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, e.backend, size, 5*time.Second); !bytes.Equal(got, msg) {
				t.Fatalf("message %d (%d B) differs at the backend", i, size)
			}
			if _, err := e.backend.Write(msg); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, e.client, size, 5*time.Second); !bytes.Equal(got, msg) {
				t.Fatalf("echo %d (%d B) differs at the client", i, size)
			}
			sent += int64(size)
		}
		// The loop counts a write after it returned: the last echo may be read first.
		waitFor(2*time.Second, func() bool { return p.Stats().BytesCopied == 2*sent })
		s := p.Stats()
		if s.BytesSpliced != 0 || s.PipesBusy+s.PipesIdle != 0 {
			t.Fatalf("small messages went through pipes: %+v", s)
		}
		if s.BytesCopied != 2*sent {
			t.Fatalf("copied %d bytes, want %d", s.BytesCopied, 2*sent)
		}
		e.close()
		if r := e.result(t, 5*time.Second); r.ClientToBackend != sent || r.BackendToClient != sent {
			t.Fatalf("result %+v, want %d each way", r, sent)
		}
	})
}

// TestSmallBulkSmall: a direction that carries small messages, then a bulk
// stream, then small messages again: the bulk stream is spliced (splice on),
// and after it at most one small message goes through a pipe before the
// direction is small again.
func TestSmallBulkSmall(t *testing.T) {
	if !spliceSupported {
		t.Skip("no splice(2)")
	}
	p := newPlane(t, Config{Splice: true, Loops: 1})
	e := openTunnel(t, p, listen(t), nil, nil)
	echo := func(i int) {
		t.Helper()
		msg := []byte(fmt.Sprintf("small message %04d", i))
		e.client.Write(msg)
		if got := readN(t, e.backend, len(msg), 5*time.Second); !bytes.Equal(got, msg) {
			t.Fatalf("small %d: got %q", i, got)
		}
	}
	for i := 0; i < 10; i++ {
		echo(i)
	}
	if s := p.Stats(); s.BytesSpliced != 0 {
		t.Fatalf("small messages spliced: %+v", s)
	}
	const n = 32 << 20
	done := make(chan [32]byte, 1)
	go func() {
		h, n, err := drainN(e.backend, n)
		if err != nil || n != 32<<20 {
			t.Errorf("bulk: %d bytes, %v", n, err)
		}
		done <- h
	}()
	sum, err := streamNoClose(e.client, 3, n)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != sum {
		t.Fatal("bulk stream differs")
	}
	spliced := p.Stats().BytesSpliced
	if spliced < n/2 {
		t.Fatalf("a 32 MiB stream spliced only %d bytes", spliced)
	}
	for i := 10; i < 30; i++ {
		echo(i)
	}
	if d := p.Stats().BytesSpliced - spliced; d > smallsToDecay*int64(len("small message 0000")) {
		t.Fatalf("after the bulk stream %d more bytes were spliced: the direction did not come back to small", d)
	}
}

// TestSmallDataAndFINTogether: bytes and the sender's FIN that are both
// already queued when the plane first looks (one edge reports both) are
// delivered, then the EOF: a short read must not be taken as "drained" when
// the peer has shut down its side.
func TestSmallDataAndFINTogether(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		for i := 0; i < 20; i++ {
			client, cfd := tcpPair(t, ln)
			backend, bfd := tcpPair(t, ln)
			client.Write([]byte("last words"))
			client.CloseWrite()
			time.Sleep(time.Millisecond) // both are in cfd's receive queue before the plane sees it
			res := make(chan TunnelResult, 1)
			if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, OnClose: func(r TunnelResult) { res <- r }}); err != nil {
				t.Fatal(err)
			}
			backend.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(backend)
			if err != nil || string(got) != "last words" {
				t.Fatalf("round %d: backend read %q, %v; want the bytes then EOF", i, got, err)
			}
			backend.Close()
			select {
			case r := <-res:
				if r.ClientToBackend != 10 {
					t.Fatalf("result %+v", r)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("tunnel did not end")
			}
			client.Close()
		}
	})
}

// TestSmallMessagesStalledDst: small messages toward a destination that does
// not read: the ones the kernel cannot take wait (a partly written one in an
// exact-size remainder, the rest in the client's socket: backpressure), and
// all of them arrive intact and in order once it reads.
func TestSmallMessagesStalledDst(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		client, cfd := tcpPair(t, ln)
		backend, bfd := tcpPair(t, ln)
		defer client.Close()
		defer backend.Close()
		// A small send buffer toward the backend, so that one small message
		// at a time meets a full socket.
		if err := unix.SetsockoptInt(bfd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
			t.Fatal(err)
		}
		res := make(chan TunnelResult, 1)
		if err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, OnClose: func(r TunnelResult) { res <- r }}); err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		for i := 0; i < 600; i++ {
			msg := []byte(fmt.Sprintf("<message %06d %s>", i, bytes.Repeat([]byte{'m'}, 700+i%300)))
			if _, err := client.Write(msg); err != nil {
				t.Fatal(err)
			}
			want.Write(msg)
			if i%20 == 0 {
				time.Sleep(time.Millisecond) // let the plane read them one by one
			}
		}
		got := readN(t, backend, want.Len(), 20*time.Second)
		if i := firstDiff(got, want.Bytes()); i >= 0 {
			t.Fatalf("stream differs at byte %d of %d", i, want.Len())
		}
		client.Close()
		backend.Close()
		select {
		case r := <-res:
			if r.ClientToBackend != int64(want.Len()) {
				t.Fatalf("result %+v, want %d", r, want.Len())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("tunnel did not end")
		}
		if s := p.Stats(); s.PipesBusy != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestSmallMessageZeroAllocs: a small message each way allocates nothing,
// splice on and off.
func TestSmallMessageZeroAllocs(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := openTunnel(t, p, listen(t), nil, nil)
		msg := make([]byte, 100)
		buf := make([]byte, 100)
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
			round()
		}
		if allocs := testing.AllocsPerRun(500, round); allocs > 0 {
			t.Fatalf("small-message path allocates: %v per round trip", allocs)
		}
	})
}

// streamNoClose is stream without the half-close.
func streamNoClose(w io.Writer, seed uint64, n int64) ([32]byte, error) {
	return stream(struct{ io.Writer }{w}, seed, n)
}

// drainN reads exactly n bytes and returns their SHA-256.
func drainN(r io.Reader, n int64) ([32]byte, int64, error) {
	return drain(io.LimitReader(r, n))
}
