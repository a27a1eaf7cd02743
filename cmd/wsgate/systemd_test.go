package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The systemd unit (deploy/systemd/wsgate.service) driven the way systemd drives it, with the
// real binary and a fake notify socket: NOTIFY_SOCKET in the environment, ExecReload run as
// written (with $MAINPID), SIGUSR2 to the main pid for an upgrade (systemctl kill
// --kill-whom=main), KillSignal to stop. wsgate must say READY=1 once listening, RELOADING=1
// with MONOTONIC_USEC then READY=1 around each reload (a refused one too), MAINPID=<successor>
// with READY=1 from the successor on an upgrade (and nothing from the old process after it),
// STOPPING=1 when the drain starts; and exit 0 well within TimeoutStopSec.
func TestBinarySystemdNotify(t *testing.T) {
	unit := readUnitFile(t, "../../deploy/systemd/wsgate.service")
	if unit["Type"] != "notify" || unit["NotifyAccess"] != "all" {
		t.Fatalf("unit: Type=%q NotifyAccess=%q", unit["Type"], unit["NotifyAccess"])
	}
	sockPath := filepath.Join(t.TempDir(), "notify")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	// The sender's pid, as systemd learns it (SO_PASSCRED): only the main process may speak.
	if rc, err := ns.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	}
	type note struct {
		text string
		pid  int
	}
	msgs := make(chan note, 64)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			n, oobn, _, _, err := ns.ReadMsgUnix(buf, oob)
			if err != nil {
				close(msgs)
				return
			}
			pid := -1
			if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) > 0 {
				if cred, err := unix.ParseUnixCredentials(&cms[0]); err == nil {
					pid = int(cred.Pid)
				}
			}
			msgs <- note{string(buf[:n]), pid}
		}
	}()
	mainPID := 0 // who may speak: set below
	next := func(what string) map[string]string {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", what)
			}
			kv := map[string]string{}
			for _, line := range strings.Split(m.text, "\n") {
				k, v, _ := strings.Cut(line, "=")
				kv[k] = v
			}
			t.Logf("notify from pid %d: %q", m.pid, m.text)
			if m.pid != mainPID && kv["MAINPID"] != strconv.Itoa(m.pid) {
				t.Fatalf("%q from pid %d, which is not the main process (%d)", m.text, m.pid, mainPID)
			}
			return kv
		case <-time.After(15 * time.Second):
			t.Fatalf("no notification (waiting for %s)", what)
		}
		return nil
	}

	be := newLCServer(t, "a")
	addr := freePort(t)
	file := writeFile(t, "wsgate.toml", "[[route]]\nmatch = \"/\"\nbackends = [\""+be.addr+"\"]\n")
	// ExecStart's binary with this test's address, backend and config.
	exe := strings.Fields(unit["ExecStart"])
	if len(exe) == 0 || exe[0] != "/usr/local/bin/wsgate" {
		t.Fatalf("ExecStart=%q", unit["ExecStart"])
	}
	t.Setenv("NOTIFY_SOCKET", sockPath)
	g, pid := startGen(t, binPath, "-listen", addr, "-config", file, "-drain-timeout", "2s", "-close-spread", "1s")
	mainPID = pid

	ready := next("READY=1")
	if ready["READY"] != "1" || !strings.Contains(ready["STATUS"], "serving on "+addr) {
		t.Fatalf("first notification %v, want READY=1 with a status", ready)
	}
	getName := func() {
		t.Helper()
		k := dialKA(t, addr)
		defer k.Close()
		if code, body, _, err := k.get("/"); err != nil || code != 200 || body != "a" {
			t.Fatalf("GET: %d %q %v", code, body, err)
		}
	}
	getName() // READY means listening

	reload := func() {
		t.Helper()
		// ExecReload=/bin/kill -HUP $MAINPID, as systemd runs it.
		line := strings.ReplaceAll(unit["ExecReload"], "$MAINPID", strconv.Itoa(pid))
		if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil {
			t.Fatalf("ExecReload %q: %v %s", line, err, out)
		}
	}
	checkReload := func(status string) {
		t.Helper()
		m := next("RELOADING=1")
		if m["RELOADING"] != "1" {
			t.Fatalf("got %v, want RELOADING=1", m)
		}
		usec, err := strconv.ParseUint(m["MONOTONIC_USEC"], 10, 64)
		if err != nil || usec == 0 {
			t.Fatalf("RELOADING=1 without a valid MONOTONIC_USEC: %v", m)
		}
		m = next("READY=1 after the reload")
		if m["READY"] != "1" || !strings.Contains(m["STATUS"], status) {
			t.Fatalf("got %v, want READY=1 and a status with %q", m, status)
		}
	}
	reload()
	checkReload("reloaded; serving")
	os.WriteFile(file, []byte("[[route]]\nmatch = \"/\"\nbackends = [\"no port\"]\n"), 0o644)
	reload()
	checkReload("reload failed")
	getName()

	// A binary upgrade: the successor says MAINPID=<itself> and READY=1; the old process says
	// nothing more and exits. (The successor reads the file again: it must be good.)
	os.WriteFile(file, []byte("[[route]]\nmatch = \"/\"\nbackends = [\""+be.addr+"\"]\n"), 0o644)
	tn := openTunnel(t, addr)
	old := pid
	syscall.Kill(old, syscall.SIGUSR2)
	m := next("MAINPID= from the successor")
	succ, err := strconv.Atoi(m["MAINPID"])
	if err != nil || succ == old || m["READY"] != "1" || !strings.Contains(m["STATUS"], "upgraded from pid "+strconv.Itoa(old)) {
		t.Fatalf("got %v, want MAINPID=<successor> READY=1 and an upgrade status", m)
	}
	g.pids = append(g.pids, succ)
	mainPID = succ
	waitGone(t, old, 10*time.Second)
	pid = succ
	if err := tn.echo("after the upgrade", 5*time.Second); err != nil {
		t.Fatalf("tunnel after the upgrade: %v", err)
	}
	reload() // $MAINPID is the successor now
	checkReload("reloaded; serving")

	start := time.Now()
	sig := map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT}[unit["KillSignal"]]
	if sig == 0 {
		t.Fatalf("KillSignal=%q", unit["KillSignal"])
	}
	syscall.Kill(pid, sig)
	if m := next("STOPPING=1"); m["STOPPING"] != "1" || !strings.HasPrefix(m["STATUS"], "draining: ") {
		t.Fatalf("got %v, want STOPPING=1 with the drain's status", m)
	}
	if err := tn.echo("draining", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	stopSec, _ := time.ParseDuration(unit["TimeoutStopSec"])
	waitGone(t, pid, stopSec) // and exit status 0
	t.Logf("stopped after %v (drain 2s + spread 1s here; TimeoutStopSec=%v)", time.Since(start), stopSec)
	for len(msgs) > 0 {
		next("the rest") // only from the main process
	}
}

// readUnitFile reads a unit's [Service] keys (the last value of each).
func readUnitFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv, sec := map[string]string{}, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			sec = line
		case sec == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			kv[k] = v
		}
	}
	return kv
}
