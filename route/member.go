package route

import (
	"hash/fnv"
	"sync/atomic"
)

// Kind says what a member is holding for a caller: an exchange in flight or an open tunnel.
type Kind uint8

const (
	// Request is an HTTP exchange from the moment a member is picked until its response ends
	// (or it fails).
	Request Kind = iota
	// Tunnel is an upgraded connection, from the verified 101 until the tunnel closes.
	Tunnel
)

// Member is one backend address. Tables built from one another share the Member of an address,
// and so do all the routes of a table that list it: its load and health are the backend's, not
// a route's. Every method may be called from any goroutine.
type Member struct {
	addr string
	id   int
	seed uint64 // rendezvous-hash identity, from addr

	requests atomic.Int64
	tunnels  atomic.Int64

	passive    passive
	activeDown atomic.Bool
	healthGen  atomic.Uint64 // the prober allowed to write activeDown (bumped by Table.Start)
}

func newMember(addr string, id int, pc PassiveHealth) *Member {
	h := fnv.New64a()
	h.Write([]byte(addr))
	m := &Member{addr: addr, id: id, seed: mix64(h.Sum64())}
	m.passive.setConfig(pc)
	return m
}

// Addr is the backend address as written ("127.0.0.1:3100").
func (m *Member) Addr() string { return m.addr }

// ID is small and dense: unique among the members of a table and of the tables built from it,
// for arrays indexed by member (Table.MemberIDLimit).
func (m *Member) ID() int { return m.id }

func (m *Member) String() string { return m.addr }

// Acquire counts one more request or tunnel on m (least-conn reads the sum).
func (m *Member) Acquire(k Kind) {
	if k == Tunnel {
		m.tunnels.Add(1)
	} else {
		m.requests.Add(1)
	}
}

// Release undoes one Acquire of the same kind.
func (m *Member) Release(k Kind) {
	if k == Tunnel {
		m.tunnels.Add(-1)
	} else {
		m.requests.Add(-1)
	}
}

// Upgraded turns one in-flight request into an open tunnel (after a verified 101).
func (m *Member) Upgraded() {
	m.tunnels.Add(1)
	m.requests.Add(-1)
}

// Load returns the requests in flight and the tunnels open on m.
func (m *Member) Load() (requests, tunnels int64) {
	return m.requests.Load(), m.tunnels.Load()
}

func (m *Member) load() int64 { return m.requests.Load() + m.tunnels.Load() }

// Usable reports whether m may be picked at now (unix nanoseconds): not taken out by active
// probes and not inside a passive back-off.
func (m *Member) Usable(now int64) bool {
	return !m.activeDown.Load() && m.passive.downUntil.Load() <= now
}

// ReportSuccess records a connection to m that succeeded. It clears the failure count and ends
// a back-off; it returns true when that brought m back. Cheap when m is healthy (one load).
func (m *Member) ReportSuccess() (cameBack bool) { return m.passive.success() }

// ReportFailure records a connection to m that was refused, unreachable or timed out, at now.
// It returns true when this took m out (for a back-off: PassiveHealth).
func (m *Member) ReportFailure(now int64) (wentDown bool) { return m.passive.failure(now) }

// Health is a snapshot of a member's health for logs, metrics and tests.
type Health struct {
	ActiveDown bool  // the last probes failed
	DownUntil  int64 // unix nanos; passive back-off until then (0: none)
	Fails      int   // consecutive failures counted by passive health
	Backoff    int64 // nanoseconds the next passive back-off will last
}

// Health returns m's health state.
func (m *Member) Health() Health {
	h := m.passive.snapshot()
	h.ActiveDown = m.activeDown.Load()
	return h
}

// mix64 is the splitmix64 finalizer: a bijection with full avalanche, used to turn a member's
// seed and a client hash into a rendezvous score.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// HashClient hashes a client address (its text or raw bytes, as long as the loop is
// consistent) for ClientHash pools; compute it once per connection. It allocates nothing.
func HashClient(ip []byte) uint64 {
	h := uint64(14695981039346656037) // FNV-1a 64
	for _, c := range ip {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return mix64(h)
}
