//go:build linux

package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
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
