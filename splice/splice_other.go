//go:build !linux

package splice

import (
	"errors"

	"golang.org/x/sys/unix"
)

// spliceSupported is false: splice(2) is Linux-only, so probeSplice reports
// it unavailable, the plane never sets spliceOK, and every direction moves
// through a pooled buffer with the same backpressure and half-close rules.
const spliceSupported = false

var errNoSplice = errors.New("splice(2) exists only on Linux")

// The pipe hooks stay so the shared state machine compiles unchanged; with
// spliceOK false fill never asks for a pipe, and if it ever did, ENOSYS is
// exactly the answer that sends a direction to the copy path.
func sysPipe2(p []int, flags int) error { return unix.ENOSYS }

func setPipeSize(fd, sz int) {}

func spliceMove(in, out, n int) (int, error) { return 0, unix.ENOSYS }

func probeSplice() error { return errNoSplice }

func rawRead(fd int, p []byte) (int, error)  { return unix.Read(fd, p) }
func rawWrite(fd int, p []byte) (int, error) { return unix.Write(fd, p) }

func rawClose(fd int)                              { unix.Close(fd) }
func rawShutdown(fd, how int) error                { return unix.Shutdown(fd, how) }
func rawSetsockoptInt(fd, level, opt, v int) error { return unix.SetsockoptInt(fd, level, opt, v) }
