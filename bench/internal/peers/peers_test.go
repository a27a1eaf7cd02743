package peers

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/bench/internal/backend"
	"github.com/wsgate/wsgate/bench/internal/load"
)

func TestParseProcStat(t *testing.T) {
	// a command name with spaces and a ')' must not shift the fields
	line := []byte("4242 (we ird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3\n")
	st, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 17 || st.utime != 250 || st.stime != 75 {
		t.Fatalf("got %+v, want ppid 17 utime 250 stime 75", st)
	}
	if _, err := parseProcStat([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestParseVmRSSAndSysCPU(t *testing.T) {
	if got := parseVmRSS([]byte("Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\n")); got != 1234<<10 {
		t.Fatalf("VmRSS = %d", got)
	}
	s, err := parseSysCPU([]byte("cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Busy != 155*clockTick || s.IRQ != 5*clockTick || s.Elapsed != 1168*clockTick {
		t.Fatalf("got %+v", s)
	}
}

// The harness must see a child's CPU and memory: burn CPU in a child and read it back.
func TestTreeSeesChildren(t *testing.T) {
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
	if err := cmd.Start(); err != nil {
		t.Skip("no sh:", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	self := os.Getpid()
	deadline := time.Now().Add(10 * time.Second)
	for TreeCPU(cmd.Process.Pid) < 50*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := TreeCPU(cmd.Process.Pid); got < 50*time.Millisecond {
		t.Fatalf("child CPU %v, want >= 50ms", got)
	}
	found := false
	for _, p := range Tree(self) {
		if p == cmd.Process.Pid {
			found = true
		}
	}
	if !found {
		t.Fatalf("child %d not in Tree(%d)", cmd.Process.Pid, self)
	}
	if TreeRSS(self) < TreeRSS(cmd.Process.Pid) || TreeRSS(cmd.Process.Pid) <= 0 {
		t.Fatal("tree RSS does not include the child")
	}
}

func TestSelect(t *testing.T) {
	got, err := Select("haproxy,nginx,direct")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "direct,nginx-w1,nginx-w2,haproxy" {
		t.Fatalf("Select order/expansion: %v", names)
	}
	if _, err := Select("apache"); err == nil {
		t.Fatal("unknown peer accepted")
	}
}

// Each installed proxy, started the way the harness starts it, must serve HTTP and carry a
// WebSocket echo to the bench backend; a missing one must be skipped with a reason.
func TestPeersProxyHTTPAndWebSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: backend.Handler()}
	go srv.Serve(ln)
	defer srv.Close()
	env := Env{Dir: t.TempDir(), BackendAddr: ln.Addr().String()}
	if env.TLS, err = WriteTLSFiles(filepath.Join(env.Dir, "tls")); err != nil {
		t.Fatal(err)
	}
	env.Bins.Nginx, _ = exec.LookPath("nginx")
	env.Bins.HAProxy, _ = exec.LookPath("haproxy")
	hp := filepath.Join(t.TempDir(), "httputilproxy")
	if out, err := exec.Command("go", "build", "-o", hp, "github.com/wsgate/wsgate/bench/httputilproxy").CombinedOutput(); err == nil {
		env.Bins.HTTPUtil = hp
	} else {
		t.Logf("httputilproxy build: %v %s", err, out)
	}
	ctx := context.Background()
	for _, s := range All() {
		if strings.HasPrefix(s.Name, "wsgate") || s.Name == "nginx-w1" {
			continue // wsgate is tested in its own packages; one nginx shape is enough here
		}
		t.Run(s.Name, func(t *testing.T) {
			r, skip, err := s.Start(ctx, env)
			if err != nil {
				t.Fatal(err)
			}
			if skip != "" {
				t.Skip(skip)
			}
			defer r.Stop()
			open := load.OpenIdle
			if s.TLS { // the TLS peers carry wss with the run's certificate
				open = func(ctx context.Context, addr string, k, par int, locals []*net.TCPAddr) (*load.IdleSet, error) {
					return load.OpenIdleTLS(ctx, addr, k, par, locals, load.ClientTLS(0))
				}
			}
			set, err := open(ctx, r.Addr, 20, 4, load.SourceAddrs(2))
			if err != nil {
				t.Fatalf("%s: %v", s.Name, err)
			}
			defer set.Close()
			if ok, err := set.PingAll(ctx, 4, 5*time.Second); ok != 20 || err != nil {
				t.Fatalf("%s: %d/20 echoes, %v", s.Name, ok, err)
			}
			if !s.Direct() && TreeRSS(r.PID) <= 0 {
				t.Fatalf("%s: no RSS for pid %d", s.Name, r.PID)
			}
		})
	}
}
