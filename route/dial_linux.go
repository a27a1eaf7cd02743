package route

import (
	"errors"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// BindNoPortControl is a net.Dialer Control function that sets IP_BIND_ADDRESS_NO_PORT, so that
// the bind(2) to the dialer's LocalAddr that follows (the net package calls Control first)
// reserves no port: connect(2) picks one unique for the 4-tuple instead of one unique for the
// source address.
func BindNoPortControl(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt IP_BIND_ADDRESS_NO_PORT", serr)
	}
	return nil
}

// ConnectNonblock is the primitive under Dialer.ConnectNonblock: a non-blocking, close-on-exec
// TCP socket with TCP_NODELAY, bound to src with IP_BIND_ADDRESS_NO_PORT when src is valid,
// connecting to dst. connected is true when connect(2) succeeded at once; otherwise it returned
// EINPROGRESS and the caller waits for writability, then calls ConnectResult. On error nothing
// is left open.
func ConnectNonblock(dst netip.AddrPort, src netip.Addr) (fd int, connected bool, err error) {
	da := dst.Addr()
	family := unix.AF_INET6
	if da.Is4() {
		family = unix.AF_INET
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: da.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: da.As16()}
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, false, os.NewSyscallError("socket", err)
	}
	fail := func(op string, e error) (int, bool, error) {
		unix.Close(fd)
		return -1, false, os.NewSyscallError(op, e)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fail("setsockopt TCP_NODELAY", err)
	}
	if src.IsValid() {
		src = src.Unmap()
		if src.Is4() != (family == unix.AF_INET) {
			unix.Close(fd)
			return -1, false, errors.New("source address " + src.String() + " is not of the backend's address family")
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			return fail("setsockopt IP_BIND_ADDRESS_NO_PORT", err)
		}
		var lsa unix.Sockaddr
		if src.Is4() {
			lsa = &unix.SockaddrInet4{Addr: src.As4()}
		} else {
			lsa = &unix.SockaddrInet6{Addr: src.As16()}
		}
		if err := unix.Bind(fd, lsa); err != nil {
			return fail("bind", err)
		}
	}
	switch err := unix.Connect(fd, sa); err {
	case nil:
		return fd, true, nil
	case unix.EINPROGRESS, unix.EINTR:
		// EINTR on a non-blocking connect: it goes on asynchronously, like EINPROGRESS.
		return fd, false, nil
	default:
		return fail("connect", err)
	}
}

// ConnectResult reads SO_ERROR of a socket whose non-blocking connect has become writable: nil
// when it is connected, else the connect's error (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...).
func ConnectResult(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	if v != 0 {
		return os.NewSyscallError("connect", syscall.Errno(v))
	}
	return nil
}
