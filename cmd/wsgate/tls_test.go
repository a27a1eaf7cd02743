package main

// Issue 9 through the real binary and real clients: curl with --cacert, openssl s_client (its K
// and k KeyUpdate commands, each TLS 1.3 suite), -redirect-http, certificate reload on SIGHUP,
// the kTLS line at start, and the TLS flags' errors.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/wsgate/wsgate/internal/localca"
)

// headersBackend answers every request with what it saw.
func headersBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "proto=%s host=%s path=%s body=%d\n", r.Header.Get("X-Forwarded-Proto"), r.Host, r.URL.Path, len(body))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func writePKI(t *testing.T, dir string) localca.Files {
	t.Helper()
	f, err := localca.WriteFiles(dir, 24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func startTLSWsgate(t *testing.T, f localca.Files, extra ...string) (*proc, string) {
	t.Helper()
	be := headersBackend(t)
	addr := freePort(t)
	p := wsgate(t, append([]string{"-listen", addr, "-backend", be, "-loops", "2", "-tls-cert", f.Cert, "-tls-key", f.Key}, extra...)...)
	p.waitLog(t, "serving TLS", 10*time.Second)
	return p, addr
}

func need(t *testing.T, tool string) string {
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s is not installed (apt-get install %s)", tool, tool)
	}
	return p
}

// TestBinaryTLSCurl: curl verifies the chain against the test CA and gets the backend's answer over
// TLS 1.3 and TLS 1.2, with X-Forwarded-Proto https; an upload too.
func TestBinaryTLSCurl(t *testing.T) {
	curl := need(t, "curl")
	f := writePKI(t, t.TempDir())
	p, addr := startTLSWsgate(t, f)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	for _, v := range [][]string{{"--tlsv1.3"}, {"--tlsv1.2", "--tls-max", "1.2"}} {
		args := append([]string{"-sS", "--max-time", "20", "--cacert", f.CA, "--resolve", "localhost:" + port + ":127.0.0.1",
			"-w", "\n%{http_code} %{ssl_verify_result}", "--data-binary", "@" + f.Cert}, v...)
		out, err := exec.Command(curl, append(args, "https://localhost:"+port+"/curl/path")...).CombinedOutput()
		want := fmt.Sprintf("proto=https host=localhost:%s path=/curl/path body=", port)
		if err != nil || !strings.Contains(string(out), want) || !strings.HasSuffix(string(out), "\n200 0") {
			t.Fatalf("curl %v: %v\n%s", v, err, out)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	// kTLS: said once at start, and this kernel has no TLS ULP.
	if n := strings.Count(p.stderr.String(), "msg=\"ktls"); n != 1 {
		t.Fatalf("%d ktls lines at start, want 1:\n%s", n, p.stderr.String())
	}
	t.Logf("ktls line: %s", grepLine(p.stderr.String(), "ktls"))
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestBinaryTLSOpenSSLKeyUpdate: openssl s_client sends a request, then its K command (KeyUpdate,
// update_requested) and k (KeyUpdate, not requested) between requests on the same connection:
// every request is answered, for each TLS 1.3 cipher suite (openssl can choose them; Go's client
// cannot).
func TestBinaryTLSOpenSSLKeyUpdate(t *testing.T) {
	openssl := need(t, "openssl")
	f := writePKI(t, t.TempDir())
	_, addr := startTLSWsgate(t, f)
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			cmd := exec.Command(openssl, "s_client", "-connect", addr, "-servername", "localhost", "-CAfile", f.CA,
				"-verify_return_error", "-tls1_3", "-ciphersuites", suite, "-msg") // no -ign_eof: it turns the K/k commands off
			stdin, _ := cmd.StdinPipe()
			var out syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			waitOut := func(want string, n int) {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for strings.Count(out.String(), want) < n {
					if time.Now().After(deadline) {
						cmd.Process.Kill()
						t.Fatalf("no %d x %q from openssl; output:\n%s", n, want, out.String())
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			// s_client reads commands at the start of a line: "K" / "k" alone on a line.
			// The requests are HTTP/1.1 with CRLF; the key updates go between them.
			io.WriteString(stdin, "GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n")
			waitOut("path=/one", 1)
			io.WriteString(stdin, "K\n")
			waitOut("KEYUPDATE", 1)
			io.WriteString(stdin, "GET /two HTTP/1.1\r\nHost: localhost\r\n\r\n")
			waitOut("path=/two", 1)
			io.WriteString(stdin, "k\n")
			waitOut("KEYUPDATE", 2)
			io.WriteString(stdin, "GET /three HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
			waitOut("path=/three", 1)
			stdin.Close()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("openssl did not end after Connection: close; output:\n%s", out.String())
			}
			o := out.String()
			if !strings.Contains(o, "Cipher is "+suite) && !strings.Contains(o, "Ciphersuite: "+suite) && !strings.Contains(o, suite) {
				t.Fatalf("suite %s not negotiated:\n%s", suite, o)
			}
			if !strings.Contains(o, "Verify return code: 0 (ok)") {
				t.Fatalf("chain not verified:\n%s", o)
			}
			// -msg shows the handshake messages: two KeyUpdates sent, and wsgate's own KeyUpdate
			// received once, answering the K (update_requested), not the k.
			sent, got := strings.Count(o, ">>> TLS 1.3, Handshake [length 0005], KeyUpdate"), strings.Count(o, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate")
			if sent != 2 || got != 1 {
				t.Fatalf("KeyUpdates sent %d (want 2), received %d (want 1):\n%s", sent, got, o)
			}
		})
	}
}

// TestBinaryTLSRedirectHTTP: -redirect-http answers every plain request with 308 to the same host
// and path on https (with the TLS listener's port when it is not 443).
func TestBinaryTLSRedirectHTTP(t *testing.T) {
	f := writePKI(t, t.TempDir())
	raddr := freePort(t)
	_, addr := startTLSWsgate(t, f, "-redirect-http", raddr)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+raddr+"/some/path?q=1", nil)
	req.Host = "grafana.example:8080"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://grafana.example:" + port + "/some/path?q=1"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("redirect: %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	// Following it (to localhost) lands on wsgate's TLS listener.
	_, pool := caPool(t, f.CA)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		if a == "localhost:"+port {
			a = addr // localhost may resolve to ::1 first
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", a)
	}}
	defer tr.CloseIdleConnections()
	req, _ = http.NewRequest("GET", "http://"+raddr+"/followed", nil)
	req.Host = "localhost"
	resp, err = (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("following the redirect: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "proto=https host=localhost:"+port+" path=/followed") {
		t.Fatalf("after the redirect: %d %q", resp.StatusCode, body)
	}
}

func caPool(t *testing.T, file string) ([]byte, *x509.CertPool) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return b, pool
}

// TestBinaryTLSReloadOnSIGHUP: SIGHUP re-reads the files. A new certificate is served to new
// connections while an established one keeps working; a bad file is refused with an Error line
// naming it, and the certificate in use stays.
func TestBinaryTLSReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	f := writePKI(t, dir)
	admin := freePort(t)
	p, addr := startTLSWsgate(t, f, "-admin", admin)
	_, pool1 := caPool(t, f.CA)
	serial := func(pool *x509.CertPool) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	first, err := serial(pool1)
	if err != nil {
		t.Fatal(err)
	}
	// An established connection, kept across the reloads.
	keep, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool1, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	keepReq := func() {
		t.Helper()
		keep.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(keep, "GET /keep HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(keep), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("established connection after reload: %v", err)
		}
		io.ReadAll(resp.Body)
	}
	keepReq()

	// A new CA and certificate replace the files.
	f2 := writePKI(t, filepath.Join(dir, "new"))
	for _, c := range [][2]string{{f2.Cert, f.Cert}, {f2.Key, f.Key}} {
		b, _ := os.ReadFile(c[0])
		os.WriteFile(c[1], b, 0o600)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "SIGHUP: reloaded", 10*time.Second)
	if line := grepLine(p.stderr.String(), "SIGHUP: reloaded"); !strings.Contains(line, "changed=certificates") {
		t.Fatalf("the reload does not say the certificates changed: %s", line)
	}
	if f := scrapeUntil(t, admin, func(f map[string]*dto.MetricFamily) bool { return has(f, "wsgate_reloads_total", "result=ok", 1) }); !has(f, "wsgate_reloads_total", "result=ok", 1) {
		t.Fatal("wsgate_reloads_total{result=\"ok\"} is not 1 after a good reload")
	}
	_, pool2 := caPool(t, f2.CA)
	second, err := serial(pool2)
	if err != nil || second == first {
		t.Fatalf("after reload: serial %s (was %s), err %v", second, first, err)
	}
	keepReq()

	// A broken key file: refused, the certificate in use stays.
	os.WriteFile(f.Key, []byte("not a key"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "SIGHUP: reload refused", 10*time.Second)
	if line := grepLine(p.stderr.String(), "msg=\"reload refused\""); !strings.Contains(line, "level=ERROR") || !strings.Contains(line, f.Key) {
		t.Fatalf("the refusal does not name the file at Error level: %s", line)
	}
	if f := scrapeUntil(t, admin, func(f map[string]*dto.MetricFamily) bool { return has(f, "wsgate_reloads_total", "result=error", 1) }); !has(f, "wsgate_reloads_total", "result=error", 1) || !has(f, "wsgate_reloads_total", "result=ok", 1) {
		t.Fatal("wsgate_reloads_total: want result=ok 1 and result=error 1 after a good and a bad reload")
	}
	if third, err := serial(pool2); err != nil || third != second {
		t.Fatalf("after a bad reload: serial %s, want %s (err %v)", third, second, err)
	}
	keepReq()
}

// TestBinaryTLSFlagErrors: the TLS flags' mistakes are one line and exit 2.
func TestBinaryTLSFlagErrors(t *testing.T) {
	f := writePKI(t, t.TempDir())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls-cert", f.Cert}, "go in pairs"},
		{[]string{"-tls-cert", f.Cert, "-tls-key", f.Key, "-tls-min-version", "1.1"}, "want 1.2 or 1.3"},
		{[]string{"-tls-cert", f.Cert, "-tls-key", f.Key, "-tls-handshakes", "0"}, "-tls-handshakes 0"},
		{[]string{"-tls-cert", f.Cert, "-tls-key", f.Key, "-ktls", "on"}, "want auto or off"},
		{[]string{"-redirect-http", ":0"}, "needs -tls-cert"},
		{[]string{"-tls-cert", "/nonexistent/cert.pem", "-tls-key", f.Key}, "/nonexistent/cert.pem"},
		{[]string{"-tls-cert", f.Cert, "-tls-key", f.CA}, f.CA},
	} {
		p := wsgate(t, append([]string{"-listen", freePort(t), "-backend", "127.0.0.1:1"}, c.args...)...)
		code := p.wait(t, 10*time.Second)
		out := p.stderr.String()
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, c.want) {
			t.Fatalf("%v: exit %d, stderr %q, want one line with %q", c.args, code, out, c.want)
		}
	}
}

// TestBinaryTLSFromConfigFile: the TLS settings in a -config file (tls_cert/tls_key as arrays,
// tls_min_version): wsgate serves TLS 1.3 only; -check-config loads the certificate files and
// names a bad one; a bad tls_min_version is reported at its line.
func TestBinaryTLSFromConfigFile(t *testing.T) {
	dir := t.TempDir()
	f := writePKI(t, dir)
	be := headersBackend(t)
	addr := freePort(t)
	conf := filepath.Join(dir, "wsgate.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("listen = %q\nbackend = %q\ntls_cert = [%q]\ntls_key = [%q]\ntls_min_version = \"1.3\"\n", addr, be, f.Cert, f.Key)), 0o644)
	p := wsgate(t, "-config", conf)
	p.waitLog(t, "serving TLS", 10*time.Second)
	_, pool := caPool(t, f.CA)
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("TLS 1.2 accepted with tls_min_version = \"1.3\"")
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte(fmt.Sprintf("listen = %q\nbackend = %q\ntls_cert = [%q]\ntls_key = [%q]\n", addr, be, f.Cert, f.CA)), 0o644)
	cc := wsgate(t, "-check-config", "-config", bad)
	if code := cc.wait(t, 10*time.Second); code != 1 || !strings.Contains(cc.stderr.String(), f.CA) {
		t.Fatalf("-check-config with a bad key: exit %d, stderr %q", code, cc.stderr.String())
	}
	ver := filepath.Join(dir, "ver.toml")
	os.WriteFile(ver, []byte(fmt.Sprintf("backend = %q\ntls_cert = [%q]\ntls_key = [%q]\ntls_min_version = \"1.1\"\n", be, f.Cert, f.Key)), 0o644)
	cv := wsgate(t, "-check-config", "-config", ver)
	if code := cv.wait(t, 10*time.Second); code != 1 || !strings.Contains(cv.stderr.String(), ver+":4") {
		t.Fatalf("bad tls_min_version: exit %d, stderr %q (want it at %s:4)", code, cv.stderr.String(), ver)
	}
}
