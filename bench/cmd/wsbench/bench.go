package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/wsgate/wsgate/bench/internal/peers"
	"github.com/wsgate/wsgate/bench/internal/report"
	"github.com/wsgate/wsgate/bench/internal/stats"
)

func bench(ctx context.Context, root string, s Suite) error {
	tmp, err := os.MkdirTemp("", "wsbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }

	// Helper programs are built fresh so the run measures the checked-out source.
	backendBin := filepath.Join(tmp, "bin", "backend")
	if err := goBuild(root, backendBin, "./bench/backend"); err != nil {
		return fmt.Errorf("backend: build: %w", err)
	}
	var bins peers.Bins
	hp := filepath.Join(tmp, "bin", "httputilproxy")
	if err := goBuild(root, hp, "./bench/httputilproxy"); err != nil {
		logf("wsbench: httputil peer unavailable: %v", err)
	} else {
		bins.HTTPUtil = hp
	}
	bins.Nginx, _ = exec.LookPath("nginx")
	bins.HAProxy, _ = exec.LookPath("haproxy")
	if _, err := os.Stat(s.WSGateBinary); err == nil {
		bins.WSGate = s.WSGateBinary
	}

	baddr, err := peers.FreePort()
	if err != nil {
		return err
	}
	tlsFiles, err := peers.WriteTLSFiles(filepath.Join(tmp, "tls"))
	if err != nil {
		return fmt.Errorf("TLS certificate for the TLS peers: %w", err)
	}
	bdir := filepath.Join(tmp, "backend")
	os.MkdirAll(bdir, 0o755)
	env := peers.Env{Dir: tmp, BackendAddr: baddr, Bins: bins, TLS: tlsFiles}
	bcmd, err := peers.Command(env, bdir, backendBin, "-listen", baddr)
	if err != nil {
		return fmt.Errorf("backend: start: %w", err)
	}
	bdone := make(chan struct{})
	go func() { bcmd.Wait(); close(bdone) }()
	defer func() { bcmd.Process.Signal(os.Interrupt); bcmd.Process.Kill(); <-bdone }()
	if err := peers.WaitReady(ctx, baddr, bdone, 10*time.Second); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	env.ProxyCPUs = runtime.NumCPU()
	if s.Pin {
		env.Pin = []string{"taskset", "-c", "0"}
		env.ProxyCPUs = 1
	}

	specs, err := peers.Select(s.PeerNames)
	if err != nil {
		return err
	}
	var (
		running []*peers.Running
		rows    []report.Peer
		notes   []string
	)
	defer func() {
		for _, r := range running {
			r.Stop()
		}
	}()
	for _, sp := range specs {
		row := report.Peer{Name: sp.Name, Label: sp.Label, Direct: sp.Direct()}
		r, skip, err := sp.Start(ctx, env)
		switch {
		case err != nil:
			row.Skipped = "failed to start: " + err.Error()
		case skip != "":
			row.Skipped = skip
		default:
			// Warm up (JIT-free, but pools, page cache, backend keep-alive) and check it works.
			if werr := warmUp(ctx, r, 200*time.Millisecond); werr != nil {
				row.Skipped = "failed warm-up: " + werr.Error()
				r.Stop()
			} else {
				running = append(running, r)
			}
		}
		if row.Skipped != "" {
			notes = append(notes, fmt.Sprintf("%s skipped: %s", sp.Name, row.Skipped))
			logf("wsbench: %s skipped: %s", sp.Name, row.Skipped)
		}
		rows = append(rows, row)
	}
	if len(running) == 0 {
		return errors.New("no peer could run")
	}

	h := &harness{s: s, backendPID: bcmd.Process.Pid}
	h.wrk, _ = exec.LookPath("wrk")
	cells := h.cells()
	prog := newProgress(os.Stderr)
	for _, c := range cells {
		n := 0
		for _, r := range running {
			if r.TLS == c.tls {
				n++
			}
		}
		prog.estTotal += time.Duration(s.Runs*n) * (c.est + s.Settle)
		prog.total += s.Runs * n
	}
	logf("wsbench: suite %s, %d peers running, %d measurements, estimated %s", s.Name, len(running), prog.total, prog.estTotal.Round(time.Second))

	var recs []report.Record
	dead := map[string]bool{}
	for _, c := range cells {
		for run := 1; run <= s.Runs; run++ {
			// Interleaved: every peer once, then the next run, so drift (thermal, noisy
			// neighbours) spreads over all peers instead of landing on one.
			for i, r := range running {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if r.TLS != c.tls {
					continue // TLS scenarios against TLS peers, the others against plain ones
				}
				prog.step(r.Name, c.name, run, s.Runs, c.est+s.Settle)
				if dead[r.Name] {
					continue
				}
				if c.fresh && !r.Direct() {
					// Memory per tunnel is only meaningful on a process whose pools were not
					// already grown by earlier scenarios (1,000 RTT connections, say).
					nr, err := restart(ctx, r, env)
					if err != nil {
						dead[r.Name] = true
						notes = append(notes, err.Error())
						prog.warn(err.Error())
						continue
					}
					running[i], r = nr, nr
				}
				rec, summary, err := h.measure(ctx, c, r, run)
				// A window in which other processes took more than -max-other of a core says
				// more about them than about the peer: measure again (bounded), keep the last.
				for retry := 1; err == nil && !c.fresh && retry <= s.Retries && otherShare(rec) > s.MaxOther; retry++ {
					prog.result(fmt.Sprintf("%s %s run %d: other processes used %.0f%% of a core, measuring again", r.Name, c.name, run, 100*otherShare(rec)))
					time.Sleep(s.Settle)
					rec, summary, err = h.measure(ctx, c, r, run)
					rec.Retries = retry
				}
				if err != nil {
					rec.Note = err.Error()
					prog.warn(fmt.Sprintf("%s %s run %d: %v", r.Name, c.name, run, err))
				} else {
					prog.result(fmt.Sprintf("%s %s run %d: %s (other CPU %.0f%%)", r.Name, c.name, run, summary, 100*otherShare(rec)))
				}
				recs = append(recs, rec)
				if !r.Alive() {
					dead[r.Name] = true
					msg := fmt.Sprintf("%s exited during %s run %d; its later figures are missing. log: %s", r.Name, c.name, run, r.LogTail())
					notes = append(notes, msg)
					prog.warn(msg)
				}
				time.Sleep(s.Settle)
			}
		}
	}
	prog.finish()
	return h.write(root, rows, recs, notes, prog.log.String())
}

// otherShare is the CPU other processes used during rec's window, in cores.
func otherShare(rec report.Record) float64 {
	if rec.CPU.WindowS <= 0 {
		return 0
	}
	return rec.CPU.OtherS / rec.CPU.WindowS
}

// restart stops a peer and starts a fresh process of it, warmed up like at the start.
func restart(ctx context.Context, r *peers.Running, env peers.Env) (*peers.Running, error) {
	r.Stop()
	nr, skip, err := r.Spec.Start(ctx, env)
	if err == nil && skip != "" {
		err = errors.New(skip)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: restart for a fresh measurement: %w", r.Name, err)
	}
	if err := warmUp(ctx, nr, 100*time.Millisecond); err != nil {
		nr.Stop()
		return nil, fmt.Errorf("%s: warm-up after restart: %w", r.Name, err)
	}
	return nr, nil
}

// measure runs one cell against one peer and accounts the CPU spent meanwhile.
// It returns the record and a one-line summary for the progress log.
func (h *harness) measure(ctx context.Context, c cell, r *peers.Running, run int) (report.Record, string, error) {
	rec := report.Record{Time: time.Now().UTC().Format(time.RFC3339), Suite: h.s.Name, Scenario: c.scenario, Cell: c.name, Peer: r.Name, Run: run, Metrics: map[string]float64{}}
	self := os.Getpid()
	proxyCPU := func() time.Duration {
		if r.Direct() {
			return 0
		}
		return peers.TreeCPU(r.PID)
	}
	sys0, _ := peers.ReadSysCPU()
	p0, l0, b0 := proxyCPU(), peers.ProcCPU(self), peers.TreeCPU(h.backendPID)
	t0 := time.Now()
	o, err := c.measure(ctx, r)
	window := time.Since(t0)
	sys1, _ := peers.ReadSysCPU()
	p1, l1, b1 := proxyCPU(), peers.ProcCPU(self), peers.TreeCPU(h.backendPID)
	if err != nil {
		return rec, "", err
	}
	pcpu := p1 - p0
	load := l1 - l0 + o.loadCPU
	bcpu := b1 - b0
	d := sys1.Sub(sys0)
	other := d.Busy - pcpu - load - bcpu
	if other < 0 {
		other = 0 // tick rounding across several processes
	}
	rec.CPU = report.CPUShare{WindowS: window.Seconds(), ProxyS: pcpu.Seconds(), LoadS: load.Seconds(), BackendS: bcpu.Seconds(), OtherS: other.Seconds(), IRQS: d.IRQ.Seconds()}
	for k, v := range o.metrics {
		rec.Metrics[k] = v
	}
	for _, u := range o.perUnit {
		if r.Direct() || u.units <= 0 {
			rec.Metrics[u.id] = math.NaN()
		} else {
			rec.Metrics[u.id] = pcpu.Seconds() * u.scale / u.units
		}
	}
	rec.Generator = o.gen
	rec.Errors = o.errors
	rec.Note = o.note
	return rec, o.summary, nil
}

func goBuild(root, out, pkg string) error {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v: %s", pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// progress shows which peer and scenario run and the time left: one rewritten line on a
// terminal, plain lines otherwise (CI logs).
type progress struct {
	w                 io.Writer
	tty               bool
	total, done       int
	estTotal, estDone time.Duration
	start             time.Time
	line              string
	log               strings.Builder // plain lines for progress.log, whatever the terminal
}

func newProgress(w *os.File) *progress {
	fi, err := w.Stat()
	return &progress{w: w, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb", start: time.Now()}
}

func (p *progress) left() time.Duration {
	rest := p.estTotal - p.estDone
	if p.estDone > 0 {
		// scale the estimate by how far off it has been so far
		rest = time.Duration(float64(rest) * float64(time.Since(p.start)) / float64(p.estDone))
	}
	if rest < 0 {
		rest = 0
	}
	return rest.Round(time.Second)
}

func (p *progress) step(peer, cell string, run, runs int, est time.Duration) {
	p.done++
	p.line = fmt.Sprintf("[%d/%d] %-10s %-14s run %d/%d  ~%s left", p.done, p.total, cell, peer, run, runs, p.left())
	p.estDone += est
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", p.line)
	}
}

func (p *progress) result(msg string) {
	line := fmt.Sprintf("[%d/%d] %s  (~%s left)\n", p.done, p.total, msg, p.left())
	p.log.WriteString(line)
	if !p.tty {
		fmt.Fprint(p.w, line)
	}
}

func (p *progress) warn(msg string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "WARN %s\n", msg)
	fmt.Fprintf(&p.log, "WARN %s\n", msg)
	if p.tty {
		fmt.Fprint(p.w, p.line)
	}
}

func (p *progress) finish() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "wsbench: %d measurements in %s\n", p.done, time.Since(p.start).Round(time.Second))
	fmt.Fprintf(&p.log, "wsbench: %d measurements in %s\n", p.done, time.Since(p.start).Round(time.Second))
}

// write produces results.jsonl, report.md, the charts and machine.md, then refreshes latest/.
func (h *harness) write(root string, rows []report.Peer, recs []report.Record, notes []string, progressLog string) error {
	dir := filepath.Join(h.s.OutDir, h.s.Tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	groups := h.groups()
	if err := report.WriteFile(filepath.Join(dir, "results.jsonl"), func(w io.Writer) error { return report.WriteJSONL(w, recs) }); err != nil {
		return err
	}
	var charts []string
	for _, g := range groups {
		name := "chart-" + slug(g.ID) + ".svg"
		charts = append(charts, name)
		g := g
		if err := report.WriteFile(filepath.Join(dir, name), func(w io.Writer) error { return report.SVG(w, g, peersFor(g, rows, tlsPeerNames()), recs) }); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "progress.log"), []byte(progressLog), 0o644); err != nil {
		return err
	}
	machine := machineInfo(h.s)
	if err := os.WriteFile(filepath.Join(dir, "machine.md"), []byte(machine), 0o644); err != nil {
		return err
	}
	if err := report.WriteFile(filepath.Join(dir, "report.md"), func(w io.Writer) error {
		h.reportMD(w, groups, rows, recs, notes, charts)
		return nil
	}); err != nil {
		return err
	}
	latest := filepath.Join(h.s.OutDir, "latest")
	if filepath.Clean(dir) != filepath.Clean(latest) {
		os.RemoveAll(latest)
		if err := copyDir(dir, latest); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "wsbench: wrote %s (and %s)\n", dir, latest)
	if h.s.PrintReport {
		b, _ := os.ReadFile(filepath.Join(dir, "report.md"))
		os.Stdout.Write(b)
	}
	return nil
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) reportMD(w io.Writer, groups []report.Group, rows []report.Peer, recs []report.Record, notes []string, charts []string) {
	s := h.s
	fmt.Fprintf(w, "# wsgate benchmark: %s suite\n\n", s.Name)
	fmt.Fprintf(w, "Run %s on %s. Command: `%s`. Each figure is the median of %d runs; ±x%% is half the min–max range relative to the median. ", time.Now().UTC().Format("2006-01-02 15:04 UTC"), machineLine(), s.Command, s.Runs)
	fmt.Fprintf(w, "(a×D, b×B) are the value divided by direct's and by the best proxy's (↑: higher is better, ↓: lower is better). ")
	if s.Pin {
		fmt.Fprintf(w, "Pinned: proxy on CPU 0, load generator and backend on CPU 1.\n\n")
	} else {
		fmt.Fprintf(w, "Not pinned: proxy, load and backend share all CPUs.\n\n")
	}
	if s.Nice != 0 {
		fmt.Fprintf(w, "Ran at nice %d: the benchmark's processes had priority over other work on the machine.\n\n", s.Nice)
	}
	var shares []float64
	retried := 0
	for _, r := range recs {
		shares = append(shares, otherShare(r))
		if r.Retries > 0 {
			retried++
		}
	}
	if med := stats.Summarize(shares); med.N > 0 && med.Median > 0.1 {
		fmt.Fprintf(w, "**The machine was busy:** during the median measurement, processes outside the benchmark used %.0f%% of a core (max %.0f%%). Measurements with more than %.0f%% were repeated up to %d times (%d were). Expect wider spreads than on a quiet machine; see the CPU-of-others table.\n\n",
			100*med.Median, 100*med.Max, 100*s.MaxOther, s.Retries, retried)
	}
	fmt.Fprintf(w, "## Summary\n\n")
	tlsNames := tlsPeerNames()
	for _, sg := range []report.Group{summaryGroup(groups), summaryTLSGroup(groups)} {
		if len(sg.Metrics) > 0 {
			report.Markdown(w, []report.Group{sg}, peersFor(sg, rows, tlsNames), recs)
		}
	}
	plain := peersFor(report.Group{}, rows, tlsNames)
	for _, p := range plain {
		if p.Skipped == "" {
			goals(w, plain, recs)
			break
		}
	}
	tlsGoals(w, rows, recs)
	fmt.Fprintf(w, "## Details\n\n")
	for _, g := range groups {
		report.Markdown(w, []report.Group{g}, peersFor(g, rows, tlsNames), recs)
	}
	fmt.Fprintf(w, "## Charts\n\n")
	for _, c := range charts {
		fmt.Fprintf(w, "![%s](%s)\n\n", strings.TrimSuffix(c, ".svg"), c)
	}
	fmt.Fprintf(w, "## CPU used by other processes during the measurements\n\n")
	fmt.Fprintf(w, "Median over runs, in %% of one core: \"other\" is /proc/stat user+nice+system minus the proxy, the load generator (this program and wrk) and the backend; \"irq\" is irq+softirq time, where the kernel processes loopback packets for everyone.\n\n")
	report.OtherCPU(w, rows, recs)
	errs := map[string][]string{}
	for _, r := range recs {
		if r.Errors > 0 || r.Note != "" {
			k := r.Peer + " " + r.Cell
			errs[k] = append(errs[k], fmt.Sprintf("run %d: %d errors %s", r.Run, r.Errors, r.Note))
		}
	}
	if len(notes) > 0 || len(errs) > 0 {
		fmt.Fprintf(w, "## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
		keys := make([]string, 0, len(errs))
		for k := range errs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "- %s: %s\n", k, truncate(strings.Join(errs[k], "; "), 400))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Raw measurements: results.jsonl. Machine: machine.md.\n")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// summaryGroup picks the headline columns (the ones the project's goals are stated in).
func summaryGroup(groups []report.Group) report.Group {
	want := []string{"http100.rps", "bulk.up8.MBps", "bulk.down8.MBps", "bulk.down8.cpu_s_GB"}
	labels := map[string]string{"http100.rps": "HTTP 100 B req/s", "bulk.up8.MBps": "WS bulk up ×8", "bulk.down8.MBps": "WS bulk down ×8",
		"bulk.down8.cpu_s_GB": "CPU down ×8", "idle.rss_B": "RSS per idle tunnel", "hs.per_s": "new tunnels/s",
		"storm.per_s": "storm tunnels/s", "storm.idle_rss_B": "RSS/tunnel after storm"}
	for _, gr := range groups {
		if strings.HasPrefix(gr.ID, "rtt") {
			// one RTT p99 column per rate: "RTT p99 5,000/s"
			id := gr.ID + ".p99_ms"
			want = append(want, id)
			labels[id] = "RTT p99 " + report.FormatNum(rttRateOf(gr.ID), 0) + "/s"
		}
	}
	want = append(want, "idle.rss_B", "hs.per_s", "storm.per_s", "storm.idle_rss_B")
	g := report.Group{ID: "summary", Title: "Headline figures"}
	for _, id := range want {
		for _, gr := range groups {
			for _, m := range gr.Metrics {
				if m.ID == id {
					m.Label = labels[id]
					g.Metrics = append(g.Metrics, m)
				}
			}
		}
	}
	return g
}

// summaryTLSGroup picks the TLS headline columns (issue 9's figures).
func summaryTLSGroup(groups []report.Group) report.Group {
	want := []string{"https100.rps", "tlshs.full.per_s", "tlshs.resumed.per_s", "wss.up8.MBps", "wss.down8.MBps", "wss.up8.cpu_s_GB", "wss.down8.cpu_s_GB", "wssidle.rss_B"}
	labels := map[string]string{"https100.rps": "HTTPS 100 B req/s", "tlshs.full.per_s": "full handshakes/s", "tlshs.resumed.per_s": "resumed handshakes/s",
		"wss.up8.MBps": "WSS bulk up ×8", "wss.down8.MBps": "WSS bulk down ×8", "wss.up8.cpu_s_GB": "CPU up ×8", "wss.down8.cpu_s_GB": "CPU down ×8", "wssidle.rss_B": "RSS per idle WSS tunnel"}
	g := report.Group{ID: "summary-tls", TLS: true, Title: "Headline figures, TLS"}
	for _, id := range want {
		for _, gr := range groups {
			for _, m := range gr.Metrics {
				if m.ID == id {
					m.Label = labels[id]
					g.Metrics = append(g.Metrics, m)
				}
			}
		}
	}
	return g
}

// rttRates lists the rates of the rtt cells that have records, in order of first appearance.
func rttRates(recs []report.Record) []float64 {
	var out []float64
	seen := map[string]bool{}
	for _, r := range recs {
		if r.Scenario == "rtt" && !seen[r.Cell] {
			seen[r.Cell] = true
			out = append(out, rttRateOf(r.Cell))
		}
	}
	return out
}

// rttRateOf is the rate in an rtt group or metric prefix ("rtt5000" -> 5000).
func rttRateOf(prefix string) float64 {
	var r float64
	fmt.Sscan(strings.TrimPrefix(prefix, "rtt"), &r)
	return r
}

// goals compares wsgate with the project's stated targets (benchmarks to chase, not tests).
func goals(w io.Writer, rows []report.Peer, recs []report.Record) {
	agg := report.Aggregate(recs)
	med := func(peer, id string) float64 {
		if a, ok := agg[peer][id]; ok && a.N > 0 {
			return a.Median
		}
		return math.NaN()
	}
	var ws []string
	for _, p := range rows {
		if strings.HasPrefix(p.Name, "wsgate") && p.Skipped == "" {
			ws = append(ws, p.Name)
		}
	}
	fmt.Fprintf(w, "### Goals\n\n")
	fmt.Fprintf(w, "The project's targets for wsgate (benchmarks to chase, not tests), checked against this run's medians.\n\n")
	if len(ws) == 0 {
		fmt.Fprintf(w, "wsgate did not run (bin/wsgate missing or failed to start), so the goals are not evaluated.\n\n")
		return
	}
	maxOf := func(a, b float64) float64 {
		if math.IsNaN(a) {
			return b
		}
		if math.IsNaN(b) {
			return a
		}
		return math.Max(a, b)
	}
	// best is the best median of metric over the other proxies (not direct, not wsgate).
	best := func(metric string, higher bool) float64 {
		b := math.NaN()
		for _, p := range rows {
			if p.Direct || strings.HasPrefix(p.Name, "wsgate") {
				continue
			}
			if v := med(p.Name, metric); !math.IsNaN(v) && (math.IsNaN(b) || (higher && v > b) || (!higher && v < b)) {
				b = v
			}
		}
		return b
	}
	type goal struct {
		name   string
		metric string
		target func() (float64, string)
		higher bool
		digits int
	}
	gs := []goal{
		{"idle tunnel RSS <= 1 KiB", "idle.rss_B", func() (float64, string) { return 1024, "1,024 B" }, false, 0},
		{"WS bulk ×8 >= 1.5× HAProxy (down)", "bulk.down8.MBps", func() (float64, string) {
			v := 1.5 * med("haproxy", "bulk.down8.MBps")
			return v, report.FormatNum(v, 0) + " MB/s"
		}, true, 0},
		{"WS bulk ×8 >= 1.5× HAProxy (up)", "bulk.up8.MBps", func() (float64, string) {
			v := 1.5 * med("haproxy", "bulk.up8.MBps")
			return v, report.FormatNum(v, 0) + " MB/s"
		}, true, 0},
		{"CPU per GB <= 0.5× HAProxy (down ×8)", "bulk.down8.cpu_s_GB", func() (float64, string) {
			v := 0.5 * med("haproxy", "bulk.down8.cpu_s_GB")
			return v, report.FormatNum(v, 2) + " s/GB"
		}, false, 2},
		{"HTTP 100 B >= 1.2× max(nginx, HAProxy)", "http100.rps", func() (float64, string) {
			v := 1.2 * maxOf(maxOf(med("nginx-w1", "http100.rps"), med("nginx-w2", "http100.rps")), med("haproxy", "http100.rps"))
			return v, report.FormatNum(v, 0) + " req/s"
		}, true, 0},
	}
	for _, rate := range rttRates(recs) {
		p := rttPrefix(rate)
		rl := report.FormatNum(rate, 0) + "/s"
		gs = append(gs,
			goal{"RTT p99 <= best other peer (" + rl + ")", p + ".p99_ms", func() (float64, string) {
				v := best(p+".p99_ms", false)
				return v, report.FormatNum(v, 3) + " ms"
			}, false, 3},
			goal{"rate kept (" + rl + ", >= 99%)", p + ".kept_pct", func() (float64, string) { return 99, "99%" }, true, 1},
			goal{"proxy CPU per message <= best other peer (" + rl + ")", p + ".cpu_us_msg", func() (float64, string) {
				v := best(p+".cpu_us_msg", false)
				return v, report.FormatNum(v, 1) + " µs"
			}, false, 1})
	}
	gs = append(gs,
		goal{"storm: new tunnels/s >= 1.2× nginx 2 workers", "storm.per_s", func() (float64, string) {
			v := 1.2 * med("nginx-w2", "storm.per_s")
			return v, report.FormatNum(v, 0) + "/s"
		}, true, 0},
		goal{"storm: proxy CPU per upgrade <= nginx 2 workers", "storm.cpu_us", func() (float64, string) {
			v := med("nginx-w2", "storm.cpu_us")
			return v, report.FormatNum(v, 1) + " µs"
		}, false, 1},
		goal{"storm: idle tunnel RSS after the storm <= 512 B", "storm.idle_rss_B", func() (float64, string) { return 512, "512 B" }, false, 0})
	fmt.Fprintf(w, "| goal | target |")
	for _, p := range ws {
		fmt.Fprintf(w, " %s |", p)
	}
	fmt.Fprintf(w, "\n|---|---:|")
	for range ws {
		fmt.Fprintf(w, "---:|")
	}
	fmt.Fprintln(w)
	for _, g := range gs {
		t, tl := g.target()
		if math.IsNaN(t) {
			tl = "n/a (reference peer missing)"
		}
		fmt.Fprintf(w, "| %s | %s |", g.name, tl)
		for _, p := range ws {
			v := med(p, g.metric)
			verdict := "-"
			if !math.IsNaN(v) && !math.IsNaN(t) {
				if (g.higher && v >= t) || (!g.higher && v <= t) {
					verdict = "met"
				} else {
					verdict = "not met"
				}
			}
			fmt.Fprintf(w, " %s (%s) |", report.FormatNum(v, g.digits), verdict)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}
