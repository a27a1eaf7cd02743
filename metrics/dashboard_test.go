package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

var (
	metricRef  = regexp.MustCompile(`\b(?:wsgate|process|go)_[a-zA-Z0-9_]+`)
	byClause   = regexp.MustCompile(`\bby \(([^)]*)\)`)
	matcherRef = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
)

// TestDashboardQueriesUseRealMetrics: every metric name in docs/grafana-dashboard.json (panel
// queries and template variables) is a family this package's scrape exposes (histograms through
// _bucket/_sum/_count), every label a query groups or filters by exists on a family it uses
// (or is one Prometheus adds: job, instance), and quantiles keep `le`.
func TestDashboardQueriesUseRealMetrics(t *testing.T) {
	data, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			ID      int
			Type    string
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}

	r := NewRegistry()
	r.Route("/")
	r.Backend("127.0.0.1:3000")
	r.NewShard()
	fams, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	labelsOf := func(f *dto.MetricFamily) map[string]bool {
		ls := map[string]bool{"job": true, "instance": true}
		if f.GetType() == dto.MetricType_HISTOGRAM {
			ls["le"] = true
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = true
			}
		}
		return ls
	}
	resolve := func(name string) *dto.MetricFamily {
		if f := byName[name]; f != nil {
			return f
		}
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok {
				if f := byName[base]; f != nil && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
					if suf == "_bucket" && f.GetType() != dto.MetricType_HISTOGRAM {
						return nil
					}
					return f
				}
			}
		}
		return nil
	}

	check := func(where, expr string) {
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		labels := map[string]bool{}
		for _, m := range byClause.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				labels[strings.TrimSpace(l)] = true
			}
		}
		for _, m := range matcherRef.FindAllStringSubmatch(expr, -1) {
			labels[m[1]] = true
		}
		var used []*dto.MetricFamily
		for _, ref := range refs {
			f := resolve(ref)
			if f == nil {
				t.Errorf("%s: %s is not exposed", where, ref)
				continue
			}
			used = append(used, f)
		}
		for l := range labels {
			found := false
			for _, f := range used {
				found = found || labelsOf(f)[l]
			}
			if !found && len(used) > 0 {
				t.Errorf("%s: label %q is on none of %v", where, l, refs)
			}
		}
		if strings.Contains(expr, "histogram_quantile") && !strings.Contains(expr, "_bucket") {
			t.Errorf("%s: quantile without buckets: %s", where, expr)
		}
		if strings.Contains(expr, "histogram_quantile") && !regexp.MustCompile(`by \([^)]*\ble\b`).MatchString(expr) {
			t.Errorf("%s: quantile must keep le: %s", where, expr)
		}
	}

	ids := map[int]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
			queries++
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			check("variable "+v.Name, v.Definition)
		}
	}
	// The panels the issue asks for.
	all := string(data)
	for _, must := range []string{NameTunnelsActive, NameUpgrades, NameTunnelCloses, NameTunnelBytes, NameRequests,
		NameRequestDuration + "_bucket", NameUpstreamErrors} {
		if !strings.Contains(all, must) {
			t.Errorf("dashboard never queries %s", must)
		}
	}
	if queries < 10 {
		t.Errorf("only %d queries", queries)
	}
}
