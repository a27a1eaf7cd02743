//go:build linux

package handoff

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// endpoint is one end a test holds: it sends the numbered stream key and
// checks that what arrives is its peer's stream, every byte exactly once
// and in order.
type endpoint struct {
	fd   int
	key  uint64
	peer *endpoint
	tx   atomic.Uint64 // bytes written
	rx   atomic.Uint64 // bytes received and verified
}

// patternByte is byte off of stream key: 8-byte words of a 64-bit mix of
// (key, word index), so a lost, repeated or reordered run shows at once.
func patternByte(key, off uint64) byte {
	x := key*0x9E3779B97F4A7C15 ^ (off >> 3) ^ 0xD1B54A32D192ED03
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	return byte(x >> (8 * (off & 7)))
}

// send writes up to n more bytes of the stream without blocking.
func (e *endpoint) send(buf []byte, n int) {
	off := e.tx.Load()
	for i := 0; i < n; i++ {
		buf[i] = patternByte(e.key, off+uint64(i))
	}
	w, err := unix.Write(e.fd, buf[:n])
	if err == nil && w > 0 {
		e.tx.Add(uint64(w))
	}
}

// traffic drives a set of endpoints: one writer goroutine in rounds, one
// reader goroutine on its own epoll set that verifies every byte.
type traffic struct {
	eps    []*endpoint
	ep     int
	chunk  int
	pause  time.Duration
	writeQ atomic.Bool
	stopQ  atomic.Bool
	wg     sync.WaitGroup // reader
	wwg    sync.WaitGroup // writer
	errMu  sync.Mutex
	err    error
	rounds atomic.Int64
}

func newTraffic(t *testing.T, eps []*endpoint, chunk int, pause time.Duration) *traffic {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	tr := &traffic{eps: eps, ep: ep, chunk: chunk, pause: pause}
	for i, e := range eps {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, e.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	tr.wg.Add(1)
	go tr.read()
	return tr
}

func (tr *traffic) fail(err error) {
	tr.errMu.Lock()
	if tr.err == nil {
		tr.err = err
	}
	tr.errMu.Unlock()
}

func (tr *traffic) firstErr() error {
	tr.errMu.Lock()
	defer tr.errMu.Unlock()
	return tr.err
}

func (tr *traffic) read() {
	defer tr.wg.Done()
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	bad := make([]bool, len(tr.eps))
	for !tr.stopQ.Load() {
		n, err := unix.EpollWait(tr.ep, events, 50)
		if err != nil && err != unix.EINTR {
			tr.fail(err)
			return
		}
		for i := 0; i < n; i++ {
			idx := int(events[i].Fd)
			e := tr.eps[idx]
			for {
				m, err := unix.Read(e.fd, buf)
				if m <= 0 || err != nil {
					if err != unix.EAGAIN && err != unix.EINTR {
						unix.EpollCtl(tr.ep, unix.EPOLL_CTL_DEL, e.fd, nil) // EOF or reset: nothing more to check
					}
					break
				}
				if bad[idx] {
					continue
				}
				off := e.rx.Load()
				for j := 0; j < m; j++ {
					if want := patternByte(e.peer.key, off+uint64(j)); buf[j] != want {
						bad[idx] = true
						tr.fail(fmt.Errorf("stream %d at byte %d: got %#02x, want %#02x", e.peer.key, off+uint64(j), buf[j], want))
						break
					}
				}
				if !bad[idx] {
					e.rx.Add(uint64(m))
				}
			}
		}
	}
}

// startWriting runs write rounds over every endpoint until stopWriting.
func (tr *traffic) startWriting() {
	tr.writeQ.Store(true)
	tr.wwg.Add(1)
	go func() {
		defer tr.wwg.Done()
		buf := make([]byte, tr.chunk)
		for tr.writeQ.Load() {
			for _, e := range tr.eps {
				e.send(buf, tr.chunk)
			}
			tr.rounds.Add(1)
			time.Sleep(tr.pause)
		}
	}()
}

// stopWriting stops the writer and waits for its round to end.
func (tr *traffic) stopWriting() {
	tr.writeQ.Store(false)
	tr.wwg.Wait()
}

// waitRounds waits until n more write rounds (over every endpoint) ended.
func (tr *traffic) waitRounds(n int64) {
	end := tr.rounds.Load() + n
	for tr.rounds.Load() < end {
		time.Sleep(5 * time.Millisecond)
	}
}

// totalTx sums bytes written so far.
func (tr *traffic) totalTx() (n uint64) {
	for _, e := range tr.eps {
		n += e.tx.Load()
	}
	return n
}

// waitDelivered waits until every endpoint received all its peer sent.
func (tr *traffic) waitDelivered(t *testing.T, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		if err := tr.firstErr(); err != nil {
			t.Fatal(err)
		}
		missing, where := 0, ""
		for _, e := range tr.eps {
			if e.rx.Load() != e.peer.tx.Load() {
				missing++
				where = fmt.Sprintf("stream %d: %d of %d bytes", e.peer.key, e.rx.Load(), e.peer.tx.Load())
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d endpoints still missing bytes after %v, e.g. %s", missing, d, where)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tr *traffic) close() {
	tr.stopWriting()
	tr.stopQ.Store(true)
	tr.wg.Wait()
	unix.Close(tr.ep)
	for _, e := range tr.eps {
		unix.Close(e.fd)
	}
}

// tunnelSet is n tunnels of real loopback TCP connections: client
// endpoint C <-> P1 [relay] P2 <-> backend endpoint B. The test keeps C and
// B; P1 and P2 belong to the relay and are what moves between processes.
type tunnelSet struct {
	eps     []*endpoint // 2i: client, 2i+1: backend
	targets map[uint64][2]string
}

func newTunnels(t *testing.T, n int, rel *relay) *tunnelSet {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (int, int) {
		d, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return rawFD(t, d), rawFD(t, a)
	}
	ts := &tunnelSet{targets: map[uint64][2]string{}}
	for i := 0; i < n; i++ {
		c, p1 := pair()
		p2, b := pair()
		ec := &endpoint{fd: c, key: uint64(2 * i)}
		eb := &endpoint{fd: b, key: uint64(2*i + 1)}
		ec.peer, eb.peer = eb, ec
		ts.eps = append(ts.eps, ec, eb)
		ts.targets[uint64(i)] = [2]string{fdTarget(p1), fdTarget(p2)}
		if err := rel.add(uint64(i), p1, p2); err != nil {
			t.Fatal(err)
		}
	}
	return ts
}

// rawFD takes a net.Conn's socket as a plain close-on-exec fd (it stays
// non-blocking) and closes the Conn.
func rawFD(t *testing.T, c net.Conn) int {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return fd
}
