package loop_test

// Bodies that outrun their peer move to the tunnel plane and come back (docs/architecture.md, body
// offload). These tests lower BodyHighWater so an 8 MiB body crosses it, then check that the
// connection is still exact afterwards: the next requests on the same client conn (pipelined ones
// included) are answered in order, and the backend conn is reused.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wsgate/wsgate/loop"
)

const offloadRate = 40 << 20 // the slow peer: 8 MiB takes ~200ms

func lowWater(c *loop.Config) { c.BodyHighWater = 64 << 10 }

func slowUploadHandler(w http.ResponseWriter, r *http.Request) {
	time.Sleep(500 * time.Millisecond) // let the fast client fill wsgate's queue first
	h := newHasher()
	buf := make([]byte, 16<<10)
	start := time.Now()
	var got int64
	for {
		k, err := r.Body.Read(buf)
		h.Write(buf[:k])
		got += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, "backend reading body: "+err.Error(), 400)
			return
		}
		throttle(start, got, offloadRate)
	}
	w.Header().Set("X-Req-Sum", h.sum())
	w.Header().Set("X-Req-Len", strconv.FormatInt(got, 10))
	io.WriteString(w, "stored")
}

func TestE2EHTTPOffloadDownloadKeepAlive(t *testing.T) {
	t.Parallel()
	const n = 8 << 20
	for _, mode := range []string{"cl", "chunked"} {
		t.Run(mode, func(t *testing.T) {
			be := newBackend(t, http.HandlerFunc(dataHandler))
			s, addr := startProxy(t, be.Addr, lowWater)
			c := dialRaw(t, addr)
			c.Conn.(*net.TCPConn).SetReadBuffer(32 << 10)
			c.send(t, fmt.Sprintf("GET /data?n=%d&seed=41&mode=%s HTTP/1.1\r\nHost: a\r\n\r\n"+
				"GET /data?n=5&seed=42 HTTP/1.1\r\nHost: a\r\n\r\n", n, mode)) // second one pipelined
			resp := c.response(t, "GET")
			// Not reading for a while fills the kernel buffers whatever the backend's speed (it is
			// slow under -race): the rest must queue past BodyHighWater and move to the plane.
			time.Sleep(500 * time.Millisecond)
			h := newHasher()
			buf := make([]byte, 16<<10)
			start := time.Now()
			var got int64
			for {
				k, err := resp.Body.Read(buf)
				h.Write(buf[:k])
				got += int64(k)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("slow download after %d of %d bytes: %v", got, n, err)
				}
				throttle(start, got, offloadRate)
			}
			if resp.StatusCode != 200 || got != n || h.sum() != genSum(41, n) {
				t.Fatalf("slow download: status %d, %d of %d bytes, sha ok %v", resp.StatusCode, got, n, h.sum() == genSum(41, n))
			}
			resp2, b2 := c.fullResponse(t, "GET")
			if resp2.StatusCode != 200 || sumOf(b2) != genSum(42, 5) {
				t.Fatalf("pipelined request after the offloaded body: status %d body %q", resp2.StatusCode, b2)
			}
			post := genBytes(43, 3000)
			c.send(t, fmt.Sprintf("POST /data?n=7&seed=44 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(post), post))
			resp3, b3 := c.fullResponse(t, "POST")
			if resp3.StatusCode != 200 || resp3.Header.Get("X-Req-Sum") != sumOf(post) || sumOf(b3) != genSum(44, 7) {
				t.Fatalf("request after the offloaded body: status %d req-sum ok %v body %q", resp3.StatusCode, resp3.Header.Get("X-Req-Sum") == sumOf(post), b3)
			}
			c.expectQuiet(t, 20*time.Millisecond)
			if a := be.Accepted.Load(); a != 1 {
				t.Errorf("backend accepted %d conns, want 1 (the conn comes back from the tunnel plane to the pool)", a)
			}
			if st := s.Stats(); st.Offloads == 0 {
				t.Errorf("an 8 MiB body to a slow peer with BodyHighWater 64 KiB never moved to the tunnel plane (stats %+v): offload path untested", st)
			}
		})
	}
}

func TestE2EHTTPOffloadUploadKeepAlive(t *testing.T) {
	t.Parallel()
	const n = 8 << 20
	body := genBytes(51, n)
	for _, mode := range []string{"cl", "chunked"} {
		t.Run(mode, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("/up", slowUploadHandler)
			mux.HandleFunc("/data", dataHandler)
			be := newBackend(t, mux)
			s, addr := startProxy(t, be.Addr, lowWater)
			c := dialRaw(t, addr)
			var wire []byte
			if mode == "chunked" {
				wire = append([]byte("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), chunkedBody(body)...)
			} else {
				wire = append([]byte(fmt.Sprintf("PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", n)), body...)
			}
			wire = append(wire, "GET /data?n=5&seed=52 HTTP/1.1\r\nHost: a\r\n\r\n"...) // pipelined behind the body
			werr := make(chan error, 1)
			go func() { _, err := c.Write(wire); werr <- err }()
			resp, b := c.fullResponse(t, "POST")
			if err := <-werr; err != nil {
				t.Fatalf("uploading: %v", err)
			}
			if resp.StatusCode != 200 || string(b) != "stored" || resp.Header.Get("X-Req-Sum") != sumOf(body) {
				t.Fatalf("slow upload: status %d %q, backend got %s bytes, sha ok %v", resp.StatusCode, trunc(b),
					resp.Header.Get("X-Req-Len"), resp.Header.Get("X-Req-Sum") == sumOf(body))
			}
			resp2, b2 := c.fullResponse(t, "GET")
			if resp2.StatusCode != 200 || sumOf(b2) != genSum(52, 5) {
				t.Fatalf("pipelined request behind the offloaded body: status %d body %q", resp2.StatusCode, b2)
			}
			c.send(t, "GET /data?n=6&seed=53 HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp3, b3 := c.fullResponse(t, "GET"); resp3.StatusCode != 200 || sumOf(b3) != genSum(53, 6) {
				t.Fatalf("request after the offloaded body: status %d body %q", resp3.StatusCode, b3)
			}
			c.expectQuiet(t, 20*time.Millisecond)
			if a := be.Accepted.Load(); a != 1 {
				t.Errorf("backend accepted %d conns, want 1 (the conn comes back from the tunnel plane to the pool)", a)
			}
			if st := s.Stats(); st.Offloads == 0 {
				t.Errorf("an 8 MiB body to a slow peer with BodyHighWater 64 KiB never moved to the tunnel plane (stats %+v): offload path untested", st)
			}
		})
	}
}
