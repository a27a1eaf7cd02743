//go:build linux

package handoff

import (
	"context"
	"testing"
	"time"
)

// keepAdopter keeps what it is given (the benchmark measures the hand-off,
// not a plane; the fds are closed outside the timer).
type keepAdopter struct {
	n   int
	fds []int
}

func (a *keepAdopter) Prepare(it *Item) error { return nil }
func (a *keepAdopter) Commit(it *Item)        { a.fds = append(a.fds, it.FDs...); a.n++ }
func (a *keepAdopter) Cancel(it *Item)        {}

// BenchmarkHandoff2000 moves 2,000 tunnels' worth of fds (two sockets and
// a 64-byte state each, 16 batches) between two goroutines over a
// socketpair: the protocol's own cost, without a plane or a second process.
// The sender's close of its copies after each COMMIT is included.
func BenchmarkHandoff2000(b *testing.B) {
	const n = 2000
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		items, peers := sockItems(b, n, 0)
		for _, it := range items {
			it.State = it.State[:0]
			it.State = append(it.State, make([]byte, 64)...)
		}
		sc, rc := unixPair(b)
		s, r := NewSender(sc, Options{}), NewReceiver(rc, Options{})
		a := &keepAdopter{fds: make([]int, 0, 2*n)}
		done := make(chan error, 1)
		b.StartTimer()
		t0 := time.Now()
		go func() {
			_, err := r.Receive(context.Background(), a)
			if err == nil {
				err = r.Finish()
			}
			done <- err
		}()
		st, err := s.Send(context.Background(), seqOf(items), nil)
		if err == nil {
			err = s.Finish(context.Background())
		}
		if rerr := <-done; err != nil || rerr != nil || a.n != n || st.Batches != 16 {
			b.Fatal(err, rerr, a.n, st.Batches)
		}
		total += time.Since(t0)
		b.StopTimer()
		closeFDs(peers)
		closeFDs(a.fds)
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "items/s")
	b.ReportMetric(16, "batches/op")
}
