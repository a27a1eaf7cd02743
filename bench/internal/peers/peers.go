// Package peers starts and stops the proxies the benchmark compares: nginx, HAProxy, Go's
// httputil.ReverseProxy, wsgate, and "direct" (no proxy). Each runs on a loopback port with a
// private config in a temporary directory -- never as a system service -- and is stopped by
// the PID the harness started. A peer whose binary is missing is reported as skipped.
package peers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Env is what every peer needs to start.
type Env struct {
	Dir         string   // private scratch directory (configs, pid files, logs)
	BackendAddr string   // host:port of the bench backend
	Pin         []string // command prefix pinning a proxy (["taskset","-c","0"]), or nil
	Procs       int      // GOMAXPROCS for Go peers (0: runtime default, which follows CPU affinity)
	ProxyCPUs   int      // CPUs a proxy may use (1 when pinned): wsgate's loop counts
	Bins        Bins
	TLS         TLSFiles // the certificate TLS peers serve (tls.go)
}

// Bins are the peer executables; empty means not available.
type Bins struct {
	Nginx, HAProxy, HTTPUtil, WSGate string
}

// Spec is one peer configuration.
type Spec struct {
	Name  string
	Label string // for tables and charts
	TLS   bool   // the listener speaks TLS: only the TLS scenarios run against it (tls.go)
	// Start launches it; nil for direct. It returns the command (already started) and its
	// listen address.
	start func(env Env, dir, listen string) (*exec.Cmd, error)
	// available says why the peer cannot run, or "" when it can.
	available func(env Env) string
}

// Direct reports whether this is the no-proxy ceiling.
func (s Spec) Direct() bool { return s.start == nil }

// All is every known peer, in report order.
func All() []Spec {
	return append([]Spec{
		{Name: "direct", Label: "direct (no proxy)"},
		{Name: "wsgate-splice", Label: "wsgate, splice on", start: startWSGate(true), available: needBin(func(b Bins) string { return b.WSGate }, "wsgate (bin/wsgate; make build)")},
		{Name: "wsgate-copy", Label: "wsgate, splice off", start: startWSGate(false), available: needBin(func(b Bins) string { return b.WSGate }, "wsgate (bin/wsgate; make build)")},
		{Name: "nginx-w1", Label: "nginx, 1 worker", start: startNginx(1), available: needBin(func(b Bins) string { return b.Nginx }, "nginx (make bench-deps)")},
		{Name: "nginx-w2", Label: "nginx, 2 workers", start: startNginx(2), available: needBin(func(b Bins) string { return b.Nginx }, "nginx (make bench-deps)")},
		{Name: "haproxy", Label: "HAProxy, splice-auto", start: startHAProxy, available: needBin(func(b Bins) string { return b.HAProxy }, "haproxy (make bench-deps)")},
		{Name: "httputil", Label: "Go httputil.ReverseProxy", start: startHTTPUtil, available: needBin(func(b Bins) string { return b.HTTPUtil }, "httputilproxy (go build failed)")},
	}, tlsSpecs()...)
}

// Select returns the peers named in names (comma list, or "all"), in report order, and an
// error naming any unknown one.
func Select(names string) ([]Spec, error) {
	all := All()
	if names == "" || names == "all" {
		return all, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if n == "nginx" {
			want["nginx-w1"], want["nginx-w2"] = true, true
			continue
		}
		if n == "wsgate" {
			want["wsgate-splice"], want["wsgate-copy"] = true, true
			continue
		}
		if n == "tls" {
			want["wsgate-tls"], want["nginx-tls"], want["haproxy-tls"] = true, true, true
			continue
		}
		found := false
		for _, s := range all {
			if s.Name == n {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown peer %q (known: direct, wsgate, wsgate-splice, wsgate-copy, nginx, nginx-w1, nginx-w2, haproxy, httputil; tls = wsgate-tls, nginx-tls, haproxy-tls)", n)
		}
		want[n] = true
	}
	var out []Spec
	for _, s := range all {
		if want[s.Name] {
			out = append(out, s)
		}
	}
	return out, nil
}

func needBin(get func(Bins) string, what string) func(Env) string {
	return func(env Env) string {
		p := get(env.Bins)
		if p == "" {
			return "missing " + what
		}
		if _, err := os.Stat(p); err != nil {
			return "missing " + what + ": " + err.Error()
		}
		return ""
	}
}

// Running is a started peer.
type Running struct {
	Spec
	Addr string // where load goes: the proxy, or the backend for direct
	PID  int    // 0 for direct
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

// Start launches the peer on a free loopback port and waits until it proxies GET /100.
// It returns a skip reason (and nil) when the peer is not installed.
func (s Spec) Start(ctx context.Context, env Env) (*Running, string, error) {
	if s.Direct() {
		return &Running{Spec: s, Addr: env.BackendAddr}, "", nil
	}
	if why := s.available(env); why != "" {
		return nil, why, nil
	}
	dir := filepath.Join(env.Dir, s.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	listen, err := FreePort()
	if err != nil {
		return nil, "", fmt.Errorf("%s: pick port: %w", s.Name, err)
	}
	cmd, err := s.start(env, dir, listen)
	if err != nil {
		return nil, "", fmt.Errorf("%s: start: %w", s.Name, err)
	}
	r := &Running{Spec: s, Addr: listen, PID: cmd.Process.Pid, cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	wait := WaitReady
	if s.TLS {
		wait = WaitReadyTLS
	}
	if err := wait(ctx, listen, r.done, 10*time.Second); err != nil {
		r.Stop()
		return nil, "", fmt.Errorf("%s: not ready: %w; log: %s", s.Name, err, r.LogTail())
	}
	return r, "", nil
}

// Alive reports whether the peer process is still running (direct is always alive).
func (r *Running) Alive() bool {
	if r.cmd == nil {
		return true
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// LogTail is the end of the peer's output and error log, for error messages.
func (r *Running) LogTail() string {
	var parts []string
	for _, f := range []string{"output.log", "error.log"} {
		b, err := os.ReadFile(filepath.Join(r.dir, f))
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > 600 {
			b = b[len(b)-600:]
		}
		parts = append(parts, f+": "+strings.TrimSpace(string(b)))
	}
	if len(parts) == 0 {
		return "(empty)"
	}
	return strings.Join(parts, " | ")
}

// Stop terminates the peer's process group (the harness made the peer a group leader, so
// this reaches nginx workers too) and waits; SIGKILL after 5 s.
func (r *Running) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	pid := r.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-r.done
	}
}

// Command builds a peer process: own process group, output to dir/output.log, optional
// pinning prefix.
func Command(env Env, dir string, argv ...string) (*exec.Cmd, error) {
	argv = append(append([]string{}, env.Pin...), argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = dir
	out, err := os.Create(filepath.Join(dir, "output.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = os.Environ()
	if env.Procs > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(env.Procs))
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	out.Close() // the child has its own copy
	return cmd, nil
}

// FreePort returns a loopback address nobody listens on right now.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitReady polls GET /100 on addr until it answers 200, the process exits, or timeout.
func WaitReady(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) error {
	return waitReady(ctx, addr, exited, timeout, probe, "")
}

// waitReady runs probe against addr every 50 ms until it succeeds, the process exits, or timeout;
// over names the transport in the error ("" or " over TLS").
func waitReady(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration, probe func(string) error, over string) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("process exited")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if last = probe(addr); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no 200 for GET /100%s within %v: %v", over, timeout, last)
}

func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	line, err := get100(c, addr)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200") && !strings.HasPrefix(line, "HTTP/1.0 200") {
		return fmt.Errorf("status %q", strings.TrimSpace(line))
	}
	return nil
}

// get100 sends GET /100 on c, returns the answer's status line and closes c.
func get100(c net.Conn, addr string) (string, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("GET /100 HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func startWSGate(splice bool) func(Env, string, string) (*exec.Cmd, error) {
	return func(env Env, dir, listen string) (*exec.Cmd, error) {
		n := env.ProxyCPUs
		if n < 1 {
			n = 1
		}
		// Loop counts are passed explicitly (one per CPU the proxy may use) so the run does not
		// depend on how the binary derives its defaults. The access log is off, as nginx's
		// (access_log off) and HAProxy's (warnings only, no request lines) are: like with like.
		return Command(env, dir, env.Bins.WSGate, "-listen", listen, "-backend", env.BackendAddr,
			"-splice="+strconv.FormatBool(splice), "-log-level", "warn", "-access-log", "off",
			"-loops", strconv.Itoa(n), "-tunnel-loops", strconv.Itoa(n))
	}
}

func startHTTPUtil(env Env, dir, listen string) (*exec.Cmd, error) {
	return Command(env, dir, env.Bins.HTTPUtil, "-listen", listen, "-backend", env.BackendAddr)
}

// NginxConfig is the nginx configuration the benchmark uses: the documented WebSocket setup
// (map $http_upgrade, HTTP/1.1 upstream, Upgrade/Connection re-added), upstream keepalive for
// plain requests (the map yields an empty Connection header so the pool is used), long read
// timeouts so idle tunnels survive, and every path inside dir.
func NginxConfig(dir, listen, backend string, workers int) string {
	return fmt.Sprintf(`worker_processes %d;
worker_rlimit_nofile 20000;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events {
    worker_connections 19000;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    keepalive_requests 1000000;
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }
    upstream backend {
        server %[4]s;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen %[3]s backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`, workers, dir, listen, backend)
}

func startNginx(workers int) func(Env, string, string) (*exec.Cmd, error) {
	return func(env Env, dir, listen string) (*exec.Cmd, error) {
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(NginxConfig(dir, listen, env.BackendAddr, workers)), 0o644); err != nil {
			return nil, err
		}
		// -e: the compiled-in error log (/var/log/nginx) is opened before the config is read.
		return Command(env, dir, env.Bins.Nginx, "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	}
}

// HAProxyConfig is the HAProxy configuration the benchmark uses: 2 threads, splice-auto,
// a 1 h tunnel timeout for idle WebSockets, and aggressive backend connection reuse. maxconn
// 7900 because HAProxy reserves 2.5 fds per connection (two sockets plus splice pipes) and
// refuses to start above the 20000 fd hard limit.
func HAProxyConfig(listen, backend string) string {
	return fmt.Sprintf(`global
    nbthread 2
    maxconn 7900
    log stderr format short local0 warning
defaults
    mode http
    log global
    option dontlognull
    option splice-auto
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout tunnel 1h
frontend fe
    bind %s backlog 4096
    maxconn 7900
    default_backend be
backend be
    server s1 %s
`, listen, backend)
}

func startHAProxy(env Env, dir, listen string) (*exec.Cmd, error) {
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(HAProxyConfig(listen, env.BackendAddr)), 0o644); err != nil {
		return nil, err
	}
	// -db: stay in the foreground, so the PID we hold is HAProxy itself.
	return Command(env, dir, env.Bins.HAProxy, "-f", conf, "-db")
}
