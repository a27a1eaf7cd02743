package accesslog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a destination the test can read while the drain goroutine writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.SplitAfter(strings.TrimSuffix(s, "\n"), "\n")
}

// targetOf extracts the target of a text line.
func targetOf(t *testing.T, line string) string {
	t.Helper()
	if !strings.HasSuffix(line, "\n") {
		line += "\n"
	}
	_, vals, err := parseLogfmt(line)
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return vals["target"]
}

// reqRecordLen is the ring space a request takes: its record (record.go).
func reqRecordLen(r *Request) int {
	return reqFixed + len(r.Method) + len(r.Target) + len(r.Route) + len(r.Backend) + len(r.Detail)
}

// fixedRequest returns a request whose line has the same length for every n < 1e6.
func fixedRequest(prefix string, n int) *Request {
	r := relayed
	r.Target = fmt.Appendf(nil, "/%s/%06d", prefix, n)
	return &r
}

// TestConcurrentWriters: four loops log at once (the race detector watches the rings); every
// line arrives exactly once, whole, and each loop's lines in order.
func TestConcurrentWriters(t *testing.T) {
	for _, f := range []Format{Text, JSON} {
		t.Run(f.String(), func(t *testing.T) {
			var out lockedBuffer
			l := New(&out, Config{Format: f, RingSize: 1 << 20, FlushInterval: time.Millisecond})
			const W, N = 4, 2000
			var wg sync.WaitGroup
			for w := range W {
				lw := l.NewWriter()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := range N {
						lw.Request(fixedRequest(fmt.Sprint(w), n))
					}
				}()
			}
			wg.Wait()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if d := l.Dropped(); d != 0 {
				t.Fatalf("%d dropped with a fast destination and 1 MiB rings", d)
			}
			next := make([]int, W)
			got := lines(out.String())
			if len(got) != W*N {
				t.Fatalf("%d lines, want %d", len(got), W*N)
			}
			for _, line := range got {
				var target string
				if f == JSON {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("%q: %v", line, err)
					}
					target, _ = m["target"].(string)
				} else {
					target = targetOf(t, line)
				}
				var w, n int
				if _, err := fmt.Sscanf(target, "/%d/%d", &w, &n); err != nil || w >= W {
					t.Fatalf("target %q", target)
				}
				if n != next[w] {
					t.Fatalf("writer %d: line %d after %d", w, n, next[w]-1)
				}
				next[w]++
			}
		})
	}
}

// blockingWriter blocks every Write until release is closed; entered is closed at the first.
type blockingWriter struct {
	lockedBuffer
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func newBlockingWriter() *blockingWriter {
	return &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.lockedBuffer.Write(p)
}

// TestDropWhenDestinationBlocked: with the destination stuck in Write, the loop keeps logging
// without waiting; what fits in the ring is kept, the rest is counted dropped, exactly; after the
// destination recovers, the kept lines arrive in order.
func TestDropWhenDestinationBlocked(t *testing.T) {
	dst := newBlockingWriter()
	const ring = 4096
	l := New(dst, Config{RingSize: ring, FlushInterval: time.Millisecond})
	w := l.NewWriter()
	w.Request(fixedRequest("first", 0))
	select {
	case <-dst.entered: // the drain goroutine holds line 0 and is stuck writing it
	case <-time.After(10 * time.Second):
		t.Fatal("drain goroutine never wrote")
	}
	recLen := reqRecordLen(fixedRequest("x", 0))
	const M = 1000
	start := time.Now()
	for n := range M {
		w.Request(fixedRequest("x", n))
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("%d calls took %v with a stuck destination", M, el)
	}
	// Line 0 keeps its ring space until its Write returns.
	firstLen := reqRecordLen(fixedRequest("first", 0))
	kept := (ring - firstLen) / recLen
	if got, want := l.Dropped(), uint64(M-kept); got != want {
		t.Fatalf("dropped %d, want %d (ring %d, record %d bytes)", got, want, ring, recLen)
	}
	if w.Dropped() != uint64(M-kept) {
		t.Fatalf("writer dropped %d", w.Dropped())
	}
	// AllocsPerRun on the drop path too.
	if a := testing.AllocsPerRun(100, func() { w.Request(&relayed) }); a != 0 {
		t.Errorf("dropping a line allocates %v", a)
	}
	close(dst.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := lines(dst.String())
	if len(got) != 1+kept {
		t.Fatalf("%d lines written, want %d", len(got), 1+kept)
	}
	if targetOf(t, got[0]) != "/first/000000" {
		t.Errorf("first line %q", got[0])
	}
	for i, line := range got[1:] {
		if want := fmt.Sprintf("/x/%06d", i); targetOf(t, line) != want {
			t.Fatalf("line %d: %q, want target %s", i+1, line, want)
		}
	}
}

// TestReopenRenamedFile: logrotate renames the file and signals; lines accepted before the
// reopen land in the renamed file, later ones in the new file, none lost or doubled.
func TestReopenRenamedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := Open(path, Config{FlushInterval: time.Hour}) // only Reopen and Close drain
	if err != nil {
		t.Fatal(err)
	}
	w := l.NewWriter()
	for n := range 100 {
		w.Request(fixedRequest("a", n))
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// Lines accepted but not yet written at the rename follow the open file descriptor.
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	for n := range 50 {
		w.Request(fixedRequest("b", n))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(file, prefix string, count int) {
		t.Helper()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		got := lines(string(data))
		if len(got) != count {
			t.Fatalf("%s: %d lines, want %d", file, len(got), count)
		}
		for i, line := range got {
			if want := fmt.Sprintf("/%s/%06d", prefix, i); targetOf(t, line) != want {
				t.Fatalf("%s line %d: %q", file, i, line)
			}
		}
	}
	check(path+".1", "a", 100)
	check(path, "b", 50)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new file mode %v, %v", fi.Mode(), err)
	}
}

// TestReopenFailureKeepsOldFile: when the path cannot be opened again, Reopen says so and the
// log goes on writing to the file it has.
func TestReopenFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Open(filepath.Join(sub, "access.log"), Config{FlushInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w := l.NewWriter()
	w.Request(fixedRequest("a", 0))
	if err := os.Rename(sub, filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Reopen: %v, want ENOENT", err)
	}
	w.Request(fixedRequest("a", 1))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "moved", "access.log"))
	if got := lines(string(data)); len(got) != 2 {
		t.Fatalf("old file has %d lines, want 2", len(got))
	}
}

// TestCloseFlushes: Close writes what the rings hold without waiting for a tick, and gives up
// on a destination that never returns.
func TestCloseFlushes(t *testing.T) {
	var out lockedBuffer
	l := New(&out, Config{FlushInterval: time.Hour})
	w := l.NewWriter()
	for n := range 10 {
		w.Tunnel(&closed)
		_ = n
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := lines(out.String()); len(got) != 10 {
		t.Fatalf("%d lines after Close, want 10", len(got))
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	dst := newBlockingWriter()
	l = New(dst, Config{FlushInterval: time.Hour, CloseTimeout: 50 * time.Millisecond})
	l.NewWriter().Tunnel(&closed)
	if err := l.Close(); err == nil {
		t.Fatal("Close returned nil with a stuck destination")
	}
	close(dst.release)
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, errors.New("disk full") }

// TestWriteErrorCountsLost: lines that fail to write count as dropped.
func TestWriteErrorCountsLost(t *testing.T) {
	var logged bytes.Buffer
	l := New(failingWriter{}, Config{FlushInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	w := l.NewWriter()
	for range 7 {
		w.Request(&relayed)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := l.Dropped(); got != 7 {
		t.Fatalf("dropped %d, want 7", got)
	}
	if !strings.Contains(logged.String(), "disk full") {
		t.Errorf("error not logged: %q", logged.String())
	}
}

func TestOff(t *testing.T) {
	l, err := Open("off", Config{})
	if err != nil || l != nil {
		t.Fatalf("Open(off) = %v, %v", l, err)
	}
	w := l.NewWriter()
	w.Request(&relayed)
	w.Tunnel(&closed)
	if l.Dropped() != 0 || w.Dropped() != 0 || l.Reopen() != nil || l.Close() != nil {
		t.Fatal("nil log misbehaves")
	}
}

func TestOpenDestinations(t *testing.T) {
	for dest, want := range map[string]*os.File{"stdout": os.Stdout, "stderr": os.Stderr, "": os.Stderr} {
		l, err := Open(dest, Config{})
		if err != nil || l.out != want || l.Reopen() != nil {
			t.Errorf("Open(%q): %v %v", dest, l, err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close(%q): %v", dest, err)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "no", "such", "dir"), Config{}); err == nil || !strings.Contains(err.Error(), "access log") {
		t.Errorf("Open into a missing directory: %v", err)
	}
}

func TestRingSizeRounding(t *testing.T) {
	for in, want := range map[int]int{0: defaultRingSize, 1: 4096, 5000: 8192, 1 << 20: 1 << 20} {
		l := New(io.Discard, Config{RingSize: in})
		if got := len(l.NewWriter().ring); got != want {
			t.Errorf("RingSize %d: ring %d, want %d", in, got, want)
		}
		l.Close()
	}
}

// TestAllocs: formatting and queueing a line allocates nothing, in either format.
func TestAllocs(t *testing.T) {
	for _, f := range []Format{Text, JSON} {
		l := New(io.Discard, Config{Format: f, RingSize: 16 << 20, FlushInterval: time.Millisecond})
		w := l.NewWriter()
		weird := relayed
		weird.Target = []byte("/a b\\c\x00\xff\xe2\x80\xa8é\"")
		if a := testing.AllocsPerRun(1000, func() {
			w.Request(&relayed)
			w.Request(&answered)
			w.Request(&weird)
			w.Tunnel(&closed)
		}); a != 0 {
			t.Errorf("%v: %v allocs per 4 lines", f, a)
		}
		l.Close()
	}
}

func TestNewHandler(t *testing.T) {
	var b bytes.Buffer
	slog.New(NewHandler(&b, JSON, nil)).Info("wsgate listening", "listen", "127.0.0.1:8080")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "wsgate listening" || m["listen"] != "127.0.0.1:8080" || m["level"] != "INFO" {
		t.Errorf("json handler: %s (%v)", b.String(), err)
	}
	b.Reset()
	slog.New(NewHandler(&b, Text, &slog.HandlerOptions{Level: slog.LevelWarn})).Info("hidden")
	slog.New(NewHandler(&b, Text, nil)).Warn("backend down", "backend", "127.0.0.1:3000")
	_, vals, err := parseLogfmt(b.String())
	if err != nil || vals["level"] != "WARN" || vals["msg"] != "backend down" || vals["backend"] != "127.0.0.1:3000" {
		t.Errorf("text handler: %q (%v)", b.String(), err)
	}
}

// Benchmarks: what a line costs. ns/op is the loop's part (a record copied into the ring);
// cpu-ns/op is the whole process, so it includes the drain goroutine formatting the lines and
// writing them (to io.Discard). The loop pauses whenever its ring is a quarter full, as a real
// loop's other work would, so that no line is dropped.

func benchWriter(b *testing.B, f Format, fn func(w *Writer)) {
	const ring = 1 << 20
	l := New(io.Discard, Config{Format: f, RingSize: ring, FlushInterval: time.Millisecond})
	defer l.Close()
	w := l.NewWriter()
	b.ReportAllocs()
	start := cpuNow()
	n := 0
	for b.Loop() {
		fn(w)
		if n++; n%256 == 0 {
			for w.tail.Load()-w.head.Load() > ring/4 {
				l.kick()
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
	if w.Dropped() != 0 {
		b.ReportMetric(float64(w.Dropped())/float64(b.N), "dropped/op")
	}
}

func BenchmarkRequestText(b *testing.B) {
	benchWriter(b, Text, func(w *Writer) { w.Request(&relayed) })
}

func BenchmarkRequestJSON(b *testing.B) {
	benchWriter(b, JSON, func(w *Writer) { w.Request(&relayed) })
}

func BenchmarkTunnelJSON(b *testing.B) {
	benchWriter(b, JSON, func(w *Writer) { w.Tunnel(&closed) })
}

// BenchmarkRequestTextNow includes reading the clock, as a loop would (time.Now per line).
func BenchmarkRequestTextNow(b *testing.B) {
	r := relayed
	benchWriter(b, Text, func(w *Writer) { r.Time = time.Now(); w.Request(&r) })
}

func cpuNow() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkFormat is the formatting alone (no ring, no goroutine), per format.
func BenchmarkFormat(b *testing.B) {
	for _, f := range []Format{Text, JSON} {
		b.Run(f.String(), func(b *testing.B) {
			var l line
			var c clock
			l.b = make([]byte, 0, 1024)
			b.ReportAllocs()
			start := cpuNow()
			for b.Loop() {
				l.b = l.b[:0]
				l.request(f, &c, &relayed)
			}
			b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestReopenWhileLogging: loops keep logging while the file is rotated twenty times; every
// accepted line is in exactly one of the files, whole.
func TestReopenWhileLogging(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := Open(path, Config{RingSize: 1 << 20, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const W, N = 3, 3000
	var wg sync.WaitGroup
	writers := make([]*Writer, W)
	for w := range W {
		writers[w] = l.NewWriter()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range N {
				writers[w].Request(fixedRequest(fmt.Sprint(w), n))
			}
		}()
	}
	for i := range 20 {
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, i)); err != nil {
			t.Fatal(err)
		}
		if err := l.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range lines(string(data)) {
			target := targetOf(t, line)
			if seen[target] {
				t.Fatalf("%s twice", target)
			}
			seen[target] = true
		}
	}
	if want := uint64(W*N) - l.Dropped(); uint64(len(seen)) != want {
		t.Fatalf("%d distinct lines in %d files, want %d (dropped %d)", len(seen), len(files), want, l.Dropped())
	}
}

// TestRecordRoundTrip: what a loop hands a Writer comes out of the Log exactly as formatting it
// directly gives, in both formats: time zones, IPv6 and missing client addresses, wire bytes
// that need escaping, every Why, and records that wrap around the end of a small ring.
func TestRecordRoundTrip(t *testing.T) {
	weird := relayed
	weird.Method = []byte("G\"ET")
	weird.Target = []byte("/a b\\c\x00\x1f\x7f\xff\xfe\xe2\x80\xa8é☃\U0001F600\n\r\t=\"")
	weird.Client = netip.AddrPort{}
	weird.Time = t0.In(time.FixedZone("X", -(9*3600 + 30*60)))
	v6 := closed
	v6.Client = netip.MustParseAddrPort("[2001:db8::7]:8443")
	v6.Time = t0.In(time.FixedZone("", 5*3600+45*60))
	for _, f := range []Format{Text, JSON} {
		t.Run(f.String(), func(t *testing.T) {
			var out lockedBuffer
			l := New(&out, Config{Format: f, RingSize: 4096, FlushInterval: time.Millisecond})
			w := l.NewWriter()
			var want strings.Builder
			for n := range 3000 {
				var r *Request
				var tu *Tunnel
				switch n % 5 {
				case 0:
					r = &relayed
				case 1:
					a := answered
					a.Answered = Why(n/5%int(numWhy-1) + 1)
					a.Target = fmt.Appendf(nil, "/%d%s", n, strings.Repeat("x", n%300))
					r = &a
				case 2:
					r = &weird
				case 3:
					tu = &closed
				case 4:
					tu = &v6
				}
				want.WriteString(format(f, r, tu))
				for { // a fast destination: wait for room rather than drop
					d := w.Dropped()
					if r != nil {
						w.Request(r)
					} else {
						w.Tunnel(tu)
					}
					if w.Dropped() == d {
						break
					}
					time.Sleep(time.Millisecond)
				}
			}
			w.dropped.Store(0)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got, exp := lines(out.String()), lines(want.String())
			if len(got) != len(exp) {
				t.Fatalf("%d lines, want %d", len(got), len(exp))
			}
			for i := range exp {
				if got[i] != exp[i] {
					t.Fatalf("line %d:\n%s\nwant\n%s", i, got[i], exp[i])
				}
			}
		})
	}
}
