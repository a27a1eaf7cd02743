//go:build linux

package splice

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// chattyBench is the shape of wsbench's rtt cell at the plane level: conns
// tunnels, each carrying small messages (size bytes) client -> backend,
// echoed by the backend, closed loop per tunnel. One op is one round trip,
// i.e. two small messages through the plane. us/msg and syscalls/msg are the
// whole process per message through the plane (clients and echo goroutines
// included): the plane's own share is the difference with
// BenchmarkPerfChattyDirect, the same load over plain connections. us/rtt is
// the mean round trip as the clients saw it.
func chattyBench(b *testing.B, conns, size int, pair func(b *testing.B) (client, backend net.Conn)) {
	type pr struct{ client, backend net.Conn }
	ps := make([]pr, conns)
	for i := range ps {
		ps[i].client, ps[i].backend = pair(b)
	}
	var echoes sync.WaitGroup
	for _, p := range ps {
		echoes.Add(1)
		go func(c net.Conn) {
			defer echoes.Done()
			buf := make([]byte, size)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}(p.backend)
	}
	b.Cleanup(func() {
		for _, p := range ps {
			p.backend.Close()
		}
		echoes.Wait()
	})
	run := func(total int) error {
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		per := (total + conns - 1) / conns
		for _, p := range ps {
			wg.Add(1)
			go func(c net.Conn) {
				defer wg.Done()
				msg := make([]byte, size)
				in := make([]byte, size)
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				for k := 0; k < per; k++ {
					if _, err := c.Write(msg); err != nil {
						errs <- err
						return
					}
					if _, err := io.ReadFull(c, in); err != nil {
						errs <- err
						return
					}
				}
			}(p.client)
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := run(conns * 4); err != nil { // warm: pools, TCP state, threads
		b.Fatal(err)
	}
	b.ReportAllocs()
	tc := openThreadCounters(processThreads())
	defer tc.close()
	_, sy0 := tc.read()
	cpu0 := cpuTime()
	t0 := time.Now()
	b.ResetTimer()
	if err := run(b.N); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	el := time.Since(t0)
	cpu := cpuTime() - cpu0
	_, sy1 := tc.read()
	n := float64((b.N + conns - 1) / conns * conns)
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/(2*n), "us/msg")
	if sy0 >= 0 && sy1 >= 0 {
		b.ReportMetric(float64(sy1-sy0)/(2*n), "syscalls/msg")
	}
	b.ReportMetric(float64(el.Microseconds())*float64(conns)/n, "us/rtt")
}

// BenchmarkPerfChatty: 100 B echoes over 64 tunnels, splice and copy, on the
// loops a default plane gets (GOMAXPROCS).
func BenchmarkPerfChatty(b *testing.B) {
	for _, on := range []bool{true, false} {
		name := "copy"
		if on {
			name = "splice"
		}
		b.Run(fmt.Sprintf("%s-100B", name), func(b *testing.B) {
			p := newPlane(b, Config{Splice: on})
			ln := listen(b)
			chattyBench(b, 64, 100, func(b *testing.B) (net.Conn, net.Conn) {
				e := openTunnel(b, p, ln, nil, nil)
				return e.client, e.backend
			})
		})
	}
}

// BenchmarkPerfChattyDirect is BenchmarkPerfChatty's load over 64 plain
// loopback connections: what the test side costs alone.
func BenchmarkPerfChattyDirect(b *testing.B) {
	ln := listen(b)
	chattyBench(b, 64, 100, func(b *testing.B) (net.Conn, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); a.Close() })
		return c, a
	})
}
