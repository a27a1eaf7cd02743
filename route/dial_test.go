//go:build linux

package route

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// acceptSources accepts n connections and counts them by remote (source) IP.
func acceptSources(t *testing.T, ln net.Listener, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		got[c.RemoteAddr().(*net.TCPAddr).IP.String()]++
		c.Close()
	}
	return got
}

func loopbackSources(n int) []netip.Addr {
	var s []netip.Addr
	for i := 0; i < n; i++ {
		s = append(s, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}))
	}
	return s
}

// waitWritable polls fd for the end of a non-blocking connect.
func waitWritable(t *testing.T, fd int) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(pfd, 10000)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 1 {
			t.Fatalf("poll: %d, %v", n, err)
		}
		return
	}
}

func TestDialerSpreadsSources(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := NewDialer(ln.Addr().String(), loopbackSources(3), time.Second)
	// Goroutine dialer.
	for i := 0; i < 9; i++ {
		c, err := d.DialContext(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	want := map[string]int{"127.0.0.2": 3, "127.0.0.3": 3, "127.0.0.4": 3}
	if got := acceptSources(t, ln, 9); !equalCounts(got, want) {
		t.Errorf("goroutine dialer sources %v, want %v", got, want)
	}
	// Non-blocking connect.
	for i := 0; i < 9; i++ {
		fd, connected, err := d.ConnectNonblock()
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if !connected {
			waitWritable(t, fd)
		}
		if err := ConnectResult(fd); err != nil {
			t.Fatal(err)
		}
		if v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); v == 0 {
			t.Error("TCP_NODELAY not set")
		}
		if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
			t.Error("socket is blocking")
		}
	}
	if got := acceptSources(t, ln, 9); !equalCounts(got, want) {
		t.Errorf("non-blocking sources %v, want %v", got, want)
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := NewDialer(addr, loopbackSources(1), time.Second)
	_, err = d.DialContext(context.Background())
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, syscall.ECONNREFUSED) || de.Timeout() {
		t.Fatalf("DialContext: %v", err)
	}
	if want := "backend " + addr + ": connect from 127.0.0.2: dial tcp"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want prefix %q", err, want)
	}
	fd, connected, err := d.ConnectNonblock()
	if err != nil {
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatal(err)
		}
		return // refused at once
	}
	defer unix.Close(fd)
	if !connected {
		waitWritable(t, fd)
	}
	if err := ConnectResult(fd); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("ConnectResult = %v, want ECONNREFUSED", err)
	}
}

func TestDialerFamilies(t *testing.T) {
	d := NewDialer("[::1]:9", loopbackSources(2), 0)
	if len(d.Sources()) != 0 || d.Timeout() != DefaultDialTimeout {
		t.Errorf("IPv4 sources kept for an IPv6 backend: %v", d.Sources())
	}
	d = NewDialer("localhost:9", loopbackSources(2), 0)
	if len(d.Sources()) != 2 {
		t.Errorf("sources dropped for a name: %v", d.Sources())
	}
	if _, _, err := d.ConnectNonblock(); err == nil || !strings.Contains(err.Error(), "needs an IP literal") {
		t.Errorf("non-blocking connect to a name: %v", err)
	}
	if _, _, err := ConnectNonblock(netip.MustParseAddrPort("[::1]:9"), netip.MustParseAddr("127.0.0.2")); err == nil {
		t.Error("mixed families accepted")
	}
}

func TestDialTimeout(t *testing.T) {
	// A listener whose backlog is full stops answering SYNs: the dial times out.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port)).String()
	d := NewDialer(addr, nil, 200*time.Millisecond)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 8; i++ {
		c, err := d.DialContext(context.Background())
		if err == nil {
			conns = append(conns, c) // filling the backlog
			continue
		}
		var de *DialError
		if !errors.As(err, &de) || !de.Timeout() {
			t.Fatalf("dial %d: %v, want a timeout", i, err)
		}
		return
	}
	t.Skip("the kernel kept accepting into a zero backlog; no timeout to observe")
}

// AddrPort and NextSource give a caller that connects by itself what ConnectNonblock would use.
func TestDialerAddrPortNextSource(t *testing.T) {
	src := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("::1")}
	d := NewDialer("127.0.0.1:3100", src, 0)
	if d.AddrPort() != netip.MustParseAddrPort("127.0.0.1:3100") {
		t.Fatalf("AddrPort %v", d.AddrPort())
	}
	var got []string
	for i := 0; i < 4; i++ {
		got = append(got, d.NextSource().String())
	}
	if strings.Join(got, " ") != "127.0.0.2 127.0.0.3 127.0.0.2 127.0.0.3" {
		t.Fatalf("sources in turn: %v (the IPv6 one dropped for an IPv4 backend)", got)
	}
	if n := NewDialer("loki.internal:3100", nil, 0); n.AddrPort().IsValid() || n.NextSource().IsValid() {
		t.Fatalf("a named backend: AddrPort %v, source %v", n.AddrPort(), n.NextSource())
	}
}
