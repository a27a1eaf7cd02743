package tlsterm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/tlsrecord"
)

// testCA issues certificates for the tests; its pool is the clients' RootCAs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var (
	caOnce sync.Once
	ca     *testCA
)

func getCA(t testing.TB) *testCA {
	caOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wsgate test CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		c, _ := x509.ParseCertificate(der)
		pool := x509.NewCertPool()
		pool.AddCert(c)
		ca = &testCA{cert: c, key: key, pool: pool}
	})
	return ca
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// issue writes a certificate for names (ECDSA P-256 or RSA 2048) and its key
// to dir and returns the pair.
func issue(t testing.TB, dir, base string, useRSA bool, names ...string) CertPair {
	t.Helper()
	c := getCA(t)
	var pub any
	var keyDER []byte
	var err error
	if useRSA {
		rsaOnce.Do(func() { rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048) })
		pub = &rsaKey.PublicKey
		keyDER, err = x509.MarshalPKCS8PrivateKey(rsaKey)
	} else {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = &k.PublicKey
		keyDER, err = x509.MarshalPKCS8PrivateKey(k)
	}
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		t.Fatal(err)
	}
	p := CertPair{filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")}
	os.WriteFile(p.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(p.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return p
}

func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Certs == nil {
		dir := t.TempDir()
		certs, err := LoadCerts(issue(t, dir, "default", false, "localhost", "*.example.test"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certs = certs
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// harnessOpts change how the stand-in loop feeds the driver.
type harnessOpts struct {
	byteWise bool // every Feed/Open/Read gets one byte
	noEcho   bool // just collect what arrives
}

// connResult is what the stand-in loop saw on one connection.
type connResult struct {
	info                        Info
	err                         error // why it ended, nil after a clean close_notify exchange
	received                    []byte
	closeNotify                 bool
	keyUpdatesIn, keyUpdatesOut uint32
	wire                        []byte // every byte written to the client
	partialAtEOF                bool
	rest                        int // bytes behind the client's Finished handed over with the session
}

// serveOne stands in for the event loop: one goroutine reads the socket and
// hands chunks over; the loop goroutine feeds the driver / session and writes
// what they return. Plaintext is echoed back.
func serveOne(srv *Server, c net.Conn, o harnessOpts) connResult {
	var res connResult
	defer c.Close()
	wakeCh := make(chan struct{}, 1)
	h := srv.NewHandshake(func() {
		select {
		case wakeCh <- struct{}{}:
		default:
		}
	})
	defer h.Close()
	data := make(chan []byte, 16)
	go func() {
		defer close(data)
		for {
			buf := make([]byte, 16<<10)
			n, err := c.Read(buf)
			if n > 0 {
				data <- buf[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	write := func(b []byte) {
		if len(b) > 0 {
			res.wire = append(res.wire, b...)
			c.Write(b)
		}
	}
	pieces := func(b []byte) [][]byte {
		if !o.byteWise {
			return [][]byte{b}
		}
		ps := make([][]byte, len(b))
		for i := range b {
			ps[i] = b[i : i+1]
		}
		return ps
	}
	deadline := time.After(20 * time.Second)
	var leftover []byte // bytes of the last chunk read after the handshake completed in it
	for h.State() < StateEstablished {
		var out []byte
		var err error
		select {
		case b, ok := <-data:
			if !ok {
				// The handshake may have failed just before: report that.
				if _, st, ferr := h.Feed(nil); st == StateFailed {
					res.err = ferr
				} else {
					res.err = errors.New("client closed during the handshake")
				}
				return res
			}
			ps := pieces(b)
			for i, p := range ps {
				var o2 []byte
				var st State
				o2, st, err = h.Feed(p)
				out = append(out, o2...)
				if err != nil {
					break
				}
				if st == StateEstablished {
					// What follows in this chunk belongs to the session.
					for _, q := range ps[i+1:] {
						leftover = append(leftover, q...)
					}
					break
				}
			}
		case <-wakeCh:
			out, _, err = h.Feed(nil)
		case <-deadline:
			res.err = errors.New("handshake timed out")
			return res
		}
		write(out)
		if err != nil {
			res.err = err
			return res
		}
	}
	res.info = h.Info()
	if l := h.Legacy(); l != nil {
		l.Feed(leftover)
		return serveLegacy(l, c, data, write, pieces, res, o)
	}
	s := h.Session()
	rest := h.Rest()
	res.rest = len(rest)
	h = nil
	defer s.Close()
	done := false
	process := func(in []byte) {
		for _, p := range pieces(in) {
			for !done {
				n, plain, ev, err := s.Open(p)
				if err != nil {
					if a, ok := tlsrecord.AlertFor(err); ok {
						out, _ := s.AppendAlert(nil, a)
						write(out)
					}
					res.err, done = err, true
					return
				}
				if len(plain) > 0 {
					res.received = append(res.received, plain...)
					if !o.noEcho {
						out, err := s.Seal(nil, plain)
						if err == nil {
							write(out)
						}
					}
					if string(plain) == "server-close" {
						// The server closes its direction first.
						out, _ := s.AppendCloseNotify(nil)
						write(out)
						c.(*net.TCPConn).CloseWrite()
					}
				}
				switch ev {
				case tlsrecord.EventCloseNotify:
					res.closeNotify = true
					if !s.WriteClosed() {
						out, _ := s.AppendCloseNotify(nil)
						write(out)
						c.(*net.TCPConn).CloseWrite()
					}
				case tlsrecord.EventKeyUpdateRequested:
					out, _ := s.Flush(nil)
					write(out)
				}
				p = p[n:]
				if n == 0 {
					break
				}
			}
		}
	}
	process(rest)
	process(leftover)
	for b := range data {
		if done {
			continue
		}
		process(b)
	}
	res.partialAtEOF = s.Partial()
	if res.err == nil && !res.closeNotify {
		res.err = io.ErrUnexpectedEOF
		if s.Partial() {
			res.err = errors.New("tls: connection closed inside a record")
		}
	}
	res.keyUpdatesIn, res.keyUpdatesOut = s.KeyUpdatesIn, s.KeyUpdatesOut
	return res
}

func serveLegacy(l *Legacy, c net.Conn, data chan []byte, write func([]byte), pieces func([]byte) [][]byte, res connResult, o harnessOpts) connResult {
	defer l.Close()
	buf := make([]byte, 32<<10)
	done := false
	// drain decrypts whatever complete records are queued: call it right
	// after the handshake too (a resuming client's first request may have
	// arrived with its Finished).
	drain := func() {
		for {
			n, err := l.Read(buf)
			if n > 0 {
				res.received = append(res.received, buf[:n]...)
				if !o.noEcho {
					l.Write(buf[:n])
				}
				continue
			}
			if err == ErrWouldBlock {
				break
			}
			if err == io.EOF {
				res.closeNotify = true
				l.CloseWrite()
			} else {
				res.err = err
			}
			done = true
			break
		}
		write(l.Output(nil))
		if done && res.closeNotify {
			c.(*net.TCPConn).CloseWrite()
		}
	}
	drain()
	for b := range data {
		for _, p := range pieces(b) {
			if done {
				break
			}
			l.Feed(p)
			drain()
		}
	}
	if res.err == nil && !res.closeNotify {
		res.err = io.ErrUnexpectedEOF
	}
	return res
}

// testListener serves every accepted connection with serveOne and reports
// the results in order of completion.
type testListener struct {
	ln      net.Listener
	results chan connResult
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func listen(t testing.TB, srv *Server, o harnessOpts) *testListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &testListener{ln: ln, results: make(chan connResult, 256)}
	tl.wg.Add(1)
	go func() {
		defer tl.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tl.mu.Lock()
			tl.conns = append(tl.conns, c)
			tl.mu.Unlock()
			tl.wg.Add(1)
			go func() {
				defer tl.wg.Done()
				r := serveOne(srv, c, o)
				select {
				case tl.results <- r:
				default:
				}
			}()
		}
	}()
	// Closing the server side too: a test that failed with its client still
	// open must not leave the cleanup waiting for it.
	t.Cleanup(func() {
		ln.Close()
		tl.mu.Lock()
		for _, c := range tl.conns {
			c.Close()
		}
		tl.mu.Unlock()
		tl.wg.Wait()
	})
	return tl
}

func (tl *testListener) addr() string { return tl.ln.Addr().String() }

func (tl *testListener) next(t testing.TB) connResult {
	t.Helper()
	select {
	case r := <-tl.results:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no connection result")
	}
	return connResult{}
}

// keyLogBuf collects a client's key log lines.
type keyLogBuf struct {
	mu sync.Mutex
	b  []byte
}

func (k *keyLogBuf) Write(p []byte) (int, error) {
	k.mu.Lock()
	k.b = append(k.b, p...)
	k.mu.Unlock()
	return len(p), nil
}

func clientConfig(t testing.TB) *tls.Config {
	return &tls.Config{RootCAs: getCA(t).pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
}

func parseCert(der []byte) (*x509.Certificate, error) { return x509.ParseCertificate(der) }

func newPool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

func timeIn(sec int) time.Time { return time.Now().Add(time.Duration(sec) * time.Second) }

func readFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }
