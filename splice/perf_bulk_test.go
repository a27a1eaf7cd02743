// Per-thread CPU accounting (gettid, CLOCK_THREAD_CPUTIME by tid) is
// Linux-only; the tunnel benchmarks in bench_test.go run everywhere.

//go:build linux

package splice

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopThreads returns the OS thread ids of p's loops: one throwaway tunnel
// per loop (round robin) whose OnClose, which runs on the loop, records
// gettid. The loops are locked to their threads, so the ids stay valid.
func loopThreads(b *testing.B, p *Plane) []int {
	tids := make(chan int, len(p.loops))
	for range p.loops {
		var c, s [2]int
		var err error
		if c, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			b.Fatal(err)
		}
		if s, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			b.Fatal(err)
		}
		if err := p.Tunnel(Tunnel{ClientFD: c[0], BackendFD: s[0], OnClose: func(TunnelResult) { tids <- unix.Gettid() }}); err != nil {
			b.Fatal(err)
		}
		unix.Close(c[1])
		unix.Close(s[1])
	}
	var out []int
	for range p.loops {
		select {
		case t := <-tids:
			out = append(out, t)
		case <-time.After(5 * time.Second):
			b.Fatal("throwaway tunnel did not close")
		}
	}
	return out
}

// threadCPU sums the CPU time of the given threads (CLOCK_THREAD_CPUTIME of
// another thread: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)).
func threadCPU(tids []int) time.Duration {
	var sum time.Duration
	for _, tid := range tids {
		var ts unix.Timespec
		if err := unix.ClockGettime(int32(^tid<<3|6), &ts); err == nil {
			sum += time.Duration(ts.Nano())
		}
	}
	return sum
}

// bulkBench is the shape of wsbench's "bulk x8" cell at the plane level:
// conns tunnels, each carrying 64 KiB writes client->backend and
// backend->client at the same time, one op = 1 MiB moved through the plane
// (summed over all streams). cpu-s/GB is the whole process (writers and
// readers included); plane-cpu-s/GB is the loops' threads alone, the figure
// wsbench's proxy CPU per GB corresponds to. BenchmarkPerfDirectBulk is the
// same load without the plane.
func bulkBench(b *testing.B, conns int, plane []int, pairs func(b *testing.B, i int) (w1, r1, w2, r2 net.Conn)) {
	const chunk = 1 << 20
	const msg = 64 << 10
	b.SetBytes(chunk)
	b.ReportAllocs()
	type stream struct{ w, r net.Conn }
	var ss []stream
	for i := 0; i < conns; i++ {
		w1, r1, w2, r2 := pairs(b, i)
		ss = append(ss, stream{w1, r1}, stream{w2, r2})
	}
	run := func(per int64) error {
		var wg sync.WaitGroup
		errs := make(chan error, 2*len(ss))
		for _, s := range ss {
			wg.Add(2)
			go func() {
				defer wg.Done()
				out := make([]byte, msg)
				for left := per; left > 0; left -= msg {
					if _, err := s.w.Write(out[:min(left, msg)]); err != nil {
						errs <- err
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				in := make([]byte, msg)
				for left := per; left > 0; {
					n, err := s.r.Read(in[:min(left, msg)])
					if err != nil {
						errs <- err
						return
					}
					left -= int64(n)
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := run(chunk); err != nil { // warm pools and TCP windows
		b.Fatal(err)
	}
	per := (int64(b.N)*chunk + int64(len(ss)) - 1) / int64(len(ss))
	cpu0, pcpu0 := cpuTime(), threadCPU(plane)
	b.ResetTimer()
	if err := run(per); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu, pcpu := cpuTime()-cpu0, threadCPU(plane)-pcpu0
	gb := float64(per*int64(len(ss))) / 1e9
	b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
	if plane != nil {
		b.ReportMetric(pcpu.Seconds()/gb, "plane-cpu-s/GB")
	}
}

func benchBulkPlane(b *testing.B, cfg Config, conns int) {
	p := newPlane(b, cfg)
	ln := listen(b)
	bulkBench(b, conns, loopThreads(b, p), func(b *testing.B, i int) (net.Conn, net.Conn, net.Conn, net.Conn) {
		e := openTunnel(b, p, ln, nil, nil)
		return e.client, e.backend, e.backend, e.client
	})
}

// BenchmarkPerfBulk: 8 tunnels both ways, splice with several pipe sizes,
// and the copy path, on the loops a default plane gets (GOMAXPROCS).
func BenchmarkPerfBulk(b *testing.B) {
	for _, sz := range []int{64 << 10, 128 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("splice-pipe%dK", sz>>10), func(b *testing.B) {
			benchBulkPlane(b, Config{Splice: true, PipeSize: sz}, 8)
		})
	}
	b.Run("copy", func(b *testing.B) { benchBulkPlane(b, Config{Splice: false}, 8) })
}

func BenchmarkPerfDirectBulk(b *testing.B) {
	ln := listen(b)
	bulkBench(b, 8, nil, func(b *testing.B, i int) (net.Conn, net.Conn, net.Conn, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); a.Close() })
		return c, a, a, c
	})
}
