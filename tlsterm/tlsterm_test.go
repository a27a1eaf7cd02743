package tlsterm

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// echo dials, checks each message comes back, then closes with
// close_notify and expects the server's close_notify (clean EOF).
func echo(t *testing.T, addr string, cfg *tls.Config, msgs ...string) tls.ConnectionState {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	for _, m := range msgs {
		if _, err := io.WriteString(c, m); err != nil {
			t.Fatalf("write: %v", err)
		}
		got := make([]byte, len(m))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != m {
			t.Fatalf("echo of %d bytes: %q %v", len(m), truncate(got), err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("close_notify: %v", err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after close_notify: %d bytes, %v (want the server's close_notify)", len(rest), err)
	}
	return c.ConnectionState()
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

func bigMessage(n int) string {
	var sb strings.Builder
	for sb.Len() < n {
		fmt.Fprintf(&sb, "line %d of a big message\n", sb.Len())
	}
	return sb.String()[:n]
}

func TestTLS13EchoTicketsAndResumption(t *testing.T) {
	for _, tickets := range []bool{true, false} {
		for _, byteWise := range []bool{false, true} {
			t.Run(fmt.Sprintf("tickets=%v/bytewise=%v", tickets, byteWise), func(t *testing.T) {
				srv := newTestServer(t, Config{SessionTicketsDisabled: !tickets})
				tl := listen(t, srv, harnessOpts{byteWise: byteWise})
				cfg := clientConfig(t)
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
				msgs := []string{"hello", bigMessage(40000)}
				if byteWise {
					msgs = []string{"hello", bigMessage(3000)}
				}
				st := echo(t, tl.addr(), cfg, msgs...)
				r := tl.next(t)
				if r.err != nil || !r.closeNotify {
					t.Fatalf("server: %v (close_notify %v)", r.err, r.closeNotify)
				}
				if st.Version != tls.VersionTLS13 || r.info.Version != tls.VersionTLS13 || r.info.ALPN != "http/1.1" || st.NegotiatedProtocol != "http/1.1" {
					t.Fatalf("negotiated %#x %q / server %#x %q", st.Version, st.NegotiatedProtocol, r.info.Version, r.info.ALPN)
				}
				// Go sends one ticket under the application key in its first
				// flight: the session must start writing at sequence 1.
				wantSeq := uint64(0)
				if tickets {
					wantSeq = 1
				}
				if r.info.WriteSeq != wantSeq {
					t.Fatalf("write sequence established as %d, want %d", r.info.WriteSeq, wantSeq)
				}
				if got := string(r.received); got != strings.Join(msgs, "") {
					t.Fatalf("server received %d bytes", len(got))
				}
				st2 := echo(t, tl.addr(), cfg, "again")
				r2 := tl.next(t)
				if r2.err != nil {
					t.Fatal(r2.err)
				}
				if st2.DidResume != tickets || r2.info.DidResume != tickets {
					t.Fatalf("second connection resumed: client %v server %v, want %v", st2.DidResume, r2.info.DidResume, tickets)
				}
				stats := srv.Stats()
				if stats.Established != 2 || stats.TLS13 != 2 || stats.Running != 0 || (tickets && stats.Resumed != 1) {
					t.Fatalf("stats %+v", stats)
				}
			})
		}
	}
}

// TLS 1.2 with each AEAD suite the client can force, tickets on and off,
// and byte-wise feeding (crypto/tls must survive a would-block inside every
// record on the non-blocking pipe).
func TestTLS12EachSuite(t *testing.T) {
	suites := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	for _, suite := range suites {
		for _, tickets := range []bool{true, false} {
			for _, byteWise := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/tickets=%v/bytewise=%v", tls.CipherSuiteName(suite), tickets, byteWise), func(t *testing.T) {
					srv := newTestServer(t, Config{SessionTicketsDisabled: !tickets})
					tl := listen(t, srv, harnessOpts{byteWise: byteWise})
					cfg := clientConfig(t)
					cfg.MaxVersion = tls.VersionTLS12
					cfg.CipherSuites = []uint16{suite}
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
					big := bigMessage(30000)
					if byteWise {
						big = bigMessage(2000)
					}
					st := echo(t, tl.addr(), cfg, "hello", big)
					r := tl.next(t)
					if r.err != nil || !r.closeNotify {
						t.Fatalf("server: %v", r.err)
					}
					if st.Version != tls.VersionTLS12 || st.CipherSuite != suite || r.info.CipherSuite != suite {
						t.Fatalf("negotiated %#x %s", st.Version, tls.CipherSuiteName(st.CipherSuite))
					}
					st2 := echo(t, tl.addr(), cfg, "again")
					if r2 := tl.next(t); r2.err != nil || r2.info.DidResume != tickets {
						t.Fatalf("second: %v resumed %v", r2.err, r2.info.DidResume)
					}
					if st2.DidResume != tickets {
						t.Fatalf("client resumed %v, want %v", st2.DidResume, tickets)
					}
				})
			}
		}
	}
}

func TestMinVersion13RefusesTLS12(t *testing.T) {
	srv := newTestServer(t, Config{MinVersion: tls.VersionTLS13})
	tl := listen(t, srv, harnessOpts{})
	cfg := clientConfig(t)
	cfg.MaxVersion = tls.VersionTLS12
	_, err := tls.Dial("tcp", tl.addr(), cfg)
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.2 client against min 1.3: %v", err)
	}
	// The server failed the handshake (its protocol_version alert is what
	// the client reported above); the client may close before the loop
	// has collected the outcome, so only the failure is asserted.
	if r := tl.next(t); r.err == nil {
		t.Fatal("server: no error")
	}
	if st := srv.Stats(); st.Established != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The server closes first (close_notify, then shutdown), the client reads
// EOF, then closes its side.
func TestServerCloseNotifyFirst(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	c, err := tls.Dial("tcp", tl.addr(), clientConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "server-close")
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "server-close" {
		t.Fatalf("client read %q %v (want the echo, then a clean EOF)", got, err)
	}
	c.CloseWrite()
	c.Close()
	r := tl.next(t)
	if r.err != nil || !r.closeNotify || !bytes.Equal(r.received, []byte("server-close")) {
		t.Fatalf("server: %v %v %q", r.err, r.closeNotify, r.received)
	}
}

// A HelloRetryRequest: the server prefers a group the client supports but
// sent no key share for, so the client sends a second ClientHello, which
// reaches crypto/tls like any other record. The session still starts at the
// right sequence numbers.
func TestHelloRetryRequest(t *testing.T) {
	srv := newTestServer(t, Config{CurvePreferences: []tls.CurveID{tls.CurveP256}})
	tl := listen(t, srv, harnessOpts{})
	var kl keyLogBuf
	cfg := clientConfig(t)
	cfg.KeyLogWriter = &kl
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	st := echo(t, tl.addr(), cfg, "after HRR")
	r := tl.next(t)
	if r.err != nil || st.CurveID != tls.CurveP256 || !st.HelloRetryRequest {
		t.Fatalf("server %v, curve %v, HRR %v", r.err, st.CurveID, st.HelloRetryRequest)
	}
	// ClientHello, change_cipher_spec, second ClientHello, Finished.
	if r.info.Records != 4 || r.info.WriteSeq != 1 {
		t.Fatalf("%d client records, write sequence %d", r.info.Records, r.info.WriteSeq)
	}
	checkServerStream(t, r.wire, st.CipherSuite, secretFromLog(t, kl.b, "SERVER_TRAFFIC_SECRET_0"))
}
