// Package sdnotify speaks systemd's notify protocol (sd_notify(3)) without
// libsystemd: newline-separated VARIABLE=VALUE assignments in one datagram
// to the AF_UNIX socket named by $NOTIFY_SOCKET.
//
// Every call is a no-op returning nil when NOTIFY_SOCKET is unset (not
// started by systemd, or Type= is not notify). The environment variable is
// left in place: a successor started for a binary upgrade inherits it and
// must be able to notify too.
//
// Binary upgrades: the successor sends MAINPID=<its pid> (with READY=1)
// before the old process exits, so systemd follows the new main process
// instead of concluding the service died. systemd accepts MAINPID= (and
// anything else) from a process other than the current main PID only with
// NotifyAccess=all in the unit; the successor must also be in the
// service's cgroup, which a child of the old process is. Only the main
// process should notify otherwise: an old process that is still draining
// after the hand-off must stay quiet (its STOPPING=1 would be taken as the
// service's).
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsupportedAddress: NOTIFY_SOCKET is neither an absolute path nor an
// abstract name starting with '@' (e.g. "vsock:", which systemd 254+ uses
// for VMs and which this package does not speak).
var ErrUnsupportedAddress = errors.New("sdnotify: unsupported NOTIFY_SOCKET address")

// sendTimeout bounds a send: a wedged manager must not hang a shutdown.
const sendTimeout = 2 * time.Second

// Notifier sends to one notify socket. The zero value (and New("")) does
// nothing.
type Notifier struct {
	addr string
}

// New returns a Notifier for addr: "/run/systemd/notify" (a path) or
// "@name" (an abstract socket); "" disables it.
func New(addr string) *Notifier { return &Notifier{addr: addr} }

// FromEnv returns a Notifier for $NOTIFY_SOCKET (disabled when unset).
func FromEnv() *Notifier { return New(os.Getenv("NOTIFY_SOCKET")) }

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != "" }

// Addr is the socket address ("" when disabled).
func (n *Notifier) Addr() string {
	if n == nil {
		return ""
	}
	return n.addr
}

// Notify sends the assignments ("READY=1", "STATUS=...") in one datagram,
// so systemd applies them together. Each must be VARIABLE=VALUE without a
// newline.
func (n *Notifier) Notify(assignments ...string) error {
	if !n.Enabled() {
		return nil
	}
	if len(assignments) == 0 {
		return errors.New("sdnotify: nothing to send")
	}
	var b strings.Builder
	for i, a := range assignments {
		k, _, ok := strings.Cut(a, "=")
		if !ok || k == "" || strings.ContainsAny(a, "\n\x00") {
			return fmt.Errorf("sdnotify: bad assignment %q (want VARIABLE=VALUE on one line)", a)
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(a)
	}
	return n.send([]byte(b.String()))
}

func (n *Notifier) send(msg []byte) error {
	if err := checkAddr(n.addr); err != nil {
		return err
	}
	// net names an abstract socket with a leading '@', as NOTIFY_SOCKET does.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(sendTimeout))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// checkAddr applies NOTIFY_SOCKET's address rules: an absolute path, or
// '@' for Linux's abstract namespace (the '@' stands for a leading NUL).
func checkAddr(addr string) error {
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "@") && len(addr) > 1 {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrUnsupportedAddress, addr)
}

// Ready: start-up (or a reload) is finished.
func (n *Notifier) Ready() error { return n.Notify("READY=1") }

// Reloading: a reload started; send Ready when it is done. It carries
// MONOTONIC_USEC (CLOCK_MONOTONIC in microseconds), which systemd 253+
// requires with Type=notify-reload to tell this reload from an older one.
func (n *Notifier) Reloading() error {
	if !n.Enabled() {
		return nil
	}
	return n.Notify("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatUint(monotonicUsec(), 10))
}

// Stopping: shutdown started (draining); systemd shows "deactivating".
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// MainPID tells systemd which process is the service's main one.
func (n *Notifier) MainPID(pid int) error { return n.Notify("MAINPID=" + strconv.Itoa(pid)) }

// Status sets the one-line status `systemctl status` shows; newlines are
// replaced by spaces.
func (n *Notifier) Status(text string) error {
	return n.Notify("STATUS=" + strings.NewReplacer("\n", " ", "\x00", " ").Replace(text))
}

// TakeOver is what a successor sends once it has adopted everything and
// before the old process exits: MAINPID=pid, READY=1 and a status, in one
// datagram. Needs NotifyAccess=all (the sender is not the main PID yet).
func (n *Notifier) TakeOver(pid int, status string) error {
	return n.Notify("MAINPID="+strconv.Itoa(pid), "READY=1",
		"STATUS="+strings.NewReplacer("\n", " ", "\x00", " ").Replace(status))
}

func monotonicUsec() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// Package-level helpers read NOTIFY_SOCKET at each call.

// Notify sends assignments to $NOTIFY_SOCKET; see Notifier.Notify.
func Notify(assignments ...string) error { return FromEnv().Notify(assignments...) }

// Ready sends READY=1 to $NOTIFY_SOCKET.
func Ready() error { return FromEnv().Ready() }

// Reloading sends RELOADING=1 and MONOTONIC_USEC to $NOTIFY_SOCKET.
func Reloading() error { return FromEnv().Reloading() }

// Stopping sends STOPPING=1 to $NOTIFY_SOCKET.
func Stopping() error { return FromEnv().Stopping() }

// MainPID sends MAINPID=pid to $NOTIFY_SOCKET.
func MainPID(pid int) error { return FromEnv().MainPID(pid) }

// Status sends STATUS=text to $NOTIFY_SOCKET.
func Status(text string) error { return FromEnv().Status(text) }

// TakeOver sends MAINPID=pid, READY=1 and STATUS=status to $NOTIFY_SOCKET.
func TakeOver(pid int, status string) error { return FromEnv().TakeOver(pid, status) }
