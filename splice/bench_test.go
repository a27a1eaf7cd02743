package splice

import (
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pumpBench moves b.N MiB from w to r (one direction) and reports MB/s
// (via SetBytes) and process CPU seconds per GB moved.
func pumpBench(b *testing.B, w, r net.Conn) {
	const chunk = 1 << 20
	b.SetBytes(chunk)
	b.ReportAllocs()
	out := make([]byte, chunk)
	in := make([]byte, chunk)
	werr := make(chan error, 1)
	// One untimed round trip warms the plane's buffer/pipe pools so B/op
	// shows the steady state.
	go func() { _, err := w.Write(out); werr <- err }()
	if _, err := io.ReadFull(r, in); err != nil {
		b.Fatal(err)
	}
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := w.Write(out); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	for i := 0; i < b.N; i++ {
		if _, err := io.ReadFull(r, in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*chunk/1e9), "cpu-s/GB")
}

func benchTunnel(b *testing.B, on bool) {
	p := newPlane(b, Config{Splice: on, Loops: 1})
	e := openTunnel(b, p, listen(b), nil, nil)
	pumpBench(b, e.client, e.backend)
}

func BenchmarkTunnelSplice(b *testing.B) { benchTunnel(b, true) }
func BenchmarkTunnelCopy(b *testing.B)   { benchTunnel(b, false) }

// BenchmarkDirect is the same load over one plain loopback connection: the
// ceiling the plane is measured against.
func BenchmarkDirect(b *testing.B) {
	ln := listen(b)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	pumpBench(b, c, a)
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// idleTunnels opens n tunnels over loopback TCP (4n fds), measures the Go
// heap+stack growth (and RSS growth) caused by handing them to the plane,
// checks a sample still carries bytes, and returns bytes per idle tunnel.
// With toClient set every tunnel is handed those pending bytes (a 101
// response), as the HTTP side does on an upgrade; the sample then reads them
// first.
func idleTunnels(tb testing.TB, n int, toClient []byte) (heapPer, rssPer float64) {
	// Everything is released before returning: a benchmark calls this b.N
	// times and 4n fds each time leave no room for a second set.
	p, err := NewPlane(Config{Splice: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type pair struct {
		c, b   *net.TCPConn
		cf, bf int
	}
	pairs := make([]pair, n)
	defer func() {
		for _, pr := range pairs {
			if pr.c != nil {
				pr.c.Close()
				pr.b.Close()
			}
		}
	}()
	for i := range pairs {
		pairs[i].c, pairs[i].cf = tcpPair(tb, ln)
		pairs[i].b, pairs[i].bf = tcpPair(tb, ln)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := int64(ms.HeapInuse + ms.StackInuse)
	rss0 := rssBytes()
	for _, pr := range pairs {
		if err := p.Tunnel(Tunnel{ClientFD: pr.cf, BackendFD: pr.bf, ToClient: toClient}); err != nil {
			tb.Fatal(err)
		}
	}
	if !waitFor(20*time.Second, func() bool { return p.Stats().Tunnels == int64(n) }) {
		tb.Fatalf("only %d of %d tunnels active", p.Stats().Tunnels, n)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	after := int64(ms.HeapInuse + ms.StackInuse)
	rss1 := rssBytes()
	if s := p.Stats(); s.PipesBusy != 0 {
		tb.Fatalf("idle tunnels hold pipes: %+v", s)
	}
	for i := 0; i < n; i += n / 10 {
		if len(toClient) > 0 {
			if got := readN(tb, pairs[i].c, len(toClient), 5*time.Second); string(got) != string(toClient) {
				tb.Fatalf("tunnel %d: pending %q", i, got)
			}
		}
		pairs[i].c.Write([]byte("still-alive"))
		if got := readN(tb, pairs[i].b, 11, 5*time.Second); string(got) != "still-alive" {
			tb.Fatalf("idle tunnel %d: %q", i, got)
		}
	}
	return float64(after-before) / float64(n), float64(rss1-rss0) / float64(n)
}

const idleN = 4000 // 16,000 fds: under the 20,000 hard limit

// upgrade101 is a typical pending answer handed over with a tunnel: the
// 101 head plus a small first frame.
var upgrade101 = []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n" +
	"\x81\x4ehello from the backend, the first frame rides with the 101 response......")

func TestIdleTunnelMemory(t *testing.T) {
	n := idleN
	if testing.Short() {
		n = 1000
	}
	for _, tc := range []struct {
		name string
		pend []byte
	}{{"bare", nil}, {"pending101", upgrade101}} {
		t.Run(tc.name, func(t *testing.T) {
			heapPer, rssPer := idleTunnels(t, n, tc.pend)
			t.Logf("%d idle tunnels (pending %d B): %.0f B/tunnel Go heap+stack, %.0f B/tunnel RSS; conn struct %d B",
				n, len(tc.pend), heapPer, rssPer, unsafe.Sizeof(conn{}))
			if heapPer > 1024 {
				t.Fatalf("idle tunnel costs %.0f B of heap, budget 1 KiB", heapPer)
			}
		})
	}
}

func BenchmarkIdleTunnelMemory(b *testing.B) {
	for _, tc := range []struct {
		name string
		pend []byte
	}{{"bare", nil}, {"pending101", upgrade101}} {
		b.Run(tc.name, func(b *testing.B) {
			var heapPer float64
			for i := 0; i < b.N; i++ {
				heapPer, _ = idleTunnels(b, idleN, tc.pend)
			}
			// RSS in-process is dominated by GC page churn of the test's
			// own sockets; see the test log.
			b.ReportMetric(heapPer, "B/idle-tunnel")
		})
	}
}
