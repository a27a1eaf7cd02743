package loop_test

// Benchmarks through real loopback sockets:
//
//	go test -run '^$' -bench 'E2E' -benchmem -benchtime 2s ./loop
//
// BenchmarkE2ETunnelThroughput moves bytes client -> backend through a WebSocket tunnel with
// splice(2), with the copy path, and over a direct TCP connection (no wsgate), in one run. cpu-s/GB
// is this whole process's CPU (client + wsgate + backend) per GB moved, so wsgate's own cost is the
// difference from "direct".
//
// BenchmarkE2EIdleTunnelMemory holds 5,000 idle tunnels: the clients and the backend run in a child
// process (the test binary re-executed), because one process holding client + wsgate's two sides +
// backend would need 20,000 fds, the hard RLIMIT_NOFILE here. This process then holds only wsgate
// (10,000 fds) and its memory growth per tunnel is what is reported.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/accesslog"
	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/metrics"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkE2ETunnelThroughput(b *testing.B) {
	const chunk = 256 << 10
	for _, mode := range []string{"splice", "copy", "direct"} {
		b.Run(mode, func(b *testing.B) {
			var w *net.TCPConn
			var r io.Reader
			if mode == "direct" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				defer ln.Close()
				acc := make(chan net.Conn, 1)
				go func() { c, _ := ln.Accept(); acc <- c }()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				s := <-acc
				defer s.Close()
				w, r = c.(*net.TCPConn), s
			} else {
				be, peers := rawTunnelBackend(b)
				_, addr := startProxy(b, be.Addr, withSplice(mode == "splice"))
				e := openRawTunnel(b, addr, peers)
				w, r = e.CT, e.B.R
			}
			buf := genBytes(1, chunk)
			b.SetBytes(chunk)
			b.ReportAllocs()
			done := make(chan error, 1)
			want := int64(b.N) * chunk
			go func() {
				_, err := io.CopyBuffer(io.Discard, io.LimitReader(r, want), make([]byte, chunk))
				done <- err
			}()
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := w.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(want)/1e9), "cpu-s/GB")
		})
	}
}

// ---------------------------------------------------------------------------------------------
// idle tunnels

const idleChildEnv = "WSGATE_E2E_IDLE_CHILD"

func init() {
	// The child side of BenchmarkE2EIdleTunnelMemory: runs instead of the tests when re-executed.
	if os.Getenv(idleChildEnv) == "1" {
		if err := idleChild(); err != nil {
			fmt.Printf("ERROR %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// idleChild: a raw WebSocket backend plus n clients that upgrade through wsgate and then go quiet.
// Protocol on stdio: child prints "BACKEND addr", reads "PROXY addr", prints "READY n", waits for EOF.
func idleChild() error {
	n, _ := strconv.Atoi(os.Getenv("WSGATE_E2E_IDLE_N"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var held []net.Conn // referenced so the GC keeps them open; no goroutine per idle conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(30 * time.Second))
				req, err := http.ReadRequest(bufio.NewReaderSize(c, 1024))
				if err != nil {
					c.Close()
					return
				}
				io.WriteString(c, response101(req.Header.Get("Sec-WebSocket-Key")))
				c.SetDeadline(time.Time{})
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}()
		}
	}()
	fmt.Printf("BACKEND %s\n", ln.Addr())
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadString('\n')
	if err != nil {
		return err
	}
	proxy := strings.TrimSpace(strings.TrimPrefix(line, "PROXY "))
	clients := make([]net.Conn, n)
	idx := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				c, err := net.DialTimeout("tcp", proxy, 10*time.Second)
				if err != nil {
					errs <- err
					continue
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				key := wsKey()
				io.WriteString(c, upgradeRequest(proxy, "/idle", key, ""))
				resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), &http.Request{Method: "GET"})
				if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
					errs <- fmt.Errorf("tunnel %d: upgrade failed: %v", i, err)
					c.Close()
					continue
				}
				c.SetDeadline(time.Time{})
				clients[i] = c
			}
		}()
	}
	for i := 0; i < n; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Printf("READY %d\n", n)
	io.Copy(io.Discard, in) // until the parent closes our stdin
	for _, c := range clients {
		c.Close()
	}
	mu.Lock()
	for _, c := range held {
		c.Close()
	}
	mu.Unlock()
	return nil
}

type idleResult struct {
	n               int
	heapPer, rssPer float64
	heap, rss       float64 // MiB total growth
}

// measureIdle starts wsgate, lets the child open n idle tunnels through it and reports wsgate's
// memory growth per tunnel (heap+stacks and VmRSS, after GC and returning free pages to the OS).
func measureIdle(b *testing.B, n int, splice bool, opts ...func(*loop.Config)) idleResult {
	raiseNofile(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), idleChildEnv+"=1", "WSGATE_E2E_IDLE_N="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	out := bufio.NewReader(stdout)
	readLine := func(prefix string) string {
		lc := make(chan string, 1)
		go func() { l, _ := out.ReadString('\n'); lc <- strings.TrimSpace(l) }()
		select {
		case l := <-lc:
			if !strings.HasPrefix(l, prefix) {
				b.Fatalf("child: %q, want %s...", l, prefix)
			}
			return strings.TrimPrefix(l, prefix)
		case <-time.After(2 * time.Minute):
			b.Fatalf("child: no %s line within 2 minutes", prefix)
		}
		return ""
	}
	backendAddr := readLine("BACKEND ")
	s, addr := startProxy(b, backendAddr, append([]func(*loop.Config){withSplice(splice)}, opts...)...)
	defer stopProxy(b, s)
	// Per-loop state (and, with metrics or an access log, each loop's shard and 256 KiB ring) is
	// made at a loop's first connection: let connections reach every loop before the baseline,
	// so that what is measured is the tunnels' own cost.
	for i := 0; i < 16; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
		}
	}
	time.Sleep(200 * time.Millisecond)
	runtime.GC()
	debug.FreeOSMemory()
	base := readMem()
	fmt.Fprintf(stdin, "PROXY %s\n", addr)
	readLine("READY ")
	if !waitFor(10*time.Second, func() bool { return s.Stats().Tunnels == int64(n) }) {
		b.Fatalf("Stats().Tunnels = %d, want %d idle tunnels", s.Stats().Tunnels, n)
	}
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	debug.FreeOSMemory()
	after := readMem()
	d := func(a, b uint64) float64 {
		if a < b {
			return 0
		}
		return float64(a - b)
	}
	return idleResult{
		n:       n,
		heapPer: d(after.HeapInuse, base.HeapInuse) / float64(n),
		rssPer:  d(after.RSS, base.RSS) / float64(n),
		heap:    d(after.HeapInuse, base.HeapInuse) / (1 << 20),
		rss:     d(after.RSS, base.RSS) / (1 << 20),
	}
}

func BenchmarkE2EIdleTunnelMemory(b *testing.B) {
	n := 5000
	if testing.Short() {
		n = 1000
	}
	for _, v := range []string{"splice", "copy", "splice-observed"} {
		splice := v != "copy"
		var opts []func(*loop.Config)
		if v == "splice-observed" {
			// Metrics and the access log on: each tunnel carries its log record (observe.go).
			opts = append(opts, func(c *loop.Config) {
				c.Metrics = metrics.NewRegistry()
				c.AccessLog = accesslog.New(io.Discard, accesslog.Config{})
			})
		}
		b.Run(v, func(b *testing.B) {
			// One measurement is the figure; b.N only repeats it (run with -benchtime=1x).
			var r idleResult
			for i := 0; i < b.N; i++ {
				r = measureIdle(b, n, splice, opts...)
			}
			b.ReportMetric(float64(r.n), "tunnels")
			b.ReportMetric(r.rssPer, "rss-B/tunnel")
			b.ReportMetric(r.heapPer, "heap-B/tunnel")
			b.Logf("%d idle tunnels: wsgate grew VmRSS %.1f MiB (%.0f B/tunnel), heap+stacks %.1f MiB (%.0f B/tunnel)",
				r.n, r.rss, r.rssPer, r.heap, r.heapPer)
		})
	}
}
