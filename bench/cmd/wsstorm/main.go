// Command wsstorm is the benchmark's reconnect storm on its own: N WebSocket upgrades to ADDR
// (ws://ADDR/ws on the benchmark backend, directly or through a proxy), P in flight, from S
// loopback source addresses; it prints upgrades per second and connect-to-101 latency, keeps the
// tunnels open for -hold, then checks one echo per tunnel. bench/scripts/storm-syscalls.sh runs
// it against wsgate under strace -c to count the proxy's syscalls per upgrade.
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
	n := flag.Int("n", 2000, "tunnels to open")
	par := flag.Int("par", 1000, "upgrades in flight")
	sources := flag.Int("sources", 16, "127.0.0.x source addresses")
	hold := flag.Duration("hold", 0, "keep the tunnels open this long before the echo check")
	flag.Parse()
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	ctx := context.Background()
	res, err := load.RunStorm(ctx, load.StormConfig{Addr: *addr, Clients: *n, Par: *par, Locals: load.SourceAddrs(*sources)})
	if err != nil && res.Upgrades == 0 {
		fmt.Fprintln(os.Stderr, "wsstorm:", err)
		os.Exit(1)
	}
	defer res.Set.Close()
	fmt.Printf("%d upgrades in %v: %.0f/s, connect->101 p50 %v p99 %v max %v, %d failed %s\n",
		res.Upgrades, res.Elapsed.Round(time.Millisecond), res.PerSec(), res.P50.Round(10*time.Microsecond),
		res.P99.Round(10*time.Microsecond), res.Max.Round(10*time.Microsecond), res.Errors, res.FirstErr)
	time.Sleep(*hold)
	ok, err := res.Set.EchoAll(ctx, 64, 30*time.Second)
	fmt.Printf("%d/%d tunnels echoed", ok, res.Set.Len())
	if err != nil {
		fmt.Printf(" (%v)", err)
	}
	fmt.Println()
}
