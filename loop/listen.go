package loop

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Listening: say why a listen failed, and never let two wsgates share an address.
//
// gnet loses bind errors. Its initListener (listener_unix.go) does
//
//	err = ln.open()              // socket, setsockopt, bind, listen
//	if TCPKeepAlive > 0 { err = setKeepAlive(ln.fd, ...) }
//
// and on a failed bind ln.fd is the number of a socket tcpSocket has already closed: the second
// assignment replaces "bind: address already in use" with "setsockopt: bad file descriptor", or
// with nil if another goroutine got that fd number meanwhile, in which case gnet goes on with a
// listener that is somebody else's fd. probeBind therefore binds the address itself first and
// reports the kernel's own error, and runs again to explain a failed gnet.Run.
//
// gnet binds every loop's listener with SO_REUSEPORT, so a second wsgate on the same address
// would bind too and the kernel would split new connections between the two processes without a
// word. Start refuses that with two checks:
//
//   - the probe bind has SO_REUSEADDR but not SO_REUSEPORT, so any listener on an overlapping
//     address, wsgate or not, makes it fail with EADDRINUSE (0.0.0.0:80 and 127.0.0.1:80
//     overlap; 10.0.0.1:80 and 10.0.0.2:80 do not). gnet's listeners get SO_REUSEADDR too
//     (engine.go): the connections they accept inherit it, and only then do those connections,
//     and the TIME_WAIT they leave behind, not count against the probe. Without it, a restart
//     within a minute of a stop (TIME_WAIT) or while tunnels are open on the port would be
//     refused as "address already in use" (measured: a reuseport listener without SO_REUSEADDR
//     leaves server-side TIME_WAIT sockets that fail an SO_REUSEADDR bind; with it they do not,
//     while a live listener still does);
//   - the guard (listen_linux.go): an abstract unix socket named after the canonical listen
//     address, bound for the life of the server. Binding it is atomic, so two wsgates started at
//     the same moment cannot both pass, which the probe alone (bind, close, then gnet binds)
//     cannot promise; and it is released by the kernel when the process dies, so there is no
//     stale lock file. A refused start names the holder's pid (SO_PEERCRED).
//
// The guard is also the one way through for issue 12's binary upgrade: the running process
// passes the guard's fd (Server.ListenLock) to the successor it starts itself (exec.Cmd's
// ExtraFiles, or SCM_RIGHTS over the hand-off socket), and the successor gives it to Start as
// Config.ListenLock. Start checks that the inherited socket is the guard of its own listen
// address, then skips both checks and binds next to its predecessor's listeners (SO_REUSEPORT,
// same user): exactly the processes holding that fd get through, and nobody else can obtain
// it. The guard stays held while either process lives.

// listenSockaddr resolves a listen address the way gnet does (socket.GetTCPSockAddr): an IPv4
// address is AF_INET, anything else AF_INET6 (dual-stack when no host is given).
func listenSockaddr(addr string) (unix.Sockaddr, int, bool, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, 0, false, err
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		return sa, unix.AF_INET, false, nil
	}
	sa := &unix.SockaddrInet6{Port: ta.Port}
	v6only := false
	if ta.IP != nil {
		copy(sa.Addr[:], ta.IP.To16())
		v6only = true
		if ta.Zone != "" {
			if ifi, err := net.InterfaceByName(ta.Zone); err == nil {
				sa.ZoneId = uint32(ifi.Index)
			} else if n, err := strconv.Atoi(ta.Zone); err == nil {
				sa.ZoneId = uint32(n)
			}
		}
	}
	return sa, unix.AF_INET6, v6only, nil
}

// probeBind binds addr once, without SO_REUSEPORT, and returns the kernel's error, e.g.
// "bind: address already in use", "bind: cannot assign requested address" or
// "bind: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".
func probeBind(addr string) error {
	sa, family, v6only, err := listenSockaddr(addr)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	unix.CloseOnExec(fd)
	if v6only {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, unix.EACCES) {
			return fmt.Errorf("bind: %w (ports below 1024 need root or CAP_NET_BIND_SERVICE)", err)
		}
		return os.NewSyscallError("bind", err)
	}
	return nil
}

// guardName is the guard's abstract socket name for a listen address: the resolved IP (or "*"
// for no host) and the port, so "localhost:80" and "127.0.0.1:80" share one guard.
func guardName(addr string) (string, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return "", err
	}
	host := "*"
	if ta.IP != nil {
		host = ta.IP.String()
	}
	return "wsgate-listen " + net.JoinHostPort(host, strconv.Itoa(ta.Port)), nil
}

// ErrAddressServed is returned (wrapped) by Start when another wsgate already serves the listen
// address.
var ErrAddressServed = errors.New("another wsgate is already serving this address")

// reservePort picks a free port on host for a Listen port of 0: a socket with SO_REUSEADDR and
// SO_REUSEPORT bound to port 0 and never listening. It receives no connections, nobody but this
// user's SO_REUSEPORT sockets can bind the port while it is open, and gnet's listeners can.
func reservePort(host string) (string, *os.File, error) {
	sa, family, v6only, err := listenSockaddr(net.JoinHostPort(host, "0"))
	if err != nil {
		return "", nil, err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		return "", nil, os.NewSyscallError("socket", err)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "wsgate-port-reservation")
	if v6only {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			f.Close()
			return "", nil, os.NewSyscallError("setsockopt", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		f.Close()
		return "", nil, os.NewSyscallError("bind", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		f.Close()
		return "", nil, os.NewSyscallError("getsockname", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return strconv.Itoa(port), f, nil
}
