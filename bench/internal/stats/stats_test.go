package stats

import (
	"math"
	"math/rand"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	cases := []struct {
		in            []float64
		med, min, max float64
		n             int
	}{
		{[]float64{3, 1, 2}, 2, 1, 3, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4, 4},
		{[]float64{5}, 5, 5, 5, 1},
		{[]float64{10, math.NaN(), 30, 20}, 20, 10, 30, 3},
		{[]float64{7, 7, 100}, 7, 7, 100, 3}, // an outlier moves the range, not the median
	}
	for _, c := range cases {
		s := Summarize(c.in)
		if s.Median != c.med || s.Min != c.min || s.Max != c.max || s.N != c.n {
			t.Errorf("Summarize(%v) = %+v, want med %v min %v max %v n %d", c.in, s, c.med, c.min, c.max, c.n)
		}
	}
	if s := Summarize([]float64{math.NaN()}); s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("all-NaN input: %+v, want N=0 and NaN median", s)
	}
	if got := Summarize([]float64{90, 100, 110}).SpreadPct(); math.Abs(got-20) > 1e-9 {
		t.Errorf("SpreadPct = %v, want 20", got)
	}
}

func TestPercentileNearestRank(t *testing.T) {
	xs := make([]float64, 1000)
	for i := range xs {
		xs[i] = float64(1000 - i) // 1..1000 reversed: Percentile must sort
	}
	for _, c := range []struct{ p, want float64 }{{50, 500}, {99, 990}, {99.9, 999}, {100, 1000}, {0.01, 1}} {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("empty input should give NaN")
	}
}

func TestHistogramMatchesExactPercentiles(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	var h Histogram
	xs := make([]float64, 0, 100000)
	for i := 0; i < 100000; i++ {
		// log-normal-ish latencies from ~10us to ~100ms, the shape proxies produce
		d := time.Duration(math.Exp(r.NormFloat64()*1.5+12)) + time.Microsecond
		h.Record(d)
		xs = append(xs, float64(d))
	}
	if h.Count() != 100000 {
		t.Fatalf("Count = %d", h.Count())
	}
	for _, p := range []float64{50, 90, 99, 99.9} {
		exact := Percentile(xs, p)
		got := float64(h.Quantile(p))
		if rel := math.Abs(got-exact) / exact; rel > 0.01 {
			t.Errorf("p%v: histogram %v vs exact %v (rel err %.4f > 1%%)", p, time.Duration(got), time.Duration(exact), rel)
		}
	}
	if h.Quantile(100) != h.Max() || float64(h.Max()) != Percentile(xs, 100) {
		t.Errorf("p100 = %v, max = %v, exact max %v", h.Quantile(100), h.Max(), time.Duration(Percentile(xs, 100)))
	}
}

func TestHistogramSmallValuesExactAndMerge(t *testing.T) {
	var a, b Histogram
	for i := 1; i <= 100; i++ {
		if i%2 == 0 {
			a.Record(time.Duration(i))
		} else {
			b.Record(time.Duration(i))
		}
	}
	a.Merge(&b)
	if a.Count() != 100 || a.Max() != 100 {
		t.Fatalf("merged count %d max %v", a.Count(), a.Max())
	}
	// below 128 ns each value has its own bucket, so percentiles are exact
	if got := a.Quantile(50); got != 50 {
		t.Errorf("p50 = %d, want 50", got)
	}
	if got := a.Quantile(99); got != 99 {
		t.Errorf("p99 = %d, want 99", got)
	}
	var empty Histogram
	if empty.Quantile(50) != 0 {
		t.Error("empty histogram quantile should be 0")
	}
}

func TestHistogramRecordAllocatesNothing(t *testing.T) {
	var h Histogram
	n := testing.AllocsPerRun(1000, func() { h.Record(1234567) })
	if n != 0 {
		t.Fatalf("Record allocates %v per call", n)
	}
}

func TestScheduleSpacingAndRoundRobin(t *testing.T) {
	s := Schedule{Rate: 1000, Conns: 4}
	// global message k due at k ms
	for k := int64(0); k < 10; k++ {
		if got := s.Due(k); got != time.Duration(k)*time.Millisecond {
			t.Fatalf("Due(%d) = %v", k, got)
		}
	}
	// connection 2 sends global messages 2, 6, 10...: one every Conns/Rate = 4 ms
	for i := int64(0); i < 5; i++ {
		want := time.Duration(2+4*i) * time.Millisecond
		if got := s.ConnDue(2, i); got != want {
			t.Fatalf("ConnDue(2,%d) = %v, want %v", i, got, want)
		}
	}
	// in 10 ms, 10 messages are due (k = 0..9): conns 0,1 send 3, conns 2,3 send 2
	d := 10 * time.Millisecond
	var total int64
	for c, want := range []int64{3, 3, 2, 2} {
		got := s.PerConn(c, d)
		if got != want {
			t.Errorf("PerConn(%d) = %d, want %d", c, got, want)
		}
		total += got
	}
	if total != 10 {
		t.Errorf("total = %d, want 10", total)
	}
	// more connections than messages: the extra connections send nothing
	if got := (Schedule{Rate: 100, Conns: 1000}).PerConn(999, time.Second); got != 0 {
		t.Errorf("conn 999 of 1000 at 100/s for 1s sends %d, want 0", got)
	}
}

// A stalled connection: open-loop latency charges the stall to every message it delayed,
// which a closed-loop measurement (from the actual send) would hide.
func TestOpenLoopChargesStalls(t *testing.T) {
	s := Schedule{Rate: 100, Conns: 1} // one message every 10 ms
	var h Histogram
	now := time.Duration(0)
	for i := int64(0); i < 10; i++ {
		due := s.ConnDue(0, i)
		if now < due {
			now = due // send on time when not behind
		}
		service := time.Millisecond
		if i == 0 {
			service = 50 * time.Millisecond // the first answer stalls 50 ms
		}
		now += service
		h.Record(Latency(due, now))
	}
	// messages 1..4 were due at 10..40 ms but could only go after 50 ms
	// latencies 50,41,32,23,14,5,1,1,1,1 ms: five messages over 10 ms, not just the stalled one
	if got := h.Quantile(60); got < 13*time.Millisecond || got > 15*time.Millisecond {
		t.Errorf("p60 = %v, want ~14ms: the stall should show up in several messages", got)
	}
	if h.Max() != 50*time.Millisecond {
		t.Errorf("max = %v, want 50ms", h.Max())
	}
	if Latency(5, 3) != 0 {
		t.Error("answer before due time must not be negative")
	}
}
