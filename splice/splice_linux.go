package splice

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spliceSupported says whether this OS has splice(2) at all; where it does
// not, every direction takes the copy path (Stats.SpliceAvailable false).
const spliceSupported = true

const spliceFlags = unix.SPLICE_F_NONBLOCK | unix.SPLICE_F_MOVE

// sysPipe2 is the pipe constructor the plane starts with (tests swap it).
var sysPipe2 = unix.Pipe2

// setPipeSize asks for sz bytes of pipe buffer. EPERM past
// pipe-user-pages-soft/pipe-max-size leaves the kernel default size, which
// still works, so the error is ignored.
func setPipeSize(fd, sz int) {
	unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, sz)
}

// spliceMove is splice(2) without the runtime's syscall bookkeeping. The
// call never blocks (SPLICE_F_NONBLOCK on non-blocking sockets and pipes),
// but a 64 KiB splice over loopback runs
// the peer's TCP receive path in softirq and often takes longer than
// sysmon's 20us retake threshold: through unix.Splice the loop then loses
// its P mid-call and pays a futex hand-off to get one back (a context switch
// each way) for every such call. Holding the P for a few microseconds of
// kernel work costs nobody anything: the loop's thread is on the CPU the
// whole time anyway.
func spliceMove(in, out, n int) (int, error) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceFlags)
	if e != 0 {
		return 0, e
	}
	return int(m), nil
}

// probeSplice moves one byte socket -> pipe so a kernel or sandbox without
// splice (ENOSYS, EINVAL under gVisor/seccomp) is detected once, up front.
func probeSplice() error {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	var pp [2]int
	if err := unix.Pipe2(pp[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return err
	}
	defer unix.Close(pp[0])
	defer unix.Close(pp[1])
	if _, err := unix.Write(sp[0], []byte{1}); err != nil {
		return err
	}
	n, err := spliceMove(sp[1], pp[1], 1)
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("probe moved %d bytes", n)
	}
	return nil
}

// rawRead and rawWrite are read(2) and write(2) without the runtime's
// syscall bookkeeping, for the small-message path on non-blocking sockets.
// Through unix.Read/Write a call that outlasts sysmon's 20us retake check
// (a write to loopback runs the receiver's TCP path in softirq and wakes
// it) loses its P: sysmon hands the P to another M (a futex wake), keeps
// polling every 20us because it keeps finding Ps to retake, and the loop
// pays a hand-off to get a P back. Measured on the rtt scenario at 5,000
// msg/s: ~30k futex calls and ~58k sysmon nanosleeps per second before.
func rawRead(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// The loop's other socket calls are raw too, for the same reason as rawRead: none of them can
// block on a non-blocking socket, and any that outlasts 20us (a close or shutdown runs the FIN
// through loopback, a connect the whole handshake) would otherwise cost a P hand-off.

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawShutdown(fd, how int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0); e != 0 {
		return e
	}
	return nil
}

func rawSetsockoptInt(fd, level, opt, v int) error {
	val := int32(v)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&val)), 4, 0); e != 0 {
		return e
	}
	return nil
}
