package handoff

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// darwin has no SOCK_CLOEXEC: hold ForkLock so no exec sees the pair
// before it is marked close-on-exec.
func socketpair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(p[0])
		unix.CloseOnExec(p[1])
	}
	return p, err
}
