package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/wsgate/wsgate/bench/internal/backend"
	"github.com/wsgate/wsgate/bench/internal/load"
	"github.com/wsgate/wsgate/bench/internal/peers"
	"github.com/wsgate/wsgate/bench/internal/report"
)

// The TLS scenarios (issue 9), run against the TLS peers only (wsgate, nginx and HAProxy
// terminating TLS with the same ECDSA P-256 certificate):
//
//	https    100 B keep-alive requests/s (wrk over TLS; the Go generator with -httpgen=go)
//	tlshs    new full handshakes/s and resumed handshakes/s (each with one request answered)
//	wssbulk  WebSocket over TLS, bulk ×8 up and down: MB/s and proxy CPU s/GB
//	wssidle  RSS per idle WSS tunnel (IdleTunnels of them, fresh proxy)
var tlsScenarios = []string{"https", "tlshs", "wssbulk", "wssidle"}

// wssBulkConns is the connection count of the WSS bulk cells: the ×8 the goals are stated in.
const wssBulkConns = 8

func (h *harness) tlsCells() []cell {
	var cs []cell
	s := h.s
	if contains(s.Scenarios, "https") {
		est := s.HTTPDur + 300*time.Millisecond
		gen := s.HTTPGen
		if gen == "both" {
			gen = "wrk"
		}
		if gen == "wrk" {
			est = wrkDur(s.HTTPDur) + 300*time.Millisecond
		}
		cs = append(cs, cell{scenario: "https", name: "https100", est: est, tls: true,
			measure: func(ctx context.Context, r *peers.Running) (outcome, error) { return h.https(ctx, r, gen) }})
	}
	if contains(s.Scenarios, "tlshs") {
		for _, resume := range []bool{false, true} {
			name := "tlshs.full"
			if resume {
				name = "tlshs.resumed"
			}
			resume, name := resume, name
			cs = append(cs, cell{scenario: "tlshs", name: name, est: s.HSDur + 200*time.Millisecond, tls: true,
				measure: func(ctx context.Context, r *peers.Running) (outcome, error) {
					res, err := load.RunTLSHandshakes(ctx, load.TLSHandshakeConfig{Addr: r.Addr, Workers: s.HSWorkers, Duration: s.HSDur,
						Resume: resume, Locals: load.SourceAddrs(s.Sources), TLS: load.ClientTLS(tls.VersionTLS13)})
					if err != nil {
						return outcome{}, err
					}
					o := outcome{
						metrics: map[string]float64{name + ".per_s": res.PerSec()},
						perUnit: []perUnit{{name + ".cpu_us", float64(res.Handshakes), 1e6}},
						errors:  res.Errors, note: res.FirstErr,
						summary: fmt.Sprintf("%.0f handshakes/s, %d resumed", res.PerSec(), res.Resumed),
					}
					if res.Handshakes > 0 {
						o.metrics[name+".resumed_pct"] = 100 * float64(res.Resumed) / float64(res.Handshakes)
					}
					return o, nil
				}})
		}
	}
	if contains(s.Scenarios, "wssbulk") {
		for _, up := range []bool{true, false} {
			dir := "down"
			if up {
				dir = "up"
			}
			prefix := fmt.Sprintf("wss.%s%d", dir, wssBulkConns)
			up := up
			cs = append(cs, cell{scenario: "wssbulk", name: prefix, est: s.BulkDur + 300*time.Millisecond, tls: true,
				measure: func(ctx context.Context, r *peers.Running) (outcome, error) {
					res, err := load.RunBulk(ctx, load.BulkConfig{Addr: r.Addr, Up: up, Conns: wssBulkConns, Duration: s.BulkDur,
						Locals: load.SourceAddrs(s.Sources), TLS: load.ClientTLS(tls.VersionTLS13)})
					return bulkOutcome(prefix, res, err)
				}})
		}
	}
	if contains(s.Scenarios, "wssidle") {
		cs = append(cs, cell{scenario: "wssidle", name: "wssidle", fresh: true, tls: true,
			est:     s.IdleSettle + time.Duration(s.IdleTunnels)*400*time.Microsecond + 500*time.Millisecond,
			measure: func(ctx context.Context, r *peers.Running) (outcome, error) { return h.wssIdle(ctx, r) }})
	}
	return cs
}

func (h *harness) https(ctx context.Context, r *peers.Running, gen string) (outcome, error) {
	var res load.HTTPResult
	var err error
	if gen == "wrk" {
		threads := 2
		if h.s.Pin {
			threads = 1
		}
		res, err = load.RunWrk(ctx, load.WrkConfig{Binary: h.wrk, URL: "https://" + r.Addr + "/100", Conns: h.s.HTTPConns, Threads: threads, Duration: h.s.HTTPDur})
	} else {
		res, err = load.RunHTTP(ctx, load.HTTPConfig{Addr: r.Addr, Path: "/100", Conns: h.s.HTTPConns, Duration: h.s.HTTPDur, BodySize: backend.SmallBody, TLS: load.ClientTLS(tls.VersionTLS13)})
	}
	if err != nil {
		return outcome{}, err
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return outcome{
		metrics: map[string]float64{"https100.rps": res.RPS(), "https100.p50_ms": ms(res.P50), "https100.p99_ms": ms(res.P99)},
		perUnit: []perUnit{{"https100.cpu_us_req", float64(res.Requests), 1e6}},
		gen:     gen, errors: res.Errors, loadCPU: res.LoadCPU, note: res.FirstErr,
		summary: fmt.Sprintf("%.0f req/s p50 %.2f ms p99 %.2f ms (%s, TLS)", res.RPS(), ms(res.P50), ms(res.P99), gen),
	}, nil
}

// wssIdle is idle over wss.
func (h *harness) wssIdle(ctx context.Context, r *peers.Running) (outcome, error) {
	k := h.s.IdleTunnels
	before := peers.TreeRSS(r.PID)
	t0 := time.Now()
	set, err := load.OpenIdleTLS(ctx, r.Addr, k, 64, load.SourceAddrs(h.s.Sources), load.ClientTLS(tls.VersionTLS13))
	if err != nil {
		return outcome{}, err
	}
	defer func() {
		set.Close()
		time.Sleep(h.s.IdleSettle / 2)
	}()
	openRate := float64(k) / time.Since(t0).Seconds()
	// A little longer than for plain tunnels: wsgate drops an idle TLS session's AEADs after a
	// second of silence (docs/tls.md); what is measured is the idle state, not the burst.
	time.Sleep(h.s.IdleSettle + time.Second)
	after := peers.TreeRSS(r.PID)
	per := float64(after-before) / float64(k)
	ok, perr := set.PingAll(ctx, 64, 30*time.Second)
	o := outcome{metrics: map[string]float64{"wssidle.rss_B": per, "wssidle.alive_pct": 100 * float64(ok) / float64(k), "wssidle.open_per_s": openRate}}
	if perr != nil {
		o.errors = int64(k - ok)
		o.note = perr.Error()
	}
	o.summary = fmt.Sprintf("%d wss tunnels, %.0f B/tunnel, %d/%d alive", k, per, ok, k)
	return o, nil
}

func (h *harness) tlsGroups() []report.Group {
	s := h.s
	var gs []report.Group
	if contains(s.Scenarios, "https") {
		gs = append(gs, report.Group{ID: "https", TLS: true, Title: fmt.Sprintf("HTTPS keep-alive, %d connections, 100 B", s.HTTPConns),
			Note: "TLS 1.3 (X25519, AES-128-GCM), one handshake per connection, then closed-loop requests.",
			Metrics: []report.Metric{
				{ID: "https100.rps", Label: "100 B req/s", Unit: "req/s", HigherBetter: true},
				{ID: "https100.p50_ms", Label: "p50", Unit: "ms", Digits: 2},
				{ID: "https100.p99_ms", Label: "p99", Unit: "ms", Digits: 2},
				{ID: "https100.cpu_us_req", Label: "proxy CPU", Unit: "µs/req", Digits: 1},
			}})
	}
	if contains(s.Scenarios, "tlshs") {
		gs = append(gs, report.Group{ID: "tlshs", TLS: true, Title: fmt.Sprintf("TLS handshakes per second, %d concurrent loops", s.HSWorkers),
			Note: "Each loop: TCP connect, TLS 1.3 handshake (X25519, ECDSA P-256 certificate), GET /100, reset. Resumed: each loop keeps its session ticket, so every handshake after its first is a PSK resumption (resumed % says how many were).",
			Metrics: []report.Metric{
				{ID: "tlshs.full.per_s", Label: "full", Unit: "1/s", HigherBetter: true},
				{ID: "tlshs.full.cpu_us", Label: "full, proxy CPU", Unit: "µs", Digits: 0},
				{ID: "tlshs.resumed.per_s", Label: "resumed", Unit: "1/s", HigherBetter: true},
				{ID: "tlshs.resumed.cpu_us", Label: "resumed, proxy CPU", Unit: "µs", Digits: 0},
				{ID: "tlshs.resumed.resumed_pct", Label: "resumed", Unit: "%", HigherBetter: true, Digits: 1},
			}})
	}
	if contains(s.Scenarios, "wssbulk") {
		p := func(dir string) string { return fmt.Sprintf("wss.%s%d", dir, wssBulkConns) }
		gs = append(gs, report.Group{ID: "wssbulk", TLS: true, Title: fmt.Sprintf("WSS bulk ×%d: throughput and proxy CPU per GB", wssBulkConns),
			Note: "64 KiB binary messages over TLS 1.3 (AES-128-GCM) between the client and the proxy; plain WebSocket to the backend.",
			Metrics: []report.Metric{
				{ID: p("up") + ".MBps", Label: "up", Unit: "MB/s", HigherBetter: true},
				{ID: p("down") + ".MBps", Label: "down", Unit: "MB/s", HigherBetter: true},
				{ID: p("up") + ".cpu_s_GB", Label: "up, proxy CPU", Unit: "CPU s/GB", Digits: 2},
				{ID: p("down") + ".cpu_s_GB", Label: "down, proxy CPU", Unit: "CPU s/GB", Digits: 2},
			}})
	}
	if contains(s.Scenarios, "wssidle") {
		gs = append(gs, report.Group{ID: "wssidle", TLS: true, Title: fmt.Sprintf("Idle WSS tunnels: %d over TLS from %d source addresses", s.IdleTunnels, s.Sources),
			Note: "RSS growth of the proxy's process tree per tunnel, on a fresh proxy, measured 2 s after the last tunnel opened; then one 100 B message through every tunnel.",
			Metrics: []report.Metric{
				{ID: "wssidle.rss_B", Label: "RSS per WSS tunnel", Unit: "B"},
				{ID: "wssidle.alive_pct", Label: "alive after idle", Unit: "%", HigherBetter: true, Digits: 1},
			}})
	}
	return gs
}

// tlsGoals compares wsgate-tls with issue 9's targets.
func tlsGoals(w io.Writer, rows []report.Peer, recs []report.Record) {
	agg := report.Aggregate(recs)
	med := func(peer, id string) float64 {
		if a, ok := agg[peer][id]; ok && a.N > 0 {
			return a.Median
		}
		return math.NaN()
	}
	ran := false
	for _, p := range rows {
		if p.Name == "wsgate-tls" && p.Skipped == "" {
			ran = true
		}
	}
	if !ran {
		return
	}
	best := func(id string, higher bool) float64 {
		v := math.NaN()
		for _, p := range []string{"nginx-tls", "haproxy-tls"} {
			x := med(p, id)
			if math.IsNaN(x) {
				continue
			}
			if math.IsNaN(v) || (higher && x > v) || (!higher && x < v) {
				v = x
			}
		}
		return v
	}
	type goal struct {
		name, metric string
		target       float64
		tl           string
		higher       bool
		digits       int
	}
	hs := best("https100.rps", true)
	gs := []goal{
		{"idle WSS tunnel RSS <= 2 KiB", "wssidle.rss_B", 2048, "2,048 B", false, 0},
		{"HTTPS 100 B req/s >= 1.2× the better peer", "https100.rps", 1.2 * hs, report.FormatNum(1.2*hs, 0) + " req/s", true, 0},
		{"full handshakes/s >= the better peer", "tlshs.full.per_s", best("tlshs.full.per_s", true), report.FormatNum(best("tlshs.full.per_s", true), 0) + "/s", true, 0},
		{"WSS CPU/GB (up ×8) <= the better peer", "wss.up8.cpu_s_GB", best("wss.up8.cpu_s_GB", false), report.FormatNum(best("wss.up8.cpu_s_GB", false), 2) + " s/GB", false, 2},
		{"WSS CPU/GB (down ×8) <= the better peer", "wss.down8.cpu_s_GB", best("wss.down8.cpu_s_GB", false), report.FormatNum(best("wss.down8.cpu_s_GB", false), 2) + " s/GB", false, 2},
	}
	fmt.Fprintf(w, "### Goals, TLS (issue 9)\n\n| goal | target | wsgate-tls |\n|---|---:|---:|\n")
	for _, g := range gs {
		tl := g.tl
		if math.IsNaN(g.target) {
			tl = "n/a (reference peer missing)"
		}
		v := med("wsgate-tls", g.metric)
		verdict := "-"
		if !math.IsNaN(v) && !math.IsNaN(g.target) {
			if (g.higher && v >= g.target) || (!g.higher && v <= g.target) {
				verdict = "met"
			} else {
				verdict = "not met"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s (%s) |\n", g.name, tl, report.FormatNum(v, g.digits), verdict)
	}
	fmt.Fprintln(w)
}

// warmUp checks a peer answers (over TLS for a TLS peer) and warms its pools.
func warmUp(ctx context.Context, r *peers.Running, d time.Duration) error {
	cfg := load.HTTPConfig{Addr: r.Addr, Path: "/100", Conns: 4, Duration: d, BodySize: backend.SmallBody}
	if r.TLS {
		cfg.TLS = load.ClientTLS(tls.VersionTLS13)
	}
	_, err := load.RunHTTP(ctx, cfg)
	return err
}

// peersFor are the report rows a group shows: TLS groups list the TLS peers, the others the rest.
func peersFor(g report.Group, rows []report.Peer, tlsNames map[string]bool) []report.Peer {
	var out []report.Peer
	for _, p := range rows {
		if tlsNames[p.Name] == g.TLS {
			out = append(out, p)
		}
	}
	return out
}

func tlsPeerNames() map[string]bool {
	m := map[string]bool{}
	for _, s := range peers.All() {
		if s.TLS {
			m[s.Name] = true
		}
	}
	return m
}
