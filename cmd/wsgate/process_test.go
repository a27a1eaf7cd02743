package main

// The real binary in real processes: listen errors, the second instance, signals, the
// RLIMIT_NOFILE warning and the zero-value rule's effect on the wire.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var binPath string

func TestMain(m *testing.M) {
	if p := os.Getenv(e2eBinEnv); p != "" {
		// A child of a test (upgrade_e2e_test.go): the parent built the binary.
		binPath = p
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "wsgate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "wsgate")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building wsgate:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// World-readable, so a test can run it as another user.
	_ = os.Chmod(dir, 0o755)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	code   int
}

// startProc runs cmd with its output captured; the process is killed when the test ends.
func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func wsgate(t *testing.T, args ...string) *proc {
	return startProc(t, exec.Command(binPath, args...))
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("process still running after %v; stderr:\n%s", d, p.stderr.String())
	}
	return -1
}

// waitLog waits until stderr contains s.
func (p *proc) waitLog(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.stderr.String(), s) {
		select {
		case <-p.done:
			t.Fatalf("process exited (%d) before logging %q; stderr:\n%s", p.code, s, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %v; stderr:\n%s", s, d, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePort is a port nothing listens on now, never one it returned before in this process: the
// kernel may hand a just-closed ephemeral port out again at once, and two calls for one wsgate
// (-listen and -admin) then name the same address.
func freePort(t *testing.T) string {
	freePorts.Lock()
	defer freePorts.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if !freePorts.given[addr] {
			freePorts.given[addr] = true
			return addr
		}
	}
}

var freePorts = struct {
	sync.Mutex
	given map[string]bool
}{given: map[string]bool{}}

// countingBackend is an HTTP backend answering "ok" that counts the TCP connections it accepted.
type countingBackend struct {
	addr  string
	conns atomic.Int64
}

func newCountingBackend(t *testing.T) *countingBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &countingBackend{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.conns.Add(1)
			}
		}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// get sends n GETs on one keep-alive connection to addr and checks every answer.
func get(t *testing.T, addr string, n int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial wsgate: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for i := 0; i < n; i++ {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
}

func TestBinaryBadFlagIsOneLineExit2(t *testing.T) {
	for _, args := range [][]string{{"-frobnicate"}, {"-listen", "a:1", "-listen", "b:2"}, {"-backend", "ftp://x:1"}, {"-header-timeout", "0"}} {
		p := wsgate(t, args...)
		if code := p.wait(t, 10*time.Second); code != 2 {
			t.Fatalf("%v: exit %d", args, code)
		}
		if out := p.stderr.String(); strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "wsgate: ") || p.stdout.String() != "" {
			t.Fatalf("%v: stderr %q stdout %q", args, out, p.stdout.String())
		}
	}
	p := wsgate(t, "-h")
	if code := p.wait(t, 10*time.Second); code != 0 || p.stderr.String() != "" || !strings.Contains(p.stdout.String(), "-max-pipes") {
		t.Fatalf("-h: exit %d stderr %q", code, p.stderr.String())
	}
}

func TestBinaryVersion(t *testing.T) {
	p := wsgate(t, "-version")
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	out := p.stdout.String()
	if !strings.HasPrefix(out, "wsgate ") || !strings.Contains(out, "\ngo go1.") || !strings.Contains(out, "revision ") && !strings.HasPrefix(out, "wsgate v") {
		t.Fatalf("-version: %q", out)
	}
	t.Logf("-version:\n%s", out)
}

// A failed listen names the kernel's reason, in the log line, and exits 1.
func TestBinaryListenErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for listen, want := range map[string]string{
		ln.Addr().String(): "bind: address already in use",
		"192.0.2.1:8080":   "bind: cannot assign requested address",
	} {
		p := wsgate(t, "-listen", listen, "-backend", "127.0.0.1:1")
		if code := p.wait(t, 10*time.Second); code != 1 || !strings.Contains(p.stderr.String(), want) ||
			!strings.Contains(p.stderr.String(), `level=ERROR msg="start failed"`) {
			t.Fatalf("-listen %s: exit %d, want 1 and %q; stderr:\n%s", listen, code, want, p.stderr.String())
		}
	}
}

// Binding a port below net.ipv4.ip_unprivileged_port_start as an unprivileged user is refused
// with EACCES. The tests run as root, so the binary is started as nobody (uid 65534).
func TestBinaryListenPermissionDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start the binary as another user")
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	start, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || start <= 80 {
		t.Skipf("ports from %d up are unprivileged here (%v): no port to be refused", start, err)
	}
	cmd := exec.Command(binPath, "-listen", "127.0.0.1:80", "-backend", "127.0.0.1:1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	p := startProc(t, cmd)
	code := p.wait(t, 10*time.Second)
	want := "bind: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
	if code != 1 || !strings.Contains(p.stderr.String(), want) {
		t.Fatalf("exit %d, want 1 and %q; stderr:\n%s", code, want, p.stderr.String())
	}
}

// A second wsgate on the same address exits 1 naming the first one's pid; the first keeps serving.
func TestBinarySecondInstanceRefused(t *testing.T) {
	be := newCountingBackend(t)
	addr := freePort(t)
	first := wsgate(t, "-listen", addr, "-backend", be.addr, "-loops", "2")
	first.waitLog(t, "wsgate listening", 10*time.Second)
	second := wsgate(t, "-listen", addr, "-backend", be.addr)
	want := fmt.Sprintf("another wsgate is already serving this address (pid %d)", first.cmd.Process.Pid)
	if code := second.wait(t, 10*time.Second); code != 1 || !strings.Contains(second.stderr.String(), want) {
		t.Fatalf("second: exit %d, want 1 and %q; stderr:\n%s", code, want, second.stderr.String())
	}
	for i := 0; i < 8; i++ {
		get(t, addr, 1)
	}
	first.cmd.Process.Signal(syscall.SIGTERM)
	if code := first.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("first: exit %d after SIGTERM; stderr:\n%s", code, first.stderr.String())
	}
}

// SIGHUP reloads; SIGUSR1 is logged and ignored while the access log is not a file (it reopens
// a file: TestBinarySIGUSR1Reopen); SIGTERM drains and exits 0 (with nothing open, at once);
// SIGINT too. (SIGUSR2 upgrades: upgrade_cmd_test.go, upgrade_e2e_test.go; its successor would
// inherit this test's pipes.)
func TestBinarySignals(t *testing.T) {
	be := newCountingBackend(t)
	for _, stopSig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		addr := freePort(t)
		p := wsgate(t, "-listen", addr, "-backend", be.addr)
		p.waitLog(t, "wsgate listening", 10*time.Second)
		for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1} {
			p.cmd.Process.Signal(s)
		}
		p.waitLog(t, "SIGHUP: reloaded", 10*time.Second)
		p.waitLog(t, "SIGUSR1: the access log is not a file; nothing to reopen", 10*time.Second)
		get(t, addr, 2) // still serving
		p.cmd.Process.Signal(stopSig)
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d after %v; stderr:\n%s", code, stopSig, p.stderr.String())
		}
		if want := `msg=stopping signal=` + signalName(stopSig); !strings.Contains(p.stderr.String(), want) {
			t.Fatalf("no %q in the log:\n%s", want, p.stderr.String())
		}
	}
}

// With RLIMIT_NOFILE too low for -max-conns, wsgate says so at start (and not when it is enough).
func TestBinaryRlimitWarning(t *testing.T) {
	be := newCountingBackend(t)
	const warn = "RLIMIT_NOFILE cannot cover -max-conns"
	for _, c := range []struct {
		maxConns string
		warn     bool
	}{{"10000", true}, {"100", false}} {
		addr := freePort(t)
		// dash's ulimit -n sets the soft and the hard limit: wsgate cannot raise it.
		p := startProc(t, exec.Command("sh", "-c", `ulimit -n 1024 && exec "$0" "$@"`, binPath,
			"-listen", addr, "-backend", be.addr, "-max-conns", c.maxConns))
		p.waitLog(t, "wsgate listening", 10*time.Second)
		if got := strings.Contains(p.stderr.String(), warn); got != c.warn {
			t.Fatalf("-max-conns %s with RLIMIT_NOFILE 1024: warning %v, want %v; stderr:\n%s", c.maxConns, got, c.warn, p.stderr.String())
		}
		get(t, addr, 1)
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t, 15*time.Second)
	}
}

// -backend-idle 0 pools nothing: every request dials the backend; the default reuses one conn.
// -backend http://host:port is normalised and works.
func TestBinaryBackendIdleZero(t *testing.T) {
	for _, c := range []struct {
		args  []string
		conns int64
	}{{[]string{"-backend-idle", "0"}, 3}, {nil, 1}} {
		be := newCountingBackend(t)
		addr := freePort(t)
		p := wsgate(t, append([]string{"-listen", addr, "-backend", "http://" + be.addr, "-loops", "1"}, c.args...)...)
		p.waitLog(t, "wsgate listening", 10*time.Second)
		get(t, addr, 3)
		if got := be.conns.Load(); got != c.conns {
			t.Fatalf("%v: backend saw %d connections for 3 requests, want %d", c.args, got, c.conns)
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t, 15*time.Second)
	}
}
