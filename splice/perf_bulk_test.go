// Linux-only like the CPU accounting of bench_test.go's siblings; the tunnel
// benchmarks in bench_test.go run everywhere.

//go:build linux

package splice

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

// bulkBench is the shape of wsbench's "bulk x8" cell at the plane level:
// conns tunnels, each carrying 64 KiB writes client->backend and
// backend->client at the same time, one op = 1 MiB moved through the plane
// (summed over all streams). cpu-s/GB is the whole process, writers and
// readers included: the loops are goroutines that park in the netpoller and
// run on any thread, so their own share is this minus
// BenchmarkPerfDirectBulk's (the same load without the plane).
func bulkBench(b *testing.B, conns int, pairs func(b *testing.B, i int) (w1, r1, w2, r2 net.Conn)) {
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
	cpu0 := cpuTime()
	b.ResetTimer()
	if err := run(per); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	gb := float64(per*int64(len(ss))) / 1e9
	b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
}

func benchBulkPlane(b *testing.B, cfg Config, conns int) {
	p := newPlane(b, cfg)
	ln := listen(b)
	bulkBench(b, conns, func(b *testing.B, i int) (net.Conn, net.Conn, net.Conn, net.Conn) {
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
	bulkBench(b, 8, func(b *testing.B, i int) (net.Conn, net.Conn, net.Conn, net.Conn) {
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
