package splice_test

import (
	"fmt"
	"io"
	"os"

	"github.com/wsgate/wsgate/splice"
	"golang.org/x/sys/unix"
)

// A tunnel between two socketpairs: the plane owns one end of each, the
// example plays client and backend on the other ends.
func ExamplePlane_Tunnel() {
	p, err := splice.NewPlane(splice.Config{Splice: true, Loops: 1})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	client, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	backend, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	done := make(chan splice.TunnelResult, 1)
	err = p.Tunnel(splice.Tunnel{
		ClientFD:  client[1],
		BackendFD: backend[1],
		ToBackend: []byte("hello "), // bytes read before the hand-off go first
		OnClose:   func(r splice.TunnelResult) { done <- r },
	})
	if err != nil {
		panic(err)
	}
	unix.Write(client[0], []byte("world"))
	unix.Shutdown(client[0], unix.SHUT_WR) // half-close: the backend sees EOF
	b := os.NewFile(uintptr(backend[0]), "backend")
	got, _ := io.ReadAll(b)
	fmt.Printf("backend read %q\n", got)
	b.Close() // the backend closes too: both directions are done
	unix.Close(client[0])
	r := <-done
	fmt.Println(r.ClientToBackend, r.Err)
	// Output:
	// backend read "hello world"
	// 11 <nil>
}
