package route

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func poolOf(t testing.TB, bal Balance, addrs ...string) (*Table, *Pool) {
	t.Helper()
	sp := Spec{Prefix: "/", Backends: addrs}
	sp.Balance = &bal
	tb, err := NewTable([]Spec{sp}, Defaults{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tb, tb.Routes()[0].Pool
}

// 1,500 tunnels opened from four "loops" at once, with a random tenth of them closing as they
// go: least-conn keeps the three members within 5% of the mean (requests and tunnels both
// count: each tunnel is a request first, then Upgraded).
func TestLeastConnSpreadsTunnels(t *testing.T) {
	_, p := poolOf(t, LeastConn, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	const loops, perLoop = 4, 375
	var wg sync.WaitGroup
	var mu sync.Mutex
	closed := 0
	for l := 0; l < loops; l++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			var mine []*Member
			for i := 0; i < perLoop; i++ {
				m := p.Pick(0, 0, nil)
				m.Acquire(Request)
				m.Upgraded()
				mine = append(mine, m)
				if r.IntN(10) == 0 { // a tail that ends early
					k := r.IntN(len(mine))
					mine[k].Release(Tunnel)
					mine = append(mine[:k], mine[k+1:]...)
					mu.Lock()
					closed++
					mu.Unlock()
				}
			}
		}(uint64(l))
	}
	wg.Wait()
	open := loops*perLoop - closed
	mean := float64(open) / 3
	for _, m := range p.Members() {
		req, tun := m.Load()
		if req != 0 {
			t.Errorf("%s: %d requests still counted", m, req)
		}
		if d := (float64(tun) - mean) / mean; d > 0.05 || d < -0.05 {
			t.Errorf("%s holds %d tunnels, mean %.0f (%.1f%%)", m, tun, mean, 100*d)
		}
		t.Logf("%s: %d tunnels (mean %.1f)", m, tun, mean)
	}
}

// Least-conn counts requests in flight and open tunnels together.
func TestLeastConnCountsBothKinds(t *testing.T) {
	_, p := poolOf(t, LeastConn, "127.0.0.1:1", "127.0.0.1:2")
	a, b := p.Members()[0], p.Members()[1]
	a.Acquire(Tunnel)
	a.Acquire(Tunnel)
	b.Acquire(Request)
	for i := 0; i < 10; i++ {
		if m := p.Pick(0, 0, nil); m != b {
			t.Fatalf("pick %d = %v, want %v (1 request against 2 tunnels)", i, m, b)
		}
	}
	b.Acquire(Request)
	b.Acquire(Request) // 3 > 2
	if m := p.Pick(0, 0, nil); m != a {
		t.Fatalf("pick = %v, want %v", m, a)
	}
	// Ties rotate: with equal loads both members are picked.
	b.Release(Request)
	seen := map[*Member]int{}
	for i := 0; i < 10; i++ {
		seen[p.Pick(0, 0, nil)]++
	}
	if seen[a] != 5 || seen[b] != 5 {
		t.Errorf("ties: %v", seen)
	}
}

func TestRoundRobin(t *testing.T) {
	_, p := poolOf(t, RoundRobin, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	count := map[string]int{}
	for i := 0; i < 300; i++ {
		count[p.Pick(0, 0, nil).Addr()]++
	}
	for _, m := range p.Members() {
		if count[m.Addr()] != 100 {
			t.Errorf("round-robin: %v", count)
		}
	}
	// A member in back-off is skipped; exclude skips the one that just failed.
	ms := p.Members()
	for i := 0; i < 3; i++ {
		ms[1].ReportFailure(int64(time.Second))
	}
	for i := 0; i < 30; i++ {
		m := p.Pick(int64(time.Second), 0, ms[0])
		if m != ms[2] {
			t.Fatalf("pick = %v, want %v", m, ms[2])
		}
	}
}

func TestClientHashStableAndMinimalMovement(t *testing.T) {
	addrs := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}
	_, p := poolOf(t, ClientHash, addrs...)
	const clients = 4000
	first := make([]*Member, clients)
	per := map[*Member]int{}
	for i := range first {
		h := HashClient(fmt.Appendf(nil, "10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		first[i] = p.Pick(0, h, nil)
		per[first[i]]++
		for k := 0; k < 3; k++ { // stable
			if m := p.Pick(0, h, nil); m != first[i] {
				t.Fatalf("client %d moved from %v to %v", i, first[i], m)
			}
		}
	}
	for m, n := range per { // spread: each member has a fair share (1000 +- 15%)
		if n < 850 || n > 1150 {
			t.Errorf("%v has %d of %d clients", m, n, clients)
		}
	}
	// Take member 2 out: only its clients move, spread over the others; they come back after.
	down := p.Members()[2]
	for i := 0; i < 3; i++ {
		down.ReportFailure(1)
	}
	moved := map[*Member]int{}
	for i := range first {
		h := HashClient(fmt.Appendf(nil, "10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		m := p.Pick(2, h, nil)
		if m == down {
			t.Fatal("picked a member in back-off")
		}
		if first[i] != down && m != first[i] {
			t.Fatalf("client %d of a live member moved from %v to %v", i, first[i], m)
		}
		if first[i] == down {
			moved[m]++
		}
	}
	if len(moved) != 3 {
		t.Errorf("the down member's clients went to %d members, want all 3: %v", len(moved), moved)
	}
	down.ReportSuccess()
	for i := range first {
		h := HashClient(fmt.Appendf(nil, "10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		if m := p.Pick(3, h, nil); m != first[i] {
			t.Fatalf("client %d did not come back: %v, want %v", i, m, first[i])
		}
	}
}

func TestPickNoneAndExclude(t *testing.T) {
	for _, bal := range []Balance{LeastConn, RoundRobin, ClientHash} {
		_, p := poolOf(t, bal, "127.0.0.1:1", "127.0.0.1:2")
		a, b := p.Members()[0], p.Members()[1]
		if m := p.Pick(0, 7, a); m != b {
			t.Errorf("%v: exclude a -> %v", bal, m)
		}
		a.activeDown.Store(true)
		if m := p.Pick(0, 7, b); m != nil {
			t.Errorf("%v: a down, b excluded -> %v, want none", bal, m)
		}
		for i := 0; i < 3; i++ {
			b.ReportFailure(10)
		}
		if m := p.Pick(10, 7, nil); m != nil {
			t.Errorf("%v: no healthy member -> %v, want none", bal, m)
		}
		_, one := poolOf(t, bal, "127.0.0.1:9")
		if m := one.Pick(0, 0, one.Members()[0]); m != nil {
			t.Errorf("%v: single member excluded -> %v", bal, m)
		}
	}
}

func TestPickAllocs(t *testing.T) {
	for _, bal := range []Balance{LeastConn, RoundRobin, ClientHash} {
		_, p := poolOf(t, bal, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
		h := HashClient([]byte("192.0.2.1"))
		if n := testing.AllocsPerRun(100, func() {
			m := p.Pick(0, h, nil)
			m.Acquire(Request)
			m.Upgraded()
			m.Release(Tunnel)
			m.ReportSuccess()
		}); n != 0 {
			t.Errorf("%v: %v allocs", bal, n)
		}
	}
}

// Every loop uses the table, the pools and the members at once: under -race, Match, Pick,
// the counters and the health reports from four goroutines leave consistent counts.
func TestConcurrentUse(t *testing.T) {
	tb := benchTable(t, 100)
	reqs := benchRequests()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 2))
			for i := 0; i < 2000; i++ {
				rq := reqs[r.IntN(len(reqs))]
				rt := tb.Match(rq.host, rq.target)
				now := int64(i) * int64(time.Millisecond)
				m := rt.Pool.Pick(now, uint64(i), nil)
				if m == nil {
					continue
				}
				m.Acquire(Request)
				if r.IntN(20) == 0 {
					m.ReportFailure(now)
				} else {
					m.ReportSuccess()
				}
				if r.IntN(3) == 0 {
					m.Upgraded()
					m.Release(Tunnel)
				} else {
					m.Release(Request)
				}
				_ = m.Health()
			}
		}(uint64(g))
	}
	wg.Wait()
	for _, m := range tb.Members() {
		if req, tun := m.Load(); req != 0 || tun != 0 {
			t.Errorf("%v: %d requests, %d tunnels left", m, req, tun)
		}
	}
}
