package fdbudget

import (
	"os"
	"sync"
	"testing"
)

func TestTryAcquireStopsAtLimit(t *testing.T) {
	b := New(5)
	if !b.TryAcquire(2) || !b.TryAcquire(3) {
		t.Fatal("acquiring up to the limit failed")
	}
	if b.TryAcquire(1) {
		t.Fatal("TryAcquire went past the limit")
	}
	if got := b.Used(); got != 5 {
		t.Fatalf("Used %d after a refused TryAcquire, want 5", got)
	}
	b.Release(2)
	if !b.TryAcquire(2) || b.TryAcquire(1) {
		t.Fatalf("after Release(2): want exactly 2 more, used %d", b.Used())
	}
}

func TestAcquireReportsOver(t *testing.T) {
	b := New(2)
	if b.Acquire(2) {
		t.Fatal("Acquire up to the limit reported over")
	}
	if !b.Acquire(1) {
		t.Fatal("Acquire past the limit did not report over")
	}
	if got := b.Used(); got != 3 {
		t.Fatalf("Used %d, want 3 (Acquire counts existing fds even past the limit)", got)
	}
	if b.TryAcquire(1) {
		t.Fatal("TryAcquire succeeded while over the limit")
	}
	b.Release(1)
	if b.Used() != 2 || b.Limit() != 2 {
		t.Fatalf("Used %d Limit %d", b.Used(), b.Limit())
	}
}

func TestNilBudgetIsUnlimited(t *testing.T) {
	var b *Budget
	if !b.TryAcquire(1<<30) || b.Acquire(1<<30) {
		t.Fatal("nil budget refused")
	}
	b.Release(7)
	if b.Used() != 0 || b.Limit() != -1 {
		t.Fatalf("nil budget: used %d limit %d", b.Used(), b.Limit())
	}
}

// Concurrent owners never see the budget past its limit through TryAcquire, and the count is
// exact once they are done.
func TestConcurrentNeverPastLimit(t *testing.T) {
	const limit, workers, rounds = 64, 8, 20000
	b := New(limit)
	var wg sync.WaitGroup
	var bad sync.Once
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				n := 1 + i%3
				if b.TryAcquire(n) {
					if u := b.Used(); u > limit+workers*3 {
						bad.Do(func() { t.Errorf("used %d with limit %d", u, limit) })
					}
					b.Release(n)
				}
			}
		}()
	}
	wg.Wait()
	if b.Used() != 0 {
		t.Fatalf("Used %d after every owner released", b.Used())
	}
}

func TestOpenFDsSeesANewFile(t *testing.T) {
	before := OpenFDs()
	if before < 0 {
		t.Skip("no /proc/self/fd or /dev/fd")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := OpenFDs(); got != before+1 {
		t.Fatalf("OpenFDs %d after opening one file, %d before", got, before)
	}
	soft, err := NoFile()
	if err != nil || soft < uint64(before) {
		t.Fatalf("NoFile %d, %v", soft, err)
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	bud := New(1 << 20)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bud.Acquire(1)
			bud.Release(1)
		}
	})
}
