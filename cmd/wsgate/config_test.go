package main

// The binary with routes and config files: -check-config's exit codes and messages, config
// errors with file:line, and the Grafana + Loki example file loaded and routing.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBinaryCheckConfig: -check-config exits 0 on a good file (listing the routes) and 1 with
// every error as FILE:LINE; a broken file without -check-config exits 2 with the same lines;
// -check-config without -config is a bad command line.
func TestBinaryCheckConfig(t *testing.T) {
	good := writeFile(t, "good.toml", `listen = "127.0.0.1:18080"
header_timeout = "5s"

[[route]]
match = "/"
backends = ["127.0.0.1:3000"]

[[route]]
match = "/loki/"
backends = ["127.0.0.1:3100", "127.0.0.1:3101"]
balance = "round-robin"
`)
	p := wsgate(t, "-check-config", "-config", good)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("good file: exit %d, stderr %q", code, p.stderr.String())
	}
	out := p.stdout.String()
	for _, want := range []string{good + ": ok: 2 routes, 3 backends", "/loki/", "127.0.0.1:3100,127.0.0.1:3101 round-robin (" + good + ":8)"} {
		if !strings.Contains(out, want) {
			t.Errorf("good file: stdout lacks %q:\n%s", want, out)
		}
	}

	bad := writeFile(t, "bad.toml", `lissten = "127.0.0.1:1"
header_timeout = 10

[[route]]
match = "/"
backends = ["127.0.0.1"]

[[route]]
match = "/"
backends = ["127.0.0.1:3001"]
bakends = []
`)
	wantLines := []string{
		"wsgate: " + bad + `:1: unknown key "lissten" (did you mean listen?)`,
		"wsgate: " + bad + `:2: header_timeout: want a duration string such as "10s", got integer 10`,
		"wsgate: " + bad + `:6: route #1: backends: backend "127.0.0.1": missing port in address`,
		"wsgate: " + bad + `:11: route #2: unknown key "bakends" (did you mean backends?)`,
	}
	for _, args := range [][]string{{"-check-config", "-config", bad}, {"-config", bad}} {
		p := wsgate(t, args...)
		code := p.wait(t, 10*time.Second)
		want := 1
		if len(args) == 2 {
			want = 2 // serving with a broken file: a bad configuration, nothing started
		}
		if code != want || p.stdout.String() != "" {
			t.Fatalf("%v: exit %d (want %d), stdout %q", args, code, want, p.stdout.String())
		}
		got := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
		if strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
			t.Errorf("%v: stderr\n%s\nwant\n%s", args, strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
		}
	}

	// A value the flag rules refuse, from the file: its line, exit 1.
	zero := writeFile(t, "zero.toml", "\nloops = 0\n")
	p = wsgate(t, "-check-config", "-config", zero)
	if code := p.wait(t, 10*time.Second); code != 1 || p.stderr.String() != "wsgate: "+zero+":2: loops: 0: want 1 or more\n" {
		t.Fatalf("loops = 0: exit %d, stderr %q", code, p.stderr.String())
	}
	// The same value on the command line: one line, exit 2.
	p = wsgate(t, "-check-config", "-config", good, "-loops", "0")
	if code := p.wait(t, 10*time.Second); code != 1 || p.stderr.String() != "wsgate: -loops 0: want 1 or more\n" {
		t.Fatalf("-loops 0 with -check-config: exit %d, stderr %q", code, p.stderr.String())
	}
	p = wsgate(t, "-check-config")
	if code := p.wait(t, 10*time.Second); code != 2 || p.stderr.String() != "wsgate: -check-config needs -config FILE\n" {
		t.Fatalf("-check-config alone: exit %d, stderr %q", code, p.stderr.String())
	}
	p = wsgate(t, "-check-config", "-config", filepath.Join(t.TempDir(), "missing.toml"))
	if code := p.wait(t, 10*time.Second); code != 1 || !strings.Contains(p.stderr.String(), "missing.toml: cannot read: no such file or directory") {
		t.Fatalf("missing file: exit %d, stderr %q", code, p.stderr.String())
	}
	// A duplicate route on the command line.
	p = wsgate(t, "-route", "/=127.0.0.1:1", "-route", "/=127.0.0.1:2", "-check-config", "-config", good)
	if code := p.wait(t, 10*time.Second); code != 1 || !strings.Contains(p.stderr.String(), "duplicate route: / is also -route /=127.0.0.1:1") {
		t.Fatalf("duplicate -route: exit %d, stderr %q", code, p.stderr.String())
	}
}

// TestBinaryRouteFlags: -route is repeatable and routes; -backend is -route /=ADDR; a second
// single-value flag is still refused; a bad -route is one line and exit 2.
func TestBinaryRouteFlags(t *testing.T) {
	g, l := namedServer(t, "grafana"), namedServer(t, "loki")
	addr := freePort(t)
	p := wsgate(t, "-listen", addr, "-route", "/="+g.addr, "-route", "/loki/="+l.addr, "-log-level", "debug")
	p.waitLog(t, "wsgate listening", 10*time.Second)
	if !strings.Contains(p.stderr.String(), "routes=\"/="+g.addr+" /loki/="+l.addr+"\"") {
		t.Errorf("the start line does not list the routes:\n%s", p.stderr.String())
	}
	for target, want := range map[string]string{"/": "grafana", "/api/health": "grafana", "/loki/api/v1/labels": "loki", "/loki": "grafana"} {
		if got := fetch(t, addr, "grafana.example", target); got != want+" "+target {
			t.Errorf("%s: %q, want %s", target, got, want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-route", "/loki/127.0.0.1:1"}, `wsgate: invalid value "/loki/127.0.0.1:1" for flag -route: route "/loki/127.0.0.1:1": want [HOST]/PREFIX=ADDR[,ADDR...] (see wsgate -h)`},
		{[]string{"-route", "/=127.0.0.1"}, `wsgate: invalid value "/=127.0.0.1" for flag -route: route "/=127.0.0.1": backend "127.0.0.1": missing port in address (see wsgate -h)`},
		{[]string{"-route", "/=127.0.0.1:1", "-backend", "127.0.0.1:2"}, `wsgate: command line: -backend /=127.0.0.1:2: duplicate route: / is also -route /=127.0.0.1:1`},
		{[]string{"-balance", "fastest"}, `wsgate: -balance "fastest": want least-conn, round-robin or client-hash`},
		{[]string{"-health-path", "ready"}, `wsgate: -health-path "ready": want a path starting with '/' (empty = no active health checks)`},
		{[]string{"-health-interval", "1ms"}, `wsgate: -health-interval 1ms: want 10ms or more`},
		{[]string{"-config", "a", "-config", "b"}, `wsgate: -config given twice ("a", then "b"): a flag takes one value`},
	} {
		p := wsgate(t, c.args...)
		if code := p.wait(t, 10*time.Second); code != 2 || p.stderr.String() != c.want+"\n" {
			t.Errorf("%v: exit %d, stderr %q, want exit 2 and %q", c.args, code, p.stderr.String(), c.want)
		}
	}
}

// TestBinaryExampleGrafanaLoki: docs/examples/grafana-loki.toml, with its backend addresses
// pointed at test servers and -listen given on the command line (which overrides the file's),
// routes Grafana, both Loki replicas and the Loki host name, health-checks the replicas on
// /ready, and tunnels a WebSocket on /loki/api/v1/tail.
func TestBinaryExampleGrafanaLoki(t *testing.T) {
	b, err := os.ReadFile("../../docs/examples/grafana-loki.toml")
	if err != nil {
		t.Fatal(err)
	}
	g, l1, l2 := namedServer(t, "grafana"), namedServer(t, "loki-1"), namedServer(t, "loki-2")
	text := strings.NewReplacer("127.0.0.1:3000", g.addr, "127.0.0.1:3100", l1.addr, "127.0.0.1:3101", l2.addr).Replace(string(b))
	if text == string(b) {
		t.Fatal("the example's backend addresses changed: update this test")
	}
	file := writeFile(t, "grafana-loki.toml", text)
	addr := freePort(t)
	p := wsgate(t, "-config", file, "-listen", addr)
	p.waitLog(t, "wsgate listening", 10*time.Second)
	if !strings.Contains(p.stderr.String(), "overridden_by_flags=listen") {
		t.Errorf("the log does not say -listen overrode the file:\n%s", p.stderr.String())
	}
	if got := fetch(t, addr, "grafana.example", "/api/dashboards/home"); got != "grafana /api/dashboards/home" {
		t.Errorf("/: %q", got)
	}
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		got := fetch(t, addr, "grafana.example", "/loki/api/v1/labels")
		seen[strings.Fields(got)[0]]++
	}
	if seen["loki-1"] == 0 || seen["loki-2"] == 0 || len(seen) != 2 {
		t.Errorf("/loki/ over two replicas: %v", seen)
	}
	if got := fetch(t, addr, "logs.example.com", "/anything"); !strings.HasPrefix(got, "loki-") {
		t.Errorf("logs.example.com/: %q", got)
	}
	if !waitForProbes(func() bool { return l1.ready.Load() > 0 && l2.ready.Load() > 0 }) || g.ready.Load() != 0 {
		t.Errorf("health probes: loki-1 %d, loki-2 %d, grafana %d (only the Loki routes set health_path)", l1.ready.Load(), l2.ready.Load(), g.ready.Load())
	}
	// A live tail through the Loki route.
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /loki/api/v1/tail?query=%%7Bjob%%3D%%22x%%22%%7D HTTP/1.1\r\nHost: grafana.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("tail upgrade: %v %v", err, resp)
	}
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "loki-") {
		t.Fatalf("tail: %q %v", line, err)
	}
}

func waitForProbes(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// named is a backend answering "<name> <target>", /ready with 200 (counted), and WebSocket
// upgrades with a 101 followed by "<name>\n".
type named struct {
	addr  string
	ready atomic.Int64
}

func namedServer(t *testing.T, name string) *named {
	n := &named{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" {
			n.ready.Add(1)
			io.WriteString(w, "ready")
			return
		}
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			hj, _ := w.(http.Hijacker)
			c, bw, err := hj.Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" + name + "\n")
			bw.Flush()
			io.Copy(io.Discard, c)
			return
		}
		io.WriteString(w, name+" "+r.URL.RequestURI())
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	n.addr = srv.Listener.Addr().String()
	return n
}

// fetch GETs target through wsgate with the given Host and returns the body.
func fetch(t *testing.T, addr, host, target string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+target, nil)
	req.Host = host
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", target, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s (Host %s): %d %q", target, host, resp.StatusCode, b)
	}
	return string(b)
}

// The README's config snippets are valid: -check-config accepts every ```toml block.
func TestReadmeConfigSnippets(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(b), "```toml\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("no toml block in the README")
	}
	for i, blk := range blocks {
		text, _, _ := strings.Cut(blk, "```")
		file := writeFile(t, fmt.Sprintf("readme-%d.toml", i), text)
		var stdout, stderr strings.Builder
		if code := runIO([]string{"-check-config", "-config", file}, &stdout, &stderr); code != 0 {
			t.Errorf("README toml block %d: exit %d\n%s\n%s", i+1, code, stderr.String(), text)
		}
	}
}
