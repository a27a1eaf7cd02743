package main

import (
	"bytes"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

// policyClock drives a memoryPolicy with made-up samples one tick at a time.
type policyClock struct {
	t   *testing.T
	p   *memoryPolicy
	now time.Time
	s   memSample
}

func newPolicyClock(t *testing.T, every time.Duration) *policyClock {
	return &policyClock{t: t, p: newMemoryPolicy(every), now: time.Unix(1_700_000_000, 0),
		s: memSample{allocs: 1 << 30, live: 8 << 20, objects: 8 << 20}}
}

// tick advances the clock by d after adding alloc bytes of allocation, and returns the decision.
func (c *policyClock) tick(d time.Duration, alloc uint64) bool {
	c.now = c.now.Add(d)
	c.s.allocs += alloc
	c.s.now = c.now
	return c.p.observe(c.s)
}

// ticksUntilRelease runs up to max ticks and returns the index of the first release, or -1.
func (c *policyClock) ticksUntilRelease(max int, alloc uint64) int {
	for i := 0; i < max; i++ {
		if c.tick(memoryTick, alloc) {
			return i
		}
	}
	return -1
}

func TestMemoryPolicyReleasesOnceQuietAndWorthIt(t *testing.T) {
	c := newPolicyClock(t, 10*time.Second)
	c.s.free = 12 << 20 // a burst left 12 MiB of freed heap
	// The first sample only opens the window; then quietWindow must pass.
	got := c.ticksUntilRelease(100, 0)
	want := int(quietWindow / memoryTick)
	if got != want {
		t.Fatalf("released at tick %d, want %d (quiet window %v, tick %v)", got, want, quietWindow, memoryTick)
	}
	// Right after a release nothing happens for the interval, however much is reclaimable.
	if i := c.ticksUntilRelease(int(10*time.Second/memoryTick)-1, 0); i != -1 {
		t.Fatalf("released again %d ticks after the last one, inside the 10s interval", i+1)
	}
	if !c.tick(memoryTick, 0) {
		t.Fatal("no release once the interval had passed with memory still reclaimable")
	}
}

func TestMemoryPolicyWaitsForQuiet(t *testing.T) {
	c := newPolicyClock(t, time.Second)
	c.s.free = 64 << 20
	// A handshake burst: 10 MB/s of allocation never lets the window fill.
	if i := c.ticksUntilRelease(200, 512<<10); i != -1 {
		t.Fatalf("released at tick %d while allocating 10 MB/s", i)
	}
	// Background allocation under the budget counts as quiet.
	small := uint64(quietAlloc) / uint64(quietWindow/memoryTick) / 2
	if i := c.ticksUntilRelease(100, small); i < 0 {
		t.Fatal("no release while allocating well under the quiet budget")
	}
	// One spike inside a window restarts it: the window must be quiet as a whole.
	c = newPolicyClock(t, time.Second)
	c.s.free = 64 << 20
	c.tick(memoryTick, 0)
	c.tick(memoryTick, 0)
	if c.tick(memoryTick, quietAlloc+1) {
		t.Fatal("released on the tick of an allocation spike")
	}
	// The window restarts at the spike, so the release comes quietWindow after it: tick index n-1.
	if i, n := c.ticksUntilRelease(100, 0), int(quietWindow/memoryTick); i != n-1 {
		t.Fatalf("released at tick index %d after the spike, want a full quiet window later (%d)", i, n-1)
	}
}

func TestMemoryPolicySkipsWhenLittleToReclaim(t *testing.T) {
	cases := []struct {
		name                string
		free, objects, live uint64
		wantRelease         bool
		why                 string
		reclaimableWant     uint64
	}{
		{"below floor", 768 << 10, 8 << 20, 8 << 20, false, "768 KiB free is under minReclaim", 768 << 10},
		{"garbage counts", 512 << 10, 5 << 20, 4 << 20, true, "512 KiB free + 1 MiB unswept garbage", 1536 << 10},
		{"big live heap", 20 << 20, 100 << 20, 100 << 20, false, "20 MiB is under a quarter of a 100 MiB live heap", 20 << 20},
		{"big live heap, more free", 30 << 20, 100 << 20, 100 << 20, true, "30 MiB is over a quarter of 100 MiB", 30 << 20},
		{"objects under live", 5 << 20, 6 << 20, 8 << 20, true, "objects below live (freed since GC) add nothing", 5 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newPolicyClock(t, time.Second)
			c.s.free, c.s.objects, c.s.live = tc.free, tc.objects, tc.live
			if r := c.s.reclaimable(); r != tc.reclaimableWant {
				t.Fatalf("reclaimable %d, want %d", r, tc.reclaimableWant)
			}
			got := c.ticksUntilRelease(int(quietWindow/memoryTick)+5, 0) >= 0
			if got != tc.wantRelease {
				t.Fatalf("release %v, want %v: %s", got, tc.wantRelease, tc.why)
			}
		})
	}
}

// TestRunMemoryPolicyCallsReleaseOnItsDecision drives the goroutine body with a fake tick
// channel and fake stats: release runs exactly when the policy says so, and stop ends it.
func TestRunMemoryPolicyCallsReleaseOnItsDecision(t *testing.T) {
	p := newMemoryPolicy(time.Hour)
	tick, stop, done := make(chan time.Time), make(chan struct{}), make(chan struct{})
	released := make(chan time.Time, 4)
	var allocs uint64
	read := func(now time.Time) memSample {
		return memSample{now: now, allocs: allocs, free: 16 << 20, live: 4 << 20, objects: 4 << 20}
	}
	go func() {
		defer close(done)
		runMemoryPolicy(p, tick, stop, read, func() { released <- time.Time{} })
	}()
	base := time.Unix(1_700_000_000, 0)
	n := int(quietWindow / memoryTick)
	for i := 0; i <= 3*n; i++ {
		tick <- base.Add(time.Duration(i) * memoryTick)
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("runMemoryPolicy did not return after stop")
	}
	if len(released) != 1 {
		t.Fatalf("release called %d times over %d quiet ticks with a 1h interval, want 1", len(released), 3*n+1)
	}
}

// TestMemReaderSeesRealHeap checks the metric names against this runtime: allocation shows
// up in allocs, and after a GC the dropped garbage is free heap, which FreeOSMemory returns.
func TestMemReaderSeesRealHeap(t *testing.T) {
	r := newMemReader()
	before := r.read(time.Now())
	if before.allocs == 0 || before.objects == 0 {
		t.Fatalf("runtime/metrics gave zeros: %+v", before)
	}
	garbage := make([][]byte, 0, 256)
	for i := 0; i < 256; i++ {
		garbage = append(garbage, make([]byte, 64<<10))
	}
	mid := r.read(time.Now())
	if got := mid.allocs - before.allocs; got < 16<<20 {
		t.Fatalf("allocs grew by %d after allocating 16 MiB", got)
	}
	runtime.KeepAlive(garbage)
	garbage = nil
	runtime.GC()
	after := r.read(time.Now())
	if after.free < 8<<20 {
		t.Fatalf("free heap %d after dropping 16 MiB and a GC, want >= 8 MiB", after.free)
	}
	debug.FreeOSMemory()
	if released := r.read(time.Now()); released.free >= after.free/2 {
		t.Fatalf("free heap %d after FreeOSMemory, was %d: not returned", released.free, after.free)
	}
	if n := testing.AllocsPerRun(100, func() { r.read(time.Now()) }); n != 0 {
		t.Fatalf("memReader.read allocates %.1f times per call", n)
	}
}

func TestMemoryReturnFlag(t *testing.T) {
	var out bytes.Buffer
	if o, err := parseCommandLine(nil); err != nil || o.memEvery != 10*time.Second {
		t.Fatalf("default -memory-return %v, %v; want 10s", o.memEvery, err)
	}
	if o, err := parseCommandLine([]string{"-memory-return", "0"}); err != nil || o.memEvery != 0 {
		t.Fatalf("-memory-return 0 gave %v, %v", o.memEvery, err)
	}
	if code := runIO([]string{"-memory-return", "-1s"}, &out, &out); code != 2 ||
		out.String() != "wsgate: -memory-return -1s: want 0 (no limit) or more\n" {
		t.Fatalf("exit %d, output %q", code, out.String())
	}
	out.Reset()
	runIO([]string{"-h"}, &out, &out)
	if !strings.Contains(out.String(), "  -memory-return") {
		t.Fatal("-h does not list -memory-return")
	}
	// 0 is off: stop must be callable and start no goroutine.
	g := runtime.NumGoroutine()
	stop := startMemoryPolicy(0, nil)
	if runtime.NumGoroutine() != g {
		t.Fatal("-memory-return 0 started a goroutine")
	}
	stop()
}

// syncBuffer is a bytes.Buffer the policy goroutine can log into while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStartMemoryPolicyReturnsBurstGarbage runs the real goroutine on the real runtime: after a
// burst of garbage and a quiet spell it hands the memory back (its debug line says so and the
// free heap is gone), and stop ends it.
func TestStartMemoryPolicyReturnsBurstGarbage(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	burst := make([][]byte, 0, 512)
	for i := 0; i < 512; i++ {
		burst = append(burst, make([]byte, 64<<10)) // 32 MiB, like thousands of handshakes
	}
	runtime.KeepAlive(burst)
	burst = nil
	runtime.GC() // the garbage is now free heap the runtime keeps

	stop := startMemoryPolicy(time.Hour, logger)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "returned memory to the OS") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	out := logs.String()
	if !strings.Contains(out, "returned memory to the OS") {
		t.Fatalf("no return within 5s of a quiet heap with ~32 MiB freed; log:\n%s", out)
	}
	if n := strings.Count(out, "returned memory to the OS"); n != 1 {
		t.Fatalf("%d returns with a 1h interval, want 1; log:\n%s", n, out)
	}
	if free := newMemReader().read(time.Now()).free; free > 4<<20 {
		t.Fatalf("free heap still %d bytes after the return", free)
	}
}
