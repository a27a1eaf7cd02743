package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Closing the listeners and nothing else: the drain and the binary upgrade (docs/lifecycle.md).
//
// gnet has no call for it. Engine.Stop closes every listener, every connection and the loops;
// the listener fds are private (one per event loop with SO_REUSEPORT; Engine.Dup/DupListener
// give a copy of the first loop's only, and closing a copy closes nothing). Closing the fd
// numbers ourselves would leave gnet holding numbers it closes again at Stop, by then possibly
// another socket's. shutdown(SHUT_RD) stops a TCP listener, but the socket stays in gnet's epoll
// set, level-triggered, and keeps reporting EPOLLHUP|EPOLLIN: gnet's accept(2) then gets EINVAL,
// which it treats as fatal (ErrAcceptSocket) and stops the whole engine, connections included.
//
// What wsgate does: find its listening sockets in /proc/self/fd (TCP, SO_ACCEPTCONN, local
// address = the listen address), which it does once the engine runs (recordListeners: the fd
// and the socket's inode, so that a successor's listeners in the same process, as in tests, are
// never taken for ours), and dup3 an inert socket over each of those fd numbers. dup3 swaps what the number refers to in one step:
// the last reference to the listening socket goes, so the kernel closes it (inet_csk_listen_stop:
// with net.ipv4.tcp_migrate_req=1 its accept queue moves to another listener of the SO_REUSEPORT
// group, the successor's; otherwise what is queued is reset) and its epoll registration goes with
// it (an epoll item belongs to the open file, which is released before dup3 returns to user
// space). gnet's number now names the inert socket, which no epoll set watches: gnet never sees
// an event for it, and at Stop it closes the inert copy it owns, never somebody else's fd.
//
// The inert socket is a non-blocking, listening AF_UNIX socket on an autobound abstract name
// nobody is told. Should a loop act on a listener event it collected just before the swap, its
// accept(2) on the number finds EAGAIN, which gnet reads as "nothing to accept"; any other error
// (EINVAL from a socket that does not listen, ENOTSOCK from a pipe) would stop the engine.
//
// Rejected as well: a listener of our own with Enroll per accepted connection, which would put a
// goroutine hop, a dup and a channel on every accept, the path reconnect storms load (issue 13).

// StopAccepting closes the server's listeners; established connections, exchanges and tunnels
// are untouched, and the engine is not restarted from then on. With acceptQueued (a drain: no
// other listener will take them) it first accepts what waits in the accept queues and serves
// those connections like any other (during a drain, with Connection: close); without it (an
// upgrade with tcp_migrate_req=1) the queues move to the successor's listeners. It returns the
// number of listeners closed and of connections accepted from their queues.
func (s *Server) StopAccepting(acceptQueued bool) (listeners, accepted int, err error) {
	s.engMu.Lock()
	defer s.engMu.Unlock()
	if s.noListen.Load() && s.listeners == nil {
		return 0, 0, nil // closed already
	}
	s.noListen.Store(true) // the supervisor restarts no listener from now on
	want, _, _, err := listenSockaddr(s.addr)
	if err != nil {
		return 0, 0, fmt.Errorf("listen %s: %w", s.addr, err)
	}
	if s.lnErr != nil {
		return 0, 0, fmt.Errorf("listen %s: finding the listeners: %w", s.addr, s.lnErr)
	}
	inert, err := inertSocket()
	if err != nil {
		return 0, 0, fmt.Errorf("listen %s: %w", s.addr, err)
	}
	defer unix.Close(inert)
	var queued []int
	for _, l := range s.listeners {
		fd := l.fd
		if !isListener(fd, want) || inode(fd) != l.ino { // re-checked right before the swap
			continue
		}
		if acceptQueued {
			queued = acceptAll(fd, queued)
		}
		if err := unix.Dup3(inert, fd, unix.O_CLOEXEC); err != nil {
			for _, c := range queued {
				_ = unix.Close(c)
			}
			return listeners, 0, fmt.Errorf("listen %s: closing listener fd %d: %w", s.addr, fd, os.NewSyscallError("dup3", err))
		}
		listeners++
	}
	s.listeners = nil
	if listeners == 0 {
		return 0, 0, fmt.Errorf("listen %s: no listening socket found", s.addr)
	}
	if len(queued) > 0 {
		var eng gnet.Engine
		if s.run != nil {
			eng = s.run.eng
		}
		go s.enrollAccepted(eng, queued)
	}
	return listeners, len(queued), nil
}

// listenerID is one of the engine's listening sockets: its fd and the socket's inode.
type listenerID struct {
	fd  int
	ino uint64
}

// listenerInodes are the inodes of the listening sockets on the listen address in this process
// now: taken before an engine starts, they are somebody else's (a predecessor Server in the same
// process, in tests).
func (s *Server) listenerInodes() map[uint64]bool {
	m := map[uint64]bool{}
	want, _, _, err := listenSockaddr(s.addr)
	if err != nil {
		return m
	}
	fds, _ := listenerFDs(want)
	for _, fd := range fds {
		m[inode(fd)] = true
	}
	return m
}

// recordListeners notes the engine's listeners once it runs (startRun): those on the listen
// address that were not there before it started.
func (s *Server) recordListeners(before map[uint64]bool) {
	var ls []listenerID
	want, _, _, err := listenSockaddr(s.addr)
	if err == nil {
		var fds []int
		if fds, err = listenerFDs(want); err == nil {
			for _, fd := range fds {
				if ino := inode(fd); ino != 0 && !before[ino] {
					ls = append(ls, listenerID{fd, ino})
				}
			}
		}
	}
	s.engMu.Lock()
	s.listeners, s.lnErr = ls, err
	s.engMu.Unlock()
}

// inode is the inode number of fd's file (a socket's identity), 0 on error.
func inode(fd int) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	return st.Ino
}

// acceptAll accepts from a non-blocking listener until its queue is empty (bounded by the
// backlog the kernel allows).
func acceptAll(fd int, into []int) []int {
	for i := 0; i < 1<<16; i++ {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
			into = append(into, nfd)
		case unix.EINTR, unix.ECONNABORTED:
		default: // EAGAIN: empty
			return into
		}
	}
	return into
}

// enrollAccepted gives connections taken from the accept queues to gnet, which runs OnOpen for
// each as for any accepted one.
func (s *Server) enrollAccepted(eng gnet.Engine, fds []int) {
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "wsgate-accepted")
		nc, err := net.FileConn(f) // dups; ours is closed with f
		_ = f.Close()
		if err != nil {
			continue
		}
		var ch <-chan gnet.RegisteredResult
		if eng.Validate() == nil {
			ch, err = eng.Register(gnet.NewNetConnContext(context.Background(), nc))
		} else {
			err = errors.New("engine not running")
		}
		if err != nil {
			s.log.Debug("accepted before the listener closed, but gnet would not take it", "listen", s.addr, "err", err)
			_ = nc.Close()
			continue
		}
		if res, ok := <-ch; !ok || res.Err != nil {
			_ = nc.Close()
		}
	}
}

// listenerFDs returns this process's fds that are TCP listeners bound to want.
func listenerFDs(want unix.Sockaddr) ([]int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	own := int(d.Fd())
	d.Close()
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd == own {
			continue
		}
		if isListener(fd, want) {
			fds = append(fds, fd)
		}
	}
	return fds, nil
}

// isListener: fd is a listening TCP socket whose local address is want.
func isListener(fd int, want unix.Sockaddr) bool {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return false
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || v != unix.IPPROTO_TCP {
		return false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	return sameSockaddr(sa, want)
}

func sameSockaddr(a, b unix.Sockaddr) bool {
	switch x := a.(type) {
	case *unix.SockaddrInet4:
		y, ok := b.(*unix.SockaddrInet4)
		return ok && x.Port == y.Port && x.Addr == y.Addr
	case *unix.SockaddrInet6:
		y, ok := b.(*unix.SockaddrInet6)
		return ok && x.Port == y.Port && x.Addr == y.Addr
	}
	return false
}

// inertSocket is what a closed listener's fd number refers to afterwards: a non-blocking,
// listening AF_UNIX socket on an autobound abstract name (accept finds EAGAIN; see above).
func inertSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	// An empty name binds to a fresh abstract name the kernel picks (autobind).
	if err := unix.Bind(fd, &unix.SockaddrUnix{}); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("listen", err)
	}
	return fd, nil
}
