package loop_test

// TLS harness (issue 9): a throw-away CA and server certificate per test binary, wsgate with a
// tlsterm.Server in front of a test backend, clients that verify the chain against that CA, and a
// raw client that speaks TLS 1.3 records itself (from the secrets a crypto/tls client logged) for
// what crypto/tls hides: KeyUpdate, close_notify, bad tags, truncated records.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/localca"
	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/tlsrecord"
	"github.com/wsgate/wsgate/tlsterm"
)

var (
	pkiOnce  sync.Once
	pkiFiles localca.Files
	pkiPool  *x509.CertPool
	pkiErr   error
)

// testPKI writes a CA and a certificate for localhost and 127.0.0.1 once per test binary.
func testPKI(t testing.TB) (localca.Files, *x509.CertPool) {
	t.Helper()
	pkiOnce.Do(func() {
		if ca := os.Getenv("WSGATE_TLS_CA"); ca != "" { // a helper subprocess trusts its parent's CA
			pkiFiles.CA = ca
			pem, err := os.ReadFile(ca)
			pkiErr = err
			pkiPool = x509.NewCertPool()
			pkiPool.AppendCertsFromPEM(pem)
			return
		}
		dir, err := os.MkdirTemp("", "wsgate-tls-test")
		if err != nil {
			pkiErr = err
			return
		}
		pkiFiles, pkiErr = localca.WriteFiles(filepath.Join(dir, "pki"), 24*time.Hour, "localhost", "127.0.0.1")
		if pkiErr != nil {
			return
		}
		pem, err := os.ReadFile(pkiFiles.CA)
		if err != nil {
			pkiErr = err
			return
		}
		pkiPool = x509.NewCertPool()
		pkiPool.AppendCertsFromPEM(pem)
	})
	if pkiErr != nil {
		t.Fatalf("test PKI: %v", pkiErr)
	}
	return pkiFiles, pkiPool
}

// newTLSServer builds the tlsterm.Server a TLS listener uses, from the test certificate.
func newTLSServer(t testing.TB, mod ...func(*tlsterm.Config)) *tlsterm.Server {
	t.Helper()
	f, _ := testPKI(t)
	store, err := tlsterm.LoadCerts(tlsterm.CertPair{CertFile: f.Cert, KeyFile: f.Key})
	if err != nil {
		t.Fatalf("load test certificate: %v", err)
	}
	cfg := tlsterm.Config{Certs: store}
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := tlsterm.NewServer(cfg)
	if err != nil {
		t.Fatalf("tlsterm.NewServer: %v", err)
	}
	return srv
}

func withTLS(srv *tlsterm.Server) func(*loop.Config) {
	return func(c *loop.Config) { c.TLS = srv }
}

// startTLSProxy starts wsgate on TLS in front of backend.
func startTLSProxy(t testing.TB, backend string, mod ...func(*tlsterm.Config)) (*loop.Server, string, *tlsterm.Server) {
	t.Helper()
	ts := newTLSServer(t, mod...)
	s, addr := startProxy(t, backend, withTLS(ts))
	return s, addr, ts
}

// clientTLS is a verifying client configuration for the test certificate.
func clientTLS(t testing.TB, mod ...func(*tls.Config)) *tls.Config {
	_, pool := testPKI(t)
	c := &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
	for _, m := range mod {
		m(c)
	}
	return c
}

func tls12(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }
func tls13(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }

// tlsRaw is a crypto/tls client connection with a bufio reader for responses.
type tlsRaw struct {
	*tls.Conn
	br *bufio.Reader
}

func dialTLS(t testing.TB, addr string, cfg *tls.Config) *tlsRaw {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial wsgate %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := tls.Client(nc, cfg)
	if err := c.Handshake(); err != nil {
		t.Fatalf("TLS handshake with wsgate %s: %v", addr, err)
	}
	return &tlsRaw{Conn: c, br: bufio.NewReaderSize(c, 64<<10)}
}

func (c *tlsRaw) send(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		t.Fatalf("write to wsgate over TLS: %v", err)
	}
}

func (c *tlsRaw) fullResponse(t testing.TB, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response to %s over TLS: %v", method, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body of %s response over TLS (status %d): %v", method, resp.StatusCode, err)
	}
	return resp, body
}

// echoHeaders is a backend handler that reports what it saw: the forwarded fields, the request
// body's length and hash; /redirect answers with a Location naming the backend.
func echoHeaders(backendAddr *string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		h.Set("X-Seen-For", r.Header.Get("X-Forwarded-For"))
		h.Set("X-Seen-Host", r.Host)
		if r.URL.Path == "/redirect" {
			h.Set("Location", "http://"+*backendAddr+"/elsewhere")
			w.WriteHeader(http.StatusFound)
			return
		}
		sum, n, _ := hashReader(r.Body)
		h.Set("X-Req-Sum", sum)
		h.Set("X-Req-Len", fmt.Sprint(n))
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})
}

// ---------------------------------------------------------------------------------------------
// the raw TLS 1.3 client: crypto/tls does the handshake (and logs its secrets), then the test
// speaks records itself with tlsrecord in the client role.

type keyLog struct {
	mu    sync.Mutex
	lines map[string][]byte // label -> secret (one handshake per keyLog)
}

func (k *keyLog) Write(p []byte) (int, error) {
	f := strings.Fields(string(p))
	if len(f) == 3 {
		var b []byte
		fmt.Sscanf(f[2], "%x", &b)
		k.mu.Lock()
		if k.lines == nil {
			k.lines = map[string][]byte{}
		}
		k.lines[f[0]] = b
		k.mu.Unlock()
	}
	return len(p), nil
}

func (k *keyLog) get(label string) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lines[label]
}

// recordClient is a TLS 1.3 connection after a crypto/tls handshake, driven record by record.
type recordClient struct {
	t    testing.TB
	nc   net.Conn
	sess *tlsrecord.Session
	in   []byte // ciphertext read but not opened
	app  []byte // plaintext received
	evs  []tlsrecord.Event
	err  error // a record the client could not open (or the server's fatal alert)
	eof  bool  // TCP EOF
}

// oneRecordConn hands crypto/tls one whole record per Read, so that its handshake never reads
// ahead into the records behind the server's Finished (a ticket, data): those stay in the socket
// for the test's own record layer.
type oneRecordConn struct {
	net.Conn
	cur []byte
}

func (c *oneRecordConn) Read(b []byte) (int, error) {
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

// dialRecordClient does a TLS 1.3 handshake with crypto/tls and takes over the connection.
func dialRecordClient(t testing.TB, addr string) *recordClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial wsgate %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	kl := &keyLog{}
	c := tls.Client(&oneRecordConn{Conn: nc}, clientTLS(t, tls13, func(c *tls.Config) { c.KeyLogWriter = kl }))
	if err := c.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	cs := c.ConnectionState()
	sess, err := tlsrecord.NewSession(tlsrecord.Keys{
		Suite: cs.CipherSuite, ReadSecret: kl.get("SERVER_TRAFFIC_SECRET_0"), WriteSecret: kl.get("CLIENT_TRAFFIC_SECRET_0"),
		Client: true, // the server's NewSessionTicket records are accepted and ignored
	})
	if err != nil {
		t.Fatalf("client record layer: %v", err)
	}
	return &recordClient{t: t, nc: nc, sess: sess}
}

func (c *recordClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("raw write to wsgate: %v", err)
	}
}

// seal seals p as one or more application records.
func (c *recordClient) seal(p string) []byte {
	out, err := c.sess.Seal(nil, []byte(p))
	if err != nil {
		c.t.Fatalf("seal: %v", err)
	}
	return out
}

func (c *recordClient) send(p string) { c.write(c.seal(p)) }

// readUntil reads and opens records until cond holds, the server closes, or d passes.
func (c *recordClient) readUntil(d time.Duration, cond func() bool) bool {
	c.nc.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64<<10)
	for !cond() {
		if c.eof {
			return cond()
		}
		n, err := c.nc.Read(buf)
		if c.err == nil {
			c.in = append(c.in, buf[:n]...)
		}
		for len(c.in) > 0 && c.err == nil {
			k, plain, ev, oerr := c.sess.Open(c.in)
			c.in = c.in[k:]
			c.app = append(c.app, plain...)
			if ev != tlsrecord.EventNone {
				c.evs = append(c.evs, ev)
			}
			if oerr != nil {
				c.err = oerr
				break
			}
			if k == 0 {
				break
			}
		}
		if err != nil {
			if err == io.EOF || isReset(err) {
				c.eof = true
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return cond()
			}
			if !c.eof {
				return cond()
			}
		}
	}
	return true
}

func (c *recordClient) sawEvent(ev tlsrecord.Event) bool {
	for _, e := range c.evs {
		if e == ev {
			return true
		}
	}
	return false
}

// responses parses the plaintext received so far as HTTP responses.
func (c *recordClient) responses(method string) []*http.Response {
	var out []*http.Response
	br := bufio.NewReader(bytes.NewReader(c.app))
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return out
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		out = append(out, resp)
	}
}

// handshakeGoroutines counts the goroutines running a TLS handshake: tlsterm's handshake goroutine
// inside crypto/tls. (One that has finished and released its slot may still be on its way out for
// a moment, in tlsterm's own code: it holds no slot and is not counted.)
func handshakeGoroutines() int {
	buf := make([]byte, 8<<20)
	n := runtime.Stack(buf, true)
	count := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "tlsterm.(*Handshake).run(") && strings.Contains(g, "crypto/tls.(*Conn).") {
			count++
		}
	}
	return count
}
