package splice

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv("SPLICE_TEST_BACKEND") == "1" {
		backendChild() // TestUpgradeStorm's backend process
		return
	}
	// 2,000 tunnels need 8,000 fds and the idle-memory test 16,000; the
	// hard limit here is 20,000.
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
	os.Exit(m.Run())
}

// modes runs f as subtests with splice on and off. Where splice(2) does not
// exist (spliceSupported false) "on" is what a splice request gets there,
// the copy path, so both subtests run it; TestTunnelSpliceRequestPortable checks
// that a request for splice really lands on it.
func modes(t *testing.T, f func(t *testing.T, spliceOn bool)) {
	t.Run("splice", func(t *testing.T) { f(t, spliceSupported) })
	t.Run("copy", func(t *testing.T) { f(t, false) })
}

func newPlane(t testing.TB, cfg Config) *Plane {
	t.Helper()
	p, err := NewPlane(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// tcpPair returns the dialing end as a net.TCPConn for the test and the
// accepted end as a raw fd (a CLOEXEC dup, Go's copy closed) for the plane.
func tcpPair(t testing.TB, ln net.Listener) (*net.TCPConn, int) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd := detach(t, a.(*net.TCPConn))
	return c.(*net.TCPConn), fd
}

func detach(t testing.TB, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		t.Fatal(err)
	}
	if derr != nil {
		t.Fatal(derr)
	}
	c.Close()
	return fd
}

type tunnelEnds struct {
	client, backend *net.TCPConn
	res             chan TunnelResult
}

func (e *tunnelEnds) close() {
	e.client.Close()
	e.backend.Close()
}

func (e *tunnelEnds) result(t testing.TB, d time.Duration) TunnelResult {
	t.Helper()
	select {
	case r := <-e.res:
		return r
	case <-time.After(d):
		t.Fatalf("tunnel did not end within %v", d)
	}
	return TunnelResult{}
}

func openTunnel(t testing.TB, p *Plane, ln net.Listener, toBackend, toClient []byte) *tunnelEnds {
	t.Helper()
	e := &tunnelEnds{res: make(chan TunnelResult, 1)}
	var cfd, bfd int
	e.client, cfd = tcpPair(t, ln)
	e.backend, bfd = tcpPair(t, ln)
	err := p.Tunnel(Tunnel{ClientFD: cfd, BackendFD: bfd, ToBackend: toBackend, ToClient: toClient,
		OnClose: func(r TunnelResult) { e.res <- r }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

// stream writes n pseudo-random bytes (seeded) to w and returns their
// SHA-256; when w is a TCP conn it half-closes afterwards.
func stream(w io.Writer, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	buf := make([]byte, 256<<10)
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		r.Read(b)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return [32]byte{}, err
		}
		n -= int64(len(b))
	}
	if c, ok := w.(*net.TCPConn); ok {
		if err := c.CloseWrite(); err != nil {
			return [32]byte{}, err
		}
	}
	var s [32]byte
	h.Sum(s[:0])
	return s, nil
}

// drain reads r to EOF and returns the SHA-256 and count.
func drain(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
	var s [32]byte
	h.Sum(s[:0])
	return s, n, err
}

// bulk sends n bytes each way at once through e and checks both digests.
func bulk(t testing.TB, e *tunnelEnds, n int64, deadline time.Duration) {
	t.Helper()
	dl := time.Now().Add(deadline)
	e.client.SetDeadline(dl)
	e.backend.SetDeadline(dl)
	type out struct {
		sum [32]byte
		n   int64
		err error
	}
	var wg sync.WaitGroup
	var sentC, sentB, gotB, gotC out
	wg.Add(4)
	go func() { defer wg.Done(); sentC.sum, sentC.err = stream(e.client, 1, n) }()
	go func() { defer wg.Done(); sentB.sum, sentB.err = stream(e.backend, 2, n) }()
	go func() { defer wg.Done(); gotB.sum, gotB.n, gotB.err = drain(e.backend) }()
	go func() { defer wg.Done(); gotC.sum, gotC.n, gotC.err = drain(e.client) }()
	wg.Wait()
	for _, o := range []struct {
		name string
		o    out
	}{{"client write", sentC}, {"backend write", sentB}, {"backend read", gotB}, {"client read", gotC}} {
		if o.o.err != nil {
			t.Fatalf("%s: %v", o.name, o.o.err)
		}
	}
	if gotB.n != n || gotB.sum != sentC.sum {
		t.Fatalf("client->backend: got %d bytes sha %x, sent %d sha %x", gotB.n, gotB.sum[:6], n, sentC.sum[:6])
	}
	if gotC.n != n || gotC.sum != sentB.sum {
		t.Fatalf("backend->client: got %d bytes sha %x, sent %d sha %x", gotC.n, gotC.sum[:6], n, sentB.sum[:6])
	}
}

func readN(t testing.TB, c net.Conn, n int, d time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	c.SetReadDeadline(time.Time{})
	return b
}

// expectEOF waits up to d for c to report EOF (or a reset) and returns how long it took.
func expectEOF(t testing.TB, c net.Conn, d time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	var b [512]byte
	for {
		n, err := c.Read(b[:])
		if n > 0 {
			t.Fatalf("expected EOF, got %d bytes %q", n, b[:n])
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no EOF within %v", d)
			}
			if err == io.EOF {
				return time.Since(start), nil
			}
			return time.Since(start), err
		}
	}
}

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFor polls cond every 5ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// readFD reads exactly n bytes from a non-blocking fd within d.
func readFD(fd, n int, d time.Duration) ([]byte, error) {
	out := make([]byte, 0, n)
	end := time.Now().Add(d)
	buf := make([]byte, 64<<10)
	for len(out) < n {
		left := time.Until(end)
		if left <= 0 {
			return out, fmt.Errorf("readFD: timeout with %d/%d bytes", len(out), n)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return out, err
		}
		m, err := unix.Read(fd, buf[:min(len(buf), n-len(out))])
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return out, err
		}
		if m == 0 {
			return out, io.EOF
		}
		out = append(out, buf[:m]...)
	}
	return out, nil
}
