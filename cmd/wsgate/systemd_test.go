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
)

// The systemd unit (deploy/systemd/wsgate.service) driven the way systemd drives it, with the
// real binary and a fake notify socket: NOTIFY_SOCKET in the environment, ExecReload run as
// written (with $MAINPID), KillSignal to stop. wsgate must say READY=1 once listening,
// RELOADING=1 with MONOTONIC_USEC then READY=1 around each reload (a refused one too), and
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
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ns.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(what string) map[string]string {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", what)
			}
			kv := map[string]string{}
			for _, line := range strings.Split(m, "\n") {
				k, v, _ := strings.Cut(line, "=")
				kv[k] = v
			}
			t.Logf("notify: %q", m)
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
	cmd := exec.Command(binPath, "-listen", addr, "-config", file, "-drain-timeout", "2s", "-close-spread", "1s")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath)
	p := startProc(t, cmd)
	pid := p.cmd.Process.Pid

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

	tn := openTunnel(t, addr)
	start := time.Now()
	sig := map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT}[unit["KillSignal"]]
	if sig == 0 {
		t.Fatalf("KillSignal=%q", unit["KillSignal"])
	}
	p.cmd.Process.Signal(sig)
	if m := next("STOPPING=1"); m["STOPPING"] != "1" || !strings.HasPrefix(m["STATUS"], "draining: ") {
		t.Fatalf("got %v, want STOPPING=1 with the drain's status", m)
	}
	if err := tn.echo("draining", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	stopSec, _ := time.ParseDuration(unit["TimeoutStopSec"])
	if code := p.wait(t, stopSec); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	t.Logf("stopped after %v (drain 2s + spread 1s here; TimeoutStopSec=%v)", time.Since(start), stopSec)
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
