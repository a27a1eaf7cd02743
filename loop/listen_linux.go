package loop

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// guard is the one-instance lock of a listen address: a listening abstract unix socket (listen.go).
type guard struct {
	f         *os.File
	name      string
	inherited bool // adopted from the predecessor: it shares the port
	handedOut bool // dup'ed for a successor: it may share the port
}

// takeGuard binds the abstract socket for addr, or adopts the inherited one.
func takeGuard(addr string, inherited *os.File) (*guard, error) {
	name, err := guardName(addr)
	if err != nil {
		return nil, err
	}
	if inherited != nil {
		sa, err := unix.Getsockname(int(inherited.Fd()))
		if err != nil {
			return nil, fmt.Errorf("inherited listen lock: %w", err)
		}
		if u, ok := sa.(*unix.SockaddrUnix); !ok || u.Name != "@"+name {
			return nil, fmt.Errorf("inherited listen lock is not the guard of %s (want %q, got %v)", addr, "@"+name, sa)
		}
		// Our own copy: the caller may close the one it passed.
		g := &guard{f: inherited, name: name, inherited: true}
		f, err := g.dup()
		if err != nil {
			return nil, err
		}
		g.f = f
		return g, nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// Go's x/sys maps a leading '@' to the NUL byte of the abstract namespace.
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		unix.Close(fd)
		if err == unix.EADDRINUSE {
			if pid := guardHolder(name); pid > 0 {
				return nil, fmt.Errorf("%w (pid %d); a second one would split its connections (SO_REUSEPORT)", ErrAddressServed, pid)
			}
			return nil, fmt.Errorf("%w; a second one would split its connections (SO_REUSEPORT)", ErrAddressServed)
		}
		return nil, fmt.Errorf("listen lock: %w", os.NewSyscallError("bind", err))
	}
	// Listening lets a refused start ask the holder's pid (SO_PEERCRED); nobody accepts, and
	// the tiny backlog bounds what such probes can queue.
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen lock: %w", os.NewSyscallError("listen", err))
	}
	return &guard{f: os.NewFile(uintptr(fd), "@"+name), name: name}, nil
}

// guardHolder returns the pid of the process that listens on the guard, or 0.
func guardHolder(name string) int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		return 0
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0
	}
	return int(cred.Pid)
}

func (g *guard) close() {
	if g != nil && g.f != nil {
		_ = g.f.Close()
	}
}

// dup returns a copy of the guard's fd for a successor process (close-on-exec is cleared by
// exec.Cmd for ExtraFiles).
func (g *guard) dup() (*os.File, error) {
	if g == nil || g.f == nil {
		return nil, fmt.Errorf("no listen lock (port 0 takes none)")
	}
	g.handedOut = true
	fd, err := unix.FcntlInt(g.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(fd), g.f.Name()), nil
}

// shared reports that another process may hold listeners on this address with our blessing (a
// predecessor or a successor): then a restart must not probe the bind, which would fail on them.
func (g *guard) shared() bool { return g != nil && (g.inherited || g.handedOut) }
