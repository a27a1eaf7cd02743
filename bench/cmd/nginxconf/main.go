// Command nginxconf prints the nginx configuration wsbench runs its nginx peers with
// (peers.NginxConfig), for scripts that start nginx by hand: nginxconf DIR LISTEN BACKEND WORKERS.
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/wsgate/wsgate/bench/internal/peers"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: nginxconf DIR LISTEN BACKEND WORKERS")
		os.Exit(2)
	}
	w, err := strconv.Atoi(os.Args[4])
	if err != nil || w < 1 {
		fmt.Fprintln(os.Stderr, "nginxconf: WORKERS must be a positive number")
		os.Exit(2)
	}
	fmt.Print(peers.NginxConfig(os.Args[1], os.Args[2], os.Args[3], w))
}
