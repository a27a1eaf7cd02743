package route

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The source-address spread for real. The parent test re-executes this test binary in a new
// network namespace (CLONE_NEWNET, so nothing outside it is touched), where the child brings up
// lo, narrows net.ipv4.ip_local_port_range to 300 ports and opens, to one backend listening on
// 127.0.0.1, more connections than the range holds: from several 127.0.0.x sources through
// Dialer.DialContext (goroutine dialer) and through Dialer.ConnectNonblock (epoll-style). It also
// shows what IP_BIND_ADDRESS_NO_PORT adds: from one source, to two backend ports, bound sockets
// with the option get a port range per backend, without it one range in all.

const (
	netnsChildEnv  = "WSGATE_ROUTE_NETNS_CHILD"
	netnsPortRange = "40000 40299" // 300 ports, first even and last odd as the kernel prefers
	netnsRangeSize = 300
	netnsPerDialer = 1000 // connections per variant: more than three times the range
)

type netnsResult struct {
	Range          string         `json:"range"`
	Baseline       int            `json:"baseline"` // no source address: the kernel's choice
	BaselineErr    string         `json:"baseline_err"`
	Goroutine      int            `json:"goroutine"`
	GoroutineBySrc map[string]int `json:"goroutine_by_source"`
	Nonblock       int            `json:"nonblock"`
	NonblockBySrc  map[string]int `json:"nonblock_by_source"`
	NoPortTwo      int            `json:"noport_two_backends"` // one source, two backends, with the option
	PlainTwo       int            `json:"plain_two_backends"`  // the same without it
	PlainErr       string         `json:"plain_err"`
	Accepted       int            `json:"accepted"`
	Elapsed        string         `json:"elapsed"`
}

func TestSourceAddressesNetns(t *testing.T) {
	if os.Getenv(netnsChildEnv) == "1" {
		netnsChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes a network namespace (CLONE_NEWNET) to narrow ip_local_port_range")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip("cannot re-execute the test binary:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestSourceAddressesNetns$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), netnsChildEnv+"=1")
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
	var res netnsResult
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
	t.Logf("ip_local_port_range %s in the namespace (%s):", res.Range, res.Elapsed)
	t.Logf("  no source address: %d connections to one backend, then %s", res.Baseline, res.BaselineErr)
	t.Logf("  DialContext from 4 sources: %d of %d %v", res.Goroutine, netnsPerDialer, res.GoroutineBySrc)
	t.Logf("  ConnectNonblock from 4 sources: %d of %d %v", res.Nonblock, netnsPerDialer, res.NonblockBySrc)
	t.Logf("  one source, two backends: %d with IP_BIND_ADDRESS_NO_PORT, %d without (%s)", res.NoPortTwo, res.PlainTwo, res.PlainErr)
	if res.Baseline == 0 || res.Baseline > netnsRangeSize {
		t.Errorf("baseline %d connections: the narrowed range (%d ports) should bound it", res.Baseline, netnsRangeSize)
	}
	if res.Goroutine != netnsPerDialer || res.Nonblock != netnsPerDialer {
		t.Errorf("source spread: goroutine %d, non-blocking %d, want %d each", res.Goroutine, res.Nonblock, netnsPerDialer)
	}
	if res.NoPortTwo != 500 || res.PlainTwo > netnsRangeSize {
		t.Errorf("IP_BIND_ADDRESS_NO_PORT: %d with (want 500), %d without (want <= %d)", res.NoPortTwo, res.PlainTwo, netnsRangeSize)
	}
}

func netnsChild(t *testing.T) {
	start := time.Now()
	if err := loUp(); err != nil {
		t.Skip("cannot bring up lo in the namespace:", err)
	}
	const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	if err := os.WriteFile(rangeFile, []byte(netnsPortRange), 0o644); err != nil {
		t.Skip("cannot narrow ip_local_port_range:", err)
	}
	b, _ := os.ReadFile(rangeFile)
	res := netnsResult{Range: strings.Join(strings.Fields(string(b)), " "), GoroutineBySrc: map[string]int{}, NonblockBySrc: map[string]int{}}
	if res.Range != netnsPortRange {
		t.Fatalf("range is %q after writing %q", res.Range, netnsPortRange)
	}

	// Two backends that accept and hold everything.
	var mu sync.Mutex
	var held []net.Conn
	var lns []net.Listener
	for _, a := range []string{"127.0.0.1:8001", "127.0.0.1:8002"} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		}()
	}
	var clientFDs []int
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		for _, fd := range clientFDs {
			unix.Close(fd)
		}
		for _, ln := range lns {
			ln.Close()
		}
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	total := 0

	// Baseline: the kernel picks the source (127.0.0.1) and the port.
	for i := 0; i < 2*netnsRangeSize; i++ {
		c, err := net.DialTimeout("tcp", "127.0.0.1:8001", 5*time.Second)
		if err != nil {
			res.BaselineErr = err.Error()
			break
		}
		clients = append(clients, c)
		res.Baseline++
	}
	total += res.Baseline

	// Goroutine dialer from 127.0.0.2-5.
	d := NewDialer("127.0.0.1:8001", addrs(2, 4), 5*time.Second)
	for i := 0; i < netnsPerDialer; i++ {
		c, err := d.DialContext(context.Background())
		if err != nil {
			t.Errorf("DialContext %d: %v", i, err)
			break
		}
		clients = append(clients, c)
		res.GoroutineBySrc[c.LocalAddr().(*net.TCPAddr).IP.String()]++
		res.Goroutine++
	}
	total += res.Goroutine

	// Non-blocking connects from 127.0.0.6-9.
	d = NewDialer("127.0.0.1:8001", addrs(6, 4), 5*time.Second)
	for i := 0; i < netnsPerDialer; i++ {
		fd, connected, err := d.ConnectNonblock()
		if err != nil {
			t.Errorf("ConnectNonblock %d: %v", i, err)
			break
		}
		clientFDs = append(clientFDs, fd)
		if !connected {
			waitWritable(t, fd)
		}
		if err := ConnectResult(fd); err != nil {
			t.Errorf("ConnectResult %d: %v", i, err)
			break
		}
		sa, _ := unix.Getsockname(fd)
		ip := sa.(*unix.SockaddrInet4).Addr
		res.NonblockBySrc[netip.AddrFrom4(ip).String()]++
		res.Nonblock++
	}
	total += res.Nonblock

	// One source, two backends, alternating: with the option the port is chosen per 4-tuple.
	for i := 0; i < 500; i++ {
		fd, err := connectBlocking(netip.AddrFrom4([4]byte{127, 0, 0, 10}), uint16(8001+i%2), true)
		if err != nil {
			t.Errorf("with IP_BIND_ADDRESS_NO_PORT, connection %d: %v", i, err)
			break
		}
		clientFDs = append(clientFDs, fd)
		res.NoPortTwo++
	}
	total += res.NoPortTwo
	for i := 0; i < 500; i++ {
		fd, err := connectBlocking(netip.AddrFrom4([4]byte{127, 0, 0, 11}), uint16(8001+i%2), false)
		if err != nil {
			res.PlainErr = err.Error()
			break
		}
		clientFDs = append(clientFDs, fd)
		res.PlainTwo++
	}
	total += res.PlainTwo

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		res.Accepted = len(held)
		mu.Unlock()
		if res.Accepted >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res.Accepted != total {
		t.Errorf("backends accepted %d connections, clients opened %d", res.Accepted, total)
	}
	res.Elapsed = time.Since(start).Round(time.Millisecond).String()
	j, _ := json.Marshal(res)
	fmt.Printf("NETNS-RESULT %s\n", j)
}

func addrs(first, n int) []netip.Addr {
	var s []netip.Addr
	for i := 0; i < n; i++ {
		s = append(s, netip.AddrFrom4([4]byte{127, 0, 0, byte(first + i)}))
	}
	return s
}

// connectBlocking binds src (with or without IP_BIND_ADDRESS_NO_PORT) and connects to
// 127.0.0.1:port, for the comparison of the two bind modes.
func connectBlocking(src netip.Addr, port uint16, noPort bool) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if noPort {
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %v: %w", src, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(port)}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect from %v: %w", src, err)
	}
	return fd, nil
}

// loUp sets IFF_UP on lo (a new namespace starts with lo down).
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
