package route

import (
	"fmt"
	"testing"
)

type benchReq struct{ host, target []byte }

// benchTable builds n routes shaped like a real edge: a catch-all, path routes, host routes
// with their own paths, and wildcards.
func benchTable(tb testing.TB, n int) *Table {
	routes := []string{"/=127.0.0.1:3000"}
	for i := 1; len(routes) < n; i++ {
		switch i % 4 {
		case 0:
			routes = append(routes, fmt.Sprintf("/svc%02d/api/=127.0.0.1:%d", i, 4000+i))
		case 1:
			routes = append(routes, fmt.Sprintf("/svc%02d/=127.0.0.1:%d", i, 4000+i))
		case 2:
			routes = append(routes, fmt.Sprintf("host%02d.example.com/=127.0.0.1:%d", i, 4000+i))
		case 3:
			routes = append(routes, fmt.Sprintf("*.zone%02d.example.com/app/=127.0.0.1:%d", i, 4000+i))
		}
	}
	if n >= 3 {
		routes[1] = "/loki/=127.0.0.1:3100,127.0.0.1:3101"
		routes[2] = "logs.example.com/=127.0.0.1:3100"
	}
	return mustTable(tb, routes[:n]...)
}

func benchRequests() []benchReq {
	return []benchReq{
		{[]byte("grafana.example.com"), []byte("/api/live/ws")},
		{[]byte("grafana.example.com:443"), []byte("/loki/api/v1/query_range?query=%7Bjob%3D%22varlogs%22%7D&limit=1000")},
		{[]byte("Logs.Example.com"), []byte("/loki/api/v1/tail")},
		{[]byte("a.zone03.example.com"), []byte("/app/x")},
		{[]byte("10.0.0.1:8080"), []byte("/svc97/api/v1/x")},
	}
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		tb := benchTable(b, n)
		reqs := benchRequests()
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var hit, n int
			start := processCPUNanos()
			for ; b.Loop(); n++ {
				rq := &reqs[n%len(reqs)]
				if tb.Match(rq.host, rq.target) != nil {
					hit++
				}
			}
			if end := processCPUNanos(); start >= 0 && n > 0 {
				b.ReportMetric(float64(end-start)/float64(n), "cpu-ns/op")
			}
			if hit == 0 {
				b.Fatal("no match")
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, bal := range []Balance{LeastConn, RoundRobin, ClientHash} {
		sp, _ := ParseSpec("/=127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
		sp.Balance = &bal
		tb, err := NewTable([]Spec{sp}, Defaults{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		p := tb.Routes()[0].Pool
		h := HashClient([]byte("192.0.2.7"))
		b.Run(bal.String(), func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			start := processCPUNanos()
			for ; b.Loop(); n++ {
				m := p.Pick(int64(n), h, nil)
				m.Acquire(Request)
				m.Release(Request)
			}
			if end := processCPUNanos(); start >= 0 && n > 0 {
				b.ReportMetric(float64(end-start)/float64(n), "cpu-ns/op")
			}
		})
	}
}
