package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented in docs/observability.md.
const (
	NameBuildInfo        = "wsgate_build_info"
	NameConnsActive      = "wsgate_connections_active"
	NameConnsAccepted    = "wsgate_connections_accepted_total"
	NameConnsRejected    = "wsgate_connections_rejected_total"
	NameRequests         = "wsgate_http_requests_total"
	NameRequestDuration  = "wsgate_http_request_duration_seconds"
	NameConnectDuration  = "wsgate_upstream_connect_duration_seconds"
	NameUpstreamErrors   = "wsgate_upstream_errors_total"
	NameUpgrades         = "wsgate_websocket_upgrades_total"
	NameTunnelsActive    = "wsgate_tunnels_active"
	NameTunnelDuration   = "wsgate_tunnel_duration_seconds"
	NameTunnelBytes      = "wsgate_tunnel_bytes_total"
	NameTunnelCloses     = "wsgate_tunnel_closes_total"
	NameSplicePipes      = "wsgate_splice_pipes"
	NameBodyOffloads     = "wsgate_body_offloads_total"
	NameReloads          = "wsgate_reloads_total"
	NameAccessLogDropped = "wsgate_access_log_dropped_total"
)

var (
	descBuildInfo = prometheus.NewDesc(NameBuildInfo,
		"wsgate's version (module version or VCS revision) and the Go version it was built with; always 1.",
		[]string{"version", "goversion"}, nil)
	descConnsActive = prometheus.NewDesc(NameConnsActive,
		"Client connections open now, by phase: http (HTTP plane) or tunnel (upgraded, in the tunnel plane).",
		[]string{"phase"}, nil)
	descConnsAccepted = prometheus.NewDesc(NameConnsAccepted,
		"Client connections accepted.", nil, nil)
	descConnsRejected = prometheus.NewDesc(NameConnsRejected,
		"Client connections refused at accept, by reason.", []string{"reason"}, nil)
	descRequests = prometheus.NewDesc(NameRequests,
		"HTTP exchanges finished, by route and status class of the answer sent to the client.",
		[]string{"route", "code"}, nil)
	descRequestDuration = prometheus.NewDesc(NameRequestDuration,
		"Time from a request head's first byte to the response's last byte, by route.",
		[]string{"route"}, nil)
	descConnectDuration = prometheus.NewDesc(NameConnectDuration,
		"Time to establish a new backend connection (pooled connections are not counted), by backend.",
		[]string{"backend"}, nil)
	descUpstreamErrors = prometheus.NewDesc(NameUpstreamErrors,
		"Failures talking to a backend, by backend and reason.", []string{"backend", "reason"}, nil)
	descUpgrades = prometheus.NewDesc(NameUpgrades,
		"WebSocket upgrade requests, by route and result.", []string{"route", "result"}, nil)
	descTunnelsActive = prometheus.NewDesc(NameTunnelsActive,
		"WebSocket tunnels open now, by route.", []string{"route"}, nil)
	descTunnelDuration = prometheus.NewDesc(NameTunnelDuration,
		"Lifetime of closed tunnels, by route.", []string{"route"}, nil)
	descTunnelBytes = prometheus.NewDesc(NameTunnelBytes,
		"Bytes moved through tunnels, by route and direction (up = client to backend); counted as they move.",
		[]string{"route", "direction"}, nil)
	descTunnelCloses = prometheus.NewDesc(NameTunnelCloses,
		"Tunnels closed, by route and reason.", []string{"route", "reason"}, nil)
	descSplicePipes = prometheus.NewDesc(NameSplicePipes,
		"Splice pipes held by the tunnel loops, by state: idle (pooled) or busy (carrying bytes).",
		[]string{"state"}, nil)
	descBodyOffloads = prometheus.NewDesc(NameBodyOffloads,
		"Message bodies moved to the tunnel plane because a peer was slow.", nil, nil)
	descReloads = prometheus.NewDesc(NameReloads,
		"Configuration reloads, by result.", []string{"result"}, nil)
	descAccessLogDropped = prometheus.NewDesc(NameAccessLogDropped,
		"Access log lines dropped because the destination could not keep up (or failed).", nil, nil)

	allDescs = []*prometheus.Desc{descBuildInfo, descConnsActive, descConnsAccepted, descConnsRejected,
		descRequests, descRequestDuration, descConnectDuration, descUpstreamErrors, descUpgrades,
		descTunnelsActive, descTunnelDuration, descTunnelBytes, descTunnelCloses, descSplicePipes,
		descBodyOffloads, descReloads, descAccessLogDropped,
		descFDsUsed, descFDsLimit, descEngineRestarts, descQueuedBytes, descBackendIdle, descRetries}
)

// Describe implements prometheus.Collector.
func (r *Registry) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// histSum adds shards' hists up; counts stays per bucket until emitted.
type histSum struct {
	counts [maxBounds + 1]uint64
	sum    uint64
}

func (h *histSum) add(c *hist, b *buckets) {
	for i := 0; i <= b.n; i++ {
		h.counts[i] += c.counts[i].load()
	}
	h.sum += c.sum.load()
}

func (h *histSum) metric(desc *prometheus.Desc, b *buckets, label string) prometheus.Metric {
	cum := make(map[float64]uint64, b.n)
	var n uint64
	for i := 0; i < b.n; i++ {
		n += h.counts[i]
		cum[b.sec[i]] = n
	}
	n += h.counts[b.n]
	return prometheus.MustNewConstHistogram(desc, n, float64(h.sum)/1e9, cum, label)
}

type routeSum struct {
	requests      [5]uint64
	requestDur    histSum
	upgrades      [numUpgradeResults]uint64
	tunnelsActive int64
	tunnelDur     histSum
	bytes         [numDirections]uint64
	closes        [numCloseReasons]uint64
}

type backendSum struct {
	connectDur histSum
	errors     [numUpstreamReasons]uint64
}

// Collect implements prometheus.Collector: every shard is read once per series and summed.
// Reads are atomic loads; a scrape that runs while loops count sees each cell at some instant
// (histogram counts are derived from the buckets, so they always agree with them).
func (r *Registry) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(descBuildInfo, prometheus.GaugeValue, 1, r.version, r.goVersion)

	var accepted uint64
	var rejected [numRejectReasons]uint64
	var active [numPhases]int64
	var pipes [numPipeStates]int64
	var offloads uint64
	for _, s := range r.shards {
		accepted += s.accepted.load()
		for i := range rejected {
			rejected[i] += s.rejected[i].load()
		}
		for i := range active {
			active[i] += s.active[i].load()
		}
		for i := range pipes {
			pipes[i] += s.pipes[i].load()
		}
		offloads += s.offloads.load()
	}
	for i, v := range active {
		ch <- prometheus.MustNewConstMetric(descConnsActive, prometheus.GaugeValue, float64(v), phaseNames[i])
	}
	ch <- prometheus.MustNewConstMetric(descConnsAccepted, prometheus.CounterValue, float64(accepted))
	for i, v := range rejected {
		ch <- prometheus.MustNewConstMetric(descConnsRejected, prometheus.CounterValue, float64(v), rejectNames[i])
	}
	for i, v := range pipes {
		ch <- prometheus.MustNewConstMetric(descSplicePipes, prometheus.GaugeValue, float64(v), pipeNames[i])
	}
	ch <- prometheus.MustNewConstMetric(descBodyOffloads, prometheus.CounterValue, float64(offloads))

	for ri, name := range r.routeNames {
		var t routeSum
		for _, s := range r.shards {
			c := (*s.routes.Load())[ri]
			for i := range t.requests {
				t.requests[i] += c.requests[i].load()
			}
			t.requestDur.add(&c.requestDur, requestBuckets)
			for i := range t.upgrades {
				t.upgrades[i] += c.upgrades[i].load()
			}
			t.tunnelsActive += c.tunnelsActive.load()
			t.tunnelDur.add(&c.tunnelDur, tunnelBuckets)
			for i := range t.bytes {
				t.bytes[i] += c.bytes[i].load()
			}
			for i := range t.closes {
				t.closes[i] += c.closes[i].load()
			}
		}
		for i, v := range t.requests {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(v), name, codeNames[i])
		}
		ch <- t.requestDur.metric(descRequestDuration, requestBuckets, name)
		for i, v := range t.upgrades {
			ch <- prometheus.MustNewConstMetric(descUpgrades, prometheus.CounterValue, float64(v), name, upgradeNames[i])
		}
		ch <- prometheus.MustNewConstMetric(descTunnelsActive, prometheus.GaugeValue, float64(t.tunnelsActive), name)
		ch <- t.tunnelDur.metric(descTunnelDuration, tunnelBuckets, name)
		for i, v := range t.bytes {
			ch <- prometheus.MustNewConstMetric(descTunnelBytes, prometheus.CounterValue, float64(v), name, directionNames[i])
		}
		for i, v := range t.closes {
			ch <- prometheus.MustNewConstMetric(descTunnelCloses, prometheus.CounterValue, float64(v), name, closeNames[i])
		}
	}

	for bi, addr := range r.backendNames {
		var t backendSum
		for _, s := range r.shards {
			c := (*s.backends.Load())[bi]
			t.connectDur.add(&c.connectDur, connectBuckets)
			for i := range t.errors {
				t.errors[i] += c.errors[i].load()
			}
		}
		ch <- t.connectDur.metric(descConnectDuration, connectBuckets, addr)
		for i, v := range t.errors {
			ch <- prometheus.MustNewConstMetric(descUpstreamErrors, prometheus.CounterValue, float64(v), addr, upstreamNames[i])
		}
	}

	for i := range r.reloads {
		ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.reloads[i].Load()), reloadNames[i])
	}
	var dropped uint64
	if f := r.dropped.Load(); f != nil {
		dropped = (*f)()
	}
	ch <- prometheus.MustNewConstMetric(descAccessLogDropped, prometheus.CounterValue, float64(dropped))
	r.collectServerStats(ch)
}
