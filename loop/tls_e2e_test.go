package loop_test

// Issue 9, "Done means": HTTPS through wsgate, with the standard library's TLS client as the
// oracle (and a record-level client built on the secrets it logs where crypto/tls hides the
// wire: KeyUpdate, close_notify, bad tags, truncated records).

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/loop"
	"github.com/wsgate/wsgate/tlsrecord"
	"github.com/wsgate/wsgate/tlsterm"
)

// TestTLSProxyVersionsAndSuites: requests over TLS 1.2 (each AEAD suite, forced by the client)
// and TLS 1.3 are proxied with keep-alive and pipelining; the backend sees X-Forwarded-Proto:
// https, and a Location naming the backend comes back as https://<the Host the client used>.
func TestTLSProxyVersionsAndSuites(t *testing.T) {
	var baddr string
	b := newBackend(t, echoHeaders(&baddr))
	baddr = b.Addr
	_, addr, _ := startTLSProxy(t, b.Addr)
	cases := []struct {
		name    string
		version uint16
		suite   uint16
		mod     func(*tls.Config)
	}{
		{"tls13", tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, tls13},
		{"tls12-aes128gcm", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, nil},
		{"tls12-aes256gcm", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, nil},
		{"tls12-chacha20", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mod := tc.mod
			if tc.version == tls.VersionTLS12 {
				suite := tc.suite
				mod = func(c *tls.Config) { tls12(c); c.CipherSuites = []uint16{suite} }
			}
			c := dialTLS(t, addr, clientTLS(t, mod))
			cs := c.ConnectionState()
			if cs.Version != tc.version || cs.CipherSuite != tc.suite || cs.NegotiatedProtocol != "http/1.1" {
				t.Fatalf("negotiated %#x %s alpn %q, want %#x %s http/1.1", cs.Version, tls.CipherSuiteName(cs.CipherSuite), cs.NegotiatedProtocol, tc.version, tls.CipherSuiteName(tc.suite))
			}
			// Two pipelined requests and a third after them on the same connection.
			c.send(t, "GET /a HTTP/1.1\r\nHost: example.test\r\n\r\nGET /redirect HTTP/1.1\r\nHost: example.test\r\n\r\n")
			resp, body := c.fullResponse(t, "GET")
			if resp.StatusCode != 200 || string(body) != "hello /a" {
				t.Fatalf("GET /a: %d %q", resp.StatusCode, body)
			}
			if got := resp.Header.Get("X-Seen-Proto"); got != "https" {
				t.Fatalf("backend saw X-Forwarded-Proto %q, want https", got)
			}
			if got := resp.Header.Get("X-Seen-Host"); got != "example.test" {
				t.Fatalf("backend saw Host %q, want the client's example.test", got)
			}
			resp, _ = c.fullResponse(t, "GET")
			if got := resp.Header.Get("Location"); resp.StatusCode != 302 || got != "https://example.test/elsewhere" {
				t.Fatalf("GET /redirect: %d Location %q, want 302 https://example.test/elsewhere", resp.StatusCode, got)
			}
			body16 := strings.Repeat("x", 100<<10) // a body of several records
			c.send(t, "POST /post HTTP/1.1\r\nHost: example.test\r\nContent-Length: "+fmt.Sprint(len(body16))+"\r\n\r\n"+body16)
			resp, body = c.fullResponse(t, "POST")
			if resp.StatusCode != 200 || string(body) != "hello /post" || resp.Header.Get("X-Req-Len") != fmt.Sprint(len(body16)) || resp.Header.Get("X-Req-Sum") != sumOf([]byte(body16)) {
				t.Fatalf("POST: %d %q len %s", resp.StatusCode, body, resp.Header.Get("X-Req-Len"))
			}
		})
	}
}

// TestTLSNetHTTPClient: net/http's client over https through wsgate, large bodies both ways,
// connection reuse.
func TestTLSNetHTTPClient(t *testing.T) {
	b := newBackend(t, http.HandlerFunc(dataHandler))
	_, addr, _ := startTLSProxy(t, b.Addr)
	for _, v := range []struct {
		name string
		mod  func(*tls.Config)
	}{{"tls13", tls13}, {"tls12", tls12}} {
		t.Run(v.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: clientTLS(t, v.mod), DisableCompression: true, ForceAttemptHTTP2: false}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
			for _, n := range []int64{0, 1, 16 << 10, 1 << 20} {
				up := genBytes(uint64(n)+7, int(n))
				req, _ := http.NewRequest("POST", fmt.Sprintf("https://localhost:%s/d?n=%d&seed=%d", portOf(addr), n, n), bytes.NewReader(up))
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("POST n=%d: %v", n, err)
				}
				sum, got, err := hashReader(resp.Body)
				resp.Body.Close()
				if err != nil || got != n || sum != genSum(uint64(n), n) || resp.Header.Get("X-Req-Sum") != sumOf(up) {
					t.Fatalf("n=%d: got %d bytes (%v), sums match: down %v up %v", n, got, err, sum == genSum(uint64(n), n), resp.Header.Get("X-Req-Sum") == sumOf(up))
				}
				if resp.TLS == nil || resp.Proto != "HTTP/1.1" {
					t.Fatalf("response not over TLS HTTP/1.1: %v %s", resp.TLS, resp.Proto)
				}
			}
		})
	}
}

// TestTLSTicketsAndResumption: with tickets on, a second connection resumes (both versions);
// with tickets off it does a full handshake.
func TestTLSTicketsAndResumption(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	for _, tickets := range []bool{true, false} {
		_, addr, ts := startTLSProxy(t, b.Addr, func(c *tlsterm.Config) { c.SessionTicketsDisabled = !tickets })
		for _, v := range []struct {
			name string
			mod  func(*tls.Config)
		}{{"tls13", tls13}, {"tls12", tls12}} {
			t.Run(fmt.Sprintf("%s/tickets=%v", v.name, tickets), func(t *testing.T) {
				cache := tls.NewLRUClientSessionCache(4)
				for i := 0; i < 3; i++ {
					c := dialTLS(t, addr, clientTLS(t, v.mod, func(c *tls.Config) { c.ClientSessionCache = cache }))
					c.send(t, "GET /r HTTP/1.1\r\nHost: h\r\n\r\n")
					resp, body := c.fullResponse(t, "GET")
					if resp.StatusCode != 200 || string(body) != "hello /r" {
						t.Fatalf("conn %d: %d %q", i, resp.StatusCode, body)
					}
					resumed := c.ConnectionState().DidResume
					if want := tickets && i > 0; resumed != want {
						t.Fatalf("conn %d: DidResume %v, want %v", i, resumed, want)
					}
					c.Close()
				}
			})
		}
		if st := ts.Stats(); tickets && st.Resumed == 0 {
			t.Fatalf("tlsterm counted no resumed handshake: %+v", st)
		}
	}
}

// byteConn writes one byte per write(2) (and so per TCP segment with TCP_NODELAY): every record
// of the handshake and of the requests arrives at wsgate in pieces.
type byteConn struct{ net.Conn }

func (c byteConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
		if i%64 == 63 {
			time.Sleep(time.Millisecond) // let gnet see several separate reads
		}
	}
	return len(p), nil
}

// TestTLSBytewise: handshake and requests fed to wsgate one byte at a time, TLS 1.2 and 1.3.
func TestTLSBytewise(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	_, addr, _ := startTLSProxy(t, b.Addr)
	for _, v := range []struct {
		name string
		mod  func(*tls.Config)
	}{{"tls13", tls13}, {"tls12", tls12}} {
		t.Run(v.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(60 * time.Second))
			c := tls.Client(byteConn{nc}, clientTLS(t, v.mod))
			br := bufio.NewReader(c)
			body := strings.Repeat("b", 5000)
			for i := 0; i < 2; i++ {
				if _, err := io.WriteString(c, "POST /byte HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n"+body); err != nil {
					t.Fatalf("write: %v", err)
				}
				resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(got) != "hello /byte" || resp.Header.Get("X-Req-Len") != "5000" {
					t.Fatalf("request %d: %d %q len %s", i, resp.StatusCode, got, resp.Header.Get("X-Req-Len"))
				}
			}
		})
	}
}

// TestTLSPlainHTTPOnTLSPort: a plain HTTP request on the TLS port gets nginx's plain-text 400
// and a close; nothing reaches the backend.
func TestTLSPlainHTTPOnTLSPort(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	_, addr, ts := startTLSProxy(t, b.Addr)
	c := dialRaw(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := c.fullResponse(t, "GET")
	if resp.StatusCode != 400 || !strings.Contains(string(body), "The plain HTTP request was sent to HTTPS port") {
		t.Fatalf("plain HTTP on the TLS port: %d %q", resp.StatusCode, body)
	}
	c.expectClosed(t, 5*time.Second)
	if b.Requests.Load() != 0 {
		t.Fatalf("the backend got %d requests", b.Requests.Load())
	}
	if st := ts.Stats(); st.PlainHTTP != 1 {
		t.Fatalf("tlsterm counted %d plain HTTP clients, want 1", st.PlainHTTP)
	}
}

// TestTLSCloseNotifyFromClient: a client that sends its request and close_notify in one go still
// gets its whole answer, then our close_notify and the end of the connection (issue 8's half-close
// rule, over TLS).
func TestTLSCloseNotifyFromClient(t *testing.T) {
	b := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond) // the close_notify is in before the answer
		io.WriteString(w, strings.Repeat("z", 70000))
	}))
	_, addr, _ := startTLSProxy(t, b.Addr)
	c := dialRecordClient(t, addr)
	req := c.seal("GET /cn HTTP/1.1\r\nHost: h\r\n\r\n")
	bye, err := c.sess.AppendCloseNotify(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.write(append(req, bye...))
	if !c.readUntil(20*time.Second, func() bool { return c.eof }) {
		t.Fatalf("connection not closed after the answer; got %d plaintext bytes, events %v, err %v", len(c.app), c.evs, c.err)
	}
	rs := c.responses("GET")
	if len(rs) != 1 || rs[0].StatusCode != 200 {
		t.Fatalf("responses %d (%q...)", len(rs), trunc(c.app))
	}
	got, _ := io.ReadAll(rs[0].Body)
	if len(got) != 70000 {
		t.Fatalf("answer body %d bytes, want 70000", len(got))
	}
	if !c.sawEvent(tlsrecord.EventCloseNotify) || c.err != nil {
		t.Fatalf("wsgate did not end with close_notify: events %v, err %v", c.evs, c.err)
	}
}

// TestTLSCloseNotifyFromServer: after a Connection: close answer, and when an idle keep-alive
// connection times out, wsgate sends close_notify before it closes.
func TestTLSCloseNotifyFromServer(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	_, addr, _ := startTLSProxy(t, b.Addr)
	t.Run("connection-close", func(t *testing.T) {
		c := dialRecordClient(t, addr)
		c.send("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		if !c.readUntil(20*time.Second, func() bool { return c.sawEvent(tlsrecord.EventCloseNotify) }) {
			t.Fatalf("no close_notify after a closing answer: %q events %v err %v eof %v", trunc(c.app), c.evs, c.err, c.eof)
		}
		if rs := c.responses("GET"); len(rs) != 1 || rs[0].StatusCode != 200 {
			t.Fatalf("responses: %q", trunc(c.app))
		}
	})
	t.Run("idle-timeout", func(t *testing.T) {
		_, addr := startProxy(t, b.Addr, withTLS(newTLSServer(t)), func(c *loop.Config) { c.IdleTimeout = time.Second })
		c := dialRecordClient(t, addr)
		c.send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
		if !c.readUntil(10*time.Second, func() bool { return len(c.responses("GET")) == 1 }) {
			t.Fatalf("no answer: %q", trunc(c.app))
		}
		start := time.Now()
		if !c.readUntil(10*time.Second, func() bool { return c.eof }) || !c.sawEvent(tlsrecord.EventCloseNotify) {
			t.Fatalf("idle close: eof %v events %v err %v", c.eof, c.evs, c.err)
		}
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Fatalf("closed after %v, before the idle timeout", d)
		}
	})
}

// TestTLSBadTag: a request record whose tag was flipped gets bad_record_mac and a close; nothing
// reaches the backend. A truncated record followed by EOF is dropped the same way.
func TestTLSBadTag(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	_, addr, _ := startTLSProxy(t, b.Addr)
	t.Run("bad-tag", func(t *testing.T) {
		c := dialRecordClient(t, addr)
		rec := c.seal("GET /bad HTTP/1.1\r\nHost: h\r\n\r\n")
		rec[len(rec)-1] ^= 1
		c.write(rec)
		c.readUntil(10*time.Second, func() bool { return c.eof })
		var pe *tlsrecord.PeerAlertError
		if !errors.As(c.err, &pe) || pe.Alert != tlsrecord.AlertBadRecordMAC {
			t.Fatalf("client saw %v (events %v, eof %v), want the bad_record_mac alert", c.err, c.evs, c.eof)
		}
		if !c.eof {
			t.Fatal("connection still open after the alert")
		}
	})
	t.Run("truncated", func(t *testing.T) {
		c := dialRecordClient(t, addr)
		rec := c.seal("GET /trunc HTTP/1.1\r\nHost: h\r\n\r\n")
		c.write(rec[:len(rec)-5])
		c.nc.(*net.TCPConn).CloseWrite()
		c.readUntil(10*time.Second, func() bool { return c.eof })
		if !c.eof || len(c.app) != 0 {
			t.Fatalf("truncated record: eof %v, answer %q", c.eof, c.app)
		}
	})
	time.Sleep(100 * time.Millisecond)
	if n := b.Requests.Load(); n != 0 {
		t.Fatalf("the backend got %d requests", n)
	}
}

// TestTLSKeyUpdateHTTP: between two keep-alive requests the client updates its key and asks
// wsgate to update too: both requests are answered, and wsgate's KeyUpdate comes before the second
// answer (the client's record layer follows it).
func TestTLSKeyUpdateHTTP(t *testing.T) {
	b := newBackend(t, echoHeaders(new(string)))
	_, addr, _ := startTLSProxy(t, b.Addr)
	c := dialRecordClient(t, addr)
	c.send("GET /one HTTP/1.1\r\nHost: h\r\n\r\n")
	if !c.readUntil(10*time.Second, func() bool { return len(c.responses("GET")) == 1 }) {
		t.Fatalf("first answer: %q err %v", c.app, c.err)
	}
	ku, err := c.sess.AppendKeyUpdate(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	c.write(append(ku, c.seal("GET /two HTTP/1.1\r\nHost: h\r\n\r\n")...))
	if !c.readUntil(10*time.Second, func() bool { return len(c.responses("GET")) == 2 }) {
		t.Fatalf("second answer: %q events %v err %v", c.app, c.evs, c.err)
	}
	if !c.sawEvent(tlsrecord.EventKeyUpdate) {
		t.Fatalf("wsgate did not answer the KeyUpdate: events %v", c.evs)
	}
	if rs := c.responses("GET"); rs[1].StatusCode != 200 {
		t.Fatalf("second answer %d", rs[1].StatusCode)
	}
}
