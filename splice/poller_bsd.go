//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package splice

import (
	"golang.org/x/sys/unix"
)

// poller is the loop's kqueue, mirroring poller_linux.go one to one. Each
// socket gets an EVFILT_READ and an EVFILT_WRITE filter with EV_CLEAR, which
// is kqueue's edge trigger: a filter reports once per state change and is
// then quiet until new bytes or new space arrive, so the same "consume to
// EAGAIN, remember readiness in end.ev" rules hold. EV_EOF stands in for
// EPOLLRDHUP/EPOLLHUP. The wake-up is a non-blocking self-pipe (portable to
// every BSD, unlike EVFILT_USER), and the kevent timeout drives the wheel.
//
// kevent carries the fd, not epoll's user data, so owner maps fd to
// slot<<1|side (-1 when the fd is not ours).
type poller struct {
	kq     int
	wr, ww int // self-pipe: wr is registered, ww is written by wake
	owner  []int32
	events [maxEvents]unix.Kevent_t
}

func (p *poller) open() error {
	kq, err := unix.Kqueue()
	if err != nil {
		return err
	}
	unix.CloseOnExec(kq)
	var pp [2]int
	if err := unix.Pipe(pp[:]); err != nil {
		unix.Close(kq)
		return err
	}
	for _, fd := range pp {
		unix.CloseOnExec(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(kq)
			unix.Close(pp[0])
			unix.Close(pp[1])
			return err
		}
	}
	var ch [1]unix.Kevent_t
	unix.SetKevent(&ch[0], pp[0], unix.EVFILT_READ, unix.EV_ADD|unix.EV_CLEAR)
	if _, err := unix.Kevent(kq, ch[:], nil, nil); err != nil {
		unix.Close(kq)
		unix.Close(pp[0])
		unix.Close(pp[1])
		return err
	}
	p.kq, p.wr, p.ww = kq, pp[0], pp[1]
	return nil
}

func (p *poller) close() {
	unix.Close(p.kq)
	unix.Close(p.wr)
	unix.Close(p.ww)
}

func (p *poller) add(fd int, slot int32, side int) error {
	for fd >= len(p.owner) {
		p.owner = append(p.owner, -1)
	}
	p.owner[fd] = slot<<1 | int32(side&1)
	var ch [2]unix.Kevent_t
	unix.SetKevent(&ch[0], fd, unix.EVFILT_READ, unix.EV_ADD|unix.EV_CLEAR)
	unix.SetKevent(&ch[1], fd, unix.EVFILT_WRITE, unix.EV_ADD|unix.EV_CLEAR)
	if _, err := unix.Kevent(p.kq, ch[:], nil, nil); err != nil {
		p.owner[fd] = -1
		return err
	}
	return nil
}

func (p *poller) del(fd int) {
	if fd < len(p.owner) {
		p.owner[fd] = -1
	}
	var ch [2]unix.Kevent_t
	unix.SetKevent(&ch[0], fd, unix.EVFILT_READ, unix.EV_DELETE)
	unix.SetKevent(&ch[1], fd, unix.EVFILT_WRITE, unix.EV_DELETE)
	unix.Kevent(p.kq, ch[:], nil, nil)
}

// wait returns the number of events; timeout is in ms, -1 blocks.
func (p *poller) wait(timeout int) (int, error) {
	if timeout < 0 {
		return unix.Kevent(p.kq, nil, p.events[:], nil)
	}
	ts := unix.NsecToTimespec(int64(timeout) * 1e6)
	return unix.Kevent(p.kq, nil, p.events[:], &ts)
}

// event decodes events[i] like the epoll version: slot, end, readiness.
// A stale event for an fd already deregistered in this batch is ignoreSlot.
func (p *poller) event(i int) (slot int32, side int32, ev uint8) {
	e := &p.events[i]
	fd := int(e.Ident)
	if fd == p.wr {
		return wakeSlot, 0, 0
	}
	if fd >= len(p.owner) || p.owner[fd] < 0 {
		return ignoreSlot, 0, 0
	}
	o := p.owner[fd]
	switch {
	case e.Flags&unix.EV_ERROR != 0 || (e.Flags&unix.EV_EOF != 0 && e.Fflags != 0):
		// A socket error (EV_EOF with so_error in fflags) is EPOLLERR.
		ev = evIn | evOut | evErr | evHup
	case int(e.Filter) == unix.EVFILT_READ:
		ev = evIn // EV_EOF here is EPOLLRDHUP: read sees the 0
		if e.Flags&unix.EV_EOF != 0 {
			ev |= evHup
		}
	case e.Flags&unix.EV_EOF != 0:
		ev = evIn | evOut | evHup // write side gone: EPOLLHUP
	default:
		ev = evOut
	}
	return o >> 1, o & 1, ev
}

func (p *poller) wake() {
	var one = [1]byte{1}
	for {
		_, err := unix.Write(p.ww, one[:])
		if err != unix.EINTR {
			return // EAGAIN: bytes already pending, the loop will wake
		}
	}
}

// drainWake empties the self-pipe so the next submit wakes us again.
func (p *poller) drainWake() {
	var b [64]byte
	for {
		n, err := unix.Read(p.wr, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n < len(b) {
			return
		}
	}
}
