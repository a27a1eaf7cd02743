package metrics

import (
	"sync/atomic"
	"time"
)

// Shard is one event loop's share of every metric. It is created by Registry.NewShard and owned
// by one goroutine (a gnet event loop or a tunnel loop): only that goroutine calls its methods.
// The methods allocate nothing, take no lock and touch only this shard's memory; a route or
// backend index that the registry never handed out is ignored rather than trusted. A nil
// *Shard (metrics off: a nil Registry hands them out) ignores every call.
type Shard struct {
	_        pad
	accepted counter
	rejected [numRejectReasons]counter
	active   [numPhases]gauge
	pipes    [numPipeStates]gauge
	offloads counter
	// routes and backends grow when the registry learns a new name (a reload); the owner loads
	// the current slice per event. Elements never move, so an index stays valid for the life of
	// the shard and counts made through an older slice are not lost.
	routes   atomic.Pointer[[]*routeCells]
	backends atomic.Pointer[[]*backendCells]
	_        pad
}

func (s *Shard) route(i int) *routeCells {
	rs := *s.routes.Load()
	if uint(i) < uint(len(rs)) {
		return rs[i]
	}
	return nil
}

func (s *Shard) backend(i int) *backendCells {
	bs := *s.backends.Load()
	if uint(i) < uint(len(bs)) {
		return bs[i]
	}
	return nil
}

// Accepted counts a client connection the HTTP plane took on: connections_accepted_total and
// connections_active{phase="http"} go up.
func (s *Shard) Accepted() {
	if s == nil {
		return
	}
	s.accepted.add(1)
	s.active[PhaseHTTP].add(1)
}

// Rejected counts a connection refused at accept (it is answered and closed without ever
// becoming active; do not call Accepted or Closed for it).
func (s *Shard) Rejected(r RejectReason) {
	if s == nil {
		return
	}
	if r < numRejectReasons {
		s.rejected[r].add(1)
	}
}

// Closed counts the close of an accepted client connection that was still in the HTTP plane.
// A connection that became a tunnel leaves through TunnelOpened/TunnelClosed instead.
func (s *Shard) Closed() {
	if s != nil {
		s.active[PhaseHTTP].add(-1)
	}
}

// Request counts one finished exchange on route (0 = NoRoute) with the status sent to the client
// and its duration (first head byte to last response byte).
func (s *Shard) Request(route, status int, d time.Duration) {
	if s == nil {
		return
	}
	if c := s.route(route); c != nil {
		c.requests[codeClass(status)].add(1)
		c.requestDur.observe(requestBuckets, d)
	}
}

// Upgrade counts the outcome of a WebSocket upgrade request on route.
func (s *Shard) Upgrade(route int, r UpgradeResult) {
	if s == nil {
		return
	}
	if c := s.route(route); c != nil && r < numUpgradeResults {
		c.upgrades[r].add(1)
	}
}

// TunnelOpened moves a client connection from the HTTP plane to the tunnel plane: it is called
// on the HTTP loop once plane.Tunnel has accepted the sockets. tunnels_active{route} and
// connections_active{phase="tunnel"} go up, connections_active{phase="http"} down.
func (s *Shard) TunnelOpened(route int) {
	if s == nil {
		return
	}
	if c := s.route(route); c != nil {
		c.tunnelsActive.add(1)
	}
	s.active[PhaseHTTP].add(-1)
	s.active[PhaseTunnel].add(1)
}

// TunnelPassed is a tunnel leaving this process for a binary upgrade's successor (issue 12): it
// did not close (no close is counted), it is simply not this process's any more:
// tunnels_active{route} and connections_active{phase="tunnel"} go down.
func (s *Shard) TunnelPassed(route int) {
	if s == nil {
		return
	}
	if c := s.route(route); c != nil {
		c.tunnelsActive.add(-1)
	}
	s.active[PhaseTunnel].add(-1)
}

// TunnelAdopted is a tunnel arriving from a binary upgrade's predecessor: tunnels_active{route}
// and connections_active{phase="tunnel"} go up (it never was in this process's HTTP plane).
func (s *Shard) TunnelAdopted(route int) {
	if s == nil {
		return
	}
	if c := s.route(route); c != nil {
		c.tunnelsActive.add(1)
	}
	s.active[PhaseTunnel].add(1)
}

// TunnelBytes adds n bytes moved in direction dir of a tunnel on route: the tunnel loop calls it
// with every splice/read/write return value, so the counter moves while the tunnel is open.
func (s *Shard) TunnelBytes(route int, dir Direction, n int) {
	if s == nil {
		return
	}
	if c := s.route(route); c != nil && dir < numDirections && n > 0 {
		c.bytes[dir].add(uint64(n))
	}
}

// TunnelClosed counts the end of a tunnel on route after d, for reason r (called on the tunnel
// loop; the matching TunnelOpened ran on some HTTP loop's shard, and the sums agree).
func (s *Shard) TunnelClosed(route int, r CloseReason, d time.Duration) {
	if s == nil {
		return
	}
	if c := s.route(route); c != nil {
		c.tunnelsActive.add(-1)
		if r < numCloseReasons {
			c.closes[r].add(1)
		}
		c.tunnelDur.observe(tunnelBuckets, d)
	}
	s.active[PhaseTunnel].add(-1)
}

// UpstreamConnected records how long a new connection to backend took to establish (a pooled
// connection is not a connect).
func (s *Shard) UpstreamConnected(backend int, d time.Duration) {
	if s == nil {
		return
	}
	if c := s.backend(backend); c != nil {
		c.connectDur.observe(connectBuckets, d)
	}
}

// UpstreamError counts a failure talking to backend.
func (s *Shard) UpstreamError(backend int, r UpstreamReason) {
	if s == nil {
		return
	}
	if c := s.backend(backend); c != nil && r < numUpstreamReasons {
		c.errors[r].add(1)
	}
}

// Pipes moves this loop's count of splice pipes in state st by delta (a pipe taken from the pool
// for a direction is Pipes(PipeIdle, -1) then Pipes(PipeBusy, +1); a new pipe only the latter).
func (s *Shard) Pipes(st PipeState, delta int) {
	if s == nil {
		return
	}
	if st < numPipeStates {
		s.pipes[st].add(int64(delta))
	}
}

// BodyOffloaded counts a message body moved to the tunnel plane (-body-high-water).
func (s *Shard) BodyOffloaded() {
	if s != nil {
		s.offloads.add(1)
	}
}
