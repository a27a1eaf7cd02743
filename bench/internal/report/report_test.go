package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var (
	rps = Metric{ID: "rps", Label: "req/s", Unit: "1/s", HigherBetter: true}
	lat = Metric{ID: "p99", Label: "p99", Unit: "ms", Digits: 2}
	grp = Group{ID: "http", Title: "HTTP <keep-alive>", Metrics: []Metric{rps, lat}}
	prs = []Peer{
		{Name: "direct", Label: "direct", Direct: true},
		{Name: "a", Label: "peer A"},
		{Name: "b", Label: "peer B & co"},
		{Name: "c", Label: "peer C", Skipped: "missing c"},
	}
)

func recs() []Record {
	var out []Record
	add := func(peer string, run int, r, p float64) {
		out = append(out, Record{Peer: peer, Scenario: "http", Run: run, Metrics: map[string]float64{"rps": r, "p99": p},
			CPU: CPUShare{WindowS: 2, OtherS: 0.1, IRQS: 0.2}})
	}
	for i, v := range []float64{1000, 1100, 900} {
		add("direct", i, v, 0.5)
	}
	for i, v := range []float64{400, 500, 450} {
		add("a", i, v, 2+float64(i)) // p99 median 3
	}
	for i, v := range []float64{250, 200, 300} {
		add("b", i, v, 1.5) // best (lowest) p99
	}
	return out
}

func TestMarkdownRatiosAndSpread(t *testing.T) {
	var b bytes.Buffer
	Markdown(&b, []Group{grp}, prs, recs())
	out := b.String()
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "| ") {
			lines[strings.TrimSpace(strings.Split(l, "|")[1])] = l
		}
	}
	if !strings.Contains(lines["peer"], "req/s (1/s) ↑") || !strings.Contains(lines["peer"], "p99 (ms) ↓") {
		t.Fatalf("header lacks units/direction: %q", lines["peer"])
	}
	// peer A: median 450 = 0.45 of direct, best peer for req/s is A itself (1.00);
	// spread (500-400)/450 = 22% -> ±11%
	if want := "450 ±11% (0.45×D, 1.00×B)"; !strings.Contains(lines["peer A"], want) {
		t.Errorf("peer A row %q lacks %q", lines["peer A"], want)
	}
	// peer B: req/s 250/450 of best; p99 1.50 is the best (lowest) -> 1.00×B, 3.00×D
	if want := "250 ±20% (0.25×D, 0.56×B)"; !strings.Contains(lines["peer B & co"], want) {
		t.Errorf("peer B row %q lacks %q", lines["peer B & co"], want)
	}
	if want := "1.50 ±0% (3.00×D, 1.00×B)"; !strings.Contains(lines["peer B & co"], want) {
		t.Errorf("peer B row %q lacks %q", lines["peer B & co"], want)
	}
	// peer A p99 3.00 is twice the best 1.50
	if want := "3.00 ±33% (6.00×D, 2.00×B)"; !strings.Contains(lines["peer A"], want) {
		t.Errorf("peer A row %q lacks %q", lines["peer A"], want)
	}
	// direct shows no ratio to itself, only to the best peer
	if want := "1,000 ±10% (2.22×B)"; !strings.Contains(lines["direct"], want) {
		t.Errorf("direct row %q lacks %q", lines["direct"], want)
	}
	if strings.Count(lines["peer C"], "skipped") != 2 {
		t.Errorf("skipped peer row %q", lines["peer C"])
	}
}

func TestMarkdownNaNIsDash(t *testing.T) {
	rs := []Record{{Peer: "direct", Metrics: map[string]float64{"rps": math.NaN()}}, {Peer: "a", Metrics: map[string]float64{"rps": 10}}}
	var b bytes.Buffer
	Markdown(&b, []Group{{Title: "t", Metrics: []Metric{rps}}}, prs[:2], rs)
	if !strings.Contains(b.String(), "| direct | - |") || !strings.Contains(b.String(), "| peer A | 10 (1.00×B) |") {
		t.Fatalf("NaN handling:\n%s", b.String())
	}
}

func TestFormatNum(t *testing.T) {
	for _, c := range []struct {
		v    float64
		d    int
		want string
	}{{1234567.891, 0, "1,234,568"}, {999, 0, "999"}, {1000, 1, "1,000.0"}, {-12345.5, 1, "-12,345.5"}, {0.0123, 3, "0.012"}, {math.NaN(), 2, "-"}} {
		if got := FormatNum(c.v, c.d); got != c.want {
			t.Errorf("FormatNum(%v,%d) = %q, want %q", c.v, c.d, got, c.want)
		}
	}
}

func TestSVGBarsProportionalAndWellFormed(t *testing.T) {
	var b bytes.Buffer
	if err := SVG(&b, grp, prs, recs()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// must parse as XML (the title contains <, the label &: both escaped)
	dec := xml.NewDecoder(strings.NewReader(out))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("invalid XML: %v\n%s", err, out)
		}
	}
	re := regexp.MustCompile(`<rect class="bar" data-peer="([^"]+)" x="\d+" y="\d+" width="([0-9.]+)"`)
	m := re.FindAllStringSubmatch(out, -1)
	// 3 peers with figures x 2 metrics; the skipped peer gets no bar
	if len(m) != 6 {
		t.Fatalf("%d bars, want 6", len(m))
	}
	width := map[string]float64{}
	for _, x := range m[:3] { // req/s panel
		width[x[1]], _ = strconv.ParseFloat(x[2], 64)
	}
	// scale is the largest max (direct 1100): medians 1000, 450, 250
	if r := width["a"] / width["direct"]; math.Abs(r-0.45) > 0.01 {
		t.Errorf("bar ratio a/direct = %.3f, want 0.45", r)
	}
	if r := width["b"] / width["direct"]; math.Abs(r-0.25) > 0.01 {
		t.Errorf("bar ratio b/direct = %.3f, want 0.25", r)
	}
	// whiskers only where runs differ: req/s for all three, p99 only for A
	if got := strings.Count(out, `class="range"`); got != 4 {
		t.Errorf("%d range whiskers, want 4", got)
	}
	if !strings.Contains(out, "higher is better") || !strings.Contains(out, "lower is better") {
		t.Error("panels do not say which way is better")
	}
	if strings.Contains(out, "peer C") {
		t.Error("skipped peer drawn")
	}
}

func TestJSONLRoundTripKeepsNaN(t *testing.T) {
	in := []Record{{Peer: "direct", Cell: "idle", Metrics: map[string]float64{"rss": math.NaN(), "alive": 1000}}}
	var b bytes.Buffer
	if err := WriteJSONL(&b, in); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"rss":null`) {
		t.Fatalf("NaN not written as null: %s", b.String())
	}
	out, err := ReadJSONL(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || !math.IsNaN(out[0].Metrics["rss"]) || out[0].Metrics["alive"] != 1000 || out[0].Cell != "idle" {
		t.Fatalf("round trip: %+v", out)
	}
}

func TestOtherCPU(t *testing.T) {
	var b bytes.Buffer
	OtherCPU(&b, prs, recs())
	if !strings.Contains(b.String(), "| peer A | 5.0 / 10.0 |") {
		t.Fatalf("other CPU table:\n%s", b.String())
	}
}
