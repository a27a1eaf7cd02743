package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
