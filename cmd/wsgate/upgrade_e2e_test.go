//go:build linux

package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The binary upgrade end to end (issue 12's "Done means"), in a network namespace of its own so
// that it can set net.ipv4.tcp_migrate_req=1 there:
//
//	test process ── CLONE_NEWNET ──> orchestrator (this test again, role "netns"): lo up,
//	    tcp_migrate_req=1, the backends, wsgate (the real binary), and a clients process (this
//	    test again, role "clients": the WebSocket tunnels and the HTTP load, so that no process
//	    holds more than RLIMIT_NOFILE)
//
// The tunnels carry numbered WebSocket messages both ways, checked in order at each end; the
// HTTP load runs at half the capacity the same client measured first, on keep-alive and new
// connections; then wsgate is upgraded (SIGUSR2) several times in a row. Afterwards: no tunnel
// closed, every message arrived once and in order, no request failed or was refused, each old
// pid was gone within seconds, and the tunnels' sockets are the very same sockets (inodes) in
// every generation: moved, never re-made, never in two processes once the old one is gone.

const (
	e2eBinEnv    = "WSGATE_E2E_BIN"
	e2eRoleEnv   = "WSGATE_E2E_ROLE"
	e2eParamsEnv = "WSGATE_E2E_PARAMS"
)

type e2eParams struct {
	Tunnels     int
	MsgEvery    time.Duration // per tunnel and direction
	Upgrades    int
	Workers     int // HTTP load goroutines (half keep-alive, half a new connection per request)
	Listen      string
	Backend     string // set by the orchestrator for the clients
	WsgateFlags []string
	// TLS: wsgate serves TLS (a certificate the orchestrator makes, CAFile its CA), and every
	// client is a TLS 1.3 crypto/tls client: the tunnels are WSS, their sessions pass with them.
	TLS    bool
	CAFile string
}

var e2eTLSOnce struct {
	sync.Once
	cfg *tls.Config
}

// dial connects to wsgate: TCP, or TLS 1.3 when p.TLS (new connections resume a session
// when they can, as browsers do).
func (p e2eParams) dial(d time.Duration) (net.Conn, error) {
	if !p.TLS {
		return net.DialTimeout("tcp", p.Listen, d)
	}
	e2eTLSOnce.Do(func() {
		pool := x509.NewCertPool()
		if b, err := os.ReadFile(p.CAFile); err == nil {
			pool.AppendCertsFromPEM(b)
		}
		e2eTLSOnce.cfg = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(256)}
	})
	return tls.DialWithDialer(&net.Dialer{Timeout: d}, "tcp", p.Listen, e2eTLSOnce.cfg)
}

// e2eRole runs this test binary's part when it was re-executed for one (the orchestrator in the
// network namespace, or the clients) and reports true; in the parent it skips without root or
// without tcp_migrate_req (both needed for the namespace the test makes), else reports false.
func e2eRole(t *testing.T) bool {
	switch os.Getenv(e2eRoleEnv) {
	case "netns":
		e2eOrchestrator(t)
		return true
	case "clients":
		e2eClients(t)
		return true
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for a network namespace of its own (tcp_migrate_req is per namespace)")
	}
	if _, err := os.Stat("/proc/sys/net/ipv4/tcp_migrate_req"); err != nil {
		t.Skip("no net.ipv4.tcp_migrate_req (Linux 5.14+):", err)
	}
	return false
}

func defaultE2EParams() e2eParams {
	return e2eParams{Tunnels: 2000, MsgEvery: time.Second, Upgrades: 3, Workers: 16, Listen: "127.0.0.1:18443",
		WsgateFlags: []string{"-loops", "2", "-tunnel-loops", "2", "-drain-timeout", "20s", "-close-spread", "5s"}}
}

func TestBinaryUpgradeE2E(t *testing.T) {
	if e2eRole(t) {
		return
	}
	runE2E(t, defaultE2EParams())
}

// The same over TLS: 1,000 WSS tunnels (TLS 1.3, crypto/tls clients) and HTTPS load, three
// upgrades: every tunnel passes with its keys and sequence numbers.
func TestBinaryUpgradeE2ETLS(t *testing.T) {
	if e2eRole(t) {
		return
	}
	p := defaultE2EParams()
	p.Tunnels, p.TLS = 1000, true
	runE2E(t, p)
}

// The same with HTTP only (no tunnels): keep-alive and new connections through three upgrades.
func TestBinaryUpgradeE2EHTTP(t *testing.T) {
	if e2eRole(t) {
		return
	}
	p := defaultE2EParams()
	p.Tunnels = 0
	runE2E(t, p)
}

// runE2E runs the orchestrator in a new network namespace and reports what it logged.
func runE2E(t *testing.T, p e2eParams) {
	pj, _ := json.Marshal(p)
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), e2eRoleEnv+"=netns", e2eBinEnv+"="+binPath, e2eParamsEnv+"="+string(pj))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if errors.Is(err, unix.EPERM) {
		t.Skip("no network namespace for us:", err)
	}
	t.Logf("orchestrator (in its own network namespace):\n%s", out)
	if err != nil {
		t.Fatalf("orchestrator: %v", err)
	}
}

func e2eParamsFromEnv(t *testing.T) e2eParams {
	var p e2eParams
	if err := json.Unmarshal([]byte(os.Getenv(e2eParamsEnv)), &p); err != nil {
		t.Fatalf("%s: %v", e2eParamsEnv, err)
	}
	return p
}

// ---------------------------------------------------------------------------------------------
// messages: a WebSocket binary frame with a 12-byte payload, tunnel index (u32) and sequence
// number (u64); masked from the client as RFC 6455 wants.

// churnIdx names the short tunnels of the load (not counted per tunnel).
const churnIdx = 1<<32 - 2

const (
	msgPayload  = 12
	clientFrame = 2 + 4 + msgPayload
	serverFrame = 2 + msgPayload
)

func appendClientFrame(b []byte, idx uint32, seq uint64, mask [4]byte) []byte {
	b = append(b, 0x82, 0x80|msgPayload)
	b = append(b, mask[:]...)
	var p [msgPayload]byte
	binary.BigEndian.PutUint32(p[:], idx)
	binary.BigEndian.PutUint64(p[4:], seq)
	for i := range p {
		p[i] ^= mask[i&3]
	}
	return append(b, p[:]...)
}

func appendServerFrame(b []byte, idx uint32, seq uint64) []byte {
	b = append(b, 0x82, msgPayload)
	b = binary.BigEndian.AppendUint32(b, idx)
	return binary.BigEndian.AppendUint64(b, seq)
}

func parseClientFrame(f []byte) (uint32, uint64, error) {
	if f[0] != 0x82 || f[1] != 0x80|msgPayload {
		return 0, 0, fmt.Errorf("bad client frame header % x", f[:2])
	}
	var p [msgPayload]byte
	for i := range p {
		p[i] = f[6+i] ^ f[2+i&3]
	}
	return binary.BigEndian.Uint32(p[:]), binary.BigEndian.Uint64(p[4:]), nil
}

func parseServerFrame(f []byte) (uint32, uint64, error) {
	if f[0] != 0x82 || f[1] != msgPayload {
		return 0, 0, fmt.Errorf("bad server frame header % x", f[:2])
	}
	return binary.BigEndian.Uint32(f[2:]), binary.BigEndian.Uint64(f[6:]), nil
}

// tunnelCount is one end's view of one tunnel.
type tunnelCount struct {
	Sent, Recv uint64 // messages written, messages read in order
	Bad        uint64 // messages out of sequence (lost, duplicated or reordered)
	Closed     bool   // the connection ended
	Err        string `json:",omitempty"`
}

// ---------------------------------------------------------------------------------------------
// the backend (in the orchestrator): HTTP "ok", and numbered-message WebSockets.

type msgBackend struct {
	addr    string
	mu      sync.Mutex
	conns   map[uint32]net.Conn
	counts  []tunnelCount // by tunnel index
	sending atomic.Bool
	peers   map[uint32]int // tunnel index -> wsgate's local port of its backend connection
	stop    chan struct{}
}

func newMsgBackend(t *testing.T, p e2eParams) *msgBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &msgBackend{addr: ln.Addr().String(), conns: map[uint32]net.Conn{}, counts: make([]tunnelCount, p.Tunnels),
		peers: map[uint32]int{}, stop: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(b.serve), ErrorLog: nil}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(b.stop)
		srv.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	b.sending.Store(true)
	go b.sender(p)
	return b
}

func (b *msgBackend) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		io.WriteString(w, "ok")
		return
	}
	c, bw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
	if err := bw.Flush(); err != nil {
		c.Close()
		return
	}
	go b.read(c, bw.Reader)
}

// read checks the client's messages on one tunnel; the first one names the tunnel.
func (b *msgBackend) read(c net.Conn, r *bufio.Reader) {
	f := make([]byte, clientFrame)
	idx := uint32(1<<32 - 1)
	for {
		if _, err := io.ReadFull(r, f); err != nil {
			b.mu.Lock()
			if idx < uint32(len(b.counts)) {
				b.counts[idx].Closed = true
				b.counts[idx].Err = err.Error()
				delete(b.conns, idx)
			}
			b.mu.Unlock()
			c.Close()
			return
		}
		i, seq, err := parseClientFrame(f)
		if err == nil && i == churnIdx {
			// A short tunnel: echo its one message as a server frame, then wait for its close.
			c.Write(appendServerFrame(nil, i, seq))
			continue
		}
		b.mu.Lock()
		if idx == 1<<32-1 && err == nil && i < uint32(len(b.counts)) {
			idx = i
			b.conns[idx] = c
			b.peers[idx] = c.RemoteAddr().(*net.TCPAddr).Port
		}
		if idx < uint32(len(b.counts)) {
			tc := &b.counts[idx]
			if err != nil || i != idx || seq != tc.Recv {
				tc.Bad++
			} else {
				tc.Recv++
			}
		}
		b.mu.Unlock()
	}
}

// sender writes the next numbered message to every tunnel once per MsgEvery, spread over it.
func (b *msgBackend) sender(p e2eParams) {
	const slots = 100
	tick := time.NewTicker(p.MsgEvery / slots)
	defer tick.Stop()
	buf := make([]byte, 0, serverFrame)
	for n := 0; ; n++ {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		if !b.sending.Load() {
			continue
		}
		b.mu.Lock()
		for idx, c := range b.conns {
			if int(idx)%slots != n%slots {
				continue
			}
			tc := &b.counts[idx]
			buf = appendServerFrame(buf[:0], idx, tc.Sent)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(buf); err != nil {
				tc.Err = "write: " + err.Error()
				continue
			}
			tc.Sent++
		}
		b.mu.Unlock()
	}
}

func (b *msgBackend) snapshot() []tunnelCount {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]tunnelCount(nil), b.counts...)
}

// ---------------------------------------------------------------------------------------------
// the orchestrator

func e2eOrchestrator(t *testing.T) {
	p := e2eParamsFromEnv(t)
	if err := e2eLoUp(); err != nil {
		t.Fatalf("lo up: %v", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte("1"), 0); err != nil {
		t.Fatalf("tcp_migrate_req: %v", err)
	}
	// Successors outlive their parents: they are reparented to us, and we reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("subreaper: %v", err)
	}
	be := newMsgBackend(t, p)
	p.Backend = be.addr

	dir := t.TempDir()
	logPath := filepath.Join(dir, "wsgate.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	args := append([]string{"-listen", p.Listen, "-backend", be.addr}, p.WsgateFlags...)
	if p.TLS {
		f := writePKI(t, filepath.Join(dir, "pki"))
		args = append(args, "-tls-cert", f.Cert, "-tls-key", f.Key)
		p.CAFile = f.CA
	}
	ws := exec.Command(binPath, args...)
	ws.Stdout, ws.Stderr = lf, lf // files, not pipes: a successor inherits them and outlives ws
	if err := ws.Start(); err != nil {
		t.Fatal(err)
	}
	pid := ws.Process.Pid
	pids := []int{pid}
	defer func() {
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
			var st unix.WaitStatus
			unix.Wait4(p, &st, unix.WNOHANG, nil)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("wsgate log:\n%s", b)
		}
	}()
	waitFileLog(t, logPath, "wsgate listening", 1, 20*time.Second)

	cl := startE2EClients(t, p)
	tunnelPorts := cl.readyPorts(t, 120*time.Second)
	t.Logf("%d tunnels open through wsgate pid %d", len(tunnelPorts), pid)
	listenPort, _ := strconv.Atoi(p.Listen[strings.LastIndexByte(p.Listen, ':')+1:])
	backendPort := be.port()
	classify := func(snap fdSnapshot) (tunnelInodes map[uint64]bool) {
		tunnelInodes = map[uint64]bool{}
		b := be.peerPorts()
		for ino, s := range snap.tcp {
			if s.local == listenPort && tunnelPorts[s.remote] || s.remote == backendPort && b[s.local] {
				tunnelInodes[ino] = true
			}
		}
		return tunnelInodes
	}
	gen0 := takeFDs(t, pid)
	tunnels0 := classify(gen0)
	t.Logf("generation 0 (pid %d): %s; tunnel sockets %d", pid, gen0, len(tunnels0))
	if len(tunnels0) != 2*p.Tunnels {
		t.Fatalf("pid %d holds %d tunnel sockets, want %d", pid, len(tunnels0), 2*p.Tunnels)
	}
	fixed0 := gen0.fixed(tunnels0)

	capacity := cl.capacity(t, 2*time.Second)
	rate := capacity / 2
	t.Logf("HTTP capacity of this client through wsgate: %.0f req/s; load at %.0f req/s during the upgrades", capacity, rate)
	cl.send(t, fmt.Sprintf("load %.0f", rate))
	time.Sleep(time.Second)

	var upgradeTimes []string
	logSeen := 0
	for gen := 1; gen <= p.Upgrades; gen++ {
		old := pid
		start := time.Now()
		if err := unix.Kill(old, unix.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		logSeen++
		line := waitFileLog(t, logPath, "SIGUSR2: upgrade: handed over", logSeen, 60*time.Second)
		handed := time.Since(start)
		m := regexp.MustCompile(`successor=(\d+)`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("no successor pid in %q", line)
		}
		pid, _ = strconv.Atoi(m[1])
		pids = append(pids, pid)
		gone := waitExit(t, old, 30*time.Second)
		snap := takeFDs(t, pid)
		tun := classify(snap)
		same := len(tun) == len(tunnels0)
		for ino := range tunnels0 {
			same = same && tun[ino]
		}
		t.Logf("upgrade %d: pid %d -> %d: handed over after %v, old pid gone after %v; new: %s; tunnel sockets %d, the same inodes as generation 0: %v",
			gen, old, pid, handed.Round(time.Millisecond), gone.Round(time.Millisecond), snap, len(tun), same)
		t.Logf("  old: %s", strings.TrimSpace(line[strings.Index(line, "msg="):]))
		if !same {
			t.Errorf("upgrade %d: the successor holds %d tunnel sockets, not exactly generation 0's %d", gen, len(tun), len(tunnels0))
		}
		if gone > 10*time.Second {
			t.Errorf("upgrade %d: old pid %d exited %v after SIGUSR2", gen, old, gone)
		}
		// The old process closed its copy of every fd it passed: nothing is held twice.
		if fm := regexp.MustCompile(`open_fds_before=(\d+) open_fds_after=(\d+)`).FindStringSubmatch(line); fm == nil {
			t.Errorf("upgrade %d: no fd counts in %q", gen, line)
		} else if before, _ := strconv.Atoi(fm[1]); true {
			after, _ := strconv.Atoi(fm[2])
			if after > before-2*p.Tunnels || after > 200 {
				t.Errorf("upgrade %d: the old process held %d fds before and %d after handing over %d tunnels", gen, before, after, p.Tunnels)
			}
		}
		upgradeTimes = append(upgradeTimes, handed.Round(time.Millisecond).String())
		time.Sleep(time.Second) // traffic under the new process
	}

	load := cl.stop(t)
	be.sending.Store(false)
	clientCounts, backendCounts := cl.settle(t, be, 15*time.Second)
	t.Logf("HTTP during the upgrades: %d ok, %d failed %v", load.OK, load.Failed, load.Errors)
	t.Logf("short tunnels opened, used and closed during the upgrades: %d ok, %d failed", load.ChurnOK, load.ChurnFailed)
	var sent, recv, bad, closed [2]uint64
	for i := range clientCounts {
		c, b := clientCounts[i], backendCounts[i]
		sent[0] += c.Sent
		recv[0] += b.Recv
		sent[1] += b.Sent
		recv[1] += c.Recv
		bad[0] += b.Bad
		bad[1] += c.Bad
		if c.Closed {
			closed[0]++
		}
		if b.Closed {
			closed[1]++
		}
	}
	t.Logf("messages client->backend: %d sent, %d received in order, %d out of sequence", sent[0], recv[0], bad[0])
	t.Logf("messages backend->client: %d sent, %d received in order, %d out of sequence", sent[1], recv[1], bad[1])
	t.Logf("tunnels closed: %d seen by clients, %d seen by the backend; upgrades handed over after %v", closed[0], closed[1], upgradeTimes)
	if sent != recv || bad != [2]uint64{} || closed != [2]uint64{} {
		t.Errorf("tunnels: sent %v, received %v, out of sequence %v, closed %v", sent, recv, bad, closed)
		for i := range clientCounts {
			if c, b := clientCounts[i], backendCounts[i]; c.Sent != b.Recv || b.Sent != c.Recv || c.Closed || b.Closed || c.Bad+b.Bad > 0 {
				t.Logf("tunnel %d: client %+v backend %+v", i, c, b)
				break
			}
		}
	}
	if load.Failed != 0 || load.OK == 0 {
		t.Errorf("HTTP: %d ok, %d failed: %v", load.OK, load.Failed, load.Errors)
	}
	if load.ChurnFailed != 0 || load.ChurnOK == 0 {
		t.Errorf("short tunnels: %d ok, %d failed: %v", load.ChurnOK, load.ChurnFailed, load.Errors)
	}
	// Quiescent: the load's connections are gone; what is left besides the tunnels is the
	// process's fixed set, as in generation 0.
	time.Sleep(500 * time.Millisecond)
	final := takeFDs(t, pid)
	tun := classify(final)
	fixed := final.fixed(tun)
	t.Logf("final (pid %d): %s; fixed fds %v, generation 0's %v", pid, final, fixed, fixed0)
	if fixed.sockets() != fixed0.sockets() || len(tun) != 2*p.Tunnels {
		t.Errorf("fd leak or loss: fixed sockets %d (generation 0: %d), tunnel sockets %d", fixed.sockets(), fixed0.sockets(), len(tun))
	}
	cl.close()
	unix.Kill(pid, unix.SIGTERM)
	waitExit(t, pid, 60*time.Second)
}

func (b *msgBackend) port() int { return b.addrPort() }

func (b *msgBackend) addrPort() int {
	_, ps, _ := net.SplitHostPort(b.addr)
	p, _ := strconv.Atoi(ps)
	return p
}

// peerPorts are the local ports of wsgate's backend connections of the tunnels.
func (b *msgBackend) peerPorts() map[int]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := map[int]bool{}
	for _, p := range b.peers {
		m[p] = true
	}
	return m
}

// waitExit reaps pid (our child, or an orphan reparented to us) and returns how long it took.
func waitExit(t *testing.T, pid int, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		var st unix.WaitStatus
		got, err := unix.Wait4(pid, &st, unix.WNOHANG, nil)
		if got == pid {
			if !st.Exited() || st.ExitStatus() != 0 {
				t.Errorf("pid %d ended with %v", pid, st)
			}
			return time.Since(start)
		}
		if err == unix.ECHILD {
			// Not ours to reap (already reaped elsewhere): it is gone when /proc says so.
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				return time.Since(start)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d still running after %v", pid, d)
	return 0
}

// waitFileLog waits until the n-th line containing s is in the file, and returns it.
func waitFileLog(t *testing.T, path, s string, n int, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(path)
		seen := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s) {
				if seen++; seen == n {
					return line
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d-th %q in the log within %v:\n%s", n, s, d, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func e2eLoUp() error {
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

// ---------------------------------------------------------------------------------------------
// fds of a process, by kind; TCP sockets with their ports (from /proc/net/tcp, this namespace's).

type tcpEnds struct{ local, remote, state int }

type fdSnapshot struct {
	total, sockets, unixs, pipes, anon, other int
	tcp                                       map[uint64]tcpEnds // socket inode -> ends
	inodes                                    []uint64           // every socket inode
}

func (s fdSnapshot) String() string {
	return fmt.Sprintf("%d fds: %d TCP sockets, %d other sockets, %d pipes, %d epoll/eventfd, %d other", s.total, len(s.tcp), s.sockets-len(s.tcp), s.pipes, s.anon, s.other)
}

// fixedFDs is what a snapshot holds besides the tunnels and the connections of the moment.
type fixedFDs struct {
	Listeners, Unix, Anon, Other, OtherTCP int
}

func (f fixedFDs) sockets() int { return f.Listeners + f.Unix }

func (s fdSnapshot) fixed(tunnels map[uint64]bool) fixedFDs {
	f := fixedFDs{Unix: s.sockets - len(s.tcp), Anon: s.anon, Other: s.other}
	for ino, e := range s.tcp {
		switch {
		case tunnels[ino]:
		case e.state == 0x0A: // LISTEN
			f.Listeners++
		default:
			f.OtherTCP++
		}
	}
	return f
}

func takeFDs(t *testing.T, pid int) fdSnapshot {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("fds of pid %d: %v", pid, err)
	}
	tcp := readProcNetTCP(t)
	s := fdSnapshot{tcp: map[uint64]tcpEnds{}}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		s.total++
		switch {
		case strings.HasPrefix(l, "socket:["):
			s.sockets++
			ino, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"), 10, 64)
			s.inodes = append(s.inodes, ino)
			if ends, ok := tcp[ino]; ok {
				s.tcp[ino] = ends
			}
		case strings.HasPrefix(l, "pipe:["):
			s.pipes++
		case strings.HasPrefix(l, "anon_inode:"):
			s.anon++
		default:
			s.other++
		}
	}
	return s
}

func readProcNetTCP(t *testing.T) map[uint64]tcpEnds {
	m := map[uint64]tcpEnds{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 {
				continue
			}
			port := func(a string) int {
				p, _ := strconv.ParseUint(a[strings.LastIndexByte(a, ':')+1:], 16, 32)
				return int(p)
			}
			st, _ := strconv.ParseUint(fs[3], 16, 8)
			ino, _ := strconv.ParseUint(fs[9], 10, 64)
			if ino != 0 {
				m[ino] = tcpEnds{local: port(fs[1]), remote: port(fs[2]), state: int(st)}
			}
		}
	}
	return m
}

// ---------------------------------------------------------------------------------------------
// the clients process, driven over its stdin/stdout: lines "E2E <word> <json>".

type e2eLoadReport struct {
	OK, Failed int64
	Errors     []string
	// Short tunnels opened and closed during the load (upgrades in flight while the old
	// process passes its tunnels): opened and echoed through, or failed.
	ChurnOK, ChurnFailed int64
}

type e2eCtl struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startE2EClients(t *testing.T, p e2eParams) *e2eCtl {
	pj, _ := json.Marshal(p)
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), e2eRoleEnv+"=clients", e2eParamsEnv+"="+string(pj))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	c := &e2eCtl{cmd: cmd, in: in, out: sc}
	t.Cleanup(c.close)
	return c
}

func (c *e2eCtl) close() {
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

func (c *e2eCtl) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		t.Fatalf("clients: %v", err)
	}
}

// expect reads lines until one starts with "E2E word", and decodes its JSON into v.
func (c *e2eCtl) expect(t *testing.T, word string, v any, d time.Duration) {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		for c.out.Scan() {
			if l := c.out.Text(); strings.HasPrefix(l, "E2E ") {
				got <- l
				return
			}
		}
		close(got)
	}()
	select {
	case l, ok := <-got:
		if !ok {
			t.Fatalf("clients process ended waiting for %s", word)
		}
		w, js, _ := strings.Cut(strings.TrimPrefix(l, "E2E "), " ")
		if w != word {
			t.Fatalf("clients said %q, want %s", l, word)
		}
		if v != nil {
			if err := json.Unmarshal([]byte(js), v); err != nil {
				t.Fatalf("clients %s: %v", word, err)
			}
		}
	case <-time.After(d):
		t.Fatalf("clients: no %s within %v", word, d)
	}
}

func (c *e2eCtl) readyPorts(t *testing.T, d time.Duration) map[int]bool {
	var ports []int
	c.expect(t, "READY", &ports, d)
	m := map[int]bool{}
	for _, p := range ports {
		m[p] = true
	}
	return m
}

func (c *e2eCtl) capacity(t *testing.T, d time.Duration) float64 {
	c.send(t, "capacity "+d.String())
	var r float64
	c.expect(t, "CAPACITY", &r, d+30*time.Second)
	return r
}

func (c *e2eCtl) stop(t *testing.T) e2eLoadReport {
	c.send(t, "stop")
	var r e2eLoadReport
	c.expect(t, "STOPPED", &r, 30*time.Second)
	return r
}

// settle waits until every message sent has arrived (or d passed) and returns both ends' counts.
func (c *e2eCtl) settle(t *testing.T, be *msgBackend, d time.Duration) ([]tunnelCount, []tunnelCount) {
	deadline := time.Now().Add(d)
	for {
		c.send(t, "report")
		var cc []tunnelCount
		c.expect(t, "REPORT", &cc, 30*time.Second)
		bc := be.snapshot()
		settled := len(cc) == len(bc)
		for i := 0; settled && i < len(cc); i++ {
			settled = cc[i].Sent == bc[i].Recv && bc[i].Sent == cc[i].Recv
		}
		if settled || time.Now().After(deadline) {
			return cc, bc
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// e2eClients is the clients process: it opens the tunnels, prints READY with their local
// ports, sends numbered messages on each and checks the backend's, and runs the HTTP load on
// command.
func e2eClients(t *testing.T) {
	p := e2eParamsFromEnv(t)
	say := func(word string, v any) {
		b, _ := json.Marshal(v)
		fmt.Printf("E2E %s %s\n", word, b)
	}
	counts := make([]tunnelCount, p.Tunnels)
	conns := make([]net.Conn, p.Tunnels)
	var mu sync.Mutex
	ports := make([]int, 0, p.Tunnels)
	for i := range conns {
		c, br, err := e2eUpgrade(p)
		if err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		conns[i] = c
		ports = append(ports, c.LocalAddr().(*net.TCPAddr).Port)
		go func(i int) {
			f := make([]byte, serverFrame)
			for {
				if _, err := io.ReadFull(br, f); err != nil {
					mu.Lock()
					counts[i].Closed, counts[i].Err = true, err.Error()
					mu.Unlock()
					return
				}
				idx, seq, err := parseServerFrame(f)
				mu.Lock()
				if err != nil || idx != uint32(i) || seq != counts[i].Recv {
					counts[i].Bad++
				} else {
					counts[i].Recv++
				}
				mu.Unlock()
			}
		}(i)
	}
	// Every tunnel names itself with message 0 at once, so the backend knows its ports.
	var sending atomic.Bool
	sending.Store(true)
	sendOne := func(i int) {
		mu.Lock()
		seq := counts[i].Sent
		mu.Unlock()
		b := appendClientFrame(make([]byte, 0, clientFrame), uint32(i), seq, [4]byte{byte(i), 7, byte(seq), 9})
		conns[i].SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := conns[i].Write(b); err != nil {
			mu.Lock()
			counts[i].Err = "write: " + err.Error()
			mu.Unlock()
			return
		}
		mu.Lock()
		counts[i].Sent++
		mu.Unlock()
	}
	for i := range conns {
		sendOne(i)
	}
	go func() {
		const slots = 100
		tick := time.NewTicker(p.MsgEvery / slots)
		defer tick.Stop()
		for n := 0; ; n++ {
			<-tick.C
			if !sending.Load() {
				return
			}
			for i := n % slots; i < len(conns); i += slots {
				sendOne(i)
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // message 0 reaches the backend before the ports are read
	say("READY", ports)

	var load *e2eLoad
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		word, arg, _ := strings.Cut(sc.Text(), " ")
		switch word {
		case "capacity":
			d, _ := time.ParseDuration(arg)
			l := startE2ELoad(p, 0)
			time.Sleep(d)
			r := l.finish()
			say("CAPACITY", float64(r.OK)/d.Seconds())
		case "load":
			rate, _ := strconv.ParseFloat(arg, 64)
			load = startE2ELoad(p, rate)
		case "stop":
			sending.Store(false)
			var r e2eLoadReport
			if load != nil {
				r = load.finish()
			}
			say("STOPPED", r)
		case "report":
			mu.Lock()
			c := append([]tunnelCount(nil), counts...)
			mu.Unlock()
			say("REPORT", c)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// e2eUpgrade opens one WebSocket through wsgate.
func e2eUpgrade(p e2eParams) (net.Conn, *bufio.Reader, error) {
	c, err := p.dial(10 * time.Second)
	if err != nil {
		return nil, nil, err
	}
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		c.Close()
		return nil, nil, fmt.Errorf("upgrade: %s", resp.Status)
	}
	c.SetDeadline(time.Time{})
	return c, br, nil
}

// e2eLoad is the HTTP load: Workers goroutines, half on a keep-alive connection, half with a
// new connection per request; rate 0 = as fast as they go. Every request must get 200 "ok".
type e2eLoad struct {
	ok, failed           atomic.Int64
	churnOK, churnFailed atomic.Int64
	mu                   sync.Mutex
	errs                 []string
	stop                 chan struct{}
	wg                   sync.WaitGroup
}

func startE2ELoad(p e2eParams, rate float64) *e2eLoad {
	l := &e2eLoad{stop: make(chan struct{})}
	if rate > 0 {
		l.wg.Add(1)
		go l.churn(p) // upgrades in flight during the upgrades
	}
	per := time.Duration(0)
	if rate > 0 {
		per = time.Duration(float64(p.Workers) / rate * float64(time.Second))
	}
	for w := 0; w < p.Workers; w++ {
		l.wg.Add(1)
		go func(keepAlive bool) {
			defer l.wg.Done()
			var c net.Conn
			var br *bufio.Reader
			next := time.Now()
			for {
				select {
				case <-l.stop:
					if c != nil {
						c.Close()
					}
					return
				default:
				}
				if per > 0 {
					next = next.Add(per)
					time.Sleep(time.Until(next))
				}
				if c == nil {
					var err error
					if c, err = p.dial(5 * time.Second); err != nil {
						l.fail("dial: " + err.Error())
						c = nil
						continue
					}
					br = bufio.NewReader(c)
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				_, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
				var resp *http.Response
				if err == nil {
					resp, err = http.ReadResponse(br, nil)
				}
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
				}
				switch {
				case err != nil:
					l.fail(err.Error())
				case resp.StatusCode != 200 || string(body) != "ok":
					l.fail(fmt.Sprintf("status %d body %q", resp.StatusCode, body))
				default:
					l.ok.Add(1)
				}
				if err != nil || !keepAlive || resp.Close {
					c.Close()
					c = nil
				}
			}
		}(w%2 == 0)
	}
	return l
}

// churn opens a short tunnel every 20 ms: upgrade, one message echoed back, close.
func (l *e2eLoad) churn(p e2eParams) {
	defer l.wg.Done()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for seq := uint64(0); ; seq++ {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		err := func() error {
			c, br, err := e2eUpgrade(p)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(appendClientFrame(nil, churnIdx, seq, [4]byte{1, 2, 3, 4})); err != nil {
				return err
			}
			f := make([]byte, serverFrame)
			if _, err := io.ReadFull(br, f); err != nil {
				return fmt.Errorf("short tunnel echo: %w", err)
			}
			if idx, s, err := parseServerFrame(f); err != nil || idx != churnIdx || s != seq {
				return fmt.Errorf("short tunnel echo: %d %d %v", idx, s, err)
			}
			return nil
		}()
		if err != nil {
			l.churnFailed.Add(1)
			l.fail("short tunnel: " + err.Error())
			l.failed.Add(-1) // counted as a tunnel failure, not an HTTP one
			continue
		}
		l.churnOK.Add(1)
	}
}

func (l *e2eLoad) fail(s string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, s)
	}
	l.mu.Unlock()
}

func (l *e2eLoad) finish() e2eLoadReport {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := append([]string(nil), l.errs...)
	sort.Strings(errs)
	return e2eLoadReport{OK: l.ok.Load(), Failed: l.failed.Load(), Errors: errs, ChurnOK: l.churnOK.Load(), ChurnFailed: l.churnFailed.Load()}
}
