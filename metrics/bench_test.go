package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Per-event costs: what an event loop pays per request or per splice return.

func BenchmarkShardRequest(b *testing.B) {
	r := NewRegistry()
	route := r.Route("/")
	s := r.NewShard()
	b.ReportAllocs()
	defer reportCPU(b)()
	for i := 0; b.Loop(); i++ {
		s.Request(route, 200, time.Duration(i&0xfffff)*time.Microsecond/8) // spread over buckets
	}
}

func BenchmarkShardTunnelBytes(b *testing.B) {
	r := NewRegistry()
	route := r.Route("/")
	s := r.NewShard()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		s.TunnelBytes(route, Down, 65536)
	}
}

// BenchmarkShardProxiedRequest is everything one proxied request on a fresh connection with a
// new backend connection counts: accept, connect time, the exchange, close.
func BenchmarkShardProxiedRequest(b *testing.B) {
	r := NewRegistry()
	route := r.Route("/")
	be := r.Backend("127.0.0.1:3000")
	s := r.NewShard()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		s.Accepted()
		s.UpstreamConnected(be, 120*time.Microsecond)
		s.Request(route, 200, 800*time.Microsecond)
		s.Closed()
	}
}

// BenchmarkShardParallel: every goroutine owns its shard, as every loop does; per-op time should
// stay flat with more goroutines (no shared line). Compare with -cpu 1,2.
func BenchmarkShardParallel(b *testing.B) {
	r := NewRegistry()
	route := r.Route("/")
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		s := r.NewShard()
		for pb.Next() {
			s.Request(route, 200, 800*time.Microsecond)
			s.TunnelBytes(route, Up, 1500)
		}
	})
}

// scrapeRegistry is the scrape benchmark's setup: 20 routes with 5 backends each (100 backend
// addresses), 4 HTTP-loop shards and 2 tunnel-loop shards, every cell non-zero.
func scrapeRegistry() *Registry {
	r := NewRegistry()
	var routes, backends []int
	for i := range 20 {
		routes = append(routes, r.Route(fmt.Sprintf("/app%d/", i)))
		for j := range 5 {
			backends = append(backends, r.Backend(fmt.Sprintf("10.0.%d.%d:8080", i, j)))
		}
	}
	for range 6 {
		s := r.NewShard()
		for _, rt := range routes {
			s.Request(rt, 200, time.Millisecond)
			s.Upgrade(rt, UpgradeOK)
			s.TunnelOpened(rt)
			s.TunnelBytes(rt, Up, 100)
			s.TunnelClosed(rt, CloseClient, time.Minute)
		}
		for _, be := range backends {
			s.UpstreamConnected(be, time.Millisecond)
			s.UpstreamError(be, UpstreamRefused)
		}
	}
	return r
}

type discardWriter struct {
	h http.Header
	n int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkScrape is one full /metrics request (wsgate_*, go_*, process_*), uncompressed.
func BenchmarkScrape(b *testing.B) {
	h := scrapeRegistry().Handler()
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ReportAllocs()
	defer reportCPU(b)()
	var w discardWriter
	for b.Loop() {
		w = discardWriter{h: http.Header{}}
		h.ServeHTTP(&w, req)
	}
	b.ReportMetric(float64(w.n), "bytes/scrape")
}

// BenchmarkScrapeGzip is the same with Accept-Encoding: gzip, as Prometheus scrapes.
func BenchmarkScrapeGzip(b *testing.B) {
	h := scrapeRegistry().Handler()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	b.ReportAllocs()
	defer reportCPU(b)()
	var w discardWriter
	for b.Loop() {
		w = discardWriter{h: http.Header{}}
		h.ServeHTTP(&w, req)
	}
	b.ReportMetric(float64(w.n), "bytes/scrape")
}

// BenchmarkCollect is only the summing over shards into const metrics (no encoding).
func BenchmarkCollect(b *testing.B) {
	r := scrapeRegistry()
	b.ReportAllocs()
	defer reportCPU(b)()
	n := 0
	for b.Loop() {
		ch := make(chan prometheus.Metric, 8192)
		r.Collect(ch)
		n = len(ch)
	}
	b.ReportMetric(float64(n), "series")
}

// reportCPU adds cpu-ns/op (user+system time of the whole process, GC included, over b.N): on
// a shared 2-core box wall-clock ns/op includes time spent descheduled, CPU time does not.
func reportCPU(b *testing.B) func() {
	start := cpuNow()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func cpuNow() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
