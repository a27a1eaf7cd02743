//go:build linux

package handoff

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// unixPair returns two connected stream UnixConns.
func unixPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	p, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	a, err := linkFromFD(p[0], "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := linkFromFD(p[1], "b")
	if err != nil {
		t.Fatal(err)
	}
	return a.c, b.c
}

// inode of an fd ("socket:[123]" -> 123 with its kind), via /proc.
func fdTarget(fd int) string {
	s, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return ""
	}
	return s
}

// openTargets maps every /proc/self/fd target (socket:[n], pipe:[n]) to
// the number of fds that refer to it.
func openTargets() map[string]int {
	m := map[string]int{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if s, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			m[s]++
		}
	}
	return m
}

// sockItems makes n items whose fds are fresh socketpair ends (and, every
// pipeEvery-th item, also a pipe's two ends); the peers of the socketpairs
// are returned for closing. Each item's state is deterministic in its id.
func sockItems(t testing.TB, n, pipeEvery int) (items []*Item, peers []int) {
	t.Helper()
	for i := 0; i < n; i++ {
		a, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		it := &Item{ID: uint64(1000 + i), Kind: KindTunnel, FDs: []int{a[0], b[0]}, State: stateFor(uint64(1000+i), i%50*37)}
		if pipeEvery > 0 && i%pipeEvery == 0 {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			it.FDs = append(it.FDs, p[0], p[1])
		}
		items = append(items, it)
		peers = append(peers, a[1], b[1])
	}
	return items, peers
}

func stateFor(id uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(id*31 + uint64(i)*7)
	}
	return b
}

// targetsOf returns the /proc targets of the items' fds.
func targetsOf(items []*Item) [][]string {
	out := make([][]string, len(items))
	for i, it := range items {
		for _, fd := range it.FDs {
			out[i] = append(out[i], fdTarget(fd))
		}
	}
	return out
}

// recAdopter records what the receiver hands it and owns committed fds.
type recAdopter struct {
	mu        sync.Mutex
	reject    func(it *Item) error
	prepared  map[uint64]bool
	committed map[uint64]Item
	cancelled map[uint64]bool
	order     []uint64
}

func newRecAdopter() *recAdopter {
	return &recAdopter{prepared: map[uint64]bool{}, committed: map[uint64]Item{}, cancelled: map[uint64]bool{}}
}

func (a *recAdopter) Prepare(it *Item) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reject != nil {
		if err := a.reject(it); err != nil {
			return err
		}
	}
	if a.prepared[it.ID] {
		return fmt.Errorf("id %d prepared twice", it.ID)
	}
	a.prepared[it.ID] = true
	return nil
}

func (a *recAdopter) Commit(it *Item) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.prepared[it.ID] {
		panic(fmt.Sprintf("commit of unprepared %d", it.ID))
	}
	a.committed[it.ID] = *it
	a.order = append(a.order, it.ID)
}

func (a *recAdopter) Cancel(it *Item) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.prepared[it.ID] {
		panic(fmt.Sprintf("cancel of unprepared %d", it.ID))
	}
	a.cancelled[it.ID] = true
}

func (a *recAdopter) closeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, it := range a.committed {
		closeFDs(it.FDs)
	}
	a.committed = map[uint64]Item{}
}

// outcome records the sender's done callbacks.
type outcome struct {
	transferred map[uint64]bool
	kept        map[uint64]error
	calls       int
}

func newOutcome() *outcome {
	return &outcome{transferred: map[uint64]bool{}, kept: map[uint64]error{}}
}

func (o *outcome) done(it *Item, err error) {
	o.calls++
	if _, dup := o.kept[it.ID]; dup || o.transferred[it.ID] {
		panic(fmt.Sprintf("done twice for %d", it.ID))
	}
	if err == nil {
		o.transferred[it.ID] = true
	} else {
		o.kept[it.ID] = err
	}
}

func seqOf(items []*Item) func(func(*Item) bool) {
	return func(yield func(*Item) bool) {
		for _, it := range items {
			if !yield(it) {
				return
			}
		}
	}
}

// checkOwnership asserts, within one process, that every fd target of a
// transferred item is held exactly once (by the receiver) and every kept
// item's targets exactly once (by the sender, at its original fd numbers).
func checkOwnership(t *testing.T, items []*Item, before [][]string, out *outcome) {
	t.Helper()
	open := openTargets()
	for i, it := range items {
		want := map[string]int{} // a pipe's two ends share one target
		for _, tg := range before[i] {
			want[tg]++
		}
		for j, tg := range before[i] {
			if !strings.Contains(tg, ":[") {
				t.Fatalf("item %d fd %d: bad target %q", it.ID, j, tg)
			}
			if n := open[tg]; n != want[tg] {
				t.Errorf("item %d (%s): %s held by %d fds, want exactly %d", it.ID, state(out, it.ID), tg, n, want[tg])
			}
			if _, kept := out.kept[it.ID]; kept && fdTarget(it.FDs[j]) != tg {
				t.Errorf("kept item %d: fd %d now %q, want %q", it.ID, it.FDs[j], fdTarget(it.FDs[j]), tg)
			}
		}
	}
}

func state(out *outcome, id uint64) string {
	if out.transferred[id] {
		return "transferred"
	}
	if err, ok := out.kept[id]; ok {
		return "kept: " + err.Error()
	}
	return "no verdict"
}

// closeItems closes every item the sender still holds (kept or never
// yielded).
func closeItems(items []*Item, out *outcome) {
	for _, it := range items {
		if !out.transferred[it.ID] {
			closeFDs(it.FDs)
		}
	}
}
