package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func machineLine() string {
	return fmt.Sprintf("%s, %d CPUs, Linux %s", cpuModel(), runtime.NumCPU(), kernel())
}

// versionOf runs a peer's version command; peers print it on stdout or stderr and some exit
// non-zero (wrk), so only the first line of the output matters.
func versionOf(name string, args ...string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return "not installed"
	}
	out, _ := exec.Command(p, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return p
	}
	return line
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
}

func machineInfo(s Suite) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Machine\n\n")
	fmt.Fprintf(&b, "| item | value |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, strings.ReplaceAll(v, "|", "/")) }
	row("date", time.Now().UTC().Format(time.RFC3339))
	row("CPU", cpuModel())
	row("CPUs (online / usable by this run)", fmt.Sprintf("%d / %d", runtime.NumCPU(), runtime.GOMAXPROCS(0)))
	row("memory", memTotal())
	row("kernel", kernel())
	row("go", runtime.Version())
	row("nginx", versionOf("nginx", "-v"))
	row("haproxy", versionOf("haproxy", "-v"))
	row("wrk", versionOf("wrk", "-v"))
	ws := "not built"
	if _, err := os.Stat(s.WSGateBinary); err == nil {
		ws = s.WSGateBinary
		if rev, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
			ws += " (repository at " + strings.TrimSpace(string(rev)) + ")"
		}
	}
	row("wsgate", ws)
	row("net.ipv4.tcp_tw_reuse", readTrim("/proc/sys/net/ipv4/tcp_tw_reuse"))
	row("net.ipv4.ip_local_port_range", readTrim("/proc/sys/net/ipv4/ip_local_port_range"))
	row("net.core.somaxconn", readTrim("/proc/sys/net/core/somaxconn"))
	row("pinning", fmt.Sprintf("%v (proxy CPU 0, load+backend CPU 1 when on)", s.Pin))
	row("nice", fmt.Sprint(s.Nice))
	fmt.Fprintf(&b, "\n## Suite\n\n")
	fmt.Fprintf(&b, "| setting | value |\n|---|---|\n")
	row("suite", s.Name)
	row("command", "`"+s.Command+"`")
	row("runs per figure", fmt.Sprint(s.Runs))
	row("HTTP", fmt.Sprintf("%s, %d connections, %v per run", s.HTTPGen, s.HTTPConns, s.HTTPDur))
	row("WS bulk", fmt.Sprintf("connections %v, %v per run, 64 KiB messages", s.BulkConns, s.BulkDur))
	row("RTT", fmt.Sprintf("%d connections, %v msg/s, 100 B, %v per run", s.RTTConns, s.RTTRates, s.RTTDur))
	row("idle tunnels", fmt.Sprintf("%d from %d source addresses", s.IdleTunnels, s.Sources))
	row("handshakes", fmt.Sprintf("%d loops, %v per run", s.HSWorkers, s.HSDur))
	row("storm", fmt.Sprintf("%d tunnels from %d source addresses, %d in flight, RSS read %v after", s.StormClients, s.StormSources, s.StormPar, s.StormIdle))
	return b.String()
}
