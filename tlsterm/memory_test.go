package tlsterm

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/wsgate/wsgate/tlsrecord"
)

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// idleSessionBytes is the heap retained per idle established session, made
// as the driver makes them (keys from secrets, both AEADs), optionally shrunk.
func idleSessionBytes(t testing.TB, suite uint16, n int, shrink bool) float64 {
	secret := make([]byte, map[uint16]int{0x1301: 32, 0x1302: 48, 0x1303: 32}[suite])
	keep := make([]*tlsrecord.Session, n)
	before := heapInUse()
	for i := range keep {
		secret[0], secret[1] = byte(i), byte(i>>8)
		s, err := tlsrecord.NewSession(tlsrecord.Keys{Suite: suite, ReadSecret: secret, WriteSecret: secret, WriteSeq: 1})
		if err != nil {
			t.Fatal(err)
		}
		if shrink {
			s.Shrink()
		}
		keep[i] = s
	}
	after := heapInUse()
	runtime.KeepAlive(keep)
	return float64(after-before) / float64(n)
}

// The retained size of an idle TLS 1.3 session: no buffer, only keys,
// sequence numbers and the AEADs (which Shrink drops while idle).
func TestIdleSessionMemory(t *testing.T) {
	const n = 4000
	limits := map[uint16]float64{0x1301: 2400, 0x1302: 2400, 0x1303: 700}
	for _, suite := range []uint16{tlsrecord.TLS_AES_128_GCM_SHA256, tlsrecord.TLS_AES_256_GCM_SHA384, tlsrecord.TLS_CHACHA20_POLY1305_SHA256} {
		full := idleSessionBytes(t, suite, n, false)
		shrunk := idleSessionBytes(t, suite, n, true)
		t.Logf("%s: %.0f B per idle session, %.0f B after Shrink", tlsrecord.SuiteName(suite), full, shrunk)
		if full > limits[suite] || shrunk > 600 {
			t.Errorf("%s: %.0f / %.0f B per idle session", tlsrecord.SuiteName(suite), full, shrunk)
		}
	}
}

// Through the whole driver: sessions from real handshakes keep nothing of
// the handshake (no crypto/tls.Conn, no pipe, no buffer).
func TestIdleSessionMemoryThroughDriver(t *testing.T) {
	srv := newTestServer(t, Config{})
	const n = 200
	keep := make([]*tlsrecord.Session, 0, n)
	// Warm up pools and caches before measuring.
	driverSession(t, srv)
	before := heapInUse()
	for i := 0; i < n; i++ {
		keep = append(keep, driverSession(t, srv))
	}
	after := heapInUse()
	runtime.KeepAlive(keep)
	per := float64(after-before) / n
	t.Logf("AES-128-GCM session from a real handshake: %.0f B retained", per)
	if per > 2600 {
		t.Fatalf("%.0f B retained per session: something of the handshake is kept", per)
	}
}

// driverSession runs one handshake through the driver over an in-memory
// connection and returns the session, everything else dropped.
func driverSession(t testing.TB, srv *Server) *tlsrecord.Session {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, clientConfig(t))
		c.Handshake()
		io.WriteString(c, "x")
	}()
	wake := make(chan struct{}, 1)
	h := srv.NewHandshake(func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	data := make(chan []byte, 8)
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := b.Read(buf)
			if n > 0 {
				data <- buf[:n]
			}
			if err != nil {
				close(data)
				return
			}
		}
	}()
	// net.Pipe is synchronous: write on a goroutine.
	outq := make(chan []byte, 16)
	go func() {
		for o := range outq {
			b.Write(o)
		}
	}()
	defer close(outq)
	deadline := time.After(10 * time.Second)
	for h.State() < StateEstablished {
		var out []byte
		var err error
		select {
		case d := <-data:
			out, _, err = h.Feed(d)
		case <-wake:
			out, _, err = h.Feed(nil)
		case <-deadline:
			t.Fatal("handshake timeout")
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > 0 {
			outq <- out
		}
	}
	s := h.Session()
	if s == nil {
		t.Fatal("no session")
	}
	return s
}

func BenchmarkIdleSessionMemory(b *testing.B) {
	for _, suite := range []uint16{tlsrecord.TLS_AES_128_GCM_SHA256, tlsrecord.TLS_CHACHA20_POLY1305_SHA256} {
		for _, shrink := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/shrink=%v", tlsrecord.SuiteName(suite), shrink), func(b *testing.B) {
				var per float64
				for b.Loop() {
					per = idleSessionBytes(b, suite, 2000, shrink)
				}
				b.ReportMetric(per, "B/session")
			})
		}
	}
}
