// Package stats holds the small amount of statistics the benchmark needs: the median and
// spread of repeated runs, a log-linear latency histogram cheap enough to record on the hot
// path of a load generator, and the open-loop send schedule.
package stats

import (
	"math"
	"math/bits"
	"sort"
	"time"
)

// Summary is how a figure measured several times is reported: the median, with min and max
// as its spread, so one noisy run can neither hide nor invent a difference between peers.
type Summary struct {
	Median, Min, Max float64
	N                int
}

// Summarize returns the median and range of xs. NaN values (a run that produced no figure)
// are left out; an input with no usable value gives N == 0.
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	sort.Float64s(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Summary{Median: med, Min: v[0], Max: v[n-1], N: n}
}

// SpreadPct is (max-min)/median in percent: how far apart the runs were.
func (s Summary) SpreadPct() float64 {
	if s.N == 0 || s.Median == 0 {
		return math.NaN()
	}
	return 100 * (s.Max - s.Min) / math.Abs(s.Median)
}

// Percentile returns the p-th percentile (0 < p <= 100) of xs by the nearest-rank method,
// which never invents a value that was not observed. xs is sorted in place.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	sort.Float64s(xs)
	return xs[rank(len(xs), p)]
}

// rank is the 0-based nearest-rank index of the p-th percentile among n values.
func rank(n int, p float64) int {
	r := int(math.Ceil(p/100*float64(n) - 1e-9)) // 1e-9: 99.9% of 1000 is rank 999, not 1000
	if r < 1 {
		r = 1
	}
	if r > n {
		r = n
	}
	return r - 1
}

// Histogram records durations with a relative error under 1% (128 sub-buckets per power of
// two) in a fixed array, so recording allocates nothing and costs a few instructions. Values
// from 0 to about 2^42 ns (over an hour) are kept; larger ones land in the last bucket.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
}

const (
	subBits     = 7
	subCount    = 1 << subBits
	histShifts  = 36
	histBuckets = subCount + histShifts*subCount
)

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	shift := bits.Len64(u) - subBits - 1 // keep the top subBits+1 bits
	idx := subCount + shift*subCount + int(u>>uint(shift)) - subCount
	if idx >= histBuckets {
		return histBuckets - 1
	}
	return idx
}

// bucketValue is the midpoint of bucket i, the value a percentile from that bucket reports.
func bucketValue(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i - subCount) / subCount
	m := int64((i-subCount)%subCount + subCount)
	lo := m << uint(shift)
	return lo + (int64(1)<<uint(shift))/2
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	h.n++
	if int64(d) > h.max {
		h.max = int64(d)
	}
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest observation, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Merge adds o's observations to h (per-goroutine histograms are merged after a run).
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// Quantile returns the p-th percentile (0 < p <= 100) by nearest rank, to bucket precision.
// The top rank reports the exact maximum rather than a bucket midpoint.
func (h *Histogram) Quantile(p float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	want := uint64(rank(int(h.n), p)) + 1
	if want == h.n {
		return time.Duration(h.max)
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= want {
			v := bucketValue(i)
			if v > h.max {
				v = h.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// Schedule is an open-loop send plan: Rate messages per second in total, spread round-robin
// over Conns connections, the k-th message of the whole run due at k/Rate after the start.
// Latency is counted from the due time, not from when a (possibly delayed) send happened, so a
// proxy that stalls a connection pays for every message the stall held back -- the
// coordinated-omission correction.
type Schedule struct {
	Rate  float64 // messages per second, all connections together
	Conns int
}

// Due is the offset from the start of the run at which message k (0-based, global) is due.
func (s Schedule) Due(k int64) time.Duration {
	return time.Duration(float64(k) * float64(time.Second) / s.Rate)
}

// Seq is the global index of the i-th message on connection c.
func (s Schedule) Seq(c int, i int64) int64 { return i*int64(s.Conns) + int64(c) }

// ConnDue is the offset at which connection c sends its i-th message.
func (s Schedule) ConnDue(c int, i int64) time.Duration { return s.Due(s.Seq(c, i)) }

// PerConn is how many messages connection c sends in a run of length d (due times < d).
func (s Schedule) PerConn(c int, d time.Duration) int64 {
	total := int64(math.Ceil(d.Seconds() * s.Rate)) // messages with k/Rate < d
	if int64(c) >= total {
		return 0
	}
	return (total-1-int64(c))/int64(s.Conns) + 1
}

// Latency is the open-loop latency of a message due at due (offset from start) whose answer
// arrived at done (offset from start).
func Latency(due, done time.Duration) time.Duration {
	if done < due {
		return 0
	}
	return done - due
}
