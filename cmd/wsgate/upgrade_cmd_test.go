//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// gen is a wsgate process started by a test whose log goes to a file: a successor inherits the
// file and outlives its parent, which pipes would not let exec.Cmd.Wait see.
type gen struct {
	log  string
	pids []int
}

// startGen starts bin with args, its output in a file; successors are reparented to this test
// process (a subreaper) and reaped by cleanup.
func startGen(t *testing.T, bin string, args ...string) (*gen, int) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("subreaper: %v", err)
	}
	g := &gen{log: filepath.Join(t.TempDir(), "wsgate.log")}
	f, err := os.Create(g.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.pids = append(g.pids, cmd.Process.Pid)
	t.Cleanup(func() {
		for _, p := range g.pids {
			unix.Kill(p, unix.SIGKILL)
			var st unix.WaitStatus
			unix.Wait4(p, &st, 0, nil)
		}
		if t.Failed() {
			b, _ := os.ReadFile(g.log)
			t.Logf("wsgate log:\n%s", b)
		}
	})
	return g, cmd.Process.Pid
}

// runCmd runs the binary to completion and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, cmd *exec.Cmd) (int, string, string) {
	t.Helper()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// `wsgate upgrade` asks the running process, waits, and prints the outcome: twice in a row (the
// second time the successor answers), with a keep-alive client and a tunnel carried across. A
// successor that cannot start leaves the running process serving, and the command says why and
// exits 1; another user is refused; nobody listening is exit 1.
func TestBinaryUpgradeCommand(t *testing.T) {
	be := newLCServer(t, "a")
	addr := freePort(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "wsgate")
	copyFile(t, binPath, bin, 0o755)
	// Runnable by uid 65534 below.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	g, pid := startGen(t, bin, "-listen", addr, "-backend", be.addr, "-loops", "2")
	waitFileLog(t, g.log, "wsgate listening", 1, 10*time.Second)
	ka := dialKA(t, addr)
	if code, body, _, err := ka.get("/"); err != nil || code != 200 || body != "a" {
		t.Fatalf("%d %q %v", code, body, err)
	}
	pidRe := regexp.MustCompile(`upgraded: pid (\d+) -> pid (\d+) in `)
	for i := 1; i <= 2; i++ {
		code, out, errs := runCmd(t, exec.Command(bin, "upgrade", "-listen", addr))
		m := pidRe.FindStringSubmatch(out)
		if code != 0 || m == nil || m[1] != strconv.Itoa(pid) {
			t.Fatalf("upgrade %d: exit %d, stdout %q, stderr %q (running pid %d)", i, code, out, errs, pid)
		}
		t.Logf("upgrade %d: %s", i, strings.TrimSpace(out))
		next, _ := strconv.Atoi(m[2])
		g.pids = append(g.pids, next)
		waitGone(t, pid, 10*time.Second)
		pid = next
		if code, body, closing, err := ka.get("/"); err != nil || code != 200 || body != "a" || closing {
			t.Fatalf("keep-alive conn after upgrade %d: %d %q close %v %v", i, code, body, closing, err)
		}
	}

	// A successor that cannot start: the running process keeps serving and says why.
	broken := filepath.Join(filepath.Dir(bin), "broken")
	os.WriteFile(broken, []byte("#!/bin/sh\necho 'no such config' >&2\nexit 3\n"), 0o755)
	if err := os.Rename(broken, bin); err != nil { // install(1)-style: a new file at the path
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, exec.Command(bin+".real", "upgrade", "-listen", addr))
	if code == 0 {
		t.Fatalf("upgrade to a broken binary: exit 0: %q", out)
	}
	if !strings.Contains(errs, "exit status 3") || !strings.Contains(errs, fmt.Sprintf("pid %d keeps serving", pid)) {
		t.Fatalf("upgrade to a broken binary: exit %d, stderr %q", code, errs)
	}
	t.Logf("broken successor: %s", strings.TrimSpace(errs))
	if code, body, closing, err := ka.get("/"); err != nil || code != 200 || body != "a" || closing {
		t.Fatalf("after the failed upgrade: %d %q close %v %v", code, body, closing, err)
	}
	if c := dialKA(t, addr); true {
		if code, body, _, err := c.get("/"); err != nil || code != 200 || body != "a" {
			t.Fatalf("new connection after the failed upgrade: %d %q %v", code, body, err)
		}
	}

	// Another user may not ask.
	cmd := exec.Command(bin+".real", "upgrade", "-listen", addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if code, _, errs := runCmd(t, cmd); code != 1 || !strings.Contains(errs, "permission denied: uid 65534") {
		t.Fatalf("as uid 65534: exit %d, stderr %q", code, errs)
	}
	// Nobody there.
	if code, _, errs := runCmd(t, exec.Command(bin+".real", "upgrade", "-listen", freePort(t))); code != 1 || !strings.Contains(errs, "no wsgate answers") {
		t.Fatalf("nobody listening: exit %d, stderr %q", code, errs)
	}
	unix.Kill(pid, unix.SIGTERM)
	waitGone(t, pid, 15*time.Second)
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	// A second copy to run the command from while the first path holds a broken binary.
	if !strings.HasSuffix(to, ".real") {
		copyFile(t, from, to+".real", mode)
	}
}

// waitGone reaps pid (a child of ours or an orphan reparented to us) within d.
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var st unix.WaitStatus
		if got, err := unix.Wait4(pid, &st, unix.WNOHANG, nil); got == pid || err == unix.ECHILD {
			if got == pid && (!st.Exited() || st.ExitStatus() != 0) {
				t.Errorf("pid %d ended with %v", pid, st)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d still running after %v", pid, d)
}
