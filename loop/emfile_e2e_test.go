//go:build linux

package loop_test

// EMFILE for real: a child process (this test binary, re-run as TestEngineChildProcess) serves
// with a low RLIMIT_NOFILE while the parent floods it with connections. Without an fd budget the
// child's accept(2) fails with EMFILE and gnet stops the engine (reproduced before the
// supervisor existed: the process kept running with no listener, every later connect was
// refused); with the supervisor the listeners come back and a tunnel opened before the flood never
// notices. With the budget (the default) accept never fails: the flood is answered 503.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/fdbudget"
	"github.com/wsgate/wsgate/loop"
)

type childSpec struct {
	Backend  string
	NoFile   uint64
	NoBudget bool // the state before the fd budget: nothing refuses work before the kernel does
}

// TestEngineChildProcess is the child's side; it does nothing in a normal run.
func TestEngineChildProcess(t *testing.T) {
	raw := os.Getenv("WSGATE_ENGINE_CHILD")
	if raw == "" {
		t.Skip("helper process for TestEngineSurvivesEMFILE and TestFDBudgetAvoidsEMFILE")
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: spec.NoFile, Max: spec.NoFile}); err != nil {
		t.Fatal(err)
	}
	cfg := loop.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Backend = spec.Backend
	cfg.Loops, cfg.Tunnel.Loops = 1, 1
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if spec.NoBudget {
		cfg.FDs = fdbudget.New(1 << 30)
	}
	s, err := loop.Start(cfg)
	if err != nil {
		fmt.Printf("CHILD-ERR %v\n", err)
		return
	}
	fmt.Printf("CHILD-LISTEN %s\n", s.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		b, _ := json.Marshal(s.Stats())
		fmt.Printf("CHILD-STATS %s\n", b)
	}
	_ = s.Stop(t.Context())
}

type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	stderr *logBuffer
	addr   string
}

func startChild(t *testing.T, spec childSpec) *child {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEngineChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WSGATE_ENGINE_CHILD="+string(raw))
	c := &child{cmd: cmd, stderr: &logBuffer{}}
	cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("child did not exit; its log:\n%s", c.stderr)
		}
	})
	c.out = bufio.NewScanner(stdout)
	line := c.line(t, "CHILD-LISTEN ")
	c.addr = strings.TrimSpace(line)
	return c
}

// line returns the rest of the child's next stdout line that starts with prefix.
func (c *child) line(t *testing.T, prefix string) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		for c.out.Scan() {
			l := c.out.Text()
			if strings.HasPrefix(l, "CHILD-ERR ") {
				got <- l
				return
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				got <- rest
				return
			}
		}
		got <- "CHILD-ERR stdout closed"
	}()
	select {
	case l := <-got:
		if strings.HasPrefix(l, "CHILD-ERR ") {
			t.Fatalf("child: %s\nlog:\n%s", l, c.stderr)
		}
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("child said nothing starting with %q; log:\n%s", prefix, c.stderr)
	}
	return ""
}

func (c *child) stats(t *testing.T) loop.Stats {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "stats\n"); err != nil {
		t.Fatal(err)
	}
	var st loop.Stats
	if err := json.Unmarshal([]byte(c.line(t, "CHILD-STATS ")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// flood opens n connections to addr that send nothing.
func flood(t *testing.T, addr string, n int) []net.Conn {
	var cs []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Logf("flood: connection %d: %v", i, err)
			break // the listener is gone (the engine stopped): enough
		}
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	return cs
}

const childNoFile = 128

func TestEngineSurvivesEMFILE(t *testing.T) {
	be := echoBackend(t)
	c := startChild(t, childSpec{Backend: be.Addr, NoFile: childNoFile, NoBudget: true})
	tun := openEcho(t, c.addr)
	echo(t, tun, 1, 256<<10)

	cs := flood(t, c.addr, 2*childNoFile)
	var st loop.Stats
	if !waitFor(20*time.Second, func() bool { st = c.stats(t); return st.EngineRestarts >= 1 }) {
		t.Fatalf("no engine restart after %d connections: %+v\nlog:\n%s", len(cs), st, c.stderr)
	}
	for _, fc := range cs {
		fc.Close()
	}
	echo(t, tun, 2, 4<<20) // the tunnel kept flowing
	if !waitFor(10*time.Second, func() bool { return tryGet(c.addr) == nil }) {
		t.Fatalf("not serving after the restart: %v\nlog:\n%s", tryGet(c.addr), c.stderr)
	}
	getOK(t, c.addr)
	echo(t, tun, 3, 1000)
	log := c.stderr.String()
	for _, want := range []string{"too many open files", `level=ERROR msg="engine stopped unexpectedly`, `msg="listeners restarted"`} {
		if !strings.Contains(log, want) {
			t.Errorf("child log lacks %q:\n%s", want, log)
		}
	}
	t.Logf("flood of %d conns; stats %+v", len(cs), c.stats(t))
}

func TestFDBudgetAvoidsEMFILE(t *testing.T) {
	be := echoBackend(t)
	c := startChild(t, childSpec{Backend: be.Addr, NoFile: childNoFile})
	tun := openEcho(t, c.addr)
	echo(t, tun, 1, 256<<10)

	cs := flood(t, c.addr, 4*childNoFile)
	if len(cs) != 4*childNoFile {
		t.Fatalf("only %d of %d connections made it: the listener went away\nlog:\n%s", len(cs), 4*childNoFile, c.stderr)
	}
	// Every connection past the budget is answered 503 and closed at once; the others stay quiet.
	var wg sync.WaitGroup
	var got503 atomic.Int64
	for _, fc := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fc.SetReadDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 64)
			if n, _ := io.ReadAtLeast(fc, b, 12); n >= 12 && string(b[:12]) == "HTTP/1.1 503" {
				got503.Add(1)
			}
		}()
	}
	wg.Wait()
	n503 := int(got503.Load())
	st := c.stats(t)
	if n503 == 0 || st.RejectedFDs < int64(n503) || st.EngineRestarts != 0 {
		t.Fatalf("%d answered 503; stats %+v\nlog:\n%s", n503, st, c.stderr)
	}
	echo(t, tun, 2, 4<<20)
	for _, fc := range cs {
		fc.Close()
	}
	if !waitFor(10*time.Second, func() bool { return tryGet(c.addr) == nil }) {
		t.Fatalf("not serving after the flood: %v\nlog:\n%s", tryGet(c.addr), c.stderr)
	}
	if log := c.stderr.String(); strings.Contains(log, "too many open files") || strings.Contains(log, "engine stopped") {
		t.Fatalf("the child ran into EMFILE:\n%s", log)
	}
	t.Logf("%d of %d flood connections answered 503; fd budget %d of RLIMIT_NOFILE %d", n503, len(cs), st.FDsLimit, childNoFile)
}

// tryGet is getOK without failing the test.
func tryGet(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		return err
	}
	b := make([]byte, 64)
	n, err := io.ReadAtLeast(c, b, 12)
	if err != nil {
		return err
	}
	if string(b[:12]) != "HTTP/1.1 200" {
		return fmt.Errorf("answer %q", b[:n])
	}
	return nil
}
