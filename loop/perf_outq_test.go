package loop

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkPerfWriteSyscall isolates the per-write overhead outq pays on top of the kernel's
// work: /dev/null takes every byte at once, so the difference is the Go side of the call.
func BenchmarkPerfWriteSyscall(b *testing.B) {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	p := make([]byte, 100)
	b.Run("unix.Write", func(b *testing.B) {
		for range b.N {
			if n, err := unix.Write(fd, p); err != nil || n != len(p) {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("rawWrite", func(b *testing.B) {
		for range b.N {
			if n, err := rawWrite(fd, p); err != nil || n != len(p) {
				b.Fatal(n, err)
			}
		}
	})
}

// TestRawWriteErrors: outq's switch compares against the shared errno values.
func TestRawWriteErrors(t *testing.T) {
	// SOCK_NONBLOCK is Linux-only; SetNonblock is the portable spelling.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	defer unix.Close(fds[1])
	p := make([]byte, 64<<10)
	full := false
	for i := 0; i < 1000 && !full; i++ { // a socket buffer is at most a few MiB
		_, err := rawWrite(fds[0], p)
		switch err {
		case nil:
		case unix.EAGAIN:
			full = true
		default:
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if !full {
		t.Fatal("socket buffer never filled: EAGAIN not reported as unix.EAGAIN")
	}
	unix.Close(fds[0])
	if _, err := rawWrite(fds[0], p); err != unix.EBADF {
		t.Fatalf("write to a closed fd: got %v, want EBADF", err)
	}
	if n, err := rawWrite(fds[1], nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
}
