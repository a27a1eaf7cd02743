package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// run.sh is what `make run` executes. These tests drive it with a real wsgate-demo as the backend
// and, in wsgate's place, a shim that runs a second wsgate-demo on the front address: what is under
// test is the script's orchestration (readiness wait, banner, failure reports, stop by PID), not
// the proxy.

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// scriptBin builds wsgate-demo and the wsgate shim into a temp dir.
func scriptBin(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not available")
	}
	dir := t.TempDir()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(gobin, "build", "-o", filepath.Join(dir, "wsgate-demo"), ".").CombinedOutput()
	if err != nil {
		t.Fatalf("building wsgate-demo: %v\n%s", err, out)
	}
	// run.sh calls: wsgate -listen LISTEN -route /=DEMO -route /loki/=LOKI [WSGATE_FLAGS...]
	shim := "#!/bin/sh\nlisten=$2\nshift 6\nexec \"$(dirname \"$0\")/wsgate-demo\" -listen \"$listen\" \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "wsgate"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

type script struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error
}

func startScript(t *testing.T, bin, listen, demo, loki string, env ...string) *script {
	t.Helper()
	cmd := exec.Command("bash", "run.sh", bin, listen, demo, loki)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second // the log followers hold the pipe up to a second after exit
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &script{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
		}
	})
	return s
}

// exit waits (bounded) for the script to end and returns its exit code.
func (s *script) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // let Cleanup see it too
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("run.sh: %v\n%s", err, s.out.String())
	case <-time.After(within):
		t.Fatalf("run.sh still running after %v\n%s", within, s.out.String())
	}
	return -1
}

func TestRunScriptServesAndStops(t *testing.T) {
	bin := scriptBin(t)
	listen, demo, loki := freeAddr(t), freeAddr(t), freeAddr(t)
	s := startScript(t, bin, listen, demo, loki)
	banner := "open http://" + listen + "/ in a browser"
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.out.String(), banner) {
		if time.Now().After(deadline) {
			t.Fatalf("no banner %q within 20s:\n%s", banner, s.out.String())
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("run.sh exited early (%v):\n%s", err, s.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, u := range []string{listen + "/api/health", demo + "/api/health", loki + "/ready", loki + "/loki/api/v1/labels"} {
		resp, err := http.Get("http://" + u)
		if err != nil {
			t.Fatalf("%s after banner: %v", u, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	for _, want := range []string{"with two routes:", "/        ->  Grafana-like demo " + demo, "/loki/   ->  Loki-like demo    " + loki} {
		if !strings.Contains(s.out.String(), want) {
			t.Fatalf("the banner lacks %q:\n%s", want, s.out.String())
		}
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := s.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, s.out.String())
	}
	if !strings.Contains(s.out.String(), "run: stopped wsgate and both wsgate-demo processes") {
		t.Fatalf("no stop message:\n%s", s.out.String())
	}
	for _, addr := range []string{listen, demo, loki} {
		if accepts(addr) {
			t.Fatalf("%s still accepts after run.sh stopped", addr)
		}
	}
}

func TestRunScriptPortBusy(t *testing.T) {
	bin := scriptBin(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	listen := freeAddr(t)
	s := startScript(t, bin, listen, busy, freeAddr(t))
	if code := s.exit(t, 15*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, s.out.String())
	}
	want := "port busy: something already accepts connections on " + busy + " (needed for wsgate-demo)"
	if !strings.Contains(s.out.String(), want) {
		t.Fatalf("output lacks %q:\n%s", want, s.out.String())
	}
	if accepts(listen) {
		t.Fatalf("%s accepts although start-up was refused", listen)
	}
}

func TestRunScriptReportsStartFailure(t *testing.T) {
	bin := scriptBin(t)
	listen, demo, loki := freeAddr(t), freeAddr(t), freeAddr(t)
	s := startScript(t, bin, listen, demo, loki, "WSGATE_FLAGS=-no-such-flag")
	if code := s.exit(t, 20*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, s.out.String())
	}
	out := s.out.String()
	for _, want := range []string{
		"run: error: wsgate exited during start-up (exit code 2); it was to listen on " + listen,
		"flag provided but not defined: -no-such-flag", // its last log lines are shown
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	// The demo backends that had started are stopped again.
	for _, addr := range []string{demo, loki} {
		if accepts(addr) {
			t.Fatalf("demo backend %s still accepts after the failed start", addr)
		}
	}
}
