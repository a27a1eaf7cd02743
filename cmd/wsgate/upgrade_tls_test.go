//go:build linux

package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/tlsrecord"
)

// A binary upgrade of a TLS wsgate with -redirect-http: the redirect listener (net/http, no
// SO_REUSEPORT) passes to the successor like the admin one, so the successor starts (it would
// fail to bind it beside its predecessor), and the redirect answers 308 before, during and after;
// new TLS handshakes are served by the successor with the same certificate.
func TestBinaryUpgradeTLSRedirect(t *testing.T) {
	be := newLCServer(t, "a")
	dir := t.TempDir()
	f := writePKI(t, dir)
	addr, redirect := freePort(t), freePort(t)
	bin := filepath.Join(dir, "wsgate")
	copyFile(t, binPath, bin, 0o755)
	g, pid := startGen(t, bin, "-listen", addr, "-backend", be.addr, "-loops", "2",
		"-tls-cert", f.Cert, "-tls-key", f.Key, "-redirect-http", redirect)
	waitFileLog(t, g.log, "wsgate listening", 1, 10*time.Second)
	_, pool := caPool(t, f.CA)
	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	check := func(when string) {
		t.Helper()
		resp, err := noFollow.Get("http://" + redirect + "/x?y=1")
		if err != nil {
			t.Fatalf("%s: redirect listener: %v", when, err)
		}
		resp.Body.Close()
		_, port, _ := net.SplitHostPort(addr)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || !strings.HasSuffix(loc, ":"+port+"/x?y=1") {
			t.Fatalf("%s: redirect: %d %q", when, resp.StatusCode, loc)
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			t.Fatalf("%s: TLS handshake: %v", when, err)
		}
		c.Close()
	}
	check("before")
	pidRe := regexp.MustCompile(`upgraded: pid (\d+) -> pid (\d+) in `)
	for i := 1; i <= 2; i++ {
		code, out, errs := runCmd(t, exec.Command(bin, "upgrade", "-listen", addr))
		m := pidRe.FindStringSubmatch(out)
		if code != 0 || m == nil || m[1] != strconv.Itoa(pid) {
			t.Fatalf("upgrade %d: exit %d, stdout %q, stderr %q", i, code, out, errs)
		}
		next, _ := strconv.Atoi(m[2])
		g.pids = append(g.pids, next)
		waitGone(t, pid, 10*time.Second)
		pid = next
		check("after upgrade " + strconv.Itoa(i))
	}
	waitFileLog(t, g.log, "redirecting plain HTTP to https", 3, 5*time.Second)
}

// recordTunnel is a TLS 1.3 WSS tunnel whose client did its handshake with crypto/tls and then
// speaks records itself (tlsrecord, keys from the client's key log): the test can send KeyUpdate,
// which crypto/tls's client API cannot.
type recordTunnel struct {
	nc   net.Conn
	sess *tlsrecord.Session
	in   []byte
	app  []byte
	evs  []tlsrecord.Event
}

type keyLogLines struct {
	mu    sync.Mutex
	lines map[string][]byte
}

func (k *keyLogLines) Write(p []byte) (int, error) {
	if f := strings.Fields(string(p)); len(f) == 3 {
		b, _ := hex.DecodeString(f[2])
		k.mu.Lock()
		if k.lines == nil {
			k.lines = map[string][]byte{}
		}
		k.lines[f[0]] = b
		k.mu.Unlock()
	}
	return len(p), nil
}

// recordOnly hands crypto/tls one record per Read, so that its handshake does not read ahead into
// what follows the server's Finished (tickets): that stays in the socket for the record layer.
type recordOnly struct {
	net.Conn
	cur []byte
}

func (c *recordOnly) Read(b []byte) (int, error) {
	if len(c.cur) == 0 {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c.Conn, hdr); err != nil {
			return 0, err
		}
		body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
		if _, err := io.ReadFull(c.Conn, body); err != nil {
			return 0, err
		}
		c.cur = append(hdr, body...)
	}
	n := copy(b, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

func dialRecordTunnel(t *testing.T, addr string, pool *x509.CertPool) *recordTunnel {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	kl := &keyLogLines{}
	c := tls.Client(&recordOnly{Conn: nc}, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, KeyLogWriter: kl})
	if err := c.Handshake(); err != nil {
		t.Fatalf("record tunnel handshake: %v", err)
	}
	sess, err := tlsrecord.NewSession(tlsrecord.Keys{Suite: c.ConnectionState().CipherSuite,
		ReadSecret: kl.lines["SERVER_TRAFFIC_SECRET_0"], WriteSecret: kl.lines["CLIENT_TRAFFIC_SECRET_0"], Client: true})
	if err != nil {
		t.Fatal(err)
	}
	rt := &recordTunnel{nc: nc, sess: sess}
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	rt.send(t, fmt.Sprintf("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key))
	rt.readUntil(t, "\r\n\r\n")
	if !strings.HasPrefix(string(rt.app), "HTTP/1.1 101 ") {
		t.Fatalf("record tunnel: %q", rt.app)
	}
	rt.app = rt.app[bytes.Index(rt.app, []byte("\r\n\r\n"))+4:]
	return rt
}

func (rt *recordTunnel) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := rt.nc.Write(b); err != nil {
		t.Fatalf("record tunnel write: %v", err)
	}
}

func (rt *recordTunnel) send(t *testing.T, p string) {
	t.Helper()
	rec, err := rt.sess.Seal(nil, []byte(p))
	if err != nil {
		t.Fatal(err)
	}
	rt.write(t, rec)
}

// readUntil opens records until the plaintext holds want.
func (rt *recordTunnel) readUntil(t *testing.T, want string) {
	t.Helper()
	rt.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16<<10)
	for !bytes.Contains(rt.app, []byte(want)) {
		n, err := rt.nc.Read(buf)
		rt.in = append(rt.in, buf[:n]...)
		for len(rt.in) > 0 {
			k, plain, ev, oerr := rt.sess.Open(rt.in)
			if oerr != nil {
				t.Fatalf("record tunnel: open: %v", oerr)
			}
			rt.in = rt.in[k:]
			rt.app = append(rt.app, plain...)
			if ev != tlsrecord.EventNone {
				rt.evs = append(rt.evs, ev)
			}
			if k == 0 {
				break
			}
		}
		if err != nil {
			t.Fatalf("record tunnel: waiting for %q (have %q): %v", want, rt.app, err)
		}
	}
}

// holdsClient: pid holds the socket of the client whose local port is port (its remote end).
func holdsClient(t *testing.T, pid, port int) bool {
	for _, e := range takeFDs(t, pid).tcp {
		if e.remote == port {
			return true
		}
	}
	return false
}

func localPort(c net.Conn) int { return c.LocalAddr().(*net.TCPAddr).Port }

// A binary upgrade of a TLS wsgate, twice: TLS 1.3 WSS tunnels (crypto/tls clients) exchanging
// numbered lines pass with their keys and sequence numbers (0 lines lost, duplicated or
// reordered), a KeyUpdate sent after the upgrades is answered by the new process, an idle TLS 1.3
// keep-alive connection passes too; a TLS 1.2 tunnel stays in the first process and works there
// until its client closes it, and then that process exits 0. The sockets are checked in /proc:
// each passed one is held by the newest process only, the TLS 1.2 one by the first only.
func TestBinaryUpgradeTLSTunnels(t *testing.T) {
	be := newLCServer(t, "a")
	dir := t.TempDir()
	f := writePKI(t, dir)
	addr := freePort(t)
	bin := filepath.Join(dir, "wsgate")
	copyFile(t, binPath, bin, 0o755)
	g, pid := startGen(t, bin, "-listen", addr, "-backend", be.addr, "-loops", "2", "-tunnel-loops", "2",
		"-tls-cert", f.Cert, "-tls-key", f.Key, "-drain-timeout", "30s", "-close-spread", "1s")
	waitFileLog(t, g.log, "wsgate listening", 1, 10*time.Second)
	_, pool := caPool(t, f.CA)
	cfg13 := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	cfg12 := &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12}

	const n13 = 8
	var streams []*tlsStream
	for i := 0; i < n13; i++ {
		streams = append(streams, startTLSStream(t, i, addr, cfg13))
	}
	old12 := startTLSStream(t, 100, addr, cfg12)
	rt := dialRecordTunnel(t, addr, pool)
	rt.send(t, "rt-before\n")
	rt.readUntil(t, "rt-before\n")
	ka := dialKATLS(t, addr, cfg13)
	if code, body, _, err := ka.get("/"); err != nil || code != 200 || body != "a" {
		t.Fatalf("keep-alive TLS 1.3: %d %q %v", code, body, err)
	}
	if old12.version != tls.VersionTLS12 || streams[0].version != tls.VersionTLS13 {
		t.Fatalf("versions: %x %x", old12.version, streams[0].version)
	}
	time.Sleep(200 * time.Millisecond) // lines in flight
	first := pid
	pidRe := regexp.MustCompile(`upgraded: pid (\d+) -> pid (\d+) in `)
	for i := 1; i <= 2; i++ {
		code, out, errs := runCmd(t, exec.Command(bin, "upgrade", "-listen", addr))
		m := pidRe.FindStringSubmatch(out)
		if code != 0 || m == nil || m[1] != strconv.Itoa(pid) {
			t.Fatalf("upgrade %d: exit %d, stdout %q, stderr %q", i, code, out, errs)
		}
		t.Logf("upgrade %d: %s", i, strings.TrimSpace(out))
		next, _ := strconv.Atoi(m[2])
		g.pids = append(g.pids, next)
		line := waitFileLog(t, g.log, "upgrade: handed over", i, 10*time.Second)
		t.Logf("upgrade %d: %s", i, line[strings.Index(line, "passed="):])
		want := "tunnels_left=0"
		if i == 1 {
			want = "tunnels_left=1" // the TLS 1.2 one
		}
		if !strings.Contains(line, want) || !strings.Contains(line, "conns_left=0") {
			t.Fatalf("upgrade %d: want %s conns_left=0: %s", i, want, line)
		}
		if i == 2 {
			waitGone(t, pid, 10*time.Second) // held nothing: gone at once
		}
		pid = next
		time.Sleep(200 * time.Millisecond) // lines keep flowing between upgrades
	}
	// Where each socket is now.
	for _, s := range streams {
		if !holdsClient(t, pid, localPort(s.c)) || holdsClient(t, first, localPort(s.c)) {
			t.Fatalf("stream %d's socket: newest process holds it %v, the first %v", s.id, holdsClient(t, pid, localPort(s.c)), holdsClient(t, first, localPort(s.c)))
		}
	}
	if holdsClient(t, pid, localPort(old12.c)) || !holdsClient(t, first, localPort(old12.c)) {
		t.Fatal("the TLS 1.2 tunnel's socket is not (only) in the first process")
	}
	// A KeyUpdate after the upgrades: the new process answers it and keeps relaying.
	ku, err := rt.sess.AppendKeyUpdate(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := rt.sess.Seal(nil, []byte("rt-after-ku\n"))
	rt.write(t, append(ku, rec...))
	rt.readUntil(t, "rt-after-ku\n")
	if len(rt.evs) == 0 || rt.evs[len(rt.evs)-1] != tlsrecord.EventKeyUpdate {
		t.Fatalf("no KeyUpdate from the new process before its data: events %v", rt.evs)
	}
	if code, body, closing, err := ka.get("/"); err != nil || code != 200 || body != "a" || closing {
		t.Fatalf("keep-alive TLS 1.3 after the upgrades: %d %q close %v %v", code, body, closing, err)
	}
	for _, s := range streams {
		s.finish(t)
	}
	old12.finish(t)
	var lines int64
	for _, s := range streams {
		lines += s.got.Load()
	}
	t.Logf("%d TLS 1.3 tunnels: %d lines each way, 0 lost, duplicated or reordered; TLS 1.2 tunnel in pid %d: %d lines", n13, lines, first, old12.got.Load())
	// The first process holds only the TLS 1.2 tunnel: its client closes it, and it exits 0.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", first)); err != nil {
		t.Fatalf("the first process exited while it still held the TLS 1.2 tunnel: %v", err)
	}
	old12.c.Close()
	waitGone(t, first, 10*time.Second)
	for _, s := range streams {
		s.c.Close()
	}
	rt.nc.Close()
	ka.Close()
	unix.Kill(pid, unix.SIGTERM)
	waitGone(t, pid, 15*time.Second)
}
