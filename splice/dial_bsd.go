//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package splice

import (
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// newSocket: the BSDs (darwin above all) have no SOCK_NONBLOCK/SOCK_CLOEXEC
// flags on every version, so they are set afterwards under the fork lock.
func newSocket(family int) (int, error) {
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(family, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// bindNoPort: IP_BIND_ADDRESS_NO_PORT is Linux-only; a source-bound
// connect reserves its port at bind time here.
func bindNoPort(fd int) error { return nil }

// sockaddrCall is bind(2) or connect(2) (trap) through x/sys's Sockaddr.
func sockaddrCall(fd int, trap uintptr, ap netip.AddrPort) error {
	a := ap.Addr()
	var sa unix.Sockaddr
	if a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16(), ZoneId: zoneID(a)}
	}
	if trap == unix.SYS_BIND {
		return unix.Bind(fd, sa)
	}
	return unix.Connect(fd, sa)
}
