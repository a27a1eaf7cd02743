package tlsterm

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/tlsrecord"
)

// runGoroutines counts the driver's handshake goroutines.
func runGoroutines() int {
	buf := make([]byte, 4<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "tlsterm.(*Handshake).run(")
}

// captureHello returns the first flight (one ClientHello record) of a fresh
// crypto/tls client: a distinct client random every time.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		tls.Client(a, cfg).Handshake()
		a.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	a.Close()
	return append(hdr, body...)
}

// rawClient is a crypto/tls client whose socket the test can also write to
// directly, with the client's key log.
type rawClient struct {
	raw net.Conn
	c   *tls.Conn
	kl  keyLogBuf
	w   tlsrecord.State // the client's write key, continuing crypto/tls's sequence
}

func dialRaw(t *testing.T, addr string, firstMsg string) *rawClient {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	rc := &rawClient{raw: raw}
	cfg := clientConfig(t)
	cfg.KeyLogWriter = &rc.kl
	rc.c = tls.Client(raw, cfg)
	io.WriteString(rc.c, firstMsg)
	got := make([]byte, len(firstMsg))
	if _, err := io.ReadFull(rc.c, got); err != nil || string(got) != firstMsg {
		t.Fatalf("first echo %q %v", got, err)
	}
	rc.w.Init(rc.c.ConnectionState().CipherSuite, secretFromLog(t, rc.kl.b, "CLIENT_TRAFFIC_SECRET_0"))
	rc.w.SetSeq(1)
	return rc
}

// A record with a bad tag: the server sends bad_record_mac and closes;
// nothing of that record is delivered.
func TestBadTagAlertAndClose(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	rc := dialRaw(t, tl.addr(), "one")
	rec, _ := rc.w.AppendRecord(nil, tlsrecord.ApplicationData, []byte("forged"))
	rec[len(rec)-1] ^= 1
	rc.raw.Write(rec)
	_, err := rc.c.Read(make([]byte, 10))
	if err == nil || !strings.Contains(err.Error(), "bad record MAC") {
		t.Fatalf("client read after a forged record: %v (want the server's bad_record_mac alert)", err)
	}
	rc.raw.Close()
	r := tl.next(t)
	if !errors.Is(r.err, tlsrecord.ErrBadRecordMAC) || string(r.received) != "one" {
		t.Fatalf("server: %v, received %q", r.err, r.received)
	}
}

// A record cut short by the end of the stream is not delivered and is
// reported as a truncation, not as a clean end.
func TestTruncatedRecord(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	rc := dialRaw(t, tl.addr(), "one")
	rec, _ := rc.w.AppendRecord(nil, tlsrecord.ApplicationData, []byte("two-never-complete"))
	rc.raw.Write(rec[:12])
	rc.raw.(*net.TCPConn).CloseWrite()
	r := tl.next(t)
	rc.raw.Close()
	if r.err == nil || !r.partialAtEOF || string(r.received) != "one" {
		t.Fatalf("server: %v partial %v received %q", r.err, r.partialAtEOF, r.received)
	}
}

func TestPlainHTTPOnTLSPort(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	c, _ := net.Dial("tcp", tl.addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	r := tl.next(t)
	c.Close()
	if !errors.Is(r.err, ErrPlainHTTP) || !strings.Contains(r.err.Error(), "plain HTTP request on the TLS port") {
		t.Fatalf("server: %v", r.err)
	}
	if st := srv.Stats(); st.PlainHTTP != 1 || st.Started != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestClientHelloLimits(t *testing.T) {
	srv := newTestServer(t, Config{})
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"announced 20 KiB", []byte{22, 3, 1, 0x40, 0, 1, 0, 0x50, 0}, ErrHelloTooLarge},
		{"not TLS", []byte{0x80, 1, 2}, ErrNotTLS},
		{"ServerHello first", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, ErrBadHello},
		{"record of 0 bytes", []byte{22, 3, 3, 0, 0}, ErrBadHello},
		{"alert record", []byte{21, 3, 3, 0, 2, 2, 40}, ErrNotTLS},
		{"SSLv2-style", []byte{22, 2, 0, 0, 4}, ErrBadHello},
		{"truncated body", []byte{22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0}, ErrBadHello},
	}
	for _, tc := range cases {
		h := srv.NewHandshake(func() {})
		_, st, err := h.Feed(tc.in)
		if st != StateFailed || !errors.Is(err, tc.want) {
			t.Errorf("%s: state %v err %v, want %v", tc.name, st, err, tc.want)
		}
	}
	// 16 KiB of records that never finish a ClientHello are refused.
	h := srv.NewHandshake(func() {})
	rec := append([]byte{22, 3, 1, 0x3f, 0xf0, 1, 0, 0x3f, 0xe0}, make([]byte, 0x3fe0)...) // 16,356-byte hello: fits
	_, st, err := h.Feed(rec[:9+1000])
	if st != StateNeedHello || err != nil {
		t.Fatalf("start of a 16 KiB hello: %v %v", st, err)
	}
	if runGoroutines() != 0 || srv.Stats().Started != 0 {
		t.Fatal("a goroutine before the ClientHello is complete")
	}
	h.Close()
}

// A ClientHello split into many records (legal; crypto/tls reassembles it)
// is buffered, parsed, and handed to crypto/tls one record at a time.
func TestFragmentedClientHello(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	raw, err := net.Dial("tcp", tl.addr())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	c := tls.Client(&fragmentingConn{Conn: raw, size: 100}, clientConfig(t))
	io.WriteString(c, "frag")
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "frag" {
		t.Fatalf("echo %q %v", got, err)
	}
	c.CloseWrite()
	io.ReadAll(c)
	raw.Close()
	r := tl.next(t)
	if r.err != nil || r.info.Records < 10 {
		t.Fatalf("server: %v, %d client records", r.err, r.info.Records)
	}
}

// fragmentingConn re-frames the client's first record (the ClientHello)
// into records of size bytes of handshake data.
type fragmentingConn struct {
	net.Conn
	size int
	done bool
}

func (f *fragmentingConn) Write(b []byte) (int, error) {
	if f.done || len(b) < 5 || b[0] != 22 {
		return f.Conn.Write(b)
	}
	f.done = true
	n := 5 + (int(b[3])<<8 | int(b[4]))
	var out []byte
	for body := b[5:n]; len(body) > 0; {
		k := min(f.size, len(body))
		out = append(out, 22, b[1], b[2], byte(k>>8), byte(k))
		out = append(out, body[:k]...)
		body = body[k:]
	}
	out = append(out, b[n:]...)
	if _, err := f.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// A slow ClientHello gets no goroutine until its last byte is in, over a
// real socket.
func TestSlowClientHelloNoGoroutine(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	hello := captureHello(t, clientConfig(t))
	c, err := net.Dial("tcp", tl.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	for i := 0; i < len(hello)-1; i += 16 {
		c.Write(hello[i:min(i+16, len(hello)-1)])
		time.Sleep(time.Millisecond)
		if n := runGoroutines(); n != 0 {
			t.Fatalf("%d handshake goroutines after %d of %d ClientHello bytes", n, i+16, len(hello))
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n, st := runGoroutines(), srv.Stats(); n != 0 || st.Started != 0 {
		t.Fatalf("%d goroutines, stats %+v before the last byte", n, st)
	}
	c.Write(hello[len(hello)-1:])
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().Started != 1 {
		if time.Now().After(deadline) {
			t.Fatal("handshake never started after the last byte")
		}
		time.Sleep(time.Millisecond)
	}
	c.Close()
	tl.next(t)
}

// Byte by byte at the driver level: NeedHello until the last byte.
func TestClientHelloByteByByte(t *testing.T) {
	srv := newTestServer(t, Config{})
	hello := captureHello(t, clientConfig(t))
	h := srv.NewHandshake(func() {})
	defer h.Close()
	for i := range hello {
		_, st, err := h.Feed(hello[i : i+1])
		want := StateNeedHello
		if i == len(hello)-1 {
			want = StateHandshaking
		}
		if err != nil || st != want {
			t.Fatalf("byte %d of %d: %v %v", i, len(hello), st, err)
		}
		if i%64 == 0 && i < len(hello)-1 && runGoroutines() != 0 {
			t.Fatal("goroutine before the ClientHello is complete")
		}
	}
	if h.Hello().ServerName != "localhost" || !strings.Contains(h.Hello().Versions, "0304") || h.Hello().ALPN != "http/1.1" {
		t.Fatalf("hello %+v", h.Hello())
	}
}

// A flood of ClientHellos from clients that never finish: the number of
// handshake goroutines never exceeds MaxHandshakes, the rest wait with their
// ClientHello buffered, and closing connections frees slots for the waiters.
func TestClientHelloFloodBound(t *testing.T) {
	const max, conns = 3, 40
	srv := newTestServer(t, Config{MaxHandshakes: max})
	tl := listen(t, srv, harnessOpts{})
	cfg := clientConfig(t)
	var cs []net.Conn
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", tl.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(captureHello(t, cfg))
		cs = append(cs, c)
	}
	waitStats := func(cond func(Stats) bool, what string) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := srv.Stats()
			if n := runGoroutines(); n > max || st.Running > max {
				t.Fatalf("%d handshake goroutines, stats %+v (bound %d)", n, st, max)
			}
			if cond(st) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: stats %+v", what, st)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitStats(func(st Stats) bool { return st.Running == max && st.Waiting == conns-max }, "all ClientHellos in")
	if n := runGoroutines(); n != max {
		t.Fatalf("%d handshake goroutines, want %d", n, max)
	}
	for i, c := range cs {
		c.Close()
		left := conns - i - 1
		waitStats(func(st Stats) bool { return st.Running+st.Waiting == left && st.Running == min(max, left) }, fmt.Sprintf("after closing %d", i+1))
	}
	for i := 0; i < conns; i++ {
		tl.next(t)
	}
	// Connections closed while waiting never started.
	if st := srv.Stats(); st.PeakRunning != max || st.Started < max || st.Started > conns || st.Failed != conns {
		t.Fatalf("stats %+v", st)
	}
	if n := runGoroutines(); n != 0 {
		t.Fatalf("%d handshake goroutines left", n)
	}
}

// Many real clients at once through a bound of 2: all complete.
func TestConcurrentHandshakesThroughSmallBound(t *testing.T) {
	srv := newTestServer(t, Config{MaxHandshakes: 2})
	tl := listen(t, srv, harnessOpts{})
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tls.Dial("tcp", tl.addr(), clientConfig(t))
			if err != nil {
				failed.Add(1)
				return
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(c, "x")
			io.ReadFull(c, make([]byte, 1))
			c.CloseWrite()
			io.ReadAll(c)
			c.Close()
		}()
	}
	wg.Wait()
	for i := 0; i < 30; i++ {
		if r := tl.next(t); r.err != nil {
			t.Errorf("server: %v", r.err)
		}
	}
	if st := srv.Stats(); failed.Load() != 0 || st.PeakRunning > 2 || st.Established != 30 {
		t.Fatalf("%d failed, stats %+v", failed.Load(), st)
	}
}

// The client's first request arrives in the same read as its Finished: the
// driver hands it over untouched (crypto/tls read nothing past the Finished)
// and the session opens it at read sequence 0.
func TestDataBehindFinishedSameRead(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	raw, err := net.Dial("tcp", tl.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	cc := &coalescingConn{Conn: raw}
	c := tls.Client(cc, clientConfig(t))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	cc.release = true
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n") // goes out with the held Finished
	got := make([]byte, 18)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	io.ReadAll(c)
	raw.Close()
	r := tl.next(t)
	if r.err != nil || r.rest == 0 || string(r.received) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("server: %v, %d bytes behind Finished, received %q", r.err, r.rest, r.received)
	}
	// ClientHello, change_cipher_spec, Finished: nothing more reached crypto/tls.
	if r.info.Records != 3 {
		t.Fatalf("crypto/tls consumed %d client records, want 3", r.info.Records)
	}
}

// coalescingConn holds the client's writes after its first one (the second
// flight: change_cipher_spec + Finished) until the next Write after release,
// then sends everything in one write.
type coalescingConn struct {
	net.Conn
	writes  int
	held    []byte
	release bool
}

func (c *coalescingConn) Write(b []byte) (int, error) {
	c.writes++
	if c.writes == 1 {
		return c.Conn.Write(b)
	}
	c.held = append(c.held, b...)
	if c.release {
		_, err := c.Conn.Write(c.held)
		c.held = nil
		return len(b), err
	}
	return len(b), nil
}

// Two handshakes with the same client random at once (a replayed
// ClientHello): the second is refused, the first is unaffected.
func TestReplayedClientHelloRefused(t *testing.T) {
	srv := newTestServer(t, Config{})
	hello := captureHello(t, clientConfig(t))
	h1 := srv.NewHandshake(func() {})
	defer h1.Close()
	if _, st, err := h1.Feed(hello); st != StateHandshaking || err != nil {
		t.Fatalf("first: %v %v", st, err)
	}
	h2 := srv.NewHandshake(func() {})
	if _, st, err := h2.Feed(hello); st != StateFailed || err == nil || !strings.Contains(err.Error(), "same client random") {
		t.Fatalf("replay: %v %v", st, err)
	}
}

// A client that keeps sending during the handshake is cut off at MaxPending.
func TestMaxPendingDuringHandshake(t *testing.T) {
	srv := newTestServer(t, Config{MaxPending: 4096})
	h := srv.NewHandshake(func() {})
	defer h.Close()
	if _, st, _ := h.Feed(captureHello(t, clientConfig(t))); st != StateHandshaking {
		t.Fatal(st)
	}
	junk := make([]byte, 1000)
	var st State
	var err error
	for i := 0; i < 10 && st != StateFailed; i++ {
		_, st, err = h.Feed(append([]byte{23, 3, 3, 0x03, 0xe3}, junk[:995]...))
	}
	if st != StateFailed || !strings.Contains(fmt.Sprint(err), "4096 bytes") {
		t.Fatalf("%v %v", st, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runGoroutines() != 0 || srv.Stats().Running != 0 {
		if time.Now().After(deadline) {
			t.Fatal("handshake goroutine not released")
		}
		time.Sleep(time.Millisecond)
	}
}

// The client streams small records right behind its Finished while the
// handshake goroutine is finishing: every byte fed meanwhile must reach the
// session in order (regression: the bytes behind the Finished were once
// sliced out of the pipe by the goroutine while the loop kept feeding it).
func TestStreamBehindFinished(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{noEcho: true})
	for i := 0; i < 20; i++ {
		c, err := tls.Dial("tcp", tl.addr(), clientConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		var want []byte
		for j := 0; j < 200; j++ {
			m := fmt.Sprintf("<%d.%d>", i, j)
			want = append(want, m...)
			io.WriteString(c, m)
		}
		c.CloseWrite()
		io.ReadAll(c)
		c.Close()
		r := tl.next(t)
		if r.err != nil || string(r.received) != string(want) {
			t.Fatalf("conn %d: %v, received %d of %d bytes", i, r.err, len(r.received), len(want))
		}
	}
}
