// Package metrics holds wsgate's counters and histograms as per-loop shards that are summed
// only when Prometheus scrapes.
//
// The proxy's hot paths (a gnet event loop finishing a request, a tunnel loop adding the return
// value of one splice(2)) each own one *Shard and update only that shard: no allocation, no label
// lookup, no lock, no cache line shared with another loop. Routes and backends are registered
// once, by name, at configuration time and become small integers (Registry.Route,
// Registry.Backend); enumerated labels (reasons, results, phases) are typed constants. A scrape
// walks every shard and adds the cells up (Registry implements prometheus.Collector).
//
// Single writer: every Shard method must be called from the one goroutine that owns the shard.
// The cells are atomics only so that the scrape, on another goroutine, reads them race-free; the
// owner updates them with Store(Load()+n) rather than Add (see counter).
//
// docs/observability.md lists the metrics, the bucket layouts and where loop/ and splice/ call
// each method.
package metrics
