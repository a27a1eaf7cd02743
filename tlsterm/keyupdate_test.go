package tlsterm

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/tlsrecord"
)

// secretFromLog finds label's secret in a key log.
func secretFromLog(t testing.TB, log []byte, label string) []byte {
	t.Helper()
	for _, line := range strings.Split(string(log), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == label {
			s, err := hex.DecodeString(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	t.Fatalf("no %s in the key log", label)
	return nil
}

// checkServerStream opens every record the server wrote under its
// application key, in order, from the secret the client logged: each must
// open at the next sequence number of the current key (KeyUpdates move to
// the next secret at 0). Any (key, nonce) sealed twice, or a write sequence
// assumed instead of established, would make a record fail to open here.
// It returns the records opened under application keys and the plaintext.
func checkServerStream(t testing.TB, wire []byte, suite uint16, secret []byte) (records int, plain []byte) {
	t.Helper()
	var st tlsrecord.State
	if err := st.Init(suite, secret); err != nil {
		t.Fatal(err)
	}
	started := false
	for len(wire) >= 5 {
		n := 5 + (int(wire[3])<<8 | int(wire[4]))
		rec := append([]byte(nil), wire[:n]...)
		wire = wire[n:]
		if rec[0] != 23 {
			continue
		}
		trial := st
		typ, content, _, err := trial.Open(rec)
		if err != nil {
			if started {
				t.Fatalf("server record %d under the application key does not open at sequence %d: %v", records, st.Seq(), err)
			}
			continue // a handshake-key record
		}
		started = true
		st = trial
		records++
		switch typ {
		case tlsrecord.ApplicationData:
			plain = append(plain, content...)
		case tlsrecord.Handshake:
			if content[0] == tlsrecord.TypeKeyUpdate {
				if err := st.Update(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if len(wire) != 0 {
		t.Fatalf("%d bytes of a partial record at the end of the server's stream", len(wire))
	}
	return records, plain
}

// A client KeyUpdate: crypto/tls has no API for it, so the test seals it
// with tlsrecord under the client's own secret (from the client's key log),
// continuing the client's write sequence, and writes it on the raw socket.
func TestClientKeyUpdateCrafted(t *testing.T) {
	for _, requested := range []bool{true, false} {
		t.Run(fmt.Sprintf("update_requested=%v", requested), func(t *testing.T) {
			srv := newTestServer(t, Config{})
			tl := listen(t, srv, harnessOpts{})
			raw, err := net.Dial("tcp", tl.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(20 * time.Second))
			var kl keyLogBuf
			cfg := clientConfig(t)
			cfg.KeyLogWriter = &kl
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1) // so a ticket is sent
			c := tls.Client(raw, cfg)
			io.WriteString(c, "one")
			got := make([]byte, 3)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "one" {
				t.Fatalf("first echo %q %v", got, err)
			}
			suite := c.ConnectionState().CipherSuite
			var w tlsrecord.State
			w.Init(suite, secretFromLog(t, kl.b, "CLIENT_TRAFFIC_SECRET_0"))
			w.SetSeq(1) // crypto/tls sealed "one" at 0
			ku := []byte{tlsrecord.TypeKeyUpdate, 0, 0, 1, 0}
			if requested {
				ku[4] = 1
			}
			out, _ := w.AppendRecord(nil, tlsrecord.Handshake, ku)
			w.Update()
			out, _ = w.AppendRecord(out, tlsrecord.ApplicationData, []byte("two"))
			raw.Write(out)
			// crypto/tls reads the server's KeyUpdate (if requested) and the
			// echo under the server's next key.
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "two" {
				t.Fatalf("echo after KeyUpdate %q %v", got, err)
			}
			out, _ = w.AppendRecord(nil, tlsrecord.TypeAlert, []byte{1, 0})
			raw.Write(out)
			if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
				t.Fatalf("after close_notify: %q %v", rest, err)
			}
			raw.Close()
			r := tl.next(t)
			if r.err != nil || !r.closeNotify || string(r.received) != "onetwo" {
				t.Fatalf("server: %v %q", r.err, r.received)
			}
			wantOut := uint32(0)
			if requested {
				wantOut = 1
			}
			if r.keyUpdatesIn != 1 || r.keyUpdatesOut != wantOut {
				t.Fatalf("KeyUpdates in %d out %d", r.keyUpdatesIn, r.keyUpdatesOut)
			}
			if r.info.WriteSeq != 1 {
				t.Fatalf("write sequence %d after one ticket", r.info.WriteSeq)
			}
			records, plain := checkServerStream(t, r.wire, suite, secretFromLog(t, kl.b, "SERVER_TRAFFIC_SECRET_0"))
			// ticket + "one" + [KeyUpdate] + "two" + close_notify
			if want := 4 + int(wantOut); records != want || string(plain) != "onetwo" {
				t.Fatalf("server stream: %d records %q, want %d", records, plain, want)
			}
		})
	}
}

// Every record the server wrote (crypto/tls's ticket and the session's
// records) opens in sequence under the secret the client logged.
func TestServerStreamSequence(t *testing.T) {
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	var kl keyLogBuf
	cfg := clientConfig(t)
	cfg.KeyLogWriter = &kl
	st := echo(t, tl.addr(), cfg, "a", bigMessage(50000), "b")
	r := tl.next(t)
	records, plain := checkServerStream(t, r.wire, st.CipherSuite, secretFromLog(t, kl.b, "SERVER_TRAFFIC_SECRET_0"))
	if string(plain) != string(r.received) || records < 6 {
		t.Fatalf("%d records, %d bytes", records, len(plain))
	}
}

// openssl s_client as a second, independent client: each TLS 1.3 suite
// (forced with -ciphersuites, which a Go client cannot do) and its K
// command, a KeyUpdate with update_requested.
func TestOpenSSLSuitesAndKeyUpdate(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed (apt-get install openssl)")
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: getCA(t).cert.Raw}), 0o600)
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			srv := newTestServer(t, Config{})
			tl := listen(t, srv, harnessOpts{})
			cmd := exec.Command(bin, "s_client", "-connect", tl.addr(), "-servername", "localhost",
				"-tls1_3", "-ciphersuites", suite, "-CAfile", caFile, "-verify_return_error", "-alpn", "http/1.1")
			stdin, _ := cmd.StdinPipe()
			var out syncBuf
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			waitFor := func(s string) {
				deadline := time.Now().Add(20 * time.Second)
				for !strings.Contains(out.String(), s) {
					if time.Now().After(deadline) {
						t.Fatalf("openssl never printed %q; output:\n%s", s, out.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			io.WriteString(stdin, "hello-one\n")
			waitFor("hello-one")
			io.WriteString(stdin, "K\n")
			waitFor("KEYUPDATE")
			io.WriteString(stdin, "after-update\n")
			waitFor("after-update")
			stdin.Close() // s_client sends close_notify and exits
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("openssl did not exit")
			}
			r := tl.next(t)
			if r.err != nil || !r.closeNotify {
				t.Fatalf("server: %v (close_notify %v); openssl:\n%s", r.err, r.closeNotify, out.String())
			}
			if got := tlsrecord.SuiteName(r.info.CipherSuite); got != suite {
				t.Fatalf("negotiated %s", got)
			}
			if string(r.received) != "hello-one\nafter-update\n" || r.keyUpdatesIn != 1 || r.keyUpdatesOut != 1 {
				t.Fatalf("server received %q, KeyUpdates in %d out %d", r.received, r.keyUpdatesIn, r.keyUpdatesOut)
			}
		})
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TLS_CHACHA20_POLY1305_SHA256 from a Go client: crypto/tls does not let a
// client configure TLS 1.3 suites, but a Go client on a CPU without AES puts
// ChaCha20 first, and the server honours that preference. GODEBUG=cpu.aes=off
// makes this test binary's client believe that, in a subprocess (the server
// stays here, with AES hardware).
func TestTLS13ChaCha20FromGoClient(t *testing.T) {
	if addr := os.Getenv("TLSTERM_CHACHA_CLIENT"); addr != "" {
		t.Skip("helper mode")
	}
	srv := newTestServer(t, Config{})
	tl := listen(t, srv, harnessOpts{})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.der")
	os.WriteFile(caFile, getCA(t).cert.Raw, 0o600)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChaChaClient$", "-test.v")
	cmd.Env = append(os.Environ(), "GODEBUG=cpu.aes=off", "TLSTERM_CHACHA_CLIENT="+tl.addr(), "TLSTERM_CA="+caFile)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "suite TLS_CHACHA20_POLY1305_SHA256") {
		t.Fatalf("client: %v\n%s", err, out)
	}
	r := tl.next(t)
	if r.err != nil || r.info.CipherSuite != tls.TLS_CHACHA20_POLY1305_SHA256 || string(r.received) != "chacha"+bigMessage(20000) {
		t.Fatalf("server: %v suite %#x, %d bytes", r.err, r.info.CipherSuite, len(r.received))
	}
}

func TestHelperChaChaClient(t *testing.T) {
	addr := os.Getenv("TLSTERM_CHACHA_CLIENT")
	if addr == "" {
		t.Skip("run by TestTLS13ChaCha20FromGoClient")
	}
	der, err := os.ReadFile(os.Getenv("TLSTERM_CA"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tlsCAConfig(der)
	if err != nil {
		t.Fatal(err)
	}
	st := echo(t, addr, c, "chacha", bigMessage(20000))
	fmt.Printf("suite %s\n", tls.CipherSuiteName(st.CipherSuite))
}

func tlsCAConfig(der []byte) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: "localhost"}
	c, err := parseCert(der)
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = newPool(c)
	return cfg, nil
}
