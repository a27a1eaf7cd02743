package splice

import (
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
type poller struct {
	epfd   int
	evfd   int
	events [maxEvents]unix.EpollEvent
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
	p.epfd, p.evfd = epfd, evfd
	return nil
}

func (p *poller) close() {
	unix.Close(p.epfd)
	unix.Close(p.evfd)
}

// add registers one end of the conn in slot; the event carries both.
func (p *poller) add(fd int, slot int32, side int) error {
	ev := unix.EpollEvent{Events: epollFlags, Fd: slot, Pad: int32(side)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// addQuiet registers one end for hang-up and error reports only (EPOLLRDHUP;
// EPOLLHUP and EPOLLERR are always reported): a client whose upgrade is
// pending is not read, so bytes it sends meanwhile wait in its socket and
// raise no wake-up, but its going away is noticed.
func (p *poller) addQuiet(fd int, slot int32, side int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: slot, Pad: int32(side)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// activate gives an end registered by addQuiet the full interest. With
// EPOLLET the modification reports the current readiness at once, so bytes
// already waiting are not missed.
func (p *poller) activate(fd int, slot int32, side int) error {
	ev := unix.EpollEvent{Events: epollFlags, Fd: slot, Pad: int32(side)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

func (p *poller) del(fd int) {
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// wait returns the number of events; timeout is in ms, -1 blocks. A zero
// timeout goes to epoll_pwait raw, for the same reason as spliceMove: it
// cannot block, so there is nothing to hand the P off for. The blocking
// wait still goes through unix.EpollWait. Not inlined (too big), so wait
// itself is the one call the loop used to make to its raw-poll helper.
func (p *poller) wait(timeout int) (int, error) {
	if timeout == 0 {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd), uintptr(unsafe.Pointer(&p.events[0])), maxEvents, 0, 0, 0)
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
	return unix.EpollWait(p.epfd, p.events[:], timeout)
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
		_, err := unix.Write(p.evfd, one[:])
		if err != unix.EINTR {
			return // EAGAIN: the counter is already non-zero, the loop will wake
		}
	}
}

// drainWake resets the eventfd counter so the next submit wakes us again.
func (p *poller) drainWake() {
	var b [8]byte
	unix.Read(p.evfd, b[:])
}
