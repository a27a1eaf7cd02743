package libcmp_test

import (
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wsgate/wsgate/metrics/libcmp"
	"github.com/wsgate/wsgate/metrics/libcmp/cgexp"
	"github.com/wsgate/wsgate/metrics/libcmp/vmexp"
)

func serve(t testing.TB, h http.Handler) string {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestSameSeries: both handlers expose the same wsgate_ series with the same values, and parse
// with Prometheus' parser. It prints which go_/process_ families each one has.
func TestSameSeries(t *testing.T) {
	fams := libcmp.Snapshot(20, 5)
	outs := map[string]string{
		"client_golang":   serve(t, cgexp.Handler(fams)),
		"VictoriaMetrics": serve(t, vmexp.Handler(fams)),
	}
	samples := map[string]map[string]float64{}
	for lib, body := range outs {
		p := expfmt.NewTextParser(model.UTF8Validation)
		mf, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", lib, err)
		}
		samples[lib] = map[string]float64{}
		var std []string
		for name, f := range mf {
			if !strings.HasPrefix(name, "wsgate_") {
				std = append(std, name)
				continue
			}
			for _, m := range f.GetMetric() {
				var l []string
				for _, lp := range m.GetLabel() {
					l = append(l, lp.GetName()+"="+lp.GetValue())
				}
				sort.Strings(l)
				key := name + "{" + strings.Join(l, ",") + "}"
				switch {
				case m.Counter != nil:
					samples[lib][key] = m.Counter.GetValue()
				case m.Gauge != nil:
					samples[lib][key] = m.Gauge.GetValue()
				case m.Untyped != nil:
					samples[lib][key] = m.Untyped.GetValue()
				case m.Histogram != nil:
					samples[lib][key] = float64(m.Histogram.GetSampleCount()) + m.Histogram.GetSampleSum()
				}
			}
		}
		sort.Strings(std)
		t.Logf("%s: %d bytes, %d wsgate_ series, %d other families: %s", lib, len(body), len(samples[lib]), len(std), strings.Join(std, " "))
	}
	a, b := samples["client_golang"], samples["VictoriaMetrics"]
	if len(a) != len(b) {
		t.Fatalf("series: %d vs %d", len(a), len(b))
	}
	for k, v := range a {
		if b[k] != v {
			t.Errorf("%s: %v vs %v", k, v, b[k])
		}
	}
}

func cpuNow() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func benchHandler(b *testing.B, h http.Handler) {
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ReportAllocs()
	start := cpuNow()
	n := 0
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		n = rec.Body.Len()
	}
	b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(n), "bytes/scrape")
}

func BenchmarkClientGolang(b *testing.B)    { benchHandler(b, cgexp.Handler(libcmp.Snapshot(20, 5))) }
func BenchmarkVictoriaMetrics(b *testing.B) { benchHandler(b, vmexp.Handler(libcmp.Snapshot(20, 5))) }
