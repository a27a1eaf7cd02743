package splice

import (
	"errors"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// dialNonblock starts a non-blocking TCP connect to dst, from src when src is
// valid, and returns the socket (non-blocking, close-on-exec, TCP_NODELAY).
// The connect is usually still in progress: the loop learns its outcome from
// the first write of the request head (a refused connect fails that write
// with ECONNREFUSED; one still in progress gives EAGAIN, and its completion
// raises EPOLLOUT), which saves the getsockopt(SO_ERROR) of the classic
// pattern. It is the same primitive as route.ConnectNonblock, kept here
// because the tunnel plane imports nothing but the standard library, x/sys
// and leaf packages. On error nothing is left open.
func dialNonblock(dst netip.AddrPort, src netip.Addr) (int, error) {
	da := dst.Addr().Unmap()
	family := unix.AF_INET
	if !da.Is4() {
		family = unix.AF_INET6
	}
	fd, err := newSocket(family)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	fail := func(op string, e error) (int, error) {
		rawClose(fd)
		return -1, os.NewSyscallError(op, e)
	}
	if err := rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fail("setsockopt TCP_NODELAY", err)
	}
	if src.IsValid() {
		src = src.Unmap()
		if src.Is4() != (family == unix.AF_INET) {
			rawClose(fd)
			return -1, errors.New("source address " + src.String() + " is not of the backend's address family")
		}
		if err := bindNoPort(fd); err != nil {
			return fail("setsockopt IP_BIND_ADDRESS_NO_PORT", err)
		}
		if err := sockaddrCall(fd, unix.SYS_BIND, netip.AddrPortFrom(src, 0)); err != nil {
			return fail("bind", err)
		}
	}
	switch err := sockaddrCall(fd, unix.SYS_CONNECT, netip.AddrPortFrom(da, dst.Port())); err {
	case nil, unix.EINPROGRESS, unix.EINTR:
		// EINTR on a non-blocking connect: it goes on asynchronously.
		return fd, nil
	default:
		return fail("connect", err)
	}
}

func zoneID(a netip.Addr) uint32 {
	if a.Zone() == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(a.Zone()); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}
