package peers

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc CPU times. It is 100 on every Linux ABI Go
// supports (the kernel fixes it for userspace regardless of CONFIG_HZ).
const clockTick = time.Second / 100

// procStat is the part of /proc/<pid>/stat the harness needs.
type procStat struct {
	ppid         int
	utime, stime int64 // ticks
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat reads fields after the command name, which is in parentheses and may itself
// contain spaces or parentheses: the last ')' ends it.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("proc stat: no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("proc stat: %d fields", len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return procStat{ppid: ppid, utime: ut, stime: st}, nil
}

// Tree returns pid and all its descendants, found by scanning /proc for parent links.
func Tree(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(p)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// TreeCPU is user+system CPU used so far by pid and its descendants (all threads, including
// threads that already exited).
func TreeCPU(pid int) time.Duration {
	var ticks int64
	for _, p := range Tree(pid) {
		if st, err := readProcStat(p); err == nil {
			ticks += st.utime + st.stime
		}
	}
	return time.Duration(ticks) * clockTick
}

// TreeRSS is the sum of VmRSS over pid and its descendants, in bytes. Pages shared between
// an nginx master and its workers count twice; per-tunnel figures use the difference before
// and after, where that does not matter.
func TreeRSS(pid int) int64 {
	var total int64
	for _, p := range Tree(pid) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "status"))
		if err != nil {
			continue
		}
		total += parseVmRSS(b)
	}
	return total
}

// ProcThreads is the number of threads of one process (the Threads: line of
// /proc/<pid>/status), 0 when it is gone.
func ProcThreads(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// TreeThreads is the number of threads of pid and its descendants.
func TreeThreads(pid int) int {
	total := 0
	for _, p := range Tree(pid) {
		total += ProcThreads(p)
	}
	return total
}

func parseVmRSS(status []byte) int64 {
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line[len("VmRSS:"):])
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// SysCPU is the machine-wide CPU time from the first line of /proc/stat.
type SysCPU struct {
	Busy    time.Duration // user + nice + system (process context)
	IRQ     time.Duration // irq + softirq: loopback packet processing lands here
	Elapsed time.Duration // all columns, idle included (== wall time x CPUs)
}

// ReadSysCPU reads /proc/stat.
func ReadSysCPU() (SysCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return SysCPU{}, err
	}
	return parseSysCPU(b)
}

func parseSysCPU(b []byte) (SysCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return SysCPU{}, fmt.Errorf("proc stat: unexpected first line %q", line)
	}
	v := make([]int64, len(f)-1)
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
	var all int64
	for i := 0; i < len(v) && i < 8; i++ {
		all += v[i]
	}
	return SysCPU{
		Busy:    time.Duration(v[0]+v[1]+v[2]) * clockTick,
		IRQ:     time.Duration(v[5]+v[6]) * clockTick,
		Elapsed: time.Duration(all) * clockTick,
	}, nil
}

// Sub is the CPU time between two readings.
func (s SysCPU) Sub(o SysCPU) SysCPU {
	return SysCPU{Busy: s.Busy - o.Busy, IRQ: s.IRQ - o.IRQ, Elapsed: s.Elapsed - o.Elapsed}
}

// ProcCPU is user+system CPU used so far by one process (all its threads), not its children.
func ProcCPU(pid int) time.Duration {
	st, err := readProcStat(pid)
	if err != nil {
		return 0
	}
	return time.Duration(st.utime+st.stime) * clockTick
}
