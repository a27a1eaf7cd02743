package loop_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// benchTLS is the TLS client the benchmarks use: X25519 only (what OpenSSL peers negotiate too),
// no verification (not what is measured).
func benchTLS(resume bool) *tls.Config {
	c := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", CurvePreferences: []tls.CurveID{tls.X25519}, MinVersion: tls.VersionTLS13}
	if resume {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	return c
}

// BenchmarkTLSHandshake: a TLS 1.3 handshake through wsgate plus one proxied request, full or
// resumed, sequential (the loop's share shows in a CPU profile next to crypto/tls's).
func BenchmarkTLSHandshake(b *testing.B) {
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			be := benchBackend(b)
			_, addr := startProxy(b, be, withTLS(newTLSServer(b)))
			cfg := benchTLS(resume)
			req := []byte("GET /bench HTTP/1.1\r\nHost: localhost\r\n\r\n")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				c := tls.Client(nc, cfg)
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil || line[:12] != "HTTP/1.1 200" {
					b.Fatalf("%q %v", line, err)
				}
				io.CopyN(io.Discard, br, 0)
				nc.(*net.TCPConn).SetLinger(0)
				nc.Close()
			}
		})
	}
}

// BenchmarkProxyGETTLS: keep-alive requests/s through wsgate over TLS 1.3 (compare
// BenchmarkProxyGET). Allocations include crypto/tls's client; the proxy's own are 0 per request
// (TestTLSSeamNoAllocPerRecord).
func BenchmarkProxyGETTLS(b *testing.B) {
	be := benchBackend(b)
	_, addr := startProxy(b, be, withTLS(newTLSServer(b)))
	b.ReportAllocs()
	b.SetParallelism(4)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer nc.Close()
		c := tls.Client(nc, benchTLS(false))
		g := &rawGetter{c: c, req: []byte("GET /bench HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: wsgate-bench\r\nAccept: */*\r\n\r\n"), buf: make([]byte, 16<<10)}
		for pb.Next() {
			if err := g.get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
