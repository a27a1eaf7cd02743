package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/wsgate/wsgate/bench/internal/backend"
	"github.com/wsgate/wsgate/bench/internal/load"
	"github.com/wsgate/wsgate/bench/internal/peers"
	"github.com/wsgate/wsgate/bench/internal/report"
)

// outcome is what one measurement produced, before CPU accounting.
type outcome struct {
	metrics map[string]float64
	// perUnit metrics are proxy CPU divided by work done: metric = proxyCPU seconds * scale / units.
	perUnit []perUnit
	gen     string
	errors  int64
	loadCPU time.Duration // CPU of a child load generator (wrk), measured from its rusage
	note    string
	summary string // one line for the progress log
}

type perUnit struct {
	id           string
	units, scale float64
}

// cell is one figure-producing measurement, run once per peer per run.
type cell struct {
	scenario, name string
	est            time.Duration // expected wall time, for the time-left estimate
	fresh          bool          // restart the peer before each measurement
	tls            bool          // runs against the TLS peers only (tls.go); the others against the plain ones
	measure        func(ctx context.Context, r *peers.Running) (outcome, error)
}

type harness struct {
	s          Suite
	backendPID int
	wrk        string
}

func (h *harness) cells() []cell {
	var cs []cell
	s := h.s
	if contains(s.Scenarios, "http") {
		gens := []string{s.HTTPGen}
		if s.HTTPGen == "both" {
			gens = []string{"wrk", "go"}
		}
		for _, size := range []struct {
			path, tag string
			body      int
		}{{"/100", "100", backend.SmallBody}, {"/16k", "16k", backend.LargeBody}} {
			for gi, gen := range gens {
				prefix := "http" + size.tag
				if gi > 0 {
					prefix += gen
				}
				size, gen := size, gen
				est := s.HTTPDur + 200*time.Millisecond
				if gen == "wrk" {
					est = wrkDur(s.HTTPDur) + 300*time.Millisecond
				}
				cs = append(cs, cell{scenario: "http", name: prefix, est: est,
					measure: func(ctx context.Context, r *peers.Running) (outcome, error) {
						return h.http(ctx, r, gen, size.path, size.body, prefix)
					}})
			}
		}
	}
	if contains(s.Scenarios, "bulk") {
		for _, up := range []bool{true, false} {
			for _, n := range s.BulkConns {
				dir := "down"
				if up {
					dir = "up"
				}
				prefix := fmt.Sprintf("bulk.%s%d", dir, n)
				up, n := up, n
				cs = append(cs, cell{scenario: "bulk", name: prefix, est: s.BulkDur + 150*time.Millisecond,
					measure: func(ctx context.Context, r *peers.Running) (outcome, error) {
						res, err := load.RunBulk(ctx, load.BulkConfig{Addr: r.Addr, Up: up, Conns: n, Duration: s.BulkDur, Locals: load.SourceAddrs(s.Sources)})
						return bulkOutcome(prefix, res, err)
					}})
			}
		}
	}
	if contains(s.Scenarios, "rtt") {
		for _, rate := range s.RTTRates {
			rate := rate
			p := rttPrefix(rate)
			cs = append(cs, cell{scenario: "rtt", name: p, est: s.RTTDur + 400*time.Millisecond,
				measure: func(ctx context.Context, r *peers.Running) (outcome, error) {
					res, err := load.RunRTT(ctx, load.RTTConfig{Addr: r.Addr, Conns: s.RTTConns, Rate: rate, Size: 100, Duration: s.RTTDur, Locals: load.SourceAddrs(s.Sources)})
					if err != nil {
						return outcome{}, err
					}
					ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
					o := outcome{
						metrics: map[string]float64{p + ".p50_ms": ms(res.P50), p + ".p99_ms": ms(res.P99), p + ".p999_ms": ms(res.P999),
							p + ".max_ms": ms(res.Max), p + ".achieved": res.Achieved, p + ".kept_pct": 100 * res.Achieved / rate,
							p + ".lost": float64(res.Sent - res.Received)},
						// An echoed message crosses the proxy twice (up and back); CPU per message is per echo.
						perUnit: []perUnit{{p + ".cpu_us_msg", float64(res.Received), 1e6}},
						errors:  res.Errors,
						note:    res.FirstErr,
						summary: fmt.Sprintf("%.0f/s: p50 %.2f ms p99 %.2f ms p99.9 %.2f ms, %.0f msg/s", rate, ms(res.P50), ms(res.P99), ms(res.P999), res.Achieved),
					}
					return o, nil
				}})
		}
	}
	if contains(s.Scenarios, "idle") {
		cs = append(cs, cell{scenario: "idle", name: "idle", fresh: true, est: s.IdleSettle + time.Duration(s.IdleTunnels)*150*time.Microsecond + 300*time.Millisecond,
			measure: func(ctx context.Context, r *peers.Running) (outcome, error) { return h.idle(ctx, r) }})
	}
	if contains(s.Scenarios, "handshake") {
		cs = append(cs, cell{scenario: "handshake", name: "handshake", est: s.HSDur + 100*time.Millisecond,
			measure: func(ctx context.Context, r *peers.Running) (outcome, error) {
				res, err := load.RunHandshakes(ctx, load.HandshakeConfig{Addr: r.Addr, Workers: s.HSWorkers, Duration: s.HSDur, Locals: load.SourceAddrs(s.Sources)})
				if err != nil {
					return outcome{}, err
				}
				return outcome{
					metrics: map[string]float64{"hs.per_s": res.PerSec()},
					perUnit: []perUnit{{"hs.cpu_us", float64(res.Upgrades), 1e6}},
					errors:  res.Errors, note: res.FirstErr,
					summary: fmt.Sprintf("%.0f upgrades/s", res.PerSec()),
				}, nil
			}})
	}
	if contains(s.Scenarios, "storm") {
		cs = append(cs, cell{scenario: "storm", name: "storm", fresh: true,
			est:     s.StormIdle + time.Duration(s.StormClients)*400*time.Microsecond + 2*time.Second,
			measure: func(ctx context.Context, r *peers.Running) (outcome, error) { return h.storm(ctx, r) }})
	}
	return append(cs, h.tlsCells()...)
}

// rttPrefix names the metrics of the rtt cell at one rate: rtt5000, rtt20000.
func rttPrefix(rate float64) string { return fmt.Sprintf("rtt%.0f", rate) }

// storm opens StormClients tunnels at once (StormPar in flight) on a freshly started peer,
// then reads: upgrades per second, connect-to-101 latency, the proxy's CPU per upgrade over the
// storm alone, its threads before, during (sampled) and after, and its RSS per tunnel
// StormIdle after the storm (against the baseline just before it); then one echo per tunnel.
func (h *harness) storm(ctx context.Context, r *peers.Running) (outcome, error) {
	s := h.s
	pid := r.PID
	if r.Direct() {
		pid = h.backendPID
	}
	pids := peers.Tree(pid) // nginx's workers exist before the storm and do not change
	threads := func() int {
		n := 0
		for _, p := range pids {
			n += peers.ProcThreads(p)
		}
		return n
	}
	rss0, thr0, cpu0 := peers.TreeRSS(pid), threads(), peers.TreeCPU(pid)
	stop := make(chan struct{})
	maxThr := make(chan int, 1)
	go func() {
		m := thr0
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				maxThr <- max(m, threads())
				return
			case <-t.C:
				m = max(m, threads())
			}
		}
	}()
	res, err := load.RunStorm(ctx, load.StormConfig{Addr: r.Addr, Clients: s.StormClients, Par: s.StormPar, Locals: load.SourceAddrs(s.StormSources)})
	cpu1 := peers.TreeCPU(pid)
	close(stop)
	thrMax := <-maxThr
	if res.Set != nil {
		defer func() {
			res.Set.Close()
			time.Sleep(time.Second) // let the peer tear the tunnels down before the next measurement
		}()
	}
	if err != nil {
		return outcome{}, err
	}
	select {
	case <-time.After(s.StormIdle):
	case <-ctx.Done():
		return outcome{}, ctx.Err()
	}
	rss1, thr1 := peers.TreeRSS(pid), threads()
	ok, perr := res.Set.EchoAll(ctx, 64, 30*time.Second)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	up := float64(res.Upgrades)
	o := outcome{metrics: map[string]float64{
		"storm.per_s": res.PerSec(), "storm.p50_ms": ms(res.P50), "storm.p99_ms": ms(res.P99), "storm.max_ms": ms(res.Max),
		"storm.failed": float64(res.Errors), "storm.alive_pct": 100 * float64(ok) / float64(s.StormClients),
		"storm.threads_before": float64(thr0), "storm.threads_max": float64(thrMax), "storm.threads_after": float64(thr1),
	}}
	per := float64(rss1-rss0) / up
	if r.Direct() {
		o.metrics["storm.cpu_us"] = math.NaN()
		o.metrics["storm.idle_rss_B"] = math.NaN()
		o.metrics["storm.backend_rss_B"] = per
	} else {
		o.metrics["storm.cpu_us"] = (cpu1 - cpu0).Seconds() * 1e6 / up
		o.metrics["storm.idle_rss_B"] = per
	}
	o.errors = res.Errors + int64(int(up)-ok)
	switch {
	case res.FirstErr != "":
		o.note = res.FirstErr
	case perr != nil:
		o.note = perr.Error()
	}
	o.summary = fmt.Sprintf("%d tunnels in %v: %.0f/s, p99 %.1f ms, %.1f µs CPU each; threads %d/%d/%d; %.0f B/tunnel after %v; %d/%d echo",
		res.Upgrades, res.Elapsed.Round(time.Millisecond), res.PerSec(), ms(res.P99), o.metrics["storm.cpu_us"], thr0, thrMax, thr1, per, s.StormIdle, ok, s.StormClients)
	return o, nil
}

func wrkDur(d time.Duration) time.Duration {
	r := d.Round(time.Second)
	if r < time.Second {
		r = time.Second
	}
	return r
}

func (h *harness) http(ctx context.Context, r *peers.Running, gen, path string, body int, prefix string) (outcome, error) {
	var res load.HTTPResult
	var err error
	if gen == "wrk" {
		threads := 2
		if h.s.Pin {
			threads = 1 // the load has one CPU
		}
		res, err = load.RunWrk(ctx, load.WrkConfig{Binary: h.wrk, URL: "http://" + r.Addr + path, Conns: h.s.HTTPConns, Threads: threads, Duration: h.s.HTTPDur})
	} else {
		res, err = load.RunHTTP(ctx, load.HTTPConfig{Addr: r.Addr, Path: path, Conns: h.s.HTTPConns, Duration: h.s.HTTPDur, BodySize: body})
	}
	if err != nil {
		return outcome{}, err
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return outcome{
		metrics: map[string]float64{prefix + ".rps": res.RPS(), prefix + ".p50_ms": ms(res.P50), prefix + ".p99_ms": ms(res.P99)},
		perUnit: []perUnit{{prefix + ".cpu_us_req", float64(res.Requests), 1e6}},
		gen:     gen, errors: res.Errors, loadCPU: res.LoadCPU, note: res.FirstErr,
		summary: fmt.Sprintf("%.0f req/s p50 %.2f ms p99 %.2f ms (%s)", res.RPS(), ms(res.P50), ms(res.P99), gen),
	}, nil
}

// idle opens K tunnels, reads the proxy tree's RSS growth, then proves every tunnel alive.
func (h *harness) idle(ctx context.Context, r *peers.Running) (outcome, error) {
	k := h.s.IdleTunnels
	rssOf := func() int64 {
		if r.Direct() {
			return peers.TreeRSS(h.backendPID)
		}
		return peers.TreeRSS(r.PID)
	}
	before := rssOf()
	t0 := time.Now()
	set, err := load.OpenIdle(ctx, r.Addr, k, 64, load.SourceAddrs(h.s.Sources))
	if err != nil {
		return outcome{}, err
	}
	defer func() {
		set.Close()
		time.Sleep(h.s.IdleSettle / 2) // let the peer tear down before the next measurement
	}()
	openRate := float64(k) / time.Since(t0).Seconds()
	time.Sleep(h.s.IdleSettle) // let lazily allocated per-connection state land
	after := rssOf()
	per := float64(after-before) / float64(k)
	ok, perr := set.PingAll(ctx, 64, 30*time.Second)
	o := outcome{metrics: map[string]float64{"idle.alive_pct": 100 * float64(ok) / float64(k), "idle.open_per_s": openRate}}
	if r.Direct() {
		// No proxy: the growth is the backend's; kept in the raw data, shown as '-'.
		o.metrics["idle.rss_B"] = math.NaN()
		o.metrics["idle.backend_rss_B"] = per
	} else {
		o.metrics["idle.rss_B"] = per
	}
	if perr != nil {
		o.errors = int64(k - ok)
		o.note = perr.Error()
	}
	o.summary = fmt.Sprintf("%d tunnels, %.0f B/tunnel, %d/%d alive", k, per, ok, k)
	return o, nil
}

// groups is the report layout for the cells that ran.
func (h *harness) groups() []report.Group {
	s := h.s
	var gs []report.Group
	if contains(s.Scenarios, "http") {
		gens := []string{s.HTTPGen}
		if s.HTTPGen == "both" {
			gens = []string{"wrk", "go"}
		}
		for gi, gen := range gens {
			var ms []report.Metric
			for _, size := range []struct{ tag, label string }{{"100", "100 B"}, {"16k", "16 KiB"}} {
				p := "http" + size.tag
				if gi > 0 {
					p += gen
				}
				ms = append(ms,
					report.Metric{ID: p + ".rps", Label: size.label + " req/s", Unit: "req/s", HigherBetter: true},
					report.Metric{ID: p + ".p50_ms", Label: size.label + " p50", Unit: "ms", Digits: 2},
					report.Metric{ID: p + ".p99_ms", Label: size.label + " p99", Unit: "ms", Digits: 2},
					report.Metric{ID: p + ".cpu_us_req", Label: size.label + " proxy CPU", Unit: "µs/req", Digits: 1})
			}
			id := "http"
			if gi > 0 {
				id += "-" + gen
			}
			gs = append(gs, report.Group{ID: id, Title: fmt.Sprintf("HTTP keep-alive, %d connections (%s)", s.HTTPConns, genLabel(gen)), Metrics: ms,
				Note: "Closed loop: each connection waits for a response before sending the next request. Latency is per request as the generator saw it."})
		}
	}
	if contains(s.Scenarios, "bulk") {
		var mb, cpu []report.Metric
		for _, dir := range []string{"up", "down"} {
			for _, n := range s.BulkConns {
				p := fmt.Sprintf("bulk.%s%d", dir, n)
				lbl := fmt.Sprintf("%s ×%d", dir, n)
				mb = append(mb, report.Metric{ID: p + ".MBps", Label: lbl, Unit: "MB/s", HigherBetter: true})
				cpu = append(cpu, report.Metric{ID: p + ".cpu_s_GB", Label: lbl, Unit: "CPU s/GB", Digits: 2})
			}
		}
		gs = append(gs,
			report.Group{ID: "bulk", Title: "WebSocket bulk throughput", Metrics: mb,
				Note: "64 KiB binary messages; up = client to backend (bytes counted when the backend acknowledges them), down = backend to client. MB = 10^6 bytes."},
			report.Group{ID: "bulk-cpu", Title: "WebSocket bulk: proxy CPU per GB", Metrics: cpu,
				Note: "User+system CPU of the proxy's whole process tree over the run, divided by payload GB (10^9 bytes)."})
	}
	if contains(s.Scenarios, "rtt") {
		for _, rate := range s.RTTRates {
			p := rttPrefix(rate)
			gs = append(gs, report.Group{ID: p, Title: fmt.Sprintf("Small-message round trip: 100 B echo, %d connections, %s msg/s open loop", s.RTTConns, report.FormatNum(rate, 0)),
				Note: "Latency from each message's scheduled send time (coordinated omission corrected). kept = achieved / scheduled rate. Proxy CPU per echoed message (it crosses the proxy twice).",
				Metrics: []report.Metric{
					{ID: p + ".p50_ms", Label: "p50", Unit: "ms", Digits: 3},
					{ID: p + ".p99_ms", Label: "p99", Unit: "ms", Digits: 3},
					{ID: p + ".p999_ms", Label: "p99.9", Unit: "ms", Digits: 3},
					{ID: p + ".achieved", Label: "achieved", Unit: "msg/s", HigherBetter: true},
					{ID: p + ".kept_pct", Label: "rate kept", Unit: "%", HigherBetter: true, Digits: 1},
					{ID: p + ".cpu_us_msg", Label: "proxy CPU", Unit: "µs/msg", Digits: 1},
				}})
		}
	}
	if contains(s.Scenarios, "idle") {
		gs = append(gs, report.Group{ID: "idle", Title: fmt.Sprintf("Idle tunnels: %d WebSockets from %d source addresses", s.IdleTunnels, s.Sources),
			Note: "RSS growth of the proxy's process tree (all processes, VmRSS) divided by tunnels; then one 100 B message through every tunnel.",
			Metrics: []report.Metric{
				{ID: "idle.rss_B", Label: "RSS per tunnel", Unit: "B"},
				{ID: "idle.alive_pct", Label: "alive after idle", Unit: "%", HigherBetter: true, Digits: 1},
			}})
	}
	if contains(s.Scenarios, "handshake") {
		gs = append(gs, report.Group{ID: "handshake", Title: fmt.Sprintf("New tunnels: WebSocket upgrades per second, %d concurrent loops", s.HSWorkers),
			Note: "Each loop: TCP connect, upgrade (101), reset. Counts completed upgrades.",
			Metrics: []report.Metric{
				{ID: "hs.per_s", Label: "upgrades/s", Unit: "1/s", HigherBetter: true},
				{ID: "hs.cpu_us", Label: "proxy CPU", Unit: "µs/upgrade", Digits: 1},
			}})
	}
	if contains(s.Scenarios, "storm") {
		gs = append(gs, report.Group{ID: "storm", Title: fmt.Sprintf("Reconnect storm: %s WebSockets from %d source addresses, %d upgrades in flight", report.FormatNum(float64(s.StormClients), 0), s.StormSources, s.StormPar),
			Note: fmt.Sprintf("A freshly started peer; every client connects and upgrades at once (bounded by the in-flight limit). "+
				"new tunnels/s = verified 101s over the storm; latency from connect to verified 101; proxy CPU over the storm only, per upgrade; "+
				"threads of the proxy's processes before, at most during, and after; RSS per tunnel %v after the storm against the baseline before it; then one echo per tunnel.", s.StormIdle),
			Metrics: []report.Metric{
				{ID: "storm.per_s", Label: "new tunnels/s", Unit: "1/s", HigherBetter: true},
				{ID: "storm.p50_ms", Label: "connect→101 p50", Unit: "ms", Digits: 1},
				{ID: "storm.p99_ms", Label: "connect→101 p99", Unit: "ms", Digits: 1},
				{ID: "storm.cpu_us", Label: "proxy CPU", Unit: "µs/upgrade", Digits: 1},
				{ID: "storm.idle_rss_B", Label: "RSS per tunnel after", Unit: "B"},
				{ID: "storm.threads_max", Label: "threads during", Unit: ""},
				{ID: "storm.threads_after", Label: "threads after", Unit: ""},
				{ID: "storm.alive_pct", Label: "echo after", Unit: "%", HigherBetter: true, Digits: 1},
			}})
	}
	return append(gs, h.tlsGroups()...)
}

func genLabel(gen string) string {
	if gen == "wrk" {
		return "wrk"
	}
	return "Go closed-loop generator"
}

func slug(s string) string { return strings.NewReplacer(".", "-", " ", "-").Replace(s) }

// bulkOutcome is a bulk cell's figures (plain and WSS alike): MB/s under prefix.MBps and the
// proxy's CPU per GB moved under prefix.cpu_s_GB.
func bulkOutcome(prefix string, res load.BulkResult, err error) (outcome, error) {
	if err != nil {
		return outcome{}, err
	}
	return outcome{
		metrics: map[string]float64{prefix + ".MBps": res.MBps()},
		perUnit: []perUnit{{prefix + ".cpu_s_GB", float64(res.Bytes) / 1e9, 1}},
		errors:  res.Errors,
		summary: fmt.Sprintf("%.0f MB/s", res.MBps()),
	}, nil
}
