//go:build !linux

package loop

// unsentBytes: no portable SIOCOUTQ (FreeBSD has FIONWRITE, darwin SO_NWRITE); 0 makes the idle
// and linger timers count from the moment an answer left wsgate's own queue.
func unsentBytes(fd int) int { return 0 }
