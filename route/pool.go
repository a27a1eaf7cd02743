package route

import "sync/atomic"

// Pool is a route's members and its balancing policy. Pick allocates nothing and takes no lock.
type Pool struct {
	balance Balance
	members []*Member
	dialers []*Dialer // parallel to members: how this table dials each
	next    atomic.Uint32
}

// Balance returns the pool's policy.
func (p *Pool) Balance() Balance { return p.balance }

// Members returns the pool's members in the order the route lists them.
func (p *Pool) Members() []*Member { return p.members }

// Dialer returns how to connect to m (its source addresses and dial timeout), or nil when m is
// not in the pool.
func (p *Pool) Dialer(m *Member) *Dialer {
	for i, x := range p.members {
		if x == m {
			return p.dialers[i]
		}
	}
	return nil
}

// Pick chooses a usable member other than exclude, or returns nil when there is none (the loop
// answers 502 at once rather than waiting for a dial to fail). now is the caller's clock in unix
// nanoseconds (for passive back-offs), client the HashClient of the client's address (used by
// ClientHash only), exclude the member that just failed when retrying, else nil.
//
// Pick does not count anything: the caller Acquires the member it uses.
func (p *Pool) Pick(now int64, client uint64, exclude *Member) *Member {
	ms := p.members
	if len(ms) == 1 {
		if m := ms[0]; m != exclude && m.Usable(now) {
			return m
		}
		return nil
	}
	switch p.balance {
	case RoundRobin:
		n := uint32(len(ms))
		start := p.next.Add(1)
		for k := uint32(0); k < n; k++ {
			if m := ms[(start+k)%n]; m != exclude && m.Usable(now) {
				return m
			}
		}
		return nil
	case ClientHash:
		// Rendezvous (highest random weight) hashing: each member scores the client, the best
		// usable one wins. Taking a member out moves only the clients it won.
		var best *Member
		var bestScore uint64
		for _, m := range ms {
			if m == exclude || !m.Usable(now) {
				continue
			}
			if s := mix64(client ^ m.seed); best == nil || s > bestScore {
				best, bestScore = m, s
			}
		}
		return best
	default: // LeastConn
		// Start the scan at a rotating index so that ties (all idle, or all equal) are
		// spread instead of always going to the first member.
		n := uint32(len(ms))
		start := p.next.Add(1)
		var best *Member
		var bestLoad int64
		for k := uint32(0); k < n; k++ {
			m := ms[(start+k)%n]
			if m == exclude || !m.Usable(now) {
				continue
			}
			if l := m.load(); best == nil || l < bestLoad {
				best, bestLoad = m, l
			}
		}
		return best
	}
}
