package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ServerStats are the HTTP plane's process-wide gauges and counters that already exist as plain
// atomics in the server (loop.Stats): they are read at scrape time through the function given to
// SetServerStats instead of being counted twice per event.
type ServerStats struct {
	FDsUsed, FDsLimit int64 // the fd budget: fds counted now, and its limit
	EngineRestarts    int64 // times the event engine stopped on its own and its listeners were restarted
	QueuedBytes       int64 // bytes queued in user space toward slow peers now
	BackendIdle       int64 // idle pooled backend connections now
	Retries           int64 // requests re-sent after a pooled backend connection failed
}

// Metric names of ServerStats.
const (
	NameFDsUsed        = "wsgate_fd_budget_used"
	NameFDsLimit       = "wsgate_fd_budget_limit"
	NameEngineRestarts = "wsgate_engine_restarts_total"
	NameQueuedBytes    = "wsgate_queued_bytes"
	NameBackendIdle    = "wsgate_backend_idle_connections"
	NameRetries        = "wsgate_backend_retries_total"
)

var (
	descFDsUsed = prometheus.NewDesc(NameFDsUsed,
		"File descriptors counted against the fd budget now (connections, tunnel sockets, pipes).", nil, nil)
	descFDsLimit = prometheus.NewDesc(NameFDsLimit,
		"The fd budget: past it new connections and backend dials get 503 (RLIMIT_NOFILE less a reserve).", nil, nil)
	descEngineRestarts = prometheus.NewDesc(NameEngineRestarts,
		"Times the event engine stopped on its own and its listeners were restarted.", nil, nil)
	descQueuedBytes = prometheus.NewDesc(NameQueuedBytes,
		"Bytes queued in user space toward slow peers now, both directions.", nil, nil)
	descBackendIdle = prometheus.NewDesc(NameBackendIdle,
		"Idle keep-alive backend connections pooled now.", nil, nil)
	descRetries = prometheus.NewDesc(NameRetries,
		"Requests re-sent on a fresh connection after a pooled backend connection turned out closed.", nil, nil)
)

// statsFunc holds the function set by SetServerStats.
type statsFunc = atomic.Pointer[func() ServerStats]

// SetServerStats sets the function the scrape reads ServerStats from (the HTTP plane's
// Server.Stats, converted). Without it those families read 0. One function per registry: a
// second call replaces the first.
func (r *Registry) SetServerStats(f func() ServerStats) {
	if r != nil {
		r.stats.Store(&f)
	}
}

func (r *Registry) collectServerStats(ch chan<- prometheus.Metric) {
	var st ServerStats
	if f := r.stats.Load(); f != nil {
		st = (*f)()
	}
	ch <- prometheus.MustNewConstMetric(descFDsUsed, prometheus.GaugeValue, float64(st.FDsUsed))
	ch <- prometheus.MustNewConstMetric(descFDsLimit, prometheus.GaugeValue, float64(st.FDsLimit))
	ch <- prometheus.MustNewConstMetric(descEngineRestarts, prometheus.CounterValue, float64(st.EngineRestarts))
	ch <- prometheus.MustNewConstMetric(descQueuedBytes, prometheus.GaugeValue, float64(st.QueuedBytes))
	ch <- prometheus.MustNewConstMetric(descBackendIdle, prometheus.GaugeValue, float64(st.BackendIdle))
	ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(st.Retries))
}
