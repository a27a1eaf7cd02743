package loop_test

// Issue 13, "Done means": the upgrade path in the tunnel plane, through real loopback sockets.
// Frames sent before the 101 (delivered after it, in order; never to a backend that refuses), the
// plane's own answers (dial refused 502, dial or response timeout 504, a bad answer 502), a client
// that leaves while its handshake is pending, and a reconnect storm of thousands of clients from
// 16 source addresses with the proxy's OS threads counted.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
)

// frames returns n bytes of masked client frames (binary, 16 KiB payloads, the last one shorter),
// as a client would send them.
func clientFrames(seed uint64, n int) []byte {
	var out []byte
	payload := genBytes(seed, n)
	for len(out) < n {
		k := min(16<<10, len(payload))
		out = appendFrame(out, true, opBinary, payload[:k], true)
		payload = payload[k:]
		if len(payload) == 0 {
			payload = genBytes(seed+1, n)
		}
	}
	return out
}

// TestE2EUpgradeFramesBeforeSwitch: a client sends its upgrade request and, in the same write and
// right after it, 1 MiB of frames while the backend holds its 101 back. wsgate reads none of them
// (the backend sees nothing but the head until its 101 is out), then every byte arrives at the
// backend after the 101, in order.
func TestE2EUpgradeFramesBeforeSwitch(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		frames := clientFrames(7, 1<<20)
		early := make(chan int, 1)
		got := make(chan [32]byte, 1)
		be := newRawBackend(t, func(p *rawPeer) {
			time.Sleep(300 * time.Millisecond)
			p.Conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			early <- p.R.Buffered() + readSome(p.R)
			p.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(p.Conn, response101(p.Req.Header.Get("Sec-WebSocket-Key"))); err != nil {
				return
			}
			h := sha256.New()
			if n, err := io.CopyN(h, p.R, int64(len(frames))); err != nil {
				t.Errorf("backend read %d of %d frame bytes: %v", n, len(frames), err)
			}
			var s [32]byte
			h.Sum(s[:0])
			got <- s
		})
		s, addr := startProxy(t, be.Addr, opt)
		c := dialRaw(t, addr)
		key := wsKey()
		head := upgradeRequest(addr, "/tail", key, "")
		// One write: the head and the first frames arrive together (gnet reads some of them with
		// the head: they travel as pending bytes), the rest wait in the kernel.
		go c.Write(append([]byte(head), frames...))
		if n := <-early; n != 0 {
			t.Fatalf("the backend got %d client bytes before its 101", n)
		}
		resp := c.response(t, "GET")
		if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
			t.Fatalf("upgrade: %d accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
		}
		select {
		case sum := <-got:
			if sum != sha256.Sum256(frames) {
				t.Fatal("the frames sent before the 101 reached the backend changed or out of order")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the backend never got the frames")
		}
		if u := s.UpgradeStats(); u.OK != 1 {
			t.Errorf("upgrade stats %+v", u)
		}
	})
}

// readSome reads what arrives within the conn's current read deadline.
func readSome(r io.Reader) int {
	n := 0
	buf := make([]byte, 64<<10)
	for {
		k, err := r.Read(buf)
		n += k
		if err != nil {
			return n
		}
	}
}

// TestE2EUpgradeRefusedFramesNeverReachBackend: the same 1 MiB behind the upgrade request, and the
// backend refuses (403 with a body): the client gets the answer, its body and a clean close, and
// not one of its bytes past the head ever reaches the backend.
func TestE2EUpgradeRefusedFramesNeverReachBackend(t *testing.T) {
	t.Parallel()
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		frames := clientFrames(9, 1<<20)
		leaked := make(chan int, 1)
		be := newRawBackend(t, func(p *rawPeer) {
			time.Sleep(200 * time.Millisecond)
			io.WriteString(p.Conn, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\norigin refused")
			p.Conn.SetReadDeadline(time.Now().Add(time.Second))
			leaked <- p.R.Buffered() + readSome(p.R)
		})
		s, addr := startProxy(t, be.Addr, opt)
		c := dialRaw(t, addr)
		go c.Write(append([]byte(upgradeRequest(addr, "/tail", wsKey(), "")), frames...))
		resp, body := c.fullResponse(t, "GET")
		if resp.StatusCode != 403 || string(body) != "origin refused" || !resp.Close {
			t.Fatalf("status %d close %v body %q, want 403, close, the backend's body", resp.StatusCode, resp.Close, body)
		}
		if rest := c.expectClosed(t, 5*time.Second); len(rest) > 0 {
			t.Fatalf("bytes after the refusal: %q", trunc(rest))
		}
		if n := <-leaked; n != 0 {
			t.Fatalf("%d client bytes reached the backend that refused the upgrade", n)
		}
		if u := s.UpgradeStats(); u.Refused != 1 || u.OK != 0 {
			t.Errorf("upgrade stats %+v", u)
		}
	})
}

// TestE2EUpgradeRefusalChunked: a refusal with a chunked body is relayed whole, framed, then the
// connection closes.
func TestE2EUpgradeRefusalChunked(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(p *rawPeer) {
		io.WriteString(p.Conn, "HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: chunked\r\nSec-WebSocket-Version: 13\r\n\r\n5\r\nhello\r\n")
		time.Sleep(50 * time.Millisecond)
		io.WriteString(p.Conn, "6\r\n world\r\n0\r\n\r\n")
		<-p.Done
	})
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.send(t, upgradeRequest(addr, "/ws", wsKey(), ""))
	resp, body := c.fullResponse(t, "GET")
	if resp.StatusCode != 426 || string(body) != "hello world" || !resp.Close || resp.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Fatalf("status %d close %v body %q header %v", resp.StatusCode, resp.Close, body, resp.Header)
	}
	c.expectClosed(t, 5*time.Second)
}

// TestE2EUpgradeBackendFailures: what the plane answers when it ends the handshake itself.
func TestE2EUpgradeBackendFailures(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, addr string, want int) time.Duration {
		t.Helper()
		c := dialRaw(t, addr)
		start := time.Now()
		c.send(t, upgradeRequest(addr, "/ws", wsKey(), "")+"early frame bytes")
		resp, _ := c.fullResponse(t, "GET")
		if resp.StatusCode != want || !resp.Close {
			t.Fatalf("status %d close %v, want %d and close", resp.StatusCode, resp.Close, want)
		}
		c.expectClosed(t, 5*time.Second)
		return time.Since(start)
	}
	t.Run("dial-refused-502", func(t *testing.T) {
		s, addr := startProxy(t, freeAddr(t))
		check(t, addr, 502)
		if u := s.UpgradeStats(); u.UpstreamError != 1 {
			t.Errorf("upgrade stats %+v", u)
		}
	})
	t.Run("dial-timeout-504", func(t *testing.T) {
		s, addr := startProxy(t, fullBacklog(t), func(c *loop.Config) { c.DialTimeout = 300 * time.Millisecond })
		if d := check(t, addr, 504); d < 300*time.Millisecond {
			t.Errorf("504 after %v, before the dial timeout", d)
		}
		if u := s.UpgradeStats(); u.UpstreamError != 1 {
			t.Errorf("upgrade stats %+v", u)
		}
	})
	t.Run("response-timeout-504", func(t *testing.T) {
		be := newRawBackend(t, func(p *rawPeer) { <-p.Done })
		_, addr := startProxy(t, be.Addr, func(c *loop.Config) { c.ResponseTimeout = 300 * time.Millisecond })
		if d := check(t, addr, 504); d < 300*time.Millisecond {
			t.Errorf("504 after %v, before the response timeout", d)
		}
	})
	t.Run("backend-closes-502", func(t *testing.T) {
		be := newRawBackend(t, func(p *rawPeer) { io.WriteString(p.Conn, "HTTP/1.1 101 Switch") })
		_, addr := startProxy(t, be.Addr)
		check(t, addr, 502)
	})
	t.Run("garbage-502", func(t *testing.T) {
		be := newRawBackend(t, func(p *rawPeer) {
			io.WriteString(p.Conn, "SSH-2.0-OpenSSH_9.2\r\n\r\n")
			<-p.Done
		})
		s, addr := startProxy(t, be.Addr)
		check(t, addr, 502)
		if u := s.UpgradeStats(); u.UpstreamError != 1 {
			t.Errorf("upgrade stats %+v", u)
		}
	})
	t.Run("bad-accept-502", func(t *testing.T) {
		be := newRawBackend(t, func(p *rawPeer) {
			io.WriteString(p.Conn, response101("not the client's key"))
			<-p.Done
		})
		s, addr := startProxy(t, be.Addr)
		check(t, addr, 502)
		if u := s.UpgradeStats(); u.BadAccept != 1 {
			t.Errorf("upgrade stats %+v", u)
		}
	})
}

// fullBacklog returns the address of a listener whose accept queue is full and never drained: a
// connect to it gets no answer (the SYN is dropped), so a dial can only time out.
func fullBacklog(t testing.TB) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the backlog never filled")
	return ""
}

// TestE2EUpgradeClientLeaves: clients that close while their handshake is pending (the backend
// never answers) are noticed at once: their backend connections close, and every fd wsgate held
// for them is released.
func TestE2EUpgradeClientLeaves(t *testing.T) {
	forEachSplice(t, func(t *testing.T, opt func(*loop.Config)) {
		var open atomic.Int64
		closed := make(chan struct{}, 16)
		be := newRawBackend(t, func(p *rawPeer) {
			open.Add(1)
			p.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			readSome(p.R) // until wsgate closes the backend conn
			open.Add(-1)
			closed <- struct{}{}
		})
		fd0, pipes0 := countFDs(t)
		s, addr := startProxy(t, be.Addr, opt)
		fd1, _ := countFDs(t)
		const n = 10
		var cs []net.Conn
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			io.WriteString(c, upgradeRequest(addr, "/ws", wsKey(), ""))
			cs = append(cs, c)
		}
		if !waitFor(5*time.Second, func() bool { return open.Load() == n }) {
			t.Fatalf("%d of %d upgrades reached the backend", open.Load(), n)
		}
		// Now the clients go (half of them with an RST): the pending handshakes must end and
		// take their backend conns along, long before any timeout.
		for i, c := range cs {
			if i%2 == 1 {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
		}
		for i := 0; i < n; i++ {
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatalf("%d of %d backend conns closed after their clients left", i, n)
			}
		}
		if !waitFor(5*time.Second, func() bool { f, _ := countFDs(t); return f <= fd1 }) {
			f, _ := countFDs(t)
			t.Fatalf("fds: %d with the proxy idle, %d after the clients left", fd1, f)
		}
		if u := s.UpgradeStats(); u.ClientGone != n {
			t.Errorf("upgrade stats %+v, want %d client_gone", u, n)
		}
		stopProxy(t, s)
		if !waitFor(5*time.Second, func() bool { f, p := countFDs(t); return f <= fd0 && p <= pipes0 }) {
			f, p := countFDs(t)
			t.Fatalf("fds %d (pipes %d) before the proxy, %d (%d) after it stopped", fd0, pipes0, f, p)
		}
	})
}

// ---------------------------------------------------------------------------------------------
// the reconnect storm

const stormChildEnv = "WSGATE_E2E_STORM_CHILD"

func init() {
	// The child side of TestE2EStorm: runs instead of the tests when re-executed.
	if os.Getenv(stormChildEnv) == "1" {
		if err := stormChild(); err != nil {
			fmt.Printf("ERROR %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// stormChild is a WebSocket echo backend plus n clients from 16 source addresses (127.0.0.2-17)
// that all start their upgrades through wsgate at once (par in flight). Protocol on stdio: child
// prints "BACKEND addr"; reads "PROXY addr"; prints "UP n failed first-error" when every upgrade
// is decided; reads "ECHO" and sends one frame through every tunnel, checking its echo; prints
// "ECHOED n first-error"; closes everything when stdin closes.
func stormChild() error {
	n, _ := strconv.Atoi(os.Getenv("WSGATE_E2E_STORM_N"))
	const par = 1000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			go func() {
				br := bufio.NewReaderSize(c, 1024)
				c.SetDeadline(time.Now().Add(60 * time.Second))
				req, err := http.ReadRequest(br)
				if err != nil {
					c.Close()
					return
				}
				io.WriteString(c, response101(req.Header.Get("Sec-WebSocket-Key")))
				c.SetDeadline(time.Time{})
				for { // echo frames until the conn ends
					f, err := readFrame(br)
					if err != nil {
						return
					}
					if _, err := c.Write(appendFrame(nil, true, f.op, f.payload, false)); err != nil {
						return
					}
				}
			}()
		}
	}()
	fmt.Printf("BACKEND %s\n", ln.Addr())
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadString('\n')
	if err != nil {
		return err
	}
	proxy := strings.TrimSpace(strings.TrimPrefix(line, "PROXY "))
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	clients := make([]client, n)
	var next, failed atomic.Int64
	var first atomic.Pointer[string]
	fail := func(err error) {
		failed.Add(1)
		s := err.Error()
		first.CompareAndSwap(nil, &s)
	}
	var wg sync.WaitGroup
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				d := net.Dialer{Timeout: 20 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%16))}}
				c, err := d.Dial("tcp", proxy)
				if err != nil {
					fail(fmt.Errorf("client %d: %w", i, err))
					continue
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				key := wsKey()
				io.WriteString(c, upgradeRequest(proxy, "/tail", key, ""))
				br := bufio.NewReaderSize(c, 512)
				resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
				if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
					st := 0
					if resp != nil {
						st = resp.StatusCode
					}
					fail(fmt.Errorf("client %d: upgrade: status %d, %v", i, st, err))
					c.Close()
					continue
				}
				c.SetDeadline(time.Time{})
				clients[i] = client{c, br}
			}
		}()
	}
	wg.Wait()
	firstErr := ""
	if p := first.Load(); p != nil {
		firstErr = *p
	}
	fmt.Printf("UP %d %d %q\n", int64(n)-failed.Load(), failed.Load(), firstErr)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	var echoed atomic.Int64
	next.Store(0)
	first.Store(nil)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				cl := clients[i]
				if cl.c == nil {
					continue
				}
				msg := []byte(fmt.Sprintf("tunnel %d says hello", i))
				cl.c.SetDeadline(time.Now().Add(30 * time.Second))
				_, err := cl.c.Write(appendFrame(nil, true, opText, msg, true))
				var f frame
				if err == nil {
					f, err = readFrame(cl.br)
				}
				if err != nil || !bytes.Equal(f.payload, msg) {
					fail(fmt.Errorf("tunnel %d: echo %q, %v", i, f.payload, err))
					continue
				}
				echoed.Add(1)
			}
		}()
	}
	wg.Wait()
	firstErr = ""
	if p := first.Load(); p != nil {
		firstErr = *p
	}
	fmt.Printf("ECHOED %d %q\n", echoed.Load(), firstErr)
	io.Copy(io.Discard, in) // until the parent closes our stdin
	for _, cl := range clients {
		if cl.c != nil {
			cl.c.Close()
		}
	}
	mu.Lock()
	for _, c := range held {
		c.Close()
	}
	mu.Unlock()
	return nil
}

// osThreads is the process's OS thread count now.
func osThreads(t testing.TB) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}

// TestE2EStorm: 7,000 clients (2,000 under -race) from 16 source addresses start their upgrades
// through wsgate at once, 1,000 in flight, from a child process that also runs the backend (so
// this process holds only wsgate's two fds per tunnel). Every tunnel comes up and echoes once, and
// wsgate's OS threads, counted before, during (sampled) and after the storm, do not grow with the
// dial count (the plane dials from its own loops: no goroutine and no thread per dial).
func TestE2EStorm(t *testing.T) {
	n := int(pick(2000, 7000, 8000))
	raiseNofile(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), stormChildEnv+"=1", "WSGATE_E2E_STORM_N="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	out := bufio.NewReader(stdout)
	readLine := func(prefix string, within time.Duration) string {
		t.Helper()
		ch := make(chan string, 1)
		go func() {
			l, _ := out.ReadString('\n')
			ch <- l
		}()
		select {
		case l := <-ch:
			if !strings.HasPrefix(l, prefix) {
				t.Fatalf("child: %q, want %s...", l, prefix)
			}
			return strings.TrimSpace(strings.TrimPrefix(l, prefix))
		case <-time.After(within):
			t.Fatalf("child said nothing within %v (waiting for %s)", within, prefix)
		}
		return ""
	}
	backend := readLine("BACKEND ", 30*time.Second)
	s, addr := startProxy(t, backend, func(c *loop.Config) { c.MaxConns = n + 100 })
	// Warm the proxy the way any running server is warm (its loops and the runtime's threads
	// exist), then count.
	warm := dialRaw(t, addr)
	warm.send(t, "GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
	warm.response(t, "GET")
	warm.Close()
	time.Sleep(200 * time.Millisecond)
	before := osThreads(t)
	stop := make(chan struct{})
	peak := make(chan int, 1)
	go func() {
		m := before
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				peak <- max(m, osThreads(t))
				return
			case <-tk.C:
				m = max(m, osThreads(t))
			}
		}
	}()
	start := time.Now()
	fmt.Fprintf(stdin, "PROXY %s\n", addr)
	up := readLine("UP ", 3*time.Minute)
	took := time.Since(start)
	close(stop)
	during := <-peak
	var ok, failed int
	var first string
	fmt.Sscanf(up, "%d %d %q", &ok, &failed, &first)
	if ok != n || failed != 0 {
		t.Fatalf("%d of %d tunnels up, %d failed; first: %s", ok, n, failed, first)
	}
	if st := s.Stats(); st.Tunnels != int64(n) {
		t.Errorf("Stats().Tunnels = %d after the storm, want %d", st.Tunnels, n)
	}
	time.Sleep(500 * time.Millisecond)
	after := osThreads(t)
	fmt.Fprintf(stdin, "ECHO\n")
	echo := readLine("ECHOED ", 3*time.Minute)
	var echoed int
	fmt.Sscanf(echo, "%d %q", &echoed, &first)
	if echoed != n {
		t.Fatalf("%d of %d tunnels echoed; first failure: %s", echoed, n, first)
	}
	t.Logf("%d upgrades from 16 source addresses in %v (%.0f/s); wsgate's OS threads %d before, at most %d during, %d after; upgrade stats %+v",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), before, during, after, s.UpgradeStats())
	// The runtime may add a thread or two for its own reasons (GC workers, a template thread);
	// a thread per dial, or per blocked dial, would be dozens to thousands.
	if during > before+4 || after > before+4 {
		t.Fatalf("OS threads grew with the storm: %d before, %d during, %d after", before, during, after)
	}
	if u := s.UpgradeStats(); u.OK != int64(n) {
		t.Errorf("upgrade stats %+v, want %d ok", u, n)
	}
}

// BenchmarkE2EStormIdleMemory is BenchmarkE2EIdleTunnelMemory after a storm: 6,000 tunnels whose
// upgrades start at once (1,000 in flight, 16 source addresses, the storm child), then wsgate's
// growth per idle tunnel after a GC and FreeOSMemory (what cmd/wsgate's -memory-return does once
// the heap is quiet): VmRSS and heap in use, plus heap allocated (live objects) to show what of
// the heap in use is fragmentation the storm left behind. Run with -benchtime=1x.
func BenchmarkE2EStormIdleMemory(b *testing.B) {
	n := 6000
	if testing.Short() {
		n = 2000
	}
	for i := 0; i < b.N; i++ {
		raiseNofile(b)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), stormChildEnv+"=1", "WSGATE_E2E_STORM_N="+strconv.Itoa(n))
		cmd.Stderr = os.Stderr
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		out := bufio.NewReader(stdout)
		line := func(prefix string) string {
			l, err := out.ReadString('\n')
			if err != nil || !strings.HasPrefix(l, prefix) {
				b.Fatalf("child: %q %v, want %s", l, err, prefix)
			}
			return strings.TrimSpace(strings.TrimPrefix(l, prefix))
		}
		backend := line("BACKEND ")
		s, addr := startProxy(b, backend, func(c *loop.Config) { c.MaxConns = n + 100 })
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		debug.FreeOSMemory()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		r0 := vmRSS()
		fmt.Fprintf(stdin, "PROXY %s\n", addr)
		var ok int
		fmt.Sscanf(line("UP "), "%d", &ok)
		if ok != n {
			b.Fatalf("%d of %d tunnels up", ok, n)
		}
		time.Sleep(500 * time.Millisecond)
		runtime.GC()
		debug.FreeOSMemory()
		runtime.ReadMemStats(&m1)
		r1 := vmRSS()
		per := func(a, z uint64) float64 { return (float64(a) - float64(z)) / float64(n) }
		b.ReportMetric(per(r1, r0), "rss-B/tunnel")
		b.ReportMetric(per(m1.HeapInuse, m0.HeapInuse), "heap-B/tunnel")
		b.ReportMetric(per(m1.HeapAlloc, m0.HeapAlloc), "live-B/tunnel")
		stdin.Close()
		cmd.Wait()
		stopProxy(b, s)
	}
}

// TestE2EUpgradeBackendName: a member written as a host name (localhost:PORT) is resolved for the
// tunnel plane, which dials addresses: the upgrade is tunnelled and carries bytes.
func TestE2EUpgradeBackendName(t *testing.T) {
	t.Parallel()
	be, peers := rawTunnelBackend(t)
	_, port, _ := net.SplitHostPort(be.Addr)
	_, addr := startProxy(t, net.JoinHostPort("localhost", port))
	e := openRawTunnel(t, addr, peers)
	e.CT.Write([]byte("through a name"))
	got := make([]byte, len("through a name"))
	e.B.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(e.B.R, got); err != nil || string(got) != "through a name" {
		t.Fatalf("backend got %q, %v", got, err)
	}
}
