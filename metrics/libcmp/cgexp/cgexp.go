// Package cgexp exposes a libcmp snapshot with client_golang.
package cgexp

import (
	"github.com/wsgate/wsgate/metrics/libcmp"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// cgCollector emits the snapshot as const metrics, as metrics.Registry.Collect does.
type cgCollector struct {
	fams  []libcmp.Family
	descs []*prometheus.Desc
}

func newCGCollector(fams []libcmp.Family) *cgCollector {
	c := &cgCollector{fams: fams}
	for _, f := range fams {
		c.descs = append(c.descs, prometheus.NewDesc(f.Name, f.Help, f.Labels, nil))
	}
	return c
}

func (c *cgCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *cgCollector) Collect(ch chan<- prometheus.Metric) {
	for i, f := range c.fams {
		d := c.descs[i]
		for _, s := range f.Series {
			switch f.Type {
			case "counter":
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, s.Value, s.LabelValues...)
			case "gauge":
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, s.Value, s.LabelValues...)
			case "histogram":
				bounds := libcmp.Bounds(f.Name)
				m := make(map[float64]uint64, len(bounds))
				for j, b := range bounds {
					m[b] = s.Buckets[j]
				}
				ch <- prometheus.MustNewConstHistogram(d, s.Count, s.Sum, m, s.LabelValues...)
			}
		}
	}
}

// Handler is /metrics with client_golang: the snapshot plus the standard Go and
// process collectors, served by promhttp.
func Handler(fams []libcmp.Family) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCGCollector(fams), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
