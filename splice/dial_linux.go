package splice

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

func newSocket(family int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT: the bind(2) to a source address
// then reserves only the address, and connect(2) picks a port unique for the
// 4-tuple, so each source address brings a whole ephemeral range per backend.
func bindNoPort(fd int) error {
	return rawSetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
}

// sockaddrCall is bind(2) or connect(2) (trap) with the address built on the
// stack (unix.Connect takes a Sockaddr interface, whose value escapes: one
// allocation per upgrade), raw: a non-blocking connect over loopback runs
// the whole handshake in softirq before it returns, long enough for sysmon
// to take the P away mid-call.
func sockaddrCall(fd int, trap uintptr, ap netip.AddrPort) error {
	a := ap.Addr()
	port := ap.Port()
	var e unix.Errno
	if a.Is4() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		sa.Port = port<<8 | port>>8 // network byte order
		_, _, e = unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16(), Scope_id: zoneID(a)}
		sa.Port = port<<8 | port>>8
		_, _, e = unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	if e != 0 {
		return e
	}
	return nil
}
