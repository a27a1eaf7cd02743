package loop

import (
	"log/slog"
	"os"
	"runtime"
)

// Room in the Go scheduler for the tunnel plane.
//
// gnet's event loops wait in epoll_wait through syscall.Syscall: a loop that waits holds its P in
// the syscall state until sysmon takes it back, and sysmon looks every 20 us on a busy process
// but only every 10 ms on a quiet one. The tunnel plane's loops park in Go's netpoller instead
// (splice/poller_linux.go), which only a thread without work polls. With GOMAXPROCS equal to the
// number of gnet loops (the default: both are the CPU count), every P can be held by a gnet loop
// waiting for HTTP traffic, nobody polls the network, and a tunnel's byte waits for sysmon: on a
// proxy carrying only tunnels, wsbench's rtt cell (1,000 tunnels, 5,000 echoes/s, a quiet 2-core
// box) measured p99 7-20 ms, and 2-4 ms with GOMAXPROCS 4. So Start raises GOMAXPROCS to the
// gnet loops plus the tunnel loops: the extra Ps only run when there is work, and a gnet loop
// that waits never leaves the plane without one. An explicit GOMAXPROCS in the environment is
// left alone.
func reserveProcs(cfg *Config, log *slog.Logger) {
	if cfg.Tunnel.Loops <= 0 {
		cfg.Tunnel.Loops = runtime.GOMAXPROCS(0) // the plane's default, fixed before GOMAXPROCS moves
	}
	want := cfg.Loops + cfg.Tunnel.Loops
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if cur := runtime.GOMAXPROCS(0); cur < want {
		runtime.GOMAXPROCS(want)
		log.Debug("GOMAXPROCS raised for the tunnel plane", "from", cur, "to", want, "loops", cfg.Loops, "tunnel_loops", cfg.Tunnel.Loops)
	}
}
