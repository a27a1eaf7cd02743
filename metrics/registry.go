package metrics

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// NoRoute is the route index of requests that matched no route (wsgate answered 404, or failed
// before routing: a malformed head). Its label value is "none", which no route name can be
// (route names contain a '/').
const NoRoute = 0

// NoRouteName is the route label of NoRoute.
const NoRouteName = "none"

// Registry names routes and backends, hands out shards and sums them when scraped. Its methods
// may be called from any goroutine; they are meant for configuration time and scrapes, not for
// the request path. A nil *Registry means metrics are off: Route and Backend return 0,
// NewShard returns a nil *Shard, whose methods do nothing.
type Registry struct {
	mu           sync.Mutex
	routeNames   []string
	routeIndex   map[string]int
	backendNames []string
	backendIndex map[string]int
	shards       []*Shard

	reloads [numReloadResults]atomic.Uint64
	dropped atomic.Pointer[func() uint64]
	stats   statsFunc

	version, goVersion string
}

// NewRegistry returns an empty registry with NoRoute registered.
func NewRegistry() *Registry {
	r := &Registry{
		routeIndex:   make(map[string]int),
		backendIndex: make(map[string]int),
		version:      BuildVersion(),
		goVersion:    runtime.Version(),
	}
	r.Route(NoRouteName)
	return r
}

// Route returns the index of the route named name (its match string, e.g. "/loki/" or
// "logs.example.com/"), registering it on first use. The same name always gets the same index,
// so a reload that keeps a route keeps its series; a route dropped by a reload keeps its index
// and its series simply stop moving. Every shard, existing and future, can count it at once.
func (r *Registry) Route(name string) int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.routeIndex[name]; ok {
		return i
	}
	i := len(r.routeNames)
	r.routeNames = append(r.routeNames, name)
	r.routeIndex[name] = i
	for _, s := range r.shards {
		old := *s.routes.Load()
		grown := append(old[:len(old):len(old)], new(routeCells))
		s.routes.Store(&grown)
	}
	return i
}

// RouteName is the name of route index i ("" when there is none): a tunnel passed to a binary
// upgrade's successor carries its route by name, since indexes are this registry's own.
func (r *Registry) RouteName(i int) string {
	if r == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.routeNames) {
		return ""
	}
	return r.routeNames[i]
}

// Backend returns the index of backend address addr ("127.0.0.1:3000"), registering it on first
// use; the same rules as Route. Two routes that share an address share its series.
func (r *Registry) Backend(addr string) int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.backendIndex[addr]; ok {
		return i
	}
	i := len(r.backendNames)
	r.backendNames = append(r.backendNames, addr)
	r.backendIndex[addr] = i
	for _, s := range r.shards {
		old := *s.backends.Load()
		grown := append(old[:len(old):len(old)], new(backendCells))
		s.backends.Store(&grown)
	}
	return i
}

// NewShard returns a shard for one event loop, with cells for every route and backend known now
// and, through Route and Backend, later. Shards live as long as the registry: the counts of a
// loop that stopped remain in the sums, so counters never go backwards.
func (r *Registry) NewShard() *Shard {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := new(Shard)
	routes := make([]*routeCells, len(r.routeNames))
	for i := range routes {
		routes[i] = new(routeCells)
	}
	backends := make([]*backendCells, len(r.backendNames))
	for i := range backends {
		backends[i] = new(backendCells)
	}
	s.routes.Store(&routes)
	s.backends.Store(&backends)
	r.shards = append(r.shards, s)
	return s
}

// Reloaded counts a configuration reload (wsgate_reloads_total{result}). Rare and process-wide,
// so it is a plain atomic on the registry rather than a shard cell.
func (r *Registry) Reloaded(res ReloadResult) {
	if r != nil && res < numReloadResults {
		r.reloads[res].Add(1)
	}
}

// SetAccessLogDropped sets the function whose value is wsgate_access_log_dropped_total (the
// access log's own count: accesslog.Log.Dropped). Without it the counter reads 0.
func (r *Registry) SetAccessLogDropped(f func() uint64) {
	if r != nil {
		r.dropped.Store(&f)
	}
}
