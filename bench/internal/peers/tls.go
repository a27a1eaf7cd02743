package peers

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/internal/localca"
)

// TLS peers (issue 9): wsgate, nginx and HAProxy terminating TLS with the same ECDSA P-256
// certificate, made for the run by a throw-away local CA.

// TLSFiles are the certificate files every TLS peer uses.
type TLSFiles struct {
	Cert, Key string
	Combined  string // certificate then key in one PEM file (HAProxy's crt)
	CA        string
}

// WriteTLSFiles makes the run's CA and its ECDSA P-256 certificate for localhost and 127.0.0.1.
func WriteTLSFiles(dir string) (TLSFiles, error) {
	f, err := localca.WriteFiles(dir, 24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		return TLSFiles{}, err
	}
	cert, err := os.ReadFile(f.Cert)
	if err != nil {
		return TLSFiles{}, err
	}
	key, err := os.ReadFile(f.Key)
	if err != nil {
		return TLSFiles{}, err
	}
	comb := filepath.Join(dir, "combined.pem")
	if err := os.WriteFile(comb, append(cert, key...), 0o600); err != nil {
		return TLSFiles{}, err
	}
	return TLSFiles{Cert: f.Cert, Key: f.Key, Combined: comb, CA: f.CA}, nil
}

// tlsSpecs are the TLS peers, in report order.
func tlsSpecs() []Spec {
	return []Spec{
		{Name: "wsgate-tls", Label: "wsgate, TLS", TLS: true, start: startWSGateTLS, available: needBin(func(b Bins) string { return b.WSGate }, "wsgate (bin/wsgate; make build)")},
		{Name: "nginx-tls", Label: "nginx, 2 workers, TLS", TLS: true, start: startNginxTLS, available: needBin(func(b Bins) string { return b.Nginx }, "nginx (make bench-deps)")},
		{Name: "haproxy-tls", Label: "HAProxy, TLS", TLS: true, start: startHAProxyTLS, available: needBin(func(b Bins) string { return b.HAProxy }, "haproxy (make bench-deps)")},
	}
}

func startWSGateTLS(env Env, dir, listen string) (*exec.Cmd, error) {
	n := max(env.ProxyCPUs, 1)
	// The access log is off, as in startWSGate and in the peers' configurations.
	return Command(env, dir, env.Bins.WSGate, "-listen", listen, "-backend", env.BackendAddr, "-log-level", "warn", "-access-log", "off",
		"-loops", strconv.Itoa(n), "-tunnel-loops", strconv.Itoa(n),
		"-tls-cert", env.TLS.Cert, "-tls-key", env.TLS.Key)
}

// NginxTLSConfig is NginxConfig with the listener on TLS: TLS 1.2 and 1.3, session tickets on (the
// default; keys shared by the workers) and a shared session cache for TLS 1.2 resumption.
func NginxTLSConfig(dir, listen, backend string, workers int, cert, key string) string {
	conf := NginxConfig(dir, listen, backend, workers)
	return strings.Replace(conf, "        listen "+listen+" backlog=4096;\n",
		"        listen "+listen+" ssl backlog=4096;\n"+
			"        ssl_certificate "+cert+";\n"+
			"        ssl_certificate_key "+key+";\n"+
			"        ssl_protocols TLSv1.2 TLSv1.3;\n"+
			"        ssl_session_cache shared:SSL:10m;\n"+
			"        ssl_session_tickets on;\n", 1)
}

func startNginxTLS(env Env, dir, listen string) (*exec.Cmd, error) {
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(NginxTLSConfig(dir, listen, env.BackendAddr, 2, env.TLS.Cert, env.TLS.Key)), 0o644); err != nil {
		return nil, err
	}
	return Command(env, dir, env.Bins.Nginx, "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
}

// HAProxyTLSConfig is HAProxyConfig with the frontend on TLS (ALPN http/1.1, TLS 1.2 and 1.3,
// tickets on: HAProxy's defaults).
func HAProxyTLSConfig(listen, backend, pem string) string {
	conf := HAProxyConfig(listen, backend)
	return strings.Replace(conf, "    bind "+listen+" backlog 4096\n",
		"    bind "+listen+" ssl crt "+pem+" alpn http/1.1 ssl-min-ver TLSv1.2 backlog 4096\n", 1)
}

func startHAProxyTLS(env Env, dir, listen string) (*exec.Cmd, error) {
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(HAProxyTLSConfig(listen, env.BackendAddr, env.TLS.Combined)), 0o644); err != nil {
		return nil, err
	}
	return Command(env, dir, env.Bins.HAProxy, "-f", conf, "-db")
}

// WaitReadyTLS is WaitReady over TLS.
func WaitReadyTLS(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) error {
	return waitReady(ctx, addr, exited, timeout, probeTLS, " over TLS")
}

func probeTLS(addr string) error {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	line, err := get100(c, addr)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200") {
		return fmt.Errorf("status %q", strings.TrimSpace(line))
	}
	return nil
}
