package loop_test

// Issue 9: the handshake bound and the ClientHello phase, and the TLS 1.3 suites a Go client
// cannot choose in-process (a subprocess client offering only that suite).

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	_ "unsafe" // go:linkname

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/tlsterm"
)

// defaultCipherSuitesTLS13 is crypto/tls's TLS 1.3 suite list (published for linkname: see its
// declaration). Only the helper subprocess changes it, so it offers exactly one suite.
//
//go:linkname defaultCipherSuitesTLS13 crypto/tls.defaultCipherSuitesTLS13
var defaultCipherSuitesTLS13 []uint16

// TestTLSHelperClient is not a test: the subprocess of TestTLS13EachSuite runs it to be a Go TLS
// client offering only the suite in WSGATE_TLS_SUITE.
func TestTLSHelperClient(t *testing.T) {
	addr := os.Getenv("WSGATE_TLS_HELPER")
	if addr == "" {
		t.Skip("helper process only")
	}
	var suite uint16
	fmt.Sscanf(os.Getenv("WSGATE_TLS_SUITE"), "%d", &suite)
	defaultCipherSuitesTLS13 = []uint16{suite}
	c := dialTLS(t, addr, clientTLS(t, tls13))
	if got := c.ConnectionState().CipherSuite; got != suite {
		t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(suite))
	}
	body := strings.Repeat("s", 40000)
	for i := 0; i < 3; i++ {
		c.send(t, fmt.Sprintf("POST /suite HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
		resp, got := c.fullResponse(t, "POST")
		if resp.StatusCode != 200 || string(got) != "hello /suite" || resp.Header.Get("X-Req-Len") != "40000" {
			t.Fatalf("request %d: %d %q %s", i, resp.StatusCode, got, resp.Header.Get("X-Req-Len"))
		}
	}
	fmt.Println("HELPER-OK", tls.CipherSuiteName(suite))
}

// TestTLS13EachSuite: a crypto/tls client (in a subprocess, offering one suite) through wsgate for
// each TLS 1.3 AEAD: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
func TestTLS13EachSuite(t *testing.T) {
	if os.Getenv("WSGATE_TLS_HELPER") != "" {
		t.Skip("in the helper")
	}
	b := newBackend(t, echoHeaders(new(string)))
	_, addr, _ := startTLSProxy(t, b.Addr)
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256} {
		t.Run(tls.CipherSuiteName(suite), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestTLSHelperClient$", "-test.v")
			f, _ := testPKI(t)
			cmd.Env = append(os.Environ(), "WSGATE_TLS_HELPER="+addr, fmt.Sprintf("WSGATE_TLS_SUITE=%d", suite), "WSGATE_TLS_CA="+f.CA)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "HELPER-OK "+tls.CipherSuiteName(suite)) {
				t.Fatalf("helper client: %v\n%s", err, out)
			}
		})
	}
}

// clientHello returns a fresh ClientHello record from crypto/tls's client (a new random each time).
func clientHello(t testing.TB) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		c := tls.Client(b, clientTLS(t, tls13))
		c.Handshake() // ends when a closes
		b.Close()
	}()
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(a, hdr); err != nil {
		t.Fatalf("ClientHello header: %v", err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(a, body); err != nil {
		t.Fatalf("ClientHello body: %v", err)
	}
	return append(hdr, body...)
}

// TestTLSHandshakeBoundUnderFlood: 40 clients send a ClientHello and stall (never a Finished).
// With -tls-handshakes 3, exactly 3 handshake goroutines exist (counted in the goroutine dump),
// the rest wait in the loop with their ClientHello buffered; a real client queued behind them
// completes once the stalled ones are gone; the count never exceeds 3.
func TestTLSHandshakeBoundUnderFlood(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	ts := newTLSServer(t, func(c *tlsterm.Config) { c.MaxHandshakes = 3 })
	_, addr := startProxy(t, b.Addr, withTLS(ts), func(c *loop.Config) { c.HeaderTimeout = 30 * time.Second })
	base := handshakeGoroutines()
	var stalled []net.Conn
	for i := 0; i < 40; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(clientHello(t)); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	if !waitFor(10*time.Second, func() bool { st := ts.Stats(); return st.Running == 3 && st.Waiting == 37 }) {
		t.Fatalf("stats %+v, want 3 running, 37 waiting", ts.Stats())
	}
	if n := handshakeGoroutines() - base; n != 3 {
		t.Fatalf("%d handshake goroutines, want 3", n)
	}
	// A real client behind them: it waits for a slot, then completes.
	done := make(chan error, 1)
	go func() {
		nc, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(60 * time.Second))
		c := tls.Client(nc, clientTLS(t))
		if err := c.Handshake(); err != nil {
			done <- err
			return
		}
		io.WriteString(c, "GET /late HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode != 200 {
			err = errors.New(resp.Status)
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the late client finished while every slot was held: %v", err)
	default:
	}
	peak := 0
	for _, c := range stalled {
		c.Close()
		if n := handshakeGoroutines() - base; n > peak {
			peak = n
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("late client: %v", err)
	}
	if st := ts.Stats(); st.PeakRunning > 3 || peak > 3 {
		t.Fatalf("bound exceeded: peak running %d, goroutines seen %d", st.PeakRunning, peak)
	}
	if !waitFor(10*time.Second, func() bool { return handshakeGoroutines() == base }) {
		t.Fatalf("%d handshake goroutines left", handshakeGoroutines()-base)
	}
}

// TestTLSSlowClientHelloNoGoroutine: a ClientHello dribbled 16 bytes every 10 ms has no goroutine
// until its last byte; then the handshake completes. A ClientHello that stops half-way is closed
// at the header timeout, still without a goroutine.
func TestTLSSlowClientHelloNoGoroutine(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	ts := newTLSServer(t)
	_, addr := startProxy(t, b.Addr, withTLS(ts), func(c *loop.Config) { c.HeaderTimeout = 2 * time.Second })
	base := handshakeGoroutines()
	t.Run("dribble", func(t *testing.T) {
		// Its own server: the dribble (and a goroutine dump now and then) must fit its header timeout
		// under -race on a loaded box.
		ts := newTLSServer(t)
		_, addr := startProxy(t, b.Addr, withTLS(ts), func(c *loop.Config) { c.HeaderTimeout = 30 * time.Second })
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(30 * time.Second))
		rec := &recordingConn{Conn: nc}
		c := tls.Client(rec, clientTLS(t, tls13))
		// Dribble a real handshake's first flight: wrap the conn so its first Write trickles.
		chunks := 0
		rec.trickle = func(p []byte) error {
			for len(p) > 0 {
				k := min(16, len(p))
				if _, err := nc.Write(p[:k]); err != nil {
					return err
				}
				p = p[k:]
				if len(p) > 0 {
					chunks++
					if ts.Stats().Started != 0 {
						return fmt.Errorf("a handshake started before the ClientHello was complete (%d bytes left)", len(p))
					}
					if chunks%8 == 0 {
						if n := handshakeGoroutines() - base; n != 0 {
							return fmt.Errorf("%d handshake goroutines before the ClientHello was complete", n)
						}
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			return nil
		}
		if err := c.Handshake(); err != nil {
			t.Fatalf("handshake after a slow ClientHello: %v", err)
		}
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("after the slow hello: %v", err)
		}
	})
	t.Run("stalled-half-way", func(t *testing.T) {
		started := ts.Stats().Started
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		hello := clientHello(t)
		nc.Write(hello[:len(hello)/2])
		begin := time.Now()
		nc.SetReadDeadline(time.Now().Add(15 * time.Second))
		n, err := nc.Read(make([]byte, 64))
		if err == nil || time.Since(begin) < time.Second {
			t.Fatalf("read %d bytes, %v after %v: want the connection closed at the 2s header timeout", n, err, time.Since(begin))
		}
		if ts.Stats().Started != started || handshakeGoroutines() != base {
			t.Fatalf("a half ClientHello got a handshake goroutine")
		}
	})
}

// recordingConn runs its first Write through trickle.
type recordingConn struct {
	net.Conn
	trickle func([]byte) error
	wrote   bool
}

func (c *recordingConn) Write(p []byte) (int, error) {
	if !c.wrote && c.trickle != nil {
		c.wrote = true
		if err := c.trickle(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}
