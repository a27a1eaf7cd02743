// Command wsrtt is the benchmark's open-loop small-message round trip on its own: C WebSocket
// tunnels to ADDR (ws://ADDR/ws on the benchmark backend, directly or through a proxy) and R
// 100-byte echoes per second over them for D; it prints p50/p99/p99.9 from each message's
// scheduled send time and the rate achieved. Like wsstorm, it is for profiling a proxy by hand
// (perf stat / perf record -p on the proxy while it runs).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/bench/internal/load"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "proxy (or backend) address")
	conns := flag.Int("c", 1000, "tunnels")
	rate := flag.Float64("rate", 5000, "echoes per second over all tunnels")
	size := flag.Int("size", 100, "message size in bytes")
	dur := flag.Duration("d", 4*time.Second, "how long to send")
	sources := flag.Int("sources", 8, "127.0.0.x source addresses")
	flag.Parse()
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	res, err := load.RunRTT(context.Background(), load.RTTConfig{Addr: *addr, Conns: *conns, Rate: *rate, Size: *size,
		Duration: *dur, Locals: load.SourceAddrs(*sources)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsrtt:", err)
		os.Exit(1)
	}
	fmt.Printf("%d/%d echoes, %.0f/s of %.0f/s, p50 %v p99 %v p99.9 %v max %v, %d errors %s\n",
		res.Received, res.Sent, res.Achieved, res.ScheduledRate, res.P50.Round(10*time.Microsecond),
		res.P99.Round(10*time.Microsecond), res.P999.Round(10*time.Microsecond), res.Max.Round(10*time.Microsecond),
		res.Errors, res.FirstErr)
}
