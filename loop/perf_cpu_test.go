package loop_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
)

// On a shared 2-core box wall-clock req/s swings 2x between runs; CPU time per operation does not.
// These benchmarks report the whole process's user+system CPU per op (client, backend and proxy
// together): compare BenchmarkPerfProxyGETCPU with BenchmarkPerfDirectGETCPU to get the proxy's share.

func processCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((processCPU()-start).Nanoseconds())/float64(b.N)/1e3, "cpu-us/op")
}

func BenchmarkPerfProxyGETCPU(b *testing.B) {
	be := benchBackend(b)
	_, addr := startProxy(b, be)
	cpu := processCPU()
	benchGET(b, addr)
	reportCPU(b, cpu)
}

func BenchmarkPerfDirectGETCPU(b *testing.B) {
	be := benchBackend(b)
	cpu := processCPU()
	benchGET(b, be)
	reportCPU(b, cpu)
}

const benchWSKey = "dGhlIHNhbXBsZSBub25jZQ=="

// upgradeBackend answers every WebSocket upgrade with a verified 101 and then waits for EOF.
func upgradeBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	resp := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + wsAccept(benchWSKey) + "\r\n\r\n")
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				if _, err := c.Write(resp); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, br)
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkPerfUpgrade: fresh connection, WebSocket upgrade through the proxy (fresh backend dial,
// hand-off to the tunnel plane), read the 101, reset.
func BenchmarkPerfUpgrade(b *testing.B) {
	be := upgradeBackend(b)
	_, addr := startProxy(b, be, func(c *loop.Config) { c.BackendIdle = -1 })
	req := []byte(upgradeRequest("h", "/ws", benchWSKey, ""))
	var fails atomic.Int64
	b.SetParallelism(8)
	cpu := processCPU()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				fails.Add(1)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			n := 0
			if _, err = c.Write(req); err == nil {
				for !bytes.Contains(buf[:n], []byte("\r\n\r\n")) && err == nil {
					var m int
					m, err = c.Read(buf[n:])
					n += m
				}
			}
			if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 101 ") {
				fails.Add(1)
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "upgrades/s")
	reportCPU(b, cpu)
	if f := fails.Load(); f > 0 {
		b.Fatalf("%d of %d upgrades failed", f, b.N)
	}
}

// BenchmarkPerfProxyGETCPURoutes is BenchmarkPerfProxyGETCPU through a table of 100 routes.
func BenchmarkPerfProxyGETCPURoutes(b *testing.B) {
	be := benchBackend(b)
	_, addr, _ := startRouted(b, benchRouteSpecs(b, 100, be))
	cpu := processCPU()
	benchGETPath(b, addr, "/svc97/api/v1/query?x=1")
	reportCPU(b, cpu)
}
