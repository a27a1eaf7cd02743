package loop_test

// Issue 3: bounded memory whatever the peers' speeds. gnet cannot pause reading, so without a
// backpressure mechanism a fast backend feeding a slow client (or the reverse) piles the difference
// up inside wsgate. wsgate runs in this process, so what we can observe is the whole process: Go
// heap+stacks (runtime.ReadMemStats) and VmRSS (/proc/self/status). That includes the test's own
// client and backend, which is why both ends here stream from generators through tiny (16-32 KiB)
// buffers and never hold a body: any growth past the threshold is wsgate queueing bytes.
// These tests are not parallel: a concurrent test's allocations would count against wsgate.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

const memBound = 32 << 20

// throttle sleeps so that done bytes after start do not exceed rate bytes/s.
func throttle(start time.Time, done int64, rate float64) {
	if ahead := time.Duration(float64(done)/rate*float64(time.Second)) - time.Since(start); ahead > 0 {
		time.Sleep(ahead)
	}
}

// repeatReader yields n bytes cycling over a small block (cheap: the payload's content is checked
// by the body tests; here only memory matters).
type repeatReader struct {
	block []byte
	left  int64
	off   int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.block[r.off:])
		n += c
		r.off = (r.off + c) % len(r.block)
	}
	r.left -= int64(n)
	return n, nil
}

func memSizes() int64 { return pick(256<<20, 256<<20, 1<<30) }

// slowRate is the slow peer's speed: slow next to a loopback backend (GB/s), fast enough to keep the
// test short (256 MiB in ~2.5s).
const slowRate = 100 << 20

func reportMem(t *testing.T, what string, n int64, d time.Duration, g memSample) {
	t.Logf("%s: %d MiB in %v (%.0f MiB/s); growth: heap+stacks %.1f MiB, runtime Sys %.1f MiB, VmRSS %.1f MiB",
		what, n>>20, d.Round(time.Millisecond), float64(n)/(1<<20)/d.Seconds(),
		float64(g.HeapInuse)/(1<<20), float64(g.Sys)/(1<<20), float64(g.RSS)/(1<<20))
	if g.HeapInuse >= memBound {
		t.Errorf("%s: Go heap grew %.1f MiB during the transfer, bound %d MiB (wsgate queues the body instead of pushing back)",
			what, float64(g.HeapInuse)/(1<<20), memBound>>20)
	}
	if g.RSS >= memBound {
		t.Errorf("%s: VmRSS grew %.1f MiB during the transfer, bound %d MiB", what, float64(g.RSS)/(1<<20), memBound>>20)
	}
}

// TestE2EMemorySlowDownload: fast backend, slow-reading client; Content-Length and chunked bodies.
func TestE2EMemorySlowDownload(t *testing.T) {
	for _, mode := range []string{"cl", "chunked"} {
		t.Run(mode, func(t *testing.T) { slowDownload(t, mode) })
	}
}

func slowDownload(t *testing.T, mode string) {
	n := memSizes()
	if mode == "chunked" {
		n /= 2 // still far above the bound if wsgate queued it
	}
	block := genBytes(11, 32<<10)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mode == "chunked" {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
		} else {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		}
		io.CopyBuffer(w, &repeatReader{block: block, left: n}, make([]byte, 32<<10))
	}))
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	w := watchMem(50 * time.Millisecond)
	start := time.Now()
	c.send(t, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
	resp := c.response(t, "GET")
	if resp.StatusCode != 200 || (mode == "cl" && resp.ContentLength != n) {
		w.growth()
		t.Fatalf("status %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	buf := make([]byte, 16<<10)
	var got int64
	for {
		k, err := resp.Body.Read(buf)
		got += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			w.growth()
			t.Fatalf("slow download after %d of %d bytes: %v", got, n, err)
		}
		throttle(start, got, slowRate)
	}
	g := w.growth()
	if got != n {
		t.Fatalf("downloaded %d bytes, want %d", got, n)
	}
	reportMem(t, "slow download ("+mode+")", n, time.Since(start), g)
}

// TestE2EMemorySlowUpload: fast client uploading to a slow-reading backend; Content-Length and
// chunked bodies.
func TestE2EMemorySlowUpload(t *testing.T) {
	for _, mode := range []string{"cl", "chunked"} {
		t.Run(mode, func(t *testing.T) { slowUpload(t, mode) })
	}
}

// chunker frames a stream as 32 KiB chunks with a tiny buffer.
type chunker struct {
	r    io.Reader
	buf  []byte
	pend []byte
	done bool
}

func (c *chunker) Read(p []byte) (int, error) {
	for len(c.pend) == 0 {
		if c.done {
			return 0, io.EOF
		}
		k, err := io.ReadFull(c.r, c.buf[10:len(c.buf)-2])
		if k > 0 {
			h := fmt.Sprintf("%08x\r\n", k)
			copy(c.buf, h)
			c.buf[10+k], c.buf[11+k] = '\r', '\n'
			c.pend = c.buf[:12+k]
		}
		if err != nil {
			c.done = true
			c.pend = append(c.pend, "0\r\n\r\n"...)
		}
	}
	n := copy(p, c.pend)
	c.pend = c.pend[n:]
	return n, nil
}

func slowUpload(t *testing.T, mode string) {
	n := memSizes()
	if mode == "chunked" {
		n /= 2
	}
	block := genBytes(12, 32<<10)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 16<<10)
		var got int64
		start := time.Now()
		for {
			k, err := r.Body.Read(buf)
			got += int64(k)
			if err != nil {
				break
			}
			throttle(start, got, slowRate)
		}
		w.Header().Set("X-Req-Len", strconv.FormatInt(got, 10))
	}))
	_, addr := startProxy(t, be.Addr)
	c := dialRaw(t, addr)
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	w := watchMem(50 * time.Millisecond)
	start := time.Now()
	var body io.Reader = &repeatReader{block: block, left: n}
	if mode == "chunked" {
		c.send(t, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		body = &chunker{r: body, buf: make([]byte, 32<<10+12)}
	} else {
		c.send(t, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", n))
	}
	if _, err := io.CopyBuffer(c.Conn, body, make([]byte, 32<<10)); err != nil {
		w.growth()
		t.Fatalf("uploading: %v", err)
	}
	resp, _ := c.fullResponse(t, "POST")
	g := w.growth()
	if resp.StatusCode != 200 || resp.Header.Get("X-Req-Len") != strconv.FormatInt(n, 10) {
		t.Fatalf("status %d, backend got %s bytes of %d", resp.StatusCode, resp.Header.Get("X-Req-Len"), n)
	}
	reportMem(t, "slow upload ("+mode+")", n, time.Since(start), g)
}
