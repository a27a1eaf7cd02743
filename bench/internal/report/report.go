// Package report turns benchmark records into the published artefacts: raw JSON lines, a
// markdown report (rows peers, columns metrics, each cell with its spread and its ratio to
// direct and to the best peer), and one hand-written SVG bar chart per metric group.
package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/wsgate/wsgate/bench/internal/stats"
)

// Record is one measurement: one peer, one cell (scenario + size), one run.
type Record struct {
	Time      string             `json:"time"`
	Suite     string             `json:"suite"`
	Scenario  string             `json:"scenario"`
	Cell      string             `json:"cell"`
	Peer      string             `json:"peer"`
	Run       int                `json:"run"`
	Generator string             `json:"generator,omitempty"`
	Metrics   map[string]float64 `json:"metrics"`
	CPU       CPUShare           `json:"cpu"`
	Errors    int64              `json:"errors"`
	Note      string             `json:"note,omitempty"`
	Retries   int                `json:"retries,omitempty"` // repeated because other processes were busy
}

// CPUShare splits the CPU time spent during a measurement window. Other is process-context
// CPU of everything else on the machine: /proc/stat user+nice+system minus proxy, load and
// backend. IRQ is irq+softirq time, where the kernel does loopback packet work.
type CPUShare struct {
	WindowS  float64 `json:"window_s"`
	ProxyS   float64 `json:"proxy_s"`
	LoadS    float64 `json:"load_s"`
	BackendS float64 `json:"backend_s"`
	OtherS   float64 `json:"other_s"`
	IRQS     float64 `json:"irq_s"`
}

// MarshalJSON keeps NaN (a figure that does not apply, like direct's proxy CPU) valid JSON.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record
	m := make(map[string]any, len(r.Metrics))
	for k, v := range r.Metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			m[k] = nil
		} else {
			m[k] = v
		}
	}
	return json.Marshal(struct {
		plain
		Metrics map[string]any `json:"metrics"`
	}{plain(r), m})
}

// WriteJSONL appends one JSON object per record.
func WriteJSONL(w io.Writer, recs []Record) error {
	bw := bufio.NewWriter(w)
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		bw.Write(b)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// ReadJSONL reads records written by WriteJSONL (null metrics come back as NaN).
func ReadJSONL(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var raw struct {
			Record
			Metrics map[string]*float64 `json:"metrics"`
		}
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			return nil, err
		}
		rec := raw.Record
		rec.Metrics = map[string]float64{}
		for k, v := range raw.Metrics {
			if v == nil {
				rec.Metrics[k] = math.NaN()
			} else {
				rec.Metrics[k] = *v
			}
		}
		out = append(out, rec)
	}
	return out, sc.Err()
}

// Metric describes one column.
type Metric struct {
	ID           string // key in Record.Metrics
	Label        string // column header
	Unit         string
	HigherBetter bool
	Digits       int // decimals to print
}

// Group is a table and a chart.
type Group struct {
	ID, Title string
	Note      string
	Metrics   []Metric
	TLS       bool // figures of the TLS peers (issue 9): shown with those rows only
}

// Peer is a row.
type Peer struct {
	Name, Label string
	Direct      bool
	Skipped     string // non-empty: why this peer has no figures
}

// Agg is the summary of one metric for one peer over its runs.
type Agg struct {
	stats.Summary
	Values []float64
}

// Aggregate groups records by peer and metric and summarises the runs.
func Aggregate(recs []Record) map[string]map[string]Agg {
	raw := map[string]map[string][]float64{}
	for _, r := range recs {
		if raw[r.Peer] == nil {
			raw[r.Peer] = map[string][]float64{}
		}
		for k, v := range r.Metrics {
			raw[r.Peer][k] = append(raw[r.Peer][k], v)
		}
	}
	out := map[string]map[string]Agg{}
	for p, ms := range raw {
		out[p] = map[string]Agg{}
		for k, vs := range ms {
			out[p][k] = Agg{Summary: stats.Summarize(vs), Values: vs}
		}
	}
	return out
}

// Best is the best median of metric m among non-direct peers with a figure, and its peer.
func Best(agg map[string]map[string]Agg, peers []Peer, m Metric) (float64, string) {
	best, who := math.NaN(), ""
	for _, p := range peers {
		if p.Direct {
			continue
		}
		a, ok := agg[p.Name][m.ID]
		if !ok || a.N == 0 {
			continue
		}
		if math.IsNaN(best) || (m.HigherBetter && a.Median > best) || (!m.HigherBetter && a.Median < best) {
			best, who = a.Median, p.Name
		}
	}
	return best, who
}

// FormatNum prints v with thousands separators and the given decimals; NaN prints "-".
func FormatNum(v float64, digits int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	s := fmt.Sprintf("%.*f", digits, math.Abs(v))
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
	}
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String()
}

func ratio(v, ref float64) string {
	if math.IsNaN(v) || math.IsNaN(ref) || ref == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v/ref)
}

// Cell is the markdown text of one table cell: median, spread, ratio to direct (D) and to
// the best peer (B). Ratios are plain value ratios; whether higher is better is in the header.
func Cell(agg map[string]map[string]Agg, peers []Peer, p Peer, m Metric) string {
	a, ok := agg[p.Name][m.ID]
	if !ok || a.N == 0 {
		return "-"
	}
	s := FormatNum(a.Median, m.Digits)
	if a.N > 1 {
		if sp := a.SpreadPct(); !math.IsNaN(sp) {
			s += fmt.Sprintf(" ±%.0f%%", sp/2)
		}
	}
	var d float64 = math.NaN()
	for _, q := range peers {
		if q.Direct {
			if da, ok := agg[q.Name][m.ID]; ok && da.N > 0 {
				d = da.Median
			}
		}
	}
	best, _ := Best(agg, peers, m)
	var parts []string
	if r := ratio(a.Median, d); r != "-" && !p.Direct {
		parts = append(parts, r+"×D")
	}
	if r := ratio(a.Median, best); r != "-" {
		parts = append(parts, r+"×B")
	}
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

// Markdown renders one table per group.
func Markdown(w io.Writer, groups []Group, peers []Peer, recs []Record) {
	agg := Aggregate(recs)
	for _, g := range groups {
		fmt.Fprintf(w, "### %s\n\n", g.Title)
		if g.Note != "" {
			fmt.Fprintf(w, "%s\n\n", g.Note)
		}
		fmt.Fprint(w, "| peer |")
		for _, m := range g.Metrics {
			arrow := "↓"
			if m.HigherBetter {
				arrow = "↑"
			}
			fmt.Fprintf(w, " %s (%s) %s |", m.Label, m.Unit, arrow)
		}
		fmt.Fprint(w, "\n|---|")
		for range g.Metrics {
			fmt.Fprint(w, "---:|")
		}
		fmt.Fprintln(w)
		for _, p := range peers {
			fmt.Fprintf(w, "| %s |", p.Label)
			for _, m := range g.Metrics {
				if p.Skipped != "" {
					fmt.Fprint(w, " skipped |")
					continue
				}
				fmt.Fprintf(w, " %s |", Cell(agg, peers, p, m))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
}

// OtherCPU renders, per peer and scenario, the median share of one core that processes other
// than the proxy, the load generator and the backend used during measurements, and the
// irq/softirq share.
func OtherCPU(w io.Writer, peers []Peer, recs []Record) {
	scen := []string{}
	seen := map[string]bool{}
	for _, r := range recs {
		if !seen[r.Scenario] {
			seen[r.Scenario] = true
			scen = append(scen, r.Scenario)
		}
	}
	fmt.Fprint(w, "| peer |")
	for _, s := range scen {
		fmt.Fprintf(w, " %s other / irq (%% of a core) |", s)
	}
	fmt.Fprint(w, "\n|---|")
	for range scen {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
	for _, p := range peers {
		if p.Skipped != "" {
			continue
		}
		fmt.Fprintf(w, "| %s |", p.Label)
		for _, s := range scen {
			var other, irq []float64
			for _, r := range recs {
				if r.Peer == p.Name && r.Scenario == s && r.CPU.WindowS > 0 {
					other = append(other, 100*r.CPU.OtherS/r.CPU.WindowS)
					irq = append(irq, 100*r.CPU.IRQS/r.CPU.WindowS)
				}
			}
			if len(other) == 0 {
				fmt.Fprint(w, " - |")
				continue
			}
			fmt.Fprintf(w, " %.1f / %.1f |", stats.Summarize(other).Median, stats.Summarize(irq).Median)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// WriteFile writes data to path, creating or truncating it.
func WriteFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SortedKeys is a helper for deterministic output.
func SortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
