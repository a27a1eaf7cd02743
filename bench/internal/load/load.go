// Package load holds the benchmark's load generators: a closed-loop HTTP/1.1 keep-alive
// client, a wrk runner, and WebSocket clients for bulk throughput, open-loop round trips,
// idle tunnels and handshake rate. Every generator is bounded by a duration or a count.
package load

import (
	"fmt"
	"net"
	"time"
)

// SourceAddrs returns n loopback source addresses 127.0.0.2 ... 127.0.0.(n+1). Spreading
// connections over several source addresses multiplies the ephemeral ports available toward
// one proxy port, so thousands of tunnels and fast handshake loops do not run out.
func SourceAddrs(n int) []*net.TCPAddr {
	if n < 1 {
		n = 1
	}
	if n > 250 {
		n = 250
	}
	out := make([]*net.TCPAddr, n)
	for i := range out {
		out[i] = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
	}
	return out
}

func dialerFor(local *net.TCPAddr, timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if local != nil {
		d.LocalAddr = local
	}
	return d
}

// phaseErr names the generator phase in errors, so a failed run says where it failed.
func phaseErr(phase string, err error) error { return fmt.Errorf("%s: %w", phase, err) }
