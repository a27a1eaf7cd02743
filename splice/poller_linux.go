package splice

import (
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sockets are registered once, edge-triggered, for EPOLLIN|EPOLLOUT|
// EPOLLRDHUP, and readiness is remembered in end.ev. Backpressure then costs
// no epoll_ctl at all: a direction whose dst is full simply stops reading
// its src, the src's socket buffer fills and TCP closes the window; with
// edge triggering the unread src raises no further events, so there is no
// busy loop and no interest flip-flop (two epoll_ctl per stall with level
// triggering). The price is that every "readable" must be consumed until
// EAGAIN, which the flow state machine does anyway.
const epollFlags = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// poller is the loop's epoll instance plus the eventfd that wakes it. It is
// a concrete type per OS (see poller_bsd.go), not an interface, so the
// small methods below inline into the loop and the hot path is the epoll
// code it always was.
//
// A loop never blocks in epoll_wait. It polls with a zero timeout (raw: the
// call cannot block, so there is nothing to hand the P off for), and when
// nothing is ready it parks its goroutine in Go's own netpoller on the epoll
// fd, which is readable whenever its ready list is not empty. A thread
// blocked in epoll_wait holds its P in the syscall state: sysmon retakes it
// after 20us and hands it to another thread (a futex wake), keeps polling
// every 20us because it keeps finding such Ps, and the loop pays a hand-off
// to get a P back on every wake-up; a locked thread even needs its own M
// woken. On the rtt scenario (1,000 tunnels, 5,000 echoes/s) that was 3.4
// context switches per echo and about 95 us of proxy CPU; parked, 1.55 and
// about 65 us (perf stat, same load). The wake-up is now a goroutine made
// runnable by the scheduler's netpoll, which idle Ms spin on anyway.
type poller struct {
	epfd   int
	evfd   int
	events [maxEvents]unix.EpollEvent
	f      *os.File        // epfd as a non-blocking file in Go's netpoller, for parking
	rc     syscall.RawConn // f's
	dl     bool            // a read deadline is set on f
	n      int             // events from the poll inside rc.Read
	err    error
	pollFn func(fd uintptr) bool // polls into n/err; allocated once so waiting allocates nothing
}

func (p *poller) open() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return err
	}
	// Non-blocking, so os.NewFile registers it with the netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return err
	}
	p.f = os.NewFile(uintptr(epfd), "splice-epoll")
	rc, err := p.f.SyscallConn()
	if err != nil {
		p.f.Close()
		unix.Close(evfd)
		return err
	}
	p.rc = rc
	p.pollFn = func(uintptr) bool {
		p.n, p.err = p.poll()
		return p.n > 0 || p.err != nil
	}
	p.epfd, p.evfd = epfd, evfd
	return nil
}

// poll is epoll_pwait with a zero timeout, raw.
func (p *poller) poll() (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd), uintptr(unsafe.Pointer(&p.events[0])), maxEvents, 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func (p *poller) close() {
	p.f.Close() // the epoll fd
	unix.Close(p.evfd)
}

// ctl is epoll_ctl, raw (it never blocks).
func (p *poller) ctl(op, fd int, ev *unix.EpollEvent) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(p.epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// add registers one end of the conn in slot; the event carries both.
func (p *poller) add(fd int, slot int32, side int) error {
	ev := unix.EpollEvent{Events: epollFlags, Fd: slot, Pad: int32(side)}
	return p.ctl(unix.EPOLL_CTL_ADD, fd, &ev)
}

func (p *poller) del(fd int) {
	var ev unix.EpollEvent // ignored, but kernels before 2.6.9 wanted a non-nil pointer
	p.ctl(unix.EPOLL_CTL_DEL, fd, &ev)
}

// wait returns the number of events; timeout is in ms, -1 waits until an
// event. It polls once; with nothing ready it parks in the netpoller (see
// poller), with a read deadline for a positive timeout.
func (p *poller) wait(timeout int) (int, error) {
	if timeout == 0 {
		return p.poll()
	}
	if timeout > 0 {
		p.f.SetReadDeadline(time.Now().Add(time.Duration(timeout) * time.Millisecond))
		p.dl = true
	} else if p.dl {
		p.f.SetReadDeadline(time.Time{})
		p.dl = false
	}
	p.n, p.err = 0, nil
	if err := p.rc.Read(p.pollFn); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, err
	}
	return p.n, p.err
}

// event decodes events[i]: the conn's slot, which end, and the readiness
// bits for end.ev. slot is wakeSlot for the eventfd.
func (p *poller) event(i int) (slot int32, side int32, ev uint8) {
	e := &p.events[i]
	if e.Fd < 0 {
		return wakeSlot, 0, 0
	}
	if e.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ev |= evIn
	}
	if e.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ev |= evOut
	}
	if e.Events&unix.EPOLLERR != 0 {
		ev |= evErr
	}
	if e.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ev |= evHup
	}
	return e.Fd, e.Pad & 1, ev
}

func (p *poller) wake() {
	var one = [8]byte{1}
	for {
		_, err := rawWrite(p.evfd, one[:])
		if err != unix.EINTR {
			return // EAGAIN: the counter is already non-zero, the loop will wake
		}
	}
}

// drainWake resets the eventfd counter so the next submit wakes us again.
func (p *poller) drainWake() {
	var b [8]byte
	rawRead(p.evfd, b[:])
}
