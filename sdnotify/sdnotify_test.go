package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv("SDNOTIFY_TEST_CHILD") == "takeover" {
		// A successor: not the main PID, takes over before the old exits.
		if err := TakeOver(os.Getpid(), "upgraded from pid "+strconv.Itoa(os.Getppid())); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeManager is systemd's end: a unixgram socket that records each
// datagram and the sender's pid (SO_PASSCRED, as systemd sets it).
type fakeManager struct {
	t    *testing.T
	c    *net.UnixConn
	addr string
}

func listen(t *testing.T, abstract bool) *fakeManager {
	t.Helper()
	var addr string
	if abstract {
		addr = fmt.Sprintf("@wsgate-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	} else {
		dir, err := os.MkdirTemp("", "sdn") // short: sun_path holds 107 bytes
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		addr = dir + "/notify"
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, _ := c.SyscallConn()
	rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			t.Fatal(err)
		}
	})
	return &fakeManager{t: t, c: c, addr: addr}
}

// next returns the next datagram and its sender's pid.
func (m *fakeManager) next() (string, int) {
	m.t.Helper()
	m.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := m.c.ReadMsgUnix(buf, oob)
	if err != nil {
		m.t.Fatal(err)
	}
	pid := -1
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for i := range msgs {
			if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
				pid = int(cred.Pid)
			}
		}
	}
	return string(buf[:n]), pid
}

func monoRe() *regexp.Regexp { return regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$`) }

func TestExactDatagrams(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(map[bool]string{false: "path", true: "abstract"}[abstract], func(t *testing.T) {
			m := listen(t, abstract)
			n := New(m.addr)
			cases := []struct {
				send func() error
				want string
			}{
				{n.Ready, "READY=1"},
				{n.Stopping, "STOPPING=1"},
				{func() error { return n.MainPID(4242) }, "MAINPID=4242"},
				{func() error { return n.Status("draining: 12 tunnels\nleft") }, "STATUS=draining: 12 tunnels left"},
				{func() error { return n.TakeOver(77, "upgraded") }, "MAINPID=77\nREADY=1\nSTATUS=upgraded"},
				{func() error { return n.Notify("WATCHDOG=1", "EXTEND_TIMEOUT_USEC=5000000") }, "WATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000"},
			}
			for _, c := range cases {
				if err := c.send(); err != nil {
					t.Fatal(err)
				}
				got, pid := m.next()
				if got != c.want || pid != os.Getpid() {
					t.Fatalf("got %q from pid %d, want %q from %d", got, pid, c.want, os.Getpid())
				}
			}
			before := monotonicUsec()
			if err := n.Reloading(); err != nil {
				t.Fatal(err)
			}
			after := monotonicUsec()
			got, _ := m.next()
			mm := monoRe().FindStringSubmatch(got)
			if mm == nil {
				t.Fatalf("got %q", got)
			}
			if us, _ := strconv.ParseUint(mm[1], 10, 64); us < before || us > after {
				t.Fatalf("MONOTONIC_USEC %d not within [%d, %d]", us, before, after)
			}
		})
	}
}

// MONOTONIC_USEC is CLOCK_MONOTONIC, the clock systemd compares with.
func TestMonotonicIsClockMonotonic(t *testing.T) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	a := uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
	b := monotonicUsec()
	if b < a || b-a > uint64(time.Second/time.Microsecond) {
		t.Fatalf("monotonicUsec %d, clock_gettime %d", b, a)
	}
	// Uptime-scale, not wall-clock (Unix epoch) microseconds.
	if b > uint64(10*365*24*time.Hour/time.Microsecond) {
		t.Fatalf("%d looks like wall-clock time", b)
	}
}

func TestPackageLevelUsesEnv(t *testing.T) {
	m := listen(t, true)
	t.Setenv("NOTIFY_SOCKET", m.addr)
	for _, c := range []struct {
		send func() error
		want string
	}{
		{Ready, "READY=1"},
		{Stopping, "STOPPING=1"},
		{func() error { return MainPID(9) }, "MAINPID=9"},
		{func() error { return Status("ok") }, "STATUS=ok"},
		{func() error { return Notify("X=1") }, "X=1"},
		{func() error { return TakeOver(5, "s") }, "MAINPID=5\nREADY=1\nSTATUS=s"},
	} {
		if err := c.send(); err != nil {
			t.Fatal(err)
		}
		if got, _ := m.next(); got != c.want {
			t.Fatalf("got %q, want %q", got, c.want)
		}
	}
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.next(); !monoRe().MatchString(got) {
		t.Fatalf("got %q", got)
	}
	if os.Getenv("NOTIFY_SOCKET") != m.addr {
		t.Fatal("NOTIFY_SOCKET was unset: a successor could not notify")
	}
}

func TestUnsetIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	for _, f := range []func() error{Ready, Reloading, Stopping, func() error { return MainPID(1) },
		func() error { return Status("x") }, func() error { return TakeOver(1, "x") }, func() error { return Notify("bad") }} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	var nilN *Notifier
	if nilN.Enabled() || FromEnv().Enabled() || New("").Ready() != nil {
		t.Fatal("disabled notifier is enabled")
	}
}

func TestBadInput(t *testing.T) {
	m := listen(t, true)
	n := New(m.addr)
	for _, a := range [][]string{{"READY=1\nMAINPID=1"}, {"READY"}, {"=1"}, {}, {"A=\x00"}} {
		if err := n.Notify(a...); err == nil {
			t.Fatalf("%q accepted", a)
		}
	}
	for _, addr := range []string{"vsock:2:1234", "run/systemd/notify", "@"} {
		if err := New(addr).Ready(); !errors.Is(err, ErrUnsupportedAddress) {
			t.Fatalf("%q: %v", addr, err)
		}
	}
	if err := New("/nonexistent/notify").Ready(); err == nil || !strings.Contains(err.Error(), "/nonexistent/notify") {
		t.Fatalf("missing socket: %v", err)
	}
}

// The binary-upgrade case: a successor process (not the main PID) sends
// MAINPID=<its pid> with READY=1. systemd takes it only with
// NotifyAccess=all; the datagram's credentials are the successor's.
func TestSuccessorTakeOver(t *testing.T) {
	m := listen(t, false)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SDNOTIFY_TEST_CHILD=takeover", "NOTIFY_SOCKET="+m.addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got, pid := m.next()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=upgraded from pid %d", cmd.Process.Pid, os.Getpid())
	if got != want || pid != cmd.Process.Pid || pid == os.Getpid() {
		t.Fatalf("got %q from pid %d, want %q from the successor (pid %d)", got, pid, want, cmd.Process.Pid)
	}
}
