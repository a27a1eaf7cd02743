//go:build linux

package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type migrateResult struct {
	Total, Accepted, Reset int
}

// The fact the upgrade relies on, checked on this kernel in a network
// namespace of our own: 64 connections wait in the accept queues of two
// SO_REUSEPORT listeners; one listener closes. With tcp_migrate_req=1 the
// other accepts all 64; with 0 the ones queued on the closed listener are
// reset.
func TestTCPMigrateReq(t *testing.T) {
	if _, err := TCPMigrateReq(); err != nil {
		t.Skip(err)
	}
	for _, val := range []string{"1", "0"} {
		t.Run("tcp_migrate_req="+val, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=migrate", "HANDOFF_TEST_MIGRATE="+val)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if errors.Is(err, unix.EPERM) {
				t.Skip("no network namespace for us:", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			var r migrateResult
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("%v: %q", err, out)
			}
			t.Logf("%+v", r)
			if val == "1" && (r.Accepted != r.Total || r.Reset != 0) {
				t.Fatalf("with migration %d of %d accepted, %d reset", r.Accepted, r.Total, r.Reset)
			}
			if val == "0" && (r.Accepted == r.Total || r.Accepted+r.Reset != r.Total) {
				t.Fatalf("without migration %d of %d accepted, %d reset", r.Accepted, r.Total, r.Reset)
			}
		})
	}
}

// childMigrate runs in a fresh network namespace (lo is down there).
func childMigrate(val string) int {
	fail := func(step string, err error) int {
		fmt.Fprintf(os.Stderr, "migrate child: %s: %v\n", step, err)
		return 20
	}
	if err := loUp(); err != nil {
		return fail("lo up", err)
	}
	if err := os.WriteFile(MigrateReqPath, []byte(val), 0); err != nil {
		return fail("sysctl", err)
	}
	if on, err := TCPMigrateReq(); err != nil || on != (val == "1") {
		return fail("read back", fmt.Errorf("%v %v", on, err))
	}
	a, port, err := reuseListener(0)
	if err != nil {
		return fail("listen", err)
	}
	b, _, err := reuseListener(port)
	if err != nil {
		return fail("listen 2", err)
	}
	const n = 64
	var clients []int
	for i := 0; i < n; i++ {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fail("socket", err)
		}
		if err := unix.Connect(c, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return fail("connect", err)
		}
		clients = append(clients, c)
	}
	unix.Close(a)
	r := migrateResult{Total: n}
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		s, _, err := unix.Accept4(b, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EAGAIN {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			return fail("accept", err)
		}
		r.Accepted++
		unix.Close(s)
	}
	var buf [1]byte
	for _, c := range clients {
		unix.SetNonblock(c, true)
		if _, err := unix.Read(c, buf[:]); err == unix.ECONNRESET {
			r.Reset++
		}
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func reuseListener(port int) (int, int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, 0, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return -1, 0, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, 0, err
	}
	if err := unix.Listen(fd, 128); err != nil {
		return -1, 0, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return -1, 0, err
	}
	return fd, sa.(*unix.SockaddrInet4).Port, nil
}
