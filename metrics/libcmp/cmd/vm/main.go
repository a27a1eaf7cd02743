// Command vm serves the snapshot with VictoriaMetrics/metrics (binary-size comparison).
package main

import (
	"net/http"

	"github.com/wsgate/wsgate/metrics/libcmp"
	"github.com/wsgate/wsgate/metrics/libcmp/vmexp"
)

func main() {
	http.Handle("/metrics", vmexp.Handler(libcmp.Snapshot(20, 5)))
	http.ListenAndServe("127.0.0.1:0", nil)
}
