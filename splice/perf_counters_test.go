//go:build linux

package splice

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// processThreads lists the process's threads now (/proc/self/task).
func processThreads() []int {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	var tids []int
	for _, e := range ents {
		if t, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, t)
		}
	}
	return tids
}

// threadCounters counts events of a set of threads (the process's) with
// perf_event_open: retired instructions (user+kernel) and, where tracefs is
// mounted and readable, syscalls entered (raw_syscalls:sys_enter). Either
// counter may be missing (no PMU in a VM, no permission): its total is then
// -1 and the benchmark does not report it.
type threadCounters struct {
	instr, sys []int // perf fds, one per thread
}

func openThreadCounters(tids []int) *threadCounters {
	tc := &threadCounters{}
	open := func(typ uint32, config uint64) []int {
		var fds []int
		for _, tid := range tids {
			attr := unix.PerfEventAttr{Type: typ, Config: config, Size: unix.PERF_ATTR_SIZE_VER0}
			fd, err := unix.PerfEventOpen(&attr, tid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
			if err != nil {
				for _, f := range fds {
					unix.Close(f)
				}
				return nil
			}
			fds = append(fds, fd)
		}
		return fds
	}
	tc.instr = open(unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_INSTRUCTIONS)
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(dir + "/events/raw_syscalls/sys_enter/id")
		if err != nil {
			continue
		}
		if id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			tc.sys = open(unix.PERF_TYPE_TRACEPOINT, id)
			break
		}
	}
	return tc
}

func sumCounters(fds []int) int64 {
	if fds == nil {
		return -1
	}
	var sum int64
	var b [8]byte
	for _, fd := range fds {
		if n, err := unix.Read(fd, b[:]); err != nil || n != 8 {
			return -1
		}
		sum += int64(binary.LittleEndian.Uint64(b[:]))
	}
	return sum
}

// read returns the instruction and syscall totals so far (-1 when missing).
func (tc *threadCounters) read() (instr, sys int64) {
	return sumCounters(tc.instr), sumCounters(tc.sys)
}

func (tc *threadCounters) close() {
	for _, fd := range append(tc.instr, tc.sys...) {
		unix.Close(fd)
	}
}
