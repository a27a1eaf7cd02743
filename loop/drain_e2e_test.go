package loop_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/route"
)

// drainBackend serves /download (size bytes of genBytes(7), in 64 KiB pieces every step),
// /upload (answers the SHA-256 of the body it read) and /small ("ok").
func drainBackend(t *testing.T, size int, step time.Duration) *backend {
	body := genBytes(7, size)
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/download":
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			for off := 0; off < len(body); off += 64 << 10 {
				if _, err := w.Write(body[off:min(off+64<<10, len(body))]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(step)
			}
		case "/slow":
			time.Sleep(time.Second)
			io.WriteString(w, "slow")
		case "/upload":
			h := sha256.New()
			if _, err := io.Copy(h, r.Body); err != nil {
				w.WriteHeader(500)
				return
			}
			fmt.Fprintf(w, "%x", h.Sum(nil))
		default:
			io.WriteString(w, "ok")
		}
	}))
}

// The drain's timeline through real sockets: during Delay everything is served as usual; then the
// listeners close (a new connection is refused), an idle keep-alive conn is closed, a keep-alive
// conn's next response says Connection: close and the conn ends; a slow download and a slow upload
// started before the drain complete with every byte; the tunnels keep relaying until Timeout, then
// are closed spread over Spread; Drain returns as soon as nothing is left.
func TestDrainTimeline(t *testing.T) {
	const (
		size   = 1 << 20
		step   = 100 * time.Millisecond // 16 pieces: the transfers take about 1.6 s
		nTun   = 10
		delay  = 400 * time.Millisecond
		tmo    = 3 * time.Second
		spread = 2 * time.Second
	)
	be := drainBackend(t, size, step)
	tb, peers := rawTunnelBackend(t)
	srv, addr, _ := startRouted(t, []route.Spec{mustSpec(t, "/="+be.Addr), mustSpec(t, "/tunnel="+tb.Addr)})

	tunnels := make([]tunnelEnds, nTun)
	for i := range tunnels {
		tunnels[i] = openRawTunnel(t, addr, peers)
	}
	idle := dialRaw(t, addr)
	if code, body := idle.get(t, "x", "/small"); code != 200 || body != "ok" {
		t.Fatalf("idle conn: %d %q", code, body)
	}
	ka := dialRaw(t, addr)
	if code, body := ka.get(t, "x", "/small"); code != 200 || body != "ok" {
		t.Fatalf("keep-alive conn: %d %q", code, body)
	}
	ka.send(t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n") // answered after the listeners closed

	// The slow download and upload, started before the drain.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	down := dialRaw(t, addr)
	down.send(t, "GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
	wg.Add(2)
	go func() {
		defer wg.Done()
		resp, err := http.ReadResponse(down.br, &http.Request{Method: "GET"})
		if err != nil {
			errs <- fmt.Errorf("download: %v", err)
			return
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || sumOf(b) != sumOf(genBytes(7, size)) {
			errs <- fmt.Errorf("download: %d bytes, err %v, intact %v", len(b), err, sumOf(b) == sumOf(genBytes(7, size)))
		}
	}()
	up := dialRaw(t, addr)
	payload := genBytes(9, size)
	go func() {
		defer wg.Done()
		if _, err := io.WriteString(up, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n"); err != nil {
			errs <- fmt.Errorf("upload head: %v", err)
			return
		}
		for off := 0; off < size; off += 64 << 10 {
			if _, err := up.Write(payload[off : off+64<<10]); err != nil {
				errs <- fmt.Errorf("upload at %d: %v", off, err)
				return
			}
			time.Sleep(step)
		}
		resp, err := http.ReadResponse(up.br, &http.Request{Method: "POST"})
		if err != nil {
			errs <- fmt.Errorf("upload response: %v", err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("%x", sha256.Sum256(payload)); string(b) != want {
			errs <- fmt.Errorf("upload: backend got %q, want %q", b, want)
		}
	}()
	time.Sleep(2 * step) // both are under way

	start := time.Now()
	repCh := make(chan loop.DrainReport, 1)
	closedCh := make(chan time.Duration, 1)
	go func() {
		repCh <- srv.Drain(context.Background(), loop.DrainOptions{Delay: delay, Timeout: tmo, Spread: spread,
			ListenersClosed: func(int, int, error) { closedCh <- time.Since(start) }})
	}()

	// During Delay: still accepting and serving keep-alive.
	early := dialRaw(t, addr)
	if code, _ := early.get(t, "x", "/small"); code != 200 {
		t.Fatalf("during the delay: %d", code)
	}
	early.expectQuiet(t, 50*time.Millisecond)
	if srv.Draining() {
		t.Fatalf("draining %v after the signal, before the %v delay", time.Since(start), delay)
	}
	select {
	case el := <-closedCh:
		if el < delay {
			t.Fatalf("listeners closed after %v, before the delay %v", el, delay)
		}
	case <-time.After(delay + 5*time.Second):
		t.Fatal("listeners never closed")
	}
	// A new connection is refused.
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after the listeners closed")
	} else if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial after the listeners closed: %v, want connection refused", err)
	}
	// The idle keep-alive conns end (the one from the delay too), without a byte.
	for _, c := range []*rawConn{idle, early} {
		if rest := c.expectClosed(t, 3*time.Second); len(rest) != 0 {
			t.Fatalf("idle conn got %q before its close", rest)
		}
	}
	// The keep-alive conn's request in flight is answered with Connection: close, then the conn
	// ends.
	resp, body := ka.fullResponse(t, "GET")
	if resp.StatusCode != 200 || string(body) != "slow" || !resp.Close {
		t.Fatalf("keep-alive conn while draining: %d %q Connection %q", resp.StatusCode, body, resp.Header.Get("Connection"))
	}
	ka.expectClosed(t, 3*time.Second)

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	down.expectClosed(t, 3*time.Second) // the download's conn ends at its boundary
	up.expectClosed(t, 3*time.Second)

	// Tunnels stay until the timeout: all of them still relay both ways shortly before it.
	if d := time.Until(start.Add(delay + tmo - 500*time.Millisecond)); d > 0 {
		time.Sleep(d)
	} else {
		t.Logf("loaded box: %v late for the pre-timeout check", -d)
	}
	for i, e := range tunnels {
		e.C.send(t, "ping")
		e.B.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := readFull(e.B.R, 4); err != nil || string(b) != "ping" {
			t.Fatalf("tunnel %d before the timeout: backend read %q %v", i, b, err)
		}
		if _, err := e.B.Conn.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		e.C.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := readFull(e.C.br, 4); err != nil || string(b) != "pong" {
			t.Fatalf("tunnel %d before the timeout: client read %q %v", i, b, err)
		}
	}
	// Then they close, spread out: when each client sees its EOF.
	ends := make([]time.Duration, nTun)
	var ewg sync.WaitGroup
	for i, e := range tunnels {
		ewg.Add(1)
		go func() {
			defer ewg.Done()
			e.C.SetReadDeadline(time.Now().Add(tmo + spread + 10*time.Second))
			_, err := e.C.br.ReadByte()
			ends[i] = time.Since(start)
			if err != io.EOF {
				t.Errorf("tunnel %d: %v, want EOF from the drain", i, err)
			}
		}()
	}
	ewg.Wait()
	rep := <-repCh
	t.Logf("drain: %+v", rep)
	sort.Slice(ends, func(i, j int) bool { return ends[i] < ends[j] })
	t.Logf("tunnel closes at %v (timeout at %v, spread %v)", ends, delay+tmo, spread)
	first, last := ends[0], ends[nTun-1]
	if first < delay+tmo-50*time.Millisecond {
		t.Fatalf("first tunnel closed at %v, before the timeout %v", first, delay+tmo)
	}
	if last > delay+tmo+spread+2*time.Second {
		t.Fatalf("last tunnel closed at %v, after the window %v", last, delay+tmo+spread)
	}
	// Evenly: the k-th at (k-1)*spread/n after the timeout. The last close comes a step before
	// the end of the spread; on a loaded box closes may bunch late, never early.
	if got, want := last-first, spread*(nTun-1)/nTun; got < want/2 {
		t.Fatalf("closes spread over %v, want about %v", got, want)
	}
	mid := delay + tmo + spread/2
	inFirstHalf := 0
	for _, e := range ends {
		if e < mid {
			inFirstHalf++
		}
	}
	if inFirstHalf < 2 || inFirstHalf > 8 {
		t.Fatalf("%d of %d closes in the first half of the spread, want about half", inFirstHalf, nTun)
	}
	if !rep.Empty || rep.TunnelsAtTimeout != nTun || rep.TunnelsClosed != nTun || rep.Listeners != 2 {
		t.Fatalf("drain report %+v", rep)
	}
	if rep.Took > delay+tmo+spread+2*time.Second {
		t.Fatalf("Drain took %v", rep.Took)
	}
	// The backend side of every tunnel saw the close too.
	for i, e := range tunnels {
		e.B.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := e.B.R.ReadByte(); err != io.EOF {
			t.Fatalf("tunnel %d backend side: %v, want EOF", i, err)
		}
	}
}

// Drain returns as soon as nothing is left, long before its window.
func TestDrainReturnsWhenEmpty(t *testing.T) {
	be := drainBackend(t, 1024, time.Millisecond)
	srv, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	if code, _ := c.get(t, "x", "/small"); code != 200 {
		t.Fatal(code)
	}
	start := time.Now()
	rep := srv.Drain(context.Background(), loop.DrainOptions{Timeout: 30 * time.Second, Spread: 10 * time.Second})
	if !rep.Empty || time.Since(start) > 5*time.Second {
		t.Fatalf("drain %+v after %v", rep, time.Since(start))
	}
	c.expectClosed(t, time.Second)
	if st := srv.Stats(); st.Conns != 0 || st.Tunnels != 0 {
		t.Fatalf("after the drain: %+v", st)
	}
}

// A context that ends (a second signal) cuts the drain short; Stop closes what is left.
func TestDrainCancelled(t *testing.T) {
	tb, peers := rawTunnelBackend(t)
	srv, addr := startProxy(t, tb.Addr)
	e := openRawTunnel(t, addr, peers)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan loop.DrainReport, 1)
	go func() { done <- srv.Drain(ctx, loop.DrainOptions{Timeout: time.Minute, Spread: time.Minute}) }()
	if !waitFor(5*time.Second, srv.Draining) {
		t.Fatal("not draining")
	}
	cancel()
	select {
	case rep := <-done:
		if rep.Empty || rep.Tunnels != 1 {
			t.Fatalf("cancelled drain: %+v", rep)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after its context ended")
	}
	stopProxy(t, srv)
	e.C.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := e.C.br.ReadByte(); err != io.EOF && !isReset(err) {
		t.Fatalf("tunnel after Stop: %v", err)
	}
}

func readFull(r *bufio.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}
