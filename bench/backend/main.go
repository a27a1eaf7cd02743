// Command backend is the origin server for the wsgate benchmark: GET /100 and /16k, and the
// WebSocket endpoints /ws (echo), /ws/sink and /ws/source. See bench/README.md.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/wsgate/wsgate/bench/internal/backend"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on (loopback)")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: leave the runtime's choice, which follows CPU affinity)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("backend: listen %s: %v", *listen, err)
	}
	srv := &http.Server{
		Handler:           backend.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(discard{}, "", 0), // peers' resets at the end of a run are expected
	}
	log.Fatal(srv.Serve(ln))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
