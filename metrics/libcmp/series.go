// Package libcmp measures the two exposition libraries considered for wsgate's /metrics on the
// same series (docs/observability.md, "Choosing the library"). It is a separate module so that
// the library not chosen never enters wsgate's go.mod.
//
// The series are those wsgate exposes with 20 routes of 5 backends each (100 backend
// addresses): the summing over per-loop shards happens before either library is involved and
// costs the same with both (see metrics.BenchmarkCollect), so here the values are a ready
// snapshot and only exposition is compared.
package libcmp

import "fmt"

// Family is one metric family of the snapshot.
type Family struct {
	Name, Help, Type string // Type: counter, gauge, histogram
	Labels           []string
	Series           []Series
}

// Series is one labelled value, or one histogram (Buckets cumulative, Bounds in seconds).
type Series struct {
	LabelValues []string
	Value       float64
	Count       uint64
	Sum         float64
	Buckets     []uint64
}

var requestBounds = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
var connectBounds = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
var tunnelBounds = []float64{1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400}

// Bounds returns the bucket layout of a histogram family.
func Bounds(name string) []float64 {
	switch name {
	case "wsgate_http_request_duration_seconds":
		return requestBounds
	case "wsgate_upstream_connect_duration_seconds":
		return connectBounds
	}
	return tunnelBounds
}

// Snapshot builds wsgate's families for routes x backendsPerRoute with non-zero values.
func Snapshot(routes, backendsPerRoute int) []Family {
	var rn, bn []string
	for i := range routes {
		rn = append(rn, fmt.Sprintf("/app%d/", i))
		for j := range backendsPerRoute {
			bn = append(bn, fmt.Sprintf("10.0.%d.%d:8080", i, j))
		}
	}
	rn = append([]string{"none"}, rn...)
	v := 1.0
	next := func() float64 { v += 7; return v }
	hist := func(bounds []float64) Series {
		s := Series{Buckets: make([]uint64, len(bounds))}
		var c uint64
		for i := range bounds {
			c += uint64(i)
			s.Buckets[i] = c
		}
		s.Count, s.Sum = c+3, next()
		return s
	}
	one := func(name, help, typ string, labels []string, values ...[]string) Family {
		f := Family{Name: name, Help: help, Type: typ, Labels: labels}
		var rec func(prefix []string, rest [][]string)
		rec = func(prefix []string, rest [][]string) {
			if len(rest) == 0 {
				s := Series{LabelValues: append([]string(nil), prefix...)}
				if typ == "histogram" {
					s = hist(Bounds(name))
					s.LabelValues = append([]string(nil), prefix...)
				} else {
					s.Value = next()
				}
				f.Series = append(f.Series, s)
				return
			}
			for _, x := range rest[0] {
				rec(append(prefix, x), rest[1:])
			}
		}
		rec(nil, values)
		return f
	}
	codes := []string{"1xx", "2xx", "3xx", "4xx", "5xx"}
	return []Family{
		one("wsgate_build_info", "version", "gauge", []string{"version", "goversion"}, []string{"v1.0.0"}, []string{"go1.26.8"}),
		one("wsgate_connections_active", "conns", "gauge", []string{"phase"}, []string{"http", "tunnel"}),
		one("wsgate_connections_accepted_total", "accepted", "counter", nil),
		one("wsgate_connections_rejected_total", "rejected", "counter", []string{"reason"}, []string{"max_conns", "fd_budget", "draining"}),
		one("wsgate_splice_pipes", "pipes", "gauge", []string{"state"}, []string{"idle", "busy"}),
		one("wsgate_body_offloads_total", "offloads", "counter", nil),
		one("wsgate_http_requests_total", "requests", "counter", []string{"route", "code"}, rn, codes),
		one("wsgate_http_request_duration_seconds", "duration", "histogram", []string{"route"}, rn),
		one("wsgate_websocket_upgrades_total", "upgrades", "counter", []string{"route", "result"}, rn, []string{"ok", "refused", "bad_accept", "upstream_error"}),
		one("wsgate_tunnels_active", "tunnels", "gauge", []string{"route"}, rn),
		one("wsgate_tunnel_duration_seconds", "tunnel duration", "histogram", []string{"route"}, rn),
		one("wsgate_tunnel_bytes_total", "bytes", "counter", []string{"route", "direction"}, rn, []string{"up", "down"}),
		one("wsgate_tunnel_closes_total", "closes", "counter", []string{"route", "reason"}, rn, []string{"client", "backend", "reset", "idle_timeout", "fin_timeout", "drain", "error"}),
		one("wsgate_upstream_connect_duration_seconds", "connect", "histogram", []string{"backend"}, bn),
		one("wsgate_upstream_errors_total", "errors", "counter", []string{"backend", "reason"}, bn, []string{"refused", "timeout", "unreachable", "reset", "response_timeout", "bad_response"}),
		one("wsgate_reloads_total", "reloads", "counter", []string{"result"}, []string{"ok", "error"}),
		one("wsgate_access_log_dropped_total", "dropped", "counter", nil),
	}
}
