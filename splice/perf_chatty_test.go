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
// i.e. two small messages through the plane. plane-us/msg is the CPU of the
// loops' own threads per message (what a proxy's CPU per message means);
// us/rtt is the mean round trip as the clients saw it.
func chattyBench(b *testing.B, cfg Config, conns, size int) {
	p := newPlane(b, cfg)
	ln := listen(b)
	tids := loopThreads(b, p)
	type pair struct{ client, backend net.Conn }
	ps := make([]pair, conns)
	for i := range ps {
		e := openTunnel(b, p, ln, nil, nil)
		ps[i] = pair{e.client, e.backend}
	}
	var echoes sync.WaitGroup
	for _, pr := range ps {
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
		}(pr.backend)
	}
	b.Cleanup(func() {
		for _, pr := range ps {
			pr.backend.Close()
		}
		echoes.Wait()
	})
	run := func(total int) error {
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		per := (total + conns - 1) / conns
		for _, pr := range ps {
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
			}(pr.client)
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := run(conns * 4); err != nil { // warm: pools, TCP state
		b.Fatal(err)
	}
	b.ReportAllocs()
	tc := openThreadCounters(tids)
	defer tc.close()
	in0, sy0 := tc.read()
	cpu0 := threadCPU(tids)
	t0 := time.Now()
	b.ResetTimer()
	if err := run(b.N); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	el := time.Since(t0)
	cpu := threadCPU(tids) - cpu0
	in1, sy1 := tc.read()
	n := float64((b.N + conns - 1) / conns * conns)
	if in0 >= 0 && in1 >= 0 {
		b.ReportMetric(float64(in1-in0)/(2*n), "plane-instr/msg")
	}
	if sy0 >= 0 && sy1 >= 0 {
		b.ReportMetric(float64(sy1-sy0)/(2*n), "plane-syscalls/msg")
	}
	b.ReportMetric(float64(cpu.Microseconds())/(2*n), "plane-us/msg")
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
			chattyBench(b, Config{Splice: on}, 64, 100)
		})
	}
}
