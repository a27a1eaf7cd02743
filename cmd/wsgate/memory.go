package main

import (
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory policy for an edge host that holds thousands of long-lived, mostly idle tunnels.
//
// An idle tunnel costs ~160 B of live heap (splice's per-tunnel state), but opening 5,000 of them
// left the process ~2.3 KiB of RSS per tunnel above its baseline. The rest is garbage and slack
// from the handshakes (dial goroutines, net.Conn, gnet conns and buffers, 5 KiB or so per
// tunnel): GOGC=100 lets the heap grow to twice the live heap the last GC saw mid-burst, and
// once the burst ends nothing allocates, so no GC runs until the runtime's forced one two
// minutes later, and only after that does the background scavenger hand the freed pages back
// to the OS, at 1% of a CPU. An idle proxy therefore sits on the burst's peak for minutes.
//
// The policy: when the heap has been quiet (almost no allocation) for quietWindow and the
// memory the runtime could give back is worth a GC, call debug.FreeOSMemory (a full GC plus an
// immediate scavenge), at most once per -memory-return interval. The cost is one GC over the
// live heap (5-8 ms of mostly concurrent work with 5,000 tunnels); the interval bounds it, a busy
// proxy never qualifies, so under load the runtime's own pacing is left alone, and an idle one
// that allocates nothing has nothing to return after the first time.
//
// Measured with `wsbench -suite=default -scenarios=idle -peers=wsgate-splice -runs=5` (5,000
// tunnels, RSS read 0.5 s after the last one opened): 2,320 B per tunnel without the policy,
// 1,049 B with it. What remains is not the heap's to give back: OS threads the handshake burst
// created (the runtime never exits them), GC metadata sized for the burst's peak, and splice's
// loop-local spare buffers.
//
// A lower GOGC or a memory limit were measured too and not kept: GOGC=25 quadruples the GC
// cycles of a handshake burst for about the same idle RSS, and a GOMEMLIMIT low enough to matter
// (12 MiB for 5,000 tunnels) ran 264 GCs during the burst and depends on the tunnel count, which
// an operator cannot know in advance.
const (
	// memoryTick is how often the runtime's metrics are read (runtime/metrics: no stop-the-world).
	memoryTick = 50 * time.Millisecond
	// quietWindow is how long the heap must stay quiet before memory is handed back.
	quietWindow = 250 * time.Millisecond
	// quietAlloc is the allocation a quiet window tolerates (1 MiB/s): timers, logs and the
	// zero-allocation HTTP path stay under it, a handshake burst (~5 KiB per upgrade) does not.
	quietAlloc = 256 << 10
	// minReclaim is the least reclaimable heap worth a full GC. It is low because the estimate
	// is low right after a burst (the live heap the last GC saw still held the burst's
	// in-flight handshakes: 1,000 upgrades left 3.8 MiB of estimate and 4.5 MiB of RSS behind)
	// and because a GC over an idle proxy's small heap is cheap (5 ms for 5,000 tunnels).
	minReclaim = 1 << 20
)

// memSample is what the policy looks at, read from runtime/metrics.
type memSample struct {
	now     time.Time
	allocs  uint64 // heap bytes ever allocated (/gc/heap/allocs:bytes)
	free    uint64 // free heap not yet returned to the OS (/memory/classes/heap/free:bytes)
	objects uint64 // heap held by objects, dead ones not swept yet included (/memory/classes/heap/objects:bytes)
	live    uint64 // heap marked live by the last GC (/gc/heap/live:bytes)
}

// reclaimable estimates what a full GC plus scavenge would return: the free pages, and the
// objects allocated since the last GC beyond what it found live (an upper bound: some of them
// are still live, which the live/4 floor in memoryPolicy.observe accounts for).
func (s memSample) reclaimable() uint64 {
	r := s.free
	if s.objects > s.live {
		r += s.objects - s.live
	}
	return r
}

// memoryPolicy decides when to hand freed heap back to the OS. observe is called once per
// tick with a fresh sample and is deterministic, so tests drive it with made-up samples.
type memoryPolicy struct {
	every      time.Duration // minimum gap between two returns
	quiet      time.Duration // how long allocation must stay under quietAlloc
	quietAlloc uint64
	minReclaim uint64

	windowStart  time.Time // start of the current quiet window
	windowAllocs uint64    // allocs counter at windowStart
	last         time.Time // last return; zero before the first
	started      bool
}

func newMemoryPolicy(every time.Duration) *memoryPolicy {
	return &memoryPolicy{every: every, quiet: quietWindow, quietAlloc: quietAlloc, minReclaim: minReclaim}
}

// observe reports whether memory should be handed back now. It restarts the quiet window
// whenever more than quietAlloc was allocated since the window began, so "quiet" means the
// whole window stayed under the budget, not just the last tick.
func (p *memoryPolicy) observe(s memSample) bool {
	if !p.started || s.allocs-p.windowAllocs > p.quietAlloc {
		p.started = true
		p.windowStart, p.windowAllocs = s.now, s.allocs
		return false
	}
	if s.now.Sub(p.windowStart) < p.quiet {
		return false
	}
	if !p.last.IsZero() && s.now.Sub(p.last) < p.every {
		return false
	}
	// The GC's work is marking the live heap; insist on getting back a quarter of it at least.
	if r := s.reclaimable(); r < p.minReclaim || r < s.live/4 {
		return false
	}
	p.last = s.now
	// FreeOSMemory's own allocation must not count against the next window.
	p.windowStart, p.windowAllocs = s.now, s.allocs
	return true
}

// memReader reads memSamples without allocating.
type memReader struct {
	samples []metrics.Sample
}

func newMemReader() *memReader {
	names := []string{"/gc/heap/allocs:bytes", "/memory/classes/heap/free:bytes",
		"/memory/classes/heap/objects:bytes", "/gc/heap/live:bytes"}
	r := &memReader{samples: make([]metrics.Sample, len(names))}
	for i, n := range names {
		r.samples[i].Name = n
	}
	return r
}

func (r *memReader) read(now time.Time) memSample {
	metrics.Read(r.samples)
	v := func(i int) uint64 {
		if r.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0 // unknown to this runtime: the policy then sees nothing to reclaim
		}
		return r.samples[i].Value.Uint64()
	}
	return memSample{now: now, allocs: v(0), free: v(1), objects: v(2), live: v(3)}
}

// runMemoryPolicy feeds the policy a sample per tick and calls release when it says so,
// until stop is closed. read and release are parameters so tests can drive it.
func runMemoryPolicy(p *memoryPolicy, tick <-chan time.Time, stop <-chan struct{},
	read func(time.Time) memSample, release func()) {
	for {
		select {
		case <-stop:
			return
		case now := <-tick:
			if p.observe(read(now)) {
				release()
			}
		}
	}
}

// startMemoryPolicy starts the policy goroutine; every <= 0 leaves memory to the Go runtime.
// The returned func stops it and waits until it has.
func startMemoryPolicy(every time.Duration, logger *slog.Logger) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	p, r := newMemoryPolicy(every), newMemReader()
	t := time.NewTicker(memoryTick)
	quit, done := make(chan struct{}), make(chan struct{})
	release := func() {
		before := r.read(time.Now())
		t0 := time.Now()
		debug.FreeOSMemory()
		after := r.read(time.Now())
		logger.Debug("returned memory to the OS", "phase", "memory-return",
			"reclaimable_before", before.reclaimable(), "free_after", after.free,
			"live", after.live, "took", time.Since(t0))
	}
	go func() {
		defer close(done)
		defer t.Stop()
		runMemoryPolicy(p, t.C, quit, r.read, release)
	}()
	return func() { close(quit); <-done }
}
