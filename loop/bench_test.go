package loop_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/route"
)

// benchBackend is a minimal keep-alive HTTP/1.1 server that allocates nothing per request, so
// -benchmem reports the proxy's allocations, not a backend's.
func benchBackend(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 128)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body))
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
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
				buf := make([]byte, 8192)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := c.Write(resp); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// rawGetter sends GETs on one keep-alive connection and reads each response without allocating.
type rawGetter struct {
	c   net.Conn
	req []byte
	buf []byte
	n   int
}

func (g *rawGetter) get() error {
	if _, err := g.c.Write(g.req); err != nil {
		return err
	}
	for {
		if i := bytes.Index(g.buf[:g.n], []byte("\r\n\r\n")); i >= 0 {
			head := g.buf[:i]
			j := bytes.Index(head, []byte("Content-Length: "))
			if j < 0 {
				return io.ErrUnexpectedEOF
			}
			v := head[j+16:]
			if k := bytes.IndexByte(v, '\r'); k >= 0 {
				v = v[:k]
			}
			cl := 0
			for _, ch := range v {
				cl = cl*10 + int(ch-'0')
			}
			total := i + 4 + cl
			for g.n < total {
				m, err := g.c.Read(g.buf[g.n:])
				if err != nil {
					return err
				}
				g.n += m
			}
			g.n = copy(g.buf, g.buf[total:g.n])
			return nil
		}
		m, err := g.c.Read(g.buf[g.n:])
		if err != nil {
			return err
		}
		g.n += m
	}
}

func benchGET(b *testing.B, addr string) { benchGETPath(b, addr, "/bench") }

func benchGETPath(b *testing.B, addr, target string) {
	b.ReportAllocs()
	b.SetParallelism(4)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		g := &rawGetter{c: c, req: []byte("GET " + target + " HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: wsgate-bench\r\nAccept: */*\r\n\r\n"), buf: make([]byte, 16<<10)}
		for pb.Next() {
			if err := g.get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkProxyGET: requests/s through wsgate, keep-alive on both sides.
func BenchmarkProxyGET(b *testing.B) {
	be := benchBackend(b)
	_, addr := startProxy(b, be)
	benchGET(b, addr)
}

// BenchmarkDirectGET: the same client against the same backend, no proxy.
func BenchmarkDirectGET(b *testing.B) {
	benchGET(b, benchBackend(b))
}

// benchRouteSpecs is a table of n routes shaped like an edge (a catch-all, path routes, host
// routes, wildcards, as in route's BenchmarkMatch), every route with its own backend address;
// only "/svc97/api/" (kept when n >= 98) and "/" lead to be, the others are never dialled.
func benchRouteSpecs(b *testing.B, n int, be string) []route.Spec {
	specs := []route.Spec{{Prefix: "/", Backends: []string{be}}}
	for i := 1; len(specs) < n; i++ {
		var s string
		switch i % 4 {
		case 0:
			s = fmt.Sprintf("/svc%02d/api/=127.0.0.1:%d", i, 4000+i)
		case 1:
			s = fmt.Sprintf("/svc%02d/=127.0.0.1:%d", i, 4000+i)
		case 2:
			s = fmt.Sprintf("host%02d.example.com/=127.0.0.1:%d", i, 4000+i)
		case 3:
			s = fmt.Sprintf("*.zone%02d.example.com/app/=127.0.0.1:%d", i, 4000+i)
		}
		if i == 97 {
			s = "/svc97/api/=" + be
		}
		sp, err := route.ParseSpec(s)
		if err != nil {
			b.Fatal(err)
		}
		specs = append(specs, sp)
	}
	return specs
}

// BenchmarkProxyGETRoutes: BenchmarkProxyGET through a table of 100 routes (the request matches
// "/svc97/api/" under a Host that has no routes of its own), 0 allocs/op like the single route.
func BenchmarkProxyGETRoutes(b *testing.B) {
	be := benchBackend(b)
	_, addr, _ := startRouted(b, benchRouteSpecs(b, 100, be))
	benchGETPath(b, addr, "/svc97/api/v1/query?x=1")
}
