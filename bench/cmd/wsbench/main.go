// Command wsbench runs the wsgate benchmark: wsgate side by side with nginx, HAProxy, Go's
// httputil.ReverseProxy and a direct connection, on loopback, and writes results.jsonl,
// report.md, one SVG chart per metric group and machine.md under bench/results/. See
// bench/README.md for what each scenario measures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Suite is every size and duration a run uses; flags override the preset's fields.
type Suite struct {
	Name         string
	Runs         int
	HTTPGen      string // wrk, go, both
	HTTPConns    int
	HTTPDur      time.Duration
	BulkConns    []int
	BulkDur      time.Duration
	RTTConns     int
	RTTRates     []float64 // one rtt cell per rate
	RTTDur       time.Duration
	IdleTunnels  int
	HSWorkers    int
	HSDur        time.Duration
	StormClients int           // tunnels a storm opens at once
	StormPar     int           // upgrades in flight during a storm
	StormSources int           // 127.0.0.x source addresses for the storm
	StormIdle    time.Duration // wait after the storm before reading RSS per tunnel
	Sources      int
	Scenarios    []string
	PeerNames    string
	Pin          bool
	Nice         int
	Settle       time.Duration // pause between measurements so one peer's tail does not tax the next
	IdleSettle   time.Duration // wait after opening idle tunnels before reading RSS: long enough to measure idle, not the burst
	WSGateBinary string
	OutDir       string
	Tag          string
	Command      string
	PrintReport  bool    // report.md to stdout at the end
	MaxOther     float64 // cores other processes may use during a window before it is measured again
	Retries      int     // how many times at most
}

var allScenarios = append([]string{"http", "bulk", "rtt", "idle", "handshake", "storm"}, tlsScenarios...)

func preset(name string) (Suite, error) {
	s := Suite{
		Name: name, Runs: 3, HTTPConns: 64, BulkConns: []int{1, 8, 64},
		RTTConns: 1000, RTTRates: []float64{5000, 20000}, Sources: 8, Scenarios: allScenarios, PeerNames: "all",
		HSWorkers: 16, MaxOther: 0.5, Retries: 2, Settle: 100 * time.Millisecond, IdleSettle: time.Second,
		StormPar: 1000, StormSources: 16, StormIdle: 12 * time.Second,
	}
	switch name {
	case "quick":
		// Sub-second windows; wrk only takes whole seconds, so the Go generator drives HTTP.
		s.HTTPGen, s.HTTPDur = "go", 400*time.Millisecond
		s.BulkDur, s.RTTDur, s.HSDur = 250*time.Millisecond, 500*time.Millisecond, 300*time.Millisecond
		s.IdleTunnels = 1000
		s.StormClients, s.StormIdle = 2000, 3*time.Second
		s.Settle = 50 * time.Millisecond
	case "default", "":
		s.Name = "default"
		s.HTTPGen, s.HTTPDur = "wrk", 2*time.Second
		s.BulkDur, s.RTTDur, s.HSDur = time.Second, 2*time.Second, time.Second
		s.IdleTunnels = 5000
		s.StormClients = 6000
	default:
		return s, fmt.Errorf("unknown suite %q (quick, default)", name)
	}
	return s, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
}

func run() error {
	suiteName := flag.String("suite", "default", "preset: quick (~4 min) or default (~12 min on 2 cores)")
	fPeers := flag.String("peers", "", "comma list: direct, wsgate (= wsgate-splice,wsgate-copy), nginx (= nginx-w1,nginx-w2), haproxy, httputil; default all")
	fScen := flag.String("scenarios", "", "comma list of "+strings.Join(allScenarios, ",")+"; default all")
	fRuns := flag.Int("runs", 0, "runs per figure (>= 3 for a median with spread)")
	fPin := flag.Bool("pin", false, "pin each proxy to CPU 0 and the load generator and backend to CPU 1 (taskset)")
	fNice := flag.Int("nice", 0, "run the benchmark (load, backend, proxies) at this nice level, e.g. -10 on a machine shared with CPU-bound jobs (root needed below 0)")
	fGen := flag.String("httpgen", "", "HTTP load generator: wrk, go or both (default: suite's choice; go when wrk is missing)")
	fHTTPConns := flag.Int("http-conns", 0, "HTTP keep-alive connections")
	fHTTPDur := flag.Duration("http-dur", 0, "HTTP window per run (wrk rounds to whole seconds)")
	fBulkConns := flag.String("bulk-conns", "", "WebSocket bulk connection counts, e.g. 1,8,64")
	fBulkDur := flag.Duration("bulk-dur", 0, "bulk window per run")
	fRTTConns := flag.Int("rtt-conns", 0, "connections for the open-loop echo test")
	fRTTRate := flag.String("rtt-rate", "", "aggregate messages per second for the open-loop echo test; a comma list runs one cell per rate (default 5000,20000)")
	fRTTDur := flag.Duration("rtt-dur", 0, "open-loop window per run")
	fIdle := flag.Int("idle", 0, "idle tunnels to open (keep under ~7000: HAProxy's maxconn and the 20000 fd limit)")
	fHSDur := flag.Duration("hs-dur", 0, "handshake-rate window per run")
	fHSWorkers := flag.Int("hs-workers", 0, "concurrent handshake loops")
	fStorm := flag.Int("storm", 0, "tunnels a reconnect storm opens (keep under ~7000: HAProxy's maxconn and the 20000 fd limit)")
	fStormPar := flag.Int("storm-par", 0, "upgrades in flight at once during the storm (default 1000)")
	fStormSources := flag.Int("storm-sources", 0, "127.0.0.x source addresses the storm's clients use (default 16)")
	fStormIdle := flag.Duration("storm-idle", 0, "wait after the storm before reading the proxy's RSS per tunnel (default 12s)")
	fSources := flag.Int("sources", 0, "127.0.0.x source addresses to spread client connections over")
	fMaxOther := flag.Float64("max-other", 0, "repeat a measurement when other processes used more than this many cores during it (default 0.5)")
	fRetries := flag.Int("retries", -1, "how many times at most to repeat a measurement disturbed by other processes (default 2; 0 disables)")
	fWSGate := flag.String("wsgate", "", "wsgate binary (default <repo>/bin/wsgate)")
	fOut := flag.String("out", "", "results root (default <repo>/bench/results)")
	fTag := flag.String("tag", "", "results directory name (default UTC timestamp and suite)")
	flag.Parse()

	s, err := preset(*suiteName)
	if err != nil {
		return err
	}
	s.PrintReport = true
	s.Command = "go run ./bench/cmd/wsbench " + strings.Join(os.Args[1:], " ")
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["peers"] {
		s.PeerNames = *fPeers
	}
	if set["scenarios"] {
		s.Scenarios = nil
		for _, x := range strings.Split(*fScen, ",") {
			x = strings.TrimSpace(x)
			if !contains(allScenarios, x) {
				return fmt.Errorf("unknown scenario %q (known: %s)", x, strings.Join(allScenarios, ","))
			}
			s.Scenarios = append(s.Scenarios, x)
		}
	}
	if set["runs"] {
		s.Runs = *fRuns
	}
	if s.Runs < 1 {
		return errors.New("-runs must be >= 1")
	}
	s.Pin = *fPin
	s.Nice = *fNice
	if set["httpgen"] {
		s.HTTPGen = *fGen
	}
	if set["http-conns"] {
		s.HTTPConns = *fHTTPConns
	}
	if set["http-dur"] {
		s.HTTPDur = *fHTTPDur
	}
	if set["bulk-conns"] {
		s.BulkConns = nil
		for _, x := range strings.Split(*fBulkConns, ",") {
			var n int
			if _, err := fmt.Sscan(strings.TrimSpace(x), &n); err != nil || n < 1 {
				return fmt.Errorf("-bulk-conns: bad count %q", x)
			}
			s.BulkConns = append(s.BulkConns, n)
		}
	}
	if set["bulk-dur"] {
		s.BulkDur = *fBulkDur
	}
	if set["rtt-conns"] {
		s.RTTConns = *fRTTConns
	}
	if set["rtt-rate"] {
		s.RTTRates = nil
		for _, x := range strings.Split(*fRTTRate, ",") {
			var r float64
			if _, err := fmt.Sscan(strings.TrimSpace(x), &r); err != nil || r <= 0 {
				return fmt.Errorf("-rtt-rate: bad rate %q", x)
			}
			s.RTTRates = append(s.RTTRates, r)
		}
	}
	if set["rtt-dur"] {
		s.RTTDur = *fRTTDur
	}
	if set["idle"] {
		s.IdleTunnels = *fIdle
	}
	if set["hs-dur"] {
		s.HSDur = *fHSDur
	}
	if set["hs-workers"] {
		s.HSWorkers = *fHSWorkers
	}
	if set["storm"] {
		s.StormClients = *fStorm
	}
	if set["storm-par"] {
		s.StormPar = *fStormPar
	}
	if set["storm-sources"] {
		s.StormSources = *fStormSources
	}
	if set["storm-idle"] {
		s.StormIdle = *fStormIdle
	}
	if set["max-other"] {
		s.MaxOther = *fMaxOther
	}
	if set["retries"] {
		s.Retries = *fRetries
	}
	if set["sources"] {
		s.Sources = *fSources
	}
	if s.IdleTunnels > 7000 {
		return fmt.Errorf("-idle %d: keep it under 7000 (one process holds both sides; fd hard limit 20000)", s.IdleTunnels)
	}
	if s.StormClients > 7000 || s.StormPar < 1 {
		return fmt.Errorf("-storm %d -storm-par %d: keep the storm under 7000 tunnels (HAProxy's maxconn, the 20000 fd limit) with at least 1 in flight", s.StormClients, s.StormPar)
	}

	raiseNoFile()
	if (s.Pin || s.Nice != 0) && os.Getenv("WSBENCH_REEXEC") == "" {
		return reexec(s.Pin, s.Nice)
	}

	root, err := repoRoot()
	if err != nil {
		return err
	}
	s.WSGateBinary = *fWSGate
	if s.WSGateBinary == "" {
		s.WSGateBinary = filepath.Join(root, "bin", "wsgate")
	}
	s.OutDir = *fOut
	if s.OutDir == "" {
		s.OutDir = filepath.Join(root, "bench", "results")
	}
	s.Tag = *fTag
	if s.Tag == "" {
		s.Tag = time.Now().UTC().Format("20060102T1504Z") + "-" + s.Name
	}
	switch s.HTTPGen {
	case "wrk", "both":
		if _, err := exec.LookPath("wrk"); err != nil {
			fmt.Fprintln(os.Stderr, "wsbench: wrk not found (make bench-deps); HTTP uses the Go generator")
			s.HTTPGen = "go"
		}
	case "go":
	default:
		return fmt.Errorf("-httpgen %q: want wrk, go or both", s.HTTPGen)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench(ctx, root, s)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// raiseNoFile lifts the soft fd limit to the hard one. Calling Setrlimit explicitly also makes
// the Go runtime pass the raised limit to the peers it starts (otherwise it restores the
// original soft limit in children).
func raiseNoFile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// reexec restarts this program under nice and/or taskset. Both must apply to every thread and
// every child (Linux keeps nice and affinity per thread, and a Go program has several threads
// before main runs), so they are set by the wrappers before exec rather than from inside. With
// pinning, this program, wrk and the backend run on CPU 1; each proxy is started on CPU 0.
func reexec(pin bool, nice int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var argv []string
	if nice != 0 {
		if _, err := exec.LookPath("nice"); err != nil {
			return errors.New("-nice needs nice (coreutils)")
		}
		argv = append(argv, "nice", "-n", strconv.Itoa(nice))
	}
	if pin {
		if _, err := exec.LookPath("taskset"); err != nil {
			return errors.New("-pin needs taskset (util-linux)")
		}
		argv = append(argv, "taskset", "-c", "1")
	}
	argv = append(append(argv, self), os.Args[1:]...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "WSBENCH_REEXEC=1")
	signal.Ignore(os.Interrupt) // the child handles ^C and cleans up its peers
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		return err
	}
	return nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/wsgate/wsgate") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the wsgate repository (no go.mod for github.com/wsgate/wsgate above the working directory)")
		}
		dir = parent
	}
}
