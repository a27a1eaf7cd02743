package route

import "syscall"

// processCPUNanos is user+system CPU time of the whole process. On a shared machine wall-clock
// ns/op swings with other sessions' load; CPU time per op is the steadier figure.
func processCPUNanos() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
