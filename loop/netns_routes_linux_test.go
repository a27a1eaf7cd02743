package loop_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/route"
)

// The source-address spread shown for real through wsgate. The parent re-executes this test
// binary in a new network namespace (CLONE_NEWNET: nothing outside it is touched, everything is
// loopback), where the child brings lo up, narrows net.ipv4.ip_local_port_range to 300 ports,
// runs a backend on 127.0.0.1:8001 that answers every upgrade with a 101 and holds the tunnel,
// and two wsgates in front of it: one whose route dials from source_addresses 127.0.0.2-5, one
// without (the kernel picks 127.0.0.1). Clients reach wsgate from 127.0.0.10-14, so their own
// connections do not run out of ports. Through the first wsgate it opens more tunnels to the one
// backend than the range holds; through the second, tunnels until a dial fails.

const (
	routesNetnsEnv   = "WSGATE_LOOP_NETNS_CHILD"
	routesNetnsRange = "40000 40299" // 300 ports
	routesNetnsSize  = 300
	routesNetnsWant  = 1000 // tunnels through the wsgate with source addresses: > 3x the range
)

type routesNetnsResult struct {
	Range       string         `json:"range"`
	Sourced     int            `json:"sourced"`
	BySource    map[string]int `json:"by_source"` // backend-side view: the source of each conn
	SourcedErr  string         `json:"sourced_err"`
	Baseline    int            `json:"baseline"`
	BaselineErr string         `json:"baseline_err"`
	Held        int            `json:"held"` // tunnels the backend held at the end
	Elapsed     string         `json:"elapsed"`
}

func TestRoutesSourceAddressesNetns(t *testing.T) {
	if os.Getenv(routesNetnsEnv) == "1" {
		routesNetnsChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes a network namespace (CLONE_NEWNET) to narrow ip_local_port_range")
	}
	if raiseNofile(t) < 8000 {
		t.Skip("needs RLIMIT_NOFILE >= 8000")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip("cannot re-execute the test binary:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestRoutesSourceAddressesNetns$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), routesNetnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	var perr *os.PathError
	if errors.As(err, &perr) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
		t.Skip("network namespaces are not available here:", err)
	}
	if err != nil {
		t.Fatalf("child in a new network namespace: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skipf("child skipped:\n%s", out)
	}
	var res routesNetnsResult
	for _, line := range strings.Split(string(out), "\n") {
		if i := strings.Index(line, "NETNS-RESULT "); i >= 0 {
			if err := json.Unmarshal([]byte(line[i+len("NETNS-RESULT "):]), &res); err != nil {
				t.Fatal(err)
			}
		}
	}
	if res.Range == "" {
		t.Fatalf("no result from the child:\n%s", out)
	}
	t.Logf("ip_local_port_range %s (%d ports) in the namespace, %s:", res.Range, routesNetnsSize, res.Elapsed)
	t.Logf("  wsgate with source_addresses 127.0.0.2-5: %d of %d tunnels to 127.0.0.1:8001 %v %s", res.Sourced, routesNetnsWant, res.BySource, res.SourcedErr)
	t.Logf("  wsgate without: %d tunnels, then %s", res.Baseline, res.BaselineErr)
	if res.Sourced != routesNetnsWant {
		t.Errorf("with source addresses: %d tunnels, want %d (%s)", res.Sourced, routesNetnsWant, res.SourcedErr)
	}
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		if n := res.BySource[src]; n < routesNetnsWant/8 || n > routesNetnsSize {
			t.Errorf("source %s carried %d tunnels: want a share of the spread, at most the range (%d)", src, n, routesNetnsSize)
		}
	}
	if res.Baseline == 0 || res.Baseline > routesNetnsSize {
		t.Errorf("without source addresses: %d tunnels, want at most the range (%d)", res.Baseline, routesNetnsSize)
	}
	if res.Held != res.Sourced+res.Baseline {
		t.Errorf("the backend held %d tunnels, clients opened %d", res.Held, res.Sourced+res.Baseline)
	}
}

func routesNetnsChild(t *testing.T) {
	start := time.Now()
	raiseNofile(t)
	if err := setLoUp(); err != nil {
		t.Skip("cannot bring up lo in the namespace:", err)
	}
	const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	if err := os.WriteFile(rangeFile, []byte(routesNetnsRange), 0o644); err != nil {
		t.Skip("cannot narrow ip_local_port_range:", err)
	}
	b, _ := os.ReadFile(rangeFile)
	res := routesNetnsResult{Range: strings.Join(strings.Fields(string(b)), " "), BySource: map[string]int{}}
	if res.Range != routesNetnsRange {
		t.Fatalf("range is %q after writing %q", res.Range, routesNetnsRange)
	}

	// The backend: a 101 to every upgrade, then hold the tunnel until the end.
	ln, err := net.Listen("tcp", "127.0.0.1:8001")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	bySource := map[string]int{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					c.Close()
					return
				}
				if _, err := io.WriteString(c, response101(req.Header.Get("Sec-WebSocket-Key"))); err != nil {
					c.Close()
					return
				}
				mu.Lock()
				held = append(held, c)
				bySource[c.RemoteAddr().(*net.TCPAddr).IP.String()]++
				mu.Unlock()
			}()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()

	start1 := func(spec route.Spec) string {
		cfg := baseConfig("")
		cfg.Listen = "127.0.0.1:0"
		table, err := route.NewTable([]route.Spec{spec}, cfg.RouteDefaults(), nil)
		if err != nil {
			t.Fatal(err)
		}
		table.Start()
		t.Cleanup(table.Close)
		cfg.Routes = table
		s, err := loop.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop(context.Background()) })
		return s.Addr()
	}
	sourced := route.Spec{Prefix: "/", Backends: []string{"127.0.0.1:8001"}}
	for i := 2; i <= 5; i++ {
		sourced.SourceAddrs = append(sourced.SourceAddrs, netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}))
	}
	withSources := start1(sourced)
	without := start1(route.Spec{Prefix: "/", Backends: []string{"127.0.0.1:8001"}})

	// Clients from 127.0.0.10-14 (IP_BIND_ADDRESS_NO_PORT): 200 each to one wsgate port.
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	n := 0
	open := func(addr string) error {
		src := netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + n%5)})
		n++
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Control: route.BindNoPortControl}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("client connect from %v: %w", src, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		key := wsKey()
		io.WriteString(c, upgradeRequest("x", "/tail", key, ""))
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			c.Close()
			return err
		}
		if resp.StatusCode != 101 {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			c.Close()
			return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		}
		c.SetDeadline(time.Time{})
		clients = append(clients, c)
		return nil
	}
	for i := 0; i < routesNetnsWant; i++ {
		if err := open(withSources); err != nil {
			res.SourcedErr = err.Error()
			break
		}
		res.Sourced++
	}
	for i := 0; i < 2*routesNetnsSize; i++ {
		if err := open(without); err != nil {
			res.BaselineErr = err.Error()
			break
		}
		res.Baseline++
	}
	waitFor(20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) >= res.Sourced+res.Baseline
	})
	mu.Lock()
	res.Held = len(held)
	for k, v := range bySource {
		if k != "127.0.0.1" {
			res.BySource[k] = v
		}
	}
	mu.Unlock()
	res.Elapsed = time.Since(start).Round(time.Millisecond).String()
	j, _ := json.Marshal(res)
	fmt.Printf("NETNS-RESULT %s\n", j)
}

// setLoUp sets IFF_UP on lo (a new namespace starts with lo down).
func setLoUp() error {
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
