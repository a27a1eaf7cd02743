package main

import (
	"log/slog"
	"os"
	"runtime"

	"github.com/wsgate/wsgate/loop"
)

// Room in the Go scheduler for the tunnel plane.
//
// gnet's event loops wait in epoll_wait through syscall.Syscall: a loop that waits holds its P in
// the syscall state until sysmon takes it back, and sysmon looks every 20 us on a busy process but
// only every 10 ms on a quiet one. The tunnel plane's loops park in Go's netpoller instead
// (splice/poller_linux.go), which only a thread without work polls. With GOMAXPROCS equal to the
// number of gnet loops (the default: both are the CPU count), every P can be held by a gnet loop
// waiting for HTTP traffic, nobody polls the network, and a tunnel's byte waits for sysmon: on a
// proxy carrying only tunnels, wsbench's rtt cell (1,000 tunnels, 5,000 echoes/s, runs where other
// processes used less than 0.2 core) measured p99 12.6-17.4 ms, and 2.2-5.0 ms with GOMAXPROCS
// raised to the gnet loops plus the tunnel loops. The extra Ps only run when there is work. An
// explicit GOMAXPROCS in the environment is left alone. This is the process's business, so it is
// done here and not in loop.Start (a library that embeds loop keeps its own GOMAXPROCS).
func reserveProcs(cfg *loop.Config, logger *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	want := cfg.Loops + cfg.Tunnel.Loops
	if cur := runtime.GOMAXPROCS(0); cur < want {
		runtime.GOMAXPROCS(want)
		logger.Debug("GOMAXPROCS raised for the tunnel plane", "from", cur, "to", want, "loops", cfg.Loops, "tunnel_loops", cfg.Tunnel.Loops)
	}
}
