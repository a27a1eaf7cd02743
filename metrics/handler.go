package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Gatherer returns a Prometheus registry holding r and the standard go_* and process_*
// collectors, for Handler and for tests.
func (r *Registry) Gatherer() prometheus.Gatherer {
	pr := prometheus.NewRegistry()
	pr.MustRegister(
		r,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return pr
}

// Handler serves the exposition of r plus go_* and process_* (text format; gzip when the
// scraper asks; OpenMetrics when it asks for that). Mount it on the admin listener's /metrics.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.Gatherer(), promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: 4,
	})
}
