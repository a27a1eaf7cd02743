package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/bench/internal/report"
)

func TestPresets(t *testing.T) {
	q, err := preset("quick")
	if err != nil {
		t.Fatal(err)
	}
	d, err := preset("default")
	if err != nil {
		t.Fatal(err)
	}
	if q.Runs < 3 || d.Runs < 3 {
		t.Fatal("every suite must take the median of at least 3 runs")
	}
	if q.IdleTunnels != 1000 || d.IdleTunnels != 5000 || d.RTTConns != 1000 {
		t.Fatalf("sizes: quick idle %d, default idle %d, rtt conns %d", q.IdleTunnels, d.IdleTunnels, d.RTTConns)
	}
	if fmt.Sprint(d.BulkConns) != "[1 8 64]" {
		t.Fatalf("bulk conns %v", d.BulkConns)
	}
	if _, err := preset("huge"); err == nil {
		t.Fatal("unknown suite accepted")
	}
}

// End to end through the real driver: backend built and started as a process, the direct
// peer measured in every scenario, artefacts written and the report carrying real numbers.
func TestDriverEndToEndDirect(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := preset("quick")
	s.PeerNames = "direct,wsgate" // wsgate points at a missing binary: skipped with a note
	s.Runs = 1
	s.HTTPGen = "go"
	s.HTTPDur, s.BulkDur, s.RTTDur, s.HSDur = 150*time.Millisecond, 150*time.Millisecond, 200*time.Millisecond, 150*time.Millisecond
	s.BulkConns = []int{2}
	s.RTTConns, s.RTTRates = 50, []float64{500}
	s.StormClients, s.StormPar, s.StormSources, s.StormIdle = 200, 50, 4, 100*time.Millisecond
	s.IdleTunnels = 100
	s.Settle, s.IdleSettle = 10*time.Millisecond, 50*time.Millisecond
	s.WSGateBinary = filepath.Join(t.TempDir(), "no-wsgate")
	s.OutDir = t.TempDir()
	s.Tag = "test"
	s.Command = "test"
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	if err := bench(ctx, root, s); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"test", "latest"} {
		for _, f := range []string{"results.jsonl", "report.md", "machine.md", "progress.log", "chart-http.svg", "chart-bulk.svg", "chart-rtt500.svg", "chart-idle.svg", "chart-handshake.svg", "chart-storm.svg"} {
			if st, err := os.Stat(filepath.Join(s.OutDir, dir, f)); err != nil || st.Size() == 0 {
				t.Errorf("%s/%s: %v", dir, f, err)
			}
		}
	}
	fh, err := os.Open(filepath.Join(s.OutDir, "test", "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	recs, err := report.ReadJSONL(fh)
	if err != nil {
		t.Fatal(err)
	}
	cells := map[string]report.Record{}
	for _, r := range recs {
		cells[r.Cell] = r
		if r.Peer != "direct" || r.Note != "" && r.Errors > 0 {
			t.Errorf("record %+v", r)
		}
	}
	want := map[string]string{"http100": "http100.rps", "http16k": "http16k.rps", "bulk.up2": "bulk.up2.MBps", "bulk.down2": "bulk.down2.MBps",
		"rtt500": "rtt500.achieved", "idle": "idle.alive_pct", "handshake": "hs.per_s", "storm": "storm.per_s"}
	for cell, metric := range want {
		r, ok := cells[cell]
		if !ok {
			t.Errorf("no record for %s", cell)
			continue
		}
		if v := r.Metrics[metric]; !(v > 0) {
			t.Errorf("%s: %s = %v, want > 0", cell, metric, v)
		}
		if r.CPU.WindowS <= 0 {
			t.Errorf("%s: no CPU window", cell)
		}
	}
	if v := cells["idle"].Metrics["idle.alive_pct"]; v != 100 {
		t.Errorf("idle tunnels alive %v%%, want 100", v)
	}
	if v := cells["storm"].Metrics["storm.alive_pct"]; v != 100 {
		t.Errorf("storm tunnels echoing %v%%, want 100", v)
	}
	if v := cells["storm"].Metrics["storm.threads_max"]; !(v >= 1) {
		t.Errorf("storm threads during %v, want a count", v)
	}
	md, _ := os.ReadFile(filepath.Join(s.OutDir, "test", "report.md"))
	for _, want := range []string{"| direct (no proxy) |", "| wsgate, splice on | skipped", "wsgate-splice skipped: missing wsgate", "### Goals"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}
