package load

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/bench/internal/backend"
)

// startBackend serves the bench backend on a loopback port for the test's lifetime.
func startBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: backend.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dur(short, long time.Duration) time.Duration {
	if testing.Short() {
		return short
	}
	return long
}

func TestSmokeHTTPGenerator(t *testing.T) {
	addr := startBackend(t)
	ctx := context.Background()
	for _, c := range []struct {
		path string
		size int
	}{{"/100", backend.SmallBody}, {"/16k", backend.LargeBody}} {
		res, err := RunHTTP(ctx, HTTPConfig{Addr: addr, Path: c.path, Conns: 4, Duration: dur(200*time.Millisecond, 500*time.Millisecond), BodySize: c.size})
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if res.Errors != 0 {
			t.Fatalf("%s: %d errors, first %q", c.path, res.Errors, res.FirstErr)
		}
		// Any loopback box does far more than 200 req/s; far fewer means the generator stalls.
		if res.RPS() < 200 || res.Requests < 50 {
			t.Fatalf("%s: implausible %d requests in %v (%.0f req/s)", c.path, res.Requests, res.Elapsed, res.RPS())
		}
		if res.P50 <= 0 || res.P99 < res.P50 || res.P99 > time.Second {
			t.Fatalf("%s: implausible latency p50 %v p99 %v", c.path, res.P50, res.P99)
		}
		t.Logf("%s: %.0f req/s p50 %v p99 %v", c.path, res.RPS(), res.P50, res.P99)
	}
	// A body size the server does not send is an error, not a success.
	res, err := RunHTTP(ctx, HTTPConfig{Addr: addr, Path: "/100", Conns: 1, Duration: 50 * time.Millisecond, BodySize: 99})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || !strings.Contains(res.FirstErr, "want 99") {
		t.Fatalf("wrong body size not detected: %+v", res)
	}
}

func TestSmokeWSBulk(t *testing.T) {
	addr := startBackend(t)
	ctx := context.Background()
	for _, up := range []bool{true, false} {
		res, err := RunBulk(ctx, BulkConfig{Addr: addr, Up: up, Conns: 2, Duration: dur(200*time.Millisecond, 400*time.Millisecond), Locals: SourceAddrs(2)})
		if err != nil {
			t.Fatalf("up=%v: %v", up, err)
		}
		// Loopback moves GB/s; under 10 MB/s (or no full frame) means the client is broken.
		if res.Errors != 0 || res.Bytes < backend.BulkFrame || res.MBps() < 10 {
			t.Fatalf("up=%v: implausible %+v (%.1f MB/s)", up, res, res.MBps())
		}
		if res.Elapsed < 150*time.Millisecond || res.Elapsed > 15*time.Second {
			t.Fatalf("up=%v: window %v outside the run", up, res.Elapsed)
		}
		t.Logf("up=%v: %.0f MB/s over %v", up, res.MBps(), res.Elapsed)
	}
}

func TestSmokeRTTIdleHandshake(t *testing.T) {
	addr := startBackend(t)
	ctx := context.Background()
	rtt, err := RunRTT(ctx, RTTConfig{Addr: addr, Conns: 20, Rate: 1000, Size: 100, Duration: 300 * time.Millisecond, Locals: SourceAddrs(3)})
	if err != nil {
		t.Fatal(err)
	}
	if rtt.Errors != 0 || rtt.Sent != 300 || rtt.Received != 300 {
		t.Fatalf("rtt: sent %d received %d errors %d (%s), want 300/300/0", rtt.Sent, rtt.Received, rtt.Errors, rtt.FirstErr)
	}
	if rtt.Achieved < 500 || rtt.Achieved > 1100 || rtt.P50 <= 0 || rtt.P999 < rtt.P99 || rtt.P99 < rtt.P50 {
		t.Fatalf("rtt: implausible %+v", rtt)
	}

	set, err := OpenIdle(ctx, addr, 50, 8, SourceAddrs(4))
	if err != nil {
		t.Fatal(err)
	}
	locals := map[string]bool{}
	for _, c := range set.conns {
		locals[c.LocalAddr().(*net.TCPAddr).IP.String()] = true
	}
	if len(locals) != 4 {
		t.Errorf("idle tunnels came from %d source addresses, want 4: %v", len(locals), locals)
	}
	ok, err := set.PingAll(ctx, 8, 5*time.Second)
	if err != nil || ok != 50 {
		t.Fatalf("idle: %d/50 answered, err %v", ok, err)
	}
	set.Close()

	hs, err := RunHandshakes(ctx, HandshakeConfig{Addr: addr, Workers: 4, Duration: 200 * time.Millisecond, Locals: SourceAddrs(2)})
	if err != nil {
		t.Fatal(err)
	}
	if hs.Errors != 0 || hs.Upgrades < 20 {
		t.Fatalf("handshakes: %+v", hs)
	}
	t.Logf("rtt p50 %v p99 %v; %.0f handshakes/s", rtt.P50, rtt.P99, hs.PerSec())
}

// TestSmokeStorm: 300 tunnels, 40 in flight, from 6 source addresses, all verified and all
// echoing afterwards; a backend that refuses the upgrade is reported as an error.
func TestSmokeStorm(t *testing.T) {
	addr := startBackend(t)
	ctx := context.Background()
	res, err := RunStorm(ctx, StormConfig{Addr: addr, Clients: 300, Par: 40, Locals: SourceAddrs(6)})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Set.Close()
	if res.Upgrades != 300 || res.Errors != 0 || res.Set.Len() != 300 || res.P99 < res.P50 || res.P50 <= 0 || res.PerSec() <= 0 {
		t.Fatalf("storm: %+v", res)
	}
	locals := map[string]bool{}
	for _, c := range res.Set.conns {
		locals[c.LocalAddr().(*net.TCPAddr).IP.String()] = true
	}
	if len(locals) != 6 {
		t.Errorf("storm tunnels came from %d source addresses, want 6", len(locals))
	}
	ok, err := res.Set.EchoAll(ctx, 16, 10*time.Second)
	if err != nil || ok != 300 {
		t.Fatalf("echo: %d/300, %v", ok, err)
	}
	// A path the backend does not upgrade: every client fails, the first error says why.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
			c.Close()
		}
	}()
	defer ln.Close()
	bad, err := RunStorm(ctx, StormConfig{Addr: ln.Addr().String(), Clients: 5, Par: 2})
	if err == nil || bad.Upgrades != 0 || !strings.Contains(err.Error(), "403") {
		t.Fatalf("refused storm: %+v, %v", bad, err)
	}
}

// Against a port nobody listens on, every generator must fail loudly, naming the phase.
func TestGeneratorsReportRefusedPeer(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx := context.Background()
	if _, err := RunHTTP(ctx, HTTPConfig{Addr: addr, Path: "/100", Conns: 1, Duration: 50 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "http dial") {
		t.Errorf("RunHTTP: %v", err)
	}
	if _, err := RunBulk(ctx, BulkConfig{Addr: addr, Up: true, Conns: 1, Duration: 50 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "ws dial") {
		t.Errorf("RunBulk: %v", err)
	}
	if _, err := RunHandshakes(ctx, HandshakeConfig{Addr: addr, Workers: 1, Duration: 20 * time.Millisecond}); err == nil {
		t.Error("RunHandshakes: no error against a closed port")
	}
}

const wrkSample = `Running 2s test @ http://127.0.0.1:8080/100
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  412.30us   9.81ms   80.11%
    Req/Sec    21.10k     1.02k   23.40k    70.00%
  Latency Distribution
     50%    1.45ms
     75%    1.70ms
     90%    2.01ms
     99%    3.12ms
  84012 requests in 2.00s, 18.35MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  42001.23
Transfer/sec:      9.17MB
`

func TestParseWrk(t *testing.T) {
	r, err := ParseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 84000 || r.Elapsed != 2*time.Second || r.Errors != 16 {
		t.Fatalf("requests %d elapsed %v errors %d, want 84000 2s 16", r.Requests, r.Elapsed, r.Errors)
	}
	if r.P50 != 1450*time.Microsecond || r.P99 != 3120*time.Microsecond {
		t.Fatalf("p50 %v p99 %v", r.P50, r.P99)
	}
	if _, err := ParseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil {
		t.Fatal("garbage parsed without error")
	}
}

func TestWrkAgainstBackend(t *testing.T) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed (make bench-deps); the Go generator covers this path")
	}
	addr := startBackend(t)
	r, err := RunWrk(context.Background(), WrkConfig{Binary: bin, URL: "http://" + addr + "/100", Conns: 4, Threads: 1, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests < 100 || r.Errors != 0 || r.P50 <= 0 || r.LoadCPU <= 0 {
		t.Fatalf("implausible wrk result %+v", r)
	}
}

// The generator's per-request parse must not allocate, or on 2 cores the generator's GC
// would tax whichever peer happens to run during a collection.
func TestReadResponseAllocatesNothing(t *testing.T) {
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: x\r\nConnection: keep-alive\r\n\r\nhello"
	r := &repeatReader{s: resp}
	br := bufio.NewReaderSize(r, 4096)
	allocs := testing.AllocsPerRun(1000, func() {
		n, keep, err := readResponse(br, 5)
		if err != nil || n != 5 || !keep {
			t.Fatalf("n %d keep %v err %v", n, keep, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("readResponse allocates %v per response", allocs)
	}
	// Connection: close and HTTP/1.0 end keep-alive; a chunked answer is refused, not misread.
	for _, c := range []struct {
		resp string
		keep bool
		ok   bool
	}{
		{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false, true},
		{"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, false},
		{"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", false, false},
	} {
		_, keep, err := readResponse(bufio.NewReader(strings.NewReader(c.resp)), 0)
		if (err == nil) != c.ok || (c.ok && keep != c.keep) {
			t.Errorf("%q: keep %v err %v", c.resp, keep, err)
		}
	}
}

type repeatReader struct {
	s   string
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.s[r.off:])
		n += c
		r.off = (r.off + c) % len(r.s)
	}
	return n, nil
}
