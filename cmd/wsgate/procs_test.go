package main

import (
	"io"
	"log/slog"
	"runtime"
	"testing"

	"github.com/wsgate/wsgate/loop"
)

// reserveProcs raises GOMAXPROCS to the gnet loops plus the tunnel loops, never lowers it, and
// leaves an explicit GOMAXPROCS from the environment alone.
func TestReserveProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := loop.DefaultConfig()
	cfg.Loops, cfg.Tunnel.Loops = 2, 3

	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(1)
	reserveProcs(&cfg, log)
	if got := runtime.GOMAXPROCS(0); got != 5 {
		t.Fatalf("GOMAXPROCS %d, want 2 gnet + 3 tunnel loops = 5", got)
	}
	runtime.GOMAXPROCS(8)
	reserveProcs(&cfg, log)
	if got := runtime.GOMAXPROCS(0); got != 8 {
		t.Fatalf("GOMAXPROCS %d, want 8 kept (never lowered)", got)
	}

	t.Setenv("GOMAXPROCS", "1")
	runtime.GOMAXPROCS(1)
	reserveProcs(&cfg, log)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("GOMAXPROCS %d with GOMAXPROCS=1 in the environment, want 1", got)
	}
}
