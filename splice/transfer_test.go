package splice

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// chunkFramer is a small streaming chunked-coding decoder for the tests, so
// the plane is checked against the Framer contract and not one
// implementation of it.
type chunkFramer struct {
	state int   // 0 size, 1 ext, 2 size LF, 3 data, 4 data CR, 5 data LF, 6 trailer start, 7 trailer line, 8 final LF, 9 done
	size  int64 // current chunk size while parsing, then data left
	last  bool
}

func (d *chunkFramer) DataLeft() int64 {
	if d.state == 3 {
		return d.size
	}
	return 0
}

func (d *chunkFramer) Skip(n int64) {
	if d.state != 3 || n > d.size {
		panic("chunkFramer: bad Skip")
	}
	d.size -= n
	if d.size == 0 {
		d.state = 4
	}
}

func (d *chunkFramer) Feed(p []byte) (int, bool, error) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch d.state {
		case 0, 1:
			switch {
			case c == '\r':
				d.state = 2
			case d.state == 1:
			case c == ';':
				d.state = 1
			case c >= '0' && c <= '9':
				d.size = d.size*16 + int64(c-'0')
			case c >= 'a' && c <= 'f':
				d.size = d.size*16 + int64(c-'a'+10)
			default:
				return i, false, fmt.Errorf("bad chunk size byte %q", c)
			}
		case 2:
			if c != '\n' {
				return i, false, errors.New("want LF after size")
			}
			if d.size == 0 {
				d.state = 6
			} else {
				d.state = 3
			}
		case 3:
			k := min(int64(len(p)-i), d.size)
			d.size -= k
			i += int(k) - 1
			if d.size == 0 {
				d.state = 4
			}
		case 4:
			if c != '\r' {
				return i, false, errors.New("want CR after data")
			}
			d.state = 5
		case 5:
			if c != '\n' {
				return i, false, errors.New("want LF after data")
			}
			d.state = 0
		case 6:
			if c == '\r' {
				d.state = 8
			} else {
				d.state = 7
			}
		case 7:
			if c == '\n' {
				d.state = 6
			}
		case 8:
			if c != '\n' {
				return i, false, errors.New("want final LF")
			}
			d.state = 9
			return i + 1, true, nil
		}
	}
	return len(p), false, nil
}

type xferEnds struct {
	src, dst *net.TCPConn // test sides
	res      chan TransferResult
}

func openTransfer(t testing.TB, p *Plane, ln net.Listener, x Transfer) *xferEnds {
	t.Helper()
	e := &xferEnds{res: make(chan TransferResult, 1)}
	e.src, x.Src = tcpPair(t, ln)
	e.dst, x.Dst = tcpPair(t, ln)
	t.Cleanup(func() { e.src.Close(); e.dst.Close() })
	x.Done = func(r TransferResult) { e.res <- r }
	if err := p.Transfer(x); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *xferEnds) result(t testing.TB, d time.Duration) TransferResult {
	t.Helper()
	select {
	case r := <-e.res:
		t.Cleanup(func() { unix.Close(r.Src); unix.Close(r.Dst) })
		return r
	case <-time.After(d):
		t.Fatalf("transfer not done within %v", d)
	}
	return TransferResult{}
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestTransferLengthSlowDst moves a large Content-Length body into a reader
// that keeps stalling: the plane must hold at most a pipe or a buffer, never
// the body, and must not consume a byte past the body.
func TestTransferLengthSlowDst(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		n := int64(256 << 20)
		if testing.Short() {
			n = 32 << 20
		}
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		runtime.GC()
		base := heapInuse()
		e := openTransfer(t, p, ln, Transfer{Pending: []byte("PEND"), Length: n})
		dl := time.Now().Add(120 * time.Second)
		e.src.SetDeadline(dl)
		e.dst.SetDeadline(dl)
		sent := make(chan [32]byte, 1)
		go func() {
			s, _ := stream(struct{ io.Writer }{e.src}, 7, n) // not half-closed: next message follows
			e.src.Write([]byte("NEXT-REQUEST"))
			sent <- s
		}()
		if got := readN(t, e.dst, 4, 5*time.Second); string(got) != "PEND" {
			t.Fatalf("pending: %q", got)
		}
		e.dst.SetDeadline(dl)
		h := sha256.New()
		buf := make([]byte, 256<<10)
		var got int64
		var peak uint64
		next := int64(0)
		for got < n {
			if got >= next {
				// Let the pipe/socket buffers fill while the reader sleeps.
				time.Sleep(20 * time.Millisecond)
				peak = max(peak, heapInuse())
				next += 8 << 20
			}
			m, err := e.dst.Read(buf[:min(int64(len(buf)), n-got)])
			if err != nil {
				t.Fatalf("dst read after %d bytes: %v", got, err)
			}
			h.Write(buf[:m])
			got += int64(m)
		}
		want := <-sent
		if !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatal("body digest mismatch")
		}
		r := e.result(t, 10*time.Second)
		if r.Err != nil || r.Moved != n || r.Extra != nil {
			t.Fatalf("result err=%v moved=%d extra=%q", r.Err, r.Moved, r.Extra)
		}
		if rest, err := readFD(r.Src, 12, 5*time.Second); err != nil || string(rest) != "NEXT-REQUEST" {
			t.Fatalf("bytes after the body: %q, %v", rest, err)
		}
		growth := int64(peak) - int64(base)
		t.Logf("heap in use grew by %d KiB while moving %d MiB", growth>>10, n>>20)
		if growth > 8<<20 {
			t.Fatalf("heap grew by %d bytes", growth)
		}
		if s := p.Stats(); s.Transfers != 0 || s.PipesBusy != 0 || (on && s.BytesSpliced < n) {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestTransferChunkedExtra(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		big := bytes.Repeat([]byte("chunk-data."), 100000) // 1.1 MB: spliced via DataLeft
		head := "5\r\nhel"
		body := head + "lo\r\n" + fmt.Sprintf("%x\r\n", len(big)) + string(big) + "\r\n3;ext=1\r\nabc\r\n"
		final := "0\r\nTrailer: x\r\n\r\n"
		extra := "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
		fr := &chunkFramer{}
		if n, done, err := fr.Feed([]byte(head)); n != len(head) || done || err != nil {
			t.Fatalf("feeding pending: %d %v %v", n, done, err)
		}
		e := openTransfer(t, p, ln, Transfer{Pending: []byte(head), Length: -1, Chunked: fr})
		go e.src.Write([]byte(body[len(head):]))
		if got := readN(t, e.dst, len(body), 10*time.Second); string(got) != body {
			t.Fatal("chunked body differs")
		}
		// The end of the body and the next request in one segment: the
		// plane reads past the end and must hand those bytes back.
		e.src.Write([]byte(final + extra))
		if got := readN(t, e.dst, len(final), 10*time.Second); string(got) != final {
			t.Fatalf("final chunk: %q", got)
		}
		r := e.result(t, 5*time.Second)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if want := int64(len(body) + len(final) - len(head)); r.Moved != want {
			t.Fatalf("moved %d, want %d", r.Moved, want)
		}
		if len(r.Extra) == 0 {
			t.Fatal("no Extra bytes although the next request arrived with the last chunk")
		}
		rest, err := readFD(r.Src, len(extra)-len(r.Extra), 5*time.Second)
		if err != nil || string(r.Extra)+string(rest) != extra {
			t.Fatalf("extra %q + rest %q (%v), want %q", r.Extra, rest, err, extra)
		}
		// Nothing beyond the body reached dst.
		e.dst.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, _ := e.dst.Read(make([]byte, 64)); n != 0 {
			t.Fatalf("dst got %d bytes beyond the body", n)
		}
		if s := p.Stats(); on && s.BytesSpliced < int64(len(big))/2 {
			t.Fatalf("chunk data was not spliced: %+v", s)
		}
	})
}

func TestTransferEarlyEOF(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		e := openTransfer(t, p, listen(t), Transfer{Length: 1 << 20})
		e.src.Write(make([]byte, 1000))
		e.src.CloseWrite()
		r := e.result(t, 5*time.Second)
		if r.Err == nil || !strings.Contains(r.Err.Error(), "read from src") || !strings.Contains(r.Err.Error(), "EOF") {
			t.Fatalf("err %v, want early EOF on src", r.Err)
		}
		if r.Moved != 1000 {
			t.Fatalf("moved %d, want 1000", r.Moved)
		}
		readN(t, e.dst, 1000, 5*time.Second)
		// Both fds are handed back open.
		for _, fd := range []int{r.Src, r.Dst} {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
				t.Fatalf("fd %d not open: %v", fd, err)
			}
		}
		if s := p.Stats(); s.Transfers != 0 || s.PipesBusy != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestTransferIdleAndShort(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		start := time.Now()
		e := openTransfer(t, p, ln, Transfer{Length: 10, SrcIdleTimeout: 100 * time.Millisecond})
		r := e.result(t, 3*time.Second)
		if !errors.Is(r.Err, ErrIdleTimeout) || time.Since(start) < 100*time.Millisecond {
			t.Fatalf("idle transfer: %v after %v", r.Err, time.Since(start))
		}
		// A body that is all Pending completes without reading src.
		e = openTransfer(t, p, ln, Transfer{Pending: []byte("whole"), Length: 0})
		e.src.Write([]byte("next"))
		r = e.result(t, 3*time.Second)
		if r.Err != nil || r.Moved != 0 {
			t.Fatalf("pending-only: %+v", r)
		}
		if got := readN(t, e.dst, 5, 2*time.Second); string(got) != "whole" {
			t.Fatalf("dst got %q", got)
		}
		if rest, err := readFD(r.Src, 4, 2*time.Second); string(rest) != "next" {
			t.Fatalf("src left %q, %v", rest, err)
		}
	})
}

// TestTransferStallTimeout: StallTimeout ends a transfer whose Dst stops taking bytes, never one
// whose Src is merely quiet (a streamed or long-poll body) or whose Dst reads slowly but steadily.
func TestTransferStallTimeout(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		const stall = 200 * time.Millisecond
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)

		// A quiet source: nothing waits for dst, so nothing times out.
		e := openTransfer(t, p, ln, Transfer{Length: 5, StallTimeout: stall})
		select {
		case r := <-e.res:
			t.Fatalf("a transfer with a quiet source ended after %v: %v", 5*stall, r.Err)
		case <-time.After(5 * stall):
		}
		e.src.Write([]byte("later"))
		if r := e.result(t, 5*time.Second); r.Err != nil || r.Moved != 5 {
			t.Fatalf("quiet then complete: %+v", r)
		}
		if got := readN(t, e.dst, 5, 2*time.Second); string(got) != "later" {
			t.Fatalf("dst got %q", got)
		}

		// A destination that reads a little at a time, less than the timeout apart, for several
		// timeouts in all: progress, not a stall.
		const n = 2 << 20
		e = openTransfer(t, p, ln, Transfer{Length: n, StallTimeout: stall})
		e.dst.SetReadBuffer(16 << 10)
		go stream(e.src, 7, n)
		buf := make([]byte, 16<<10)
		got := 0
		start := time.Now()
		for got < n && time.Since(start) < 30*time.Second {
			e.dst.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, err := e.dst.Read(buf)
			got += k
			if err != nil {
				t.Fatalf("slow dst read after %d bytes: %v", got, err)
			}
			if time.Since(start) < 3*stall {
				time.Sleep(stall / 4)
			}
		}
		if r := e.result(t, 5*time.Second); r.Err != nil || r.Moved != n {
			t.Fatalf("slow but steady dst: %+v after %v", r, time.Since(start))
		}

		// A destination that stops reading: the bytes waiting for it time out.
		e = openTransfer(t, p, ln, Transfer{Length: 64 << 20, StallTimeout: stall})
		go stream(e.src, 8, 64<<20)
		r := e.result(t, 20*time.Second)
		if !errors.Is(r.Err, ErrStallTimeout) {
			t.Fatalf("stalled dst: %v, want ErrStallTimeout", r.Err)
		}
	})
}

// doneFramer is a chunkFramer that reports Done like httpparse's decoder.
type doneFramer struct{ chunkFramer }

func (d *doneFramer) Done() bool { return d.state == 9 }

func TestTransferChunkedAllPending(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		body := "3\r\nabc\r\n0\r\n\r\n"
		fr := &doneFramer{}
		if _, done, _ := fr.Feed([]byte(body)); !done {
			t.Fatal("framer did not finish on a whole body")
		}
		e := openTransfer(t, p, listen(t), Transfer{Pending: []byte(body), Length: -1, Chunked: fr})
		e.src.Write([]byte("NEXT"))
		r := e.result(t, 3*time.Second)
		if r.Err != nil || r.Moved != 0 || r.Extra != nil {
			t.Fatalf("%+v", r)
		}
		if got := readN(t, e.dst, len(body), 2*time.Second); string(got) != body {
			t.Fatalf("dst got %q", got)
		}
		if rest, err := readFD(r.Src, 4, 2*time.Second); string(rest) != "NEXT" {
			t.Fatalf("src left %q, %v", rest, err)
		}
	})
}

func TestTransferPlaneClose(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p, err := NewPlane(Config{Splice: on, Loops: 1})
		if err != nil {
			t.Fatal(err)
		}
		e := openTransfer(t, p, listen(t), Transfer{Length: 1 << 20})
		e.src.Write([]byte("part"))
		readN(t, e.dst, 4, 2*time.Second)
		p.Close()
		r := e.result(t, 2*time.Second)
		if !errors.Is(r.Err, ErrClosed) || r.Moved != 4 {
			t.Fatalf("%+v", r)
		}
		// Handed back open: the caller can still use them.
		if _, err := unix.Write(r.Dst, []byte("x")); err != nil {
			t.Fatalf("dst not usable after Close: %v", err)
		}
		if err := p.Transfer(Transfer{Src: r.Src, Dst: r.Dst, Length: 1, Done: func(TransferResult) {}}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Transfer after Close: %v", err)
		}
	})
}

// A Pending write that fails inline reaches Done as a write error on dst,
// with both fds handed back open.
func TestTransferPendingWriteError(t *testing.T) {
	modes(t, func(t *testing.T, on bool) {
		p := newPlane(t, Config{Splice: on, Loops: 1})
		ln := listen(t)
		e := &xferEnds{res: make(chan TransferResult, 1)}
		x := Transfer{Pending: []byte("POST / HTTP/1.1\r\n"), Length: 10}
		e.src, x.Src = tcpPair(t, ln)
		e.dst, x.Dst = tcpPair(t, ln)
		defer e.src.Close()
		resetPeer(t, e.dst, x.Dst)
		x.Done = func(r TransferResult) { e.res <- r }
		if err := p.Transfer(x); err != nil {
			t.Fatal(err)
		}
		r := e.result(t, 5*time.Second)
		var oe *OpError
		if !errors.As(r.Err, &oe) || oe.Dir != "src->dst" || oe.Op != "write to dst" {
			t.Fatalf("Done err = %v", r.Err)
		}
		if r.Src != x.Src || r.Dst != x.Dst || r.Moved != 0 {
			t.Fatalf("result %+v", r)
		}
		if _, err := unix.FcntlInt(uintptr(r.Src), unix.F_GETFD, 0); err != nil {
			t.Fatalf("src fd not handed back open: %v", err)
		}
	})
}
