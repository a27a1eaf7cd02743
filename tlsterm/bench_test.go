package tlsterm

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// Full and resumed handshakes per second over loopback TCP with a crypto/tls
// client: through the driver (the stand-in loop feeding records one at a
// time, secrets captured, write sequence established, session built) against
// a plain crypto/tls server goroutine per connection, in the same run, same
// ECDSA P-256 certificate. The client's own cost is included in both.
func BenchmarkHandshake(b *testing.B) {
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name+"/driver", func(b *testing.B) {
			srv := newTestServer(b, Config{SessionTicketsDisabled: !resume})
			tl := listen(b, srv, harnessOpts{})
			benchDial(b, tl.addr(), resume, func() { tl.next(b) })
		})
		b.Run(name+"/crypto-tls", func(b *testing.B) {
			srv := newTestServer(b, Config{SessionTicketsDisabled: !resume})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			// The same configuration minus the key log (which costs the
			// driver a hex round trip per secret); one Config for every
			// connection so its ticket keys are shared.
			plain := srv.tls.Clone()
			plain.KeyLogWriter = nil
			done := make(chan struct{}, 1024)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						tc := tls.Server(c, plain)
						buf := make([]byte, 1)
						if _, err := io.ReadFull(tc, buf); err == nil {
							tc.Write(buf)
						}
						tc.Close()
						done <- struct{}{}
					}()
				}
			}()
			benchDial(b, ln.Addr().String(), resume, func() { <-done })
		})
	}
}

func benchDial(b *testing.B, addr string, resume bool, wait func()) {
	cfg := clientConfig(b)
	if resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		one(b, addr, cfg) // get a ticket
		wait()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		if st := one(b, addr, cfg); st.DidResume != resume {
			b.Fatalf("resumed %v", st.DidResume)
		}
		wait()
	}
	// Process CPU (user+sys, client included) per handshake: steadier than
	// wall time on a shared 2-core box.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/handshake")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// one handshake plus a one-byte round trip (so the server side is done with
// its handshake before the next starts).
func one(b *testing.B, addr string, cfg *tls.Config) tls.ConnectionState {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	c.Write([]byte{'x'})
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		b.Fatal(err)
	}
	st := c.ConnectionState()
	c.Close()
	return st
}
