package metrics

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"
)

// counter is a monotonic count with one writer (the shard's owner) and any number of readers (a
// scrape). The owner writes Store(Load()+n): correct only because nobody else writes, and never
// slower than Add. On amd64 both are one locked instruction (Store is XCHG, which locks
// implicitly; Add is LOCK XADD), on arm64 the pair is LDAR+STLR instead of an atomic
// read-modify-write. The atomics exist for the reader: plain fields would be a data race.
// Uncontended, because no other core writes the line: see BenchmarkShard* for the cost.
type counter struct{ v atomic.Uint64 }

func (c *counter) add(n uint64) { c.v.Store(c.v.Load() + n) }
func (c *counter) load() uint64 { return c.v.Load() }

// gauge is a per-shard up/down count. One shard may go negative (a tunnel opened on an HTTP loop
// and closed on a tunnel loop); only the sum over all shards is meaningful.
type gauge struct{ v atomic.Int64 }

func (g *gauge) add(n int64) { g.v.Store(g.v.Load() + n) }
func (g *gauge) load() int64 { return g.v.Load() }

// maxBounds is the largest number of finite bucket bounds a histogram may have.
const maxBounds = 16

// buckets is a histogram layout: upper bounds in nanoseconds, ascending, at most 16. The
// exposition turns them into Prometheus `le` labels in seconds, cumulative, plus +Inf.
type buckets struct {
	ns  [maxBounds]int64
	n   int
	sec []float64
}

func newBuckets(bounds ...time.Duration) *buckets {
	if len(bounds) == 0 || len(bounds) > maxBounds {
		panic("metrics: a histogram needs 1..16 bucket bounds")
	}
	b := &buckets{n: len(bounds)}
	for i, d := range bounds {
		if i > 0 && d <= bounds[i-1] {
			panic("metrics: bucket bounds must ascend")
		}
		b.ns[i] = int64(d)
		b.sec = append(b.sec, d.Seconds())
	}
	return b
}

// index is the first bucket whose bound is >= ns (Prometheus `le` is inclusive); n is +Inf.
// Linear: most observations are short and leave after two or three compares, the loop is
// predictable, and 16 bounds fit in two cache lines.
func (b *buckets) index(ns int64) int {
	for i := 0; i < b.n; i++ {
		if ns <= b.ns[i] {
			return i
		}
	}
	return b.n
}

// The layouts. HTTP: 0.5 ms (a pooled loopback exchange) to 60 s (-response-timeout's default).
// Connect: 100 us (loopback) to 10 s (twice -dial-timeout's default). Tunnels live from a
// second to a day (Loki closes a tail after an hour by default).
var (
	requestBuckets = newBuckets(
		500*time.Microsecond, time.Millisecond, 2500*time.Microsecond, 5*time.Millisecond,
		10*time.Millisecond, 25*time.Millisecond, 50*time.Millisecond, 100*time.Millisecond,
		250*time.Millisecond, 500*time.Millisecond, time.Second, 2500*time.Millisecond,
		5*time.Second, 10*time.Second, 30*time.Second, 60*time.Second)
	connectBuckets = newBuckets(
		100*time.Microsecond, 250*time.Microsecond, 500*time.Microsecond, time.Millisecond,
		2500*time.Microsecond, 5*time.Millisecond, 10*time.Millisecond, 25*time.Millisecond,
		50*time.Millisecond, 100*time.Millisecond, 250*time.Millisecond, 500*time.Millisecond,
		time.Second, 2500*time.Millisecond, 5*time.Second, 10*time.Second)
	tunnelBuckets = newBuckets(
		time.Second, 5*time.Second, 15*time.Second, time.Minute, 5*time.Minute, 15*time.Minute,
		30*time.Minute, time.Hour, 2*time.Hour, 4*time.Hour, 12*time.Hour, 24*time.Hour)
)

// hist is one shard's share of a histogram: per-bucket (not cumulative) counts, the +Inf
// overflow in counts[layout.n], and the sum in nanoseconds (an integer, so the single writer
// needs no float CAS; 2^64 ns is 584 years of summed durations). The count is the sum of the
// buckets, so a scrape never sees a count that disagrees with its buckets.
type hist struct {
	counts [maxBounds + 1]counter
	sum    counter
}

func (h *hist) observe(b *buckets, d time.Duration) {
	ns := int64(d)
	if ns < 0 {
		ns = 0
	}
	h.counts[b.index(ns)].add(1)
	h.sum.add(uint64(ns))
}

// pad keeps a shard's hot cells off cache lines that another shard's owner writes: every
// per-shard allocation starts and ends with one.
type pad = cpu.CacheLinePad

// routeCells is one shard's counters for one route.
type routeCells struct {
	_             pad
	requests      [5]counter // by status class
	requestDur    hist
	upgrades      [numUpgradeResults]counter
	tunnelsActive gauge
	tunnelDur     hist
	bytes         [numDirections]counter
	closes        [numCloseReasons]counter
	_             pad
}

// backendCells is one shard's counters for one backend address.
type backendCells struct {
	_          pad
	connectDur hist
	errors     [numUpstreamReasons]counter
	_          pad
}
