// Command cg serves the snapshot with client_golang (binary-size comparison).
package main

import (
	"net/http"

	"github.com/wsgate/wsgate/metrics/libcmp"
	"github.com/wsgate/wsgate/metrics/libcmp/cgexp"
)

func main() {
	http.Handle("/metrics", cgexp.Handler(libcmp.Snapshot(20, 5)))
	http.ListenAndServe("127.0.0.1:0", nil)
}
