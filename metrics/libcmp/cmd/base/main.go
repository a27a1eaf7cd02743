// Command base is the baseline for the binary-size comparison: net/http serving a text body.
package main

import (
	"io"
	"net/http"
)

func main() {
	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up 1\n") })
	http.ListenAndServe("127.0.0.1:0", nil)
}
