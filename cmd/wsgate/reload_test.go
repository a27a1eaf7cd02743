package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// SIGHUP under traffic on the real binary: a route changes from backend a to backend b; new
// requests go to b at once, a request in flight on a finishes there, tunnels opened on a keep
// echoing, no request fails. A broken file is refused with its file:line and the routes stay; a
// change to a setting only a new process can make is logged as not applied, the rest applies.
func TestBinaryReload(t *testing.T) {
	a, b := newLCServer(t, "a"), newLCServer(t, "b")
	addr := freePort(t)
	conf := func(backend string, extra string) string {
		return `listen = "` + addr + `"
loops = 2
` + extra + `
[[route]]
match = "/"
backends = ["` + backend + `"]
`
	}
	file := writeFile(t, "wsgate.toml", conf(a.addr, ""))
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := wsgate(t, "-config", file)
	p.waitLog(t, "wsgate listening", 10*time.Second)

	tunnels := make([]*tunnel, 5)
	for i := range tunnels {
		tunnels[i] = openTunnel(t, addr)
	}
	valid := func(s string) bool { return s == "a" || s == "b" }
	l := startLoad(addr, "/", 5*time.Millisecond, valid)
	inflight := dialKA(t, addr)
	if err := inflight.send("/slow?ms=1500"); err != nil { // on a when the reload comes
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	// 1. Route changed: a -> b.
	write(conf(b.addr, ""))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "SIGHUP: reloaded", 10*time.Second)
	for i := 0; i < 5; i++ {
		k := dialKA(t, addr)
		if code, body, _, err := k.get("/"); err != nil || code != 200 || body != "b" {
			t.Fatalf("new request after the reload: %d %q %v", code, body, err)
		}
		k.Close()
	}
	if code, body, closing, err := inflight.read(); err != nil || code != 200 || body != "a" || closing {
		t.Fatalf("request in flight during the reload: %d %q close %v %v", code, body, closing, err)
	}
	// The same keep-alive conn's next request follows the new route.
	if code, body, _, err := inflight.get("/"); err != nil || code != 200 || body != "b" {
		t.Fatalf("next request on a conn opened before the reload: %d %q %v", code, body, err)
	}
	for i, tn := range tunnels {
		if err := tn.echo("after reload "+strconv.Itoa(i), 5*time.Second); err != nil {
			t.Fatalf("tunnel %d (backend a) after the reload: %v", i, err)
		}
	}

	// 2. A broken file: refused with its line, the routes stay (b), traffic goes on.
	aBefore := a.requests.Load()
	write(conf(a.addr, "") + "\n[[route]]\nmatch = \"/x/\"\nbackends = [\"nohost\"]\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "SIGHUP: reload refused; the configuration, routes and certificates in use are unchanged", 10*time.Second)
	if !strings.Contains(p.stderr.String(), file+":") {
		t.Fatalf("the refusal does not name the file and line:\n%s", p.stderr.String())
	}
	for i := 0; i < 5; i++ {
		k := dialKA(t, addr)
		if code, body, _, err := k.get("/"); err != nil || code != 200 || body != "b" {
			t.Fatalf("after a refused reload: %d %q %v", code, body, err)
		}
		k.Close()
	}
	if n := a.requests.Load() - aBefore; n != 0 {
		t.Fatalf("backend a got %d requests after the refused reload", n)
	}

	// 3. A setting only a new process can change: logged, not applied; the route change applies.
	write(conf(a.addr, "max_conns = 500\n"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `setting not applied: a running wsgate cannot change it" setting=-max-conns running=10000 configured=500`, 10*time.Second)
	waitLogCount(t, p, "SIGHUP: reloaded", 2, 10*time.Second)
	k := dialKA(t, addr)
	if code, body, _, err := k.get("/"); err != nil || code != 200 || body != "a" {
		t.Fatalf("after the third reload: %d %q %v", code, body, err)
	}

	ok, failed, errs, names := l.finish()
	t.Logf("load during the reloads: %d ok, %d failed %v, by backend %v", ok, failed, errs, names)
	if failed != 0 || ok == 0 || names["a"] == 0 || names["b"] == 0 {
		t.Fatalf("load: %d ok, %d failed %v, by backend %v", ok, failed, errs, names)
	}
	for i, tn := range tunnels {
		if err := tn.echo("at the end "+strconv.Itoa(i), 5*time.Second); err != nil {
			t.Fatalf("tunnel %d at the end: %v", i, err)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	for _, tn := range tunnels {
		tn.Close()
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

// waitLogCount waits until s appears n times in the process's log.
func waitLogCount(t *testing.T, p *proc, s string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for strings.Count(p.stderr.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q %d times in the log within %v, want %d; stderr:\n%s", s, strings.Count(p.stderr.String(), s), d, n, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SIGHUP under TLS traffic changes a route and the certificate in one reload: new handshakes get
// the new certificate and new requests the new route; an established TLS keep-alive connection,
// a request in flight on it, and TLS 1.3 and 1.2 WSS tunnels exchanging numbered lines notice
// nothing. A broken certificate file refuses the whole reload (the route change in the same file
// too): the certificate and routes in use stay. wsgate_reloads_total counts ok 1, error 1.
func TestBinaryReloadCertificate(t *testing.T) {
	a, b := newLCServer(t, "a"), newLCServer(t, "b")
	dir := t.TempDir()
	pki1 := writePKI(t, filepath.Join(dir, "1"))
	pki2 := writePKI(t, filepath.Join(dir, "2"))
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install := func(certPEM, keyPEM []byte) {
		for _, f := range []struct {
			path string
			b    []byte
		}{{certFile, certPEM}, {keyFile, keyPEM}} {
			if err := os.WriteFile(f.path, f.b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	install(read(pki1.Cert), read(pki1.Key))
	addr, admin := freePort(t), freePort(t)
	conf := func(backend string) string {
		return `listen = "` + addr + `"
loops = 2
admin = "` + admin + `"
tls_cert = ["` + certFile + `"]
tls_key = ["` + keyFile + `"]

[[route]]
match = "/"
backends = ["` + backend + `"]
`
	}
	file := writeFile(t, "wsgate.toml", conf(a.addr))
	p := wsgate(t, "-config", file)
	p.waitLog(t, "wsgate listening", 10*time.Second)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(read(pki1.CA))
	pool.AppendCertsFromPEM(read(pki2.CA))
	leaf := func(p string) string {
		blk, _ := pem.Decode(read(p))
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber.String()
	}
	serial1, serial2 := leaf(pki1.Cert), leaf(pki2.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	handshakeSerial := func() string {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			t.Fatalf("new TLS handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if s := handshakeSerial(); s != serial1 {
		t.Fatalf("first certificate: serial %s, want %s", s, serial1)
	}

	// Established before the reload: a keep-alive conn with a request in flight, WSS tunnels.
	ka := dialKATLS(t, addr, cfg)
	if err := ka.send("/slow?ms=1500"); err != nil { // on a when the reload comes
		t.Fatal(err)
	}
	streams := []*tlsStream{
		startTLSStream(t, 0, addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}),
		startTLSStream(t, 1, addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}),
		startTLSStream(t, 2, addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12}),
	}
	l := startLoadDial(func() (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, cfg)
	}, "/", 5*time.Millisecond, func(s string) bool { return s == "a" || s == "b" })
	time.Sleep(300 * time.Millisecond)

	// 1. One reload: the route a -> b and a new certificate (another CA, another serial).
	install(read(pki2.Cert), read(pki2.Key))
	if err := os.WriteFile(file, []byte(conf(b.addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "SIGHUP: reloaded", 10*time.Second)
	if line := grepLine(p.stderr.String(), "SIGHUP: reloaded"); !strings.Contains(line, "changed=routes,certificates") {
		t.Fatalf("the reload does not say routes and certificates changed: %s", line)
	}
	if s := handshakeSerial(); s != serial2 {
		t.Fatalf("a handshake after the reload: serial %s, want the new %s", s, serial2)
	}
	k := dialKATLS(t, addr, cfg)
	if code, body, _, err := k.get("/"); err != nil || code != 200 || body != "b" {
		t.Fatalf("a new request after the reload: %d %q %v", code, body, err)
	}
	k.Close()
	if code, body, closing, err := ka.read(); err != nil || code != 200 || body != "a" || closing {
		t.Fatalf("the request in flight during the reload: %d %q close %v %v", code, body, closing, err)
	}
	if code, body, _, err := ka.get("/"); err != nil || code != 200 || body != "b" {
		t.Fatalf("the established TLS conn's next request: %d %q %v", code, body, err)
	}
	if s := ka.Conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String(); s != serial1 {
		t.Fatalf("the established conn's session changed: serial %s", s)
	}

	// 2. A broken certificate file, with a route change in the same reload: all of it refused.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(conf(a.addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	aBefore := a.requests.Load()
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "SIGHUP: reload refused", 10*time.Second)
	if line := grepLine(p.stderr.String(), `msg="reload refused"`); !strings.Contains(line, certFile) || !strings.Contains(line, "level=ERROR") {
		t.Fatalf("the refusal does not name the certificate file at Error level: %s", line)
	}
	if s := handshakeSerial(); s != serial2 {
		t.Fatalf("a handshake after the refused reload: serial %s, want %s (kept)", s, serial2)
	}
	k = dialKATLS(t, addr, cfg)
	if code, body, _, err := k.get("/"); err != nil || code != 200 || body != "b" {
		t.Fatalf("after the refused reload the route must stay b: %d %q %v", code, body, err)
	}
	k.Close()

	ok, failed, errs, names := l.finish()
	t.Logf("TLS load during the reloads: %d ok, %d failed %v, by backend %v", ok, failed, errs, names)
	if failed != 0 || names["a"] == 0 || names["b"] == 0 {
		t.Fatalf("TLS load: %d ok, %d failed %v, by backend %v", ok, failed, errs, names)
	}
	if n := a.requests.Load() - aBefore; n != 0 {
		t.Fatalf("backend a got %d requests after the refused reload", n)
	}
	for _, s := range streams {
		s.finish(t)
		t.Logf("tunnel %d (TLS %x): %d lines, 0 lost, duplicated or reordered", s.id, s.version, s.got.Load())
	}
	f := scrapeUntil(t, admin, func(f map[string]*dto.MetricFamily) bool {
		return has(f, "wsgate_reloads_total", "result=ok", 1) && has(f, "wsgate_reloads_total", "result=error", 1)
	})
	if !has(f, "wsgate_reloads_total", "result=ok", 1) || !has(f, "wsgate_reloads_total", "result=error", 1) {
		t.Fatal("wsgate_reloads_total: want ok 1, error 1")
	}
	for _, s := range streams {
		s.c.Close()
	}
	ka.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}
