// Command httputilproxy is the net/http/httputil.ReverseProxy peer of the wsgate benchmark:
// the standard library's reverse proxy, WebSocket upgrades included (supported since Go 1.12),
// tuned only as far as a careful operator would (keep-alive pool, pooled copy buffers).
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9100", "address to serve on (loopback)")
	backendAddr := flag.String("backend", "127.0.0.1:9000", "backend host:port")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: the runtime's choice)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	target := &url.URL{Scheme: "http", Host: *backendAddr}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // preserve Host, as the other peers are configured to
			r.SetXForwarded()
		},
		Transport:  tr,
		BufferPool: bufPool{},
		ErrorLog:   log.New(discard{}, "", 0),
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("httputilproxy: listen %s: %v", *listen, err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: log.New(discard{}, "", 0)}
	log.Fatal(srv.Serve(ln))
}

// bufPool recycles the 32 KiB copy buffers ReverseProxy otherwise allocates per response.
type bufPool struct{}

var pool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufPool) Get() []byte  { return *pool.Get().(*[]byte) }
func (bufPool) Put(b []byte) { pool.Put(&b) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
