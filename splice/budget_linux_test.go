package splice

import (
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// PipeSize < 0 (the -pipe-size 0 of the command line) leaves new pipes at the kernel's default
// size; the default PipeSize asks for 256 KiB.
func TestPipeSizeKernelDefault(t *testing.T) {
	if !spliceSupported {
		t.Skip("no splice(2)")
	}
	for _, c := range []struct {
		size, want int
	}{{-1, 16 * os.Getpagesize()}, {0, DefaultPipeSize}} {
		p := newPlane(t, Config{Splice: true, Loops: 1, PipeSize: c.size})
		var mu sync.Mutex
		var made []int
		p.pipe2 = func(fds []int, flags int) error {
			err := sysPipe2(fds, flags)
			mu.Lock()
			made = append(made, fds[1])
			mu.Unlock()
			return err
		}
		e := openTunnel(t, p, listen(t), nil, nil)
		bulk(t, e, 1<<20, 30*time.Second)
		e.result(t, 5*time.Second) // the pipes are pooled now, still open
		mu.Lock()
		if len(made) == 0 {
			t.Fatalf("PipeSize %d: no pipe created", c.size)
		}
		for _, fd := range made {
			if got, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0); err != nil || got != c.want {
				t.Errorf("PipeSize %d: pipe size %d (%v), want %d", c.size, got, err, c.want)
			}
		}
		mu.Unlock()
	}
}
