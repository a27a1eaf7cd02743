package main

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SIGTERM on the real binary with a slow download, a slow upload, tunnels and keep-alive
// clients: the download and the upload complete with every byte; during -drain-delay wsgate
// still accepts; then new connections are refused, the idle keep-alive conn is closed, the one
// with a request in flight gets its answer with Connection: close; the tunnels relay until
// -drain-timeout, then close spread over -close-spread; the process exits 0 once empty.
func TestBinaryDrain(t *testing.T) {
	const (
		nTun   = 10
		size   = 1 << 20
		step   = 100 // ms per 64 KiB: about 1.6 s for the download and the upload
		delay  = 400 * time.Millisecond
		tmo    = 3 * time.Second
		spread = 2 * time.Second
	)
	be := newLCServer(t, "a")
	addr := freePort(t)
	p := wsgate(t, "-listen", addr, "-backend", be.addr, "-loops", "2", "-tunnel-loops", "2",
		"-drain-delay", delay.String(), "-drain-timeout", tmo.String(), "-close-spread", spread.String())
	p.waitLog(t, "wsgate listening", 10*time.Second)

	tunnels := make([]*tunnel, nTun)
	for i := range tunnels {
		tunnels[i] = openTunnel(t, addr)
		if err := tunnels[i].echo("hello "+strconv.Itoa(i), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	idle := dialKA(t, addr)
	if code, body, _, err := idle.get("/"); err != nil || code != 200 || body != "a" {
		t.Fatalf("idle keep-alive conn: %d %q %v", code, body, err)
	}
	busy := dialKA(t, addr)
	if code, body, _, err := busy.get("/"); err != nil || code != 200 || body != "a" {
		t.Fatalf("keep-alive conn: %d %q %v", code, body, err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	down := dialKA(t, addr)
	if err := down.send(fmt.Sprintf("/download?size=%d&step=%d", size, step)); err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		down.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(down.br, nil)
		if err != nil {
			errs <- fmt.Errorf("download: %v", err)
			return
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || sha256.Sum256(b) != sha256.Sum256(pattern(size)) {
			errs <- fmt.Errorf("download: %d of %d bytes, %v", len(b), size, err)
		}
	}()
	up := dialKA(t, addr)
	go func() {
		defer wg.Done()
		body := pattern(size)
		fmt.Fprintf(up, "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", size)
		for off := 0; off < size; off += 64 << 10 {
			if _, err := up.Write(body[off : off+64<<10]); err != nil {
				errs <- fmt.Errorf("upload at %d: %v", off, err)
				return
			}
			time.Sleep(step * time.Millisecond)
		}
		up.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(up.br, nil)
		if err != nil {
			errs <- fmt.Errorf("upload response: %v", err)
			return
		}
		got, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("%x", sha256.Sum256(body)); string(got) != want {
			errs <- fmt.Errorf("upload: backend hashed %q, want %q", got, want)
		}
	}()
	if err := busy.send("/slow?ms=1200"); err != nil { // answered after the listeners closed
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the transfers are under way

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	// During the delay: still accepting.
	if code, body, _, err := dialKA(t, addr).get("/"); err != nil || code != 200 || body != "a" {
		t.Fatalf("during -drain-delay: %d %q %v", code, body, err)
	}
	p.waitLog(t, "draining: listeners closed", delay+10*time.Second)
	if el := time.Since(start); el < delay {
		t.Fatalf("listeners closed %v after SIGTERM, before -drain-delay %v", el, delay)
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after the listeners closed")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after the listeners closed: %v, want connection refused", err)
	}
	if err := idle.expectEOF(3 * time.Second); err != nil {
		t.Fatalf("idle keep-alive conn: %v", err)
	}
	if code, body, closing, err := busy.read(); err != nil || code != 200 || body != "a" || !closing {
		t.Fatalf("request in flight: %d %q Connection: close %v, %v", code, body, closing, err)
	}
	if err := busy.expectEOF(3 * time.Second); err != nil {
		t.Fatalf("keep-alive conn after its last answer: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Tunnels still relay shortly before the timeout.
	time.Sleep(time.Until(start.Add(delay + tmo - 500*time.Millisecond)))
	for i, tn := range tunnels {
		if err := tn.echo("still "+strconv.Itoa(i), 5*time.Second); err != nil {
			t.Fatalf("tunnel %d before -drain-timeout: %v", i, err)
		}
	}
	ends := make([]time.Duration, nTun)
	var ewg sync.WaitGroup
	for i, tn := range tunnels {
		ewg.Add(1)
		go func() {
			defer ewg.Done()
			tn.SetReadDeadline(time.Now().Add(tmo + spread + 15*time.Second))
			_, err := bufio.NewReader(tn.br).ReadByte()
			ends[i] = time.Since(start)
			if err != io.EOF {
				t.Errorf("tunnel %d: %v, want EOF", i, err)
			}
		}()
	}
	ewg.Wait()
	code := p.wait(t, 15*time.Second)
	exited := time.Since(start)
	sort.Slice(ends, func(i, j int) bool { return ends[i] < ends[j] })
	t.Logf("tunnel closes after SIGTERM: %v; exit %d after %v", ends, code, exited)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	first, last := ends[0], ends[nTun-1]
	if first < delay+tmo-50*time.Millisecond || last > delay+tmo+spread+3*time.Second {
		t.Fatalf("tunnels closed from %v to %v; window %v..%v", first, last, delay+tmo, delay+tmo+spread)
	}
	if got, want := last-first, spread*(nTun-1)/nTun; got < want/2 {
		t.Fatalf("closes spread over %v, want about %v", got, want)
	}
	if exited > delay+tmo+spread+5*time.Second {
		t.Fatalf("exited %v after SIGTERM", exited)
	}
	p.waitLog(t, "msg=drained", time.Second)
}

// A second SIGTERM while draining exits at once with status 1.
func TestBinaryDrainSecondSignal(t *testing.T) {
	be := newLCServer(t, "a")
	addr := freePort(t)
	p := wsgate(t, "-listen", addr, "-backend", be.addr, "-drain-timeout", "1m")
	p.waitLog(t, "wsgate listening", 10*time.Second)
	tn := openTunnel(t, addr)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog(t, "draining: listeners closed", 10*time.Second)
	if err := tn.echo("x", 5*time.Second); err != nil {
		t.Fatalf("tunnel while draining: %v", err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 5*time.Second); code != 1 {
		t.Fatalf("exit %d after the second SIGTERM, want 1", code)
	}
	p.waitLog(t, "second SIGTERM while draining: exiting now", time.Second)
}
