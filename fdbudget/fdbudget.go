// Package fdbudget counts the file descriptors a process owns against a limit below
// RLIMIT_NOFILE, so that work needing another fd is refused (wsgate answers 503) before the kernel
// refuses it. The kernel's refusal is the one to avoid: gnet stops its whole engine on a single
// EMFILE from accept(2).
//
// # Invariant
//
// Used() is the number of fds the owners currently hold, as they declared them: every Acquire, and
// every TryAcquire that returned true, is matched by exactly one Release of the same n when those
// fds are closed (or handed to an owner that counts them itself). TryAcquire never takes Used past
// Limit; Acquire may, because it declares fds the kernel has already created (an accepted
// connection): the caller then sees over == true and must give the fd back promptly (answer 503
// and close). Used can therefore exceed Limit by at most the number of such fds in flight, which
// is what the reserve between Limit and RLIMIT_NOFILE is for (see loop's budget.go).
//
// A hand-off between two owners may count an fd twice for a moment (the receiver acquires before
// the giver releases) or not at all (the giver releases, then the receiver acquires): both windows
// are a few instructions on one thread, and the reserve covers the second.
//
// The cost is one atomic add per Acquire or Release and one more when TryAcquire fails: cheap
// enough for the per-connection path. A nil *Budget is unlimited and counts nothing, so packages
// that take an optional budget need no nil checks.
package fdbudget

import (
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Budget counts fds against a limit. The zero value has a limit of 0; use New.
type Budget struct {
	used  atomic.Int64
	limit int64
}

// New returns a budget that lets owners hold at most limit fds.
func New(limit int) *Budget {
	return &Budget{limit: int64(limit)}
}

// TryAcquire reserves n fds if that keeps Used within Limit. Call it before creating them (a
// dial, a pipe) and Release the same n if creating them fails.
func (b *Budget) TryAcquire(n int) bool {
	if b == nil {
		return true
	}
	if b.used.Add(int64(n)) > b.limit {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

// Acquire counts n fds that already exist (an accepted connection, fds handed over by another
// owner). over reports that Used is now past Limit: the caller should shed the work and Release.
func (b *Budget) Acquire(n int) (over bool) {
	if b == nil {
		return false
	}
	return b.used.Add(int64(n)) > b.limit
}

// Release gives back n fds acquired earlier.
func (b *Budget) Release(n int) {
	if b == nil {
		return
	}
	b.used.Add(-int64(n))
}

// Used is the number of fds counted now.
func (b *Budget) Used() int {
	if b == nil {
		return 0
	}
	return int(b.used.Load())
}

// Limit is the most fds owners may hold; -1 for a nil (unlimited) budget.
func (b *Budget) Limit() int {
	if b == nil {
		return -1
	}
	return int(b.limit)
}

// NoFile returns RLIMIT_NOFILE's soft limit: the kernel refuses to create fd number soft or higher,
// so a process may hold at most soft fds.
func NoFile() (soft uint64, err error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return uint64(r.Cur), nil // int64 on the BSDs
}

// OpenFDs counts the fds the process has open now (from /proc/self/fd or /dev/fd), or returns -1
// where neither can be read.
func OpenFDs() int {
	for _, dir := range []string{"/proc/self/fd", "/dev/fd"} {
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		names, err := f.Readdirnames(-1)
		_ = f.Close()
		if err != nil {
			continue
		}
		// The directory listing itself used one fd, which is closed again.
		return len(names) - 1
	}
	return -1
}
